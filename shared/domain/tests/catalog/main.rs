//! Catalog, validation and pricing tests against the shipped example catalog (one test binary).

mod pricing;
mod properties;
mod schema;
mod validate;

use tollgate_domain::Catalog;

/// The example catalog the CLI and the docs use: the seed-001 table and the seed-003/004 models.
pub const EXAMPLE: &str = include_str!("../../../../examples/catalog.json");

pub fn example() -> Catalog {
    Catalog::from_json(EXAMPLE).unwrap_or_else(|e| panic!("example catalog is invalid:\n{e}"))
}
