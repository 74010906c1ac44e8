//! What the login and enrollment steps share: the fixed refusals for a busy hashing pool, a
//! failing store or a refused passkey, and store work kept off the runtime's threads.

use std::sync::Arc;

use http::header::{self, HeaderValue};

use crate::auth::webauthn::{Passkeys, WebAuthnError};
use crate::identity::{IdentityStore, StoreError, UserId};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::store;

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

/// Runs synchronous store work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<dyn IdentityStore>,
    work: impl FnOnce(&dyn IdentityStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refused> {
    store::blocking(store.clone(), work)
        .await
        .map_err(|error| unavailable(&error))
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
