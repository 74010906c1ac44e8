//! Upkeep: one supervised task that forgets what has expired.
//!
//! Sessions, login challenges, enrollment ceremonies, lockout entries and rate-limiter keys all
//! end by time. Each is checked when it is read, so nothing expired is ever honoured; but what
//! nobody reads again would stay: a dead session in `identity.redb` until someone presents its
//! token, a lockout table sitting full until its bound evicts. HIPAA 164.312(a)(2)(iii) asks for
//! sessions that end; this makes them leave the store too.
//!
//! ```text
//!   every minute ──► sweep(now) ──► login       lockout entries past their window, challenges
//!                                   enrollment  ceremonies past their time-to-live
//!                                   sessions    dead ones deleted from the store
//!                                   limiter     keys whose bucket is full again (blocking pool)
//!                        │
//!                        ├─ done ──────► wardgate_upkeep_removed_total{kind}
//!                        └─ failed ────► a warning, wardgate_upkeep_failures_total;
//!                           or panicked  the next tick sweeps again
//! ```
//!
//! Supervised: each sweep runs as a task of its own, so one that panics is logged and counted
//! and never ends the upkeep for the rest of the process's life. Time is a parameter: [`sweep`]
//! takes `now`; only [`run`], the edge, reads the clock.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::pipeline::{Gateway, Removed};
use crate::session::SessionError;
use crate::telemetry::Telemetry;

/// How often the server sweeps.
pub const EVERY: Duration = Duration::from_secs(60);

