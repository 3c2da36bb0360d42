//! Starting a function's release `bootstrap` as Lambda does, and measuring it: init time
//! (process start → its first `GET /next`) and peak RSS (`VmHWM`) while it serves events.

use crate::runtime_api::RuntimeApi;
use crate::standins::secret_arn;
use anyhow::{Context, bail};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The five Lambdas, by package (= binary) name.
pub const FUNCTIONS: [&str; 5] = [
    "authorizer",
    "usage",
    "checkout",
    "stripe-webhook",
    "billing-run",
];

/// The Secrets Manager ARNs each function gets in `template.yaml`, with the variable names.
pub fn secret_vars(function: &str) -> &'static [&'static str] {
    match function {
        "checkout" => &["STRIPE_SECRET_ARN", "PORTAL_SECRET_ARN"],
        "stripe-webhook" => &["STRIPE_SECRET_ARN", "STRIPE_WEBHOOK_SECRET_ARN"],
        "usage" => &["GATEWAY_SECRET_ARN"],
        "billing-run" => &["STRIPE_SECRET_ARN"],
        _ => &[],
    }
}

/// The secret values behind the ARNs: the placeholders the sample events in `events/` carry.
pub fn secret_values() -> BTreeMap<String, String> {
    [
        ("STRIPE_SECRET_ARN", "sk_test_tollgate_bench"),
        ("PORTAL_SECRET_ARN", "portal-secret-from-secrets-manager"),
        ("GATEWAY_SECRET_ARN", "gateway-secret-from-secrets-manager"),
        (
            "STRIPE_WEBHOOK_SECRET_ARN",
            crate::events::SAMPLE_WEBHOOK_SECRET,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (secret_arn(k), v.to_string()))
    .collect()
}

/// Where a function's dependencies are, as the template's environment would say in AWS.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub table_name: String,
    pub dynamodb: String,
    pub eventbridge: String,
    pub secretsmanager: String,
    pub stripe: String,
}

/// Variables added to every function's environment (`--env K=V`, for experiments).
pub static EXTRA_ENV: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Where the binaries are (`target/release` unless `--bin-dir` says otherwise).
pub static BIN_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The release binary of `function`.
pub fn binary(root: &Path, function: &str) -> PathBuf {
    BIN_DIR
        .get()
        .cloned()
        .unwrap_or_else(|| root.join("target/release"))
        .join(function)
}

/// The environment Lambda gives a `provided.al2023` function plus the template's variables.
/// Starts from an empty environment, so nothing of this machine's (CA bundles, profiles)
/// changes what the SDK does at init.
fn environment(function: &str, runtime_api: &str, e: &Endpoints) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("tollgate-{function}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/tollgate-{function}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/22/[$LATEST]bench".into(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "ASIABENCHBENCHBENCH0".into()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "bench/secret/access/key/0000000000000000".into(),
        ),
        ("AWS_SESSION_TOKEN", "bench-session-token".into()),
        ("TZ", ":UTC".into()),
        ("RUST_LOG", "info".into()),
        ("TABLE_NAME", e.table_name.clone()),
        ("EVENT_BUS_NAME", "tollgate-bench".into()),
        ("AWS_ENDPOINT_URL_DYNAMODB", e.dynamodb.clone()),
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", e.eventbridge.clone()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", e.secretsmanager.clone()),
        ("CREDIT_LOW_THRESHOLD", "200".into()),
        ("CREDIT_OVERDRAFT_FLOOR", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for var in secret_vars(function) {
        env.push((var.to_string(), secret_arn(var)));
    }
    if matches!(function, "checkout" | "stripe-webhook" | "billing-run") {
        env.push(("STRIPE_API_BASE".into(), e.stripe.clone()));
    }
    if function == "checkout" {
        env.push((
            "RETURN_URL_ALLOWLIST".into(),
            "https://developer.example.com/".into(),
        ));
    }
    env
}

/// A started function process and its Runtime API.
pub struct Running {
    pub api: RuntimeApi,
    pub child: tokio::process::Child,
    pub started: Instant,
}

