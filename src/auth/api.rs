//! What the gateway's JSON API calls share: reading a request body, answering, and the fixed
//! refusals for a busy hashing pool or a failing store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::auth::webauthn::{Passkeys, WebAuthnError};
use crate::body::{self, IdleBody, ResponseBody};
use crate::identity::{IdentityStore, StoreError, UserId};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::sanitize::request::media_type;

/// Bodies of this API are a name and a password (at most 128 characters), a token or a code.
const BODY_LIMIT: u64 = 8 * 1024;

/// The body of a JSON call: `Content-Type: application/json` (a cross-site form cannot send it
/// without a CORS preflight) and at most [`BODY_LIMIT`] bytes.
pub async fn json_body(request: Request<Incoming>, idle: Duration) -> Result<Bytes, Refused> {
    if media_type(request.headers()).as_deref() != Some("application/json") {
        return Err(Refusal::UnsupportedMediaType.into());
    }
    Ok(body::read_limited(IdleBody::new(request.into_body(), idle), BODY_LIMIT).await?)
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refused> {
    serde_json::from_slice(bytes).map_err(|_| Refusal::MalformedApiRequest.into())
}

/// `WG-AUTH-003`: no capacity left now; one second is about a queue's worth of hashing.
pub fn busy() -> Refused {
    Refused::with_header(
        Refusal::HashingBusy,
        header::RETRY_AFTER,
        HeaderValue::from_static("1"),
    )
}

/// `WG-AUTH-008`; the cause goes to the log only.
pub fn unavailable(error: &dyn std::fmt::Display) -> Refused {
    Refused::because(Refusal::AuthUnavailable, error)
}

/// A 200 JSON answer; never cached (it may carry a token or secrets shown once).
pub fn ok(value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(Bytes::from(value.to_string())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Runs synchronous store work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<dyn IdentityStore>,
    work: impl FnOnce(&dyn IdentityStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refused> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || work(store.as_ref())).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(unavailable(&error)),
        Err(error) => Err(unavailable(&error)),
    }
}

/// A registration that did not succeed: busy and internal failures as such, every other
/// outcome (unknown ceremony, refused or malformed answer) as `WG-AUTH-013`.
pub fn passkey_refusal(error: WebAuthnError) -> Refused {
    match error {
        WebAuthnError::Busy => busy(),
        WebAuthnError::Internal(_) => unavailable(&error),
        other => {
            tracing::info!(target: "wardgate::security", reason = %other, "WebAuthn registration refused");
            Refusal::FactorNotRegistered.into()
        }
    }
}

/// Opens a WebAuthn registration for the user `id`, the authenticators they already have
/// excluded: the ceremony id and the options for `navigator.credentials.create()`.
pub async fn passkey_registration(
    store: &Arc<dyn IdentityStore>,
    passkeys: &Passkeys,
    id: UserId,
    now: u64,
) -> Result<(String, serde_json::Value), Refused> {
    let (user, existing) = blocking(store, move |store| {
        Ok((store.user(id)?, store.webauthn_credentials(id)?))
    })
    .await?;
    passkeys
        .start_registration(&user, &existing, now)
        .map_err(passkey_refusal)
}
