//! Typed access to decoded form parameters, answering Stripe's errors for bad values.

use crate::error::{ApiError, ApiResult};
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct Params(pub Value);

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn sub(&self, name: &str) -> Params {
        Params(self.0.get(name).cloned().unwrap_or(Value::Null))
    }

    pub fn opt_str(&self, name: &str) -> ApiResult<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(name, format!("Invalid string: {name}"))),
        }
    }

    /// A list filter: true when the request does not filter on `name` (or its value is not a
    /// string) or when `value` equals it.
    pub fn filter_matches(&self, name: &str, value: &Value) -> bool {
        self.opt_str(name)
            .ok()
            .flatten()
            .is_none_or(|want| value == want.as_str())
    }

    pub fn str(&self, name: &str) -> ApiResult<String> {
        self.opt_str(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::missing(name))
    }

    /// A string or, for an empty value, JSON null (Stripe unsets a field sent as `name=`).
    pub fn nullable_str(&self, name: &str) -> ApiResult<Option<Value>> {
        Ok(self.opt_str(name)?.map(|s| {
            if s.is_empty() {
                Value::Null
            } else {
                Value::String(s)
            }
        }))
    }

    pub fn opt_i64(&self, name: &str) -> ApiResult<Option<i64>> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => s
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::invalid(name, format!("Invalid integer: {s}"))),
        }
    }

    pub fn opt_u64(&self, name: &str) -> ApiResult<Option<u64>> {
        match self.opt_i64(name)? {
            Some(n) if n < 0 => Err(ApiError::invalid(
                name,
                format!("Invalid non-negative integer: {n}"),
            )),
            other => Ok(other.map(|n| n as u64)),
        }
    }

    pub fn opt_bool(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.opt_str(name)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(s) => Err(ApiError::invalid(name, format!("Invalid boolean: {s}"))),
        }
    }

    pub fn opt_decimal(&self, name: &str) -> ApiResult<Option<rust_decimal::Decimal>> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => s
                .parse::<rust_decimal::Decimal>()
                .map(|d| Some(d.normalize()))
                .map_err(|_| ApiError::invalid(name, format!("Invalid decimal: {s}"))),
        }
    }

    pub fn str_list(&self, name: &str) -> ApiResult<Vec<String>> {
        match self.get(name) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ApiError::invalid(name, "Invalid array"))
                })
                .collect(),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(_) => Err(ApiError::invalid(name, "Invalid array")),
        }
    }

    pub fn array(&self, name: &str) -> ApiResult<Vec<Params>> {
        match self.get(name) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => Ok(items.iter().cloned().map(Params).collect()),
            Some(_) => Err(ApiError::invalid(name, "Invalid array")),
        }
    }

    pub fn expand(&self) -> Vec<String> {
        self.str_list("expand").unwrap_or_default()
    }

    /// Applies `metadata[...]` to an existing metadata object as Stripe does: an empty value
    /// deletes that key, and `metadata=` (empty string) clears everything.
    pub fn merge_metadata(&self, existing: &Value) -> ApiResult<Value> {
        let mut out: Map<String, Value> = existing.as_object().cloned().unwrap_or_default();
        match self.get("metadata") {
            None => {}
            Some(Value::String(s)) if s.is_empty() => out.clear(),
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v.as_str() {
                        Some("") => {
                            out.remove(k);
                        }
                        Some(s) => {
                            out.insert(k.clone(), Value::String(s.to_string()));
                        }
                        None => {
                            return Err(ApiError::invalid(
                                format!("metadata[{k}]"),
                                "Invalid metadata value",
                            ));
                        }
                    }
                }
            }
            Some(_) => return Err(ApiError::invalid("metadata", "Invalid hash")),
        }
        Ok(Value::Object(out))
    }
}
