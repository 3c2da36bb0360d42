//! `DynamoStore::from_env` as a Lambda builds it: table from `TABLE_NAME`, endpoint from the
//! standard `AWS_ENDPOINT_URL_DYNAMODB` (no endpoint branch in the code). Its own test binary,
//! because it sets process environment variables.

use tollgate_domain::ids::ConsumerId;
use tollgate_domain::ports::{ClaimScope, Store, StoreError, Write};
use tollgate_store::{DynamoStore, TABLE_NAME_ENV};
use tollgate_testkit::dynamo::fresh_table;

#[tokio::test]
async fn from_env_reads_the_table_name_and_the_standard_endpoint_variable() {
    let table = fresh_table().await;
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe {
        std::env::remove_var(TABLE_NAME_ENV);
    }
    assert!(matches!(
        DynamoStore::from_env().await,
        Err(StoreError::Invalid(msg)) if msg.contains(TABLE_NAME_ENV)
    ));
    unsafe {
        std::env::set_var(TABLE_NAME_ENV, &table.table_name);
        std::env::set_var("AWS_ENDPOINT_URL_DYNAMODB", &table.endpoint);
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "tollgate");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "local");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let store = DynamoStore::from_env().await.unwrap();
    assert_eq!(store.table_name(), table.table_name);
    store
        .commit(vec![Write::Claim {
            scope: ClaimScope::StripeEvent,
            id: "evt_env".into(),
            expires_at: chrono::Utc::now() + chrono::Duration::days(1),
        }])
        .await
        .unwrap();
    // Written through the env-built client, seen through the testkit's own.
    assert!(
        table
            .store
            .is_claimed(ClaimScope::StripeEvent, "evt_env")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_consumer(&ConsumerId::parse("nobody").unwrap())
            .await
            .unwrap(),
        None
    );
}
