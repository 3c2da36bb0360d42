//! The divergences from Stripe found by running Stripe's own clients against the emulator
//! (issue 15), one test each: search paging, `expand[]`, invoice line `subscription`, API key
//! and idempotency key checks, meter event errors, missing referenced objects, unknown GET
//! parameters and list cursors.

mod common;

use std::time::Duration;

use common::{START, form, start};

const HOUR: i64 = 3600;
use serde_json::Value;
use tollgate_stripe_emulator::Card;

/// Follows `next_page` the way Stripe's clients auto-page a search; fails instead of looping.
async fn search_all(s: &common::Stripe, path: &str) -> Vec<Value> {
    let mut out = vec![];
    let mut page: Option<String> = None;
    for _ in 0..20 {
        let url = match &page {
            Some(p) => format!("{path}&page={p}"),
            None => path.to_string(),
        };
        let r = s.get(&url).await;
        out.extend(r["data"].as_array().unwrap().iter().cloned());
        if r["has_more"] == false {
            assert_eq!(
                r["next_page"],
                Value::Null,
                "the last page names no next one"
            );
            return out;
        }
        page = Some(
            r["next_page"]
                .as_str()
                .expect("has_more names next_page")
                .into(),
        );
    }
    panic!("search paging did not end");
}

/// https://docs.stripe.com/search#pagination: `next_page` while `has_more`, then null.
#[tokio::test]
async fn search_pages_with_next_page_and_ends() {
    let s = start().await;
    for i in 0..7 {
        s.post(
            "/v1/customers",
            &[
                ("email", &format!("c{i}@example.com")),
                ("metadata[group]", "g"),
            ],
        )
        .await;
    }
    s.post("/v1/customers", &[("metadata[group]", "other")])
        .await;
    let all = search_all(
        &s,
        "/v1/customers/search?query=metadata['group']:'g'&limit=3",
    )
    .await;
    let mut emails: Vec<&str> = all.iter().map(|c| c["email"].as_str().unwrap()).collect();
    assert_eq!(emails.len(), 7, "every match once");
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), 7, "no page repeats another");
    let bad = s
        .send(
            "GET",
            "/v1/customers/search?query=email:'x'&page=garbage",
            "",
            None,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["param"], "page");
}

/// https://docs.stripe.com/api/expanding_objects: custom ids expand; unknown paths are a 400.
#[tokio::test]
async fn expand_finds_custom_ids_and_refuses_unknown_paths() {
    let s = start().await;
    s.post(
        "/v1/products",
        &[("id", "tg_prod_standard"), ("name", "Standard")],
    )
    .await;
    let price = s
        .post(
            "/v1/prices",
            &[
                ("currency", "usd"),
                ("product", "tg_prod_standard"),
                ("unit_amount", "500"),
            ],
        )
        .await;
    let id = price["id"].as_str().unwrap();
    let expanded = s.get(&format!("/v1/prices/{id}?expand[]=product")).await;
    assert_eq!(expanded["product"]["id"], "tg_prod_standard");
    assert_eq!(expanded["product"]["object"], "product");
    let listed = s.get("/v1/prices?expand[]=data.product").await;
    assert_eq!(listed["data"][0]["product"]["name"], "Standard");

    for path in ["nonsense", "data.nonsense", "currency"] {
        let r = s
            .send("GET", &format!("/v1/prices/{id}?expand[]={path}"), "", None)
            .await;
        assert_eq!(r.status, 400, "expand {path}: {}", r.text);
        assert_eq!(r.body["error"]["type"], "invalid_request_error");
        assert_eq!(r.body["error"]["param"], "expand[0]");
    }
    // a null expandable field stays null
    let session = s
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("success_url", "https://x.example/ok"),
                ("line_items[0][price]", id),
                ("line_items[0][quantity]", "1"),
                ("expand[]", "customer"),
            ],
        )
        .await;
    assert_eq!(session["customer"], Value::Null);
}

/// https://docs.stripe.com/api/invoice-line-item/object: a line carries its `subscription`.
#[tokio::test]
async fn invoice_lines_carry_their_subscription() {
    let s = start().await;
    let cus = s.customer("l@example.com").await;
    let meter = s.meter("api_calls").await;
    let (_, price) = s.standard_price(&meter).await;
    let session = s.subscription_checkout(&cus, &[(&price, None)]).await;
    let done = s
        .emu
        .complete_checkout(session["id"].as_str().unwrap(), Card::Good)
        .unwrap();
    let sub = done["subscription"].as_str().unwrap().to_string();
    s.emu.advance_clock(Duration::from_secs(32 * 86_400));
    let invoices = s.get(&format!("/v1/invoices?subscription={sub}")).await;
    let invoice_id = invoices["data"][0]["id"].as_str().unwrap();
    let lines = s.get(&format!("/v1/invoices/{invoice_id}/lines")).await;
    assert!(!lines["data"].as_array().unwrap().is_empty());
    for line in lines["data"].as_array().unwrap() {
        assert_eq!(line["subscription"], sub.as_str());
    }
}

