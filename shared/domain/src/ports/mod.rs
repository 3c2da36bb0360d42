//! Ports: what the domain needs from the outside world, as traits. Adapters (DynamoDB, Stripe,
//! EventBridge) implement them in their own crates; tests run the real adapters against
//! DynamoDB Local, the Stripe emulator and a captured EventBridge endpoint.
//!
//! Writes go through [`Store::commit`]: a list of [`Write`]s applied all-or-nothing (one
//! DynamoDB `TransactWriteItems`). An idempotency claim and its effect are always in the same
//! commit, so a failed effect leaves the claim unmade and a retry is not lost (OpenMeter #5118).

mod payments;
mod publisher;
mod store;

pub use payments::*;
pub use publisher::*;
pub use store::*;
