//! Care-team links and access grants on the admin listener, for operators and the hospital's
//! own systems (the EHR's list of who treats whom, imported as JSON lines).
//!
//! ```text
//!  GET    /admin/care-team[?user={name}]        links
//!  POST   /admin/care-team                      {"user","patient","until"?}: add or replace
//!  POST   /admin/care-team/import               JSON lines of the same: all or none
//!  DELETE /admin/care-team/{user}/{patient}     remove
//!  GET    /admin/grants                         every access request, with its status
//!  POST   /admin/grants/{id}/revoke             end a pending request or an active grant
//!  POST   /admin/grants/{id}/approve|deny       {"approver","comment"?}: as that person, under
//!                                               the same rules (never their own request)
//!  GET    /admin/break-glass                    break-glass uses waiting for review
//!  POST   /admin/break-glass/{id}/review        {"reviewer","outcome","comment"?}: as that
//!                                               reviewer (`review: true`, not the user)
//! ```
//!
//! The admin token manages the gateway; it never reads patient data and never stands in for an
//! approver: an approval names the approver, whose roles must approve and who may not be the
//! requester. Answers name users and patients, never upstream data.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::{self, Access, Actor, Verdict};
use crate::identity::{StoreError, User, UserId};
use crate::policy::grants::{AccessRequest, GrantId, Outcome};
use crate::policy::valid_patient;
use crate::refusal::{AdminError, Refusal};
use crate::store::Stores;
use crate::store::relations::CareTeamLink;

/// Most lines one import may hold.
const MAX_IMPORT_LINES: usize = 100_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Link {
    user: String,
    patient: String,
    #[serde(default)]
    until: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewCall {
    reviewer: String,
    outcome: Outcome,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    approver: String,
    #[serde(default)]
    comment: String,
}

fn admin(error: AdminError) -> Refusal {
    error.refusal()
}

fn store_failed(error: StoreError) -> Refusal {
    match error {
        StoreError::NotFound(_) => admin(AdminError::NoSuchUser),
        other => {
            tracing::error!(error = %other, "admin: relations");
            admin(AdminError::Store)
        }
    }
}

async fn user(stores: &Stores, name: &str) -> Result<User, Refusal> {
    stores
        .accounts
        .user_by_name(name)
        .await
        .map_err(store_failed)
}

/// The person an operator's call acts for: a disabled account acts for nobody (`refusal`).
async fn acting(stores: &Stores, name: &str, refusal: Refusal) -> Result<User, Refusal> {
    let person = user(stores, name).await?;
    if person.disabled {
        return Err(refusal);
    }
    Ok(person)
}

async fn link_of(stores: &Stores, link: Link) -> Result<CareTeamLink, Refusal> {
    if !valid_patient(&link.patient) {
        return Err(admin(AdminError::BadRequest));
    }
    Ok(CareTeamLink {
        user: user(stores, &link.user).await?.id,
        patient: link.patient,
        until: link.until,
    })
}

/// The links, with user names for ids.
async fn listed(stores: &Stores, links: Vec<CareTeamLink>) -> Result<Value, Refusal> {
    let users = stores.accounts.users().await.map_err(store_failed)?;
    let name = |id: UserId| {
        users
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.name.clone())
            .unwrap_or_default()
    };
    let links: Vec<Value> = links
        .iter()
        .map(|l| json!({ "user": name(l.user), "patient": l.patient, "until": l.until }))
        .collect();
    Ok(json!({ "links": links }))
}

