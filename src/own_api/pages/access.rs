//! Access requests in the browser: the workflows of [`Access`] (the ones the JSON API of
//! `access_api.rs` calls) as pages, for the person holding the session cookie. The pages add
//! no rule of their own: who may ask, approve, break the glass or review, and that nobody
//! decides their own request, is decided in `access.rs` for every interface alike. Without a
//! `policy:` every path here is 404 `WG-AUTH-006`, like any unknown gateway path.
//!
//! ```text
//!  GET  /.wardgate/access/request?patient=…&category=…  the form, pre-filled (the refusal of a
//!                                      patient route links here): the categories the person's
//!                                      roles may request (none: 403 WG-POLICY-002)
//!  POST /.wardgate/access/request      refused: the form again, 400 WG-GRANT-006; else 303 to
//!                                      /.wardgate/access/mine
//!  GET  /.wardgate/access/mine         one's own requests and grants: status, end, comments
//!  GET  /.wardgate/access/approvals    for approvers (else 403 WG-GRANT-003): the others'
//!                                      pending requests, each with a comment, approve and deny
//!  POST /.wardgate/access/approvals    request, verdict, comment: 303 back, or the refusal of
//!                                      Access::decide as its page (one's own: 403 WG-GRANT-002)
//!  GET  /.wardgate/access/break-glass  for break-glass roles (else 403 WG-GRANT-008): with a
//!                                      second factor older than reauth_within, 303 to the
//!                                      step-up, which comes back here; else the form
//!  POST /.wardgate/access/break-glass  open at once: 303 to /.wardgate/access/mine; a stale
//!                                      factor: 303 to the step-up; refused: the form, 400
//!  GET  /.wardgate/access/reviews      for reviewers (else 403 WG-GRANT-009): the break-glass
//!                                      uses waiting for review, each with a comment and outcome
//!  POST /.wardgate/access/reviews      request, outcome, comment: 303 back, or the refusal
//! ```
//!
//! A page asked for without a live session sends the browser to log in and back (303); a form
//! posted without one is 401 `WG-SESSION-001`. Every post passes the CSRF checks before a
//! field is read (`PageRequest::form`), and after a change the browser is sent on (303), so
//! that reloading a page never posts a decision twice.

use std::time::{Duration, UNIX_EPOCH};

use askama::Template;
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde::de::IntoDeserializer;

use super::login::{see_other, session_post};
use super::{Form, PageRequest, page, render};
use crate::access::{Access, Actor, Emergency, Verdict};
use crate::audit::AuditRecord;
use crate::auth::login::Login;
use crate::body::ResponseBody;
use crate::own_api::paths;
use crate::policy::AccessPolicy;
use crate::policy::grants::{AccessRequest, Asked, GrantId, Outcome, State};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::session::{Ended, Live};
use crate::units::HumanDuration;

/// The request form's checkboxes are named `category.NAME`: every field name once, as
/// [`PageRequest::form`] wants.
const CATEGORY_FIELD: &str = "category.";
/// The duration a request form suggests, when the policy allows as much.
const SUGGESTED_DURATION: u64 = 3600;

/// A checkbox or an option of a list: its name, and whether it is chosen.
struct Choice {
    name: String,
    chosen: bool,
}

fn choices(names: &[String], chosen: &[String]) -> Vec<Choice> {
    names
        .iter()
        .map(|name| Choice {
            name: name.clone(),
            chosen: chosen.contains(name),
        })
        .collect()
}

/// A request as the pages show it.
struct Row {
    id: String,
    /// Who asked, on the approvers' and reviewers' pages.
    requester: Option<String>,
    patient: String,
    categories: String,
    reason: String,
    status: &'static str,
    asked: String,
    lasts: String,
    ends: Option<String>,
    /// The reason code of a break-glass access.
    emergency: Option<String>,
    comments: Vec<String>,
    /// On the reviewers' page: what was seen under a break-glass use, from the audit trail.
    seen: Vec<String>,
}

impl Row {
    fn of(request: &AccessRequest, policy: &AccessPolicy, now: u64) -> Self {
        let mut comments: Vec<String> = request
            .approvals
            .iter()
            .map(|approval| approval.comment.clone())
            .collect();
        let ends = match &request.state {
            State::Approved { end, .. } => Some(when(*end)),
            State::Denied { comment, .. } => {
                comments.push(comment.clone());
                None
            }
            State::Pending | State::Revoked { .. } => None,
        };
        let emergency = request.emergency.as_ref();
        if let Some(review) = emergency.and_then(|e| e.review.as_ref()) {
            comments.push(review.comment.clone());
        }
        comments.retain(|comment| !comment.trim().is_empty());
        Self {
            id: request.id.to_string(),
            requester: None,
            patient: request.patient.clone(),
            categories: request.categories.join(", "),
            reason: request.reason.clone(),
            status: request.status(&policy.grants, now).as_str(),
            asked: when(request.created),
            lasts: span(request.duration),
            ends,
            emergency: emergency.map(|e| e.reason_code.clone()),
            comments,
            seen: Vec::new(),
        }
    }
}

