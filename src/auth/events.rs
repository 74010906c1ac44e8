//! Security events: the one channel through which login, lockout, enrollment, recovery-code use,
//! password changes and session ends are reported.
//!
//! **The threat.** An attack nobody sees: a password-spraying run, a lockout storm, a recovery
//! code spent by someone else, scattered across ad-hoc log lines or missing from them.
//! **The rule.** Every such event is a typed [`SecurityEvent`], emitted through
//! [`SecurityEvents::emit`], which writes it to the log (target `wardgate::security`, one JSON
//! record) and hands it to subscribers (the audit trail will be one). Events never carry a
//! password, a code, a token or a secret; a user name typed at login is recorded only when it
//! names an existing account, so a password typed into the user field never reaches the log.
//! **The standard.** OWASP ASVS 5 V16 (security logging), NIST SP 800-92, HIPAA 164.312(b)
//! (audit controls).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

/// A second factor: the one proven, or (in `auth.mfa`) one an account may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Factor {
    #[serde(rename = "totp")]
    Totp,
    #[serde(rename = "webauthn")]
    WebAuthn,
    #[serde(rename = "recovery_code")]
    RecoveryCode,
}

impl Factor {
    pub fn name(self) -> &'static str {
        match self {
            Factor::Totp => "totp",
            Factor::WebAuthn => "webauthn",
            Factor::RecoveryCode => "recovery_code",
        }
    }
}

/// What was locked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Locked {
    Account(String),
    Address(IpAddr),
    SecondFactor(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityEvent {
    LoginSucceeded {
        user: String,
        factor: Factor,
        client: IpAddr,
    },
    /// `user` is `None` when the name given is not an account.
    LoginFailed {
        user: Option<String>,
        client: IpAddr,
        stage: &'static str,
    },
    LockedOut {
        what: Locked,
        /// Unix seconds.
        until: u64,
    },
    RecoveryCodeUsed {
        user: String,
        client: IpAddr,
        left: usize,
    },
    StepUp {
        user: String,
        factor: Factor,
    },
    /// A second factor proven and stored: at enrollment, or a passkey added later.
    FactorAdded {
        user: String,
        factor: Factor,
    },
    PasswordSet {
        user: String,
    },
    /// An operator's change to an account: `created`, `account_disabled`, `account_enabled`,
    /// `mfa_reset`, `password_reset`, `operator_logout`, `roles_set`.
    AccountChanged {
        user: String,
        action: &'static str,
    },
    /// Logout, logout everywhere, or an operator's action.
    SessionsEnded {
        user: String,
        reason: &'static str,
        count: usize,
    },
    /// An access request or grant changed: `requested`, `approved`, `denied`, `revoked`,
    /// `break_glass_opened`, `break_glass_reviewed`; `user` is who acted.
    AccessChanged {
        user: String,
        action: &'static str,
        grant: String,
    },
}

impl SecurityEvent {
    /// The stable event name in the log.
    pub fn name(&self) -> &'static str {
        match self {
            SecurityEvent::LoginSucceeded { .. } => "login_succeeded",
            SecurityEvent::LoginFailed { .. } => "login_failed",
            SecurityEvent::LockedOut { .. } => "locked_out",
            SecurityEvent::RecoveryCodeUsed { .. } => "recovery_code_used",
            SecurityEvent::StepUp { .. } => "step_up",
            SecurityEvent::FactorAdded { .. } => "factor_added",
            SecurityEvent::PasswordSet { .. } => "password_set",
            SecurityEvent::AccountChanged { .. } => "account_changed",
            SecurityEvent::SessionsEnded { .. } => "sessions_ended",
            SecurityEvent::AccessChanged { .. } => "access_changed",
        }
    }

    /// The event's fields as JSON (what the log record and the audit trail carry).
    pub fn fields(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            SecurityEvent::LoginSucceeded {
                user,
                factor,
                client,
            } => json!({ "user": user, "factor": factor.name(), "client": client.to_string() }),
            SecurityEvent::LoginFailed {
                user,
                client,
                stage,
            } => json!({ "user": user, "client": client.to_string(), "stage": stage }),
            SecurityEvent::LockedOut { what, until } => {
                let (kind, subject) = match what {
                    Locked::Account(user) => ("account", user.clone()),
                    Locked::Address(ip) => ("address", ip.to_string()),
                    Locked::SecondFactor(user) => ("second_factor", user.clone()),
                };
                json!({ "kind": kind, "subject": subject, "until": until })
            }
            SecurityEvent::RecoveryCodeUsed { user, client, left } => {
                json!({ "user": user, "client": client.to_string(), "codes_left": left })
            }
            SecurityEvent::StepUp { user, factor }
            | SecurityEvent::FactorAdded { user, factor } => {
                json!({ "user": user, "factor": factor.name() })
            }
            SecurityEvent::PasswordSet { user } => json!({ "user": user }),
            SecurityEvent::AccountChanged { user, action } => {
                json!({ "user": user, "action": action })
            }
            SecurityEvent::SessionsEnded {
                user,
                reason,
                count,
            } => json!({ "user": user, "reason": reason, "count": count }),
            SecurityEvent::AccessChanged {
                user,
                action,
                grant,
            } => json!({ "user": user, "action": action, "grant": grant }),
        }
    }
}

