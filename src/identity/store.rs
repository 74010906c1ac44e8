//! The records of the identity store (users, second factors, sessions) and its error.
//!
//! **Threat.** A read of the store (backup, disk, SQL injection elsewhere, a curious DBA) must not
//! yield anything that logs a user in. **Rule.** The records here carry plaintext secrets only
//! between a caller and a backend: backends keep sealed values (see [`super::seal`]) and keyed
//! hashes of bearer tokens, and `Debug` never prints a secret. The contracts of the operations
//! (atomic use-once checks, what "not found" means) are written on the traits of the state layer:
//! `store::accounts`, `store::credentials`, `store::sessions`.
//!
//! **Standard.** NIST SP 800-63B 5.1.2 and 5.1.4.2, OWASP ASVS 5 V6 (authentication) and V11.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::seal::{SealError, hex_decode, hex_encode_into};
use crate::identity::TotpParams;

/// Declares a 128-bit random id: `random`, `as_bytes`, `from_bytes`, hex text both ways (32
/// digits), `Debug` as `Name(hex)`, and serde as the hex string. `$what` names it in errors.
macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        #[serde(into = "String", try_from = "String")]
        pub struct $name([u8; 16]);

        impl $name {
            pub fn random<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
                let mut bytes = [0u8; 16];
                rng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut text = String::with_capacity(32);
                $crate::identity::seal::hex_encode_into(&self.0, &mut text);
                f.write_str(&text)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                let mut bytes = [0u8; 16];
                if $crate::identity::seal::hex_decode(text, &mut bytes) {
                    Ok(Self(bytes))
                } else {
                    Err(format!(concat!("`{}` is not a ", $what, " (32 hex digits)"), text))
                }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(text: String) -> Result<Self, String> {
                text.parse()
            }
        }
    };
}
pub(crate) use random_id;

random_id!(
    /// A user's id: 128 random bits.
    ///
    /// Random rather than sequential: ids appear in URLs, logs and audit records, and a random id
    /// reveals neither how many accounts exist nor their order, cannot be guessed from a neighbour,
    /// and needs no coordination between gateway replicas sharing one PostgreSQL store.
    UserId,
    "user id"
);

/// An account. The password hash is a PHC string (argon2id); `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: UserId,
    /// Unique, compared case-insensitively (after NFKC normalization).
    pub name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub password_hash: Option<String>,
    /// The user must enroll a second factor at the next login.
    pub mfa_required_enrollment: bool,
    /// Unix seconds.
    pub created: u64,
}

impl User {
    /// An enabled user with no roles, no password and no MFA requirement yet.
    pub fn new(id: UserId, name: impl Into<String>, now: u64) -> Self {
        Self {
            id,
            name: name.into(),
            email: None,
            roles: Vec::new(),
            disabled: false,
            password_hash: None,
            mfa_required_enrollment: false,
            created: now,
        }
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("email", &self.email)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("mfa_required_enrollment", &self.mfa_required_enrollment)
            .field("created", &self.created)
            .finish()
    }
}

/// A user's TOTP secret, opened. The seed is zeroized on drop and never printed.
pub struct Totp {
    pub seed: Zeroizing<Vec<u8>>,
    /// How the user's app makes codes (algorithm, digits, period), fixed at enrollment: a later
    /// change of `auth.totp` applies to new enrollments only. `None` for a seed stored before the
    /// parameters were kept with it (older store files): it was enrolled under the `auth.totp`
    /// of that time, which the caller takes to be today's.
    pub params: Option<TotpParams>,
    /// The last time step a code was accepted for; codes of this step or older are replays.
    pub last_used_step: u64,
}

impl fmt::Debug for Totp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Totp")
            .field("params", &self.params)
            .field("last_used_step", &self.last_used_step)
            .finish_non_exhaustive()
    }
}

/// A WebAuthn credential: the library's serialized credential (sealed at rest, opened here)
/// and the public facts an operator may list.
#[derive(Clone)]
pub struct WebAuthnCredential {
    pub credential_id: Vec<u8>,
    /// Opaque to the store: whatever the WebAuthn library needs to verify assertions.
    pub credential: Zeroizing<Vec<u8>>,
    /// Unix seconds.
    pub created: u64,
    pub last_used: Option<u64>,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
}

impl fmt::Debug for WebAuthnCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebAuthnCredential")
            .field("credential_id", &self.credential_id)
            .field("created", &self.created)
            .field("last_used", &self.last_used)
            .field("sign_count", &self.sign_count)
            .field("backup_eligible", &self.backup_eligible)
            .field("backup_state", &self.backup_state)
            .finish_non_exhaustive()
    }
}

/// What an assertion changes on a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebAuthnUse {
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
}

/// One recovery code: its hash (never the code) and whether it was spent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryCode {
    pub hash: String,
    pub used: bool,
}

/// A live session as the store keeps it, under the keyed hash of its token (the token itself
/// is never stored). Sealed at rest: it names a person, an address and a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecord {
    pub user: UserId,
    /// Unix seconds: when the login that made this session finished.
    pub created: u64,
    /// Unix seconds: the last request seen (written back at most once a minute).
    pub last_seen: u64,
    /// Unix seconds: the last proof of a second factor (login or step-up).
    pub auth_time: u64,
    pub client: String,
    pub user_agent: String,
}

/// The name a session is stored under: the keyed hash of its token. Safe to show an operator
/// or put in a log: it cannot be turned back into the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionKey(pub [u8; 32]);

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(64);
        hex_encode_into(&self.0, &mut text);
        f.write_str(&text)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({self})")
    }
}

impl FromStr for SessionKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut bytes = [0u8; 32];
        if hex_decode(text, &mut bytes) {
            Ok(Self(bytes))
        } else {
            Err(format!("`{text}` is not a session id (64 hex digits)"))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("identity store record is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(
        "{0}: the identity store is open in another process; stop the gateway first, or manage accounts through the running gateway's admin listener"
    )]
    Locked(String),
    #[error("identity store: {0}")]
    Storage(String),
}
