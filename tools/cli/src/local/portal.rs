//! The sample developer portal (`portal/` at the repository root), compiled into the binary
//! and served under `/portal/`. Its API calls go to `/portal/api/...`, the same-origin proxy in
//! [`crate::stack`] that adds the portal secret.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../../../../portal/index.html");
const SCRIPT: &str = include_str!("../../../../portal/portal.js");
const STYLE: &str = include_str!("../../../../portal/portal.css");

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/portal/") }))
        .route("/portal", get(|| async { Redirect::to("/portal/") }))
        .route(
            "/portal/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/portal/portal.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/portal/portal.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
}
