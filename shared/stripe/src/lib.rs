//! tollgate's Stripe adapter, on async-stripe 1.0: implements the domain's
//! [`Payments`](tollgate_domain::ports::Payments) and
//! [`CatalogSync`](tollgate_domain::ports::CatalogSync) ports, and holds catalog sync's planner.
//!
//! Every POST carries an `Idempotency-Key` derived from the domain operation (a consumer id, a
//! tollgate subscription id, a meter-event identifier, a sync action), so a retried Lambda or a
//! re-run sync never does the work twice. Transient failures are retried with jittered backoff
//! ([`RetryPolicy`]); everything else becomes a [`PaymentsError`](tollgate_domain::ports::PaymentsError).

mod client;
mod convert;
mod lazy;
mod payments;
pub mod sync;

pub use client::{RetryPolicy, StripeClient, StripeConfig};
pub use lazy::LazyPayments;
pub use payments::StripeAdapter;
