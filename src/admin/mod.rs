//! The admin listener: `/healthz`, `/readyz`, Prometheus `/metrics`, and account management
//! under `/admin/users` ([`users`]).
//!
//! It listens on loopback by default and serves no patient data. Health and metrics are open
//! (load balancers and Prometheus scrape them); account management needs the admin token. Anything
//! else is 404. `/readyz` turns 503 as soon as shutdown starts, so a load balancer stops sending
//! new work before the drain.

pub mod relations;
pub mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::access::Access;
use crate::audit::Query;
use crate::audit::sink::AuditSink;
use crate::auth::events::{SecurityEvent, SecurityEvents};
use crate::body::ResponseBody;
use crate::refusal::Refusal;
use crate::store::Stores;
use crate::store::keys::AdminToken;
use crate::telemetry::Telemetry;
use users::AdminError;

/// Admin request bodies are small JSON documents.
const MAX_BODY: usize = 64 * 1024;
/// A care-team import: one JSON line per link, the whole list of an EHR.
const MAX_IMPORT: usize = 16 * 1024 * 1024;

/// What the admin listener serves.
pub struct Admin {
    pub telemetry: Arc<Telemetry>,
    pub ready: Arc<AtomicBool>,
    pub stores: Stores,
    pub sessions: Arc<crate::session::Sessions>,
    pub token: AdminToken,
    pub enrollment_ttl: Duration,
    pub clock: crate::clock::Clock,
    pub events: SecurityEvents,
    /// Access requests and grants; `None` without a policy.
    pub access: Option<Arc<Access>>,
    /// The audit trail's writer, when there is one: not ready while it cannot write.
    pub audit: Option<Arc<AuditSink>>,
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

/// The two relation APIs of [`relations`].
#[derive(Clone, Copy)]
enum Relation {
    CareTeam,
    Grants,
    BreakGlass,
}

/// The session layer could not answer: logged here, the operator gets the fixed store error.
fn sessions_failed(error: crate::session::SessionError) -> AdminError {
    tracing::error!(%error, "admin: sessions");
    AdminError::Store
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
        for (prefix, kind) in [
            ("/admin/care-team", Relation::CareTeam),
            ("/admin/grants", Relation::Grants),
            ("/admin/break-glass", Relation::BreakGlass),
        ] {
            if let Some(rest) = path.strip_prefix(prefix) {
                let rest = rest.to_owned();
                return match self
                    .relation_call(request, kind, &rest, query.as_deref())
                    .await
                {
                    Ok((status, value)) => text(status, "application/json", value.to_string()),
                    Err(refusal) => refusal.response(),
                };
            }
        }
        if path == "/admin/audit" {
            return match self.audit_query(&request, query.as_deref()).await {
                Ok(value) => text(StatusCode::OK, "application/json", value.to_string()),
                Err(refusal) => refusal.response(),
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
            "/readyz" if self.audit.as_ref().is_some_and(|audit| !audit.healthy()) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "audit trail cannot be written: patient-data routes refuse (WG-AUDIT-001)\n",
            ),
            "/readyz" if let Some(store) = self.stores.reachable.unreachable() => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{store} does not answer: protected routes refuse (WG-STORE-001)\n"),
            ),
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

    /// Care-team links and grants ([`relations`]).
    async fn relation_call(
        &self,
        request: Request<Incoming>,
        kind: Relation,
        rest: &str,
        query: Option<&str>,
    ) -> Result<(StatusCode, serde_json::Value), Refusal> {
        self.authorize(&request).map_err(AdminError::refusal)?;
        let Some(access) = &self.access else {
            // Without a policy there are no patient relations to manage.
            return Err(Refusal::AdminNotFound);
        };
        let method = request.method().clone();
        let limit = if rest.trim_matches('/') == "import" {
            MAX_IMPORT
        } else {
            MAX_BODY
        };
        let limited = http_body_util::Limited::new(request.into_body(), limit);
        let body = limited
            .collect()
            .await
            .map_err(|_| AdminError::BadRequest.refusal())?
            .to_bytes();
        let now = (self.clock)();
        match kind {
            Relation::CareTeam => {
                relations::care_team(&self.stores, &method, rest, query, &body).await
            }
            Relation::Grants => {
                relations::grants(access, &self.stores, &method, rest, &body, now).await
            }
            Relation::BreakGlass => {
                relations::break_glass(access, &self.stores, &method, rest, &body, now).await
            }
        }
    }

    /// `GET /admin/audit?patient=…&user=…&category=…&grant=…&decision=…&kind=…&since=…&until=…`:
    /// the records of the audit trail that match, oldest first.
    async fn audit_query(
        &self,
        request: &Request<Incoming>,
        query: Option<&str>,
    ) -> Result<serde_json::Value, Refusal> {
        self.authorize(request).map_err(AdminError::refusal)?;
        let audit = self.audit.as_ref().ok_or(Refusal::AdminNotFound)?;
        if request.method() != Method::GET {
            return Err(AdminError::BadRequest.refusal());
        }
        let pairs = query
            .map(crate::sanitize::injection::query_pairs)
            .into_iter()
            .flatten();
        let query = Query::from_pairs(pairs).ok_or(AdminError::BadRequest.refusal())?;
        let records = audit.query(query).await.map_err(|error| {
            tracing::error!(target: "wardgate::audit", %error, "admin: the audit trail could not be read");
            AdminError::Store.refusal()
        })?;
        Ok(serde_json::json!({ "records": records }))
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
        match (request.method(), rest.trim_matches('/')) {
            (&Method::GET, "") => {
                let user = match query.and_then(|q| q.strip_prefix("user=")) {
                    Some(name) => Some(self.stores.accounts.user_by_name(name).await?.id),
                    None => None,
                };
                let listed = self
                    .sessions
                    .list(user, now)
                    .await
                    .map_err(sessions_failed)?;
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
                    .map_err(sessions_failed)?
                    .into_iter()
                    .find(|listed| listed.key == key)
                    .map(|listed| listed.record.user);
                if !self.sessions.end(key).await.map_err(sessions_failed)? {
                    return Err(AdminError::NoSuchSession);
                }
                // Whoever held a revoked session may hold a half-finished login of its user too.
                if let Some(owner) = owner {
                    self.sessions
                        .end_pending(owner)
                        .await
                        .map_err(sessions_failed)?;
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
        let users = self.stores.accounts.users().await?;
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
        let call = users::Call {
            method: &method,
            path: &rest,
            body: &body,
        };
        // Seeded from the thread's generator: the answer is awaited, and that one stays put.
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let answer = users::handle(&self.stores, call, now, &mut rng, self.enrollment_ttl).await?;
        if let Some(changed) = answer.changed {
            self.events.emit(changed).await;
        }
        let (status, mut value) = (answer.status, answer.body);
        match answer.effect {
            users::SessionEffect::None => {}
            users::SessionEffect::Refresh(user) => {
                let refreshed = self.sessions.refresh_user(user).await;
                refreshed.map_err(sessions_failed)?;
            }
            users::SessionEffect::End(user, name, reason) => {
                if let (Some(access), "account_disabled") = (&self.access, reason) {
                    let revoked = access.revoke_all_of(user, now).await.map_err(|refused| {
                        tracing::error!(
                            code = refused.refusal().code(),
                            "admin: revoking the grants of a disabled account"
                        );
                        AdminError::Store
                    })?;
                    value["grants_revoked"] = serde_json::json!(revoked);
                }
                let ended = self.sessions.end_user(user).await;
                let ended = ended.map_err(sessions_failed)?;
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
