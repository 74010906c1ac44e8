//! The revocation feed over Redis pub/sub: what one replica publishes reaches every replica's
//! session cache at once (one round trip, well within the second the design allows).
//!
//! **The gap.** Pub/sub keeps nothing: a message published while this replica's subscription is
//! down is lost for it, and its cache would go on serving a session ended elsewhere. So the
//! feed says whether it is *live*: from the moment the subscription is lost (the stream ends,
//! or a ping on it goes unanswered for [`PING_EVERY`] plus the call deadline) until it is back,
//! the cache is not trusted (every request reads the store, which answers or refuses), and when
//! it is back every subscriber is told [`Revocation::Everything`] first: whatever was cached
//! before the gap is dropped. A message that does not parse is treated the same way.
//!
//! ```text
//!   connect ─▶ SUBSCRIBE ─▶ Everything, live ─▶ messages ... ─┬─ stream ends / ping fails
//!      ▲                                                       ▼
//!      └──────────────── back-off (200 ms .. 2 s) ◀──── not live, Everything
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::CALL_DEADLINE;
use crate::identity::{SessionKey, UserId};
use crate::store::sessions::{Published, Revocation};

/// How often the subscription is asked whether it still answers.
pub const PING_EVERY: Duration = Duration::from_millis(500);

/// Messages one subscriber may fall behind by before it is told it lagged.
const BACKLOG: usize = 4096;

/// This replica's end of the feed.
#[derive(Clone)]
pub struct Feed {
    local: Arc<broadcast::Sender<Published>>,
    live: Arc<AtomicBool>,
    channel: Arc<str>,
}

impl Feed {
    /// Subscribes to `channel` in a task of its own, for as long as this feed (or a clone) lives.
    pub(super) fn follow(client: redis::Client, channel: String) -> Self {
        let feed = Self {
            local: Arc::new(broadcast::channel(BACKLOG).0),
            live: Arc::new(AtomicBool::new(false)),
            channel: channel.into(),
        };
        let pump = Pump {
            local: Arc::downgrade(&feed.local),
            live: feed.live.clone(),
            channel: feed.channel.clone(),
        };
        tokio::spawn(pump.run(client));
        feed
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether every revocation published since the last [`Revocation::Everything`] has arrived.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.local.subscribe()
    }
}

struct Pump {
    local: Weak<broadcast::Sender<Published>>,
    live: Arc<AtomicBool>,
    channel: Arc<str>,
}

impl Pump {
    async fn run(self, client: redis::Client) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.local.strong_count() == 0 {
                return;
            }
            match self.subscribed(&client).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(cause) => {
                    if self.live.swap(false, Ordering::SeqCst) {
                        tracing::error!(
                            cause,
                            "the session revocation feed is down: cached sessions are not trusted until it is back"
                        );
                    }
                    self.send(Revocation::Everything);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Follows the channel until the subscription is lost (an error) or the feed is dropped.
    async fn subscribed(&self, client: &redis::Client) -> Result<(), &'static str> {
        let pubsub = tokio::time::timeout(CALL_DEADLINE, client.get_async_pubsub())
            .await
            .map_err(|_| "connecting timed out")?
            .map_err(|_| "cannot connect")?;
        let (mut sink, mut stream) = pubsub.split();
        tokio::time::timeout(CALL_DEADLINE, sink.subscribe(&*self.channel))
            .await
            .map_err(|_| "subscribing timed out")?
            .map_err(|_| "subscribing failed")?;
        // Whatever was published before this point may have been missed.
        self.send(Revocation::Everything);
        if !self.live.swap(true, Ordering::SeqCst) {
            tracing::info!("the session revocation feed is live");
        }
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return Err("the subscription ended") };
                    let revocation = parse(message.get_payload_bytes()).unwrap_or_else(|| {
                        tracing::warn!("a revocation message does not parse: every cached session is dropped");
                        Published { origin: 0, revocation: Revocation::Everything }
                    });
                    if !self.forward(revocation) {
                        return Ok(());
                    }
                }
                _ = ping.tick() => {
                    if self.local.strong_count() == 0 {
                        return Ok(());
                    }
                    match tokio::time::timeout(CALL_DEADLINE, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        _ => return Err("the subscription does not answer"),
                    }
                }
            }
        }
    }

    fn send(&self, revocation: Revocation) {
        self.forward(Published {
            origin: 0,
            revocation,
        });
    }

    /// False once nobody holds the feed.
    fn forward(&self, published: Published) -> bool {
        match self.local.upgrade() {
            // No subscriber is no error: then no cache holds anything stale.
            Some(local) => {
                let _ = local.send(published);
                true
            }
            None => false,
        }
    }
}

/// `<origin hex> <kind> <id hex>`: `s` a session key, `u` every session of a user, `r` a user's
/// account to read again, `*` everything.
pub(super) fn encode(published: &Published) -> String {
    let origin = published.origin;
    match published.revocation {
        Revocation::Session(key) => format!("{origin:x} s {key}"),
        Revocation::User(user) => format!("{origin:x} u {}", hex::encode(user.as_bytes())),
        Revocation::Refresh(user) => format!("{origin:x} r {}", hex::encode(user.as_bytes())),
        Revocation::Everything => format!("{origin:x} *"),
    }
}

fn parse(message: &[u8]) -> Option<Published> {
    let text = std::str::from_utf8(message).ok()?;
    let mut words = text.split(' ');
    let origin = u64::from_str_radix(words.next()?, 16).ok()?;
    let user = |id: Option<&str>| -> Option<UserId> {
        let bytes: [u8; 16] = hex::decode(id?).ok()?.try_into().ok()?;
        Some(UserId::from_bytes(bytes))
    };
    let revocation = match words.next()? {
        "s" => Revocation::Session(words.next()?.parse::<SessionKey>().ok()?),
        "u" => Revocation::User(user(words.next())?),
        "r" => Revocation::Refresh(user(words.next())?),
        "*" => Revocation::Everything,
        _ => return None,
    };
    words
        .next()
        .is_none()
        .then_some(Published { origin, revocation })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_revocation_survives_the_wire_and_nothing_else_parses() {
        let alice = UserId::from_bytes([1; 16]);
        for revocation in [
            Revocation::Session(SessionKey([9; 32])),
            Revocation::User(alice),
            Revocation::Refresh(alice),
            Revocation::Everything,
        ] {
            let published = Published {
                origin: u64::MAX,
                revocation,
            };
            assert_eq!(parse(encode(&published).as_bytes()), Some(published));
        }
        for bad in [
            "",
            "1",
            "1 s",
            "1 s abc",
            "1 u 0101",
            "x s 00",
            "1 q",
            "1 * extra",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
