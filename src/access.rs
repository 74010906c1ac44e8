//! The access workflows over the policy and the store: asking for access, approving and
//! denying, revoking, and the care-team links, for the JSON API (`own_api/access_api.rs`) and
//! the admin API alike, so that every interface keeps the same rules (the requester never
//! decides their own request, whichever door they come through). HTTP-free.

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::sink::AuditSink;
use crate::audit::{AuditRecord, Query};
use crate::auth::events::{SecurityEvent, SecurityEvents};
use crate::hook::Hook;
use crate::identity::{StoreError, UserId};
use crate::policy::AccessPolicy;
use crate::policy::grants::{AccessRequest, Asked, GrantError, GrantId, Outcome, Status};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::session::Live;
use crate::store::Stores;
use crate::store::relations::Change;

/// The longest reason a request may give.
pub const MAX_REASON: usize = 500;
/// The most categories one request may name.
const MAX_CATEGORIES: usize = 16;

/// Who acts: a user and the roles they hold now.
pub struct Actor<'a> {
    pub user: UserId,
    pub name: &'a str,
    pub roles: &'a [String],
}

impl<'a> Actor<'a> {
    /// The account as it is stored now.
    pub fn of(user: &'a crate::identity::User) -> Self {
        Self {
            user: user.id,
            name: &user.name,
            roles: &user.roles,
        }
    }

    /// The person holding a session, with the roles it carries.
    pub fn in_session(live: &'a Live) -> Self {
        Self {
            user: live.user,
            name: &live.name,
            roles: &live.roles,
        }
    }
}

/// A break-glass use, as the person opens it.
pub struct Emergency<'a> {
    pub patient: &'a str,
    /// One of `policy.break_glass.reasons`.
    pub reason_code: &'a str,
    /// The person's own words.
    pub text: &'a str,
    /// When their second factor was last proven.
    pub auth_time: u64,
}

/// Requests and grants, decided by the policy, kept in the store; every change is a security
/// event.
pub struct Access {
    pub policy: Arc<AccessPolicy>,
    stores: Stores,
    events: SecurityEvents,
    /// Where break-glass uses are announced, if anywhere.
    alert: Option<Hook>,
    /// The audit trail, which says what was seen under each break-glass use.
    audit: Option<Arc<AuditSink>>,
}

/// A break-glass use waiting for review, with the requests the audit trail recorded under it
/// (how each ended; oldest first; none without a trail).
pub struct Waiting {
    pub request: AccessRequest,
    pub seen: Vec<AuditRecord>,
}

fn unavailable(error: StoreError) -> Refused {
    Refused::because(Refusal::PolicyUnavailable, &error)
}

/// The fixed refusal of a refused transition.
pub fn grant_refusal(error: GrantError) -> Refusal {
    match error {
        GrantError::Unknown => Refusal::GrantUnknown,
        GrantError::OwnRequest => Refusal::GrantOwnRequest,
        GrantError::NotApprover => Refusal::GrantNotApprover,
        GrantError::NotPending => Refusal::GrantNotPending,
        GrantError::ApprovedAlready => Refusal::GrantApprovedAlready,
        GrantError::NotRevocable => Refusal::GrantNotRevocable,
        GrantError::NotReviewer => Refusal::ReviewNotReviewer,
        GrantError::NotReviewable => Refusal::ReviewNotReviewable,
    }
}

/// An approval or a denial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

impl Access {
    pub fn new(
        policy: Arc<AccessPolicy>,
        stores: Stores,
        events: SecurityEvents,
        alert: Option<Hook>,
        audit: Option<Arc<AuditSink>>,
    ) -> Self {
        Self {
            policy,
            stores,
            events,
            alert,
            audit,
        }
    }

    /// Announces a break-glass use to `policy.break_glass.alert`, in the background: an
    /// emergency never waits for the alert, and a failed alert is an `ERROR` line.
    fn alert(&self, actor: &Actor<'_>, opened: &AccessRequest) {
        let Some(alert) = &self.alert else {
            return;
        };
        let summary = serde_json::json!({
            "event": "break_glass_opened",
            "grant": opened.id.to_string(),
            "user": actor.name,
            "patient": opened.patient,
            "reason_code": opened.emergency.as_ref().map(|e| e.reason_code.as_str()),
            "reason": opened.reason,
            "at": opened.created,
        });
        alert.post(
            "break_glass_alert",
            &summary,
            &tokio::runtime::Handle::current(),
        );
    }

    async fn report(&self, user: &str, action: &'static str, request: &AccessRequest) {
        let event = SecurityEvent::AccessChanged {
            user: user.to_owned(),
            action,
            grant: request.id.to_string(),
        };
        self.events.emit(event).await;
    }

    async fn update(&self, id: GrantId, change: Change) -> Result<AccessRequest, Refused> {
        let relations = &self.stores.relations;
        let updated = relations.update_request(id, change).await;
        updated
            .map_err(unavailable)?
            .map_err(|e| grant_refusal(e).into())
    }

