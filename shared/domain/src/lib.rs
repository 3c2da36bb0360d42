//! tollgate's pure domain: catalog, pricing, usage, subscription lifecycle, billing plan and
//! credit rules, and the ports (traits) the adapters implement.
//!
//! Nothing in this crate knows about AWS or Stripe types: adapters translate at the edge.

pub mod apikey;
pub mod billing;
pub mod catalog;
pub mod credit;
pub mod entitlement;
pub mod events;
pub mod ids;
pub mod json;
pub mod lifecycle;
pub mod money;
pub mod ports;
pub mod pricing;
pub mod subscription;
pub mod time;
pub mod usage;
pub mod validate;

pub use catalog::Catalog;
pub use ids::*;
pub use money::{Currency, MinorUnits};