impl Running {
    pub async fn start(
        root: &Path,
        function: &str,
        endpoints: &Endpoints,
        extra_env: &[(String, String)],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let api = RuntimeApi::start(timeout).await?;
        let bin = binary(root, function);
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env_clear()
            .envs(environment(function, &api.host_port(), endpoints))
            .envs(EXTRA_ENV.get().into_iter().flatten().cloned())
            .envs(extra_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(Self {
            api,
            child,
            started,
        })
    }

    /// Process start → first `GET /next`.
    pub async fn init_time(&mut self) -> anyhow::Result<Duration> {
        match self.api.first_next(Duration::from_secs(20)).await {
            Some(at) => Ok(at - self.started),
            None => {
                let status = self.child.try_wait().ok().flatten();
                bail!(
                    "no GET /next within 20 s (exit: {status:?}, init error: {:?})",
                    self.api.init_error()
                )
            }
        }
    }

    /// CPU time the process has used so far, all threads (`/proc/PID/task/*/schedstat`).
    /// Read right after its first `GET /next`, while it waits for the answer, this is the
    /// CPU cost of init — unlike wall time, barely moved by other load on the machine.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let pid = self.child.id().context("process gone")?;
        let mut ns = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(Duration::from_nanos(ns))
    }

    /// Peak resident set size so far, in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("process gone")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmHWM in /proc/PID/status")
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Init of `starts` fresh processes: (wall time, CPU time) each.
pub async fn init_times(
    root: &Path,
    function: &str,
    endpoints: &Endpoints,
    starts: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut times = Vec::with_capacity(starts);
    let mut cpu = Vec::with_capacity(starts);
    for _ in 0..starts {
        let mut run =
            Running::start(root, function, endpoints, &[], Duration::from_secs(30)).await?;
        let t = run.init_time().await;
        let c = run.cpu_time();
        run.stop().await;
        times.push(t.with_context(|| format!("{function}: init"))?);
        cpu.push(c?);
    }
    Ok((times, cpu))
}

/// Serving figures of one function.
#[derive(Debug, Clone)]
pub struct Serving {
    pub requests: usize,
    pub peak_rss_kib: u64,
    pub wall: Duration,
    /// Answers by class ("2xx", "4xx", "ok", "error", ...).
    pub answers: BTreeMap<String, usize>,
    /// The first answer of each class other than success, shortened (to explain them).
    pub examples: BTreeMap<String, String>,
}

/// Starts `function` once and hands it `events` (cycled) until `requests` were answered;
/// then reads its peak RSS.
pub async fn serve(
    root: &Path,
    function: &str,
    endpoints: &Endpoints,
    requests: usize,
    mut next_event: impl FnMut(usize) -> Bytes,
) -> anyhow::Result<Serving> {
    let mut run = Running::start(root, function, endpoints, &[], Duration::from_secs(60)).await?;
    run.init_time().await?;
    let mut answers = BTreeMap::new();
    let mut examples = BTreeMap::new();
    let started = Instant::now();
    for i in 0..requests {
        let outcome = run
            .api
            .invoke(next_event(i))
            .await
            .with_context(|| format!("{function}: request {i}"))?;
        let class = outcome.class();
        if !matches!(class.as_str(), "2xx" | "ok") && !examples.contains_key(&class) {
            let body = String::from_utf8_lossy(&outcome.body);
            examples.insert(class.clone(), body.chars().take(300).collect());
        }
        *answers.entry(class).or_default() += 1;
    }
    let wall = started.elapsed();
    let peak_rss_kib = run.peak_rss_kib()?;
    run.stop().await;
    Ok(Serving {
        requests,
        peak_rss_kib,
        wall,
        answers,
        examples,
    })
}

pub fn median(times: &[Duration]) -> Duration {
    let mut v = times.to_vec();
    v.sort();
    let n = v.len();
    if n == 0 {
        return Duration::ZERO;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}
