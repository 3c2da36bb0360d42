//! `tollgate credit ...`: an operator's work on prepaid credit, one module each under `credit/`.

use crate::Run;

subcommands! {
    pub enum Command {
        /// Grant (+N) or take back (-N) a consumer's prepaid credit, once per idempotency key.
        Adjust(adjust),
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
