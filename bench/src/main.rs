//! `tollgate-bench`: measures the release Lambdas the way Lambda runs them and writes
//! `docs/benchmarks.md`. Run it through `bash bench/run.sh`, which builds what it needs first.

mod events;
mod functions;
mod report;
mod runtime_api;
mod scenarios;
mod seed;
mod standins;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use functions::{Endpoints, FUNCTIONS};
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(about = "Init time, peak RSS, DynamoDB writes per batch, billing-run scale, zipped size")]
pub struct Args {
    /// Repository root (where target/release and events/ are).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Fresh process starts per function for the init median.
    #[arg(long, default_value_t = 20)]
    starts: usize,
    /// Requests served per function for peak RSS.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Subscription counts for the billing run (comma-separated; empty to skip).
    #[arg(long, default_value = "1000,10000", value_delimiter = ',')]
    billing: Vec<usize>,
    /// Client-side meter events per second for the billing run (Stripe's live limit: 1,000).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Skip parts: init, rss, writes, billing, size (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Measure only these functions (comma-separated; default: all five).
    #[arg(long, value_delimiter = ',')]
    functions: Vec<String>,
    /// Extra environment for every function, `K=V` (repeatable; for experiments).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Directory of the function binaries (default: target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where to write the results page.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Args {
    fn measures(&self, function: &str) -> bool {
        self.functions.is_empty() || self.functions.iter().any(|f| f == function)
    }

