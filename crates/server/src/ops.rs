//! Operations: health, Prometheus metrics, the OpenAPI document, the home page, the security
//! headers every response carries, and the JSON error of requests axum's extractors refuse.

use crate::Shared;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use confiance_core::ErrorCode;
use utoipa::OpenApi;

/// The operations routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(home))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi_json))
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "nothing here; the API is described at /api/openapi.json",
    )
}

/// Strict security headers on every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
        ("cross-origin-resource-policy", "cross-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Answers the rejections of axum's extractors (a path id that does not parse, a query string,
/// form or JSON body of the wrong shape, a body over its limit, a method the route does not
/// take), which come as plain text, with the JSON error every other failure has, keeping axum's
/// words for what is wrong and the headers set on the way (CORS, `Allow`).
pub async fn json_rejections(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("text/plain"));
    if !matches!(status, 400 | 405 | 413 | 415 | 422) || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status {
        405 => ErrorCode::MethodNotAllowed,
        413 => ErrorCode::RequestTooLarge,
        _ if text.starts_with("Invalid URL") => ErrorCode::InvalidPath,
        _ if text.starts_with("Failed to deserialize query string") => ErrorCode::InvalidQuery,
        _ if text.contains("valid UTF-8") => ErrorCode::InvalidEncoding,
        422 => ErrorCode::InvalidField,
        _ if text.starts_with("Failed to deserialize form") => ErrorCode::InvalidField,
        _ => ErrorCode::InvalidJson,
    };
    let message = match (code, text.is_empty()) {
        (ErrorCode::MethodNotAllowed, _) => "this path does not take this HTTP method".to_owned(),
        (_, true) => "the request does not parse".to_owned(),
        (_, false) => text,
    };
    let mut answer = ApiError::new(code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}

/// Whether the server and its store answer.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up"), (status = 503, description = "The store does not answer", body = crate::openapi::ErrorSchema)))]
pub async fn healthz(State(app): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    app.store.ping().await?;
    Ok(Json(serde_json::json!({"status": "ok", "store": app.store.backend()})))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        app.metrics.render(),
    )
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}

/// Escapes text for HTML.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A home page with what the store holds, in counts only (no personal data).
async fn home(State(app): State<Shared>) -> Result<Html<String>, ApiError> {
    let sources = app.store.list_sources().await?;
    let summary = app.store.event_summary().await?;
    let total = app.store.count_events().await?;
    let mut rows = String::new();
    for (source_id, kind, name, count) in &summary {
        let source = sources
            .iter()
            .find(|s| s.id == *source_id)
            .map_or_else(|| source_id.to_string(), |s| s.name.to_string());
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{count}</td></tr>",
            escape(&source),
            escape(kind),
            escape(name.as_deref().unwrap_or("")),
        ));
    }
    let controller = escape(&app.catalog.controller.name);
    Ok(Html(format!(
        r#"<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>Confiance — {controller}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left}}
.n{{text-align:right;font-variant-numeric:tabular-nums}}code{{background:#f3f3f3;padding:0 .2rem}}</style></head>
<body><h1>Confiance</h1><p>Plateforme de données clients respectueuse du consentement — <strong>{controller}</strong>.</p>
<p>{total} événements dans le journal, {nsources} sources, {npurposes} finalités déclarées au catalogue.</p>
<ul><li><a href="/api/openapi.json">API (OpenAPI 3)</a></li><li><a href="/metrics">Métriques Prometheus</a></li><li><a href="/healthz">Santé</a></li></ul>
<h2>Événements par source</h2><table><thead><tr><th>Source</th><th>Type</th><th>Événement</th><th class=n>Nombre</th></tr></thead><tbody>{rows}</tbody></table>
</body></html>"#,
        nsources = sources.len(),
        npurposes = app.catalog.purposes.len(),
    )))
}