    /// Opens emergency access to one patient at once, for every category the person's roles
    /// could ask for: a role of `policy.break_glass.roles`, a configured reason code and words
    /// of their own, and a second factor proven within `reauth_within` (else `WG-SESSION-004`:
    /// step up first). It waits in the review queue.
    pub async fn break_glass(
        &self,
        actor: &Actor<'_>,
        id: GrantId,
        emergency: Emergency<'_>,
        now: u64,
    ) -> Result<AccessRequest, Refused> {
        let Some(rules) = &self.policy.break_glass else {
            return Err(Refusal::BreakGlassNotAllowed.into());
        };
        if !self.policy.may_break_glass(actor.roles) {
            return Err(Refusal::BreakGlassNotAllowed.into());
        }
        let text = emergency.text.trim();
        if !crate::policy::valid_patient(emergency.patient)
            || !rules.reasons.iter().any(|r| r == emergency.reason_code)
            || !(1..=MAX_REASON).contains(&text.chars().count())
        {
            return Err(Refusal::GrantRequestInvalid.into());
        }
        if !rules.fresh(emergency.auth_time, now) {
            return Err(Refusal::StepUpRequired.into());
        }
        let asked = Asked {
            patient: emergency.patient,
            categories: self.policy.requestable(actor.roles),
            reason: text,
            duration: rules.duration,
        };
        let opened = AccessRequest::emergency(id, actor.user, asked, emergency.reason_code, now);
        let relations = &self.stores.relations;
        relations
            .create_request(opened.clone())
            .await
            .map_err(unavailable)?;
        tracing::warn!(
            target: "wardgate::security",
            user = actor.name,
            grant = %opened.id,
            reason = emergency.reason_code,
            "break-glass access opened: it waits for review"
        );
        self.report(actor.name, "break_glass_opened", &opened).await;
        self.alert(actor, &opened);
        Ok(opened)
    }

    /// The break-glass uses waiting for review, for reviewers.
    pub async fn reviews(&self, actor: &Actor<'_>) -> Result<Vec<Waiting>, Refused> {
        if !self.policy.may_review(actor.roles) {
            return Err(Refusal::ReviewNotReviewer.into());
        }
        self.review_queue().await
    }

    /// The break-glass uses waiting for review, each with what the audit trail recorded under
    /// it (one scan of the trail); 503 `WG-AUDIT-001` when the trail cannot be read.
    pub async fn review_queue(&self) -> Result<Vec<Waiting>, Refused> {
        let all = self
            .stores
            .relations
            .requests()
            .await
            .map_err(unavailable)?;
        let mut waiting: Vec<Waiting> = all
            .into_iter()
            .filter(AccessRequest::awaits_review)
            .map(|request| Waiting {
                request,
                seen: Vec::new(),
            })
            .collect();
        let (Some(audit), false) = (&self.audit, waiting.is_empty()) else {
            return Ok(waiting);
        };
        let ended = Query {
            kind: Some("request".into()),
            ..Query::default()
        };
        let records = audit
            .query(ended)
            .await
            .map_err(|error| Refused::because(Refusal::AuditUnavailable, &error))?;
        let mut under: HashMap<String, &mut Vec<AuditRecord>> = waiting
            .iter_mut()
            .map(|w| (w.request.id.to_string(), &mut w.seen))
            .collect();
        for record in &records {
            for id in &record.grants {
                if let Some(seen) = under.get_mut(id) {
                    seen.push(record.clone());
                }
            }
        }
        Ok(waiting)
    }

    /// A reviewer's verdict on a break-glass use.
    pub async fn review(
        &self,
        actor: &Actor<'_>,
        id: GrantId,
        outcome: Outcome,
        comment: &str,
        now: u64,
    ) -> Result<AccessRequest, Refused> {
        if comment.chars().count() > MAX_REASON {
            return Err(Refusal::GrantRequestInvalid.into());
        }
        let (by, reviews) = (actor.user, self.policy.may_review(actor.roles));
        let comment = comment.to_owned();
        let change = Box::new(move |request: &mut AccessRequest| {
            request.review(by, reviews, outcome, &comment, now)
        });
        let reviewed = self.update(id, change).await?;
        self.report(actor.name, "break_glass_reviewed", &reviewed)
            .await;
        Ok(reviewed)
    }

