//! What the login and enrollment steps share: the fixed refusals for a busy hashing pool, a
//! failing store or a refused passkey, and the start of a passkey registration.

use http::header::{self, HeaderValue};

use crate::auth::webauthn::{Passkeys, WebAuthnError};
use crate::identity::{StoreError, UserId};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::session::SessionError;
use crate::store::Stores;

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

/// `WG-STORE-001` (503) for a store that could not be reached, which passes by itself;
/// `WG-AUTH-008` for one that answered wrongly (a corrupt record, a seal that does not open).
pub fn store_failure(error: StoreError) -> Refused {
    match error {
        StoreError::Storage(_) => Refused::because(Refusal::StateUnavailable, &error),
        other => unavailable(&other),
    }
}

/// As [`store_failure`], for the session layer.
pub fn session_failure(error: SessionError) -> Refused {
    match error {
        SessionError::Store(error) => store_failure(error),
        other => unavailable(&other),
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
    stores: &Stores,
    passkeys: &Passkeys,
    id: UserId,
    now: u64,
) -> Result<(String, serde_json::Value), Refused> {
    let user = stores.accounts.user(id).await.map_err(store_failure)?;
    let existing = stores.credentials.webauthn_credentials(id).await;
    let existing = existing.map_err(store_failure)?;
    passkeys
        .start_registration(&user, &existing, now)
        .await
        .map_err(passkey_refusal)
}
