//! Enrollment: the steps that turn the one-time token from `wardgate user add` into a
//! password, an authenticator app and recovery codes, and the JSON API over them. The browser
//! pages (`crate::own_api::pages`, `/.wardgate/enroll`) walk the same steps: [`Enrollment::set_password`]
//! and [`Enrollment::confirm_totp`] return typed results that each side renders its own way.
//!
//! **The threat.** An enrollment link that works twice (forwarded mail, browser history), a
//! link burnt by a typo so that the user must call the help desk, a second factor that was never
//! proven to work, a ceremony left open for others to finish, guessing of the confirmation code,
//! and secrets that end up in logs.
//!
//! **The rule.**
//!
//! ```text
//!  POST /.wardgate/api/enroll/password {token, password}
//!     │  token looked up, not used up ─── unknown / expired: WG-AUTH-001
//!     │  Policy::check (name, e-mail) ─── refused: WG-AUTH-002 + every reason; link still good
//!     │  HashPool ─────────────────────── busy: WG-AUTH-003 (503, Retry-After: 1)
//!     │  token consumed (atomic) ──────── used meanwhile: WG-AUTH-001
//!     ▼  password stored; PendingTotp kept here, in memory, under a random 256-bit id
//!  {enrollment, totp: {otpauth, secret}}
//!     │
//!  POST /.wardgate/api/enroll/totp {enrollment, code}
//!     │  unknown / expired (10 min) / dropped ───────── WG-AUTH-004
//!     │  wrong or malformed code ─────────────────────── WG-AUTH-005; the 5th drops the ceremony
//!     ▼  seed + last step stored, 10 recovery codes (80 random bits each, only SHA-256 kept),
//!        enrollment no longer required
//!  {recovery_codes: [...]}   shown once
//!
//!  instead of the app, a passkey or security key (when `auth.webauthn` is configured):
//!  POST /.wardgate/api/enroll/webauthn/start  {enrollment} -> {ceremony, options}
//!     │  browser: navigator.credentials.create(options)
//!  POST /.wardgate/api/enroll/webauthn/finish {enrollment, ceremony, credential}
//!     │  refused attestation, unknown / expired ceremony ─ WG-AUTH-013; the enrollment stays open
//!     ▼  credential stored, 10 recovery codes, enrollment no longer required
//!  {recovery_codes: [...]}
//! ```
//!
//! The password is hashed before the token is consumed, so a refused or busy attempt leaves the
//! link usable; the consume is the one atomic decision, so two racing requests cannot both set a
//! password. The ceremony map is bounded ([`MAX_CEREMONIES`]); expired entries go on every access.
//! Confirming a code and ending the ceremony happen under one lock: a code works once. Codes,
//! secrets and passwords are never logged.
//!
//! **The standard.** NIST SP 800-63B-4 (3.1.1.2 password verifiers, 3.1.4 OTP authenticators,
//! 4.1 enrollment binding of authenticators; recovery codes: 3.1.2 look-up secrets of at least
//! 64 bits), RFC 6238, OWASP ASVS 5 V6.4 (authenticator lifecycle).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::auth::events::{Factor, SecurityEvent, SecurityEvents};
use crate::auth::mfa::MfaConfig;
use crate::auth::password::{HashPool, Owner, Policy, PoolError, Reason, Secret};
use crate::auth::shared::{self, busy, passkey_refusal, store_failure, unavailable};
use crate::auth::totp::{ActiveTotp, PendingTotp, TotpConfig};
use crate::auth::webauthn::Passkeys;
use crate::identity::seal::hex_encode_into;
use crate::identity::{StoreError, User, UserId};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::store::ephemeral::{Ceremonies, Space};
use crate::store::{Pending, Stores};

/// How long a user has from the password step to the first authenticator code.
const CEREMONY_TTL_SECS: u64 = 10 * 60;
/// Open ceremonies kept at most; one more is refused as busy.
pub const MAX_CEREMONIES: usize = 10_000;
const CEREMONIES: Space = Space {
    name: "enrollment",
    ttl: CEREMONY_TTL_SECS,
    capacity: MAX_CEREMONIES,
};
/// Wrong codes a ceremony survives; the next one drops it.
const MAX_WRONG_CODES: u32 = 5;
const RECOVERY_CODES: usize = 10;
/// 80 random bits: 16 base32 characters.
const RECOVERY_CODE_BYTES: usize = 10;

