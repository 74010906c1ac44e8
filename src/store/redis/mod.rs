//! The shared-state backend for several replicas: session records and their revocation feed,
//! ceremonies, lockout counters and rate limits in one Redis, so that every replica sees the
//! same state (cargo feature `redis`).
//!
//! **The threat.** Replicas that each keep their own state hand an attacker N times the
//! guesses, let a session ended on one replica live on in another's cache, and let a TOTP code
//! or a WebAuthn ceremony be used once per replica. Worse is a replica that quietly falls back
//! to its own memory while Redis is away: it stops enforcing revocations and lockouts and says
//! nothing (the failure the anchors of this design describe).
//!
//! **The rules.**
//! - *Fail closed.* Every call is bounded (connect and response timeouts, and a deadline around
//!   the whole call): a Redis that does not answer is an error within [`CALL_DEADLINE`], the
//!   request path refuses (503) and `/readyz` says why. Nothing falls back to memory; the
//!   connection comes back by itself and so does the gateway.
//! - *Atomic where the contracts ask for it.* Every check-and-set is one Lua script (Redis runs
//!   each alone), so two replicas racing on one key see one outcome.
//! - *Sealed at rest.* Session records and ceremony state are sealed with the identity keyring
//!   (the master key every replica holds) before they leave the process: whoever reads Redis
//!   learns no session's client, no ceremony's TOTP seed. Keys are hashes, never tokens.
//! - *One Redis, not a cluster.* The scripts touch keys they compute (a user's index beside an
//!   entry), which Redis Cluster refuses across slots; a replicated Redis (Sentinel) is fine.
//!
//! ```text
//!   <prefix>:session:<key hex>            hash  r = sealed record, t = last seen, u = user
//!   <prefix>:sessions                     set   every session key
//!   <prefix>:user-sessions:<user hex>     set   the user's session keys
//!   <prefix>:revocations                  pub/sub channel of the revocation feed
//!   <prefix>:ceremony:<space>:<id>        hash  u, v = sealed value, x = expiry, n = serial
//!   <prefix>:ceremony-space:<space>       zset  id by expiry (capacity, pruning)
//!   <prefix>:ceremony-user:<space>:<user> zset  id by serial (the user's oldest first)
//!   <prefix>:ceremony-spaces:<user>       set   spaces where the user holds entries
//!   <prefix>:limit:<kind>:<scope>:<key>   string  a rate limit's TAT (`limiter.rs`)
//!   <prefix>:lockout:<table>:<key>        hash  a lockout entry (`lockouts.rs`)
//!   <prefix>:lockout-places:<table>:<key> zset  its attempts in flight
//!   <prefix>:lockouts:<table>             zset  every entry of the table by expiry
//! ```

mod ephemeral;
mod feed;
mod limiter;
mod lockouts;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::identity::{Keyring, StoreError};

pub use feed::Feed;
pub use limiter::RedisLimiter;
pub use lockouts::RedisLockouts;

/// The longest any one call to Redis may take, connecting included.
pub const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// One Redis, shared by every replica.
#[derive(Clone)]
pub struct Redis {
    connection: ConnectionManager,
    keyring: Arc<Keyring>,
    prefix: Arc<str>,
    feed: Feed,
}

impl Redis {
    /// Connects lazily to `url` (`redis://`, or `rediss://` for TLS, verified against `ca`
    /// (PEM) when given, else the platform's roots); `password`, when given, replaces any in
    /// the URL. Keys start with
    /// `prefix`, so that two deployments can share one server. Nothing is sent before the
    /// first call, so a Redis that is down at start is a gateway that is not ready, not one
    /// that does not start.
    pub fn connect(
        url: &str,
        password: Option<&str>,
        ca: Option<Vec<u8>>,
        prefix: &str,
        keyring: Arc<Keyring>,
    ) -> Result<Self, StoreError> {
        let mut info: redis::ConnectionInfo = url.parse().map_err(|error: redis::RedisError| {
            StoreError::Storage(format!(
                "shared_state.url is not a Redis URL ({:?})",
                error.kind()
            ))
        })?;
        if let Some(password) = password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = match ca {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_DEADLINE / 2))
            .set_response_timeout(Some(CALL_DEADLINE / 2))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = client
            .get_connection_manager_lazy(config)
            .map_err(unavailable)?;
        let prefix: Arc<str> = prefix.into();
        let feed = Feed::follow(client, format!("{prefix}:revocations"));
        Ok(Self {
            connection,
            keyring,
            prefix,
            feed,
        })
    }

    /// The key `<prefix>:<kind>:<rest>`.
    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}:{kind}:{rest}", self.prefix)
    }

    /// Runs `script` on `keys` and `args`, within [`CALL_DEADLINE`].
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.connection.clone();
        bounded(invocation.invoke_async(&mut connection)).await
    }

    /// Runs one command within [`CALL_DEADLINE`].
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        bounded(command.query_async(&mut connection)).await
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }
}

impl crate::store::reachable::Remote for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn ping(&self) -> crate::store::Pending<'_, ()> {
        Box::pin(Redis::ping(self))
    }
}