impl Removed {
    /// Each count under its metric label.
    fn by_kind(&self) -> [(&'static str, usize); 5] {
        [
            ("sessions", self.sessions),
            ("challenges", self.challenges),
            ("enrollments", self.enrollments),
            ("lockouts", self.lockouts),
            ("limiter_keys", self.limiter_keys),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpkeepError {
    #[error("the session store could not be swept: {0}")]
    Sessions(#[from] SessionError),
    #[error("the sweep panicked")]
    Panicked,
}

/// Removes everything that is expired at `now` (unix seconds).
pub async fn sweep(gateway: &Gateway, now: u64) -> Result<Removed, UpkeepError> {
    let mut removed = gateway.prune(now).await?;
    let limiter = gateway.limiter().clone();
    // A full table takes tens of milliseconds to scan: off the request threads.
    removed.limiter_keys = tokio::task::spawn_blocking(move || {
        let before = limiter.key_count();
        limiter.evict_idle();
        before.saturating_sub(limiter.key_count())
    })
    .await
    .map_err(|_| UpkeepError::Panicked)?;
    Ok(removed)
}

/// Sweeps every `every`, forever, the first time at once: the server spawns it beside the
/// listeners and aborts it at shutdown.
pub async fn run(gateway: Arc<Gateway>, clock: Clock, every: Duration) {
    // `interval` refuses a zero period.
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = clock();
        let sweeping = gateway.clone();
        let outcome = tokio::spawn(async move { sweep(&sweeping, now).await })
            .await
            .unwrap_or(Err(UpkeepError::Panicked));
        report(gateway.telemetry(), outcome);
    }
}

fn report(telemetry: &Telemetry, outcome: Result<Removed, UpkeepError>) {
    match outcome {
        Ok(removed) => {
            tracing::debug!(?removed, "upkeep sweep done");
            for (kind, count) in removed.by_kind() {
                telemetry.upkeep_removed(kind, count);
            }
        }
        Err(error) => {
            tracing::warn!(%error, "upkeep sweep failed; the next one retries");
            telemetry.upkeep_failed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assertion::AssertionKey;
    use crate::auth::events::SecurityEvents;
    use crate::identity::{EmbeddedStore, Keyring, MasterKey, User, UserId};
    use crate::pipeline::Identity;
    use crate::session::NewSession;
    use crate::store::Stores;
    use std::net::IpAddr;

    const T0: u64 = 1_800_000_000;
    const CONFIG: &str = r#"version: 1
listen: { https: "127.0.0.1:0", admin: null }
tls: { cert: gateway.crt, key: gateway.key }
store: { dev_generate_key: true }
session: { idle_timeout: 15m, absolute_timeout: 1h }
upstreams: { backend: { url: "http://127.0.0.1:9" } }
routes:
  - { path: /**, upstream: backend, auth: none }
"#;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<EmbeddedStore>,
        gateway: Arc<Gateway>,
        alice: User,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let loaded = crate::config::parse(&dir.path().join("gateway.yaml"), CONFIG).unwrap();
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let store = Arc::new(EmbeddedStore::open(dir.path(), keyring.clone()).unwrap());
        let alice = User::new(UserId::random(&mut rand::rng()), "alice", T0);
        store.create_user(&alice).unwrap();
        let (assertion, _) =
            AssertionKey::load_or_create(&dir.path().join("assertion.key")).unwrap();
        let identity = Identity {
            stores: Stores::embedded(store.clone()),
            keyring,
            assertion,
            events: SecurityEvents::new(),
            audit: None,
        };
        let settings = crate::settings::compile(&loaded).unwrap();
        let gateway =
            Gateway::new(settings, Telemetry::new(false), identity, Arc::new(|| T0)).unwrap();
        Fixture {
            _dir: dir,
            store,
            gateway: Arc::new(gateway),
            alice,
        }
    }

    impl Fixture {
        /// A session opened at `T0`; its token.
        async fn session(&self) -> String {
            let sessions = self.gateway.sessions();
            let new = NewSession {
                user: &self.alice,
                client: IpAddr::from([192, 0, 2, 1]),
                user_agent: "test agent",
            };
            let (token, _) = sessions.create(new, sessions.epoch(), T0).await.unwrap();
            token.as_str().to_owned()
        }

        fn stored(&self, token: &str) -> bool {
            self.store.session(token.as_bytes()).unwrap().is_some()
        }
    }

    #[tokio::test]
    async fn a_sweep_deletes_a_dead_session_from_the_store_and_keeps_a_live_one() {
        let f = fixture();
        let token = f.session().await;
        let removed = sweep(&f.gateway, T0 + 15 * 60 - 1).await.unwrap();
        assert_eq!(removed.sessions, 0);
        assert!(
            f.stored(&token),
            "still live a second before its idle timeout"
        );
        let removed = sweep(&f.gateway, T0 + 15 * 60).await.unwrap();
        assert_eq!(removed.sessions, 1);
        assert!(!f.stored(&token), "idle: gone from the store");
    }

    #[tokio::test]
    async fn the_task_sweeps_at_once_and_reports_in_metrics() {
        let f = fixture();
        let token = f.session().await;
        let clock: Clock = Arc::new(|| T0 + 3600);
        let task = tokio::spawn(run(f.gateway.clone(), clock, Duration::from_secs(3600)));
        // The first tick is immediate; this waits for the sweep, not for time to pass.
        let metric = r#"wardgate_upkeep_removed_total{kind="sessions"} 1"#;
        tokio::time::timeout(Duration::from_secs(10), async {
            while !f.gateway.telemetry().render().contains(metric) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        task.abort();
        assert!(!f.stored(&token));
        let metrics = f.gateway.telemetry().render();
        for kind in ["challenges", "enrollments", "lockouts", "limiter_keys"] {
            assert!(
                metrics.contains(&format!(
                    r#"wardgate_upkeep_removed_total{{kind="{kind}"}} 0"#
                )),
                "{metrics}"
            );
        }
    }

    #[test]
    fn a_failed_sweep_is_counted() {
        let telemetry = Telemetry::new(false);
        report(&telemetry, Err(UpkeepError::Panicked));
        assert!(
            telemetry
                .render()
                .contains("wardgate_upkeep_failures_total 1")
        );
    }
}
