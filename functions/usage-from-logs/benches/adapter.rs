//! The CPU part of usage-from-logs per delivery, without I/O: decode the CloudWatch Logs
//! subscription event (base64 + gzip + JSON, as `aws_lambda_events` does for the handler),
//! read every access-log line and cut the calls into usage batches. 1,000 lines of three
//! subscriptions in one hour, a tenth of them 404s and a few keyless: the shape of a busy
//! API's delivery. The usage service's own part (parse + validate + aggregate the batch it is
//! handed) is measured by `cargo bench -p usage --bench ingest`.

use aws_lambda_events::cloudwatch_logs::LogsEvent;
use base64::Engine;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::Write;
use usage_from_logs::{LogEvent, plan};

fn delivery(lines: usize) -> String {
    let t0 = 1_772_020_800_000i64;
    let events: Vec<serde_json::Value> = (0..lines)
        .map(|i| {
            let status = if i % 10 == 0 { 404 } else { 200 };
            let sub = if i % 97 == 0 { "-".to_string() } else { format!("sub_01JAX8Q3W5N6M7P8R9S0T1U2V{}", i % 3) };
            let message = format!(
                r#"{{"id":"6f1c2d3e-4a5b-4c6d-8e7f-{i:012}","time":"{}","status":"{status}","sub":"{sub}","allow":"true","bytes":"512","method":"GET","route":"/v1/forecast"}}"#,
                t0 + i as i64
            );
            serde_json::json!({"id": format!("{:056}", 37_779_254_340_193_823u64 + i as u64), "timestamp": t0 + i as i64, "message": message})
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

fn bench(c: &mut Criterion) {
    let body = delivery(1_000);
    let mut g = c.benchmark_group("usage-from-logs");
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("decode+parse+plan 1000 lines", |b| {
        b.iter(|| {
            let ev: LogsEvent = serde_json::from_str(black_box(&body)).unwrap();
            let events: Vec<LogEvent> = ev
                .aws_logs
                .data
                .log_events
                .into_iter()
                .map(|e| LogEvent {
                    id: e.id,
                    message: e.message,
                })
                .collect();
            black_box(plan(&ev.aws_logs.data.log_group, &events))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
