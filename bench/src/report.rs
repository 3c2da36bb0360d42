//! The results page (`docs/benchmarks.md`): machine, date, figures against the targets, and
//! how to reproduce.

use crate::Args;
use crate::functions::{FUNCTIONS, Serving, median};
use crate::scenarios::{BatchWrites, BillingScale};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Everything from this line on in `docs/benchmarks.md` is written by hand (the profile and
/// what to do about it) and kept when the bench rewrites the page.
pub const ANALYSIS_MARKER: &str = "<!-- analysis: kept by bench/run.sh -->";

pub struct Results {
    pub date: String,
    pub machine: String,
    pub starts: usize,
    pub requests: usize,
    pub rate: u32,
    pub catalog_synced: bool,
    pub sizes: BTreeMap<&'static str, (u64, u64)>,
    pub init: BTreeMap<&'static str, Vec<Duration>>,
    pub init_cpu: BTreeMap<&'static str, Vec<Duration>>,
    pub serving: BTreeMap<&'static str, Serving>,
    pub batch_writes: Option<BatchWrites>,
    pub billing: Vec<BillingScale>,
    /// Nanoseconds per 1,000-record batch (criterion's median), if the bench ran.
    pub ingest: Option<f64>,
    pub notes: Vec<String>,
}

impl Results {
    pub fn new(root: &Path, args: &Args) -> Self {
        Self {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            machine: machine(root),
            starts: args.starts,
            requests: args.requests,
            rate: args.rate,
            catalog_synced: false,
            sizes: BTreeMap::new(),
            init: BTreeMap::new(),
            init_cpu: BTreeMap::new(),
            serving: BTreeMap::new(),
            batch_writes: None,
            billing: Vec::new(),
            ingest: None,
            notes: Vec::new(),
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "# Benchmarks\n");
        let _ = writeln!(
            w,
            "Measured {} on {}. Release builds (`[profile.release]`: thin LTO, one codegen \
             unit, panic=abort, stripped), x86_64; Lambda runs the arm64 build of the same code.\n",
            self.date, self.machine
        );
        let _ = writeln!(w, "## Per function\n");
        let _ = writeln!(
            w,
            "| function | init, median of {} (min–max) | init CPU time, median | peak RSS, {} requests | answers | zipped bootstrap (binary) |",
            self.starts, self.requests
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|");
        for f in FUNCTIONS {
            let init = self.init.get(f).map_or("–".into(), |t| {
                let min = t.iter().min().copied().unwrap_or_default();
                let max = t.iter().max().copied().unwrap_or_default();
                format!("{} ({}–{})", ms(median(t)), ms(min), ms(max))
            });
            let cpu = self.init_cpu.get(f).map_or("–".into(), |t| ms(median(t)));
            let (rss, answers) = self.serving.get(f).map_or(("–".into(), "–".into()), |s| {
                (
                    mib(s.peak_rss_kib),
                    format!(
                        "{} in {:.1} s: {}",
                        s.requests,
                        s.wall.as_secs_f64(),
                        s.answers
                            .iter()
                            .map(|(k, v)| format!("{v} {k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            });
            let size = self.sizes.get(f).map_or("–".into(), |(zip, bin)| {
                format!("{} ({})", mb(*zip), mb(*bin))
            });
            let _ = writeln!(w, "| {f} | {init} | {cpu} | {rss} | {answers} | {size} |");
        }
        let _ = writeln!(
            w,
            "\nTargets: init ≤ 10 ms median, peak RSS ≤ 24 MB. Init is process start → the \
             function's first `GET /2018-06-01/runtime/invocation/next`, with the template's \
             environment: secrets given as Secrets Manager ARNs and resolved by a local \
             Secrets Manager stand-in, DynamoDB/EventBridge endpoints on 127.0.0.1. A real \
             Secrets Manager call over TLS costs more than the local stand-in, so functions \
             that fetch a secret during init are slower in AWS than shown here. Init CPU time \
             is the CPU all its threads used until that first request (`/proc/PID/task/*/schedstat`): \
             it barely moves with other load on the machine, the wall time does.\n"
        );
        let odd: Vec<String> = FUNCTIONS
            .iter()
            .filter_map(|f| self.serving.get(f).map(|s| (f, s)))
            .flat_map(|(f, s)| {
                s.examples.iter().map(move |(class, body)| {
                    let short: String = body.chars().take(160).collect();
                    format!("- {f}, first {class}: `{}`", short.replace('`', "'"))
                })
            })
            .collect();
        if !odd.is_empty() {
            let _ = writeln!(
                w,
                "Answers other than success come from the samples themselves (unknown keys and \
                 subscriptions, timestamps of February 2026, ...):\n\n{}\n",
                odd.join("\n")
            );
        }
        if !self.catalog_synced {
            let _ = writeln!(
                w,
                "(The catalog was not synced to the emulator — no `tollgate` CLI binary — so \
                 checkout answered its samples with errors; they still count as served.)\n"
            );
        }

        let _ = writeln!(w, "## Ingestion hot path\n");
        match self.ingest {
            Some(ns) => {
                let per_s = 1000.0 / (ns / 1e9);
                let _ = writeln!(
                    w,
                    "- parse + validate + aggregate a 1,000-record batch (10 subscriptions, one \
                     hour): {:.0} µs median, **{} records/s on one core** (target ≥ 200,000) — \
                     `cargo bench -p usage --bench ingest` (criterion, single-threaded).",
                    ns / 1e3,
                    thousands(per_s as u64)
                );
            }
            None => {
                let _ = writeln!(
                    w,
                    "- records/s: criterion results not found (run `cargo bench -p usage --bench ingest`)."
                );
            }
        }
        if let Some(b) = &self.batch_writes {
            let ops: Vec<String> = b
                .by_operation
                .iter()
                .filter(|(k, _)| !k.starts_with('('))
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            let _ = writeln!(
                w,
                "- DynamoDB per {}-record batch over {} subscriptions in one hour, counted by a \
                 proxy in front of DynamoDB Local: **{} write request(s)** carrying {} items \
                 (all requests: {}); answer {}, {} records accepted. Target ≤ 11.",
                thousands(b.records as u64),
                b.subscriptions,
                b.write_requests,
                b.items_written,
                ops.join(", "),
                b.status.map_or("?".into(), |s| s.to_string()),
                b.accepted.map_or("?".into(), |a| a.to_string()),
            );
        }

        let _ = writeln!(w, "\n## Billing run\n");
        if self.billing.is_empty() {
            let _ = writeln!(w, "Not measured in this run.\n");
        } else {
            let _ = writeln!(
                w,
                "The release billing-run binary, invoked for yesterday, against the Stripe \
                 emulator and DynamoDB Local; one PAYG subscription per Stripe customer, usage \
                 in one hour each. Client-side limit `BILLING_METER_EVENTS_PER_SECOND={}` \
                 (Stripe's live meter-event limit; the template's default is 500).\n",
                self.rate
            );
            let _ = writeln!(
                w,
                "| subscriptions | wall time | per subscription | Stripe requests (meter events) | DynamoDB requests | reported | peak RSS | limit | seeding (not timed) |"
            );
            let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|");
            for b in &self.billing {
                let per = b.wall / b.subscriptions.max(1) as u32;
                let _ = writeln!(
                    w,
                    "| {} | {:.1} s | {:.2} ms | {} ({}) | {} | {} | {} | {}/s | {:.0} s |",
                    thousands(b.subscriptions as u64),
                    b.wall.as_secs_f64(),
                    per.as_secs_f64() * 1e3,
                    thousands(b.stripe_requests as u64),
                    thousands(b.stripe_meter_events as u64),
                    thousands(b.dynamodb_requests),
                    b.summary["reported"],
                    mib(b.peak_rss_kib),
                    b.meter_events_per_second,
                    b.setup.as_secs_f64(),
                );
            }
            if let Some(big) = self.billing.iter().max_by_key(|b| b.subscriptions) {
                let per = big.wall.as_secs_f64() / big.subscriptions.max(1) as f64;
                let floor = 100_000.0 / f64::from(self.rate);
                let _ = writeln!(
                    w,
                    "\n100,000 subscriptions: at the measured {:.2} ms per subscription, \
                     ≈ {:.0} s; the rate limit alone makes it ≥ {:.0} s (target ≤ 120 s). \
                     Extrapolated linearly from {} — Stripe requests grow with subscriptions \
                     (one meter event per subscription and meter), not with usage events.",
                    per * 1e3,
                    per * 100_000.0,
                    floor,
                    thousands(big.subscriptions as u64)
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(w, "\nNote: {n}");
        }
        let _ = writeln!(w, "\n## How to reproduce\n");
        let _ = writeln!(
            w,
            "```sh\nbash bench/run.sh            # builds the release functions, runs everything, rewrites this page\n\
             BENCH_ARGS='--billing 1000,10000,100000' bash bench/run.sh   # the full billing scale\n```\n\n\
             Needs Java 17 and npm (DynamoDB Local, as for the tests) and `zip`. `bench/` \
             (crate `tollgate-bench`) holds a local Lambda Runtime API: each function's \
             `target/release/<name>` is started with `AWS_LAMBDA_RUNTIME_API` pointing at it, as \
             Lambda starts `bootstrap`. Peak RSS is `VmHWM` from `/proc/PID/status` after the \
             requests (the samples in `events/`, the webhook re-signed with the current time, \
             usage alternating with 1,000-record batches of live subscriptions)."
        );
        s
    }
}

/// `zip -9` of the binary renamed `bootstrap`, as SAM/cargo-lambda package it: (zip, binary).
pub fn zipped_size(root: &Path, function: &str) -> anyhow::Result<(u64, u64)> {
    let bin = crate::functions::binary(root, function);
    let dir = std::env::temp_dir().join(format!("tollgate-bench-zip-{function}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(&bin, dir.join("bootstrap"))?;
    let status = std::process::Command::new("zip")
        .current_dir(&dir)
        .args(["-9", "-q", "-X", "bootstrap.zip", "bootstrap"])
        .status()?;
    anyhow::ensure!(status.success(), "zip failed for {function}");
    let sizes = (
        std::fs::metadata(dir.join("bootstrap.zip"))?.len(),
        std::fs::metadata(&bin)?.len(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(sizes)
}

/// Criterion's median for the ingest bench, in ns per 1,000-record batch.
pub fn criterion_estimate(root: &Path) -> Option<f64> {
    let dir = root.join("target/criterion");
    let found = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("aggregate 1000 records")
        })?;
    let text = std::fs::read_to_string(found.path().join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn machine(_root: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.0} GB", kib as f64 / 1024.0 / 1024.0)
        });
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem} RAM, Linux {kernel}, {rustc}")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
