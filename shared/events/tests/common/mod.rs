//! Sample events shared by the test binaries.
#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use tollgate_domain::events::{DomainEvent, SubscriptionEvent};
use tollgate_domain::subscription::SubscriptionStatus;
use tollgate_domain::time::Timestamp;
use tollgate_domain::{ConsumerId, MeterId, ProductId, SubscriptionId};

pub fn at(day: u32, hour: u32) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
}

fn sub_event(n: usize, status: SubscriptionStatus) -> SubscriptionEvent {
    SubscriptionEvent {
        subscription_id: SubscriptionId::parse(format!("sub_{n:04}")).unwrap(),
        consumer_id: ConsumerId::parse(format!("consumer-{n}")).unwrap(),
        product_id: ProductId::parse("standard").unwrap(),
        status,
        at: at(1 + (n % 28) as u32, 12),
    }
}

/// One event of every variant. The match makes a new variant a compile error here, so it
/// cannot ship without a sample (and so without a schema, see `schemas.rs`).
pub fn one_of_each() -> Vec<DomainEvent> {
    let events = vec![
        DomainEvent::SubscriptionActivated(sub_event(1, SubscriptionStatus::Active)),
        DomainEvent::SubscriptionSuspended(sub_event(2, SubscriptionStatus::Suspended)),
        DomainEvent::SubscriptionReactivated(sub_event(3, SubscriptionStatus::Active)),
        DomainEvent::SubscriptionCanceled(sub_event(4, SubscriptionStatus::Canceled)),
        DomainEvent::SubscriptionExpired(sub_event(5, SubscriptionStatus::Expired)),
        DomainEvent::ApiKeyIssued {
            subscription_id: SubscriptionId::parse("sub_0006").unwrap(),
            consumer_id: ConsumerId::parse("consumer-6").unwrap(),
            key_prefix: "tg_live_ab12".into(),
            at: at(6, 9),
        },
        DomainEvent::QuotaThreshold {
            subscription_id: SubscriptionId::parse("sub_0007").unwrap(),
            consumer_id: ConsumerId::parse("consumer-7").unwrap(),
            meter: MeterId::parse("api_calls").unwrap(),
            percent: 80,
            used: 80_000,
            limit: 100_000,
            period_start: at(1, 0),
            at: at(7, 15),
        },
        DomainEvent::CreditsLow {
            consumer_id: ConsumerId::parse("consumer-8").unwrap(),
            balance: 99,
            threshold: 100,
            at: at(8, 10),
        },
        DomainEvent::CreditsDepleted {
            consumer_id: ConsumerId::parse("consumer-9").unwrap(),
            balance: -1,
            at: at(9, 11),
        },
        DomainEvent::CreditRevoked {
            consumer_id: ConsumerId::parse("consumer-10").unwrap(),
            amount: 500,
            balance: 0,
            charge: "ch_0010".into(),
            at: at(10, 12),
        },
    ];
    for e in &events {
        match e {
            DomainEvent::SubscriptionActivated(_)
            | DomainEvent::SubscriptionSuspended(_)
            | DomainEvent::SubscriptionReactivated(_)
            | DomainEvent::SubscriptionCanceled(_)
            | DomainEvent::SubscriptionExpired(_)
            | DomainEvent::ApiKeyIssued { .. }
            | DomainEvent::QuotaThreshold { .. }
            | DomainEvent::CreditsLow { .. }
            | DomainEvent::CreditsDepleted { .. }
            | DomainEvent::CreditRevoked { .. } => {}
        }
    }
    events
}

/// `n` distinct subscription events (distinct ids), to check order and chunking.
pub fn activations(n: usize) -> Vec<DomainEvent> {
    (0..n)
        .map(|i| DomainEvent::SubscriptionActivated(sub_event(100 + i, SubscriptionStatus::Active)))
        .collect()
}
