//! Which DynamoDB actions a piece of code performs, counted as IAM sees them: an SDK
//! interceptor on the client records every operation before it is sent (once per operation,
//! not per retry), under the name of the function whose store the client belongs to.
//!
//! A transaction is not one IAM action: "Permissions for Put, Update, Delete, and Get actions
//! are governed by the permissions used for the underlying PutItem, UpdateItem, DeleteItem, and
//! GetItem operations. For the ConditionCheck action, you can use the
//! dynamodb:ConditionCheckItem permission"
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html>),
//! so `TransactWriteItems` is recorded as the actions of its items.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tollgate_store::DynamoStore;

/// IAM action → number of times it was needed.
pub type ActionCounts = BTreeMap<String, u64>;

/// The DynamoDB IAM actions performed, per caller (a function name). Cheap to clone; the
/// clones share one log.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<BTreeMap<String, ActionCounts>>>);

impl CallLog {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, who: &str, action: &str) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *log.entry(who.to_string())
            .or_default()
            .entry(action.to_string())
            .or_default() += 1;
    }

    /// Everything recorded so far: caller → IAM action (`dynamodb:GetItem`, ...) → count.
    pub fn snapshot(&self) -> BTreeMap<String, ActionCounts> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A store on `table` at `endpoint` whose every DynamoDB call is recorded under `who`.
    pub fn store(&self, endpoint: &str, table: &str, who: &str) -> DynamoStore {
        DynamoStore::new(self.client(endpoint, who), table)
    }

    /// A client for `endpoint` (as [`crate::dynamo::client_for`]) that records under `who`.
    pub fn client(&self, endpoint: &str, who: &str) -> Client {
        let base = crate::dynamo::client_for(endpoint);
        let conf = base
            .config()
            .to_builder()
            .interceptor(Recorder {
                log: self.clone(),
                who: who.to_string(),
            })
            .build();
        Client::from_conf(conf)
    }
}

#[derive(Debug)]
struct Recorder {
    log: CallLog,
    who: String,
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "tollgate-testkit-call-recorder"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        for action in iam_actions(context.input()) {
            self.log.record(&self.who, &action);
        }
        Ok(())
    }
}

/// The IAM actions one operation input needs. An operation this list does not know is
/// recorded as `dynamodb:Unrecognized(<type>)`, so a check against a policy fails loudly
/// rather than passing over it.
fn iam_actions(
    input: &aws_smithy_runtime_api::client::interceptors::context::Input,
) -> Vec<String> {
    macro_rules! simple {
        ($($module:ident :: $ty:ident => $action:literal),* $(,)?) => {
            $(if input.downcast_ref::<operation::$module::$ty>().is_some() {
                return vec![$action.to_string()];
            })*
        };
    }
    simple! {
        get_item::GetItemInput => "dynamodb:GetItem",
        put_item::PutItemInput => "dynamodb:PutItem",
        update_item::UpdateItemInput => "dynamodb:UpdateItem",
        delete_item::DeleteItemInput => "dynamodb:DeleteItem",
        query::QueryInput => "dynamodb:Query",
        scan::ScanInput => "dynamodb:Scan",
        batch_get_item::BatchGetItemInput => "dynamodb:BatchGetItem",
        batch_write_item::BatchWriteItemInput => "dynamodb:BatchWriteItem",
        describe_table::DescribeTableInput => "dynamodb:DescribeTable",
        create_table::CreateTableInput => "dynamodb:CreateTable",
        update_time_to_live::UpdateTimeToLiveInput => "dynamodb:UpdateTimeToLive",
    }
    if let Some(t) =
        input.downcast_ref::<operation::transact_write_items::TransactWriteItemsInput>()
    {
        return t
            .transact_items()
            .iter()
            .map(|item| {
                if item.put().is_some() {
                    "dynamodb:PutItem"
                } else if item.update().is_some() {
                    "dynamodb:UpdateItem"
                } else if item.delete().is_some() {
                    "dynamodb:DeleteItem"
                } else if item.condition_check().is_some() {
                    "dynamodb:ConditionCheckItem"
                } else {
                    "dynamodb:Unrecognized(TransactWriteItem)"
                }
                .to_string()
            })
            .collect();
    }
    if let Some(t) = input.downcast_ref::<operation::transact_get_items::TransactGetItemsInput>() {
        return vec!["dynamodb:GetItem".to_string(); t.transact_items().len()];
    }
    vec![format!("dynamodb:Unrecognized({input:?})")]
}