/// The enrollment API's state: built once at start.
pub struct Enrollment {
    stores: Stores,
    pool: Arc<HashPool>,
    policy: Policy,
    totp: TotpConfig,
    /// WebAuthn's relying party; `None` when `auth.webauthn` is not configured.
    passkeys: Option<Arc<Passkeys>>,
    mfa: MfaConfig,
    events: SecurityEvents,
    ceremonies: Ceremonies<Ceremony>,
}

/// The password step succeeded: the ceremony's id, the factors the account may enroll, and
/// the authenticator to show when the app is one of them.
pub struct TotpStarted {
    pub enrollment: String,
    pub methods: Vec<Factor>,
    pub totp: PendingTotp,
}

/// Whose enrollment a ceremony is, and which factors it may end with.
#[derive(Clone, Serialize, Deserialize)]
struct Enrollee {
    user: UserId,
    name: String,
    methods: Vec<Factor>,
}

/// Why the password step failed: the policy (shown with every reason, link still usable), or
/// a refusal.
pub enum PasswordError {
    Policy {
        reasons: Vec<Reason>,
        user_name: String,
    },
    Refused(Refused),
}

impl From<Refused> for PasswordError {
    fn from(refused: Refused) -> Self {
        Self::Refused(refused)
    }
}

impl Enrollment {
    pub fn new(
        stores: Stores,
        pool: Arc<HashPool>,
        policy: Policy,
        totp: TotpConfig,
        passkeys: Option<Arc<Passkeys>>,
        mfa: MfaConfig,
        events: SecurityEvents,
    ) -> Self {
        Self {
            ceremonies: Ceremonies::new(stores.ephemeral.clone(), CEREMONIES),
            stores,
            pool,
            policy,
            totp,
            passkeys,
            mfa,
            events,
        }
    }

    /// Forgets enrollments that have expired; returns how many.
    pub async fn prune(&self, now: u64) -> Result<usize, StoreError> {
        self.ceremonies.prune(now).await
    }

    /// The rules a new password must meet.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The account an enrollment link belongs to, without using the link up.
    pub async fn link_user(&self, token: &str, now: u64) -> Result<User, Refused> {
        let accounts = &self.stores.accounts;
        let owner = accounts.enrollment_token_user(token.as_bytes(), now).await;
        let Some(id) = owner.map_err(store_failure)? else {
            return Err(Refusal::EnrollmentLinkInvalid.into());
        };
        let user = accounts.user(id).await.map_err(store_failure)?;
        // A disabled account cannot be enrolled: its link is as good as expired.
        if user.disabled {
            return Err(Refusal::EnrollmentLinkInvalid.into());
        }
        Ok(user)
    }

    /// Step 1: the link's password is checked, hashed and stored, the link used up, and an
    /// authenticator ceremony opened.
    pub async fn set_password(
        &self,
        token: &str,
        password: String,
        now: u64,
    ) -> Result<TotpStarted, PasswordError> {
        let user = self.link_user(token, now).await?;
        let password = Secret::new(password);
        let owner = Owner {
            user_name: &user.name,
            email: user.email.as_deref(),
        };
        if let Err(reasons) = self.policy.check(&password, &owner) {
            return Err(PasswordError::Policy {
                reasons,
                user_name: user.name,
            });
        }
        let phc = self
            .pool
            .hash(password)
            .await
            .map_err(|error| match error {
                PoolError::Busy => busy(),
                other => unavailable(&other),
            })?;
        let pending = PendingTotp::new(&self.totp, &user.name, &mut rand::rng())
            .map_err(|e| unavailable(&e))?;
        let mut methods = self.mfa.allowed(&user.roles);
        if self.passkeys.is_none() {
            methods.retain(|f| *f != Factor::WebAuthn);
        }
        let enrollee = Enrollee {
            user: user.id,
            name: user.name.clone(),
            methods: methods.clone(),
        };
        // The ceremony is reserved before the token is spent: a full map must not burn the link.
        let ceremony = Ceremony::new(enrollee, pending.clone());
        let opened = self
            .ceremonies
            .open(user.id, &ceremony, now, &mut rand::rng());
        let enrollment = opened.await.map_err(store_failure)?.ok_or_else(busy)?;
        if let Err(refused) = self.spend_link(token, user.id, phc, now).await {
            let closed = self.ceremonies.take(&enrollment, now).await;
            closed.map_err(store_failure)?;
            return Err(refused.into());
        }
        self.events
            .emit(SecurityEvent::PasswordSet { user: user.name })
            .await;
        Ok(TotpStarted {
            enrollment,
            methods,
            totp: pending,
        })
    }

