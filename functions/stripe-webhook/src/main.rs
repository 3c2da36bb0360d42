use lambda_http::{Error, Request, run, service_fn};
use std::sync::Arc;
use stripe_webhook::Webhook;
use tollgate_app::Settings;
use tollgate_domain::time::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate_app::telemetry::init_tracing();
    let settings = Settings::from_env()?;
    let sdk = tollgate_app::aws::load_sdk_config().await;
    let store = tollgate_store::DynamoStore::from_conf(&sdk, &settings.table_name);
    let payments = tollgate_stripe::LazyPayments::from_settings(&settings);
    let publisher = tollgate_events::EventBridgePublisher::new(&sdk, &settings.event_bus_name);
    let app = Webhook::new(
        &settings,
        Arc::new(store),
        Arc::new(payments),
        Arc::new(publisher),
        Arc::new(SystemClock),
    );
    run(service_fn(|req: Request| app.handle(req))).await
}
