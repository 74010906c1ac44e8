//! The admin listener: `/healthz`, `/readyz`, Prometheus `/metrics`, and account management
//! under `/admin/users` ([`users`]).
//!
//! It listens on loopback by default and serves no patient data. Health and metrics are open
//! (load balancers and Prometheus scrape them); account management needs the admin token. Anything
//! else is 404. `/readyz` turns 503 as soon as shutdown starts, so a load balancer stops sending
//! new work before the drain.

pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::auth::events::{SecurityEvent, SecurityEvents};
use crate::body::ResponseBody;
use crate::identity::IdentityStore;
use crate::refusal::Refusal;
use crate::telemetry::Telemetry;
use users::AdminError;

/// The admin token's file name inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// Admin request bodies are small JSON documents.
const MAX_BODY: usize = 64 * 1024;

/// The secret that `wardgate user …` presents to the running gateway: 256 random bits as 64
/// lower-case hex digits, nothing else. An empty or cut-short file (a crash during the first
/// start, or a file provisioned empty) is refused at start instead of comparing equal to an
/// empty presented token.
pub struct AdminToken(String);

/// The token's length in hex digits.
const TOKEN_HEX_DIGITS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: crate::secret_file::SecretFileError,
    },
    #[error(
        "{} is not an admin token (it must be {TOKEN_HEX_DIGITS} hex digits; the file is empty, \
         cut short or edited). Delete it to have a new one generated at the next start",
        path.display()
    )]
    Malformed { path: PathBuf },
}

impl AdminToken {
    /// Reads `<dir>/admin.token`, creating it (mode 0600, written atomically) from 256 bits of
    /// `rng` when it is missing. A token file that anyone but its owner can read is refused: it
    /// is an operator's key.
    pub fn load_or_create(
        dir: &Path,
        rng: &mut dyn rand::CryptoRng,
    ) -> Result<Self, AdminTokenError> {
        let path = token_path(dir);
        let failed = |source| AdminTokenError::File {
            path: path.clone(),
            source,
        };
        match Self::load(&path) {
            Err(AdminTokenError::File { source, .. }) if source.is_missing() => {}
            other => return other,
        }
        let mut bits = [0u8; 32];
        rng.fill_bytes(&mut bits);
        let token: String = bits.iter().map(|byte| format!("{byte:02x}")).collect();
        match crate::secret_file::create_new(&path, token.as_bytes()) {
            Ok(()) => Ok(Self(token)),
            // Another process created it between our read and our link: use theirs.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Self::load(&path),
            Err(error) => Err(failed(error.into())),
        }
    }

    fn load(path: &Path) -> Result<Self, AdminTokenError> {
        let text =
            crate::secret_file::read(path, 4 * TOKEN_HEX_DIGITS as u64).map_err(|source| {
                AdminTokenError::File {
                    path: path.to_owned(),
                    source,
                }
            })?;
        let token = text.trim();
        if token.len() != TOKEN_HEX_DIGITS || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AdminTokenError::Malformed {
                path: path.to_owned(),
            });
        }
        Ok(Self(token.to_owned()))
    }

    /// A presented token matches only when it is not empty and equal, in constant time.
    fn matches(&self, presented: &[u8]) -> bool {
        !presented.is_empty() && bool::from(self.0.as_bytes().ct_eq(presented))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

pub fn token_path(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE)
}

