use crate::Run;
use anyhow::{Context, bail};
use std::path::PathBuf;
use tollgate_domain::MeterId;
use tollgate_domain::pricing::{QuoteRequest, quote};

#[derive(clap::Args)]
pub struct Args {
    /// The catalog file (JSON).
    #[arg(long)]
    catalog: PathBuf,
    /// Product id in the catalog.
    #[arg(long)]
    product: String,
    /// Units of the product's primary meter (API calls).
    #[arg(long)]
    usage: Option<u64>,
    /// Usage of a named meter, e.g. `--meter data_bytes=5000000000`; repeatable.
    #[arg(long = "meter", value_name = "NAME=N", value_parser = parse_meter)]
    meters: Vec<(String, u64)>,
    /// Seats for a per-seat price (default: its minimum).
    #[arg(long)]
    seats: Option<u32>,
    /// Leave out one-time prices (setup fee): what a later period costs.
    #[arg(long)]
    recurring_only: bool,
}

fn parse_meter(s: &str) -> Result<(String, u64), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=N, found {s:?}"))?;
    let n = n
        .parse()
        .map_err(|e| format!("{n:?} is not a whole number of units: {e}"))?;
    Ok((name.to_string(), n))
}

impl Run for Args {
    fn run(self) -> anyhow::Result<()> {
        let catalog = crate::load::catalog(&self.catalog)?;
        let product = catalog
            .product(&self.product)
            .with_context(|| format!("--product: unknown product {:?}", self.product))?;
        let mut req = QuoteRequest {
            seats: self.seats,
            include_one_time: !self.recurring_only,
            ..QuoteRequest::default()
        };
        let mut add = |flag: &str, meter: MeterId, n: u64| -> anyhow::Result<()> {
            if req.usage.insert(meter.clone(), n).is_some() {
                bail!("{flag}: usage of meter {meter} given twice");
            }
            Ok(())
        };
        if let Some(n) = self.usage {
            let meter = product
                .primary_meter(&catalog)
                .context("--usage: the catalog has no meter")?;
            add("--usage", meter.clone(), n)?;
        }
        for (name, n) in self.meters {
            let meter = MeterId::parse(name.as_str())
                .map_err(|e| anyhow::anyhow!("--meter {name}: {e}"))?;
            add("--meter", meter, n)?;
        }
        let quote = quote(&catalog, product, &req)?;
        println!("{}", serde_json::to_string_pretty(&quote)?);
        Ok(())
    }
}