/// One request the audit trail recorded: when, what, how it ended.
fn seen_line(record: &AuditRecord) -> String {
    format!(
        "{} {} {} ({}): {} {}",
        when(record.time),
        record.method.as_deref().unwrap_or("-"),
        record.path.as_deref().unwrap_or("-"),
        record.categories.join(", "),
        record.decision.as_deref().unwrap_or("-"),
        record.status.map_or_else(|| "-".into(), |s| s.to_string()),
    )
}

/// Rows that say who asked.
async fn rows_with_requester(
    access: &Access,
    requests: &[AccessRequest],
    now: u64,
) -> Result<Vec<Row>, Refused> {
    let mut rows = Vec::with_capacity(requests.len());
    for request in requests {
        rows.push(Row {
            requester: Some(access.user_name(request.requester).await?),
            ..Row::of(request, &access.policy, now)
        });
    }
    Ok(rows)
}

/// A moment for people: `Wed, 02 Dec 2026 14:30:00 GMT`.
fn when(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
}

/// A length of time in the largest whole unit, as the request form reads it back: `8h`, `90m`.
fn span(seconds: u64) -> String {
    match seconds {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[derive(Template)]
#[template(path = "access_request.html")]
struct RequestPage<'a> {
    csrf: &'a str,
    patient: &'a str,
    categories: Vec<Choice>,
    reason: &'a str,
    duration: &'a str,
    max_duration: String,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "access_mine.html")]
struct MinePage {
    rows: Vec<Row>,
}

/// A list of requests that wait for the person, each with a comment and two answers.
struct Queue {
    title: &'static str,
    action: &'static str,
    /// The field the two buttons send, and each one's value and label.
    field: &'static str,
    yes: (&'static str, &'static str),
    no: (&'static str, &'static str),
    empty: &'static str,
}

/// Others' pending requests, for approvers; the verdicts are `Verdict`'s.
const APPROVALS: Queue = Queue {
    title: "Requests waiting for approval",
    action: paths::APPROVALS_PAGE,
    field: "verdict",
    yes: ("approve", "Approve"),
    no: ("deny", "Deny"),
    empty: "No request waits for your decision.",
};

/// Break-glass uses waiting for review, for reviewers; the outcomes are `Outcome`'s names.
const REVIEWS: Queue = Queue {
    title: "Emergency access to review",
    action: paths::REVIEWS_PAGE,
    field: "outcome",
    yes: ("appropriate", "Appropriate"),
    no: ("inappropriate", "Not appropriate"),
    empty: "No emergency access waits for review.",
};

#[derive(Template)]
#[template(path = "access_queue.html")]
struct QueuePage<'a> {
    csrf: &'a str,
    queue: &'a Queue,
    rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "access_break_glass.html")]
struct BreakGlassPage<'a> {
    csrf: &'a str,
    patient: &'a str,
    reasons: Vec<Choice>,
    text: &'a str,
    lasts: String,
    error: Option<&'a str>,
}

/// What the home page links to: the access pages the person's roles may use.
#[derive(Default)]
pub struct Links {
    pub request: bool,
    pub mine: bool,
    pub approvals: bool,
    pub break_glass: bool,
    pub reviews: bool,
}

/// The access pages `roles` may use; none without a policy.
pub fn links(access: Option<&Access>, roles: &[String]) -> Links {
    let Some(access) = access else {
        return Links::default();
    };
    let policy = &access.policy;
    Links {
        request: !policy.requestable(roles).is_empty(),
        mine: true,
        approvals: policy.may_approve(roles),
        break_glass: policy.may_break_glass(roles),
        reviews: policy.may_review(roles),
    }
}

