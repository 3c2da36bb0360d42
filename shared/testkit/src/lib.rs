//! tollgate-testkit: the test harness shared by tollgate's crates (a dev-dependency only,
//! never linked into a Lambda).
//!
//! - [`calls`]: the DynamoDB IAM actions a function performs, recorded by an SDK interceptor.
//! - [`dynamo`]: DynamoDB Local started once per test process, a fresh `TollgateTable` per test.
//! - [`eventbridge`]: a PutEvents capture server, so tests see what the real SDK client published.
//! - [`process`]: helper processes that die with their owner, however it exits.

pub mod calls;
pub mod dynamo;
pub mod eventbridge;
pub mod process;
