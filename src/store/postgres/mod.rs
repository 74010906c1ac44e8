//! The PostgreSQL backend of the identity side of the state layer: accounts, credentials and
//! relations (`store::{accounts, credentials, relations}`) in one database that several gateway
//! replicas share.
//!
//! **Threat.** Every replica trusts this database: whoever reads it (a backup, a replica, a
//! curious DBA, SQL injection in another application on the same server) must not get anything
//! that logs a user in, and a database that stops answering must not stop a replica's other
//! work or, worse, let a request through. **Rules.**
//! - *Fail closed, never hang.* Every connection is made with a connect timeout, every session
//!   runs with a `statement_timeout` (and an idle-in-transaction timeout, so a replica that dies
//!   mid-transaction cannot hold row locks), the pool waits a bounded time for a connection, and
//!   every call as a whole is bounded by [`Timeouts::call`]. A failure is
//!   `StoreError::Storage`, which callers answer with 503; nothing falls back to memory. The
//!   pool replaces a closed connection at the next call, so a restarted server is used again
//!   without rebuilding anything.
//! - *Only a primary.* `target_session_attrs=read-write`: a standby's answer would be stale.
//! - *Sealed at rest*, exactly as the embedded backend seals (`identity::seal`): TOTP seeds and
//!   WebAuthn credentials under the [`Keyring`], with the same purposes and owners; recovery
//!   codes are hashes (the caller's), enrollment tokens keyed hashes. The keyring never enters
//!   the database.
//! - *Use-once is one statement.* Each check-and-set is a single `UPDATE … WHERE … RETURNING`
//!   or `DELETE … RETURNING`: of two replicas racing with one code, PostgreSQL's row lock lets
//!   one win and re-checks the condition for the other, which then finds it spent.
//! - *Versioned migrations at start* ([`migrations`]), under an advisory lock, refusing a
//!   schema newer than the binary.
//! - *TLS when the URL asks* (`sslmode=require`, or `verify-full`/`verify-ca`, which rustls
//!   always is: the chain and the host name are verified whatever the mode says), with the
//!   platform roots plus an optional CA file; `prefer` is plain, since a TLS that an attacker
//!   can strip is no TLS. The password comes apart from the URL and no error repeats either.
//!
//! **Standard.** HIPAA 164.312(a)(2)(iv) (encryption at rest), 164.312(e)(1) (transmission);
//! NIST SP 800-63B 5.1.2, 5.1.4.2 (use once); OWASP ASVS 5 V6, V11, V13.
//!
//! ```text
//!   wardgate_schema    version                                   (applied migrations)
//!   users              id | name | folded_name (unique) | roles | password_hash | …
//!   enrollment_tokens  keyed hash | user_id → users | expires
//!   totp               user_id → users | sealed seed | params | last_used_step
//!   webauthn           user_id → users, credential_id | sealed credential | sign_count | …
//!   recovery_codes     user_id → users, position | hash | used
//!   care_team          user_id, patient | until
//!   access_requests    id | requester, patient (indexed) | created | request (jsonb)
//!   shared_keys        name | sealed
//! ```

mod accounts;
mod credentials;
mod keys;
pub mod migrations;
mod relations;
mod reseal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Client, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Transaction,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::config::{SslMode, TargetSessionAttrs};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::Pending;
use crate::identity::{Keyring, StoreError, UserId};

/// Connections per replica: PostgreSQL's default `max_connections` (100) serves several.
const POOL_SIZE: usize = 16;

/// How long the database may take before a call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection (TCP, TLS, authentication), and to wait for a pooled one.
    pub connect: Duration,
    /// For one statement, on the server (`statement_timeout`), lock waits included.
    pub statement: Duration,
    /// For a whole call, on the client: the bound that holds also when the server is not
    /// answering at all. Longer than `statement`, so the server's clearer error comes first.
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            statement: Duration::from_secs(5),
            call: Duration::from_secs(8),
        }
    }
}

