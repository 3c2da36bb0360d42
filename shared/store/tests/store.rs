//! The store against DynamoDB Local (AWS's own implementation), one fresh table per test,
//! created from `TollgateTable` in `template.yaml`. Every access pattern of
//! `docs/dynamodb.md` is exercised here.

use chrono::{Duration, TimeZone, Utc};
use std::sync::Arc;
use tollgate_domain::ids::{ApiKeyHash, ConsumerId, MeterId, ProductId, StripeId, SubscriptionId};
use tollgate_domain::ports::{
    ApiKey, ClaimScope, Consumer, CreditMovement, CreditReason, Expect, LedgerEntry, Store,
    StoreError, UsageBucketKey, Write,
};
use tollgate_domain::subscription::{Subscription, SubscriptionStatus};
use tollgate_domain::time::Timestamp;
use tollgate_store::DynamoStore;
use tollgate_testkit::dynamo::{fresh_store, fresh_table};

fn t(y: i32, mo: u32, d: u32, h: u32) -> Timestamp {
    Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
}

fn cid(s: &str) -> ConsumerId {
    ConsumerId::parse(s).unwrap()
}

fn sid(s: &str) -> SubscriptionId {
    SubscriptionId::parse(s).unwrap()
}

fn meter(s: &str) -> MeterId {
    MeterId::parse(s).unwrap()
}

fn stripe(s: &str) -> StripeId {
    StripeId::parse(s).unwrap()
}

fn consumer(id: &str) -> Consumer {
    Consumer {
        id: cid(id),
        stripe_customer_id: None,
        email: Some(format!("{id}@example.com")),
        created_at: t(2026, 11, 1, 0),
        version: 0,
    }
}

fn subscription(id: &str, consumer: &str, created_at: Timestamp) -> Subscription {
    Subscription {
        id: sid(id),
        consumer_id: cid(consumer),
        product_id: ProductId::parse("standard").unwrap(),
        name: "prod-backend".into(),
        status: SubscriptionStatus::Pending,
        seats: None,
        stripe_customer_id: None,
        stripe_subscription_id: None,
        stripe_checkout_session_id: None,
        current_period_start: None,
        current_period_end: None,
        cancel_at_period_end: false,
        access_expires_at: None,
        last_stripe_event_at: None,
        periods: Default::default(),
        created_at,
        updated_at: created_at,
        version: 0,
    }
}

fn api_key(key: &str, sub: &str, created_at: Timestamp) -> ApiKey {
    ApiKey {
        hash: ApiKeyHash::of_key(key),
        prefix: key.chars().take(7).collect(),
        subscription_id: sid(sub),
        consumer_id: cid("c1"),
        product_id: ProductId::parse("standard").unwrap(),
        created_at,
        revoked_at: None,
    }
}

fn claim(scope: ClaimScope, id: &str) -> Write {
    Write::Claim {
        scope,
        id: id.into(),
        expires_at: Utc::now() + Duration::days(3),
    }
}

fn usage(sub: &str, m: &str, hour: Timestamp, quantity: u64) -> Write {
    Write::AddUsage {
        key: UsageBucketKey {
            subscription_id: sid(sub),
            meter: meter(m),
            hour,
        },
        quantity,
    }
}

fn conflict_index(r: Result<(), StoreError>) -> usize {
    match r {
        Err(StoreError::Conflict { index, .. }) => index,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Commits, retrying only what DynamoDB calls retryable (a concurrent transaction on the same
/// item, throttling), as every caller of the store must.
async fn commit_retrying(store: &DynamoStore, writes: Vec<Write>) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match store.commit(writes.clone()).await {
            Err(e) if e.is_retryable() && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
            }
            other => return other,
        }
    }
}

// ---- consumers -------------------------------------------------------------------------

