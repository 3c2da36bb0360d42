//! SDK errors → [`StoreError`]: what the caller can do about it (conflict, retry, bug).

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::CancellationReason;
use tollgate_domain::ports::StoreError;

/// Error codes after which the same request may succeed later. The SDK's standard retry has
/// already retried throttling a few times before we see these.
const RETRYABLE: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ThrottlingException",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "TransactionConflictException",
    "LimitExceededException",
];

/// Maps the error of a single-item operation (`index` is the write's place in the commit).
pub(crate) fn classify<E, R>(err: SdkError<E, R>, index: usize) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match err.code() {
        Some("ConditionalCheckFailedException") => StoreError::Conflict {
            index,
            reason: err.message().unwrap_or("condition failed").to_string(),
        },
        Some(code) => by_code(code, err.message().unwrap_or_default()),
        // No service error code: dispatch, timeout or a response that could not be read.
        None => StoreError::Unavailable(DisplayErrorContext(&err).to_string()),
    }
}

pub(crate) fn classify_transaction<R>(err: SdkError<TransactWriteItemsError, R>) -> StoreError
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(TransactWriteItemsError::TransactionCanceledException(e)) = err.as_service_error() {
        return from_cancellation(e.cancellation_reasons());
    }
    classify(err, 0)
}

/// DynamoDB lists one reason per item, `None` for the items that were fine. A failed
/// condition names its write; a conflict with a concurrent transaction or throttling is
/// retryable.
fn from_cancellation(reasons: &[CancellationReason]) -> StoreError {
    for (index, r) in reasons.iter().enumerate() {
        if r.code() == Some("ConditionalCheckFailed") {
            return StoreError::Conflict {
                index,
                reason: r.message().unwrap_or("condition failed").to_string(),
            };
        }
    }
    let failed: Vec<String> = reasons
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.code() {
            None | Some("None") => None,
            Some(code) => Some(format!(
                "write {i}: {code} {}",
                r.message().unwrap_or_default()
            )),
        })
        .collect();
    let codes: Vec<&str> = reasons
        .iter()
        .filter_map(|r| r.code())
        .filter(|c| *c != "None")
        .collect();
    let text = format!("transaction cancelled: {}", failed.join("; "));
    if codes.contains(&"ValidationError") {
        StoreError::Invalid(text)
    } else if codes.contains(&"ItemCollectionSizeLimitExceeded") {
        StoreError::TooLarge(text)
    } else {
        // TransactionConflict, ThrottlingError, ProvisionedThroughputExceeded and unknowns.
        StoreError::Unavailable(text)
    }
}

fn by_code(code: &str, message: &str) -> StoreError {
    let text = format!("{code}: {message}");
    if RETRYABLE.contains(&code) {
        StoreError::Unavailable(text)
    } else if code == "ValidationException" {
        if message.contains("size") {
            StoreError::TooLarge(text)
        } else {
            StoreError::Invalid(text)
        }
    } else if code == "ItemCollectionSizeLimitExceededException" {
        StoreError::TooLarge(text)
    } else {
        // ResourceNotFound (wrong table name), access denied, unknown: an operator has to
        // look, but the write may succeed once they did; never a silent success.
        StoreError::Unavailable(text)
    }
}
