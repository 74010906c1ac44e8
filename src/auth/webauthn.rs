//! WebAuthn second factor: passkeys and security keys.
//!
//! **The threat.** A TOTP code can be phished: a look-alike site asks for it and relays it to the
//! gateway within its 30 s step. A stolen authenticator can be cloned, a response recorded and
//! replayed, a ceremony started for one account finished for another.
//!
//! **The rule.** The browser's authenticator signs a fresh server challenge together with the
//! origin it sees, with a key bound to the relying party id: a phishing site on another origin
//! gets a signature the gateway refuses. Every ceremony is held in the ephemeral store
//! (`store::ephemeral`, so a ceremony started on one replica may finish on another) for at most
//! [`CEREMONY_TTL_SECS`]: it is bound to the user it was started for, answered once (success or
//! failure ends it) and its state never leaves the server, so a recorded response cannot be
//! replayed. User verification (PIN or biometric on the authenticator) is **required** at
//! registration and at every login. At login the signature counter must grow when either side
//! reports one (a counter that does not grow betrays a cloned authenticator), and the backup
//! eligibility of a credential must not change. The open ceremonies are bounded: a user holds
//! at most [`MAX_OPEN_PER_USER`](crate::store::ephemeral::MAX_OPEN_PER_USER), the newest
//! replacing the oldest, so that one account cannot fill the store and lock every other passkey
//! user out; all users together at most [`MAX_CEREMONIES`], and a full store refuses new ones as
//! busy instead of growing. Ending a user's sessions ends their ceremonies
//! (`Sessions::end_pending`).
//!
//! ```text
//!  registration                                  authentication
//!  ────────────                                  ──────────────
//!  start_registration(user, existing, now)       start_authentication(user, credentials, now)
//!    │ ceremony id + creationOptions JSON          │ ceremony id + requestOptions JSON
//!    ▼                                             ▼
//!  browser: navigator.credentials.create()       browser: navigator.credentials.get()
//!    │ RegisterPublicKeyCredential JSON            │ PublicKeyCredential JSON
//!    ▼                                             ▼
//!  finish_registration(id, user, json, now)      finish_authentication(id, user, json, creds, now)
//!    │ ceremony removed (ok or not)                │ ceremony removed (ok or not)
//!    ▼                                             ▼
//!  WebAuthnCredential ─▶ Credentials::           (credential id, WebAuthnUse) ─▶ Credentials::
//!                        add_webauthn                                   record_webauthn_use
//! ```
//!
//! **The standard.** W3C Web Authentication Level 2 and 3 (sections 7.1 and 7.2: registration
//! and assertion verification, 6.1.1: signature counter), NIST SP 800-63B-4 (phishing-resistant,
//! verifier-impersonation-resistant multi-factor cryptographic authenticators), OWASP ASVS 5 V6.
//!
//! The cryptography is webauthn-rs (pure Rust, RustCrypto). Time is a parameter (`now`, unix
//! seconds); this module never reads the clock. Stored credential blobs and ceremony state never
//! appear in errors or `Debug` output.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::identity::{User, UserId, WebAuthnCredential, WebAuthnUse};
use crate::store::ephemeral::{Ceremonies, Ephemeral, Space};

/// How long a started ceremony may be finished: the user must find, touch and unlock the
/// authenticator. The options sent to the browser carry the same timeout.
pub const CEREMONY_TTL_SECS: u64 = 5 * 60;

/// Open ceremonies at most, all users together: a flood of starts costs bounded memory.
pub const MAX_CEREMONIES: usize = 10_000;
const CEREMONIES: Space = Space {
    name: "webauthn",
    ttl: CEREMONY_TTL_SECS,
    capacity: MAX_CEREMONIES,
};

/// Why a ceremony did not succeed. Each variant maps to one fixed refusal; the text is for logs
/// and never carries key material, challenges or stored blobs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebAuthnError {
    /// Unknown, expired, already used, of the other kind, or started for another user: alike
    /// on purpose, so a probe learns nothing about other ceremonies.
    #[error("unknown or expired WebAuthn ceremony")]
    UnknownCeremony,
    /// The response parsed but did not verify. The reason is a fixed phrase for the audit log.
    #[error("WebAuthn response rejected: {0}")]
    Rejected(&'static str),
    /// The response is not the JSON the browser sends.
    #[error("WebAuthn response is not well-formed JSON of the expected shape")]
    Malformed,
    /// The user has no WebAuthn credential to authenticate with.
    #[error("the user has no WebAuthn credentials")]
    NoCredentials,
    /// Too many ceremonies are open; try again shortly.
    #[error("too many WebAuthn ceremonies are open")]
    Busy,
    /// A library or serialization failure on our side (a corrupt stored credential, a bug).
    #[error("WebAuthn internal error: {0}")]
    Internal(String),
}

/// A setting the operator must fix: `key` names it within the WebAuthn config section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct WebAuthnConfigError {
    pub key: &'static str,
    pub message: String,
}

fn config_error(key: &'static str, message: impl Into<String>) -> WebAuthnConfigError {
    WebAuthnConfigError {
        key,
        message: message.into(),
    }
}

fn default_rp_name() -> String {
    "Wardgate".to_owned()
}

/// The relying party, as the operator writes it in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebAuthnConfig {
    /// The domain credentials are bound to, e.g. `gateway.example.org` or `localhost`. Changing
    /// it later orphans every registered credential.
    pub rp_id: String,
    /// The exact origin users open, e.g. `https://gateway.example.org:8443`.
    pub origin: String,
    /// Shown by the browser and the authenticator during registration.
    #[serde(default = "default_rp_name")]
    pub rp_name: String,
}

