//! The hot path of `POST /usage` without I/O: parse, validate and aggregate a 1,000-record
//! batch over 10 subscriptions in one hour (the shape of the ≤ 11-writes acceptance case).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tollgate_domain::Catalog;
use tollgate_domain::time::{DateTime, Utc};
use tollgate_domain::usage::{IngestWindow, aggregate, parse_batch};

fn batch(now: DateTime<Utc>) -> Vec<u8> {
    let records: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            let t = now - chrono_secs(i % 3000);
            serde_json::json!({
                "id": format!("rec-{i:05}"),
                "subscription_id": format!("sub_{:02}", i % 10),
                "timestamp": t.to_rfc3339(),
                "meter": "api_calls",
                "value": 1,
                "operation": "GET /forecast"
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"batch_id": "bench-1", "records": records})).unwrap()
}

fn chrono_secs(s: i64) -> tollgate_domain::time::Duration {
    tollgate_domain::time::Duration::seconds(s)
}

fn bench(c: &mut Criterion) {
    let catalog: Catalog = serde_json::from_str(
        r#"{"version": 1, "currency": "usd", "meters": [{"id": "api_calls", "name": "API calls"}],
            "products": [{"id": "free", "name": "Free", "quota": {"meter": "api_calls", "limit": 100}}]}"#,
    )
    .unwrap();
    // The end of an hour, so the whole batch falls in one hour.
    let now = DateTime::parse_from_rfc3339("2026-11-22T10:59:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let body = batch(now);
    let parsed = parse_batch(&body, &catalog, now, IngestWindow::default()).unwrap();
    assert_eq!(aggregate(&parsed.records).len(), 10);
    c.bench_function("parse+validate+aggregate 1000 records", |b| {
        b.iter(|| {
            let batch =
                parse_batch(black_box(&body), &catalog, now, IngestWindow::default()).unwrap();
            black_box(aggregate(&batch.records))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
