//! HTTP request → the API Gateway HTTP API (payload 2.0) event Lambda would receive → the
//! `lambda_http::Request` the function's handler gets, through lambda_http's own conversion.
//!
//! Going through the event (rather than building a `lambda_http::Request` by hand) gives the
//! handlers exactly what they get in AWS: path parameters, query string parameters, the
//! `ApiGatewayV2` request context (route key, stage, request id, source IP), and a body that
//! arrives base64-encoded and is decoded by lambda_http, as it is for a binary payload.

use base64::Engine;
use http::request::Parts;
use lambda_http::Body;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

use crate::routes::Route;

/// API Gateway's maximum request payload (10 MB).
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// The API Gateway v2 event for one request.
pub fn event(
    route: &Route,
    path_parameters: &BTreeMap<String, String>,
    parts: &Parts,
    body: &[u8],
    source_ip: &str,
) -> Value {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // API Gateway joins repeated headers with commas.
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let query = parts.uri.query().unwrap_or("");
    let mut query_parameters = Map::new();
    for (k, v) in form_pairs(query) {
        // API Gateway joins repeated query parameters with commas too.
        match query_parameters.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                query_parameters.insert(k, Value::String(v));
            }
        }
    }
    let now = chrono::Utc::now();
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let user_agent = parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let request_id = hex::encode(rand::random::<[u8; 8]>());
    let mut ev = json!({
        "version": "2.0",
        "routeKey": route.key(),
        "rawPath": parts.uri.path(),
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": "local",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": route.key(),
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": !body.is_empty(),
    });
    if !path_parameters.is_empty() {
        ev["pathParameters"] = json!(path_parameters);
    }
    if !query_parameters.is_empty() {
        ev["queryStringParameters"] = Value::Object(query_parameters);
    }
    if !body.is_empty() {
        ev["body"] = Value::String(base64::engine::general_purpose::STANDARD.encode(body));
    }
    ev
}

/// The request the function's handler gets for `event`.
pub fn lambda_request(event: &Value) -> Result<lambda_http::Request, String> {
    lambda_http::request::from_str(&event.to_string())
        .map_err(|e| format!("not an API Gateway v2 event: {e}"))
}

/// The handler's answer as a plain HTTP response.
pub fn http_response(resp: lambda_http::Response<Body>) -> http::Response<Vec<u8>> {
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    http::Response::from_parts(parts, bytes)
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding of one query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Function;
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;

    #[test]
    fn the_handler_sees_what_api_gateway_would_give_it() {
        let route = Route {
            method: http::Method::GET,
            path: "/consumers/{consumer_id}/has-paid".into(),
            function: Function::Checkout,
        };
        let req = http::Request::builder()
            .method("GET")
            .uri("/consumers/acme/has-paid?product=pro%2Dplan&x=a+b")
            .header("host", "127.0.0.1:8080")
            .header("authorization", "Bearer s")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let params = BTreeMap::from([("consumer_id".to_string(), "acme".to_string())]);
        let ev = event(&route, &params, &parts, b"{\"a\":1}", "127.0.0.1");
        let req = lambda_request(&ev).unwrap();
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(req.uri().path(), "/consumers/acme/has-paid");
        assert_eq!(req.uri().query(), Some("product=pro%2Dplan&x=a+b"));
        assert_eq!(req.path_parameters().first("consumer_id"), Some("acme"));
        assert_eq!(
            req.query_string_parameters().first("product"),
            Some("pro-plan")
        );
        assert_eq!(req.headers()["authorization"], "Bearer s");
        assert_eq!(req.body().as_ref(), b"{\"a\":1}");
        match req.request_context() {
            RequestContext::ApiGatewayV2(ctx) => {
                assert_eq!(
                    ctx.route_key.as_deref(),
                    Some("GET /consumers/{consumer_id}/has-paid")
                );
                assert_eq!(ctx.stage.as_deref(), Some("$default"));
            }
            #[allow(unreachable_patterns)]
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn query_components_are_decoded() {
        assert_eq!(decode("a%20b+c%2"), "a b c%2");
        assert_eq!(
            form_pairs("date=2026-11-03&mode"),
            vec![
                ("date".into(), "2026-11-03".into()),
                ("mode".into(), String::new())
            ]
        );
    }
}
