//! The admin listener: `/healthz`, `/readyz`, Prometheus `/metrics`, and account management
//! under `/admin/users` ([`users`]).
//!
//! It listens on loopback by default and serves no patient data. Health and metrics are open
//! (load balancers and Prometheus scrape them); account management needs the admin token. Anything
//! else is 404. `/readyz` turns 503 as soon as shutdown starts, so a load balancer stops sending
//! new work before the drain.

pub mod users;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::body::ResponseBody;
use crate::identity::IdentityStore;
use crate::refusal::{self, Refusal};
use crate::telemetry::Telemetry;
use users::AdminError;

/// The admin token's file name inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// Admin request bodies are small JSON documents.
const MAX_BODY: usize = 64 * 1024;

/// The secret that `wardgate user …` presents to the running gateway.
pub struct AdminToken(String);

impl AdminToken {
    /// Reads `<dir>/admin.token`, creating it (256 random bits, mode 0600) when it is missing.
    /// A token file that anyone but its owner can read is refused: it is an operator's key.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = token_path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(std::io::Error::other(format!(
                        "{} has mode {:04o}; it must be readable by its owner only (chmod 600)",
                        path.display(),
                        mode & 0o777
                    )));
                }
                return Ok(Self(text.trim().to_owned()));
            }
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            Err(_) => {}
        }
        let bits: [u8; 32] = rand::random();
        let token: String = bits.iter().map(|byte| format!("{byte:02x}")).collect();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(token.as_bytes())?;
        Ok(Self(token))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented))
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
    pub token: AdminToken,
    pub enrollment_ttl: Duration,
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    crate::server::serve_http1(listener, move |request| {
        let admin = admin.clone();
        async move { admin.answer(request).await }
    })
    .await;
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
    let mut response = text(
        error.status(),
        "application/json",
        refusal::json_body(error.code(), error.reason()),
    );
    if error == AdminError::Unauthorized {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

impl Admin {
    async fn answer(self: Arc<Self>, request: Request<Incoming>) -> Response<ResponseBody> {
        let path = request.uri().path().to_owned();
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

    async fn users(
        self: Arc<Self>,
        request: Request<Incoming>,
        rest: String,
    ) -> Result<(StatusCode, serde_json::Value), AdminError> {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        if !self.token.matches(&presented) {
            return Err(AdminError::Unauthorized);
        }
        let method = request.method().clone();
        let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
        let body = limited
            .collect()
            .await
            .map_err(|_| AdminError::BadRequest)?
            .to_bytes();
        #[allow(clippy::disallowed_methods)] // the edge: an admin call happens now
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The store is synchronous (redb): keep it off the runtime's worker threads.
        let admin = self.clone();
        tokio::task::spawn_blocking(move || {
            users::handle(
                &admin.store,
                &method,
                &rest,
                &body,
                now,
                admin.enrollment_ttl,
            )
        })
        .await
        .map_err(|_| AdminError::Store)?
    }
}
