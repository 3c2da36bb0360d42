//! `tollgate credit adjust --consumer C --amount ±N --reason R --idempotency-key K`: calls the
//! deployed portal route `POST /consumers/{C}/credit/adjustments` (the one place the rule
//! lives: once per key, never below the floor, the 402 gate moved in the same write), with
//! the portal secret. `--api` and `TOLLGATE_PORTAL_SECRET` name the deployment; without them
//! the local stack's `.tollgate/local.json` is used.

use crate::Run;
use anyhow::{Context, bail};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The consumer whose prepaid credit changes.
    #[arg(long)]
    consumer: String,
    /// Minor units: positive grants credit, negative takes it back (e.g. --amount=-500).
    #[arg(long, allow_hyphen_values = true)]
    amount: i64,
    /// Why (kept with the credit movement).
    #[arg(long)]
    reason: String,
    /// Names this intent: a retry with the same key changes nothing; another amount under the
    /// same key is refused.
    #[arg(long)]
    idempotency_key: String,
    /// Base URL of tollgate's HTTP API; defaults to the local stack's.
    #[arg(long, env = "TOLLGATE_API_URL")]
    api: Option<String>,
    /// The portal secret (Authorization: Bearer); defaults to the local stack's.
    #[arg(long, env = "TOLLGATE_PORTAL_SECRET", hide_env_values = true)]
    portal_secret: Option<String>,
    /// The local stack's connection details (used when --api is not given).
    #[arg(long, default_value = ".tollgate/local.json")]
    local_info: PathBuf,
}

impl Run for Args {
    fn run(self) -> anyhow::Result<()> {
        let (api, secret) = match (self.api.clone(), self.portal_secret.clone()) {
            (Some(api), Some(secret)) => (api, secret),
            (api, secret) => {
                let text = std::fs::read_to_string(&self.local_info).with_context(|| {
                    format!(
                        "--api and TOLLGATE_PORTAL_SECRET are not both set, and the local stack's {} cannot be read",
                        self.local_info.display()
                    )
                })?;
                let info: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", self.local_info.display()))?;
                let field = |k: &str| info[k].as_str().map(String::from);
                (
                    api.or_else(|| field("base_url")).context("base_url missing")?,
                    secret
                        .or_else(|| field("portal_secret"))
                        .context("portal_secret missing")?,
                )
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (status, body) = runtime.block_on(async {
            let resp = reqwest::Client::new()
                .post(format!(
                    "{}/consumers/{}/credit/adjustments",
                    api.trim_end_matches('/'),
                    self.consumer
                ))
                .bearer_auth(secret.trim())
                .json(&serde_json::json!({
                    "amount": self.amount,
                    "reason": self.reason,
                    "idempotency_key": self.idempotency_key,
                }))
                .send()
                .await
                .with_context(|| format!("cannot reach {api}"))?;
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            anyhow::Ok((status, body))
        })?;
        match status {
            200 | 201 => {
                println!(
                    "{}: {} {} (asked {}), balance {}",
                    self.consumer,
                    if body["replayed"] == true {
                        "already applied:"
                    } else {
                        "applied"
                    },
                    body["applied"],
                    body["requested"],
                    body["balance"]
                );
                Ok(())
            }
            _ => bail!(
                "HTTP {status}: {}",
                body["error"]["message"].as_str().unwrap_or("no error message")
            ),
        }
    }
}
