use crate::Run;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The catalog file (JSON).
    file: PathBuf,
}

impl Run for Args {
    fn run(self) -> anyhow::Result<()> {
        let catalog = crate::load::catalog(&self.file)?;
        println!(
            "{}: valid ({} products, {} meters)",
            self.file.display(),
            catalog.products.len(),
            catalog.meters.len()
        );
        Ok(())
    }
}
