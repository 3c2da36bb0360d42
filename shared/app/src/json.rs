//! Request bodies: JSON parsed into typed values, with the failing field's path in the error.

use crate::error::ApiError;
use serde::de::DeserializeOwned;

/// Parses a JSON body. A syntax error, a wrong field or a key repeated within one object
/// becomes a 400 that names the field (`records[3].timestamp`), via serde_path_to_error.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("body", "a JSON body is required"));
    }
    // serde_json keeps the last of a repeated key: refuse the body instead of guessing.
    if let Some(path) = tollgate_domain::json::first_repeated_key(body) {
        return Err(ApiError::bad_request(path, "repeated key in a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path.is_empty() {
            "body".to_string()
        } else {
            path
        };
        ApiError::bad_request(field, strip_position(&inner.to_string()))
    })
}

/// serde_json appends " at line 1 column 9"; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Batch {
        records: Vec<Rec>,
    }
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Rec {
        value: u64,
    }

    #[test]
    fn names_the_field() {
        let err = parse_body::<Batch>(br#"{"records":[{"value":1},{"value":-2}]}"#).unwrap_err();
        assert_eq!(err.field(), Some("records[1].value"));
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        let err = parse_body::<Batch>(b"not json").unwrap_err();
        assert_eq!(err.field(), Some("body"));
        let err = parse_body::<Batch>(b"").unwrap_err();
        assert_eq!(err.field(), Some("body"));
    }

    #[test]
    fn a_repeated_key_is_refused_naming_it() {
        let err = parse_body::<Batch>(br#"{"records":[{"value":1,"value":2}]}"#).unwrap_err();
        assert_eq!(err.field(), Some("records[0].value"));
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }
}