impl WebAuthnConfig {
    /// Checks the settings and returns the parsed origin. The messages tell the operator what
    /// to write instead.
    pub fn validate(&self) -> Result<Url, WebAuthnConfigError> {
        let rp_id = self.rp_id.as_str();
        if rp_id.is_empty() {
            return Err(config_error(
                "rp_id",
                "must be the gateway's domain name, e.g. `gateway.example.org` or `localhost`",
            ));
        }
        if rp_id.contains(['/', ':', '@', ' ']) || rp_id.starts_with('.') || rp_id.ends_with('.') {
            return Err(config_error(
                "rp_id",
                format!(
                    "`{rp_id}` is not a domain name: write the host only (no scheme, port or path), e.g. `gateway.example.org`"
                ),
            ));
        }
        if rp_id != rp_id.to_ascii_lowercase() {
            return Err(config_error(
                "rp_id",
                format!("`{rp_id}` must be written in lower case"),
            ));
        }
        if rp_id.parse::<std::net::IpAddr>().is_ok() {
            return Err(config_error(
                "rp_id",
                format!(
                    "`{rp_id}` is an IP address; WebAuthn needs a domain name (browsers refuse IP addresses as relying party id)"
                ),
            ));
        }
        if self.rp_name.trim().is_empty() {
            return Err(config_error(
                "rp_name",
                "must not be empty (it is shown to users)",
            ));
        }

        let origin = Url::parse(&self.origin).map_err(|_| {
            config_error(
                "origin",
                format!(
                    "`{}` is not a URL; write the origin users open, e.g. `https://{rp_id}:8443`",
                    self.origin
                ),
            )
        })?;
        let Some(host) = origin.host_str() else {
            return Err(config_error(
                "origin",
                format!("`{}` has no host", self.origin),
            ));
        };
        let is_localhost = host == "localhost";
        match origin.scheme() {
            "https" => {}
            "http" if is_localhost => {}
            _ => {
                return Err(config_error(
                    "origin",
                    format!(
                        "`{}` must use https (browsers allow WebAuthn over plain http only on localhost)",
                        self.origin
                    ),
                ));
            }
        }
        if !origin.username().is_empty()
            || origin.password().is_some()
            || origin.path() != "/"
            || origin.query().is_some()
            || origin.fragment().is_some()
        {
            return Err(config_error(
                "origin",
                format!(
                    "`{}` must be an origin only: scheme, host and optional port, no path, query or user",
                    self.origin
                ),
            ));
        }
        if origin.domain().is_none() {
            return Err(config_error(
                "origin",
                format!(
                    "`{}` uses an IP address; WebAuthn needs a domain name",
                    self.origin
                ),
            ));
        }
        if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
            return Err(config_error(
                "origin",
                format!(
                    "the host `{host}` is neither rp_id `{rp_id}` nor a subdomain of it; browsers would refuse every passkey"
                ),
            ));
        }
        Ok(origin)
    }
}

/// The relying party the config describes, checked: compiled with the settings, before the
/// stores exist.
pub struct RelyingParty {
    webauthn: Webauthn,
}

impl fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelyingParty").finish_non_exhaustive()
    }
}

impl RelyingParty {
    /// Validates the config and builds the relying party.
    pub fn new(config: &WebAuthnConfig) -> Result<Self, WebAuthnConfigError> {
        let origin = config.validate()?;
        let webauthn = WebauthnBuilder::new(&config.rp_id, &origin)
            .map(|builder| {
                builder
                    .rp_name(&config.rp_name)
                    .timeout(Duration::from_secs(CEREMONY_TTL_SECS))
            })
            .and_then(|builder| builder.build())
            .map_err(|error| config_error("origin", format!("refused by WebAuthn: {error}")))?;
        Ok(Self { webauthn })
    }
}

/// The WebAuthn relying party and its open ceremonies: built once at start, shared by
/// reference across requests.
pub struct Passkeys {
    webauthn: Webauthn,
    ceremonies: Ceremonies<State>,
}

impl fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passkeys").finish_non_exhaustive()
    }
}

impl Passkeys {
    /// The relying party, its ceremonies kept in `ephemeral`.
    pub fn new(party: RelyingParty, ephemeral: Arc<dyn Ephemeral>) -> Self {
        Self::in_space(party, ephemeral, CEREMONIES)
    }

    fn in_space(party: RelyingParty, ephemeral: Arc<dyn Ephemeral>, space: Space) -> Self {
        Self {
            webauthn: party.webauthn,
            ceremonies: Ceremonies::new(ephemeral, space),
        }
    }

    /// Starts enrolling a new authenticator for `user`. The credentials the user already has
    /// are excluded, so the same authenticator is not registered twice. Returns the ceremony id
    /// and the options for `navigator.credentials.create()` (a `CreationChallengeResponse`:
    /// `{"publicKey": {...}}`, binary fields base64url).
    pub async fn start_registration(
        &self,
        user: &User,
        existing: &[WebAuthnCredential],
        now: u64,
    ) -> Result<(String, serde_json::Value), WebAuthnError> {
        let exclude: Vec<CredentialID> = existing
            .iter()
            .map(|credential| credential.credential_id.clone())
            .collect();
        // The passkey flow requires user verification (UV "required") at registration and at
        // every assertion, and asks for credProtect "userVerificationRequired".
        let (options, state) = self
            .webauthn
            .start_passkey_registration(
                Uuid::from_bytes(*user.id.as_bytes()),
                &user.name,
                &user.name,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(|error| WebAuthnError::Internal(error.to_string()))?;
        let json = serde_json::to_value(&options)
            .map_err(|error| WebAuthnError::Internal(error.to_string()))?;
        let id = self
            .open(user.id, State::Registration(Box::new(state)), now)
            .await?;
        Ok((id, json))
    }

    /// Verifies the browser's answer to a registration ceremony and returns the credential to
    /// store with [`crate::store::credentials::Credentials::add_webauthn`]. The ceremony ends here,
    /// whatever the outcome.
    pub async fn finish_registration(
        &self,
        ceremony: &str,
        user: UserId,
        response: &[u8],
        now: u64,
    ) -> Result<WebAuthnCredential, WebAuthnError> {
        let State::Registration(state) = self.take(ceremony, user, now).await? else {
            return Err(WebAuthnError::UnknownCeremony);
        };
        let response: RegisterPublicKeyCredential =
            serde_json::from_slice(response).map_err(|_| WebAuthnError::Malformed)?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&response, &state)
            .map_err(|error| WebAuthnError::Rejected(rejection(&error)))?;
        let blob = serde_json::to_vec(&passkey)
            .map_err(|error| WebAuthnError::Internal(error.to_string()))?;
        let facts = PasskeyFacts::read(&blob)?;
        Ok(WebAuthnCredential {
            credential_id: passkey.cred_id().clone(),
            credential: blob.into(),
            created: now,
            last_used: None,
            sign_count: facts.cred.counter,
            backup_eligible: facts.cred.backup_eligible,
            backup_state: facts.cred.backup_state,
        })
    }

