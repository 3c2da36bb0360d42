//! `tollgate local --demo` end to end: the scripted month on the whole local stack (DynamoDB
//! Local, the Stripe emulator, every function behind its HTTP route, the billing run), and
//! what it must show: each Stripe invoice equals the pricing engine's quote for the usage
//! tollgate counted, and each consumer ends in the state the script drives it to.

use tollgate_local::{LocalStack, StackOptions, demo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_month_invoices_what_the_pricing_engine_quotes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut opts = StackOptions::new(&root);
    opts.port = 0;
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let info = tempfile_path();
    stack.write_info(&info).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
    assert_eq!(written["base_url"], stack.info.base_url.as_str());
    assert!(
        written["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let _ = std::fs::remove_dir_all(info.parent().unwrap());

    let mut out = Vec::new();
    let report = demo::run(&stack, &mut out).await.expect("the demo runs");
    let printed = String::from_utf8(out).unwrap();
    println!("{printed}");

    // Metered products: Stripe's invoice of the month = the quote, to the cent.
    for (consumer, calls, total) in [
        // 1,800 calls: 100 free, then 1,700 × $0.002
        ("bolt-apps", 1_800, 340),
        // 126,000 calls: $89.95 for the first 100,000, then 26,000 × $0.001
        ("cyd-corp", 126_000, 11_595),
        // 30,000 calls × $0.0015
        ("dan-data", 30_000, 4_500),
        // Basic: the next month's $14.95 in advance, usage within the quota
        ("fay-co", 30_000, 1_495),
    ] {
        let c = report.consumer(consumer).unwrap();
        let invoice = c
            .invoice
            .as_ref()
            .unwrap_or_else(|| panic!("{consumer} has the month's invoice:\n{printed}"));
        assert_eq!(c.calls_counted, calls, "{consumer}");
        assert_eq!(c.quote_total, Some(total), "{consumer}");
        assert_eq!(invoice.total, total, "{consumer}: {invoice:?}");
    }
    assert!(report.invoices_match_quotes());
    assert!(printed.contains("match"));

    let status = |c: &str| {
        report
            .consumer(c)
            .unwrap()
            .status
            .clone()
            .unwrap_or_default()
    };
    let entitlement = |c: &str| {
        report.consumer(c).unwrap().entitlement.as_ref().map(|e| {
            (
                e["status"].as_u64().unwrap_or(0),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
    };
    // The card that failed at renewal: past due, then suspended after the retry; no access.
    assert_eq!(status("dan-data"), "suspended");
    assert_eq!(entitlement("dan-data"), Some((403, "suspended".into())));
    let dan = report
        .consumer("dan-data")
        .unwrap()
        .invoice
        .clone()
        .unwrap();
    assert_eq!(dan.amount_paid, 0);
    assert_ne!(dan.status, "paid");
    // Paid ones stay active; their invoices are paid.
    for c in ["bolt-apps", "cyd-corp", "fay-co"] {
        assert_eq!(status(c), "active", "{c}");
        assert_eq!(entitlement(c), Some((200, "ok".into())), "{c}");
        assert_eq!(
            report.consumer(c).unwrap().invoice.as_ref().unwrap().status,
            "paid"
        );
    }
    // The declined card at checkout was refused, the second one paid.
    assert!(printed.contains("fay-co: checkout for basic with a Declined card refused"));
    // Free: over its 100-call quota → 429 for the rest of its month, no invoice. The quota's
    // month is the subscription's own (anchored at its start): once the month closed, a new
    // window began and the gateway answers 200 again, whatever the start date.
    assert_eq!(status("ada-labs"), "active");
    let in_month = report
        .consumer("ada-labs")
        .unwrap()
        .entitlement_in_month
        .as_ref()
        .map(|e| {
            (
                e["status"].as_u64().unwrap_or(0),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        });
    assert_eq!(in_month, Some((429, "quota_exceeded".into())));
    assert_eq!(entitlement("ada-labs"), Some((200, "ok".into())));
    assert!(report.consumer("ada-labs").unwrap().invoice.is_none());
    // Prepaid: the $10 ran out → 402 at the gateway.
    let eve = report.consumer("eve-ai").unwrap();
    assert_eq!(eve.credit_purchased, Some(1000), "{printed}");
    // 18,000 calls at $0.001: the $10 paid for 10,000 of them; the rest went over the floor
    // (the gateway was told 402 from then on), and the two add up to the quote.
    assert_eq!(eve.calls_accepted, 18_000);
    assert_eq!(eve.quote_total, Some(1_800));
    assert_eq!(eve.credit_drawn, Some(1000));
    assert_eq!(eve.credit_balance, Some(0));
    assert_eq!(
        eve.credit_drawn.unwrap() + eve.credit_uncovered.unwrap(),
        1_800,
        "{eve:?}"
    );
    assert_eq!(eve.usage_state.as_deref(), Some("no_credit"), "{printed}");
    assert_eq!(entitlement("eve-ai"), Some((402, "no_credit".into())));

    // The domain events of the month.
    let n = |t: &str| report.events.get(t).copied().unwrap_or(0);
    assert_eq!(n("SubscriptionActivated"), 6, "{:?}", report.events);
    assert_eq!(n("SubscriptionSuspended"), 1, "{:?}", report.events);
    assert!(n("CreditsDepleted") >= 1, "{:?}", report.events);
    assert!(n("QuotaThreshold") >= 2, "{:?}", report.events);
    assert!(report.meter_events_reported > 0);
}

fn tempfile_path() -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!("tollgate-local-{}", std::process::id()))
        .join("local.json")
}
