//! Whether the stores outside the process answer, asked every second: `/readyz` and the log
//! say when one stops answering (and when it is back) before a request has to find out, so a
//! load balancer sends traffic to the replicas that can serve it. Requests never wait for this
//! watch: each call has its own deadline and refuses on its own (`WG-STORE-001`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Pending;

/// How often each store is asked.
pub const EVERY: Duration = Duration::from_secs(1);

/// A store outside the process.
pub trait Remote: Send + Sync {
    /// What operators call it (`redis`, `postgresql`).
    fn name(&self) -> &'static str;
    /// Answers when the store does, within the store's call deadline.
    fn ping(&self) -> Pending<'_, ()>;
}

/// The stores outside the process and whether each answered last time; none for the
/// embedded backend.
#[derive(Default)]
pub struct Reachability {
    remotes: Vec<(Arc<dyn Remote>, AtomicBool)>,
}

impl Reachability {
    /// Each store counts as unreachable until it has answered once.
    pub fn new(remotes: Vec<Arc<dyn Remote>>) -> Self {
        Self {
            remotes: remotes
                .into_iter()
                .map(|remote| (remote, AtomicBool::new(false)))
                .collect(),
        }
    }

    /// These stores and `remote`.
    pub fn and(&self, remote: Arc<dyn Remote>) -> Self {
        let mut remotes: Vec<_> = self
            .remotes
            .iter()
            .map(|(known, _)| known.clone())
            .collect();
        remotes.push(remote);
        Self::new(remotes)
    }

    /// The first store that did not answer last time.
    pub fn unreachable(&self) -> Option<&'static str> {
        self.remotes
            .iter()
            .find(|(_, up)| !up.load(Ordering::SeqCst))
            .map(|(remote, _)| remote.name())
    }

    /// Asks every store once, and logs what changed.
    pub async fn ask(&self) {
        for (remote, up) in &self.remotes {
            let answered = remote.ping().await;
            let was = up.swap(answered.is_ok(), Ordering::SeqCst);
            match answered {
                Err(error) if was => tracing::error!(
                    store = remote.name(),
                    %error,
                    "a shared store stopped answering: protected routes refuse (WG-STORE-001) until it is back; public routes go on, rate limited by each replica alone"
                ),
                Err(error) => tracing::debug!(store = remote.name(), %error, "still not answering"),
                Ok(()) if !was => tracing::info!(store = remote.name(), "the shared store answers"),
                Ok(()) => {}
            }
        }
    }

    /// Asks every [`EVERY`], for the gateway's lifetime.
    pub async fn watch(self: Arc<Self>) {
        if self.remotes.is_empty() {
            return;
        }
        let mut every = tokio::time::interval(EVERY);
        loop {
            every.tick().await;
            self.ask().await;
        }
    }
}
