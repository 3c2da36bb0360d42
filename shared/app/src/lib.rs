//! What every tollgate function shares above the domain: typed configuration, secrets resolved
//! lazily, the AWS SDK configuration, the one mapping from errors to HTTP status + JSON body,
//! and constant-time authentication of the portal and gateway.

pub mod auth;
pub mod aws;
pub mod config;
pub mod credit;
pub mod entitlement;
pub mod error;
pub mod json;
pub mod subscriptions;
pub mod telemetry;

pub use config::{ConfigError, Secret, Settings};
pub use error::{ApiError, FieldError};