    fn runs(&self, part: &str) -> bool {
        !self.skip.iter().any(|s| s == part)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = match &args.root {
        Some(r) => r.clone(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .canonicalize()?,
    };
    let extra: Vec<(String, String)> = args
        .env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let _ = functions::EXTRA_ENV.set(extra);
    if let Some(dir) = &args.bin_dir {
        let _ = functions::BIN_DIR.set(dir.clone());
    }
    for f in FUNCTIONS.into_iter().filter(|f| args.measures(f)) {
        let bin = functions::binary(&root, f);
        anyhow::ensure!(
            bin.is_file(),
            "{} is missing: build with `cargo build --release -p {f}` (bench/run.sh does)",
            bin.display()
        );
    }
    let mut results = report::Results::new(&root, &args);

    eprintln!("bench: starting DynamoDB Local (tollgate-testkit) ...");
    let dynamodb =
        tokio::task::spawn_blocking(|| tollgate_testkit::dynamo::endpoint().to_string()).await?;
    let capture = tollgate_testkit::eventbridge::EventBridgeCapture::start().await;
    let secrets = standins::SecretsManager::start(functions::secret_values()).await?;
    let stripe = tollgate_stripe_emulator::Emulator::start(
        tollgate_stripe_emulator::EmulatorConfig::default(),
    )
    .await?;
    results.catalog_synced = sync_catalog(&root, stripe.base_url());
    let (table, store) = scenarios::fresh_table(&dynamodb).await?;
    let usage_subs = scenarios::usage_subscriptions(&store).await?;
    let endpoints = Endpoints {
        table_name: table,
        dynamodb: dynamodb.clone(),
        eventbridge: capture.endpoint_url(),
        secretsmanager: secrets.endpoint_url(),
        stripe: stripe.base_url().to_string(),
    };

    if args.runs("size") {
        for f in FUNCTIONS.into_iter().filter(|f| args.measures(f)) {
            results.sizes.insert(f, report::zipped_size(&root, f)?);
        }
    }
    if args.runs("init") {
        for f in FUNCTIONS.into_iter().filter(|f| args.measures(f)) {
            eprintln!("bench: {f}: {} starts ...", args.starts);
            let (times, cpu) = functions::init_times(&root, f, &endpoints, args.starts).await?;
            results.init.insert(f, times);
            results.init_cpu.insert(f, cpu);
        }
    }
    if args.runs("rss") {
        for f in FUNCTIONS.into_iter().filter(|f| args.measures(f)) {
            eprintln!("bench: {f}: serving {} requests ...", args.requests);
            let next = event_source(&root, f, &usage_subs)?;
            let serving = functions::serve(&root, f, &endpoints, args.requests, next).await?;
            for (class, body) in &serving.examples {
                eprintln!("bench: {f}: first {class} answer: {body}");
            }
            results.serving.insert(f, serving);
        }
    }
    if args.runs("writes") && args.measures("usage") {
        eprintln!("bench: usage: DynamoDB writes for one 1,000-record batch ...");
        results.batch_writes =
            Some(scenarios::usage_batch_writes(&root, &endpoints, &dynamodb).await?);
    }
    if args.runs("billing") && args.measures("billing-run") {
        for &n in &args.billing {
            eprintln!(
                "bench: billing-run over {n} subscriptions at {}/s ...",
                args.rate
            );
            match scenarios::billing_scale(&root, &endpoints, &dynamodb, n, args.rate).await {
                Ok(b) => results.billing.push(b),
                Err(e) => {
                    eprintln!("bench: billing-run over {n}: {e:#}");
                    results
                        .notes
                        .push(format!("billing run over {n} subscriptions failed: {e:#}"));
                }
            }
        }
    }
    results.ingest = report::criterion_estimate(&root);

    let mut page = results.markdown();
    // The hand-written analysis below the marker survives a re-run.
    if let Some(out) = &args.out
        && let Ok(old) = std::fs::read_to_string(out)
        && let Some(at) = old.find(report::ANALYSIS_MARKER)
    {
        page.push('\n');
        page.push_str(&old[at..]);
    }
    println!("{page}");
    if let Some(out) = &args.out {
        std::fs::write(out, &page).with_context(|| format!("write {}", out.display()))?;
        eprintln!("bench: wrote {}", out.display());
    }
    drop(capture);
    Ok(())
}

/// The events one function is fed while serving: its samples in `events/`, made current
/// where a sample is time-bound (the webhook signature) and, for usage, alternated with
/// 1,000-record batches of live subscriptions (a new batch id each time).
fn event_source(
    root: &std::path::Path,
    function: &str,
    usage_subs: &[String],
) -> anyhow::Result<impl FnMut(usize) -> Bytes + use<>> {
    let samples = events::samples(root, function)?;
    anyhow::ensure!(!samples.is_empty(), "events/{function} has no samples");
    let function = function.to_string();
    let subs = usage_subs.to_vec();
    let post = samples
        .iter()
        .find(|e| e["routeKey"] == "POST /usage")
        .cloned();
    Ok(move |i: usize| {
        let now = chrono::Utc::now();
        match function.as_str() {
            "stripe-webhook" => events::bytes(&events::resign_webhook(
                samples[i % samples.len()].clone(),
                now.timestamp(),
            )),
            "usage" if i.is_multiple_of(2) && post.is_some() => {
                let body = events::usage_batch_body(
                    &format!("bench-rss-{i:06}-{}", now.timestamp_micros()),
                    &subs,
                    1000,
                    now,
                );
                events::usage_post(post.as_ref().expect("checked"), body)
            }
            _ => events::bytes(&samples[i % samples.len()]),
        }
    })
}

/// Syncs `examples/catalog.json` to the emulator with the CLI, if it is built, so checkout
/// finds its prices. Without it checkout answers its sample requests with errors, which is
/// still a served request, and the page says so.
fn sync_catalog(root: &std::path::Path, base_url: &str) -> bool {
    let cli = ["target/release/tollgate", "target/debug/tollgate"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file());
    let Some(cli) = cli else {
        return false;
    };
    std::process::Command::new(cli)
        .args(["catalog", "sync", "--catalog"])
        .arg(root.join("examples/catalog.json"))
        .env("STRIPE_SECRET_KEY", "sk_test_tollgate_bench")
        .env("STRIPE_API_BASE", base_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