/// Serves one request under `/.wardgate/access/`.
pub async fn handle(
    access: Option<&Access>,
    login: &Login,
    request: PageRequest<'_>,
    path: &str,
) -> Result<Response<ResponseBody>, Refused> {
    let access = access.ok_or(Refusal::GatewayPathNotFound)?;
    let allowed = match path {
        paths::ACCESS_MINE_PAGE => "GET",
        paths::ACCESS_REQUEST_PAGE
        | paths::APPROVALS_PAGE
        | paths::BREAK_GLASS_PAGE
        | paths::REVIEWS_PAGE => "GET, POST",
        _ => return Err(Refusal::GatewayPathNotFound.into()),
    };
    let now = request.now;
    match *request.method() {
        Method::GET => {
            let live = match login.current(&request.parts.headers, now).await {
                Ok(live) => live,
                Err(refused) if refused.refusal().status() == StatusCode::UNAUTHORIZED => {
                    let target = request
                        .parts
                        .uri
                        .path_and_query()
                        .map_or(path, |p| p.as_str());
                    return Ok(see_other(&paths::login_to(target, Ended::Missing.reason())));
                }
                Err(refused) => return Err(refused),
            };
            match path {
                paths::ACCESS_REQUEST_PAGE => request_form(access, &live, &request),
                paths::ACCESS_MINE_PAGE => mine(access, &live, now).await,
                paths::BREAK_GLASS_PAGE => break_glass_form(access, &live, &request),
                paths::APPROVALS_PAGE => {
                    let pending = access.pending(&Actor::in_session(&live), now).await?;
                    queue(access, &APPROVALS, &pending, &[], &request).await
                }
                _ => {
                    let waiting = access.reviews(&Actor::in_session(&live)).await?;
                    let (requests, seen): (Vec<_>, Vec<_>) =
                        waiting.into_iter().map(|w| (w.request, w.seen)).unzip();
                    queue(access, &REVIEWS, &requests, &seen, &request).await
                }
            }
        }
        Method::POST if allowed.contains("POST") => {
            let (live, form) = session_post(login, request).await?;
            let actor = Actor::in_session(&live);
            match path {
                paths::ACCESS_REQUEST_PAGE => ask(access, &actor, form, now).await,
                paths::APPROVALS_PAGE => decide(access, &actor, form, now).await,
                paths::BREAK_GLASS_PAGE => break_glass(access, &live, form, now).await,
                _ => review(access, &actor, form, now).await,
            }
        }
        _ => Err(Refused::method_not_allowed(allowed)),
    }
}

fn request_form(
    access: &Access,
    live: &Live,
    request: &PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    let requestable = access.policy.requestable(&live.roles);
    if requestable.is_empty() {
        return Err(Refusal::PolicyNeverAllowed.into());
    }
    let csrf = request.form_token();
    let patient = request.query("patient").unwrap_or_default();
    let chosen: Vec<String> = request.query("category").into_iter().collect();
    let max = access.policy.grants.max_duration;
    let form = RequestPage {
        csrf: csrf.token.as_str(),
        patient: &patient,
        categories: choices(&requestable, &chosen),
        reason: "",
        duration: &span(max.min(SUGGESTED_DURATION)),
        max_duration: span(max),
        error: None,
    };
    page(StatusCode::OK, &form, Some(&csrf))
}

async fn ask(
    access: &Access,
    actor: &Actor<'_>,
    mut form: Form,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    let csrf = form.csrf.clone();
    let categories = form.ticked(CATEGORY_FIELD)?;
    let [patient, reason, duration] = form.take(["patient", "reason", "duration"])?;
    let asked = HumanDuration::parse(duration.trim()).map(|parsed| Asked {
        patient: &patient,
        categories: categories.clone(),
        reason: &reason,
        duration: parsed.0.as_secs(),
    });
    let refused = match asked {
        Ok(asked) => {
            let id = GrantId::random(&mut rand::rng());
            match access.ask(actor, id, asked, now).await {
                Ok(_) => return Ok(see_other(paths::ACCESS_MINE_PAGE)),
                Err(refused) => refused,
            }
        }
        Err(_) => Refusal::GrantRequestInvalid.into(),
    };
    if refused.refusal() != Refusal::GrantRequestInvalid {
        return Err(refused);
    }
    let requestable = access.policy.requestable(actor.roles);
    let again = RequestPage {
        csrf: csrf.token.as_str(),
        patient: &patient,
        categories: choices(&requestable, &categories),
        reason: &reason,
        duration: &duration,
        max_duration: span(access.policy.grants.max_duration),
        error: Some(Refusal::GrantRequestInvalid.reason()),
    };
    Err(Refused::page(Refusal::GrantRequestInvalid, render(&again)?))
}

async fn mine(access: &Access, live: &Live, now: u64) -> Result<Response<ResponseBody>, Refused> {
    let mine = access.mine(live.user).await?;
    let rows = mine
        .iter()
        .rev()
        .map(|request| Row::of(request, &access.policy, now))
        .collect();
    page(StatusCode::OK, &MinePage { rows }, None)
}

/// The page of a queue listing `waiting`, each with what the audit trail recorded under it
/// (`seen`, on the reviewers' page).
async fn queue(
    access: &Access,
    queue: &Queue,
    waiting: &[AccessRequest],
    seen: &[Vec<AuditRecord>],
    request: &PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    let csrf = request.form_token();
    let mut rows = rows_with_requester(access, waiting, request.now).await?;
    for (row, records) in rows.iter_mut().zip(seen) {
        row.seen = records.iter().map(seen_line).collect();
    }
    let listed = QueuePage {
        csrf: csrf.token.as_str(),
        queue,
        rows,
    };
    page(StatusCode::OK, &listed, Some(&csrf))
}

