//! One AWS SDK configuration for every adapter: rustls with ring (a single HTTP stack, which
//! halves the SDK's build time) and the standard environment, so `AWS_ENDPOINT_URL_DYNAMODB`,
//! `AWS_ENDPOINT_URL_EVENTBRIDGE` and friends redirect clients in tests and the local stack
//! without an endpoint branch in production code.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::{
    Builder,
    tls::{self, rustls_provider::CryptoMode},
};
use tokio::sync::OnceCell;

static SDK_CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();

/// The SDK configuration from the environment, loaded once per process (every client and the
/// lazy secret fetch share one HTTPS client and one read of the root certificates). Makes no
/// network call: credentials are resolved on the first request, so this is cheap at init.
pub async fn load_sdk_config() -> SdkConfig {
    SDK_CONFIG.get_or_init(load).await.clone()
}

async fn load() -> SdkConfig {
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}
