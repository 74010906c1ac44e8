//! Sessions: the only thing that lets a request through after login.
//!
//! **The threat.** A session token that can be guessed, forged, read from a copy of the store,
//! fixed by an attacker before login, stretched forever by activity, or that survives a logout,
//! a disabled account or a stolen phone reported to the help desk.
//!
//! **The rule.**
//!
//! - A token is 256 bits from the operating system's CSPRNG, written `wgs_` + 64 hex digits; it
//!   carries no data. The store keeps only its keyed BLAKE2b hash ([`SessionKey`]), so a copy of
//!   the store yields no usable session; the hash lookup is the comparison, and the cache is keyed
//!   by the same hash.
//! - Browsers carry it in the `__Host-wardgate-session` cookie (`Secure; HttpOnly;
//!   SameSite=Strict; Path=/`, no `Domain`, no `Expires`: it dies with the browser), API clients
//!   in `Authorization: Bearer`. Both are removed before a request goes upstream.
//! - Every check takes `now` and enforces, in this order:
//!
//! ```text
//!   token ── malformed / unknown / revoked ────────────────────────► Missing   WG-SESSION-001
//!     │  now >= created + absolute_timeout (activity never extends) ► Absolute  WG-SESSION-003
//!     │  now >= last_seen + idle_timeout ─────────────────────────► Idle      WG-SESSION-002
//!     │  route's reauth_within < now - auth_time ────────────────► StepUp    WG-SESSION-004
//!     ▼
//!   live: last_seen = now (written back to the store at most once a minute)
//! ```
//!
//!   A global cap that fails ends the session for good; a route's stricter cap (or its
//!   `reauth_within`) only refuses that route.
//! - A new token at every login and step-up ([`Sessions::rotate`] ends the old one at once); a
//!   token presented before login is never promoted, because login always mints a new one.
//! - Logout, logout everywhere, operator revocation, a disabled account, a password reset and an
//!   MFA reset delete the sessions from the store and the cache at once. A revocation counter
//!   keeps a store read that raced with a revocation from putting the session back in the cache.
//! - Ending all of a user's sessions also ends what is on its way to becoming one: the user's
//!   open login challenges, enrollments and WebAuthn ceremonies are dropped from the ephemeral
//!   store ([`Sessions::end_pending`]), and a login or step-up that was already past them (its second
//!   factor being verified) is refused when it would create its session: it carries the
//!   [`Epoch`] in which it began, and [`Sessions::create`] refuses it once the user's sessions
//!   were ended after that epoch. A step-up also refuses when the session it replaces is gone.
//!
//! **Storage.** Sessions live in the identity store (sealed), so they survive a restart; a
//! `moka` cache in front answers the per-request check without touching the disk. `last_seen`
//! may be up to [`TOUCH_INTERVAL`] old in the store after a restart: the session then looks
//! idle for longer than it was, which errs on the side of ending it.
//!
//! **The standard.** NIST SP 800-63B-4 section 5 (session management: reauthentication after
//! idle time and at a fixed overall limit, 12 hours at most at AAL2/AAL3), OWASP ASVS 5 V7
//! (session management) and the OWASP Session Management Cheat Sheet, RFC 6265bis (`__Host-`
//! prefix), RFC 6750 (bearer tokens).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use moka::sync::Cache;
use rand::rngs::OsRng;
use rand::{RngCore, TryRngCore};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use zeroize::Zeroizing;

use crate::identity::seal::hex_encode_into;
use crate::identity::{Keyring, SessionKey, SessionRecord, StoreError, User, UserId};
use crate::store::Stores;
use crate::store::accounts::Accounts;
use crate::store::ephemeral::Ephemeral;
use crate::store::sessions::SessionStore;
use crate::store::sessions::{Published, Revocation};
use crate::units::HumanDuration;

/// The browser carrier. `__Host-`: only set over HTTPS, for this host, on `/`.
pub const COOKIE: &str = "__Host-wardgate-session";
/// Every token starts with this, so that the gateway recognises (and strips) its own tokens.
pub const TOKEN_PREFIX: &str = "wgs_";
const TOKEN_BYTES: usize = 32;
/// How stale `last_seen` may be in the store; the cache holds the exact value.
pub const TOUCH_INTERVAL: u64 = 60;
/// NIST SP 800-63B-4: reauthentication at least every 12 hours at AAL2 and AAL3.
pub const MAX_ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// A user agent is kept for operators to recognise a device, not in full.
const USER_AGENT_CHARS: usize = 200;

/// The `session:` section of the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Ends a session after this long without a request.
    pub idle_timeout: HumanDuration,
    /// Ends every session this long after login, however active.
    pub absolute_timeout: HumanDuration,
    /// Allows `absolute_timeout` above 12 hours (NIST's bound); warned about at start.
    pub allow_long_sessions: bool,
    /// Sessions kept in memory; more are read from the store when used.
    pub cache_capacity: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: HumanDuration(Duration::from_secs(15 * 60)),
            absolute_timeout: HumanDuration(Duration::from_secs(3600)),
            allow_long_sessions: false,
            cache_capacity: 100_000,
        }
    }
}

impl SessionConfig {
    /// Refuses what is unsafe; returns warnings for what is allowed but weak.
    pub fn check(&self) -> Result<Vec<String>, String> {
        let (idle, absolute) = (self.idle_timeout.0, self.absolute_timeout.0);
        if idle.as_secs() == 0 || absolute.as_secs() == 0 {
            return Err("session lifetimes must be at least one second".into());
        }
        let mut warnings = Vec::new();
        if absolute > MAX_ABSOLUTE {
            if !self.allow_long_sessions {
                return Err(format!(
                    "absolute_timeout {}s is above 12h, the NIST SP 800-63B-4 bound; set `allow_long_sessions: true` to accept it anyway",
                    absolute.as_secs()
                ));
            }
            warnings.push(format!(
                "session.absolute_timeout is {}s, above the 12h NIST SP 800-63B-4 bound (allow_long_sessions)",
                absolute.as_secs()
            ));
        }
        if idle > absolute {
            warnings.push(
                "session.idle_timeout is longer than absolute_timeout: the idle timeout never applies"
                    .into(),
            );
        }
        Ok(warnings)
    }

