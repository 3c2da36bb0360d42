//! Reading the catalog file, shared by every subcommand that takes one.

use anyhow::Context;
use std::path::Path;
use tollgate_domain::Catalog;

/// Reads, parses and validates a catalog file; the error lists every problem in it.
pub fn catalog(path: &Path) -> anyhow::Result<Catalog> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read catalog {}", path.display()))?;
    Catalog::from_json(&text).map_err(|errors| {
        anyhow::anyhow!(
            "catalog {} is invalid ({} errors):\n{errors}",
            path.display(),
            errors.0.len()
        )
    })
}