    /// Uses the link up and stores the password it set: `WG-AUTH-011` when the link went in the
    /// meantime (used by a racing request, or reissued).
    async fn spend_link(
        &self,
        token: &str,
        id: UserId,
        phc: String,
        now: u64,
    ) -> Result<(), Refused> {
        let accounts = &self.stores.accounts;
        let owner = accounts
            .consume_enrollment_token(token.as_bytes(), now)
            .await;
        if owner.map_err(store_failure)? != Some(id) {
            return Err(Refusal::EnrollmentLinkInvalid.into());
        }
        let stored = accounts.set_password_hash(id, Some(phc)).await;
        stored.map_err(store_failure)
    }

    /// The factors and the authenticator of an open ceremony, to show again after a wrong try.
    pub async fn pending(
        &self,
        enrollment: &str,
        now: u64,
    ) -> Result<Option<(Vec<Factor>, PendingTotp)>, Refused> {
        let open = self.ceremonies.read(enrollment, now).await;
        let open = open.map_err(store_failure)?;
        Ok(open.map(|(_, c)| (c.enrollee.methods, c.totp)))
    }

    /// Step 2: the first code from the app; returns the recovery codes, shown once.
    pub async fn confirm_totp(
        &self,
        enrollment: &str,
        code: &str,
        now: u64,
    ) -> Result<Vec<String>, Refused> {
        let (enrollee, active, last_step) =
            confirm(&self.ceremonies, enrollment, code, now).await?;
        let seed = Zeroizing::new(active.secret_bytes().to_vec());
        let stored =
            self.stores
                .credentials
                .set_totp(enrollee.user, seed, active.params(), last_step);
        self.complete(&enrollee, Factor::Totp, stored).await
    }

    /// A passkey instead of the app: opens the WebAuthn registration ceremony for the user of
    /// an open enrollment; the options go to `navigator.credentials.create()`.
    pub async fn webauthn_options(
        &self,
        enrollment: &str,
        now: u64,
    ) -> Result<(String, serde_json::Value), Refused> {
        let passkeys = self.passkeys.clone().ok_or(Refusal::GatewayPathNotFound)?;
        let id = self.open_for(enrollment, Factor::WebAuthn, now).await?.user;
        shared::passkey_registration(&self.stores, &passkeys, id, now).await
    }

    /// The browser's answer to the registration ceremony: a verified credential ends the
    /// enrollment like a first app code does; a refused one leaves the enrollment open.
    pub async fn confirm_webauthn(
        &self,
        enrollment: &str,
        ceremony: &str,
        credential: &[u8],
        now: u64,
    ) -> Result<Vec<String>, Refused> {
        let passkeys = self.passkeys.clone().ok_or(Refusal::GatewayPathNotFound)?;
        let user = self.open_for(enrollment, Factor::WebAuthn, now).await?.user;
        let credential = passkeys
            .finish_registration(ceremony, user, credential, now)
            .await
            .map_err(passkey_refusal)?;
        // Of two racing finishes, the one that closes the enrollment stores its credential.
        let taken = self.ceremonies.take(enrollment, now).await;
        let enrollee = taken
            .map_err(store_failure)?
            .map(|held| held.value.enrollee)
            .ok_or(Refusal::EnrollmentUnknown)?;
        let stored = self.stores.credentials.add_webauthn(user, credential);
        self.complete(&enrollee, Factor::WebAuthn, stored).await
    }

    /// Who an open enrollment is for, when it may end with `factor` (else `WG-AUTH-013`).
    async fn open_for(
        &self,
        enrollment: &str,
        factor: Factor,
        now: u64,
    ) -> Result<Enrollee, Refused> {
        let open = self.ceremonies.read(enrollment, now).await;
        let enrollee = open
            .map_err(store_failure)?
            .map(|(_, c)| c.enrollee)
            .ok_or(Refusal::EnrollmentUnknown)?;
        if !enrollee.methods.contains(&factor) {
            return Err(Refusal::FactorNotRegistered.into());
        }
        Ok(enrollee)
    }