    /// Starts a login with one of `credentials` (the user's, from the store). Returns the
    /// ceremony id and the options for `navigator.credentials.get()` (a
    /// `RequestChallengeResponse`: `{"publicKey": {...}}`, binary fields base64url).
    pub async fn start_authentication(
        &self,
        user: UserId,
        credentials: &[WebAuthnCredential],
        now: u64,
    ) -> Result<(String, serde_json::Value), WebAuthnError> {
        if credentials.is_empty() {
            return Err(WebAuthnError::NoCredentials);
        }
        let passkeys = credentials
            .iter()
            .map(|credential| {
                serde_json::from_slice::<Passkey>(&credential.credential).map_err(|_| {
                    WebAuthnError::Internal("a stored WebAuthn credential is unreadable".into())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|error| WebAuthnError::Internal(error.to_string()))?;
        let json = serde_json::to_value(&options)
            .map_err(|error| WebAuthnError::Internal(error.to_string()))?;
        let id = self
            .open(user, State::Authentication(Box::new(state)), now)
            .await?;
        Ok((id, json))
    }

    /// Verifies the browser's answer to a login ceremony. `credentials` are the user's as the
    /// store holds them now: their counter and backup flags are what the answer is checked
    /// against. Returns the id of the credential used and what to record with
    /// [`crate::store::credentials::Credentials::record_webauthn_use`]. The ceremony ends here,
    /// whatever the outcome.
    pub async fn finish_authentication(
        &self,
        ceremony: &str,
        user: UserId,
        response: &[u8],
        credentials: &[WebAuthnCredential],
        now: u64,
    ) -> Result<(Vec<u8>, WebAuthnUse), WebAuthnError> {
        let State::Authentication(state) = self.take(ceremony, user, now).await? else {
            return Err(WebAuthnError::UnknownCeremony);
        };
        let response: PublicKeyCredential =
            serde_json::from_slice(response).map_err(|_| WebAuthnError::Malformed)?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&response, &state)
            .map_err(|error| WebAuthnError::Rejected(rejection(&error)))?;
        // The library checks against the credential as it was at registration; the store holds
        // the current counter and flags, so the decisive checks are made here.
        let stored = credentials
            .iter()
            .find(|credential| credential.credential_id.as_slice() == result.cred_id().as_slice())
            .ok_or(WebAuthnError::Rejected(
                "the credential is no longer registered",
            ))?;
        if !result.user_verified() {
            return Err(WebAuthnError::Rejected("user verification missing"));
        }
        let counter = result.counter();
        // W3C WebAuthn 6.1.1: once either side has a counter, it must grow with every use. A
        // first counter after none (stored 0) is growth; none after one (0) is not.
        if stored.sign_count > 0 && counter <= stored.sign_count {
            return Err(WebAuthnError::Rejected(
                "the signature counter did not grow: possibly a cloned authenticator",
            ));
        }
        // W3C WebAuthn Level 3 7.2 step 18: backup eligibility is fixed at creation.
        if result.backup_eligible() != stored.backup_eligible {
            return Err(WebAuthnError::Rejected("the backup eligibility changed"));
        }
        Ok((
            stored.credential_id.clone(),
            WebAuthnUse {
                sign_count: counter,
                backup_eligible: result.backup_eligible(),
                backup_state: result.backup_state(),
            },
        ))
    }

    /// Opens a ceremony for `user`; the user's oldest goes when they hold too many already.
    async fn open(&self, user: UserId, state: State, now: u64) -> Result<String, WebAuthnError> {
        let opened = self.ceremonies.open(user, &state, now, &mut rand::rng());
        opened.await.map_err(internal)?.ok_or(WebAuthnError::Busy)
    }

    /// Removes the ceremony and hands back its state when it is open and was started for
    /// `user`. Removed in every case: a ceremony is answered once.
    async fn take(&self, id: &str, user: UserId, now: u64) -> Result<State, WebAuthnError> {
        match self.ceremonies.take(id, now).await.map_err(internal)? {
            Some(held) if held.user == user => Ok(held.value),
            _ => Err(WebAuthnError::UnknownCeremony),
        }
    }
}

/// The ceremony store could not answer.
fn internal(error: crate::identity::StoreError) -> WebAuthnError {
    WebAuthnError::Internal(error.to_string())
}

/// A fixed phrase for the audit log: why the library refused a response.
fn rejection(error: &webauthn_rs::prelude::WebauthnError) -> &'static str {
    use webauthn_rs::prelude::WebauthnError as E;
    match error {
        E::MismatchedChallenge => "the challenge does not match",
        E::InvalidClientDataType => "the client data type is wrong",
        E::InvalidRPOrigin => "the origin is not the gateway's",
        E::CredentialCrossOrigin => "the response came from a cross-origin frame",
        E::InvalidRPIDHash => "the relying party id does not match",
        E::UserNotPresent => "user presence missing",
        E::UserNotVerified => "user verification missing",
        E::CredentialPossibleCompromise => {
            "the signature counter did not grow: possibly a cloned authenticator"
        }
        E::CredentialBackupEligibilityInconsistent | E::CredentialMayNotBeHardwareBound => {
            "the backup flags are inconsistent"
        }
        // webauthn-rs 0.6 reports a credential of the exclude list (one already registered) as
        // one whose algorithm was altered from the request: the two cannot be told apart.
        E::CredentialExcludedFromRequest
        | E::CredentialAlteredAlgFromRequest
        | E::CredentialInsecureCryptography => {
            "the authenticator is already registered, or its key is of a kind that was not offered"
        }
        E::CredentialNotFound => "the credential was not offered for this login",
        E::AuthenticationFailure | E::SignatureInvalid => "the signature does not verify",
        _ => "the response does not verify",
    }
}

/// The counter and backup flags of a serialized `Passkey`, which the library keeps private.
#[derive(Deserialize)]
struct PasskeyFacts {
    cred: CredentialFacts,
}

#[derive(Deserialize)]
struct CredentialFacts {
    counter: u32,
    backup_eligible: bool,
    backup_state: bool,
}

impl PasskeyFacts {
    fn read(blob: &[u8]) -> Result<Self, WebAuthnError> {
        serde_json::from_slice(blob).map_err(|_| {
            WebAuthnError::Internal("the WebAuthn credential format is not the expected one".into())
        })
    }
}

/// The server half of a ceremony. Boxed: the two states differ much in size.
#[derive(Serialize, Deserialize)]
enum State {
    Registration(Box<PasskeyRegistration>),
    Authentication(Box<PasskeyAuthentication>),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::{EmbeddedStore, Keyring, MasterKey};
    use crate::store::ephemeral::Memory;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{DerSignature, SigningKey};
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};

