//! Login: a password, then a second factor, then a session. And step-up, logout, and the
//! session's own description.
//!
//! **The threat.** Online guessing of passwords (one account, or many accounts from one address),
//! guessing of six-digit codes, user enumeration through different answers or timings, a
//! half-finished login finished by someone else, and a session that outlives a logout.
//!
//! **The rule.**
//!
//! ```text
//!  POST /.wardgate/api/login {user, password}
//!     │  address or account not admitted (locked, or enough attempts already in flight to
//!     │  lock it)? unknown user? disabled? no password yet? wrong?
//!     │    ── all alike: one argon2id verification (a dummy hash when there is no account),
//!     │       then 401 WG-AUTH-009; failures counted per account and per address (/64),
//!     │       each attempt from the moment it is admitted, before the hashing
//!     │  right password, no second factor enrolled ───────────── 403 WG-AUTH-012
//!     ▼  challenge: 256 random bits, 5 minutes, bound to the user, single use
//!  {challenge, factors: [totp, webauthn, recovery_code], expires_in}
//!     │
//!  POST /.wardgate/api/login/totp      {challenge, code}
//!  POST /.wardgate/api/login/recovery  {challenge, code}
//!  POST /.wardgate/api/login/webauthn/start   {challenge} -> {ceremony, options}
//!  POST /.wardgate/api/login/webauthn/finish  {challenge, ceremony, credential}
//!     │  unknown / expired challenge, one replaced by the user's newer ones (a user
//!     │  holds a few at most), or one dropped because the user's sessions were ended
//!     │  (logout everywhere, an operator, a reset) since the login began ── 401 WG-AUTH-010
//!     │  a factor the challenge did not offer, second-factor lock,
//!     │  wrong, malformed or replayed code, refused assertion ───── 401 WG-AUTH-011
//!     │    (5 wrong answers drop the challenge; failures counted per user)
//!     ▼  a NEW session token (never one the client brought; a live one it brought is ended)
//!  {token, token_type: Bearer, expires_in, session_expires_at}
//! ```
//!
//! Only the factors `auth.mfa` allows for the user's roles are offered and accepted.
//! `POST /.wardgate/api/step-up` (with a session) opens a challenge for the same user without a
//! password; finishing it rotates the token and refreshes the proof time, unless the session
//! was ended meanwhile (`WG-AUTH-010`).
//! `POST /.wardgate/api/passkeys/start` and `/passkeys/finish` (with a session whose second
//! factor is at most [`ADD_FACTOR_WITHIN_SECS`] old, else `WG-SESSION-004`) register one more
//! passkey or security key for the user: several per account, the ones already there excluded.
//! `POST /.wardgate/api/logout` ends this session, `/.wardgate/api/logout-all` every session of
//! the user; `GET /.wardgate/api/session` describes the session.
//!
//! Every outcome is a [`SecurityEvent`]. POST bodies must be `application/json`: a cross-site
//! form cannot send that without a CORS preflight, which the gateway never grants.
//!
//! **The standard.** NIST SP 800-63B-4 (3.1.1.2 password verification, rate limiting of
//! authentication attempts; 4.2/4.3 multi-factor at AAL2/AAL3; 5.1 session binding), OWASP
//! ASVS 5 V6.2/V6.3 (no enumeration, brute-force defence), RFC 6238 5.2, RFC 6750.

use std::net::IpAddr;
use std::sync::Arc;

use http::header;
use serde::{Deserialize, Serialize};

use crate::auth::enrollment::recovery_code_hash;
use crate::auth::events::{Factor, Locked, SecurityEvent, SecurityEvents};
use crate::auth::lockout::{LockEvent, LockoutPolicy, OnSuccess};
use crate::auth::mfa::MfaConfig;
use crate::auth::password::{HashPool, PoolError, Secret, Verification};
use crate::auth::shared::{
    self, busy, passkey_refusal, session_failure, store_failure, unavailable,
};
use crate::auth::totp::{ActiveTotp, TotpParams};
use crate::auth::webauthn::{Passkeys, WebAuthnError};
use crate::identity::{SessionKey, StoreError, User, UserId};
use crate::ratelimit::ClientKey;
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::session::{self, Ended, Epoch, Live, NewSession, SessionError, Sessions, Token};
use crate::store::Stores;
use crate::store::counters::Counters;
use crate::store::ephemeral::{Ceremonies, Held, Space};
use crate::store::lockouts::{Admitted, Lockouts};