    /// Stores the proven factor (`stored`, run first) with fresh recovery codes (when the
    /// account may use them) and ends the enrollment requirement; returns the codes, shown once.
    async fn complete(
        &self,
        enrollee: &Enrollee,
        factor: Factor,
        stored: Pending<'_, ()>,
    ) -> Result<Vec<String>, Refused> {
        let codes = if enrollee.methods.contains(&Factor::RecoveryCode) {
            recovery_codes(&mut rand::rng())
        } else {
            Vec::new()
        };
        let hashes: Vec<String> = codes.iter().map(|c| recovery_code_hash(c)).collect();
        let user = enrollee.user;
        stored.await.map_err(store_failure)?;
        let codes_stored = self
            .stores
            .credentials
            .set_recovery_codes(user, hashes)
            .await;
        codes_stored.map_err(store_failure)?;
        let accounts = &self.stores.accounts;
        let done = accounts.set_mfa_required_enrollment(user, false).await;
        done.map_err(store_failure)?;
        self.events
            .emit(SecurityEvent::FactorAdded {
                user: enrollee.name.clone(),
                factor,
            })
            .await;
        Ok(codes)
    }
}

/// Ten recovery codes, `ABCD-EFGH-IJKL-MNOP`: 80 random bits each, base32 (RFC 4648).
fn recovery_codes(rng: &mut impl rand::CryptoRng) -> Vec<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes[..RECOVERY_CODE_BYTES]);
            let bits = u128::from_be_bytes(bytes) >> 48;
            let mut code = String::with_capacity(19);
            for index in 0..16 {
                if index > 0 && index % 4 == 0 {
                    code.push('-');
                }
                let digit = (bits >> (75 - 5 * index)) & 0x1f;
                code.push(char::from(ALPHABET[digit as usize]));
            }
            code
        })
        .collect()
}

/// The stored form of a recovery code: SHA-256 (hex) of the code without separators, upper
/// case, so that `abcd efgh …` typed at login matches. A fast hash suffices for 80 random bits.
pub fn recovery_code_hash(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let mut hex = String::with_capacity(64);
    hex_encode_into(&Sha256::digest(normalized.as_bytes()), &mut hex);
    hex
}

/// One open enrollment: the password is set, the authenticator not yet confirmed.
#[derive(Serialize, Deserialize)]
struct Ceremony {
    enrollee: Enrollee,
    totp: PendingTotp,
    wrong_codes: u32,
}

impl Ceremony {
    fn new(enrollee: Enrollee, totp: PendingTotp) -> Self {
        Self {
            enrollee,
            totp,
            wrong_codes: 0,
        }
    }
}