    /// A new request by `actor`, under `id`: a valid patient id, categories their roles may
    /// request, a reason and a duration within the maximum (`WG-GRANT-006` otherwise).
    pub async fn ask(
        &self,
        actor: &Actor<'_>,
        id: GrantId,
        asked: Asked<'_>,
        now: u64,
    ) -> Result<AccessRequest, Refused> {
        let rules = &self.policy.grants;
        let reason = asked.reason.trim();
        let valid = crate::policy::valid_patient(asked.patient)
            && (1..=MAX_CATEGORIES).contains(&asked.categories.len())
            && asked.categories.iter().all(|name| {
                self.policy
                    .category(name)
                    .is_some_and(|category| self.policy.may_request(actor.roles, category))
            })
            && (1..=MAX_REASON).contains(&reason.chars().count())
            && (1..=rules.max_duration).contains(&asked.duration);
        if !valid {
            return Err(Refusal::GrantRequestInvalid.into());
        }
        let mut categories = asked.categories;
        categories.sort();
        categories.dedup();
        let asked = Asked {
            categories,
            reason,
            ..asked
        };
        let request = AccessRequest::new(id, actor.user, asked, now);
        let relations = &self.stores.relations;
        relations
            .create_request(request.clone())
            .await
            .map_err(unavailable)?;
        self.report(actor.name, "requested", &request).await;
        Ok(request)
    }

    /// The account name of `user`, to show who asks or who opened an emergency access.
    pub async fn user_name(&self, user: UserId) -> Result<String, Refused> {
        let account = self.stores.accounts.user(user).await;
        account.map(|account| account.name).map_err(unavailable)
    }

    /// The requests `user` made, oldest first.
    pub async fn mine(&self, user: UserId) -> Result<Vec<AccessRequest>, Refused> {
        let relations = &self.stores.relations;
        relations.requests_of(user).await.map_err(unavailable)
    }

    /// The requests waiting for a decision that `actor` may take (never their own).
    pub async fn pending(
        &self,
        actor: &Actor<'_>,
        now: u64,
    ) -> Result<Vec<AccessRequest>, Refused> {
        if !self.policy.may_approve(actor.roles) {
            return Err(Refusal::GrantNotApprover.into());
        }
        let all = self
            .stores
            .relations
            .requests()
            .await
            .map_err(unavailable)?;
        let rules = self.policy.grants;
        Ok(all
            .into_iter()
            .filter(|r| r.requester != actor.user && r.status(&rules, now) == Status::Pending)
            .collect())
    }

    /// An approval or a denial of `id` by `actor`, applied atomically in the store.
    pub async fn decide(
        &self,
        actor: &Actor<'_>,
        id: GrantId,
        verdict: Verdict,
        comment: &str,
        now: u64,
    ) -> Result<AccessRequest, Refused> {
        if comment.chars().count() > MAX_REASON {
            return Err(Refusal::GrantRequestInvalid.into());
        }
        let (by, approves) = (actor.user, self.policy.may_approve(actor.roles));
        let (rules, comment) = (self.policy.grants, comment.to_owned());
        let change = Box::new(move |request: &mut AccessRequest| match verdict {
            Verdict::Approve => request.approve(by, approves, &comment, &rules, now),
            Verdict::Deny => request.deny(by, approves, &comment, &rules, now),
        });
        let decided = self.update(id, change).await?;
        let action = match verdict {
            Verdict::Approve => "approved",
            Verdict::Deny => "denied",
        };
        self.report(actor.name, action, &decided).await;
        Ok(decided)
    }

    /// Ends a pending request or an active grant (`by` names who: an operator, or why).
    pub async fn revoke(&self, id: GrantId, by: &str, now: u64) -> Result<AccessRequest, Refused> {
        let (rules, reported) = (self.policy.grants, by.to_owned());
        let by = reported.clone();
        let change = Box::new(move |request: &mut AccessRequest| request.revoke(&by, &rules, now));
        let revoked = self.update(id, change).await?;
        self.report(&reported, "revoked", &revoked).await;
        Ok(revoked)
    }

    /// Ends every pending request and active grant of `user` (their account was disabled);
    /// returns how many.
    pub async fn revoke_all_of(&self, user: UserId, now: u64) -> Result<usize, Refused> {
        let rules = self.policy.grants;
        let mut revoked = 0;
        for request in self.mine(user).await? {
            if matches!(
                request.status(&rules, now),
                Status::Pending | Status::Active
            ) {
                self.revoke(request.id, "account_disabled", now).await?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }
}

/// A request as the APIs show it: the stored fields and its status now.
pub fn describe(request: &AccessRequest, policy: &AccessPolicy, now: u64) -> serde_json::Value {
    let mut value = serde_json::to_value(request).unwrap_or_default();
    value["status"] = request.status(&policy.grants, now).as_str().into();
    value
}

/// A break-glass use waiting for review as the APIs show it: [`describe`], and `seen`, the
/// requests made under it (time, method, path, categories, decision, status).
pub fn describe_waiting(waiting: &Waiting, policy: &AccessPolicy, now: u64) -> serde_json::Value {
    let mut value = describe(&waiting.request, policy, now);
    value["seen"] = waiting
        .seen
        .iter()
        .map(|record| {
            serde_json::json!({
                "time": record.time,
                "method": record.method,
                "path": record.path,
                "categories": record.categories,
                "decision": record.decision,
                "status": record.status,
            })
        })
        .collect();
    value
}
