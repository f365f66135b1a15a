//! The cookie banner: `/consent.js` with its configuration, the endpoint that records a choice
//! and sets the first-party cookie, the way from the banner to the preference centre, and the
//! demo shop page that embeds it.
//!
//! # Design
//!
//! The banner's script is a static file (`assets/consent.js`) into which the server writes the
//! catalog's categories — what each collects, why, who receives it — and the notice version.
//! The *notice hash* is the SHA-256 of the script and of that configuration (minus what
//! depends on the request), so a consent proof names exactly the code and text a person saw,
//! as the CNIL suggests.
//!
//! The choice is recorded here, not by the script: the server appends it to the ledger, then
//! sets the cookie that remembers it (Safari caps cookies written by scripts at 7 days). The
//! cookie holds the notice version, the time, the choices and the browser's anonymous id, with
//! a keyed signature of that id, so that it cannot be edited to reach another browser's
//! preferences.

use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confiance_core::ErrorCode;
use confiance_core::catalog::LegalBasis;
use confiance_core::consent::link::keyed_hash;
use confiance_core::consent::{Decision, IdKind, Method, Notice, Status, Subject};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

const SCRIPT: &str = include_str!("../assets/consent.js");
const SHOP_HTML: &str = include_str!("../assets/shop.html");
const SHOP_JS: &str = include_str!("../assets/shop.js");
const PREFERENCES_CSS: &str = include_str!("../assets/preferences.css");
/// The cookie that remembers a browser's choice.
pub const COOKIE: &str = "confiance_consent";

/// The banner routes.
pub fn routes() -> Router<Shared> {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_methods([axum::http::Method::POST, axum::http::Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request());
    Router::new()
        .route("/consent/choice", post(choice))
        .route("/consent/link", post(link))
        .layer(cors)
        .route("/consent.js", get(script))
        .route("/demo/shop", get(shop))
        .route("/demo/shop.js", get(shop_js))
        .route("/preferences.css", get(preferences_css))
}

/// The client's IP address: the first of `X-Forwarded-For` (behind a proxy), `X-Real-IP`, or
/// the peer address. Only ever stored as a keyed hash.
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let ip = header("x-forwarded-for").or_else(|| header("x-real-ip")).or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        });
        Ok(ClientIp(ip))
    }
}

impl AppState {
    /// The banner's configuration, without what depends on the request.
    pub(crate) fn banner_config(&self) -> Value {
        let catalog = &self.catalog;
        let categories: Vec<Value> = catalog
            .purposes
            .values()
            .filter(|p| p.banner)
            .map(|p| {
                let collects: Vec<&str> = catalog
                    .events
                    .values()
                    .filter(|e| e.purposes.contains(&p.id))
                    .map(|e| e.name.as_str())
                    .chain(
                        catalog
                            .page_purposes
                            .contains(&p.id)
                            .then_some("pages vues / page views"),
                    )
                    .collect();
                json!({
                    "id": p.id,
                    "name": {"fr": p.name, "en": p.name_en},
                    "description": {"fr": p.description, "en": p.description_en},
                    "recipients": p.recipients,
                    "collects": {
                        "fr": p.collects.clone().unwrap_or_else(|| collects.join(", ")),
                        "en": p.collects_en.clone().unwrap_or_else(|| collects.join(", ")),
                    },
                })
            })
            .collect();
        let events: serde_json::Map<String, Value> = catalog
            .events
            .values()
            .map(|e| (e.name.clone(), json!(e.purposes)))
            .collect();
        let consent_purposes: Vec<&str> = catalog
            .purposes
            .values()
            .filter(|p| p.legal_basis == LegalBasis::Consent)
            .map(|p| p.id.as_str())
            .collect();
        json!({
            "notice": {"version": catalog.consent.notice_version},
            "validityDays": self.validity_seconds() / 86_400,
            "cookie": COOKIE,
            "categories": categories,
            "events": events,
            "consentPurposes": consent_purposes,
            "pagePurposes": catalog.page_purposes,
            "preferencesPath": "/consent/link",
        })
    }

    /// The SHA-256 of the banner's script and configuration: the notice a proof names.
    pub fn notice_hash(&self) -> &str {
        self.notice_hash.get_or_init(|| {
            let mut h = Sha256::new();
            h.update(SCRIPT.as_bytes());
            h.update(self.banner_config().to_string().as_bytes());
            hex::encode(h.finalize())
        })
    }

    /// How long a choice is remembered, in seconds (calendar months from now).
    fn validity_seconds(&self) -> i64 {
        let now = self.clock.now();
        now.to_zoned(jiff::tz::TimeZone::UTC)
            .checked_add(self.catalog.consent.validity.span())
            .map_or(15_552_000, |later| later.timestamp().as_second() - now.as_second())
    }

    fn cookie_signature(&self, secret: &[u8], anonymous_id: &str) -> String {
        keyed_hash(secret, "consent cookie", anonymous_id)[..32].to_owned()
    }
}

