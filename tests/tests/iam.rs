//! Every function's DynamoDB calls are allowed by its role in `template.yaml`.
//!
//! DynamoDB Local does not enforce IAM, so a function that performs an action its role lacks
//! passes every other test and fails in AWS with AccessDenied. Here each function's real
//! handler runs with its own DynamoDB client whose SDK interceptor records the IAM actions of
//! every call (`tollgate_testkit::calls`); the scripted demo month drives checkout, the
//! webhook, usage (batches and entitlement checks) and the billing run through their HTTP
//! routes on the local stack, and the authorizer answers for every key the demo issued. The
//! recorded actions are then held against the actions the template grants each function.

mod sam;

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tollgate_domain::time::FixedClock;
use tollgate_local::{LocalStack, StackOptions, demo};
use tollgate_testkit::calls::CallLog;

/// Actions a function performs that its role does not grant, when known and owned by other
/// work: (function folder, IAM action). The test fails both on a new mismatch and on a listed
/// one that no longer happens. Empty: the authorizer's write on a prepaid key's first check
/// (issue 17, fault 3) is gone.
const KNOWN_MISMATCHES: &[(&str, &str)] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_calls_only_what_its_role_allows() {
    let log = CallLog::new();
    let mut opts = StackOptions::new(sam::repo_root());
    opts.port = 0;
    opts.dynamodb_calls = Some(log.clone());
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let mut out = Vec::new();
    let report = demo::run(&stack, &mut out).await.expect("the demo runs");
    // The demo's API calls through the local gateway left access-log lines: delivered now to
    // usage-from-logs, so its calls are recorded too.
    stack
        .flush_access_log(tollgate_local::gateway::Delivery::default())
        .await;

    // The authorizer, as the provider's gateway calls it, for every key the demo issued (a
    // prepaid one included: its first check is where a write would happen), an unknown key
    // and a request without a key.
    let authorizer = authorizer::Authorizer::new(
        Arc::new(log.store(
            &stack.info.dynamodb_endpoint,
            &stack.info.table_name,
            "authorizer",
        )),
        stack.catalog.clone(),
        Arc::new(FixedClock(stack.now())),
        "x-api-key",
    );
    let mut keys: Vec<String> = report
        .consumers
        .iter()
        .filter_map(|c| c.api_key.clone())
        .collect();
    assert!(!keys.is_empty(), "the demo issued no API key");
    // A fresh key of every subscription, through the portal's key route as the template names
    // it, checked first by the authorizer: a new prepaid key has no credit gate yet.
    let template = sam::load();
    let key_route = sam::routes_by_function(&template)["checkout"]
        .iter()
        .find(|r| r.starts_with("POST ") && r.ends_with("/keys"))
        .expect("a POST .../keys route on the checkout function")
        .trim_start_matches("POST ")
        .to_owned();
    let http = reqwest::Client::new();
    let mut fresh = 0;
    for c in &report.consumers {
        let Some(sub) = &c.subscription_id else {
            continue;
        };
        let path = key_route
            .replace("{subscription_id}", sub)
            .replace("{consumer_id}", &c.consumer_id);
        let answer = http
            .post(format!("{}{path}", stack.info.base_url))
            .bearer_auth(&stack.info.portal_secret)
            .json(&json!({}))
            .send()
            .await
            .expect("key route answers");
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        if let Some(key) = body["api_key"].as_str() {
            keys.insert(0, key.to_owned());
            fresh += 1;
        }
    }
    assert!(
        fresh > 0,
        "no fresh key could be issued through {key_route}"
    );
    keys.push(format!("tg_live_{}", "0".repeat(32)));
    for key in &keys {
        let request = json!({"type": "REQUEST",
            "methodArn": "arn:aws:execute-api:us-east-1:123456789012:api/prod/GET/x",
            "headers": {"x-api-key": key}});
        authorizer
            .authorize(&request)
            .await
            .expect("authorizer answers");
    }
    let no_key = json!({"type": "REQUEST", "methodArn": "x", "headers": {}});
    let _ = authorizer.authorize(&no_key).await;

    let calls = log.snapshot();
    let mut mismatches: Vec<(String, String)> = Vec::new();
    let mut table = Vec::new();
    for f in sam::functions(&template) {
        let name = f.crate_dir_name().to_owned();
        let allowed = sam::dynamodb_actions(&f);
        let used: BTreeMap<String, u64> = calls.get(&name).cloned().unwrap_or_default();
        assert!(
            !used.is_empty(),
            "{name}: no DynamoDB call recorded: the test did not drive this function"
        );
        for action in used.keys() {
            if !allowed.contains(action) {
                mismatches.push((name.clone(), action.clone()));
            }
        }
        let unused: BTreeSet<&String> = allowed.iter().filter(|a| !used.contains_key(*a)).collect();
        table.push(format!(
            "{name}: used {used:?}; granted but not used here {unused:?}"
        ));
    }
    let functions: BTreeSet<String> = sam::functions(&template)
        .iter()
        .map(|f| f.crate_dir_name().to_owned())
        .collect();
    for who in calls.keys() {
        assert!(
            functions.contains(who),
            "calls recorded for {who}, which is not a function of template.yaml"
        );
    }
    println!("{}", table.join("\n"));
    let known: Vec<(String, String)> = KNOWN_MISMATCHES
        .iter()
        .map(|(f, a)| (f.to_string(), a.to_string()))
        .collect();
    assert_eq!(
        mismatches,
        known,
        "DynamoDB actions performed without an IAM grant in template.yaml (left) differ from \
         the known list (right):\n{}",
        table.join("\n")
    );
}