/// A queue's answer: the request, the button's value, the comment.
fn answer(form: Form, queue: &Queue) -> Result<(GrantId, String, String), Refused> {
    let [request, value, comment] = form.take(["request", queue.field, "comment"])?;
    let id = request.parse().map_err(|_| Refusal::MalformedForm)?;
    Ok((id, value, comment))
}

async fn decide(
    access: &Access,
    actor: &Actor<'_>,
    form: Form,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    let (id, verdict, comment) = answer(form, &APPROVALS)?;
    let verdict = match verdict.as_str() {
        v if v == APPROVALS.yes.0 => Verdict::Approve,
        v if v == APPROVALS.no.0 => Verdict::Deny,
        _ => return Err(Refusal::MalformedForm.into()),
    };
    access.decide(actor, id, verdict, &comment, now).await?;
    Ok(see_other(paths::APPROVALS_PAGE))
}

/// The step-up, and back to the break-glass form for `patient`.
fn step_up(patient: &str) -> Response<ResponseBody> {
    let back = if crate::policy::valid_patient(patient) {
        format!("{}?patient={patient}", paths::BREAK_GLASS_PAGE)
    } else {
        paths::BREAK_GLASS_PAGE.to_owned()
    };
    see_other(&paths::login_to(&back, Ended::StepUp.reason()))
}

fn break_glass_form(
    access: &Access,
    live: &Live,
    request: &PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    let rules = access
        .policy
        .break_glass
        .as_ref()
        .filter(|_| access.policy.may_break_glass(&live.roles))
        .ok_or(Refusal::BreakGlassNotAllowed)?;
    let patient = request.query("patient").unwrap_or_default();
    if !rules.fresh(live.auth_time, request.now) {
        return Ok(step_up(&patient));
    }
    let csrf = request.form_token();
    let form = BreakGlassPage {
        csrf: csrf.token.as_str(),
        patient: &patient,
        reasons: choices(&rules.reasons, &[]),
        text: "",
        lasts: span(rules.duration),
        error: None,
    };
    page(StatusCode::OK, &form, Some(&csrf))
}

async fn break_glass(
    access: &Access,
    live: &Live,
    form: Form,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    let csrf = form.csrf.clone();
    let [patient, reason, text] = form.take(["patient", "reason", "text"])?;
    let emergency = Emergency {
        patient: &patient,
        reason_code: &reason,
        text: &text,
        auth_time: live.auth_time,
    };
    let id = GrantId::random(&mut rand::rng());
    let actor = Actor::in_session(live);
    let refused = match access.break_glass(&actor, id, emergency, now).await {
        Ok(_) => return Ok(see_other(paths::ACCESS_MINE_PAGE)),
        Err(refused) if refused.refusal() == Refusal::StepUpRequired => {
            return Ok(step_up(&patient));
        }
        Err(refused) => refused,
    };
    let rules = access.policy.break_glass.as_ref();
    let Some(rules) = rules.filter(|_| refused.refusal() == Refusal::GrantRequestInvalid) else {
        return Err(refused);
    };
    let again = BreakGlassPage {
        csrf: csrf.token.as_str(),
        patient: &patient,
        reasons: choices(&rules.reasons, &[reason]),
        text: &text,
        lasts: span(rules.duration),
        error: Some(Refusal::GrantRequestInvalid.reason()),
    };
    Err(Refused::page(Refusal::GrantRequestInvalid, render(&again)?))
}

async fn review(
    access: &Access,
    actor: &Actor<'_>,
    form: Form,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    let (id, outcome, comment) = answer(form, &REVIEWS)?;
    // The outcome's names are the JSON API's.
    let outcome = Outcome::deserialize(outcome.as_str().into_deserializer())
        .map_err(|_: serde::de::value::Error| Refusal::MalformedForm)?;
    access.review(actor, id, outcome, &comment, now).await?;
    Ok(see_other(paths::REVIEWS_PAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_back_as_durations() {
        for (seconds, text) in [(3600, "1h"), (8 * 3600, "8h"), (5400, "90m"), (61, "61s")] {
            assert_eq!(span(seconds), text);
            assert_eq!(HumanDuration::parse(text).unwrap().0.as_secs(), seconds);
        }
    }

    #[test]
    fn moments_are_utc() {
        assert_eq!(when(1_800_000_000), "Fri, 15 Jan 2027 08:00:00 GMT");
    }
}