/// How to reach the database, beside its URL.
#[derive(Default)]
pub struct Options {
    /// From a file or the environment, never from the URL in a config file.
    pub password: Option<Zeroizing<String>>,
    /// A PEM bundle of CAs trusted beside the platform's, for a URL that asks for TLS.
    pub ca_file: Option<PathBuf>,
    pub timeouts: Timeouts,
}

/// Accounts, credentials and relations in PostgreSQL.
pub struct Postgres {
    db: Database,
    keyring: Arc<Keyring>,
}

impl Postgres {
    /// A pool for `url` (`postgres://user@host:port/db?sslmode=require`), with the schema
    /// brought up to date, or refused when it is newer than this binary: what a replica
    /// starts with.
    pub async fn connect(
        url: &str,
        options: Options,
        keyring: Arc<Keyring>,
    ) -> Result<Self, StoreError> {
        let store = Self::open(url, options, keyring)?;
        store.db.migrate(&migrations::IDENTITY).await?;
        Ok(store)
    }

    /// A pool for `url` that leaves the schema as it is, for a command beside the replicas
    /// (`wardgate user` reading the admin token): a command of another release must not
    /// migrate the database under running replicas. Nothing is sent before the first call.
    pub fn open(url: &str, options: Options, keyring: Arc<Keyring>) -> Result<Self, StoreError> {
        Ok(Self {
            db: Database::open(url, options)?,
            keyring,
        })
    }

    /// Whether the database holds no account, relation or shared key: what `wardgate migrate`
    /// writes into.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let client = self.db.client().await?;
        let row = client
            .query_one(
                "SELECT NOT (EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM care_team) \
                 OR EXISTS (SELECT 1 FROM access_requests) OR EXISTS (SELECT 1 FROM shared_keys))",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Locks the user's row for the rest of `tx`, ordering two writes of that user's
    /// records; `NotFound` when there is no such user.
    async fn lock_user(tx: &Transaction<'_>, id: &[u8]) -> Result<(), StoreError> {
        let found = tx
            .query_opt("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&id])
            .await?;
        found.map(drop).ok_or(StoreError::NotFound("user"))
    }
}

/// A pool of connections to one database, every call bounded: what the identity backend and
/// the audit trail's (`audit::postgres`, in a database of its own) are built on.
pub struct Database {
    pool: Pool,
    call_timeout: Duration,
}

impl Database {
    /// A pool for `url`; nothing is sent before the first call.
    pub fn open(url: &str, options: Options) -> Result<Self, StoreError> {
        let verified = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        // The parser's messages may quote the URL's characters, the password's among them.
        let mut config: tokio_postgres::Config = verified.parse().map_err(|_| {
            StoreError::Storage(
                "the PostgreSQL URL is not a valid connection string \
                 (postgres://user@host:port/database?sslmode=require)"
                    .into(),
            )
        })?;
        if let Some(password) = &options.password {
            config.password(password.as_bytes());
        }
        let timeouts = options.timeouts;
        let session = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            timeouts.statement.as_millis(),
            timeouts.call.as_millis()
        );
        let session = match config.get_options() {
            Some(given) => format!("{given} {session}"),
            None => session,
        };
        config
            .options(session)
            .target_session_attrs(TargetSessionAttrs::ReadWrite)
            .connect_timeout(timeouts.connect)
            // A connection whose peer vanished errors out instead of being reused for ever.
            .tcp_user_timeout(timeouts.call);
        let tls = match (config.get_ssl_mode(), &options.ca_file) {
            (SslMode::Require, ca_file) => tls_config(ca_file.as_deref())?,
            (_, Some(_)) => {
                return Err(StoreError::Storage(
                    "a PostgreSQL CA file is set, but the URL does not ask for TLS \
                     (sslmode=require or verify-full)"
                        .into(),
                ));
            }
            (_, None) => {
                config.ssl_mode(SslMode::Disable);
                plain_config()
            }
        };
        let manager = Manager::from_config(
            config,
            MakeRustlsConnect::new(tls),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(timeouts.connect))
            .create_timeout(Some(timeouts.connect))
            .recycle_timeout(Some(timeouts.connect))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|error| StoreError::Storage(format!("PostgreSQL pool: {error}")))?;
        Ok(Self {
            pool,
            call_timeout: timeouts.call,
        })
    }