/// `/admin/care-team…`; `rest` is the path below it.
pub async fn care_team(
    stores: &Stores,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Result<(StatusCode, Value), Refusal> {
    let relations = &stores.relations;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, []) => {
            let who = match query.and_then(|q| q.strip_prefix("user=")) {
                Some(name) => Some(user(stores, name).await?.id),
                None => None,
            };
            let links = relations.links(who).await.map_err(store_failed)?;
            Ok((StatusCode::OK, listed(stores, links).await?))
        }
        (&Method::POST, []) => {
            let link: Link =
                serde_json::from_slice(body).map_err(|_| admin(AdminError::BadRequest))?;
            let link = link_of(stores, link).await?;
            relations.link(link.clone()).await.map_err(store_failed)?;
            Ok((StatusCode::OK, listed(stores, vec![link]).await?))
        }
        (&Method::POST, ["import"]) => {
            let text = std::str::from_utf8(body).map_err(|_| admin(AdminError::BadRequest))?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() > MAX_IMPORT_LINES {
                return Err(admin(AdminError::BadRequest));
            }
            // Every line is checked before any is stored: a list with one bad line changes nothing.
            let mut links = Vec::with_capacity(lines.len());
            for line in lines {
                let link: Link =
                    serde_json::from_str(line).map_err(|_| admin(AdminError::BadRequest))?;
                links.push(link_of(stores, link).await?);
            }
            let imported = relations.import(links).await.map_err(store_failed)?;
            Ok((StatusCode::OK, json!({ "imported": imported })))
        }
        (&Method::DELETE, [name, patient]) => {
            let user = user(stores, name).await?;
            if !relations
                .unlink(user.id, patient)
                .await
                .map_err(store_failed)?
            {
                return Err(admin(AdminError::BadRequest));
            }
            Ok((StatusCode::OK, json!({ "removed": 1 })))
        }
        _ => Err(admin(AdminError::BadRequest)),
    }
}

/// `/admin/grants…`; `rest` is the path below it.
pub async fn grants(
    access: &Access,
    stores: &Stores,
    method: &Method,
    rest: &str,
    body: &Bytes,
    now: u64,
) -> Result<(StatusCode, Value), Refusal> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let describe = |r: &AccessRequest| access::describe(r, &access.policy, now);
    let answer = |request: AccessRequest| {
        let described = access::describe(&request, &access.policy, now);
        Ok((StatusCode::OK, json!({ "request": described })))
    };
    match (method, segments.as_slice()) {
        (&Method::GET, []) => {
            let all = stores.relations.requests().await.map_err(store_failed)?;
            let listed: Vec<Value> = all.iter().map(describe).collect();
            Ok((StatusCode::OK, json!({ "requests": listed })))
        }
        (&Method::POST, [id, "revoke"]) => {
            let id: GrantId = id.parse().map_err(|_| Refusal::GrantUnknown)?;
            let revoked = access.revoke(id, "operator", now).await;
            answer(revoked.map_err(|r| r.refusal())?)
        }
        (&Method::POST, [id, verdict @ ("approve" | "deny")]) => {
            let id: GrantId = id.parse().map_err(|_| Refusal::GrantUnknown)?;
            let decision: Decision =
                serde_json::from_slice(body).map_err(|_| admin(AdminError::BadRequest))?;
            let approver = acting(stores, &decision.approver, Refusal::GrantNotApprover).await?;
            let actor = Actor::of(&approver);
            let verdict = if *verdict == "approve" {
                Verdict::Approve
            } else {
                Verdict::Deny
            };
            let decided = access
                .decide(&actor, id, verdict, &decision.comment, now)
                .await;
            answer(decided.map_err(|r| r.refusal())?)
        }
        _ => Err(admin(AdminError::BadRequest)),
    }
}

/// `/admin/break-glass…`; `rest` is the path below it.
pub async fn break_glass(
    access: &Access,
    stores: &Stores,
    method: &Method,
    rest: &str,
    body: &Bytes,
    now: u64,
) -> Result<(StatusCode, Value), Refusal> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let describe = |r: &AccessRequest| access::describe(r, &access.policy, now);
    match (method, segments.as_slice()) {
        (&Method::GET, []) => {
            let queue = access.review_queue().await.map_err(|r| r.refusal())?;
            let waiting: Vec<Value> = queue
                .iter()
                .map(|w| access::describe_waiting(w, &access.policy, now))
                .collect();
            Ok((StatusCode::OK, json!({ "requests": waiting })))
        }
        (&Method::POST, [id, "review"]) => {
            let id: GrantId = id.parse().map_err(|_| Refusal::GrantUnknown)?;
            let call: ReviewCall =
                serde_json::from_slice(body).map_err(|_| admin(AdminError::BadRequest))?;
            let reviewer = acting(stores, &call.reviewer, Refusal::ReviewNotReviewer).await?;
            let actor = Actor::of(&reviewer);
            let reviewed = access
                .review(&actor, id, call.outcome, &call.comment, now)
                .await
                .map_err(|r| r.refusal())?;
            Ok((StatusCode::OK, json!({ "request": describe(&reviewed) })))
        }
        _ => Err(admin(AdminError::BadRequest)),
    }
}
