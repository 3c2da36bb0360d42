//! The CPU part of usage-from-logs per delivery, without I/O: decode the CloudWatch Logs
//! subscription event (base64 + gzip + JSON, as `aws_lambda_events` does for the handler),
//! read every access-log line and cut the calls into usage batches. 1,000 lines of three
//! subscriptions in one hour, a tenth of them 404s and a few keyless: the shape of a busy
//! API's delivery. The usage service's own part (parse + validate + aggregate the batch it is
//! handed) is measured by `cargo bench -p usage --bench ingest`.
//!
//! A plain benchmark (std only, one thread): `cargo bench -p usage-from-logs
//! --no-default-features` builds only the adapter, not the AWS SDK. Prints the median of 30
//! rounds of 20 deliveries each, and records/s on one core.

use aws_lambda_events::cloudwatch_logs::LogsEvent;
use base64::Engine;
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;
use usage_from_logs::{LogEvent, plan};

const LINES: usize = 1_000;

fn delivery(lines: usize) -> String {
    let t0 = 1_772_020_800_000i64;
    let events: Vec<serde_json::Value> = (0..lines)
        .map(|i| {
            let status = if i % 10 == 0 { 404 } else { 200 };
            let sub = if i % 97 == 0 {
                "-".to_string()
            } else {
                format!("sub_01JAX8Q3W5N6M7P8R9S0T1U2V{}", i % 3)
            };
            let message = format!(
                r#"{{"id":"6f1c2d3e-4a5b-4c6d-8e7f-{i:012}","time":"{}","status":"{status}","sub":"{sub}","allow":"true","bytes":"512","method":"GET","route":"/v1/forecast"}}"#,
                t0 + i as i64
            );
            serde_json::json!({"id": format!("{:056}", 37_779_254_340_193_823u64 + i as u64),
                "timestamp": t0 + i as i64, "message": message})
        })
        .collect();
    let data = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "123456789012",
        "logGroup": "/provider-api/access", "logStream": "s", "subscriptionFilters": ["tollgate-usage"],
        "logEvents": events});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data.to_string().as_bytes()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    serde_json::json!({"awslogs": {"data": b64}}).to_string()
}

fn one(body: &str) -> usize {
    let ev: LogsEvent = serde_json::from_str(black_box(body)).unwrap();
    let data = ev.aws_logs.data;
    let events: Vec<LogEvent> = data
        .log_events
        .into_iter()
        .map(|e| LogEvent {
            id: e.id,
            message: e.message,
        })
        .collect();
    black_box(plan(&data.log_group, &events)).chunks.len()
}

fn main() {
    // `cargo test --benches` runs this once as a smoke test; `cargo bench` passes --bench.
    let measure = std::env::args().any(|a| a == "--bench");
    let body = delivery(LINES);
    assert_eq!(one(&body), 1);
    if !measure {
        return;
    }
    let per_round = 20;
    let mut rounds: Vec<f64> = (0..30)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_round {
                one(&body);
            }
            t.elapsed().as_secs_f64() / per_round as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    let median = rounds[rounds.len() / 2];
    println!(
        "usage-from-logs decode+parse+plan {LINES} lines ({} bytes gzip+base64): median {:.1} µs per delivery, {:.0} records/s on one core (min {:.1} µs, max {:.1} µs)",
        body.len(),
        median * 1e6,
        LINES as f64 / median,
        rounds[0] * 1e6,
        rounds[rounds.len() - 1] * 1e6,
    );
}
