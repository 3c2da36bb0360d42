use lambda_http::{Error, Request, run, service_fn};
use std::sync::Arc;
use tollgate_app::Settings;
use tollgate_domain::time::SystemClock;
use tollgate_domain::usage::IngestWindow;
use usage::Usage;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate_app::telemetry::init_tracing();
    let settings = Settings::from_env()?;
    let sdk = tollgate_app::aws::load_sdk_config().await;
    let store = tollgate_store::DynamoStore::from_conf(&sdk, &settings.table_name);
    let publisher = tollgate_events::EventBridgePublisher::new(&sdk, &settings.event_bus_name);
    let app = Usage::new(
        Arc::new(store),
        Arc::new(publisher),
        settings.catalog.clone(),
        tollgate_app::credit::policy(&settings),
        IngestWindow::default(),
        Arc::new(SystemClock),
        settings.gateway_secret.clone(),
    );
    run(service_fn(|req: Request| app.handle(req))).await
}