    /// Brings `schema` up to date, or refuses a newer one ([`migrations::migrate`]).
    pub async fn migrate(&self, schema: &migrations::Schema) -> Result<(), StoreError> {
        self.run(async {
            let mut client = self.client().await?;
            migrations::migrate(&mut client, schema).await
        })
        .await
    }

    /// Runs `work` within the call timeout.
    pub fn run<'a, T: Send + 'a>(
        &'a self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> Pending<'a, T> {
        self.run_within(self.call_timeout, work)
    }

    /// Runs `work` within `limit` (a long read: the whole audit trail).
    pub fn run_within<'a, T: Send + 'a>(
        &'a self,
        limit: Duration,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> Pending<'a, T> {
        Box::pin(async move {
            tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(StoreError::Storage(format!(
                    "PostgreSQL did not answer within {} ms",
                    limit.as_millis()
                )))
            })
        })
    }

    pub async fn client(&self) -> Result<Client, StoreError> {
        self.pool.get().await.map_err(|error| match error {
            PoolError::Backend(error) => error.into(),
            other => StoreError::Storage(format!("PostgreSQL connection: {other}")),
        })
    }
}

impl crate::store::reachable::Remote for Postgres {
    fn name(&self) -> &'static str {
        "postgresql"
    }

    fn ping(&self) -> Pending<'_, ()> {
        self.db.run(async {
            let client = self.db.client().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
    }
}

/// The platform's roots, and the CAs in `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, StoreError> {
    let mut roots = RootCertStore::empty();
    // A broken platform root is skipped: the server's chain is still checked.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let unreadable = |reason: String| {
            StoreError::Storage(format!("PostgreSQL CA file {}: {reason}", path.display()))
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| unreadable(error.to_string()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(unreadable("no CA certificate in the file".into()));
        }
    }
    Ok(ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The connector of a pool that never negotiates TLS (`sslmode=disable`): it trusts nothing.
fn plain_config() -> ClientConfig {
    ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// What a client error says, without the statement's parameters or the URL: the SQLSTATE and
/// message of a database error (its detail, which quotes values, is left out), else the kind
/// and its cause (a refused connection, a TLS failure).
impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        let text = match error.as_db_error() {
            Some(db) => format!("PostgreSQL {}: {}", db.code().code(), db.message()),
            None => {
                let mut text = format!("PostgreSQL: {error}");
                let mut cause = std::error::Error::source(&error);
                while let Some(inner) = cause {
                    text.push_str(&format!(": {inner}"));
                    cause = inner.source();
                }
                text
            }
        };
        StoreError::Storage(text)
    }
}

/// A constraint a write ran into, for the callers that answer `Conflict` or `NotFound`.
enum Violation<'e> {
    /// The unique constraint (or primary key) of this name.
    Unique(&'e str),
    /// A foreign key: the row names a user that does not exist.
    MissingUser,
}

fn violation(error: &tokio_postgres::Error) -> Option<Violation<'_>> {
    let db = error.as_db_error()?;
    match db.code() {
        code if *code == SqlState::UNIQUE_VIOLATION => {
            Some(Violation::Unique(db.constraint().unwrap_or_default()))
        }
        code if *code == SqlState::FOREIGN_KEY_VIOLATION => Some(Violation::MissingUser),
        _ => None,
    }
}

/// Unix seconds, steps and counters fit PostgreSQL's `bigint`; anything else is refused rather
/// than wrapped (a wrapped step would compare as older and let a replay through).
pub(crate) fn bigint(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Storage(format!("{value} does not fit a PostgreSQL bigint")))
}

pub(crate) fn unsigned(column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: negative")))
}

fn user_id(column: &str, bytes: &[u8]) -> Result<UserId, StoreError> {
    <[u8; 16]>::try_from(bytes)
        .map(UserId::from_bytes)
        .map_err(|_| StoreError::Corrupt(format!("{column}: not a 16-byte id")))
}

#[cfg(test)]
#[path = "../../../tests/servers/postgres.rs"]
pub(crate) mod private_postgres;

#[cfg(test)]
pub(crate) mod tests;
