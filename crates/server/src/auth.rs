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

    async fn role_of(&self, token: &str) -> Result<Option<Role>, ApiError> {
        let digest = KeyDigest::of(token);
        if let Some(role) = self.tokens.read().ok().and_then(|m| m.get(&digest).copied()) {
            return Ok(Some(role));
        }
        let role = self.store.token_role(&digest).await?;
        if let (Some(role), Ok(mut cache)) = (role, self.tokens.write()) {
            cache.insert(digest, role);
        }
        Ok(role)
    }
}

/// A request authenticated with an admin token.
pub struct Admin;

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingToken,
                "this route needs `Authorization: Bearer <token>`",
            )
        })?;
        match app.role_of(token).await? {
            Some(Role::Admin) => Ok(Admin),
            Some(_) => Err(ApiError::new(ErrorCode::Forbidden, "this route needs an admin token")),
            None => Err(ApiError::new(ErrorCode::InvalidToken, "the bearer token is unknown")),
        }
    }
}

/// A request authenticated with a staff token that may manage consent and privacy: admin or
/// DPO.
pub struct Staff(pub Role);

impl FromRequestParts<Shared> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingToken,
                "this route needs `Authorization: Bearer <token>`",
            )
        })?;
        match app.role_of(token).await? {
            Some(role @ (Role::Admin | Role::Dpo)) => Ok(Staff(role)),
            Some(_) => Err(ApiError::new(
                ErrorCode::Forbidden,
                "this route needs an admin or DPO token",
            )),
            None => Err(ApiError::new(ErrorCode::InvalidToken, "the bearer token is unknown")),
        }
    }
}
