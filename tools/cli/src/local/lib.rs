//! The local stack behind `tollgate local`: the whole product on one machine, offline.
//!
//! - DynamoDB Local (AWS's own implementation, via the test harness's launcher) with the table
//!   created from `TollgateTable` in `template.yaml`;
//! - the Stripe emulator, in process, with `examples/catalog.json` synced into it and its
//!   webhooks pointed at this stack's `/stripe/webhook`;
//! - an EventBridge capture, so the domain events the functions publish can be shown;
//! - every function's library handler served on ONE port, on exactly the routes of the
//!   template's HTTP API, each request turned into the API Gateway v2 event Lambda would get;
//! - operator routes under `/_local/` (billing run, clock) and the developer portal under
//!   `/portal/`;
//! - the provider's API Gateway ([`gateway`]): `/_local/api/...` through the real authorizer
//!   to a sample upstream, its access log delivered to the real usage-from-logs handler.
//!
//! [`demo::run`] plays a scripted month against it. The binary's `tollgate local` subcommand
//! and the end-to-end tests both drive this library.

pub mod apigw;
pub mod demo;
pub mod gateway;
pub mod portal;
pub mod routes;
pub mod stack;

pub use stack::{FlushReport, LocalInfo, LocalStack, StackOptions};