/// The banner script with its configuration.
pub async fn script(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let mut config = app.banner_config();
    config["notice"]["hash"] = json!(app.notice_hash());
    config["base"] = json!(app.base_url(&headers));
    config["writeKey"] = Value::Null;
    let body = SCRIPT.replacen("__CONFIANCE_CONFIG__", &config.to_string(), 1);
    (
        [
            (header::CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A choice made in the banner.
#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(rename = "anonymousId")]
    anonymous_id: String,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    choices: serde_json::Map<String, Value>,
    notice: Option<ChoiceNotice>,
    language: Option<String>,
    touchpoint: Option<String>,
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChoiceNotice {
    version: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidField, message)
}

/// Records a banner choice as proof, then sets the cookie that remembers it.
async fn choice(
    State(app): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let choice: Choice = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the choice is malformed: {e}")))?;
    let version = &app.catalog.consent.notice_version;
    if choice.notice.as_ref().is_none_or(|n| &n.version != version) {
        return Err(ApiError::new(
            ErrorCode::StaleNotice,
            format!("the banner shown is not the current notice (version {version}); reload it"),
        ));
    }
    let anonymous = Subject::parse(IdKind::AnonymousId, &choice.anonymous_id)?;
    if anonymous.value().len() > 128 {
        return Err(invalid("anonymousId is longer than 128 characters"));
    }
    let mut subjects = vec![anonymous.clone()];
    if let Some(user) = choice.user_id.as_deref().filter(|u| !u.is_empty()) {
        subjects.push(Subject::parse(IdKind::UserId, user)?);
    }
    let banner: Vec<&str> = app
        .catalog
        .purposes
        .values()
        .filter(|p| p.banner)
        .map(|p| p.id.as_str())
        .collect();
    if let Some(unknown) = choice.choices.keys().find(|k| !banner.contains(&k.as_str())) {
        return Err(invalid(format!("`{unknown}` is not a category of the banner")));
    }
    if let Some(t) = choice
        .touchpoint
        .as_deref()
        .filter(|t| !app.catalog.touchpoints.contains_key(*t))
    {
        return Err(invalid(format!("unknown touchpoint `{t}`")));
    }
    let source_id = match choice.write_key.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => Some(app.authenticate_source(&HeaderMap::new(), Some(key)).await?.id),
        None => None,
    };
    let secret = app.secret().await?;
    let now = app.clock.now();
    let view = app.store.consent_view(&subjects).await?;
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let mut decisions = Vec::new();
    let mut cookie_choices = serde_json::Map::new();
    for purpose in &banner {
        // A category left out of the choice is refused: silence is no consent.
        let granted = choice.choices.get(*purpose).and_then(Value::as_bool).unwrap_or(false);
        cookie_choices.insert((*purpose).to_owned(), json!(u8::from(granted)));
        for subject in &subjects {
            let was_granted = view.get(subject, purpose).is_some_and(|s| s.status == Status::Granted);
            let status = match (granted, was_granted) {
                (true, _) => Status::Granted,
                (false, true) => Status::Withdrawn,
                (false, false) => Status::Denied,
            };
            decisions.push(Decision {
                subject: subject.clone(),
                purpose: (*purpose).to_owned(),
                status,
                method: Method::Banner,
                recorded_at: now,
                notice: Some(Notice {
                    version: version.clone(),
                    hash: app.notice_hash().to_owned(),
                }),
                source_id,
                touchpoint: choice
                    .touchpoint
                    .clone()
                    .or_else(|| Some("site_visit".into()))
                    .filter(|t| app.catalog.touchpoints.contains_key(t)),
                ip_hash: ip.as_deref().map(|ip| app.hash_ip(secret, ip)),
                ua_hash: ua.map(|ua| app.hash_ua(secret, ua)),
                proof: json!({"language": choice.language, "choices": choice.choices}),
            });
        }
    }
    let recorded = decisions.len();
    app.record_consents(decisions).await?;
    let (consent, cookie) = app.consent_cookie(secret, &headers, anonymous.value(), cookie_choices);
    let mut response = Json(json!({"recorded": recorded, "consent": consent})).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

impl AppState {
    /// The cookie that remembers a browser's choices (`purpose → 0|1`), and its content.
    pub(crate) fn consent_cookie(
        &self,
        secret: &[u8],
        headers: &HeaderMap,
        anonymous_id: &str,
        choices: serde_json::Map<String, Value>,
    ) -> (Value, HeaderValue) {
        let consent = json!({
            "v": self.catalog.consent.notice_version,
            "t": self.clock.now().as_second(),
            "c": choices,
            "a": anonymous_id,
            "s": self.cookie_signature(secret, anonymous_id),
        });
        let secure = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
        let cookie = format!(
            "{COOKIE}={}; Max-Age={}; Path=/; SameSite=Lax{}",
            URL_SAFE_NO_PAD.encode(consent.to_string()),
            self.validity_seconds(),
            if secure { "; Secure" } else { "" }
        );
        // Base64url and digits only: always a valid header value.
        let value = HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""));
        (consent, value)
    }
}

/// The anonymous id of this browser, from its consent cookie, if the cookie is genuine.
pub(crate) fn cookie_subject(app: &AppState, secret: &[u8], headers: &HeaderMap) -> Option<Subject> {
    let raw = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())?;
    let decoded: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    let anonymous_id = decoded.get("a")?.as_str()?;
    let signature = decoded.get("s")?.as_str()?;
    let expected = app.cookie_signature(secret, anonymous_id);
    let genuine: bool = subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.as_bytes()).into();
    genuine
        .then(|| Subject::parse(IdKind::AnonymousId, anonymous_id).ok())
        .flatten()
}

/// A preference-centre link for this browser, from its consent cookie.
async fn link(State(app): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let secret = app.secret().await?;
    let subject = cookie_subject(&app, secret, &headers)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no choice is recorded for this browser yet"))?;
    let (url, expires) = app.preference_url(&headers, &subject).await?;
    Ok(Json(json!({"url": url, "expires_at": expires.to_string()})))
}

/// The demo shop page, when a write key is configured for it.
async fn shop(State(app): State<Shared>) -> Result<Html<String>, ApiError> {
    let key = app
        .options
        .shop_write_key
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the demo shop is served by `confiance demo`"))?;
    Ok(Html(SHOP_HTML.replace("__WRITE_KEY__", key)))
}

async fn shop_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/javascript; charset=utf-8")],
        SHOP_JS,
    )
}

async fn preferences_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], PREFERENCES_CSS)
}