    pub fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            idle: self.idle_timeout.0.as_secs(),
            absolute: self.absolute_timeout.0.as_secs(),
            reauth_within: None,
        }
    }
}

/// The caps that apply to one request, in seconds: the global ones, or a route's stricter ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub idle: u64,
    pub absolute: u64,
    /// The last second-factor proof must be younger than this (step-up).
    pub reauth_within: Option<u64>,
}

impl Lifetimes {
    /// These caps tightened by a route's own settings (a route can only shorten them).
    pub fn narrowed(
        self,
        idle: Option<Duration>,
        absolute: Option<Duration>,
        reauth_within: Option<Duration>,
    ) -> Self {
        Self {
            idle: idle.map_or(self.idle, |d| d.as_secs().min(self.idle)),
            absolute: absolute.map_or(self.absolute, |d| d.as_secs().min(self.absolute)),
            reauth_within: reauth_within.map(|d| d.as_secs()),
        }
    }
}

/// Why a request has no live session. Each has a stable code; the client learns which cap
/// ended its session so that an app can say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// No token, a malformed one, or one the store does not know (forged, revoked, logged out).
    Missing,
    Idle,
    Absolute,
    /// Live, but the route wants a fresher second-factor proof.
    StepUp,
}

impl Ended {
    /// The `reason` query value of a login redirect and the JSON `reason` field.
    pub fn reason(self) -> &'static str {
        match self {
            Ended::Missing => "login",
            Ended::Idle => "idle",
            Ended::Absolute => "absolute",
            Ended::StepUp => "step-up",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Not an error of the gateway's: the user's sessions were ended (or the session a step-up
    /// replaces was) while the login was under way, so it creates none.
    #[error("the user's sessions were ended while this login was under way")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// A fresh session token. Zeroized on drop; `Debug` does not print it.
pub struct Token(Zeroizing<String>);

impl Token {
    fn generate() -> Result<Self, SessionError> {
        let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
        OsRng
            .try_fill_bytes(bytes.as_mut())
            .map_err(|e| SessionError::Random(e.to_string()))?;
        let mut text = Zeroizing::new(String::with_capacity(TOKEN_PREFIX.len() + 2 * TOKEN_BYTES));
        text.push_str(TOKEN_PREFIX);
        hex_encode_into(bytes.as_ref(), &mut text);
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `Set-Cookie` value that hands this token to a browser.
    pub fn cookie(&self) -> HeaderValue {
        let value = format!(
            "{COOKIE}={}; Secure; HttpOnly; SameSite=Strict; Path=/",
            self.as_str()
        );
        // A prefix and hex digits: always a valid header value.
        HeaderValue::from_str(&value).unwrap_or_else(|_| clear_cookie())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The `Set-Cookie` value that removes the session cookie from a browser.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-wardgate-session=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
    )
}

/// Whether `text` has the shape of a token: checked before any hashing or lookup, so garbage
/// costs nothing and never reaches the store.
fn well_formed(text: &str) -> bool {
    text.len() == TOKEN_PREFIX.len() + 2 * TOKEN_BYTES
        && text.starts_with(TOKEN_PREFIX)
        && text[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How the client presented its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    Cookie,
    Bearer,
}

/// The session token the request presents, if any: `Authorization: Bearer` first, then the
/// session cookie. The value is returned as sent; [`Sessions::check`] judges it.
pub fn presented(headers: &HeaderMap) -> Option<(Carrier, &str)> {
    for value in headers.get_all(header::AUTHORIZATION) {
        if let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            return Some((Carrier::Bearer, token.trim()));
        }
    }
    cookie_value(headers, COOKIE).map(|token| (Carrier::Cookie, token))
}

/// The value of the cookie `name` in the request's `Cookie` headers; `None` when absent or
/// sent more than once (an ambiguous credential is no credential).
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    // HTTP/2 may split cookies over several headers (RFC 9113 8.2.3).
    let pairs = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='));
    for (key, value) in pairs {
        if key == name {
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    found
}

/// On every response to an authenticated request: seconds until the session ends (the earlier
/// of its idle and absolute expiry under the route's caps), so apps can warn before it does.
pub const EXPIRES_IN: HeaderName = HeaderName::from_static("wardgate-session-expires-in");

/// Removes the gateway's own credentials from a request about to go upstream: its session
/// cookie (other cookies stay) and an `Authorization: Bearer` carrying one of its tokens.
pub fn strip_credentials(headers: &mut HeaderMap) {
    let bearer_is_ours = headers.get_all(header::AUTHORIZATION).iter().any(|value| {
        value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|token| token.trim().starts_with(TOKEN_PREFIX))
    });
    if bearer_is_ours {
        headers.remove(header::AUTHORIZATION);
    }
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty()
                && pair
                    .split_once('=')
                    .is_none_or(|(key, _)| !key.starts_with("__Host-wardgate-"))
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// A live session, as the request path sees it.
#[derive(Debug)]
pub struct Live {
    pub key: SessionKey,
    pub user: UserId,
    pub name: String,
    pub roles: Vec<String>,
    pub created: u64,
    pub auth_time: u64,
    last_seen: AtomicU64,
    /// The `last_seen` the store holds.
    persisted: AtomicU64,
}

impl Live {
    fn new(key: SessionKey, record: &SessionRecord, user: &User) -> Self {
        Self {
            key,
            user: record.user,
            name: user.name.clone(),
            roles: user.roles.clone(),
            created: record.created,
            auth_time: record.auth_time,
            last_seen: AtomicU64::new(record.last_seen),
            persisted: AtomicU64::new(record.last_seen),
        }
    }

    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Seconds until the earlier of the idle and the absolute expiry, counted from `now`.
    pub fn remaining(&self, lifetimes: &Lifetimes, now: u64) -> u64 {
        let idle_end = self.last_seen().saturating_add(lifetimes.idle);
        let absolute_end = self.created.saturating_add(lifetimes.absolute);
        idle_end.min(absolute_end).saturating_sub(now)
    }

    /// Which cap, if any, this session breaks at `now` under `lifetimes`.
    fn judge(&self, lifetimes: &Lifetimes, now: u64) -> Option<Ended> {
        if now >= self.created.saturating_add(lifetimes.absolute) {
            Some(Ended::Absolute)
        } else if now >= self.last_seen().saturating_add(lifetimes.idle) {
            Some(Ended::Idle)
        } else {
            None
        }
    }
}

/// What a session is created for: who, from where, and the proof's time.
pub struct NewSession<'a> {
    pub user: &'a User,
    pub client: IpAddr,
    pub user_agent: &'a str,
}

/// One row of an operator's session list: never a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: SessionKey,
    pub record: SessionRecord,
}

/// A point in the sequence of revocations, taken when a login or step-up begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct Epoch(u64);

/// Live sessions: the store, a cache in front of it and the global lifetimes.
pub struct Sessions {
    /// The session records (`store/sessions.rs`).
    records: Arc<dyn SessionStore>,
    /// The accounts, for the user of a session read from the store.
    accounts: Arc<dyn Accounts>,
    keyring: Arc<Keyring>,
    cache: Cache<[u8; 32], Arc<Live>>,
    lifetimes: Lifetimes,
    /// Bumped by every revocation: a store read that started before it must not fill the cache.
    revocations: AtomicU64,
    /// Per user, the epoch of the last time all their sessions were ended. One small entry per
    /// account whose sessions were ever ended: bounded by the accounts operators create.
    ended: Mutex<HashMap<UserId, Epoch>>,
    /// Where the user's half-finished logins and ceremonies are kept.
    ephemeral: Arc<dyn Ephemeral>,
    /// This instance's id on the revocation feed.
    origin: u64,
    /// The revocation feed, subscribed at construction (so that nothing published after it is
    /// missed) and taken by [`Sessions::follow_revocations`].
    feed: Mutex<Option<broadcast::Receiver<Published>>>,
}

/// A poisoned lock is still good: every update under these locks is a single insert or call.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sessions {
    pub fn new(stores: &Stores, keyring: Arc<Keyring>, config: &SessionConfig) -> Self {
        let lifetimes = config.lifetimes();
        Self {
            records: stores.sessions.clone(),
            accounts: stores.accounts.clone(),
            keyring,
            cache: Cache::builder()
                .max_capacity(config.cache_capacity)
                // Only memory management: expiry is decided by `Live::judge` with `now`.
                .time_to_idle(Duration::from_secs(lifetimes.idle))
                .build(),
            lifetimes,
            revocations: AtomicU64::new(0),
            ended: Mutex::new(HashMap::new()),
            ephemeral: stores.ephemeral.clone(),
            origin: rand::rng().next_u64(),
            feed: Mutex::new(Some(stores.sessions.subscribe())),
        }
    }

    /// Applies what the other replicas publish to this one's cache, until the feed closes: run
    /// for the gateway's lifetime (the server spawns it beside the listeners). What this
    /// instance publishes it has applied already.
    pub async fn follow_revocations(&self) {
        let Some(mut feed) = lock(&self.feed).take() else {
            return;
        };
        loop {
            match feed.recv().await {
                Ok(published) if published.origin == self.origin => {}
                Ok(published) => self.apply(published.revocation),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "the session revocation feed fell behind: every cached session is read from the store again"
                    );
                    self.revocations.fetch_add(1, Ordering::SeqCst);
                    self.cache.invalidate_all();
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Drops what `revocation` made stale from the cache.
    fn apply(&self, revocation: Revocation) {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        match revocation {
            Revocation::Session(key) => self.forget(|live| live.key == key),
            Revocation::User(user) => {
                self.mark_ended(user);
                self.forget(|live| live.user == user);
            }
            Revocation::Refresh(user) => self.forget(|live| live.user == user),
            Revocation::Everything => self.cache.invalidate_all(),
        }
    }

    /// Tells every replica's cache, this one's included.
    async fn publish(&self, revocation: Revocation) -> Result<(), SessionError> {
        let published = Published {
            origin: self.origin,
            revocation,
        };
        Ok(self.records.publish(published).await?)
    }

    /// A login of `user` that began before now creates no session.
    fn mark_ended(&self, user: UserId) {
        let epoch = Epoch(self.revocations.fetch_add(1, Ordering::SeqCst) + 1);
        lock(&self.ended).insert(user, epoch);
    }

    /// The current epoch: taken when a login or step-up begins, and given back to
    /// [`Sessions::create`] or [`Sessions::rotate`] when it ends.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.revocations.load(Ordering::SeqCst))
    }

    /// Ends what is on its way to becoming a session of `user` (just before all their sessions
    /// end, and when an operator revokes one of them): their open login challenges, enrollments
    /// and WebAuthn ceremonies go, and a login that began before now creates no session.
    pub async fn end_pending(&self, user: UserId) -> Result<(), SessionError> {
        self.mark_ended(user);
        Ok(self.ephemeral.drop_user(user).await?)
    }

    fn ended_since(&self, user: UserId, since: Epoch) -> bool {
        lock(&self.ended)
            .get(&user)
            .is_some_and(|&ended| ended > since)
    }

    /// The global caps.
    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// A new session for a user who has just proven a password and a second factor at `now`,
    /// in a login that began at `since`: [`SessionError::Revoked`] when the user's sessions were
    /// ended after that.
    pub async fn create(
        &self,
        new: NewSession<'_>,
        since: Epoch,
        now: u64,
    ) -> Result<(Token, Arc<Live>), SessionError> {
        self.create_with(new, now, since, now).await
    }

    /// Step-up of the session stored under `old`, opened at `created`: a new token with a
    /// fresh `auth_time`; the old session ends at once. The absolute cap still counts from the
    /// original login. [`SessionError::Revoked`] when the
    /// old session is gone by now (a logout, an operator), or the user's sessions were ended
    /// after `since`, when the step-up began.
    pub async fn rotate(
        &self,
        old: SessionKey,
        created: u64,
        new: NewSession<'_>,
        since: Epoch,
        now: u64,
    ) -> Result<(Token, Arc<Live>), SessionError> {
        let (token, live) = self.create_with(new, created, since, now).await?;
        // The delete is the atomic check: of a logout and this step-up, one ends the old session.
        if !self.end(old).await? {
            self.end(live.key).await?;
            return Err(SessionError::Revoked);
        }
        Ok((token, live))
    }

    async fn create_with(
        &self,
        new: NewSession<'_>,
        created: u64,
        since: Epoch,
        now: u64,
    ) -> Result<(Token, Arc<Live>), SessionError> {
        let token = Token::generate()?;
        let record = SessionRecord {
            user: new.user.id,
            created,
            last_seen: now,
            auth_time: now,
            client: new.client.to_string(),
            user_agent: new.user_agent.chars().take(USER_AGENT_CHARS).collect(),
        };
        let key = self
            .records
            .create(token.as_str().as_bytes(), record.clone())
            .await?;
        let live = Arc::new(Live::new(key, &record, new.user));
        self.cache.insert(
            self.keyring.token_hash(token.as_str().as_bytes()),
            live.clone(),
        );
        // Checked after the session is stored and cached: `end_user` records the epoch before
        // it deletes and forgets. So either this check sees the revocation and ends the session,
        // or the session was in the store and the cache in time for `end_user` to end it.
        if self.ended_since(new.user.id, since) {
            self.end(key).await?;
            return Err(SessionError::Revoked);
        }
        Ok((token, live))
    }

    /// The live session of `token` under `lifetimes` at `now`, or why there is none.
    pub async fn check(
        &self,
        token: &str,
        lifetimes: &Lifetimes,
        now: u64,
    ) -> Result<Result<Arc<Live>, Ended>, SessionError> {
        if !well_formed(token) {
            return Ok(Err(Ended::Missing));
        }
        let cache_key = self.keyring.token_hash(token.as_bytes());
        // A cut feed may have lost a revocation: then only the store's answer counts.
        let cached = match self.records.feed_is_live() {
            true => self.cache.get(&cache_key),
            false => None,
        };
        let live = match cached {
            Some(live) => live,
            None => match self.load(token, cache_key).await? {
                Some(live) => live,
                None => return Ok(Err(Ended::Missing)),
            },
        };
        if let Some(ended) = live.judge(&self.lifetimes, now) {
            self.end(live.key).await?;
            return Ok(Err(ended));
        }
        if let Some(ended) = live.judge(lifetimes, now) {
            return Ok(Err(ended));
        }
        if lifetimes
            .reauth_within
            .is_some_and(|within| now.saturating_sub(live.auth_time) > within)
        {
            return Ok(Err(Ended::StepUp));
        }
        live.last_seen.fetch_max(now, Ordering::Relaxed);
        let persisted = live.persisted.load(Ordering::Relaxed);
        if now.saturating_sub(persisted) >= TOUCH_INTERVAL
            && live
                .persisted
                .compare_exchange(persisted, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let (records, key) = (self.records.clone(), live.key);
            tokio::spawn(async move {
                if let Err(error) = records.touch(key, now).await {
                    tracing::warn!(%error, "could not record session activity");
                }
            });
        }
        Ok(Ok(live))
    }

    /// A cache miss: the store's record and its user, cached unless a revocation raced with us.
    async fn load(
        &self,
        token: &str,
        cache_key: [u8; 32],
    ) -> Result<Option<Arc<Live>>, SessionError> {
        let epoch = self.revocations.load(Ordering::SeqCst);
        let Some((key, record)) = self.records.find(token.as_bytes()).await? else {
            return Ok(None);
        };
        let user = self.accounts.user(record.user).await?;
        if user.disabled {
            self.end(key).await?;
            return Ok(None);
        }
        let live = Arc::new(Live::new(key, &record, &user));
        if self.revocations.load(Ordering::SeqCst) == epoch {
            self.cache.insert(cache_key, live.clone());
        }
        Ok(Some(live))
    }

    /// Ends one session (logout, operator revocation); `false` when there was none.
    pub async fn end(&self, key: SessionKey) -> Result<bool, SessionError> {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        self.forget(|live| live.key == key);
        let ended = self.records.delete(key).await?;
        self.publish(Revocation::Session(key)).await?;
        Ok(ended)
    }

    /// Ends every session of `user` (logout everywhere, disabled account, credential resets);
    /// returns how many there were.
    pub async fn end_user(&self, user: UserId) -> Result<usize, SessionError> {
        // Counts as the revocation that keeps a racing store read out of the cache, too.
        self.end_pending(user).await?;
        let ended = self.records.delete_user(user).await?;
        // Forgotten after the delete: a check that read the store before it may have cached.
        self.forget(|live| live.user == user);
        self.publish(Revocation::User(user)).await?;
        Ok(ended.len())
    }

    /// Drops `user`'s cached sessions so that the next request reads the account again (after
    /// a change of roles, say); the sessions stay valid.
    pub async fn refresh_user(&self, user: UserId) -> Result<(), SessionError> {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        self.forget(|live| live.user == user);
        self.publish(Revocation::Refresh(user)).await
    }

    fn forget(&self, which: impl Fn(&Live) -> bool) {
        for (cache_key, live) in &self.cache {
            if which(&live) {
                self.cache.invalidate(cache_key.as_ref());
            }
        }
    }

    /// Every session still alive at `now` under the global caps, oldest first, optionally of
    /// one user. Cached activity is more recent than the store's and wins.
    pub async fn list(&self, user: Option<UserId>, now: u64) -> Result<Vec<Listed>, SessionError> {
        let mut sessions = self.records.all().await?;
        let recent: std::collections::HashMap<SessionKey, u64> = self
            .cache
            .iter()
            .map(|(_, live)| (live.key, live.last_seen()))
            .collect();
        let lifetimes = self.lifetimes;
        sessions.retain(|(key, record)| {
            let last_seen = recent.get(key).copied().unwrap_or(record.last_seen);
            user.is_none_or(|u| u == record.user)
                && now < record.created.saturating_add(lifetimes.absolute)
                && now
                    < last_seen
                        .max(record.last_seen)
                        .saturating_add(lifetimes.idle)
        });
        let mut listed: Vec<Listed> = sessions
            .into_iter()
            .map(|(key, mut record)| {
                if let Some(seen) = recent.get(&key) {
                    record.last_seen = record.last_seen.max(*seen);
                }
                Listed { key, record }
            })
            .collect();
        listed.sort_by_key(|l| (l.record.created, l.key.0));
        Ok(listed)
    }

    /// Deletes the sessions that are dead at `now` from the store; returns how many.
    pub async fn prune(&self, now: u64) -> Result<usize, SessionError> {
        let lifetimes = self.lifetimes;
        let mut pruned = 0;
        for (key, record) in self.records.all().await? {
            let dead = now >= record.created.saturating_add(lifetimes.absolute)
                || now >= record.last_seen.saturating_add(lifetimes.idle);
            if dead && self.records.delete(key).await? {
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// Sessions in the cache (for the memory measurement).
    pub fn cached(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{EmbeddedStore, MasterKey, SessionRecord};
    use crate::store::Pending;
    use crate::store::sessions::SessionStore;

    const T0: u64 = 1_800_000_000;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<EmbeddedStore>,
        stores: Stores,
        keyring: Arc<Keyring>,
        sessions: Sessions,
        alice: User,
    }

    fn fixture(config: &SessionConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let store = Arc::new(EmbeddedStore::open(dir.path(), keyring.clone()).unwrap());
        let mut alice = User::new(UserId::random(&mut rand::rng()), "alice", T0);
        alice.roles = vec!["physician".into()];
        store.create_user(&alice).unwrap();
        let stores = Stores::embedded(store.clone());
        let sessions = Sessions::new(&stores, keyring.clone(), config);
        Fixture {
            _dir: dir,
            store,
            stores,
            keyring,
            sessions,
            alice,
        }
    }

    fn new_session(user: &User) -> NewSession<'_> {
        NewSession {
            user,
            client: IpAddr::from([192, 0, 2, 1]),
            user_agent: "test agent",
        }
    }

    impl Fixture {
        async fn login(&self, now: u64) -> Token {
            self.sessions
                .create(new_session(&self.alice), self.sessions.epoch(), now)
                .await
                .unwrap()
                .0
        }

        async fn check(&self, token: &Token, now: u64) -> Result<Arc<Live>, Ended> {
            let lifetimes = self.sessions.lifetimes();
            self.check_with(token.as_str(), &lifetimes, now).await
        }

        async fn check_with(
            &self,
            token: &str,
            lifetimes: &Lifetimes,
            now: u64,
        ) -> Result<Arc<Live>, Ended> {
            self.sessions.check(token, lifetimes, now).await.unwrap()
        }
    }

    #[tokio::test]
    async fn tokens_are_256_random_bits_and_the_store_keeps_only_their_hash() {
        let f = fixture(&SessionConfig::default());
        let a = f.login(T0).await;
        let b = f.login(T0).await;
        assert_ne!(a.as_str(), b.as_str());
        assert!(well_formed(a.as_str()), "{}", a.as_str());
        assert_eq!(a.as_str().len(), 4 + 64);
        assert_eq!(format!("{a:?}"), "Token(<redacted>)");
        for (key, _) in f.store.sessions().unwrap() {
            assert!(!key.to_string().contains(&a.as_str()[4..]));
        }
        let live = f.check(&a, T0 + 1).await.unwrap();
        assert_eq!((live.name.as_str(), live.roles.len()), ("alice", 1));
    }

    #[tokio::test]
    async fn forged_truncated_and_garbage_tokens_are_missing() {
        let f = fixture(&SessionConfig::default());
        let real = f.login(T0).await;
        let lifetimes = f.sessions.lifetimes();
        let mut flipped = real.as_str().to_owned();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        let hex = &real.as_str()[4..];
        let malformed = [
            String::new(),
            "wgs_".into(),
            real.as_str()[..40].into(),
            format!("{}0", real.as_str()),
            real.as_str().to_uppercase(),
            format!("wgs_{}", hex.to_uppercase()),
            format!("wgx_{hex}"),
            format!("wgs_{}", "g".repeat(64)),
            format!("wgs_{}", "/".repeat(64)),
            "\u{0}\u{1}garbage".into(),
        ];
        for token in &malformed {
            assert!(!well_formed(token), "{token:?}");
        }
        assert!(well_formed(&format!("wgs_{}", "09af".repeat(16))));
        for token in malformed
            .iter()
            .map(String::as_str)
            .chain([flipped.as_str()])
        {
            assert_eq!(
                f.check_with(token, &lifetimes, T0).await.unwrap_err(),
                Ended::Missing,
                "{token:?}"
            );
        }
    }

    #[tokio::test]
    async fn idle_timeout_ends_a_quiet_session_and_activity_resets_it() {
        let f = fixture(&SessionConfig::default());
        let token = f.login(T0).await;
        f.check(&token, T0 + 14 * 60).await.unwrap();
        f.check(&token, T0 + 28 * 60).await.unwrap();
        assert_eq!(
            f.check(&token, T0 + 43 * 60).await.unwrap_err(),
            Ended::Idle
        );
        // Ended for good: the store no longer has it.
        assert_eq!(
            f.check(&token, T0 + 43 * 60 + 1).await.unwrap_err(),
            Ended::Missing
        );
        assert!(f.store.sessions().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_absolute_cap_ends_a_session_however_active() {
        let f = fixture(&SessionConfig::default());
        let token = f.login(T0).await;
        for minute in (10..60).step_by(10) {
            let live = f.check(&token, T0 + minute * 60).await.unwrap();
            assert_eq!(
                live.remaining(&f.sessions.lifetimes(), T0 + minute * 60),
                (15 * 60).min((60 - minute) * 60)
            );
        }
        assert_eq!(
            f.check(&token, T0 + 3600).await.unwrap_err(),
            Ended::Absolute
        );
    }

    #[tokio::test]
    async fn remaining_is_the_earlier_of_idle_and_absolute() {
        let f = fixture(&SessionConfig::default());
        let token = f.login(T0).await;
        let live = f.check(&token, T0 + 60).await.unwrap();
        assert_eq!(live.remaining(&f.sessions.lifetimes(), T0 + 60), 15 * 60);
        assert_eq!(live.remaining(&f.sessions.lifetimes(), T0 + 50 * 60), 0);
    }

    #[tokio::test]
    async fn a_route_can_only_narrow_the_caps_and_its_refusal_keeps_the_session() {
        let f = fixture(&SessionConfig::default());
        let token = f.login(T0).await;
        let strict = f.sessions.lifetimes().narrowed(
            Some(Duration::from_secs(60)),
            Some(Duration::from_secs(24 * 3600)),
            Some(Duration::from_secs(600)),
        );
        assert_eq!(strict.absolute, 3600, "a route cannot lengthen the cap");
        assert_eq!(
            f.check_with(token.as_str(), &strict, T0 + 120)
                .await
                .unwrap_err(),
            Ended::Idle
        );
        f.check(&token, T0 + 121).await.unwrap();
        f.check_with(token.as_str(), &strict, T0 + 150)
            .await
            .unwrap();
        f.check(&token, T0 + 590).await.unwrap();
        f.check_with(token.as_str(), &strict, T0 + 600)
            .await
            .expect("a proof exactly reauth_within old is fresh enough");
        assert_eq!(
            f.check_with(token.as_str(), &strict, T0 + 601)
                .await
                .unwrap_err(),
            Ended::StepUp
        );
        f.check(&token, T0 + 602).await.unwrap();
    }

    #[tokio::test]
    async fn step_up_rotates_the_token_and_keeps_the_absolute_cap() {
        let f = fixture(&SessionConfig::default());
        let old = f.login(T0).await;
        let live = f.check(&old, T0 + 800).await.unwrap();
        let since = f.sessions.epoch();
        let (new, rotated) = f
            .sessions
            .rotate(
                live.key,
                live.created,
                new_session(&f.alice),
                since,
                T0 + 901,
            )
            .await
            .unwrap();
        assert_eq!(
            f.check(&old, T0 + 902).await.unwrap_err(),
            Ended::Missing,
            "the old token dies at once"
        );
        assert_eq!((rotated.created, rotated.auth_time), (T0, T0 + 901));
        f.check(&new, T0 + 902).await.unwrap();
        assert_eq!(f.check(&new, T0 + 3600).await.unwrap_err(), Ended::Absolute);
    }

    #[tokio::test]
    async fn sessions_survive_a_restart_and_ended_ones_stay_ended() {
        let f = fixture(&SessionConfig::default());
        let kept = f.login(T0).await;
        let ended = f.login(T0).await;
        let live = f.check(&ended, T0 + 1).await.unwrap();
        assert!(f.sessions.end(live.key).await.unwrap());
        // Less than TOUCH_INTERVAL after login: no activity write is left holding the store.
        f.check(&kept, T0 + 30).await.unwrap();

        // The restart: the store is closed (redb's file lock goes with it) and the file opened
        // again by a new store, under a new `Sessions` with nothing in memory.
        let Fixture {
            _dir: dir,
            store,
            stores,
            sessions,
            ..
        } = f;
        drop((sessions, stores));
        assert_eq!(Arc::strong_count(&store), 1, "the store is still in use");
        drop(store);
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let store = Arc::new(EmbeddedStore::open(dir.path(), keyring.clone()).unwrap());
        let restarted = Sessions::new(&Stores::embedded(store), keyring, &SessionConfig::default());
        let lifetimes = restarted.lifetimes();
        assert_eq!(restarted.cached(), 0);
        let live = restarted
            .check(kept.as_str(), &lifetimes, T0 + 10 * 60)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(live.name, "alice");
        assert_eq!(restarted.cached(), 1, "the store's answer is cached");
        assert_eq!(
            restarted
                .check(ended.as_str(), &lifetimes, T0 + 10 * 60)
                .await
                .unwrap()
                .unwrap_err(),
            Ended::Missing
        );
    }

    #[tokio::test]
    async fn activity_is_written_back_at_most_once_a_minute() {
        let f = fixture(&SessionConfig::default());
        let token = f.login(T0).await;
        f.check(&token, T0 + 30).await.unwrap();
        f.check(&token, T0 + 61).await.unwrap();
        for _ in 0..100 {
            let stored = f.store.sessions().unwrap()[0].1.last_seen;
            if stored == T0 + 61 {
                return;
            }
            assert_eq!(stored, T0);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("last_seen was not written back");
    }

    #[tokio::test]
    async fn ending_a_users_sessions_and_disabling_work_at_once() {
        let f = fixture(&SessionConfig::default());
        let (a, b) = (f.login(T0).await, f.login(T0).await);
        f.check(&a, T0 + 1).await.unwrap();
        assert_eq!(f.sessions.end_user(f.alice.id).await.unwrap(), 2);
        for token in [&a, &b] {
            assert_eq!(f.check(token, T0 + 2).await.unwrap_err(), Ended::Missing);
        }

        let c = f.login(T0).await;
        f.store.set_disabled(f.alice.id, true).unwrap();
        f.sessions.refresh_user(f.alice.id).await.unwrap();
        assert_eq!(f.check(&c, T0 + 3).await.unwrap_err(), Ended::Missing);
        assert!(f.store.sessions().unwrap().is_empty());
    }

    /// Two replicas over one store, the first following the revocation feed.
    fn replicas(f: &Fixture) -> (Arc<Sessions>, Sessions) {
        let config = SessionConfig::default();
        let this = Arc::new(Sessions::new(&f.stores, f.keyring.clone(), &config));
        let following = this.clone();
        tokio::spawn(async move { following.follow_revocations().await });
        let other = Sessions::new(&f.stores, f.keyring.clone(), &config);
        (this, other)
    }

    /// Lets the feed's follower run until `done` holds (a bounded number of turns).
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_session_ended_on_another_replica_leaves_this_ones_cache() {
        let f = fixture(&SessionConfig::default());
        let (this, other) = replicas(&f);
        let lifetimes = this.lifetimes();
        let (token, live) = this
            .create(new_session(&f.alice), this.epoch(), T0)
            .await
            .unwrap();
        let check = |now| this.check(token.as_str(), &lifetimes, now);
        assert!(check(T0 + 1).await.unwrap().is_ok());
        assert_eq!(this.cached(), 1);

        // Ended on the other replica: this one's cache must not keep it working.
        assert!(other.end(live.key).await.unwrap());
        until(|| this.cached() == 0).await;
        assert_eq!(check(T0 + 2).await.unwrap().unwrap_err(), Ended::Missing);

        // Every session of the user, and a login that was under way here.
        let since = this.epoch();
        let (token, _) = this.create(new_session(&f.alice), since, T0).await.unwrap();
        let check = |now| this.check(token.as_str(), &lifetimes, now);
        assert!(check(T0 + 3).await.unwrap().is_ok());
        other.end_user(f.alice.id).await.unwrap();
        until(|| this.cached() == 0).await;
        assert_eq!(check(T0 + 4).await.unwrap().unwrap_err(), Ended::Missing);
        let late = this.create(new_session(&f.alice), since, T0 + 4).await;
        assert!(
            matches!(late, Err(SessionError::Revoked)),
            "{:?}",
            late.map(|_| ())
        );
    }

    /// The fixture's session store, with a feed that a test can cut.
    struct Cuttable {
        inner: Arc<dyn SessionStore>,
        live: std::sync::atomic::AtomicBool,
    }

    impl SessionStore for Cuttable {
        fn create(&self, token: &[u8], record: SessionRecord) -> Pending<'_, SessionKey> {
            self.inner.create(token, record)
        }
        fn find(&self, token: &[u8]) -> Pending<'_, Option<(SessionKey, SessionRecord)>> {
            self.inner.find(token)
        }
        fn touch(&self, key: SessionKey, last_seen: u64) -> Pending<'_, bool> {
            self.inner.touch(key, last_seen)
        }
        fn delete(&self, key: SessionKey) -> Pending<'_, bool> {
            self.inner.delete(key)
        }
        fn delete_user(&self, user: UserId) -> Pending<'_, Vec<SessionKey>> {
            self.inner.delete_user(user)
        }
        fn all(&self) -> Pending<'_, Vec<(SessionKey, SessionRecord)>> {
            self.inner.all()
        }
        fn publish(&self, published: Published) -> Pending<'_, ()> {
            self.inner.publish(published)
        }
        fn subscribe(&self) -> broadcast::Receiver<Published> {
            self.inner.subscribe()
        }
        fn feed_is_live(&self) -> bool {
            self.live.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn while_the_feed_is_cut_the_cache_is_not_trusted() {
        let f = fixture(&SessionConfig::default());
        let cuttable = Arc::new(Cuttable {
            inner: f.stores.sessions.clone(),
            live: true.into(),
        });
        let stores = Stores {
            sessions: cuttable.clone(),
            ..f.stores.clone()
        };
        let this = Sessions::new(&stores, f.keyring.clone(), &SessionConfig::default());
        let lifetimes = this.lifetimes();
        let (token, live) = this
            .create(new_session(&f.alice), this.epoch(), T0)
            .await
            .unwrap();
        let check = |now| this.check(token.as_str(), &lifetimes, now);
        assert!(check(T0 + 1).await.unwrap().is_ok());
        // Ended by a replica whose revocation never arrived here (the feed was cut meanwhile).
        assert!(f.store.delete_session(live.key).unwrap());
        cuttable.live.store(false, Ordering::SeqCst);
        assert_eq!(check(T0 + 2).await.unwrap().unwrap_err(), Ended::Missing);
    }

    #[tokio::test]
    async fn a_role_change_on_another_replica_is_read_here_at_the_next_request() {
        let f = fixture(&SessionConfig::default());
        let (this, other) = replicas(&f);
        let lifetimes = this.lifetimes();
        let (token, _) = this
            .create(new_session(&f.alice), this.epoch(), T0)
            .await
            .unwrap();
        let roles = async |now| {
            let live = this.check(token.as_str(), &lifetimes, now).await;
            live.unwrap().unwrap().roles.clone()
        };
        assert_eq!(roles(T0 + 1).await, ["physician"]);
        f.store.set_roles(f.alice.id, &["nurse".into()]).unwrap();
        other.refresh_user(f.alice.id).await.unwrap();
        until(|| this.cached() == 0).await;
        assert_eq!(roles(T0 + 2).await, ["nurse"]);
    }

    #[tokio::test]
    async fn a_login_under_way_when_its_users_sessions_end_creates_none() {
        let f = fixture(&SessionConfig::default());
        let bob = User::new(UserId::random(&mut rand::rng()), "bob", T0);
        f.store.create_user(&bob).unwrap();
        let space = crate::store::ephemeral::Space {
            name: "test",
            ttl: 60,
            capacity: 10,
        };
        let pending = crate::store::ephemeral::Ceremonies::new(f.stores.ephemeral.clone(), space);
        let mut rng = rand::rng();
        let alices = pending.open(f.alice.id, &1u8, T0, &mut rng).await.unwrap();
        let bobs = pending.open(bob.id, &2u8, T0, &mut rng).await.unwrap();

        let since = f.sessions.epoch();
        f.sessions.end_user(f.alice.id).await.unwrap();
        let (alices, bobs) = (alices.unwrap(), bobs.unwrap());
        let left = pending.read(&alices, T0).await.unwrap();
        assert_eq!(left, None, "alice's ceremony ended");
        let left = pending.read(&bobs, T0).await.unwrap();
        assert_eq!(left, Some((bob.id, 2)), "bob's is open");
        let refused = f
            .sessions
            .create(new_session(&f.alice), since, T0)
            .await
            .map(|_| ());
        assert!(matches!(refused, Err(SessionError::Revoked)), "{refused:?}");
        assert!(
            f.store.sessions().unwrap().is_empty(),
            "nothing left behind"
        );
        // Another user's login of the same epoch, and a login begun afterwards, go through.
        f.sessions
            .create(new_session(&bob), since, T0)
            .await
            .unwrap();
        f.login(T0 + 1).await;
        assert_eq!(f.store.sessions().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_step_up_of_a_session_ended_meanwhile_is_refused() {
        let f = fixture(&SessionConfig::default());
        let token = f.login(T0).await;
        let live = f.check(&token, T0 + 1).await.unwrap();
        let since = f.sessions.epoch();
        // Logged out (one session: pending logins of the user stay) while stepping up.
        assert!(f.sessions.end(live.key).await.unwrap());
        let refused = f
            .sessions
            .rotate(live.key, live.created, new_session(&f.alice), since, T0 + 2)
            .await
            .map(|_| ());
        assert!(matches!(refused, Err(SessionError::Revoked)), "{refused:?}");
        assert!(f.store.sessions().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_role_change_reaches_cached_sessions() {
        let f = fixture(&SessionConfig::default());
        let token = f.login(T0).await;
        assert_eq!(f.check(&token, T0 + 1).await.unwrap().roles, ["physician"]);
        f.store
            .set_roles(f.alice.id, &["nurse".to_owned()])
            .unwrap();
        f.sessions.refresh_user(f.alice.id).await.unwrap();
        assert_eq!(f.check(&token, T0 + 2).await.unwrap().roles, ["nurse"]);
    }

    #[tokio::test]
    async fn operators_list_live_sessions_and_prune_dead_ones() {
        let f = fixture(&SessionConfig::default());
        let early = f.login(T0).await;
        let late = f.login(T0 + 30 * 60).await;
        f.check(&early, T0 + 10 * 60).await.unwrap();
        let listed = f
            .sessions
            .list(Some(f.alice.id), T0 + 31 * 60)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "the early one is idle by now");
        assert_eq!(listed[0].record.user_agent, "test agent");
        assert_eq!(listed[0].record.client, "192.0.2.1");
        assert_eq!(f.sessions.prune(T0 + 31 * 60).await.unwrap(), 1);
        assert_eq!(f.store.sessions().unwrap().len(), 1);
        assert_eq!(
            f.store
                .session(late.as_str().as_bytes())
                .unwrap()
                .unwrap()
                .1
                .created,
            T0 + 30 * 60
        );
    }

    #[tokio::test]
    async fn the_session_list_holds_exactly_the_live_ones_oldest_first() {
        let f = fixture(&SessionConfig::default());
        let bob = User::new(UserId::random(&mut rand::rng()), "bob", T0);
        f.store.create_user(&bob).unwrap();
        f.login(T0).await; // quiet since
        let active = f.login(T0 + 1).await;
        f.sessions
            .create(new_session(&bob), f.sessions.epoch(), T0 + 2)
            .await
            .unwrap();
        // Within TOUCH_INTERVAL: only the cache knows of this activity.
        f.check(&active, T0 + 31).await.unwrap();
        let rows = |listed: Vec<Listed>| -> Vec<(UserId, u64)> {
            listed
                .iter()
                .map(|l| (l.record.user, l.record.last_seen))
                .collect()
        };
        let all = f.sessions.list(None, T0 + 899).await.unwrap();
        assert_eq!(
            rows(all),
            [(f.alice.id, T0), (f.alice.id, T0 + 31), (bob.id, T0 + 2)]
        );
        let alices = f.sessions.list(Some(f.alice.id), T0 + 900).await.unwrap();
        assert_eq!(
            rows(alices),
            [(f.alice.id, T0 + 31)],
            "idle for exactly idle_timeout is idle; the cached activity counts"
        );

        // An idle timeout past the absolute cap, so that the cap alone decides.
        let hour = SessionConfig {
            idle_timeout: HumanDuration(Duration::from_secs(7200)),
            ..SessionConfig::default()
        };
        let g = fixture(&hour);
        g.login(T0).await;
        assert_eq!(g.sessions.list(None, T0 + 3599).await.unwrap().len(), 1);
        assert!(g.sessions.list(None, T0 + 3600).await.unwrap().is_empty());
    }

    #[test]
    fn config_refuses_caps_above_twelve_hours_unless_overridden() {
        let mut config = SessionConfig {
            absolute_timeout: HumanDuration(Duration::from_secs(12 * 3600)),
            ..SessionConfig::default()
        };
        assert!(
            config.check().unwrap().is_empty(),
            "12h is the bound itself"
        );
        config.absolute_timeout = HumanDuration(Duration::from_secs(12 * 3600 + 1));
        assert!(config.check().unwrap_err().contains("12h"));
        config.allow_long_sessions = true;
        assert_eq!(config.check().unwrap().len(), 1);
        assert!(SessionConfig::default().check().unwrap().is_empty());
    }

    #[test]
    fn config_refuses_a_zero_lifetime_and_warns_of_an_idle_timeout_that_never_applies() {
        let seconds = |idle, absolute| SessionConfig {
            idle_timeout: HumanDuration(Duration::from_secs(idle)),
            absolute_timeout: HumanDuration(Duration::from_secs(absolute)),
            ..SessionConfig::default()
        };
        assert!(seconds(0, 3600).check().is_err());
        assert!(seconds(900, 0).check().is_err());
        assert!(seconds(3600, 3600).check().unwrap().is_empty());
        let warnings = seconds(3601, 3600).check().unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("never applies"));
    }

    #[test]
    fn each_ending_has_its_own_reason_for_the_client() {
        let reasons =
            [Ended::Missing, Ended::Idle, Ended::Absolute, Ended::StepUp].map(Ended::reason);
        assert_eq!(reasons, ["login", "idle", "absolute", "step-up"]);
    }

    #[test]
    fn the_cookie_has_exactly_the_safe_attributes() {
        let token = Token::generate().unwrap();
        let cookie = token.cookie();
        assert_eq!(
            cookie.to_str().unwrap(),
            format!(
                "__Host-wardgate-session={}; Secure; HttpOnly; SameSite=Strict; Path=/",
                token.as_str()
            )
        );
        assert!(cookie.len() < 4096);
    }

    #[test]
    fn a_cookie_sent_twice_is_no_credential() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-wardgate-session=wgs_a; other=1"),
        );
        assert_eq!(presented(&headers), Some((Carrier::Cookie, "wgs_a")));
        // HTTP/2 splits cookies over headers: a second one anywhere makes it ambiguous.
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-wardgate-session=wgs_b"),
        );
        assert_eq!(presented(&headers), None);
        assert_eq!(cookie_value(&headers, "other"), Some("1"));
    }

    #[test]
    fn the_gateways_credentials_never_go_upstream() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-wardgate-session=wgs_x; b=2"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-wardgate-csrf=c"),
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wgs_abc"),
        );
        assert_eq!(presented(&headers), Some((Carrier::Bearer, "wgs_abc")));
        strip_credentials(&mut headers);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "a=1; b=2");
        assert!(!headers.contains_key(header::AUTHORIZATION));

        let mut theirs = HeaderMap::new();
        theirs.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer upstream-token"),
        );
        theirs.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-wardgate-session=x"),
        );
        assert_eq!(
            presented(&theirs),
            Some((Carrier::Bearer, "upstream-token"))
        );
        strip_credentials(&mut theirs);
        assert_eq!(theirs[header::AUTHORIZATION], "Bearer upstream-token");
        assert!(!theirs.contains_key(header::COOKIE));
    }
}
