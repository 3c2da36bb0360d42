//! `tollgate catalog sync`, run as an operator runs it, against the Stripe emulator.

use std::path::PathBuf;
use std::process::Output;
use tollgate_stripe_emulator::{Emulator, EmulatorConfig, RunningEmulator};

fn example() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/catalog.json")
        .display()
        .to_string()
}

/// Runs the binary off the async runtime so the in-process emulator keeps serving.
async fn sync(emulator: &RunningEmulator, args: &[&str]) -> Output {
    let base = emulator.base_url().to_string();
    let mut all = vec!["catalog".to_string(), "sync".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(&all)
            .env("STRIPE_SECRET_KEY", "sk_test_cli")
            .env("STRIPE_API_BASE", base)
            .output()
            .expect("tollgate runs")
    })
    .await
    .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_creates_the_catalog_once_and_then_has_nothing_to_do() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let catalog = example();
    let want = tollgate_stripe::sync::desired(
        &tollgate_domain::Catalog::from_json(&std::fs::read_to_string(&catalog).unwrap()).unwrap(),
    )
    .unwrap();
    let changes = want.meters.len() + want.products.len() + want.prices.len();

    let dry = sync(&emulator, &["--catalog", &catalog, "--dry-run"]).await;
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        stdout(&dry).contains("create meter api_calls"),
        "{}",
        stdout(&dry)
    );
    assert!(stdout(&dry).contains("create price standard.calls"));
    assert!(stdout(&dry).contains(&format!(
        "dry run: {changes} change(s) planned, nothing written"
    )));
    assert_eq!(
        emulator.write_request_count(),
        0,
        "a dry run writes nothing"
    );

    let first = sync(&emulator, &["--catalog", &catalog]).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout(&first).ends_with(&format!("{changes} change(s) written\n")),
        "{}",
        stdout(&first)
    );
    assert_eq!(emulator.write_request_count(), changes);

    emulator.clear_request_log();
    let second = sync(&emulator, &["--catalog", &catalog]).await;
    assert!(second.status.success());
    assert_eq!(
        stdout(&second),
        "Stripe already matches the catalog: nothing to do\n"
    );
    assert_eq!(
        emulator.write_request_count(),
        0,
        "the second run writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_refuses_an_invalid_catalog_before_calling_stripe() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"version":1,"currency":"usd","products":[{"id":"x","name":"X","interval":"month",
            "prices":[{"type":"per_unit","key":"c","meter":"nope","unit_amount":1}]}]}"#,
    )
    .unwrap();
    let out = sync(&emulator, &["--catalog", bad.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("products[0].prices[0].meter"), "{err}");
    assert!(emulator.requests().is_empty(), "Stripe was not called");
    std::fs::remove_dir_all(&dir).ok();
}

/// Retiring a product archives its Stripe Prices (no new sales in Stripe either) and deletes
/// nothing; the next sync has nothing to do; un-retiring it sells it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_a_product_archives_its_prices_once_and_deletes_nothing() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let catalog = example();
    let first = sync(&emulator, &["--catalog", &catalog]).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&catalog).unwrap()).unwrap();
    let products = value["products"].as_array_mut().unwrap();
    let standard = products.iter_mut().find(|p| p["id"] == "standard").unwrap();
    let price_keys: Vec<String> = standard["prices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("standard.{}", c["key"].as_str().unwrap()))
        .collect();
    standard["status"] = "retired".into();
    standard["successor"] = "pro".into();
    let dir = tempfile::tempdir().unwrap();
    let retired = dir.path().join("catalog.json");
    std::fs::write(&retired, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    let retired = retired.display().to_string();

    emulator.clear_request_log();
    let out = sync(&emulator, &["--catalog", &retired]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in &price_keys {
        assert!(
            stdout(&out).contains(&format!("({key}): its product is retired")),
            "{}",
            stdout(&out)
        );
    }
    assert_eq!(
        emulator.write_request_count(),
        price_keys.len(),
        "{}",
        stdout(&out)
    );
    // Stripe still has every Price, archived.
    let http = reqwest::Client::new();
    for key in &price_keys {
        let list: serde_json::Value = http
            .get(format!(
                "{}/v1/prices?lookup_keys[]={key}",
                emulator.base_url()
            ))
            .bearer_auth("sk_test_cli")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let prices = list["data"].as_array().unwrap();
        assert_eq!(prices.len(), 1, "{list}");
        assert_eq!(prices[0]["active"], false, "{key}: {list}");
    }

    emulator.clear_request_log();
    let again = sync(&emulator, &["--catalog", &retired]).await;
    assert!(again.status.success());
    assert_eq!(emulator.write_request_count(), 0, "{}", stdout(&again));

    // Back on sale: new Prices take the lookup keys over.
    emulator.clear_request_log();
    let back = sync(&emulator, &["--catalog", &catalog]).await;
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert_eq!(
        emulator.write_request_count(),
        price_keys.len(),
        "{}",
        stdout(&back)
    );
}