/// What the admin listener serves.
pub struct Admin {
    pub telemetry: Arc<Telemetry>,
    pub ready: Arc<AtomicBool>,
    pub store: Arc<dyn IdentityStore>,
    pub sessions: Arc<crate::session::Sessions>,
    pub token: AdminToken,
    pub enrollment_ttl: Duration,
    pub clock: crate::clock::Clock,
    pub events: SecurityEvents,
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn admin_error(error: AdminError) -> Response<ResponseBody> {
    let refusal = error.refusal();
    let mut response = text(refusal.status(), "application/json", refusal.body());
    if error == AdminError::Unauthorized {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

impl Admin {
    pub async fn answer(self: Arc<Self>, request: Request<Incoming>) -> Response<ResponseBody> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().map(str::to_owned);
        if let Some(rest) = path.strip_prefix("/admin/sessions") {
            return match self.session_call(request, rest, query.as_deref()).await {
                Ok((status, value)) => text(status, "application/json", value.to_string()),
                Err(error) => admin_error(error),
            };
        }
        if let Some(rest) = path.strip_prefix("/admin/users") {
            return match self.users(request, rest.to_owned()).await {
                Ok((status, value)) => text(status, "application/json", value.to_string()),
                Err(error) => admin_error(error),
            };
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return Refusal::AdminNotFound.response();
        }
        match path.as_str() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" if self.ready.load(Ordering::SeqCst) => {
                text(StatusCode::OK, "text/plain", "ready\n")
            }
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "shutting down\n",
            ),
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.telemetry.render(),
            ),
            _ => Refusal::AdminNotFound.response(),
        }
    }

    fn authorize(&self, request: &Request<Incoming>) -> Result<(), AdminError> {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        if self.token.matches(&presented) {
            Ok(())
        } else {
            Err(AdminError::Unauthorized)
        }
    }

    /// `GET /admin/sessions[?user=name]`, `DELETE /admin/sessions/{id}`.
    async fn session_call(
        &self,
        request: Request<Incoming>,
        rest: &str,
        query: Option<&str>,
    ) -> Result<(StatusCode, serde_json::Value), AdminError> {
        self.authorize(&request)?;
        let now = (self.clock)();
        let fail = |error: crate::session::SessionError| {
            tracing::error!(%error, "admin sessions");
            AdminError::Store
        };
        match (request.method(), rest.trim_matches('/')) {
            (&Method::GET, "") => {
                let user = match query.and_then(|q| q.strip_prefix("user=")) {
                    Some(name) => {
                        let (store, name) = (self.store.clone(), name.to_owned());
                        let user = tokio::task::spawn_blocking(move || store.user_by_name(&name))
                            .await
                            .map_err(|_| AdminError::Store)??;
                        Some(user.id)
                    }
                    None => None,
                };
                let listed = self.sessions.list(user, now).await.map_err(fail)?;
                let names = self.user_names().await?;
                let sessions: Vec<serde_json::Value> = listed
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "id": l.key.to_string(),
                            "user": names.get(&l.record.user).cloned().unwrap_or_default(),
                            "created": l.record.created,
                            "last_seen": l.record.last_seen,
                            "auth_time": l.record.auth_time,
                            "client": l.record.client,
                            "user_agent": l.record.user_agent,
                        })
                    })
                    .collect();
                Ok((StatusCode::OK, serde_json::json!({ "sessions": sessions })))
            }
            (&Method::DELETE, id) => {
                let key: crate::identity::SessionKey =
                    id.parse().map_err(|_| AdminError::BadRequest)?;
                // Whose it was, for the security event; a rare operator action may read the list.
                let owner = self
                    .sessions
                    .list(None, now)
                    .await
                    .map_err(fail)?
                    .into_iter()
                    .find(|listed| listed.key == key)
                    .map(|listed| listed.record.user);
                if !self.sessions.end(key).await.map_err(fail)? {
                    return Err(AdminError::NoSuchSession);
                }
                // Whoever held a revoked session may hold a half-finished login of its user too.
                if let Some(owner) = owner {
                    self.sessions.end_pending(owner);
                }
                let names = self.user_names().await?;
                self.events
                    .emit(SecurityEvent::SessionsEnded {
                        user: owner
                            .and_then(|user| names.get(&user).cloned())
                            .unwrap_or_default(),
                        reason: "operator_revoked",
                        count: 1,
                    })
                    .await;
                Ok((StatusCode::OK, serde_json::json!({ "ended": 1 })))
            }
            _ => Err(AdminError::BadRequest),
        }
    }

    async fn user_names(
        &self,
    ) -> Result<std::collections::HashMap<crate::identity::UserId, String>, AdminError> {
        let store = self.store.clone();
        let users = tokio::task::spawn_blocking(move || store.users())
            .await
            .map_err(|_| AdminError::Store)??;
        Ok(users.into_iter().map(|u| (u.id, u.name)).collect())
    }

    async fn users(
        self: Arc<Self>,
        request: Request<Incoming>,
        rest: String,
    ) -> Result<(StatusCode, serde_json::Value), AdminError> {
        self.authorize(&request)?;
        let method = request.method().clone();
        let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
        let body = limited
            .collect()
            .await
            .map_err(|_| AdminError::BadRequest)?
            .to_bytes();
        let now = (self.clock)();
        // The store is synchronous (redb): keep it off the runtime's worker threads.
        let admin = self.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let call = users::Call {
                method: &method,
                path: &rest,
                body: &body,
            };
            users::handle(
                &admin.store,
                call,
                now,
                &mut rand::rng(),
                admin.enrollment_ttl,
            )
        })
        .await
        .map_err(|_| AdminError::Store)??;
        if let Some(changed) = answer.changed {
            self.events.emit(changed).await;
        }
        let (status, mut value) = (answer.status, answer.body);
        match answer.effect {
            users::SessionEffect::None => {}
            users::SessionEffect::Refresh(user) => self.sessions.refresh_user(user),
            users::SessionEffect::End(user, name, reason) => {
                let ended = self.sessions.end_user(user).await.map_err(|error| {
                    tracing::error!(%error, "ending sessions");
                    AdminError::Store
                })?;
                self.events
                    .emit(SecurityEvent::SessionsEnded {
                        user: name,
                        reason,
                        count: ended,
                    })
                    .await;
                value["sessions_ended"] = serde_json::json!(ended);
            }
        }
        Ok((status, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_presented_token_never_matches_even_an_empty_token() {
        // `load` refuses an empty token file; this is the second line behind it.
        assert!(!AdminToken(String::new()).matches(b""));
        let token = AdminToken("ab".repeat(32));
        assert!(token.matches("ab".repeat(32).as_bytes()));
        assert!(!token.matches(b""));
        assert!(!token.matches("ab".repeat(31).as_bytes()));
    }
}