/// How long a user has between the password and the second factor.
const CHALLENGE_TTL_SECS: u64 = 5 * 60;
/// Open challenges kept at most; one more is refused as busy.
const MAX_CHALLENGES: usize = 100_000;
const CHALLENGES: Space = Space {
    name: "login",
    ttl: CHALLENGE_TTL_SECS,
    capacity: MAX_CHALLENGES,
};
/// How recent the last second-factor proof must be to register another authenticator: a
/// session left open on a shared computer must not let someone add their own key.
pub const ADD_FACTOR_WITHIN_SECS: u64 = 10 * 60;
/// Wrong second factors a challenge survives; the next one drops it.
const MAX_WRONG_FACTORS: u32 = 5;

/// What the challenge leads to: plain data, so that a challenge can be kept in a shared store.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum Purpose {
    Login,
    /// Step-up of the session stored under `session`, opened at `created`: its token is
    /// replaced by one with the same absolute expiry.
    StepUp {
        session: SessionKey,
        created: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Challenge {
    user: UserId,
    name: String,
    purpose: Purpose,
    /// The factors offered: the only ones this challenge accepts.
    factors: Vec<Factor>,
    wrong: u32,
    /// When the login or step-up began: if the user's sessions end after it, it makes none.
    since: Epoch,
}

/// The first step passed: what the client may prove next.
#[derive(Debug)]
pub struct Started {
    pub challenge: String,
    pub factors: Vec<Factor>,
    pub expires_in: u64,
}

/// A proof of the second factor, as the client sent it.
pub enum Proof<'a> {
    Totp(&'a str),
    RecoveryCode(&'a str),
    /// The answer to the WebAuthn ceremony `ceremony` (a `PublicKeyCredential`, JSON).
    WebAuthn {
        ceremony: &'a str,
        credential: &'a [u8],
    },
}

impl Proof<'_> {
    fn factor(&self) -> Factor {
        match self {
            Proof::Totp(_) => Factor::Totp,
            Proof::RecoveryCode(_) => Factor::RecoveryCode,
            Proof::WebAuthn { .. } => Factor::WebAuthn,
        }
    }
}

/// A finished login or step-up.
pub struct Completed {
    pub token: Token,
    pub live: Arc<Live>,
    pub factor: Factor,
    /// After a recovery code: how many are left (the user should enroll again).
    pub recovery_codes_left: Option<usize>,
}

/// Where the request comes from, for lockouts, events and the session record, and the session
/// it already carries: a login ends it (OWASP ASVS 5 V7.2.4), whoever it belonged to.
pub struct Client {
    pub address: IpAddr,
    pub user_agent: String,
    presented: Option<String>,
}

impl Client {
    pub fn new(address: IpAddr, headers: &http::HeaderMap) -> Self {
        Self {
            address,
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            presented: session::presented(headers).map(|(_, token)| token.to_owned()),
        }
    }
}

/// The login state: built once at start.
pub struct Login {
    stores: Stores,
    pool: Arc<HashPool>,
    sessions: Arc<Sessions>,
    events: SecurityEvents,
    second: SecondFactors,
    lockouts: LoginLockouts,
    challenges: Ceremonies<Challenge>,
}

/// The lockouts of the login steps, each an independent counter (see `auth::lockout`, "How the
/// server uses it").
pub struct LoginLockouts {
    /// Password attempts per account; a success forgets the account's failures.
    pub accounts: Arc<dyn Lockouts<UserId>>,
    /// Password attempts per client address; a success keeps them.
    pub addresses: Arc<dyn Lockouts<ClientKey>>,
    /// Second-factor attempts per user; a success forgets them.
    pub factors: Arc<dyn Lockouts<UserId>>,
}

impl LoginLockouts {
    /// The three tables under `policy`, counted where `counters` says.
    pub fn new(counters: &Counters, policy: LockoutPolicy) -> Self {
        Self {
            accounts: counters.lockouts("account", policy, OnSuccess::Forget),
            addresses: counters.lockouts("address", policy, OnSuccess::Keep),
            factors: counters.lockouts("factor", policy, OnSuccess::Forget),
        }
    }
}

/// How second factors are checked: the app's parameters, the WebAuthn relying party (`None`
/// when `auth.webauthn` is not configured) and which factors each account may use.
pub struct SecondFactors {
    /// `auth.totp` as configured now: only for seeds stored without their own parameters.
    pub totp: TotpParams,
    pub passkeys: Option<Arc<Passkeys>>,
    pub mfa: MfaConfig,
}

impl Login {
    pub fn new(
        stores: Stores,
        pool: Arc<HashPool>,
        sessions: Arc<Sessions>,
        events: SecurityEvents,
        second: SecondFactors,
        lockouts: LoginLockouts,
    ) -> Self {
        let challenges = Ceremonies::new(stores.ephemeral.clone(), CHALLENGES);
        Self {
            stores,
            pool,
            sessions,
            events,
            second,
            lockouts,
            challenges,
        }
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Forgets lockout entries and challenges that have nothing left to say; returns how many
    /// of each.
    pub async fn prune(&self, now: u64) -> Result<(usize, usize), StoreError> {
        let LoginLockouts {
            accounts,
            addresses,
            factors,
        } = &self.lockouts;
        let lockouts =
            accounts.prune(now).await? + addresses.prune(now).await? + factors.prune(now).await?;
        Ok((lockouts, self.challenges.prune(now).await?))
    }

    /// The password step. Every failure is the same [`Refusal::LoginFailed`] after the same
    /// amount of hashing work. The attempt is admitted by the address and the account lockouts
    /// before the work and counts against both while it runs (see [`crate::auth::lockout`]).
    pub async fn password(
        &self,
        name: &str,
        typed: String,
        client: &Client,
        now: u64,
    ) -> Result<Started, Refused> {
        let since = self.sessions.epoch();
        let address = ClientKey::from(client.address);
        let user = match self.stores.accounts.user_by_name(name).await {
            Ok(user) => Some(user),
            Err(StoreError::NotFound(_)) => None,
            Err(other) => return Err(store_failure(other)),
        };
        let rehash = Secret::new(typed.clone());
        let password = Secret::new(typed);
        // An address that is not admitted admits nothing on any account either.
        let lockouts = &self.lockouts;
        let by_address = lockouts.addresses.admit(&address, now).await;
        let by_address = by_address.map_err(store_failure)?.ok();
        let by_account = match (&user, &by_address) {
            (Some(user), Some(_)) => {
                let admitted = lockouts.accounts.admit(&user.id, now).await;
                admitted.map_err(store_failure)?.ok()
            }
            _ => None,
        };
        let usable = user
            .as_ref()
            .filter(|user| !user.disabled && by_account.is_some());
        let verification = match usable.and_then(|u| u.password_hash.clone()) {
            Some(phc) => self.pool.verify(password, phc).await,
            None => self.pool.dummy_verify(password).await,
        }
        .map_err(pool_refusal)?;
        let accepted = usable.filter(|_| verification != Verification::Invalid);
        let user = match (accepted, by_address, by_account) {
            (Some(accepted), Some(by_address), Some(by_account)) => {
                by_address.succeeded().await.map_err(store_failure)?;
                by_account.succeeded().await.map_err(store_failure)?;
                accepted
            }
            (_, by_address, by_account) => {
                self.password_failed(user.as_ref(), client.address, by_address, by_account, now)
                    .await?;
                return Err(Refusal::LoginFailed.into());
            }
        };
        if verification == Verification::ValidNeedsRehash {
            self.rehash(user, rehash).await;
        }
        let factors = self.factors_of(user).await?;
        if user.mfa_required_enrollment || factors.is_empty() {
            return Err(Refusal::EnrollmentRequired.into());
        }
        self.open_challenge(user, Purpose::Login, factors, since, now)
            .await
    }

    /// Counts a failed password on the lockouts that admitted it (an attempt they refused was
    /// not verified and teaches nothing) and reports it.
    async fn password_failed(
        &self,
        known: Option<&User>,
        client: IpAddr,
        by_address: Option<Box<dyn Admitted<ClientKey>>>,
        by_account: Option<Box<dyn Admitted<UserId>>>,
        now: u64,
    ) -> Result<(), Refused> {
        self.events
            .emit(SecurityEvent::LoginFailed {
                user: known.map(|u| u.name.clone()),
                client,
                stage: "password",
            })
            .await;
        if let Some(lock) = failed(by_address, now).await? {
            self.report_lock(Locked::Address(client), &lock).await;
        }
        if let (Some(user), Some(lock)) = (known, failed(by_account, now).await?) {
            self.report_lock(Locked::Account(user.name.clone()), &lock)
                .await;
        }
        Ok(())
    }

    async fn report_lock<K>(&self, what: Locked, lock: &LockEvent<K>) {
        self.events
            .emit(SecurityEvent::LockedOut {
                what,
                until: lock.until,
            })
            .await;
    }

    /// Stores a hash under the current parameters; a failure only leaves the old hash.
    async fn rehash(&self, user: &User, password: Secret) {
        let Ok(phc) = self.pool.hash(password).await else {
            return;
        };
        let stored = self
            .stores
            .accounts
            .set_password_hash(user.id, Some(phc))
            .await;
        if let Err(error) = stored {
            tracing::warn!(%error, "the re-hashed password was not stored; the old hash still verifies");
        }
    }

    /// The factors `user` has enrolled and may use (`auth.mfa`); empty when none of them is a
    /// real second factor (recovery codes alone are not).
    async fn factors_of(&self, user: &User) -> Result<Vec<Factor>, Refused> {
        let id = user.id;
        let webauthn = self.second.passkeys.is_some();
        let allowed = self.second.mfa.allowed(&user.roles);
        let credentials = &self.stores.credentials;
        let mut factors = Vec::new();
        if credentials.totp(id).await.map_err(store_failure)?.is_some() {
            factors.push(Factor::Totp);
        }
        if webauthn
            && !credentials
                .webauthn_credentials(id)
                .await
                .map_err(store_failure)?
                .is_empty()
        {
            factors.push(Factor::WebAuthn);
        }
        let codes = credentials.recovery_codes(id).await;
        if codes.map_err(store_failure)?.iter().any(|c| !c.used) {
            factors.push(Factor::RecoveryCode);
        }
        factors.retain(|f| allowed.contains(f));
        if factors.iter().all(|f| *f == Factor::RecoveryCode) {
            factors.clear();
        }
        Ok(factors)
    }

    /// Opens a challenge; the user's oldest goes when they hold too many already.
    async fn open_challenge(
        &self,
        user: &User,
        purpose: Purpose,
        factors: Vec<Factor>,
        since: Epoch,
        now: u64,
    ) -> Result<Started, Refused> {
        let challenge = Challenge {
            user: user.id,
            name: user.name.clone(),
            purpose,
            factors: factors.clone(),
            wrong: 0,
            since,
        };
        let opened = self
            .challenges
            .open(user.id, &challenge, now, &mut rand::rng());
        let id = opened.await.map_err(store_failure)?.ok_or_else(busy)?;
        Ok(Started {
            challenge: id,
            factors,
            expires_in: CHALLENGE_TTL_SECS,
        })
    }

    /// The factors an open challenge still accepts: `None` once it has expired or was dropped.
    pub async fn open_factors(
        &self,
        challenge_id: &str,
        now: u64,
    ) -> Result<Option<Vec<Factor>>, Refused> {
        let open = self.challenges.read(challenge_id, now).await;
        Ok(open.map_err(store_failure)?.map(|(_, c)| c.factors))
    }

    /// Step-up for a live session: a challenge without a password.
    pub async fn step_up(&self, live: Arc<Live>, now: u64) -> Result<Started, Refused> {
        let since = self.sessions.epoch();
        let user = self.user(live.user).await?;
        let factors: Vec<Factor> = self
            .factors_of(&user)
            .await?
            .into_iter()
            .filter(|f| *f != Factor::RecoveryCode)
            .collect();
        if factors.is_empty() {
            return Err(Refusal::EnrollmentRequired.into());
        }
        let purpose = Purpose::StepUp {
            session: live.key,
            created: live.created,
        };
        self.open_challenge(&user, purpose, factors, since, now)
            .await
    }

    async fn user(&self, id: UserId) -> Result<User, Refused> {
        self.stores.accounts.user(id).await.map_err(store_failure)
    }

    /// The second step. The challenge is taken out while the proof is checked, so two racing
    /// requests cannot both finish it; a wrong proof puts it back until it has failed too often.
    pub async fn second_factor(
        &self,
        challenge_id: &str,
        proof: Proof<'_>,
        client: &Client,
        now: u64,
    ) -> Result<Completed, Refused> {
        let taken = self.challenges.take(challenge_id, now).await;
        let held = taken
            .map_err(store_failure)?
            .ok_or(Refusal::LoginChallengeInvalid)?;
        if !held.value.factors.contains(&proof.factor()) {
            let back = self.challenges.put_back(challenge_id, held).await;
            back.map_err(store_failure)?;
            return Err(Refusal::SecondFactorWrong.into());
        }
        let user = held.value.user;
        let admitted = self.lockouts.factors.admit(&user, now).await;
        let attempt = admitted.map_err(store_failure)?.ok();
        let verified = match attempt {
            Some(_) => self.verify(user, &proof, now).await?,
            None => None,
        };
        let (factor, recovery_codes_left) = match (verified, attempt) {
            (Some(verified), Some(attempt)) => {
                attempt.succeeded().await.map_err(store_failure)?;
                verified
            }
            (_, attempt) => {
                self.second_factor_failed(challenge_id, held, client.address, attempt, now)
                    .await?;
                return Err(Refusal::SecondFactorWrong.into());
            }
        };
        self.finish(held.value, factor, recovery_codes_left, client, now)
            .await
    }

    /// Checks the proof: `Some((factor, codes left after a recovery code))` when it holds.
    async fn verify(
        &self,
        user: UserId,
        proof: &Proof<'_>,
        now: u64,
    ) -> Result<Option<(Factor, Option<usize>)>, Refused> {
        match *proof {
            Proof::Totp(code) => {
                let credentials = &self.stores.credentials;
                let Some(stored) = credentials.totp(user).await.map_err(store_failure)? else {
                    return Ok(None);
                };
                // The enrollment's own parameters; a seed stored before they were kept was
                // enrolled under the config of its time, taken to be today's.
                let params = stored.params.unwrap_or(self.second.totp);
                let Ok(totp) = ActiveTotp::restore(params, &stored.seed) else {
                    return Ok(None);
                };
                let Ok(step) = totp.verify(code, stored.last_used_step, now) else {
                    return Ok(None);
                };
                // Atomic: of two requests with the same code, one wins.
                let advanced = credentials.advance_totp_step(user, step).await;
                Ok(advanced
                    .map_err(store_failure)?
                    .then_some((Factor::Totp, None)))
            }
            Proof::RecoveryCode(code) => {
                let credentials = &self.stores.credentials;
                match credentials
                    .use_recovery_code(user, recovery_code_hash(code))
                    .await
                {
                    Ok(true) => {
                        let codes = credentials.recovery_codes(user).await;
                        let left = codes.map_err(store_failure)?;
                        let left = left.iter().filter(|c| !c.used).count();
                        Ok(Some((Factor::RecoveryCode, Some(left))))
                    }
                    Ok(false) | Err(StoreError::NotFound(_)) => Ok(None),
                    Err(other) => Err(store_failure(other)),
                }
            }
            Proof::WebAuthn {
                ceremony,
                credential,
            } => {
                let Some(passkeys) = self.second.passkeys.clone() else {
                    return Ok(None);
                };
                let credentials = &self.stores.credentials;
                let stored = credentials.webauthn_credentials(user).await;
                let stored = stored.map_err(store_failure)?;
                let verified = passkeys
                    .finish_authentication(ceremony, user, credential, &stored, now)
                    .await;
                let (id, used) = match verified {
                    Ok(verified) => verified,
                    Err(WebAuthnError::Internal(detail)) => {
                        return Err(store_failure(StoreError::Corrupt(detail)));
                    }
                    Err(refused) => {
                        tracing::info!(target: "wardgate::security", reason = %refused, "WebAuthn assertion refused");
                        return Ok(None);
                    }
                };
                // Atomic: of two racing uses of one signature, one wins.
                let recorded = credentials.record_webauthn_use(user, id, used, now).await;
                Ok(recorded
                    .map_err(store_failure)?
                    .then_some((Factor::WebAuthn, None)))
            }
        }
    }

    /// Opens the WebAuthn ceremony of a login (or step-up) challenge that offers WebAuthn:
    /// the ceremony id and the options for `navigator.credentials.get()`.
    pub async fn webauthn_options(
        &self,
        challenge_id: &str,
        now: u64,
    ) -> Result<(String, serde_json::Value), Refused> {
        let open = self.challenges.read(challenge_id, now).await;
        let user = open
            .map_err(store_failure)?
            .filter(|(_, c)| c.factors.contains(&Factor::WebAuthn))
            .map(|(user, _)| user)
            .ok_or(Refusal::LoginChallengeInvalid)?;
        let passkeys = self
            .second
            .passkeys
            .clone()
            .ok_or(Refusal::LoginChallengeInvalid)?;
        let credentials = self.stores.credentials.webauthn_credentials(user).await;
        let credentials = credentials.map_err(store_failure)?;
        passkeys
            .start_authentication(user, &credentials, now)
            .await
            .map_err(|error| match error {
                WebAuthnError::Busy => busy(),
                other => unavailable(&other),
            })
    }

    /// Counts a refused proof (unless the second-factor lockout refused to verify it) and drops
    /// the challenge after too many.
    async fn second_factor_failed(
        &self,
        id: &str,
        mut held: Held<Challenge>,
        client: IpAddr,
        attempt: Option<Box<dyn Admitted<UserId>>>,
        now: u64,
    ) -> Result<(), Refused> {
        let challenge = &mut held.value;
        self.events
            .emit(SecurityEvent::LoginFailed {
                user: Some(challenge.name.clone()),
                client,
                stage: "second_factor",
            })
            .await;
        if let Some(lock) = failed(attempt, now).await? {
            self.report_lock(Locked::SecondFactor(challenge.name.clone()), &lock)
                .await;
        }
        challenge.wrong += 1;
        if challenge.wrong < MAX_WRONG_FACTORS {
            let back = self.challenges.put_back(id, held).await;
            back.map_err(store_failure)?;
        }
        Ok(())
    }

    async fn finish(
        &self,
        challenge: Challenge,
        factor: Factor,
        recovery_codes_left: Option<usize>,
        client: &Client,
        now: u64,
    ) -> Result<Completed, Refused> {
        let user = self.user(challenge.user).await?;
        if user.disabled {
            return Err(Refusal::LoginFailed.into());
        }
        if let (Purpose::Login, Some(old)) = (&challenge.purpose, &client.presented) {
            self.end_presented(old, now).await?;
        }
        let new = NewSession {
            user: &user,
            client: client.address,
            user_agent: &client.user_agent,
        };
        let since = challenge.since;
        let created = match challenge.purpose {
            Purpose::Login => self.sessions.create(new, since, now).await,
            Purpose::StepUp { session, created } => {
                self.sessions
                    .rotate(session, created, new, since, now)
                    .await
            }
        };
        let (token, live) = created.map_err(|error| match error {
            // Ended while the second factor was checked: as if the challenge had been dropped.
            SessionError::Revoked => Refused::from(Refusal::LoginChallengeInvalid),
            other => session_failure(other),
        })?;
        self.events
            .emit(match challenge.purpose {
                Purpose::Login => SecurityEvent::LoginSucceeded {
                    user: user.name.clone(),
                    factor,
                    client: client.address,
                },
                Purpose::StepUp { .. } => SecurityEvent::StepUp {
                    user: user.name.clone(),
                    factor,
                },
            })
            .await;
        if let Some(left) = recovery_codes_left {
            self.events
                .emit(SecurityEvent::RecoveryCodeUsed {
                    user: user.name,
                    client: client.address,
                    left,
                })
                .await;
        }
        Ok(Completed {
            token,
            live,
            factor,
            recovery_codes_left,
        })
    }

    /// Ends the session of `token` when it is live; anything else needs no ending.
    async fn end_presented(&self, token: &str, now: u64) -> Result<(), Refused> {
        let lifetimes = self.sessions.lifetimes();
        if let Ok(Ok(live)) = self.sessions.check(token, &lifetimes, now).await {
            let ended = self.sessions.end(live.key).await.map_err(session_failure)?;
            self.events
                .emit(SecurityEvent::SessionsEnded {
                    user: live.name.clone(),
                    reason: "new_login",
                    count: usize::from(ended),
                })
                .await;
        }
        Ok(())
    }

    /// The live session the request carries (cookie or bearer), under the global caps.
    pub async fn current(&self, headers: &http::HeaderMap, now: u64) -> Result<Arc<Live>, Refused> {
        let Some((_, token)) = session::presented(headers) else {
            return Err(Refusal::SessionMissing.into());
        };
        let lifetimes = self.sessions.lifetimes();
        match self.sessions.check(token, &lifetimes, now).await {
            Ok(Ok(live)) => Ok(live),
            Ok(Err(ended)) => Err(ended_refusal(ended).into()),
            Err(error) => Err(session_failure(error)),
        }
    }

    /// Whether `live` may register another passkey now: passkeys configured and allowed for the
    /// user's roles (else `WG-AUTH-013`), and a second factor proven recently (else
    /// `WG-SESSION-004`: step up first).
    pub fn may_add_passkey(&self, live: &Live, now: u64) -> Result<Arc<Passkeys>, Refusal> {
        let passkeys = self
            .second
            .passkeys
            .clone()
            .filter(|_| {
                self.second
                    .mfa
                    .allowed(&live.roles)
                    .contains(&Factor::WebAuthn)
            })
            .ok_or(Refusal::FactorNotRegistered)?;
        if now.saturating_sub(live.auth_time) > ADD_FACTOR_WITHIN_SECS {
            return Err(Refusal::StepUpRequired);
        }
        Ok(passkeys)
    }

    /// Opens the registration of another passkey for the session's user: the ceremony id and
    /// the options for `navigator.credentials.create()`.
    pub async fn passkey_options(
        &self,
        live: &Live,
        now: u64,
    ) -> Result<(String, serde_json::Value), Refused> {
        let passkeys = self.may_add_passkey(live, now)?;
        shared::passkey_registration(&self.stores, &passkeys, live.user, now).await
    }

    /// Stores the passkey the browser created; returns how many the user has now.
    pub async fn add_passkey(
        &self,
        live: &Live,
        ceremony: &str,
        credential: &[u8],
        now: u64,
    ) -> Result<usize, Refused> {
        let passkeys = self.may_add_passkey(live, now)?;
        let credential = passkeys
            .finish_registration(ceremony, live.user, credential, now)
            .await
            .map_err(passkey_refusal)?;
        let credentials = &self.stores.credentials;
        let added = credentials.add_webauthn(live.user, credential).await;
        added.map_err(store_failure)?;
        let all = credentials.webauthn_credentials(live.user).await;
        let count = all.map_err(store_failure)?.len();
        self.events
            .emit(SecurityEvent::FactorAdded {
                user: live.name.clone(),
                factor: Factor::WebAuthn,
            })
            .await;
        Ok(count)
    }

    /// Ends this session, or every session of its user.
    pub async fn logout(&self, live: &Live, everywhere: bool) -> Result<usize, Refused> {
        let count = if everywhere {
            self.sessions.end_user(live.user).await
        } else {
            self.sessions.end(live.key).await.map(usize::from)
        }
        .map_err(session_failure)?;
        self.events
            .emit(SecurityEvent::SessionsEnded {
                user: live.name.clone(),
                reason: if everywhere { "logout_all" } else { "logout" },
                count,
            })
            .await;
        Ok(count)
    }
}

/// Counts a failure on the lockout that admitted the attempt, if one did; the lock it starts.
async fn failed<K>(
    attempt: Option<Box<dyn Admitted<K>>>,
    now: u64,
) -> Result<Option<LockEvent<K>>, Refused> {
    match attempt {
        Some(attempt) => attempt.failed(now).await.map_err(store_failure),
        None => Ok(None),
    }
}

fn pool_refusal(error: PoolError) -> Refused {
    match error {
        PoolError::Busy => busy(),
        other => unavailable(&other),
    }
}

/// The refusal that says which cap ended a session.
pub fn ended_refusal(ended: Ended) -> Refusal {
    match ended {
        Ended::Missing => Refusal::SessionMissing,
        Ended::Idle => Refusal::SessionIdle,
        Ended::Absolute => Refusal::SessionAbsolute,
        Ended::StepUp => Refusal::StepUpRequired,
    }
}