#[tokio::test]
async fn consumer_by_id_and_by_stripe_customer() {
    let store = fresh_store().await;
    let mut c = consumer("c1");
    store
        .commit(vec![Write::PutConsumer {
            consumer: c.clone(),
            expect: Expect::Absent,
        }])
        .await
        .unwrap();
    assert_eq!(
        store.get_consumer(&cid("c1")).await.unwrap(),
        Some(c.clone())
    );
    assert_eq!(store.get_consumer(&cid("nobody")).await.unwrap(), None);
    // Creating it again is a conflict (the checkout's "create the customer once").
    let again = store
        .commit(vec![Write::PutConsumer {
            consumer: c.clone(),
            expect: Expect::Absent,
        }])
        .await;
    assert_eq!(conflict_index(again), 0);

    c.stripe_customer_id = Some(stripe("cus_123"));
    store
        .commit(vec![Write::PutConsumer {
            consumer: c.clone(),
            expect: Expect::Version(0),
        }])
        .await
        .unwrap();
    let found = store
        .find_consumer_by_stripe_customer(&stripe("cus_123"))
        .await
        .unwrap()
        .expect("found by Stripe customer id");
    assert_eq!(found.id, c.id);
    assert_eq!(found.version, 1, "the store bumps the version");
    assert_eq!(
        store
            .find_consumer_by_stripe_customer(&stripe("cus_other"))
            .await
            .unwrap(),
        None
    );
}

