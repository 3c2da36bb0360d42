//! `tollgate catalog sync --catalog FILE [--dry-run]`: makes Stripe hold the catalog's Billing
//! Meters, Products and Prices. Reads Stripe, plans the writes (pure code in
//! `tollgate_stripe::sync`), prints them, and applies them unless `--dry-run`. A second run of
//! an unchanged catalog plans nothing.

use crate::Run;
use anyhow::Context;
use secrecy::SecretString;
use std::path::PathBuf;
use tollgate_stripe::sync::{describe, sync_catalog};
use tollgate_stripe::{StripeAdapter, StripeConfig};

#[derive(clap::Args)]
pub struct Args {
    /// The catalog file (JSON). It must pass `tollgate catalog validate`.
    #[arg(long)]
    catalog: PathBuf,
    /// Print the plan without writing anything to Stripe.
    #[arg(long)]
    dry_run: bool,
    /// Stripe secret key.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    stripe_secret_key: String,
    /// Stripe API base URL (the emulator's URL locally); Stripe's own by default.
    #[arg(long, env = "STRIPE_API_BASE")]
    stripe_api_base: Option<String>,
}

impl Run for Args {
    fn run(self) -> anyhow::Result<()> {
        // Refuse an invalid catalog before touching Stripe.
        let catalog = crate::load::catalog(&self.catalog)?;
        // Trimmed and checked like the functions' key (sk_/rk_), before touching Stripe.
        let key: SecretString =
            tollgate_app::config::clean_secret("STRIPE_SECRET_KEY", &self.stripe_secret_key)?;
        let config = StripeConfig::new(
            key,
            self.stripe_api_base.filter(|b| !b.is_empty()),
        );
        let stripe = StripeAdapter::from_config(&config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let report = runtime
            .block_on(sync_catalog(&stripe, &catalog, self.dry_run))
            .context("catalog sync failed")?;
        for action in &report.actions {
            println!("{}", describe(action));
        }
        if report.dry_run {
            println!(
                "dry run: {} change(s) planned, nothing written",
                report.actions.len()
            );
        } else if report.actions.is_empty() {
            println!("Stripe already matches the catalog: nothing to do");
        } else {
            println!("{} change(s) written", report.written.len());
        }
        Ok(())
    }
}
