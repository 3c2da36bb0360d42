//! Logging for Lambda: JSON lines to stdout (CloudWatch), level from `RUST_LOG` (default info).

pub use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Lambda adds its own timestamps and request ids; a second init (tests) is harmless.
    let _ = tracing::subscriber::set_global_default(json_subscriber(filter, std::io::stdout));
}

/// The functions' log format: one JSON object per line, the event's message and fields under
/// `fields` (`{"level":"WARN","fields":{"message":"webhook refused","reason":"..."}}`), which
/// the template's log metric filters match (`$.fields.message = "..."`). Tests build it with
/// their own writer to check those filters against real log lines.
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .without_time()
        .with_target(false)
        .with_writer(writer)
        .finish()
}