/// https://docs.stripe.com/keys and https://docs.stripe.com/api/idempotent_requests.
#[tokio::test]
async fn api_key_format_and_idempotency_key_length_are_checked() {
    let s = start().await;
    for bad in [
        "Bearer garbage_key",
        "Bearer pk_test_abc",
        "Bearer sk_test_",
        "Bearer ",
    ] {
        let r = s
            .send_authorized(bad, "GET", "/v1/customers", "", None)
            .await;
        assert_eq!(r.status, 401, "{bad}");
        assert_eq!(r.body["error"]["type"], "invalid_request_error", "{bad}");
    }
    for good in [
        "Bearer sk_test_abc123",
        "Bearer rk_live_abc",
        // curl -u sk_test_abc:
        "Basic c2tfdGVzdF9hYmM6",
    ] {
        let r = s
            .send_authorized(good, "GET", "/v1/customers", "", None)
            .await;
        assert_eq!(r.status, 200, "{good}: {}", r.text);
    }
    let long = "k".repeat(256);
    let r = s
        .send(
            "POST",
            "/v1/customers",
            &form(&[("name", "x")]),
            Some(&long),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(s.get("/v1/customers").await["data"], Value::Array(vec![]));
    let ok = s
        .send(
            "POST",
            "/v1/customers",
            &form(&[("name", "x")]),
            Some(&"k".repeat(255)),
        )
        .await;
    assert_eq!(ok.status, 200);
}

/// https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api: negative
/// whole values count; unknown customer and deactivated meter are asynchronous error reports.
#[tokio::test]
async fn meter_event_errors_follow_stripes_sync_and_async_split() {
    let s = start().await;
    let cus = s.customer("m@example.com").await;
    let meter = s.meter("api_calls").await;
    assert_eq!(
        s.meter_event("api_calls", &cus, "10", "a", START)
            .await
            .status,
        200
    );
    assert_eq!(
        s.meter_event("api_calls", &cus, "-4", "b", START)
            .await
            .status,
        200
    );
    let unknown = s
        .meter_event("api_calls", "cus_nobody", "5", "c", START)
        .await;
    assert_eq!(unknown.status, 200, "accepted, reported later");
    s.post(&format!("/v1/billing/meters/{meter}/deactivate"), &[])
        .await;
    let archived = s.meter_event("api_calls", &cus, "5", "d", START).await;
    assert_eq!(archived.status, 200);
    let reports = s.get("/_emulator/meter_error_reports").await;
    let codes: Vec<&str> = reports["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["meter_event_customer_not_found", "archived_meter"]);
    s.post(&format!("/v1/billing/meters/{meter}/reactivate"), &[])
        .await;
    let summary = s
        .get(&format!(
            "/v1/billing/meters/{meter}/event_summaries?customer={cus}&start_time={}&end_time={}",
            START - HOUR,
            START + HOUR
        ))
        .await;
    assert_eq!(summary["data"][0]["aggregated_value"], 6.0);
    // still synchronous: a missing event_name, and no code Stripe does not have
    let r = s
        .send(
            "POST",
            "/v1/billing/meter_events",
            &form(&[("payload[value]", "1")]),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "parameter_missing");
    assert_eq!(r.body["error"]["param"], "event_name");
}

/// https://docs.stripe.com/error-codes#resource-missing: an object named in the path is a 404,
/// one referenced by a parameter is a 400 naming that parameter.
#[tokio::test]
async fn missing_referenced_objects_are_400_with_param() {
    let s = start().await;
    let r = s
        .send(
            "POST",
            "/v1/prices",
            &form(&[
                ("currency", "usd"),
                ("product", "prod_missing"),
                ("unit_amount", "1"),
            ]),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "resource_missing");
    assert_eq!(r.body["error"]["param"], "product");
    let r = s
        .send(
            "POST",
            "/v1/checkout/sessions",
            &form(&[
                ("mode", "payment"),
                ("success_url", "https://x.example/ok"),
                ("customer", "cus_missing"),
                ("line_items[0][price]", "price_missing"),
                ("line_items[0][quantity]", "1"),
            ]),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "customer");
    let r = s.send("GET", "/v1/customers/cus_missing", "", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["param"], "id");
}

/// https://docs.stripe.com/error-codes#parameter-unknown on GET; `types[]` on events
/// (https://docs.stripe.com/api/events/list); an unknown cursor is `resource_missing`
/// (https://docs.stripe.com/api/pagination).
#[tokio::test]
async fn unknown_get_params_types_filter_and_unknown_cursors() {
    let s = start().await;
    let cus = s.customer("e@example.com").await;
    s.post("/v1/products", &[("name", "P")]).await;
    for q in [
        "/v1/customers?emial=e@example.com",
        "/v1/events?created[gte]=1",
        "/v1/invoices?collection_method=send_invoice",
        "/v1/customers/search?query=email:'x'&starting_after=cus_1",
    ] {
        let r = s.send("GET", q, "", None).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "parameter_unknown", "{q}");
    }
    let only_products = s.get("/v1/events?types[]=product.created").await;
    let types: Vec<&str> = only_products["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["product.created"]);
    let both = s
        .get("/v1/events?types[]=product.created&types[]=customer.created")
        .await;
    assert_eq!(both["data"].as_array().unwrap().len(), 2);
    let wildcard = s.get("/v1/events?type=customer.*").await;
    assert_eq!(wildcard["data"][0]["type"], "customer.created");
    let r = s.send("GET", "/v1/events?type=a&types[]=b", "", None).await;
    assert_eq!(r.status, 400);

    let r = s
        .send("GET", "/v1/customers?starting_after=cus_nope", "", None)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "resource_missing");
    assert_eq!(r.body["error"]["param"], "starting_after");
    // a cursor that exists but is filtered out still splits the list
    let other = s.customer("f@example.com").await;
    let after = s
        .get(&format!(
            "/v1/customers?email=e@example.com&starting_after={other}"
        ))
        .await;
    assert_eq!(after["data"][0]["id"], cus.as_str());
}
