//! Who is calling: write keys for sources, bearer tokens for the admin API.
//!
//! Write keys and tokens are looked up by their SHA-256 digest, never stored in clear, and
//! cached in memory after the first lookup so the hot path of the tracking API does not query
//! the store.

use crate::error::ApiError;
use crate::{AppState, Shared};
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use confiance_core::ErrorCode;
use confiance_core::source::{KeyDigest, Source, WriteKey};
use confiance_store::Role;

/// The write key of a `Basic` authorization header: the user name, with an empty password. The
/// colon is optional, as some clients leave it out.
pub fn basic_write_key(headers: &HeaderMap) -> Option<WriteKey> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    WriteKey::from_presented(text.split(':').next().unwrap_or_default())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl AppState {
    /// The source a request writes as: the key of a `Basic` header, else `writeKey` from the
    /// body (all that analytics-python ≥ 2.3 sends; a `Bearer` header then carries no key).
    pub async fn authenticate_source(&self, headers: &HeaderMap, body_key: Option<&str>) -> Result<Source, ApiError> {
        let key = basic_write_key(headers)
            .or_else(|| body_key.and_then(WriteKey::from_presented))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MissingWriteKey,
                    "no write key: send `Authorization: Basic base64(writeKey:)` or `writeKey` in the body",
                )
            })?;
        let digest = key.digest();
        if let Some(source) = self.sources.read().ok().and_then(|m| m.get(&digest).cloned()) {
            return Ok(source);
        }
        let source = self
            .store
            .source_by_key(&digest)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidWriteKey, "the write key matches no source"))?;
        if let Ok(mut cache) = self.sources.write() {
            cache.insert(digest, source.clone());
        }
        Ok(source)
    }

    async fn caller(&self, token: &str) -> Result<Option<Caller>, ApiError> {
        let digest = KeyDigest::of(token);
        if let Some(caller) = self.tokens.read().ok().and_then(|m| m.get(&digest).cloned()) {
            return Ok(Some(caller));
        }
        let caller = self
            .store
            .token(&digest)
            .await?
            .map(|(role, name)| Caller { role, name });
        if let (Some(caller), Ok(mut cache)) = (&caller, self.tokens.write()) {
            cache.insert(digest, caller.clone());
        }
        Ok(caller)
    }
}

/// Who called, from their bearer token.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's role.
    pub role: Role,
    /// The token's name.
    pub name: String,
}

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }
}

async fn authenticate(parts: &Parts, app: &Shared, allowed: &[Role], needs: &str) -> Result<Caller, ApiError> {
    let token = bearer(&parts.headers).ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingToken,
            "this route needs `Authorization: Bearer <token>`",
        )
    })?;
    match app.caller(token).await? {
        Some(c) if allowed.contains(&c.role) => Ok(c),
        Some(_) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this route needs {needs} token"),
        )),
        None => Err(ApiError::new(ErrorCode::InvalidToken, "the bearer token is unknown")),
    }
}

/// A request authenticated with an admin token.
pub struct Admin(pub Caller);

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        authenticate(parts, app, &[Role::Admin], "an admin").await.map(Admin)
    }
}

/// A request authenticated with a token that may manage segments and campaigns: admin or
/// marketer.
pub struct Marketing(pub Caller);

impl FromRequestParts<Shared> for Marketing {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        authenticate(parts, app, &[Role::Admin, Role::Marketer], "an admin or marketer")
            .await
            .map(Marketing)
    }
}

/// A request authenticated with any token: for figures without personal data (counts).
pub struct Viewer(pub Caller);

impl FromRequestParts<Shared> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        authenticate(
            parts,
            app,
            &[Role::Admin, Role::Dpo, Role::Marketer, Role::ReadOnly],
            "any",
        )
        .await
        .map(Viewer)
    }
}

/// A request authenticated with a staff token that may manage consent and privacy: admin or
/// DPO.
pub struct Staff(pub Caller);

impl FromRequestParts<Shared> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        authenticate(parts, app, &[Role::Admin, Role::Dpo], "an admin or DPO")
            .await
            .map(Staff)
    }
}
