//! What an invocation asks for. Three shapes arrive:
//!
//! * EventBridge Scheduler (`ScheduleV2`) delivers exactly its `Input`: `{"date": "YYYY-MM-DD"}`
//!   for a nightly run of that date, `{"mode": "period_close"}` for the
//!   15-minute period-close pass, or `{}`.
//! * An EventBridge rule (`Schedule`) delivers the scheduled-event envelope
//!   (`"detail-type": "Scheduled Event"`, `"time"`): the night before `time`.
//! * An operator invoking by hand: `{"date": "2026-11-20"}`, or nothing at all.
//!
//! No date means yesterday (UTC), the night that just closed.

use serde::Deserialize;
use serde_json::Value;
use tollgate_domain::billing::RunMode;
use tollgate_domain::time::{Duration, NaiveDate, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRequest {
    pub mode: RunMode,
    /// The UTC date a nightly run reports (usage up to the following midnight).
    pub date: NaiveDate,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("date: expected YYYY-MM-DD, found {0:?}")]
    Date(String),
    #[error("date: {0} is in the future")]
    FutureDate(NaiveDate),
    #[error("mode: expected \"nightly\" or \"period_close\", found {0:?}")]
    Mode(String),
    #[error("time: expected an RFC 3339 time in the scheduled event, found {0:?}")]
    Time(String),
    #[error("input: expected a JSON object, found {0}")]
    NotAnObject(String),
}

#[derive(Deserialize)]
struct Direct {
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

/// Reads an invocation payload. `now` decides "yesterday".
pub fn parse(payload: &Value, now: Timestamp) -> Result<RunRequest, InputError> {
    let yesterday = |t: Timestamp| (t - Duration::days(1)).date_naive();
    let obj = match payload {
        Value::Null => return Ok(nightly(yesterday(now))),
        Value::Object(o) => o,
        other => return Err(InputError::NotAnObject(other.to_string())),
    };
    if obj.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        let time = obj.get("time").and_then(Value::as_str).unwrap_or_default();
        let at = chrono::DateTime::parse_from_rfc3339(time)
            .map_err(|_| InputError::Time(time.to_string()))?
            .to_utc();
        return Ok(nightly(yesterday(at)));
    }
    let direct: Direct = serde_json::from_value(payload.clone())
        .map_err(|e| InputError::NotAnObject(e.to_string()))?;
    let mode = match direct.mode.as_deref() {
        None | Some("nightly") => RunMode::Nightly,
        Some("period_close") => RunMode::PeriodClose,
        Some(other) => return Err(InputError::Mode(other.to_string())),
    };
    let date = match direct.date {
        None => yesterday(now),
        Some(d) => {
            let d = NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| InputError::Date(d))?;
            if d > now.date_naive() {
                return Err(InputError::FutureDate(d));
            }
            d
        }
    };
    Ok(RunRequest { mode, date })
}

fn nightly(date: NaiveDate) -> RunRequest {
    RunRequest {
        mode: RunMode::Nightly,
        date,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 11, 22, 0, 5, 0).unwrap()
    }
    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn every_shape_names_a_night() {
        assert_eq!(parse(&Value::Null, now()).unwrap().date, d("2026-11-21"));
        assert_eq!(parse(&json!({}), now()).unwrap().date, d("2026-11-21"));
        let by_hand = parse(&json!({"date": "2026-11-03"}), now()).unwrap();
        assert_eq!(by_hand, nightly(d("2026-11-03")));
        let envelope = json!({
            "version": "0", "id": "5d6b6a0e", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-20T00:05:00Z",
            "region": "us-east-1", "resources": [], "detail": {}
        });
        assert_eq!(parse(&envelope, now()).unwrap(), nightly(d("2026-11-19")));
        let pass = parse(&json!({"mode": "period_close"}), now()).unwrap();
        assert_eq!(pass.mode, RunMode::PeriodClose);
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(
            parse(&json!({"date": "21/11/2026"}), now()),
            Err(InputError::Date("21/11/2026".into()))
        );
        assert_eq!(
            parse(&json!({"date": "2026-12-01"}), now()),
            Err(InputError::FutureDate(d("2026-12-01")))
        );
        assert_eq!(
            parse(&json!({"mode": "weekly"}), now()),
            Err(InputError::Mode("weekly".into()))
        );
        assert!(matches!(
            parse(&json!([1]), now()),
            Err(InputError::NotAnObject(_))
        ));
    }
}
