//! `tollgate local [--port 8080] [--start-time RFC3339] [--demo] [--exit-after-demo]`: the whole stack on this
//! machine (the library `tollgate_local`, in this folder), then a scripted month if asked.

use crate::Run;
use anyhow::Context;
use std::path::PathBuf;
use tollgate_local::{LocalStack, StackOptions, demo};

#[derive(clap::Args)]
pub struct Args {
    /// Port on 127.0.0.1 for the HTTP API routes, the portal and the operator routes.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Play a scripted month: consumers subscribe, call the API, one runs out of credit, one
    /// fails to pay; prints each consumer's invoice, state and the events published.
    #[arg(long)]
    demo: bool,
    /// Stop after the demo (with exit code 1 if an invoice differs from its quote).
    #[arg(long, requires = "demo")]
    exit_after_demo: bool,
    /// The catalog synced into the emulator and served by the functions.
    #[arg(long, default_value = "examples/catalog.json")]
    catalog: PathBuf,
    /// Where the connection details are written.
    #[arg(long, default_value = ".tollgate/local.json")]
    info_file: PathBuf,
    /// Where the stack's clock (the emulator's) starts, RFC 3339 (`2027-02-28T00:00:00Z`);
    /// the start of the current UTC hour when absent. The demo month is the same from any
    /// start: use it to replay a month end, Feb 29 or a year end.
    #[arg(long, value_parser = parse_start_time)]
    start_time: Option<i64>,
}

/// `--start-time`: an RFC 3339 instant, as Unix seconds.
fn parse_start_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .map_err(|e| format!("not an RFC 3339 instant (2027-02-28T00:00:00Z): {e}"))
}

impl Run for Args {
    fn run(self) -> anyhow::Result<()> {
        // async-stripe warns about every enum value newer than its pinned API version; the
        // functions' own warnings and errors are what matter on this terminal.
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,stripe_shared=error".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(self.serve())
    }
}

impl Args {
    async fn serve(self) -> anyhow::Result<()> {
        let root = std::env::current_dir()?;
        if !root.join("template.yaml").is_file() {
            anyhow::bail!(
                "run `tollgate local` from the repository root (template.yaml not found in {})",
                root.display()
            );
        }
        let mut opts = StackOptions::new(&root);
        opts.port = self.port;
        opts.catalog = self.catalog.clone();
        opts.start_time = self.start_time;
        let started = std::time::Instant::now();
        let stack = LocalStack::start(opts).await?;
        stack.write_info(&self.info_file)?;
        let i = &stack.info;
        println!(
            "tollgate local stack up in {:.1} s\n  API          {}\n  portal       {}\n  \
             Stripe       {} (emulator; webhooks → {}/stripe/webhook)\n  DynamoDB     {} \
             (table {})\n  EventBridge  {} (capture: GET {}/_local/events)\n  secrets      {}\n  \
             operator     POST {}/_local/billing-run?date=YYYY-MM-DD · POST \
             {}/_local/clock/advance?days=N",
            started.elapsed().as_secs_f64(),
            i.base_url,
            i.portal_url,
            i.emulator_url,
            i.base_url,
            i.dynamodb_endpoint,
            i.table_name,
            i.eventbridge_endpoint,
            i.base_url,
            self.info_file.display(),
            i.base_url,
            i.base_url,
        );
        if self.demo {
            let report = demo::run(&stack, &mut std::io::stdout()).await?;
            if self.exit_after_demo {
                if !report.invoices_match_quotes() {
                    anyhow::bail!("an invoice differs from the pricing engine's quote");
                }
                return Ok(());
            }
        }
        println!("serving; Ctrl-C stops everything");
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}
