use aws_lambda_events::cloudwatch_logs::LogsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use std::sync::Arc;
use tollgate_app::Settings;
use tollgate_domain::time::SystemClock;
use tollgate_domain::usage::IngestWindow;
use usage::Usage;
use usage_from_logs::UsageFromLogs;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate_app::telemetry::init_tracing();
    let settings = Settings::from_env()?;
    let sdk = tollgate_app::aws::load_sdk_config().await;
    let store = Arc::new(tollgate_store::DynamoStore::from_conf(
        &sdk,
        &settings.table_name,
    ));
    let publisher = tollgate_events::EventBridgePublisher::new(&sdk, &settings.event_bus_name);
    // The same usage service as POST /usage; its gateway secret is never asked for here.
    let usage = Usage::new(
        store.clone(),
        Arc::new(publisher),
        settings.catalog.clone(),
        tollgate_app::credit::policy(&settings),
        IngestWindow::default(),
        Arc::new(SystemClock),
        settings.gateway_secret.clone(),
    );
    let app = UsageFromLogs::new(Arc::new(usage), store, settings.catalog.clone());
    run(service_fn(|event: LambdaEvent<LogsEvent>| {
        app.handle(event)
    }))
    .await
}
