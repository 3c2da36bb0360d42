use authorizer::Authorizer;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use std::sync::Arc;
use tollgate_app::Settings;
use tollgate_domain::time::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate_app::telemetry::init_tracing();
    let settings = Settings::from_env()?;
    let sdk = tollgate_app::aws::load_sdk_config().await;
    let store = tollgate_store::DynamoStore::from_conf(&sdk, &settings.table_name);
    let header = std::env::var("API_KEY_HEADER").unwrap_or_else(|_| "x-api-key".into());
    let app = Authorizer::new(
        Arc::new(store),
        settings.catalog.clone(),
        Arc::new(SystemClock),
        header,
    );
    run(service_fn(|event: LambdaEvent<Value>| app.handle(event))).await
}
