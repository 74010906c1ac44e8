//! The state layer: each concern behind a trait whose doc states its contract (atomicity, what
//! "missing" means), with an embedded implementation in the data directory; the shared ones
//! (Redis, PostgreSQL) come with several replicas, behind the same traits.
//!
//! - [`accounts`]: users, roles, password hashes, enrollment tokens.
//! - [`credentials`]: second factors (TOTP, WebAuthn, recovery codes).
//! - [`sessions`]: session records, under the keyed hash of their token.
//! - [`relations`]: care-team links, access requests and grants.
//! - [`ephemeral`]: ceremonies and challenges of multi-step exchanges, for minutes.
//! - [`lockouts`]: failure counters and soft locks of login attempts.
//! - [`counters`]: where rate limits and lockouts are counted (this process, or Redis).
//! - [`keys`]: key material every replica must hold the same of.
//! - [`reachable`]: whether the stores outside the process answer.
//! - [`embedded`]: the redb backend of the first three.
//! - `redis` (feature `redis`): sessions, ceremonies, lockouts and limits shared by replicas.
//! - `postgres` (feature `postgres`): the PostgreSQL backend of accounts, credentials, relations
//!   and shared keys, for several replicas.

pub mod accounts;
pub mod counters;
pub mod credentials;
pub mod embedded;
pub mod ephemeral;
pub mod keys;
pub mod lockouts;
#[cfg(feature = "postgres")]
pub mod migrate;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod reachable;
#[cfg(feature = "redis")]
pub mod redis;
pub mod relations;
pub mod sessions;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::identity::{EmbeddedStore, StoreError};
use accounts::Accounts;
use counters::Counters;
use credentials::Credentials;
use ephemeral::Ephemeral;
use relations::Relations;
use sessions::SessionStore;

/// A store operation in progress.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The durable stores the request path and the admin API work with, whichever backend holds them.
#[derive(Clone)]
pub struct Stores {
    pub accounts: Arc<dyn Accounts>,
    pub credentials: Arc<dyn Credentials>,
    pub sessions: Arc<dyn SessionStore>,
    pub ephemeral: Arc<dyn Ephemeral>,
    pub relations: Arc<dyn Relations>,
    /// The stores outside the process, and whether they answer.
    pub reachable: Arc<reachable::Reachability>,
    /// Where rate limits and lockouts are counted.
    pub counters: Counters,
}

impl Stores {
    /// Accounts, credentials and sessions in the embedded identity store; ceremonies in memory.
    pub fn embedded(store: Arc<EmbeddedStore>) -> Self {
        let embedded = Arc::new(embedded::Embedded::new(store));
        Self {
            accounts: embedded.clone(),
            credentials: embedded.clone(),
            sessions: embedded.clone(),
            relations: Arc::new(relations::Cached::new(embedded)),
            ephemeral: Arc::new(ephemeral::Memory::new()),
            reachable: Arc::default(),
            counters: Counters::Local,
        }
    }
}
