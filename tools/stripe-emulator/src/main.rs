//! `stripe-emulator --port N --webhook-url URL --webhook-secret S`: the local stack's Stripe.

use clap::Parser;
use tollgate_stripe_emulator::{Emulator, EmulatorConfig, WebhookConfig};

#[derive(Parser)]
#[command(
    about = "Stateful local Stripe emulator (form-encoded v1 API, signed webhooks, advanceable clock)"
)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, env = "STRIPE_EMULATOR_PORT", default_value_t = 12111)]
    port: u16,
    #[arg(long, env = "STRIPE_EMULATOR_WEBHOOK_URL")]
    webhook_url: Option<String>,
    #[arg(
        long,
        env = "STRIPE_EMULATOR_WEBHOOK_SECRET",
        default_value = "whsec_emulator"
    )]
    webhook_secret: String,
    /// Test fault for the conformance suite's self-test: `TYPE.FIELD` is removed from every
    /// object of that type in API responses.
    #[arg(long, env = "STRIPE_EMULATOR_DROP_FIELD")]
    drop_field: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let webhook = WebhookConfig {
        url: args.webhook_url,
        secret: args.webhook_secret,
        ..WebhookConfig::default()
    };
    let emulator = Emulator::start(EmulatorConfig {
        port: args.port,
        webhook,
        drop_field: args.drop_field,
        ..EmulatorConfig::default()
    })
    .await?;
    println!("stripe emulator listening on {}", emulator.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