async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_DEADLINE, call).await {
        Ok(answer) => answer.map_err(unavailable),
        Err(_) => Err(StoreError::Storage(format!(
            "redis did not answer within {} ms",
            CALL_DEADLINE.as_millis()
        ))),
    }
}

/// What went wrong, by kind and category: never the URL (it may carry a password) nor a value.
fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Storage(format!("redis: {} ({:?})", error.category(), error.kind()))
}

#[cfg(test)]
#[path = "../../../tests/servers/redis.rs"]
mod private_redis;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::MasterKey;

    /// A store on a fresh private server (returned too: it stops when dropped).
    pub(super) fn on_private_server() -> (private_redis::PrivateRedis, Redis) {
        let server = private_redis::PrivateRedis::start();
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let redis = Redis::connect(&server.url(), None, None, "wg-test", keyring).unwrap();
        (server, redis)
    }

    #[tokio::test]
    async fn rediss_is_verified_against_the_ca_given_and_nothing_else() {
        let ca = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(params.clone(), ca);
        let root = params.self_signed(issuer.key()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let server = private_redis::PrivateRedis::start_tls(&leaf.pem(), &key.serialize_pem());
        assert!(server.url().starts_with("rediss://"));
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let trusted = Some(root.pem().into_bytes());
        let redis = Redis::connect(&server.url(), None, trusted, "wg", keyring.clone()).unwrap();
        redis.ping().await.unwrap();
        let unknown = Redis::connect(&server.url(), None, None, "wg", keyring).unwrap();
        assert!(
            unknown.ping().await.is_err(),
            "a certificate no root vouches for"
        );
    }

    /// Asks until Redis answers again (the connection comes back by itself).
    async fn answers_again(redis: &Redis) {
        for _ in 0..100 {
            if redis.ping().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis did not answer again");
    }

    /// A call that never returns would hold a request forever: this bound only tells a hang
    /// from an answer, the deadline itself is far shorter.
    async fn no_hang<T>(call: impl Future<Output = T>) -> T {
        tokio::time::timeout(CALL_DEADLINE * 5, call)
            .await
            .expect("the call gave up by itself")
    }

    #[tokio::test]
    async fn a_stopped_or_frozen_server_is_an_error_and_recovery_needs_no_restart() {
        let (server, redis) = on_private_server();
        redis.ping().await.unwrap();
        server.stop();
        let error = no_hang(redis.ping()).await.unwrap_err();
        assert!(error.to_string().contains("redis: "), "{error}");
        server.start_again();
        answers_again(&redis).await;
        server.pause();
        assert!(no_hang(redis.ping()).await.is_err(), "nothing answers");
        server.resume();
        answers_again(&redis).await;
    }

    /// What `shared_state` wires in (`Counters::Redis`): the login lockouts and the limiter of
    /// two replicas count together.
    #[tokio::test]
    async fn the_counters_of_two_replicas_are_one() {
        use crate::auth::lockout::LockoutConfig;
        use crate::auth::login::LoginLockouts;
        use crate::identity::UserId;
        use crate::ratelimit::{LimitSpec, LimitTable, RateLimits, Stage, Subject};
        use crate::store::counters::Counters;

        let (server, redis) = on_private_server();
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let other = Redis::connect(&server.url(), None, None, "wg-test", keyring).unwrap();
        let replicas = [Counters::Redis(redis), Counters::Redis(other)];
        let policy = LockoutConfig::default().policy().unwrap();
        let lockouts = replicas.each_ref().map(|c| LoginLockouts::new(c, policy));
        let alice = UserId::from_bytes([1; 16]);
        for i in 0..5 {
            let attempt = lockouts[i % 2]
                .accounts
                .admit(&alice, 1_000 + i as u64)
                .await;
            attempt.unwrap().unwrap().failed(1_000).await.unwrap();
        }
        let locked = lockouts[1].accounts.admit(&alice, 1_010).await.unwrap();
        assert!(locked.is_err(), "five failures over two replicas lock");
        let factors = lockouts[1].factors.admit(&alice, 1_010).await.unwrap();
        assert!(factors.is_ok(), "the second-factor table is apart");

        let limits = RateLimits {
            per_client: Some(LimitSpec::new(1, Duration::from_secs(60), 2).unwrap()),
            ..RateLimits::default()
        };
        let table = LimitTable::new(&limits, []).unwrap();
        let limiters = replicas.each_ref().map(|c| c.limiter(&table));
        let subject = Subject {
            stage: Stage::Anonymous,
            route: "api",
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            user: None,
            public: false,
        };
        assert!(limiters[0].check(&subject).await.is_allowed());
        assert!(limiters[1].check(&subject).await.is_allowed());
        assert!(
            !limiters[0].check(&subject).await.is_allowed(),
            "one budget"
        );
    }

    #[test]
    fn errors_never_carry_the_url_or_its_password() {
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let error = Redis::connect("redis://:hunter2@[::1", None, None, "wg", keyring)
            .err()
            .unwrap();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
