//! The access-request API (`/.wardgate/api/access/…`): JSON in and out over the workflows of
//! `access.rs`, for the person holding the session (bearer token or cookie).
//!
//! ```text
//!  POST /.wardgate/api/access/requests {patient, categories[], reason, duration} -> {request}
//!  GET  /.wardgate/api/access/requests                          -> {requests}: one's own
//!  GET  /.wardgate/api/access/pending                           -> {requests}: for approvers
//!  POST /.wardgate/api/access/approve  {request, comment?}      -> {request}
//!  POST /.wardgate/api/access/deny     {request, comment?}      -> {request}
//!  POST /.wardgate/api/access/break-glass {patient, reason, text} -> {request}: at once
//!  GET  /.wardgate/api/access/reviews                           -> {requests}: for reviewers
//!  POST /.wardgate/api/access/review   {request, outcome, comment?} -> {request}
//! ```

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::json::{self, parse};
use super::paths;
use crate::access::{self, Access, Actor, Emergency, Verdict};
use crate::auth::login::Login;
use crate::body::ResponseBody;
use crate::policy::grants::{Asked, GrantId, Outcome};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::units::HumanDuration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    patient: String,
    categories: Vec<String>,
    reason: String,
    duration: HumanDuration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakGlass {
    patient: String,
    reason: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Review {
    request: GrantId,
    outcome: Outcome,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    request: GrantId,
    #[serde(default)]
    comment: String,
}

/// Whether `path` is one of this API's.
pub fn owns(path: &str) -> bool {
    [
        paths::ACCESS_REQUESTS_API,
        paths::ACCESS_PENDING_API,
        paths::ACCESS_APPROVE_API,
        paths::ACCESS_DENY_API,
        paths::BREAK_GLASS_API,
        paths::REVIEWS_API,
        paths::REVIEW_API,
    ]
    .contains(&path)
}

/// Serves one call; `access` is `None` when the config has no policy (then nothing is here).
pub async fn handle(
    access: Option<&Access>,
    login: &Login,
    request: Request<Incoming>,
    path: &str,
    idle: Duration,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    let access = access.ok_or(Refusal::GatewayPathNotFound)?;
    let allowed = match path {
        paths::ACCESS_REQUESTS_API => "GET, POST",
        paths::ACCESS_PENDING_API | paths::REVIEWS_API => "GET",
        _ => "POST",
    };
    let method = request.method().clone();
    if !allowed.split(", ").any(|m| m == method.as_str()) {
        return Err(Refused::with_header(
            Refusal::MethodNotAllowed,
            header::ALLOW,
            HeaderValue::from_static(allowed),
        ));
    }
    let live = login.current(request.headers(), now).await?;
    let actor = Actor::in_session(&live);
    let describe = |r| access::describe(r, &access.policy, now);
    match (path, method) {
        (paths::ACCESS_REQUESTS_API, Method::POST) => {
            let ask: Ask = parse(&json::body(request, idle).await?)?;
            let asked = Asked {
                patient: &ask.patient,
                categories: ask.categories,
                reason: &ask.reason,
                duration: ask.duration.0.as_secs(),
            };
            let id = GrantId::random(&mut rand::rng());
            let made = access.ask(&actor, id, asked, now).await?;
            let mut response = json::ok(&json!({ "request": describe(&made) }));
            *response.status_mut() = StatusCode::CREATED;
            Ok(response)
        }
        (paths::ACCESS_REQUESTS_API, _) => {
            let mine = access.mine(live.user).await?;
            let listed: Vec<_> = mine.iter().map(describe).collect();
            Ok(json::ok(&json!({ "requests": listed })))
        }
        (paths::BREAK_GLASS_API, _) => {
            let asked: BreakGlass = parse(&json::body(request, idle).await?)?;
            let emergency = Emergency {
                patient: &asked.patient,
                reason_code: &asked.reason,
                text: &asked.text,
                auth_time: live.auth_time,
            };
            let id = GrantId::random(&mut rand::rng());
            let opened = access.break_glass(&actor, id, emergency, now).await?;
            let mut response = json::ok(&json!({ "request": describe(&opened) }));
            *response.status_mut() = StatusCode::CREATED;
            Ok(response)
        }
        (paths::REVIEWS_API, _) => {
            let waiting = access.reviews(&actor).await?;
            let listed: Vec<_> = waiting
                .iter()
                .map(|w| access::describe_waiting(w, &access.policy, now))
                .collect();
            Ok(json::ok(&json!({ "requests": listed })))
        }
        (paths::REVIEW_API, _) => {
            let verdict: Review = parse(&json::body(request, idle).await?)?;
            let reviewed = access
                .review(
                    &actor,
                    verdict.request,
                    verdict.outcome,
                    &verdict.comment,
                    now,
                )
                .await?;
            Ok(json::ok(&json!({ "request": describe(&reviewed) })))
        }
        (paths::ACCESS_PENDING_API, _) => {
            let pending = access.pending(&actor, now).await?;
            let listed: Vec<_> = pending.iter().map(describe).collect();
            Ok(json::ok(&json!({ "requests": listed })))
        }
        _ => {
            let decision: Decision = parse(&json::body(request, idle).await?)?;
            let verdict = if path == paths::ACCESS_APPROVE_API {
                Verdict::Approve
            } else {
                Verdict::Deny
            };
            let decided = access
                .decide(&actor, decision.request, verdict, &decision.comment, now)
                .await?;
            Ok(json::ok(&json!({ "request": describe(&decided) })))
        }
    }
}