/// How many events a subscriber may fall behind before `emit` waits for it.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// The channel. Cheap to clone; built once at start.
///
/// Lossless: each subscriber has a bounded queue, and [`SecurityEvents::emit`] waits while one
/// is full. A slow subscriber (the audit trail writing to disk) slows the requests that cause
/// events instead of missing any; a subscriber that has gone is forgotten.
#[derive(Clone, Default)]
pub struct SecurityEvents {
    subscribers: Arc<Mutex<Vec<mpsc::Sender<Arc<SecurityEvent>>>>>,
}

impl SecurityEvents {
    pub fn new() -> Self {
        Self::default()
    }

    /// Logs the event and hands it to every subscriber, waiting for room in each queue.
    pub async fn emit(&self, event: SecurityEvent) {
        tracing::info!(
            target: "wardgate::security",
            event = event.name(),
            fields = %event.fields(),
        );
        let subscribers = self.lock().clone();
        if subscribers.is_empty() {
            return;
        }
        let event = Arc::new(event);
        let mut gone = false;
        for subscriber in &subscribers {
            gone |= subscriber.send(event.clone()).await.is_err();
        }
        if gone {
            self.lock().retain(|subscriber| !subscriber.is_closed());
        }
    }

    /// Every event from now on, in order; dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> mpsc::Receiver<Arc<SecurityEvent>> {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_QUEUE);
        self.lock().push(sender);
        receiver
    }

    fn lock(&self) -> MutexGuard<'_, Vec<mpsc::Sender<Arc<SecurityEvent>>>> {
        // A panic while holding the lock leaves at most a subscriber too many: keep using it.
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Duration;

    fn event(n: usize) -> SecurityEvent {
        SecurityEvent::PasswordSet {
            user: format!("user{n}"),
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_misses_nothing() {
        let events = SecurityEvents::new();
        let mut seen = events.subscribe();
        let count = 3 * SUBSCRIBER_QUEUE;
        let emitting = events.clone();
        let emitter = tokio::spawn(async move {
            for n in 0..count {
                emitting.emit(event(n)).await;
            }
        });
        for n in 0..count {
            if n % 100 == 0 {
                tokio::task::yield_now().await;
            }
            let got = tokio::time::timeout(Duration::from_secs(10), seen.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(*got, event(n));
        }
        emitter.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_emitter_until_there_is_room() {
        let events = SecurityEvents::new();
        let mut seen = events.subscribe();
        for n in 0..SUBSCRIBER_QUEUE {
            events.emit(event(n)).await;
        }
        let mut next = std::pin::pin!(events.emit(event(SUBSCRIBER_QUEUE)));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(next.as_mut().poll(&mut cx).is_pending(), "the event waits");
        assert_eq!(*seen.recv().await.unwrap(), event(0));
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("room again: the event goes in");
    }

    #[tokio::test]
    async fn a_subscriber_that_left_is_forgotten() {
        let events = SecurityEvents::new();
        drop(events.subscribe());
        let kept = events.subscribe();
        for n in 0..2 {
            events.emit(event(n)).await;
        }
        assert_eq!(events.lock().len(), 1);
        drop(kept);
    }
}