/// Checks `code` (for an enrollment that may end with the app, else `WG-AUTH-013`); a right one
/// ends the ceremony and hands back the active factor and its step, a wrong one counts and the
/// last allowed one drops the ceremony.
///
/// The ceremony is taken out while the code is checked, so two racing requests cannot both end
/// it; it goes back unless it ended.
async fn confirm(
    open: &Ceremonies<Ceremony>,
    id: &str,
    code: &str,
    now: u64,
) -> Result<(Enrollee, ActiveTotp, u64), Refused> {
    let taken = open.take(id, now).await.map_err(store_failure)?;
    let mut held = taken.ok_or(Refusal::EnrollmentUnknown)?;
    let ceremony = &mut held.value;
    let refusal = if !ceremony.enrollee.methods.contains(&Factor::Totp) {
        Refusal::FactorNotRegistered
    } else {
        match ceremony.totp.activate(code, now) {
            Ok((active, step)) => return Ok((held.value.enrollee, active, step)),
            Err(_) => {
                ceremony.wrong_codes += 1;
                Refusal::TotpCodeWrong
            }
        }
    };
    if held.value.wrong_codes < MAX_WRONG_CODES {
        open.put_back(id, held).await.map_err(store_failure)?;
    }
    Err(refusal.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn enrollee(id: u8, name: &str) -> Enrollee {
        Enrollee {
            user: UserId::from_bytes([id; 16]),
            name: name.to_owned(),
            methods: MfaConfig::default().methods,
        }
    }

    fn pending() -> PendingTotp {
        PendingTotp::new(&TotpConfig::default(), "alice", &mut rand::rng()).unwrap()
    }

    /// An open ceremony for `enrollee` in a fresh memory store, and its id.
    async fn opened(enrollee: Enrollee, totp: PendingTotp) -> (Ceremonies<Ceremony>, String) {
        let store = Arc::new(crate::store::ephemeral::Memory::new());
        let ceremonies = Ceremonies::new(store, CEREMONIES);
        let ceremony = Ceremony::new(enrollee.clone(), totp);
        let opened = ceremonies.open(enrollee.user, &ceremony, NOW, &mut rand::rng());
        let id = opened.await.unwrap().unwrap();
        (ceremonies, id)
    }

    /// What `confirm` refused with, if it did.
    async fn refused(open: &Ceremonies<Ceremony>, id: &str, code: &str) -> Option<Refusal> {
        confirm(open, id, code, NOW)
            .await
            .err()
            .map(|r| r.refusal())
    }

    #[tokio::test]
    async fn the_app_cannot_end_an_enrollment_whose_roles_want_passkeys() {
        let totp = pending();
        let code = totp.code_at(NOW);
        let passkeys_only = Enrollee {
            methods: vec![Factor::WebAuthn, Factor::RecoveryCode],
            ..enrollee(1, "alice")
        };
        let (ceremonies, id) = opened(passkeys_only, totp).await;
        assert_eq!(
            refused(&ceremonies, &id, &code).await,
            Some(Refusal::FactorNotRegistered)
        );
        // Still open for the passkey.
        assert!(ceremonies.read(&id, NOW).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_right_code_ends_the_ceremony_once() {
        let totp = pending();
        let code = totp.code_at(NOW);
        let (ceremonies, id) = opened(enrollee(1, "alice"), totp).await;
        assert_eq!(id.len(), 64);
        let (enrollee, _, step) = confirm(&ceremonies, &id, &code, NOW).await.unwrap();
        assert_eq!(
            (enrollee.user, enrollee.name.as_str(), step),
            (UserId::from_bytes([1; 16]), "alice", NOW / 30)
        );
        assert_eq!(
            refused(&ceremonies, &id, &code).await,
            Some(Refusal::EnrollmentUnknown)
        );
    }

    #[tokio::test]
    async fn the_fifth_wrong_code_drops_the_ceremony() {
        let totp = pending();
        let code = totp.code_at(NOW);
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let (ceremonies, id) = opened(enrollee(1, "alice"), totp).await;
        for bad in ["12345", "abcdef", wrong, wrong, wrong] {
            assert_eq!(
                refused(&ceremonies, &id, bad).await,
                Some(Refusal::TotpCodeWrong),
                "{bad}"
            );
        }
        assert_eq!(
            refused(&ceremonies, &id, &code).await,
            Some(Refusal::EnrollmentUnknown)
        );
    }

    #[test]
    fn recovery_codes_are_random_base32_in_groups_and_hash_as_typed() {
        let codes = recovery_codes(&mut rand::rng());
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        for code in &codes {
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(groups.len(), 4, "{code}");
            assert!(groups.iter().all(|g| {
                g.len() == 4
                    && g.bytes()
                        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
            }));
        }
        let code = &codes[0];
        let typed = code.to_ascii_lowercase().replace('-', " ");
        assert_eq!(recovery_code_hash(code), recovery_code_hash(&typed));
        assert_eq!(recovery_code_hash(code).len(), 64);
        assert_ne!(recovery_code_hash(code), recovery_code_hash(&codes[1]));
    }

    #[tokio::test]
    async fn busy_hashing_answers_503_and_keeps_the_link() {
        use crate::auth::password::{HashParams, Hasher};
        use crate::identity::{EmbeddedStore, Keyring, MasterKey, User};

        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path(), Arc::new(keyring)).unwrap());
        let user = User::new(UserId::from_bytes([1; 16]), "alice", NOW);
        store.create_user(&user).unwrap();
        store
            .create_enrollment_token(user.id, b"token", NOW + 60)
            .unwrap();
        let pool = HashPool::new(
            Hasher::new(HashParams::OWASP_MINIMUM).unwrap(),
            std::num::NonZeroUsize::MIN,
            1,
            0,
        )
        .unwrap();
        let _release = pool.saturate();
        let enrollment = Enrollment::new(
            Stores::embedded(store.clone()),
            Arc::new(pool),
            Policy::default(),
            TotpConfig::default(),
            None,
            MfaConfig::default(),
            SecurityEvents::new(),
        );
        let Err(PasswordError::Refused(refused)) = enrollment
            .set_password("token", "Violet lanterns hum 7 quiet tunes!".into(), NOW)
            .await
        else {
            panic!("hashing was not busy");
        };
        let (refusal, headers) = refused.parts();
        assert_eq!(refusal, Refusal::HashingBusy);
        assert_eq!(refusal.code(), "WG-AUTH-003");
        assert_eq!(
            headers,
            [(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1")
            )]
        );
        assert_eq!(
            store.enrollment_token_user(b"token", NOW).unwrap(),
            Some(user.id)
        );
        let open = enrollment.prune(NOW + CEREMONY_TTL_SECS).await.unwrap();
        assert_eq!(open, 0, "no ceremony was opened");
    }
}
