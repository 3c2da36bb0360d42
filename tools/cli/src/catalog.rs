//! `tollgate catalog ...`: catalog subcommands, one module each under `catalog/`.

use crate::Run;

subcommands! {
    pub enum Command {
        /// Check a catalog file; exit 0, or print every error with its path (exit 2).
        Validate(validate),
        /// Print the catalog's JSON Schema (the source of schemas/catalog.schema.json).
        Schema(schema),
        /// Create or update Stripe Meters, Products and Prices from the catalog (idempotent).
        Sync(sync),
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

impl Run for Args {
    fn run(self) -> anyhow::Result<()> {
        self.command.run()
    }
}