    const NOW: u64 = 1_800_000_000;
    const ORIGIN: &str = "https://localhost:8443";

    fn config(rp_id: &str, origin: &str) -> WebAuthnConfig {
        WebAuthnConfig {
            rp_id: rp_id.into(),
            origin: origin.into(),
            rp_name: default_rp_name(),
        }
    }

    fn party() -> RelyingParty {
        RelyingParty::new(&config("localhost", ORIGIN)).unwrap()
    }

    fn passkeys() -> Passkeys {
        Passkeys::new(party(), Arc::new(Memory::new()))
    }

    fn user(name: &str) -> User {
        User::new(UserId::random(&mut rand::rng()), name, NOW)
    }

    fn b64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut text = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, byte)| n | (u32::from(*byte) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                text.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        text
    }

    /// CBOR byte string (major type 2), short forms only.
    fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
        match bytes.len() {
            len @ 0..=23 => out.push(0x40 | len as u8),
            len @ 24..=255 => out.extend([0x58, len as u8]),
            len => {
                out.push(0x59);
                out.extend((len as u16).to_be_bytes());
            }
        }
        out.extend(bytes);
    }

    /// CBOR text string (major type 3), under 24 bytes.
    fn cbor_text(out: &mut Vec<u8>, text: &str) {
        out.push(0x60 | text.len() as u8);
        out.extend(text.as_bytes());
    }

    /// A software authenticator: one P-256 key, "none" attestation, flags under test control.
    struct SoftKey {
        key: SigningKey,
        credential_id: Vec<u8>,
        counter: u32,
        user_verified: bool,
        backup_eligible: bool,
        backup_state: bool,
        origin: String,
        /// What a broken or hostile client might change.
        tamper: Tamper,
    }

    #[derive(Default)]
    struct Tamper {
        /// Another `type` in the client data than the ceremony's.
        client_data_type: Option<&'static str>,
        cross_origin: bool,
        /// Another relying party id hashed into the authenticator data.
        rp_id: Option<&'static str>,
        user_absent: bool,
        signature: bool,
    }

    impl SoftKey {
        fn new() -> Self {
            use rand::Rng;
            let mut rng = rand::rng();
            Self {
                key: SigningKey::from_slice(&rng.random::<[u8; 32]>()).unwrap(),
                credential_id: rng.random::<[u8; 16]>().to_vec(),
                counter: 0,
                user_verified: true,
                backup_eligible: false,
                backup_state: false,
                origin: ORIGIN.into(),
                tamper: Tamper::default(),
            }
        }

        fn authenticator_data(&self, rp_id: &str, attested: Option<&[u8]>) -> Vec<u8> {
            let rp_id = self.tamper.rp_id.unwrap_or(rp_id);
            let mut flags = if self.tamper.user_absent { 0 } else { 0x01 };
            if self.user_verified {
                flags |= 0x04;
            }
            if self.backup_eligible {
                flags |= 0x08;
            }
            if self.backup_state {
                flags |= 0x10;
            }
            if attested.is_some() {
                flags |= 0x40;
            }
            let mut data = Sha256::digest(rp_id.as_bytes()).to_vec();
            data.push(flags);
            data.extend(self.counter.to_be_bytes());
            if let Some(attested) = attested {
                data.extend(attested);
            }
            data
        }

        fn client_data(&self, kind: &str, options: &Value) -> Vec<u8> {
            json!({
                "type": self.tamper.client_data_type.unwrap_or(kind),
                "challenge": options["publicKey"]["challenge"],
                "origin": self.origin,
                "crossOrigin": self.tamper.cross_origin,
            })
            .to_string()
            .into_bytes()
        }

        /// What `navigator.credentials.create()` answers, as `PublicKeyCredential.toJSON()`.
        fn create(&self, options: &Value) -> Vec<u8> {
            let rp_id = options["publicKey"]["rp"]["id"].as_str().unwrap();
            let point = self.key.verifying_key().to_sec1_point(false);
            let xy = &point.as_bytes()[1..];
            // COSE_Key {1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256), -2: x, -3: y}
            let mut cose = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
            cbor_bytes(&mut cose, &xy[..32]);
            cose.push(0x22);
            cbor_bytes(&mut cose, &xy[32..]);
            let mut attested = vec![0u8; 16]; // AAGUID
            attested.extend((self.credential_id.len() as u16).to_be_bytes());
            attested.extend(&self.credential_id);
            attested.extend(cose);
            let auth_data = self.authenticator_data(rp_id, Some(&attested));
            let mut object = vec![0xa3];
            cbor_text(&mut object, "fmt");
            cbor_text(&mut object, "none");
            cbor_text(&mut object, "attStmt");
            object.push(0xa0);
            cbor_text(&mut object, "authData");
            cbor_bytes(&mut object, &auth_data);
            json!({
                "id": b64url(&self.credential_id),
                "rawId": b64url(&self.credential_id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64url(&self.client_data("webauthn.create", options)),
                    "attestationObject": b64url(&object),
                    "transports": ["usb"],
                },
                "clientExtensionResults": {},
                "authenticatorAttachment": "cross-platform",
            })
            .to_string()
            .into_bytes()
        }

        /// What `navigator.credentials.get()` answers, as `PublicKeyCredential.toJSON()`.
        fn get(&mut self, options: &Value) -> Vec<u8> {
            let rp_id = options["publicKey"]["rpId"].as_str().unwrap();
            let auth_data = self.authenticator_data(rp_id, None);
            let client_data = self.client_data("webauthn.get", options);
            let mut signed = auth_data.clone();
            signed.extend(Sha256::digest(&client_data));
            if self.tamper.signature {
                signed[0] ^= 1;
            }
            let signature: DerSignature = self.key.sign(&signed);
            json!({
                "id": b64url(&self.credential_id),
                "rawId": b64url(&self.credential_id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64url(&client_data),
                    "authenticatorData": b64url(&auth_data),
                    "signature": b64url(signature.as_bytes()),
                },
                "clientExtensionResults": {},
            })
            .to_string()
            .into_bytes()
        }
    }

    /// Registers `key` for `alice` and returns the stored credential.
    async fn register(passkeys: &Passkeys, alice: &User, key: &SoftKey) -> WebAuthnCredential {
        let (id, options) = passkeys.start_registration(alice, &[], NOW).await.unwrap();
        passkeys
            .finish_registration(&id, alice.id, &key.create(&options), NOW + 1)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn each_rejection_names_its_reason() {
        let passkeys = passkeys();
        let alice = user("alice");
        let register_with =
            async |tamper: Tamper, existing: &[WebAuthnCredential], key: &mut SoftKey| {
                key.tamper = tamper;
                let (id, options) = passkeys
                    .start_registration(&alice, existing, NOW)
                    .await
                    .unwrap();
                passkeys
                    .finish_registration(&id, alice.id, &key.create(&options), NOW + 1)
                    .await
            };
        let cases: [(Tamper, &str); 5] = [
            (
                Tamper {
                    client_data_type: Some("webauthn.get"),
                    ..Tamper::default()
                },
                "the client data type is wrong",
            ),
            (
                Tamper {
                    cross_origin: true,
                    ..Tamper::default()
                },
                "the response came from a cross-origin frame",
            ),
            (
                Tamper {
                    rp_id: Some("example.org"),
                    ..Tamper::default()
                },
                "the relying party id does not match",
            ),
            (
                Tamper {
                    user_absent: true,
                    ..Tamper::default()
                },
                "user presence missing",
            ),
            (
                Tamper::default(),
                "the authenticator is already registered, or its key is of a kind that was not offered",
            ),
        ];
        let mut key = SoftKey::new();
        let registered = register(&passkeys, &alice, &key).await;
        for (tamper, reason) in cases {
            assert_eq!(
                register_with(tamper, std::slice::from_ref(&registered), &mut key)
                    .await
                    .map(|_| ()),
                Err(WebAuthnError::Rejected(reason))
            );
        }
        let mut synced = SoftKey::new();
        synced.backup_state = true;
        assert_eq!(
            register_with(Tamper::default(), &[], &mut synced)
                .await
                .map(|_| ()),
            Err(WebAuthnError::Rejected("the backup flags are inconsistent"))
        );

        let log_in_with = async |key: &mut SoftKey| {
            let (id, options) = passkeys
                .start_authentication(alice.id, std::slice::from_ref(&registered), NOW)
                .await
                .unwrap();
            let response = key.get(&options);
            passkeys
                .finish_authentication(
                    &id,
                    alice.id,
                    &response,
                    std::slice::from_ref(&registered),
                    NOW,
                )
                .await
                .map(|_| ())
        };
        key.counter = 1;
        key.tamper = Tamper {
            signature: true,
            ..Tamper::default()
        };
        assert_eq!(
            log_in_with(&mut key).await,
            Err(WebAuthnError::Rejected("the signature does not verify"))
        );
        assert_eq!(
            log_in_with(&mut SoftKey::new()).await,
            Err(WebAuthnError::Rejected(
                "the credential was not offered for this login"
            ))
        );
    }

    #[test]
    fn passkeys_are_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Passkeys>();
    }

    #[test]
    fn config_accepts_localhost_and_subdomains() {
        for (rp_id, origin) in [
            ("localhost", "https://localhost:8443"),
            ("localhost", "http://localhost:8080"),
            ("example.org", "https://gateway.example.org"),
            ("gateway.example.org", "https://gateway.example.org:8443/"),
        ] {
            assert!(config(rp_id, origin).validate().is_ok(), "{rp_id} {origin}");
            assert!(
                RelyingParty::new(&config(rp_id, origin)).is_ok(),
                "{rp_id} {origin}"
            );
        }
    }

    #[test]
    fn config_refuses_what_browsers_would_refuse() {
        for (rp_id, origin, key, words) in [
            (
                "example.org",
                "http://gateway.example.org",
                "origin",
                "https",
            ),
            (
                "example.org",
                "https://gateway.example.com",
                "origin",
                "subdomain",
            ),
            (
                "example.org",
                "https://badexample.org",
                "origin",
                "subdomain",
            ),
            (
                "example.org",
                "https://example.org/login",
                "origin",
                "no path",
            ),
            ("example.org", "gateway.example.org", "origin", "not a URL"),
            ("127.0.0.1", "https://127.0.0.1:8443", "rp_id", "IP address"),
            (
                "localhost",
                "https://127.0.0.1:8443",
                "origin",
                "IP address",
            ),
            (
                "https://example.org",
                "https://example.org",
                "rp_id",
                "host only",
            ),
            (
                "example.org:8443",
                "https://example.org:8443",
                "rp_id",
                "host only",
            ),
            ("Example.org", "https://example.org", "rp_id", "lower case"),
            ("", "https://example.org", "rp_id", "domain name"),
            (".example.org", "https://example.org", "rp_id", "host only"),
            ("example.org.", "https://example.org", "rp_id", "host only"),
            (
                "me@example.org",
                "https://example.org",
                "rp_id",
                "host only",
            ),
            ("example .org", "https://example.org", "rp_id", "host only"),
            ("example.org", "https://me@example.org", "origin", "no path"),
            (
                "example.org",
                "https://:pw@example.org",
                "origin",
                "no path",
            ),
            (
                "example.org",
                "https://example.org/?next=1",
                "origin",
                "no path",
            ),
            (
                "example.org",
                "https://example.org/#top",
                "origin",
                "no path",
            ),
        ] {
            let error = config(rp_id, origin).validate().unwrap_err();
            assert_eq!(error.key, key, "{rp_id} {origin}: {error}");
            assert!(error.message.contains(words), "{rp_id} {origin}: {error}");
        }
        let mut nameless = config("localhost", ORIGIN);
        nameless.rp_name = " ".into();
        assert_eq!(nameless.validate().unwrap_err().key, "rp_name");
    }

    #[test]
    fn config_is_strict_and_names_the_gateway_by_default() {
        let parsed: WebAuthnConfig =
            serde_json::from_str(r#"{"rp_id": "localhost", "origin": "https://localhost"}"#)
                .unwrap();
        assert_eq!(parsed.rp_name, "Wardgate");
        assert!(
            serde_json::from_str::<WebAuthnConfig>(
                r#"{"rp_id": "localhost", "origin": "https://localhost", "rpid": "x"}"#
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn registration_options_require_verification_and_exclude_existing() {
        let passkeys = passkeys();
        let alice = user("alice");
        let existing = register(&passkeys, &alice, &SoftKey::new()).await;
        let (id, options) = passkeys
            .start_registration(&alice, std::slice::from_ref(&existing), NOW)
            .await
            .unwrap();
        assert_eq!(id.len(), 64);
        let public_key = &options["publicKey"];
        assert_eq!(public_key["rp"]["id"], "localhost");
        assert_eq!(public_key["rp"]["name"], "Wardgate");
        assert_eq!(public_key["user"]["name"], "alice");
        assert_eq!(public_key["user"]["id"], b64url(alice.id.as_bytes()));
        assert_eq!(
            public_key["authenticatorSelection"]["userVerification"],
            "required"
        );
        assert_eq!(public_key["timeout"], CEREMONY_TTL_SECS * 1000);
        assert_eq!(
            public_key["excludeCredentials"][0]["id"],
            b64url(&existing.credential_id)
        );
        assert!(public_key["challenge"].as_str().unwrap().len() >= 43);
    }

    /// Finishes a login with `key`'s answer against the credentials `store` holds, and records
    /// the use there, as the login handler does.
    async fn log_in(
        passkeys: &Passkeys,
        store: &EmbeddedStore,
        alice: &User,
        key: &mut SoftKey,
    ) -> Result<WebAuthnUse, WebAuthnError> {
        let registered = store.webauthn_credentials(alice.id).unwrap();
        let (id, options) = passkeys
            .start_authentication(alice.id, &registered, NOW)
            .await
            .unwrap();
        let (used, update) = passkeys
            .finish_authentication(&id, alice.id, &key.get(&options), &registered, NOW)
            .await?;
        assert_eq!(used, key.credential_id);
        assert!(
            store
                .record_webauthn_use(alice.id, &used, update, NOW)
                .unwrap()
        );
        Ok(update)
    }

    /// The counter `store` holds for `alice`'s only credential.
    fn stored_counter(store: &EmbeddedStore, alice: &User) -> u32 {
        let credentials = store.webauthn_credentials(alice.id).unwrap();
        assert_eq!(credentials.len(), 1);
        credentials[0].sign_count
    }

    #[tokio::test]
    async fn a_registered_key_logs_in_and_its_counter_must_grow() {
        let passkeys = passkeys();
        let alice = user("alice");
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap();
        let store = EmbeddedStore::open(dir.path(), Arc::new(keyring)).unwrap();
        store.create_user(&alice).unwrap();
        let mut key = SoftKey::new();
        key.counter = 1;
        let stored = register(&passkeys, &alice, &key).await;
        assert_eq!(stored.credential_id, key.credential_id);
        assert_eq!(stored.created, NOW + 1);
        assert_eq!(stored.sign_count, 1);
        assert!(!stored.backup_eligible && !stored.backup_state);
        store.add_webauthn(alice.id, &stored).unwrap();

        let (id, options) = passkeys
            .start_authentication(alice.id, std::slice::from_ref(&stored), NOW)
            .await
            .unwrap();
        assert_eq!(options["publicKey"]["userVerification"], "required");
        assert_eq!(options["publicKey"]["rpId"], "localhost");
        assert_eq!(
            options["publicKey"]["allowCredentials"][0]["id"],
            b64url(&key.credential_id)
        );
        key.counter = 5;
        let response = key.get(&options);
        let (used, update) = passkeys
            .finish_authentication(&id, alice.id, &response, std::slice::from_ref(&stored), NOW)
            .await
            .unwrap();
        assert_eq!(used, key.credential_id);
        assert_eq!(
            update,
            WebAuthnUse {
                sign_count: 5,
                backup_eligible: false,
                backup_state: false
            }
        );
        // The same response again: the ceremony is gone.
        assert_eq!(
            passkeys
                .finish_authentication(&id, alice.id, &response, std::slice::from_ref(&stored), NOW)
                .await,
            Err(WebAuthnError::UnknownCeremony)
        );

        // The login handler stores the use; the next login must beat the stored counter: a
        // clone still at it (or behind) is refused and changes nothing.
        assert!(
            store
                .record_webauthn_use(alice.id, &used, update, NOW)
                .unwrap()
        );
        assert_eq!(stored_counter(&store, &alice), 5);
        // A clone that reports no counter at all is refused too.
        for counter in [5, 3, 0] {
            key.counter = counter;
            let error = log_in(&passkeys, &store, &alice, &mut key)
                .await
                .unwrap_err();
            assert!(
                matches!(error, WebAuthnError::Rejected(reason) if reason.contains("counter")),
                "{error}"
            );
            assert_eq!(stored_counter(&store, &alice), 5);
        }
        key.counter = 6;
        log_in(&passkeys, &store, &alice, &mut key).await.unwrap();
        assert_eq!(stored_counter(&store, &alice), 6);
    }

    #[tokio::test]
    async fn counterless_synced_passkeys_log_in_and_report_backup_state() {
        let passkeys = passkeys();
        let alice = user("alice");
        let mut key = SoftKey::new();
        key.backup_eligible = true;
        let stored = register(&passkeys, &alice, &key).await;
        assert!(stored.backup_eligible && !stored.backup_state);
        assert_eq!(stored.sign_count, 0);

        key.backup_state = true;
        let (id, options) = passkeys
            .start_authentication(alice.id, std::slice::from_ref(&stored), NOW)
            .await
            .unwrap();
        let (_, update) = passkeys
            .finish_authentication(
                &id,
                alice.id,
                &key.get(&options),
                std::slice::from_ref(&stored),
                NOW,
            )
            .await
            .unwrap();
        assert_eq!(
            update,
            WebAuthnUse {
                sign_count: 0,
                backup_eligible: true,
                backup_state: true
            }
        );

        // Backup eligibility may not change once registered.
        key.backup_eligible = false;
        key.backup_state = false;
        let (id, options) = passkeys
            .start_authentication(alice.id, std::slice::from_ref(&stored), NOW)
            .await
            .unwrap();
        assert!(matches!(
            passkeys
                .finish_authentication(&id, alice.id, &key.get(&options), &[stored], NOW)
                .await,
            Err(WebAuthnError::Rejected(_))
        ));
    }

    #[tokio::test]
    async fn a_backup_eligibility_upgrade_is_refused() {
        // webauthn-rs would allow false -> true; Wardgate follows W3C Level 3 and refuses.
        let passkeys = passkeys();
        let alice = user("alice");
        let mut key = SoftKey::new();
        let stored = register(&passkeys, &alice, &key).await;
        key.backup_eligible = true;
        let (id, options) = passkeys
            .start_authentication(alice.id, std::slice::from_ref(&stored), NOW)
            .await
            .unwrap();
        assert_eq!(
            passkeys
                .finish_authentication(&id, alice.id, &key.get(&options), &[stored], NOW)
                .await,
            Err(WebAuthnError::Rejected("the backup eligibility changed"))
        );
    }

    #[tokio::test]
    async fn user_verification_is_required_at_registration_and_login() {
        let passkeys = passkeys();
        let alice = user("alice");
        let mut key = SoftKey::new();
        key.user_verified = false;
        let (id, options) = passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        assert_eq!(
            passkeys
                .finish_registration(&id, alice.id, &key.create(&options), NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::Rejected("user verification missing"))
        );

        key.user_verified = true;
        let stored = register(&passkeys, &alice, &key).await;
        key.user_verified = false;
        let (id, options) = passkeys
            .start_authentication(alice.id, std::slice::from_ref(&stored), NOW)
            .await
            .unwrap();
        assert_eq!(
            passkeys
                .finish_authentication(&id, alice.id, &key.get(&options), &[stored], NOW)
                .await,
            Err(WebAuthnError::Rejected("user verification missing"))
        );
    }

    #[tokio::test]
    async fn a_phishing_origin_or_a_foreign_key_is_rejected() {
        let passkeys = passkeys();
        let alice = user("alice");
        let mut key = SoftKey::new();
        key.origin = "https://localhost.evil.example".into();
        let (id, options) = passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        assert_eq!(
            passkeys
                .finish_registration(&id, alice.id, &key.create(&options), NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::Rejected("the origin is not the gateway's"))
        );

        // A key that was never registered signs a login for a registered one's id.
        let stored = register(&passkeys, &alice, &SoftKey::new()).await;
        let mut impostor = SoftKey::new();
        impostor.credential_id = stored.credential_id.clone();
        let (id, options) = passkeys
            .start_authentication(alice.id, std::slice::from_ref(&stored), NOW)
            .await
            .unwrap();
        assert!(matches!(
            passkeys
                .finish_authentication(&id, alice.id, &impostor.get(&options), &[stored], NOW)
                .await,
            Err(WebAuthnError::Rejected(_))
        ));
    }

    #[tokio::test]
    async fn a_response_to_another_ceremony_is_rejected() {
        let passkeys = passkeys();
        let alice = user("alice");
        let key = SoftKey::new();
        let (_, first) = passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        let (second, _) = passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        assert_eq!(
            passkeys
                .finish_registration(&second, alice.id, &key.create(&first), NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::Rejected("the challenge does not match"))
        );
        assert_eq!(
            passkeys
                .finish_registration(&second, alice.id, &key.create(&first), NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::UnknownCeremony)
        );
    }

    #[tokio::test]
    async fn a_ceremony_is_used_once_even_when_it_fails() {
        let passkeys = passkeys();
        let alice = user("alice");
        let key = SoftKey::new();
        let (id, options) = passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        assert_eq!(
            passkeys
                .finish_registration(&id, alice.id, b"{not json", NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::Malformed)
        );
        assert_eq!(
            passkeys
                .finish_registration(&id, alice.id, &key.create(&options), NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::UnknownCeremony)
        );

        let (id, options) = passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        let response = key.create(&options);
        passkeys
            .finish_registration(&id, alice.id, &response, NOW)
            .await
            .unwrap();
        assert_eq!(
            passkeys
                .finish_registration(&id, alice.id, &response, NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::UnknownCeremony)
        );
    }

    #[tokio::test]
    async fn well_formed_json_of_the_wrong_shape_is_malformed() {
        let passkeys = passkeys();
        let alice = user("alice");
        let stored = register(&passkeys, &alice, &SoftKey::new()).await;
        let (id, _) = passkeys
            .start_authentication(alice.id, std::slice::from_ref(&stored), NOW)
            .await
            .unwrap();
        assert_eq!(
            passkeys
                .finish_authentication(
                    &id,
                    alice.id,
                    br#"{"id": 1}"#,
                    std::slice::from_ref(&stored),
                    NOW
                )
                .await,
            Err(WebAuthnError::Malformed)
        );
        assert_eq!(
            passkeys
                .finish_authentication(&id, alice.id, b"{}", &[stored], NOW)
                .await,
            Err(WebAuthnError::UnknownCeremony)
        );
    }

    #[tokio::test]
    async fn a_ceremony_started_for_alice_cannot_be_finished_for_bob() {
        let passkeys = passkeys();
        let alice = user("alice");
        let bob = user("bob");
        let key = SoftKey::new();
        let (id, options) = passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        let response = key.create(&options);
        assert_eq!(
            passkeys
                .finish_registration(&id, bob.id, &response, NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::UnknownCeremony)
        );
        // The attempt burned it: alice must start again.
        assert_eq!(
            passkeys
                .finish_registration(&id, alice.id, &response, NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::UnknownCeremony)
        );
    }

    #[tokio::test]
    async fn kinds_do_not_mix() {
        let passkeys = passkeys();
        let alice = user("alice");
        let stored = register(&passkeys, &alice, &SoftKey::new()).await;
        let (id, _) = passkeys
            .start_authentication(alice.id, std::slice::from_ref(&stored), NOW)
            .await
            .unwrap();
        assert_eq!(
            passkeys
                .finish_registration(&id, alice.id, b"{}", NOW)
                .await
                .map(|_| ()),
            Err(WebAuthnError::UnknownCeremony)
        );
    }

    #[tokio::test]
    async fn debug_output_shows_no_ceremony_state() {
        let passkeys = passkeys();
        passkeys
            .start_registration(&user("alice"), &[], NOW)
            .await
            .unwrap();
        assert_eq!(format!("{passkeys:?}"), "Passkeys { .. }");
    }

    #[tokio::test]
    async fn ceremonies_expire_after_the_ttl() {
        let passkeys = passkeys();
        let alice = user("alice");
        let key = SoftKey::new();
        let (id, options) = passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        let response = key.create(&options);
        // Five minutes to find, touch and unlock the authenticator, and not a second more.
        assert_eq!(
            passkeys
                .finish_registration(&id, alice.id, &response, NOW + 300)
                .await
                .map(|_| ()),
            Err(WebAuthnError::UnknownCeremony)
        );
        let (id, options) = passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        let response = key.create(&options);
        assert!(
            passkeys
                .finish_registration(&id, alice.id, &response, NOW + 299)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn no_credentials_no_login() {
        assert_eq!(
            passkeys()
                .start_authentication(user("alice").id, &[], NOW)
                .await,
            Err(WebAuthnError::NoCredentials)
        );
    }

    #[tokio::test]
    async fn a_corrupt_stored_credential_is_an_internal_error() {
        let passkeys = passkeys();
        let alice = user("alice");
        let mut stored = register(&passkeys, &alice, &SoftKey::new()).await;
        stored.credential = b"not a passkey".to_vec().into();
        assert!(matches!(
            passkeys
                .start_authentication(alice.id, &[stored], NOW)
                .await,
            Err(WebAuthnError::Internal(_))
        ));
    }

    /// A user with one registered software key, logging in.
    struct Holder {
        user: User,
        key: SoftKey,
        credentials: [WebAuthnCredential; 1],
    }

    impl Holder {
        async fn new(passkeys: &Passkeys, name: &str) -> Self {
            let (user, key) = (user(name), SoftKey::new());
            let credentials = [register(passkeys, &user, &key).await];
            Self {
                user,
                key,
                credentials,
            }
        }

        async fn start(&self, passkeys: &Passkeys) -> (String, Value) {
            passkeys
                .start_authentication(self.user.id, &self.credentials, NOW)
                .await
                .unwrap()
        }

        async fn finish(
            &mut self,
            passkeys: &Passkeys,
            (id, options): &(String, Value),
        ) -> Result<(Vec<u8>, WebAuthnUse), WebAuthnError> {
            let response = self.key.get(options);
            passkeys
                .finish_authentication(id, self.user.id, &response, &self.credentials, NOW)
                .await
        }
    }

    #[tokio::test]
    async fn a_users_newest_ceremony_replaces_their_oldest_and_others_keep_theirs() {
        let passkeys = passkeys();
        let (mut alice, mut bob) = (
            Holder::new(&passkeys, "alice").await,
            Holder::new(&passkeys, "bob").await,
        );
        let bobs = bob.start(&passkeys).await;
        let mut opened = Vec::new();
        for _ in 0..=crate::store::ephemeral::MAX_OPEN_PER_USER {
            opened.push(alice.start(&passkeys).await);
        }
        assert_eq!(
            alice.finish(&passkeys, &opened[0]).await,
            Err(WebAuthnError::UnknownCeremony)
        );
        assert!(
            alice
                .finish(&passkeys, &opened[opened.len() - 1])
                .await
                .is_ok()
        );
        assert!(bob.finish(&passkeys, &bobs).await.is_ok());
    }

    #[tokio::test]
    async fn ending_a_users_sessions_ends_their_ceremonies_only() {
        let store = Arc::new(Memory::new());
        let passkeys = Passkeys::new(party(), store.clone());
        let (mut alice, mut bob) = (
            Holder::new(&passkeys, "alice").await,
            Holder::new(&passkeys, "bob").await,
        );
        let (alices, bobs) = (alice.start(&passkeys).await, bob.start(&passkeys).await);
        store.drop_user(alice.user.id).await.unwrap();
        assert_eq!(
            alice.finish(&passkeys, &alices).await,
            Err(WebAuthnError::UnknownCeremony)
        );
        assert!(bob.finish(&passkeys, &bobs).await.is_ok());
    }

    #[tokio::test]
    async fn the_map_is_bounded_and_expired_ceremonies_make_room() {
        let two = Space {
            capacity: 2,
            ..CEREMONIES
        };
        let passkeys = Passkeys::in_space(party(), Arc::new(Memory::new()), two);
        let alice = user("alice");
        passkeys.start_registration(&alice, &[], NOW).await.unwrap();
        passkeys
            .start_registration(&alice, &[], NOW + 1)
            .await
            .unwrap();
        assert_eq!(
            passkeys
                .start_registration(&alice, &[], NOW + 2)
                .await
                .map(|_| ()),
            Err(WebAuthnError::Busy)
        );
        passkeys
            .start_registration(&alice, &[], NOW + CEREMONY_TTL_SECS)
            .await
            .unwrap();
    }
}
