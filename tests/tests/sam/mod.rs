//! template.yaml as the tests read it: the functions and the HTTP API routes of each.
//! Shared by events.rs (which reads only the routes) and template.rs (which reads it all).
#![allow(dead_code)]

use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The template, with CloudFormation's short tags (`!Ref`, `!Sub`) kept as tagged values.
pub fn load() -> Value {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template.yaml");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

/// One `AWS::Serverless::Function` of the template.
#[derive(Debug, Clone)]
pub struct Function {
    pub logical_id: String,
    pub code_uri: String,
    pub properties: Value,
    pub metadata: Value,
    /// `"METHOD /path/{param}"` of each `HttpApi` event, as API Gateway writes `routeKey`.
    pub routes: Vec<String>,
}

impl Function {
    /// The crate folder name under `functions/` (`checkout`, `stripe-webhook`, ...).
    pub fn crate_dir_name(&self) -> &str {
        self.code_uri.rsplit('/').next().unwrap_or(&self.code_uri)
    }
}

pub fn functions(template: &Value) -> Vec<Function> {
    let resources = template["Resources"].as_mapping().expect("Resources");
    let mut out = Vec::new();
    for (id, res) in resources {
        if res["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let props = &res["Properties"];
        let code_uri = props["CodeUri"]
            .as_str()
            .unwrap_or_else(|| panic!("{id:?}: CodeUri must be a plain path"))
            .trim_end_matches('/')
            .to_owned();
        let mut routes = Vec::new();
        if let Some(events) = props["Events"].as_mapping() {
            for (_, ev) in events {
                if ev["Type"].as_str() == Some("HttpApi") {
                    let p = &ev["Properties"];
                    routes.push(format!(
                        "{} {}",
                        p["Method"].as_str().expect("Method"),
                        p["Path"].as_str().expect("Path")
                    ));
                }
            }
        }
        out.push(Function {
            logical_id: id.as_str().expect("logical id").to_owned(),
            code_uri,
            properties: props.clone(),
            metadata: res["Metadata"].clone(),
            routes,
        });
    }
    out
}

/// Routes by function crate folder.
pub fn routes_by_function(template: &Value) -> BTreeMap<String, Vec<String>> {
    functions(template)
        .into_iter()
        .map(|f| (f.crate_dir_name().to_owned(), f.routes.clone()))
        .collect()
}

/// The IAM actions of each DynamoDB SAM policy template, as SAM expands them (the list of
/// policy templates: <https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/serverless-policy-template-list.html>;
/// the definitions: `samtranslator/policy_templates_data/policy_templates.json` in
/// aws/serverless-application-model).
pub const DYNAMODB_POLICY_TEMPLATES: &[(&str, &[&str])] = &[
    (
        "DynamoDBCrudPolicy",
        &[
            "dynamodb:GetItem",
            "dynamodb:DeleteItem",
            "dynamodb:PutItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
            "dynamodb:ConditionCheckItem",
        ],
    ),
    (
        "DynamoDBReadPolicy",
        &[
            "dynamodb:GetItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "dynamodb:BatchGetItem",
            "dynamodb:DescribeTable",
        ],
    ),
    (
        "DynamoDBWritePolicy",
        &[
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
        ],
    ),
];

/// The `dynamodb:` actions a function's role allows: every `Effect: Allow` statement of its
/// inline `Policies` (an `Action` string or list) plus the expansion of the DynamoDB policy
/// templates above. A policy this function does not understand (a managed policy name, another
/// template) panics, so nothing is silently left out.
pub fn dynamodb_actions(f: &Function) -> std::collections::BTreeSet<String> {
    let mut allowed = std::collections::BTreeSet::new();
    let Some(policies) = f.properties["Policies"].as_sequence() else {
        return allowed;
    };
    for policy in policies {
        if let Some(statements) = policy["Statement"].as_sequence() {
            for st in statements {
                if st["Effect"].as_str() != Some("Allow") {
                    continue;
                }
                let actions: Vec<&str> = match &st["Action"] {
                    Value::String(a) => vec![a.as_str()],
                    Value::Sequence(list) => list.iter().filter_map(Value::as_str).collect(),
                    other => panic!("{}: unreadable Action {other:?}", f.logical_id),
                };
                allowed.extend(
                    actions
                        .into_iter()
                        .filter(|a| a.starts_with("dynamodb:"))
                        .map(str::to_owned),
                );
            }
            continue;
        }
        let name = policy
            .as_mapping()
            .and_then(|m| m.keys().next())
            .and_then(Value::as_str)
            .or_else(|| policy.as_str())
            .unwrap_or_else(|| panic!("{}: unreadable policy {policy:?}", f.logical_id));
        match DYNAMODB_POLICY_TEMPLATES.iter().find(|(n, _)| *n == name) {
            Some((_, actions)) => allowed.extend(actions.iter().map(|a| a.to_string())),
            None if !name.starts_with("DynamoDB") && policy.is_mapping() => {
                // A SAM policy template of another service (SQS, Events, ...).
            }
            None => panic!(
                "{}: policy {name} is not in DYNAMODB_POLICY_TEMPLATES; add its actions",
                f.logical_id
            ),
        }
    }
    allowed
}
