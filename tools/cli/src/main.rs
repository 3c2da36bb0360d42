//! `tollgate`: the operator's command-line tool (quote, catalog validate, ...).
//!
//! Each subcommand is a module with an `Args` type implementing [`Run`]; adding one is one
//! line in a `subcommands!` list (the macro declares the module, the enum variant and the
//! dispatch). Errors go to stderr and exit with code 2.

use std::process::ExitCode;

/// A subcommand: parsed arguments that know how to run themselves.
pub trait Run {
    fn run(self) -> anyhow::Result<()>;
}

/// Declares subcommand modules, the clap enum over their `Args`, and its [`Run`] dispatch.
macro_rules! subcommands {
    ($(#[$em:meta])* $vis:vis enum $name:ident {
        $($(#[$m:meta])* $variant:ident($module:ident)),* $(,)?
    }) => {
        $(mod $module;)*
        $(#[$em])*
        #[derive(clap::Subcommand)]
        $vis enum $name {
            $($(#[$m])* $variant($module::Args)),*
        }
        impl $crate::Run for $name {
            fn run(self) -> anyhow::Result<()> {
                match self {
                    $($name::$variant(args) => $crate::Run::run(args)),*
                }
            }
        }
    };
}

subcommands! {
    pub enum Command {
        /// Price a product for some usage: the invoice lines and total Stripe will charge.
        Quote(quote),
        /// Work with the catalog file.
        Catalog(catalog),
        /// Run the whole stack on this machine (DynamoDB Local, Stripe emulator, every function on one port).
        Local(local),
        /// Grant or take back a consumer's prepaid credit (operator adjustments).
        Credit(credit),
    }
}

mod load;

#[derive(clap::Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Charge for your API with Stripe: operator's tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
