use billing_run::{BillingRun, RunConfig};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use std::sync::Arc;
use tollgate_app::Settings;
use tollgate_domain::time::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate_app::telemetry::init_tracing();
    let settings = Settings::from_env()?;
    let config = RunConfig::from_env()?;
    let sdk = tollgate_app::aws::load_sdk_config().await;
    let store = tollgate_store::DynamoStore::from_conf(&sdk, &settings.table_name);
    let payments = tollgate_stripe::LazyPayments::from_settings(&settings);
    let publisher = tollgate_events::EventBridgePublisher::new(&sdk, &settings.event_bus_name);
    let app = BillingRun::new(
        Arc::new(store),
        Arc::new(payments),
        Arc::new(publisher),
        settings.catalog.clone(),
        Arc::new(SystemClock),
        config,
    );
    run(service_fn(|event: LambdaEvent<Value>| app.handle(event))).await
}