// ---- subscriptions ---------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_by_id_stripe_id_consumer_and_all_pages() {
    let store = fresh_store().await;
    let mut a = subscription("sub_a", "c1", t(2026, 11, 2, 0));
    let b = subscription("sub_b", "c1", t(2026, 11, 1, 0));
    let other = subscription("sub_x", "c2", t(2026, 11, 3, 0));
    for s in [&a, &b, &other] {
        store
            .commit(vec![Write::PutSubscription {
                subscription: s.clone(),
                expect: Expect::Absent,
            }])
            .await
            .unwrap();
    }
    assert_eq!(
        store.get_subscription(&sid("sub_a")).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.get_subscription(&sid("sub_none")).await.unwrap(),
        None
    );

    let listed: Vec<_> = store
        .list_subscriptions(&cid("c1"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        listed,
        [sid("sub_b"), sid("sub_a")],
        "oldest first, own only"
    );

    a.stripe_subscription_id = Some(stripe("sub_stripe_1"));
    a.status = SubscriptionStatus::Active;
    store
        .commit(vec![Write::PutSubscription {
            subscription: a.clone(),
            expect: Expect::Version(0),
        }])
        .await
        .unwrap();
    let found = store
        .find_subscription_by_stripe_id(&stripe("sub_stripe_1"))
        .await
        .unwrap()
        .expect("found by Stripe subscription id");
    assert_eq!(found.id, a.id);
    assert_eq!(found.status, SubscriptionStatus::Active);
    assert_eq!(found.version, 1);
    assert_eq!(
        store
            .find_subscription_by_stripe_id(&stripe("sub_stripe_2"))
            .await
            .unwrap(),
        None
    );

    // Every subscription, two per page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_all_subscriptions(cursor.as_deref(), 2)
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items.into_iter().map(|s| s.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, [sid("sub_a"), sid("sub_b"), sid("sub_x")]);
    assert!(pages >= 2, "paged: {pages}");
    assert!(matches!(
        store.list_all_subscriptions(Some("not a cursor"), 2).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn optimistic_versions_let_one_of_two_writers_win() {
    let store = fresh_store().await;
    let s = subscription("sub_v", "c1", t(2026, 11, 1, 0));
    store
        .commit(vec![Write::PutSubscription {
            subscription: s.clone(),
            expect: Expect::Absent,
        }])
        .await
        .unwrap();
    // Both read version 0; the webhook activates, the portal cancels.
    let mut activated = s.clone();
    activated.status = SubscriptionStatus::Active;
    let mut canceled = s.clone();
    canceled.status = SubscriptionStatus::Canceled;
    store
        .commit(vec![Write::PutSubscription {
            subscription: activated,
            expect: Expect::Version(0),
        }])
        .await
        .unwrap();
    let lost = store
        .commit(vec![Write::PutSubscription {
            subscription: canceled.clone(),
            expect: Expect::Version(0),
        }])
        .await;
    assert_eq!(conflict_index(lost), 0);
    let now = store.get_subscription(&s.id).await.unwrap().unwrap();
    assert_eq!(now.status, SubscriptionStatus::Active);
    assert_eq!(now.version, 1);
    // The loser re-reads and writes on top of version 1.
    store
        .commit(vec![Write::PutSubscription {
            subscription: canceled,
            expect: Expect::Version(now.version),
        }])
        .await
        .unwrap();
    let now = store.get_subscription(&s.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.version), (SubscriptionStatus::Canceled, 2));
    // A version on an item that does not exist is a conflict too.
    let ghost = subscription("sub_ghost", "c1", t(2026, 11, 1, 0));
    let r = store
        .commit(vec![Write::PutSubscription {
            subscription: ghost,
            expect: Expect::Version(0),
        }])
        .await;
    assert_eq!(conflict_index(r), 0);
}

#[tokio::test]
async fn concurrent_version_writers_exactly_one_wins_each_round() {
    let store = Arc::new(fresh_store().await);
    let s = subscription("sub_race", "c1", t(2026, 11, 1, 0));
    store
        .commit(vec![Write::PutSubscription {
            subscription: s.clone(),
            expect: Expect::Absent,
        }])
        .await
        .unwrap();
    for round in 0..20u64 {
        let writers = (0..2).map(|w| {
            let store = store.clone();
            let mut sub = s.clone();
            sub.name = format!("writer-{w}-round-{round}");
            tokio::spawn(async move {
                commit_retrying(
                    &store,
                    vec![Write::PutSubscription {
                        subscription: sub,
                        expect: Expect::Version(round),
                    }],
                )
                .await
            })
        });
        let results = futures::future::join_all(writers).await;
        let wins = results
            .iter()
            .filter(|r| r.as_ref().unwrap().is_ok())
            .count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
    }
    assert_eq!(
        store
            .get_subscription(&s.id)
            .await
            .unwrap()
            .unwrap()
            .version,
        20
    );
}

// ---- API keys --------------------------------------------------------------------------

#[tokio::test]
async fn api_keys_by_hash_and_by_subscription_and_revocation() {
    let store = fresh_store().await;
    let k1 = api_key("tg_first_key", "sub_k", t(2026, 11, 1, 0));
    let k2 = api_key("tg_second_key", "sub_k", t(2026, 11, 2, 0));
    let elsewhere = api_key("tg_other_key", "sub_other", t(2026, 11, 1, 0));
    store
        .commit(vec![
            Write::PutApiKey(k2.clone()),
            Write::PutApiKey(k1.clone()),
            Write::PutApiKey(elsewhere.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(store.get_api_key(&k1.hash).await.unwrap(), Some(k1.clone()));
    assert_eq!(
        store
            .get_api_key(&ApiKeyHash::of_key("tg_unknown"))
            .await
            .unwrap(),
        None
    );
    let listed = store.list_api_keys(&sid("sub_k")).await.unwrap();
    assert_eq!(listed, [k1.clone(), k2.clone()], "oldest first, own only");
    // Only the hash is stored: the key itself appears nowhere in the item.
    let raw = tollgate_testkit::dynamo::client()
        .scan()
        .table_name(store.table_name())
        .send()
        .await
        .unwrap();
    assert!(!format!("{:?}", raw.items()).contains("tg_first_key"));

    assert_eq!(
        conflict_index(store.commit(vec![Write::PutApiKey(k1.clone())]).await),
        0
    );

    let at = t(2026, 11, 5, 0);
    store
        .commit(vec![Write::RevokeApiKey {
            hash: k1.hash.clone(),
            at,
        }])
        .await
        .unwrap();
    // A retried revoke keeps the first time.
    store
        .commit(vec![Write::RevokeApiKey {
            hash: k1.hash.clone(),
            at: t(2026, 11, 6, 0),
        }])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_api_key(&k1.hash)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(at)
    );
    let missing = store
        .commit(vec![Write::RevokeApiKey {
            hash: ApiKeyHash::of_key("tg_never_issued"),
            at,
        }])
        .await;
    assert_eq!(conflict_index(missing), 0);
}

// ---- idempotency claims ----------------------------------------------------------------

#[tokio::test]
async fn a_claim_keeps_its_content_digest_and_a_source_mark_moves_only_from_what_was_read() {
    let store = fresh_store().await;
    let content = |id: &str, digest: &str| Write::ClaimContent {
        scope: ClaimScope::UsageBatch,
        id: id.into(),
        digest: digest.into(),
        expires_at: Utc::now() + Duration::days(3),
    };
    assert_eq!(
        store
            .claim_digest(ClaimScope::UsageBatch, "b1")
            .await
            .unwrap(),
        None
    );
    store.commit(vec![content("b1", "d1")]).await.unwrap();
    assert_eq!(
        store
            .claim_digest(ClaimScope::UsageBatch, "b1")
            .await
            .unwrap(),
        Some(Some("d1".into()))
    );
    // Claimed is claimed, whatever the digest: the second is a conflict on the claim.
    assert_eq!(
        conflict_index(store.commit(vec![content("b1", "d2")]).await),
        0
    );
    // A plain claim has no digest.
    store
        .commit(vec![claim(ClaimScope::UsageBatch, "b2")])
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_digest(ClaimScope::UsageBatch, "b2")
            .await
            .unwrap(),
        Some(None)
    );

    let at = Utc::now();
    let advance = |from: Option<u64>, to: u64| Write::AdvanceSourceMark {
        source: "gw-1".into(),
        from,
        to,
        at,
    };
    assert_eq!(store.source_mark("gw-1").await.unwrap(), None);
    store.commit(vec![advance(None, 10)]).await.unwrap();
    assert_eq!(store.source_mark("gw-1").await.unwrap(), Some(10));
    // A writer that read no mark, or an older one, loses.
    assert_eq!(
        conflict_index(store.commit(vec![advance(None, 12)]).await),
        0
    );
    assert_eq!(
        conflict_index(store.commit(vec![advance(Some(9), 12)]).await),
        0
    );
    // In a transaction with the batch's claim: both or neither.
    assert_eq!(
        conflict_index(
            store
                .commit(vec![content("b3", "d3"), advance(Some(9), 15)])
                .await
        ),
        1
    );
    assert_eq!(
        store
            .claim_digest(ClaimScope::UsageBatch, "b3")
            .await
            .unwrap(),
        None
    );
    store
        .commit(vec![content("b3", "d3"), advance(Some(10), 15)])
        .await
        .unwrap();
    assert_eq!(store.source_mark("gw-1").await.unwrap(), Some(15));
    assert_eq!(store.source_mark("gw-2").await.unwrap(), None);
}

#[tokio::test]
async fn claims_are_made_once_and_expire() {
    let store = fresh_store().await;
    assert!(
        !store
            .is_claimed(ClaimScope::StripeEvent, "evt_1")
            .await
            .unwrap()
    );
    store
        .commit(vec![claim(ClaimScope::StripeEvent, "evt_1")])
        .await
        .unwrap();
    assert!(
        store
            .is_claimed(ClaimScope::StripeEvent, "evt_1")
            .await
            .unwrap()
    );
    assert_eq!(
        conflict_index(
            store
                .commit(vec![claim(ClaimScope::StripeEvent, "evt_1")])
                .await
        ),
        0
    );
    // Scopes are separate namespaces.
    assert!(
        !store
            .is_claimed(ClaimScope::UsageBatch, "evt_1")
            .await
            .unwrap()
    );
    store
        .commit(vec![claim(ClaimScope::UsageBatch, "evt_1")])
        .await
        .unwrap();

    // TTL deletes lazily; an expired claim that is still stored counts as absent.
    store
        .commit(vec![Write::Claim {
            scope: ClaimScope::CheckoutSession,
            id: "cs_old".into(),
            expires_at: Utc::now() - Duration::hours(1),
        }])
        .await
        .unwrap();
    assert!(
        !store
            .is_claimed(ClaimScope::CheckoutSession, "cs_old")
            .await
            .unwrap()
    );
    store
        .commit(vec![claim(ClaimScope::CheckoutSession, "cs_old")])
        .await
        .unwrap();
    assert!(
        store
            .is_claimed(ClaimScope::CheckoutSession, "cs_old")
            .await
            .unwrap()
    );

    // The claim item carries the TTL attribute the template names, in epoch seconds.
    let item = tollgate_testkit::dynamo::client()
        .get_item()
        .table_name(store.table_name())
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("CLAIM#stripe_event#evt_1".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("CLAIM".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let ttl = tollgate_testkit::dynamo::tollgate_table()
        .ttl_attribute
        .clone()
        .unwrap();
    let epoch: i64 = item[&ttl].as_n().unwrap().parse().unwrap();
    assert!(epoch > Utc::now().timestamp());
}

/// Two writers deliver the same usage batch at the same moment, 50 times over: each round
/// exactly one commit wins, and the usage is counted once per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_on_one_idempotency_key_has_exactly_one_winner() {
    let store = Arc::new(fresh_store().await);
    let hour = t(2026, 11, 10, 9);
    let rounds = 50;
    for round in 0..rounds {
        let batch = format!("batch-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let writers = (0..2).map(|_| {
            let store = store.clone();
            let batch = batch.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let writes = vec![
                    claim(ClaimScope::UsageBatch, &batch),
                    usage("sub_r", "api_calls", hour, 7),
                ];
                barrier.wait().await;
                commit_retrying(&store, writes).await
            })
        });
        let results: Vec<_> = futures::future::join_all(writers)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        let loser = results.into_iter().find(|r| r.is_err()).unwrap();
        assert_eq!(conflict_index(loser), 0, "the loser fails on the claim");
    }
    let buckets = store
        .usage_buckets(
            &sid("sub_r"),
            &meter("api_calls"),
            hour,
            hour + Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(buckets.len(), 1);
    assert_eq!(
        buckets[0].quantity,
        7 * rounds as u64,
        "each batch counted once"
    );
}

/// OpenMeter #5118: the claim and its effect are one commit, so when the effect fails the
/// claim is not made either, and the retry is processed rather than dropped.
#[tokio::test]
async fn failed_effect_leaves_the_claim_unmade_and_the_retry_succeeds() {
    let store = fresh_store().await;
    let c = consumer("c_dup");
    store
        .commit(vec![Write::PutConsumer {
            consumer: c.clone(),
            expect: Expect::Absent,
        }])
        .await
        .unwrap();
    let hour = t(2026, 11, 10, 9);
    // The effect (create a consumer that exists) fails its condition.
    let failed = store
        .commit(vec![
            claim(ClaimScope::StripeEvent, "evt_x"),
            usage("sub_f", "api_calls", hour, 5),
            Write::PutConsumer {
                consumer: c.clone(),
                expect: Expect::Absent,
            },
        ])
        .await;
    assert_eq!(conflict_index(failed), 2, "the failing write is named");
    assert!(
        !store
            .is_claimed(ClaimScope::StripeEvent, "evt_x")
            .await
            .unwrap()
    );
    assert!(
        store
            .usage_buckets(
                &sid("sub_f"),
                &meter("api_calls"),
                hour,
                hour + Duration::hours(1)
            )
            .await
            .unwrap()
            .is_empty(),
        "nothing of the failed commit was written"
    );
    // The retry (with a correct effect) goes through, once.
    let retry = vec![
        claim(ClaimScope::StripeEvent, "evt_x"),
        usage("sub_f", "api_calls", hour, 5),
        Write::PutConsumer {
            consumer: c.clone(),
            expect: Expect::Version(0),
        },
    ];
    store.commit(retry.clone()).await.unwrap();
    assert!(
        store
            .is_claimed(ClaimScope::StripeEvent, "evt_x")
            .await
            .unwrap()
    );
    assert_eq!(conflict_index(store.commit(retry).await), 0);
    let buckets = store
        .usage_buckets(
            &sid("sub_f"),
            &meter("api_calls"),
            hour,
            hour + Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(buckets[0].quantity, 5);
}

// ---- usage buckets ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_adds_up_and_reads_a_half_open_range() {
    let store = Arc::new(fresh_store().await);
    let h9 = t(2026, 11, 10, 9);
    let h10 = t(2026, 11, 10, 10);
    let h11 = t(2026, 11, 10, 11);
    // 20 concurrent single-bucket adds: ADD is atomic, none is lost.
    let adds = (1..=20u64).map(|q| {
        let store = store.clone();
        tokio::spawn(async move {
            commit_retrying(&store, vec![usage("sub_u", "api_calls", h9, q)]).await
        })
    });
    for r in futures::future::join_all(adds).await {
        r.unwrap().unwrap();
    }
    store
        .commit(vec![
            usage("sub_u", "api_calls", h10, 3),
            usage("sub_u", "api_calls", h11, 4),
            usage("sub_u", "data_bytes", h10, 1_000_000),
            usage("sub_other", "api_calls", h10, 99),
        ])
        .await
        .unwrap();
    let calls = store
        .usage_buckets(&sid("sub_u"), &meter("api_calls"), h9, h11)
        .await
        .unwrap();
    let got: Vec<(Timestamp, u64)> = calls.iter().map(|b| (b.key.hour, b.quantity)).collect();
    assert_eq!(got, [(h9, 210), (h10, 3)], "oldest first, `to` excluded");
    assert_eq!(calls[0].key.subscription_id, sid("sub_u"));
    assert_eq!(calls[0].key.meter, meter("api_calls"));
    let bytes = store
        .usage_buckets(
            &sid("sub_u"),
            &meter("data_bytes"),
            h9,
            h11 + Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(bytes.len(), 1);
    assert_eq!(bytes[0].quantity, 1_000_000);
    assert!(
        store
            .usage_buckets(&sid("sub_u"), &meter("api_calls"), h11, h9)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn metered_on_lists_each_subscription_and_meter_with_usage_that_day() {
    let store = fresh_store().await;
    let day = t(2026, 11, 10, 0);
    let mut writes = vec![
        usage("sub_1", "api_calls", day, 1),
        usage("sub_1", "api_calls", day + Duration::hours(23), 1),
        usage("sub_1", "data_bytes", day + Duration::hours(5), 1),
        // The hour before and the hour after the day belong to other days.
        usage("sub_2", "api_calls", day - Duration::hours(1), 1),
        usage("sub_3", "api_calls", day + Duration::hours(24), 1),
    ];
    // Enough subscriptions to land in several shards.
    for i in 0..30 {
        writes.push(usage(
            &format!("sub_many_{i}"),
            "api_calls",
            day + Duration::hours(12),
            1,
        ));
    }
    store.commit(writes).await.unwrap();
    let pairs = store.metered_on(day.date_naive()).await.unwrap();
    let mut expected = vec![
        (sid("sub_1"), meter("api_calls")),
        (sid("sub_1"), meter("data_bytes")),
    ];
    expected.extend((0..30).map(|i| (sid(&format!("sub_many_{i}")), meter("api_calls"))));
    let mut got = pairs.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    let before = store
        .metered_on((day - Duration::hours(1)).date_naive())
        .await
        .unwrap();
    assert_eq!(before, [(sid("sub_2"), meter("api_calls"))]);
}

// ---- subscriptions with one-time access -------------------------------------------------

#[tokio::test]
async fn access_expiring_by_lists_due_subscriptions_not_yet_final() {
    let store = fresh_store().await;
    let mut due = subscription("sub_due", "c1", t(2026, 11, 1, 0));
    due.status = SubscriptionStatus::Active;
    due.access_expires_at = Some(t(2026, 11, 20, 0));
    let mut later = subscription("sub_later", "c1", t(2026, 11, 1, 0));
    later.status = SubscriptionStatus::Active;
    later.access_expires_at = Some(t(2026, 12, 20, 0));
    let mut done = subscription("sub_done", "c1", t(2026, 11, 1, 0));
    done.status = SubscriptionStatus::Expired;
    done.access_expires_at = Some(t(2026, 11, 2, 0));
    let plain = subscription("sub_plain", "c1", t(2026, 11, 1, 0));
    for s in [&due, &later, &done, &plain] {
        store
            .commit(vec![Write::PutSubscription {
                subscription: s.clone(),
                expect: Expect::Absent,
            }])
            .await
            .unwrap();
    }
    let ids = |v: Vec<Subscription>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.access_expiring_by(t(2026, 11, 20, 0)).await.unwrap()),
        [sid("sub_due")],
        "at the end time itself it is due"
    );
    assert!(
        store
            .access_expiring_by(t(2026, 11, 19, 23))
            .await
            .unwrap()
            .is_empty()
    );
    // Once expired it leaves the list.
    let mut expired = due.clone();
    expired.status = SubscriptionStatus::Expired;
    store
        .commit(vec![Write::PutSubscription {
            subscription: expired,
            expect: Expect::Version(0),
        }])
        .await
        .unwrap();
    assert_eq!(
        ids(store.access_expiring_by(t(2027, 1, 1, 0)).await.unwrap()),
        [sid("sub_later")]
    );
}

// ---- billing ledger --------------------------------------------------------------------

fn entry(from: Timestamp, seq: u32, quantity: u64) -> LedgerEntry {
    LedgerEntry {
        subscription_id: sid("sub_l"),
        meter: meter("api_calls"),
        period_start: Some(t(2026, 11, 1, 0)),
        period_end: Some(t(2026, 12, 1, 0)),
        from,
        to: from + Duration::days(1),
        seq,
        quantity,
        identifier: format!("tg-sub_l-api_calls-{}-{seq}", from.timestamp()),
        event_timestamp: from + Duration::days(1) - Duration::seconds(1),
        created_at: t(2026, 11, 20, 0),
        reported_at: None,
        version: 0,
    }
}

#[tokio::test]
async fn ledger_entries_are_claimed_once_marked_reported_and_listed_in_order() {
    let store = fresh_store().await;
    let d10 = t(2026, 11, 10, 0);
    let d11 = t(2026, 11, 11, 0);
    let first = entry(d10, 0, 100);
    store
        .commit(vec![
            Write::PutLedgerEntry {
                entry: entry(d11, 0, 50),
                expect: Expect::Absent,
            },
            Write::PutLedgerEntry {
                entry: first.clone(),
                expect: Expect::Absent,
            },
            Write::PutLedgerEntry {
                entry: entry(d10, 1, 5),
                expect: Expect::Absent,
            },
        ])
        .await
        .unwrap();
    // A second run trying to report the same slice collides on the same item.
    let again = store
        .commit(vec![Write::PutLedgerEntry {
            entry: entry(d10, 0, 101),
            expect: Expect::Absent,
        }])
        .await;
    assert_eq!(conflict_index(again), 0);

    let mut reported = first.clone();
    reported.reported_at = Some(t(2026, 11, 20, 0));
    store
        .commit(vec![Write::PutLedgerEntry {
            entry: reported.clone(),
            expect: Expect::Version(0),
        }])
        .await
        .unwrap();

    let all = store
        .ledger_entries(&sid("sub_l"), &meter("api_calls"), d10)
        .await
        .unwrap();
    let order: Vec<(Timestamp, u32, u64)> =
        all.iter().map(|e| (e.from, e.seq, e.quantity)).collect();
    assert_eq!(order, [(d10, 0, 100), (d10, 1, 5), (d11, 0, 50)]);
    assert_eq!(all[0].reported_at, reported.reported_at);
    assert_eq!(all[0].version, 1);
    let since = store
        .ledger_entries(&sid("sub_l"), &meter("api_calls"), d11)
        .await
        .unwrap();
    assert_eq!(since.len(), 1);
    assert!(
        store
            .ledger_entries(&sid("sub_l"), &meter("data_bytes"), d10)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---- prepaid credit --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credit_purchase_once_and_draw_down_never_below_the_floor() {
    let store = Arc::new(fresh_store().await);
    let c = cid("c_credit");
    let at = t(2026, 11, 10, 0);
    assert_eq!(store.get_credit_balance(&c).await.unwrap(), None);
    let purchase = vec![
        Write::PutCreditMovement(CreditMovement {
            consumer_id: c.clone(),
            reason: CreditReason::Purchase,
            id: "cs_pack_1".into(),
            amount: 1_000,
            at,
            requested: None,
            note: None,
        }),
        Write::AdjustCredit {
            consumer_id: c.clone(),
            delta: 1_000,
            floor: None,
            at,
        },
    ];
    store.commit(purchase.clone()).await.unwrap();
    // The same purchase again (a re-delivered webhook) credits nothing.
    assert_eq!(conflict_index(store.commit(purchase).await), 0);
    assert_eq!(
        store.get_credit_balance(&c).await.unwrap().unwrap().balance,
        1_000
    );

    // 30 concurrent draw-downs of 50 against 1,000 with floor 0: exactly 20 fit.
    let draws = (0..30).map(|i| {
        let store = store.clone();
        let c = c.clone();
        tokio::spawn(async move {
            commit_retrying(
                &store,
                vec![
                    Write::PutCreditMovement(CreditMovement {
                        consumer_id: c.clone(),
                        reason: CreditReason::Usage,
                        id: format!("batch-{i}"),
                        amount: -50,
                        at: at + Duration::minutes(i + 1),
                        requested: None,
                        note: None,
                    }),
                    Write::AdjustCredit {
                        consumer_id: c,
                        delta: -50,
                        floor: Some(0),
                        at: at + Duration::minutes(i + 1),
                    },
                ],
            )
            .await
        })
    });
    let results: Vec<_> = futures::future::join_all(draws)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 20, "{results:?}");
    for r in results.into_iter().filter(|r| r.is_err()) {
        assert_eq!(conflict_index(r), 1, "refused by the floor");
    }
    let balance = store.get_credit_balance(&c).await.unwrap().unwrap();
    assert_eq!(balance.balance, 0);

    // A draw-down on a consumer with no balance item yet, floor -100 (overdraft allowed).
    let fresh = cid("c_overdraft");
    let draw = |delta| Write::AdjustCredit {
        consumer_id: fresh.clone(),
        delta,
        floor: Some(-100),
        at,
    };
    store.commit(vec![draw(-80)]).await.unwrap();
    assert_eq!(conflict_index(store.commit(vec![draw(-30)]).await), 0);
    store.commit(vec![draw(-20)]).await.unwrap();
    assert_eq!(
        store
            .get_credit_balance(&fresh)
            .await
            .unwrap()
            .unwrap()
            .balance,
        -100
    );

    let moves = store.list_credit_movements(&c).await.unwrap();
    assert_eq!(moves.len(), 21, "the purchase and the 20 draws that fit");
    assert_eq!(moves[0].reason, CreditReason::Purchase);
    assert_eq!(moves.iter().map(|m| m.amount).sum::<i64>(), 0);
    assert!(moves.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
}

// ---- limits ----------------------------------------------------------------------------

#[tokio::test]
async fn transaction_limits_are_enforced_before_sending() {
    let table = fresh_table().await;
    let store = &table.store;
    let hour = t(2026, 11, 10, 0);
    let writes = |n: usize| -> Vec<Write> {
        (0..n)
            .map(|i| usage("sub_big", "api_calls", hour + Duration::hours(i as i64), 1))
            .collect()
    };
    // 100 items is the limit and works.
    store.commit(writes(100)).await.unwrap();
    assert_eq!(
        store
            .usage_buckets(
                &sid("sub_big"),
                &meter("api_calls"),
                hour,
                hour + Duration::days(30)
            )
            .await
            .unwrap()
            .len(),
        100
    );
    // 101 is refused, and nothing of it is written.
    let r = store.commit(writes(101)).await;
    assert!(matches!(r, Err(StoreError::TooLarge(_))), "{r:?}");
    let buckets = store
        .usage_buckets(
            &sid("sub_big"),
            &meter("api_calls"),
            hour,
            hour + Duration::days(30),
        )
        .await
        .unwrap();
    assert!(buckets.iter().all(|b| b.quantity == 1));

    // Over 4 MB in a few items (each under the 400 KB item limit).
    let big: Vec<Write> = (0..11)
        .map(|i| {
            let mut c = consumer(&format!("c_big_{i}"));
            c.email = Some("x".repeat(390 * 1024));
            Write::PutConsumer {
                consumer: c,
                expect: Expect::Absent,
            }
        })
        .collect();
    let r = store.commit(big).await;
    assert!(matches!(r, Err(StoreError::TooLarge(_))), "{r:?}");
    assert_eq!(store.get_consumer(&cid("c_big_0")).await.unwrap(), None);

    // Two writes on one item cannot share a transaction: said before sending.
    let r = store
        .commit(vec![
            usage("sub_big", "api_calls", hour, 1),
            usage("sub_big", "api_calls", hour, 1),
        ])
        .await;
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");

    // An empty commit is a no-op.
    store.commit(vec![]).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_store_is_unavailable_not_a_conflict() {
    // A closed port: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = tollgate_testkit::dynamo::client_for(&format!("http://127.0.0.1:{port}"));
    let store = DynamoStore::new(client, "nowhere");
    let r = store
        .commit(vec![claim(ClaimScope::StripeEvent, "evt_1")])
        .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(r.unwrap_err().is_retryable());
    let r = store.get_consumer(&cid("c1")).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn an_item_that_does_not_parse_is_corrupt_not_absent() {
    use aws_sdk_dynamodb::types::AttributeValue::S;
    let table = fresh_table().await;
    // A consumer item without `created_at` (written by hand, as a bad migration might).
    table
        .client
        .put_item()
        .table_name(&table.table_name)
        .item("pk", S("CONSUMER#c_bad".into()))
        .item("sk", S("CONSUMER".into()))
        .item("id", S("c_bad".into()))
        .send()
        .await
        .unwrap();
    let r = table.store.get_consumer(&cid("c_bad")).await;
    match r {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("CONSUMER#c_bad"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
