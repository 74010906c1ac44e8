//! Access requests and grants: temporary access, asked for and approved by someone else.
//!
//! **The threat.** A person granting themselves access (directly, or through a second account
//! or interface), a grant that never ends, a request that waits forever for a moment of
//! inattention, two approvers racing so that one approval counts twice.
//!
//! **The rule.** A person asks for (patient, categories, reason, duration up to
//! `policy.grants.max_duration`). People whose roles approve (`approve: true`) approve or deny
//! it with a comment; the requester never counts, whatever roles they hold and whichever
//! interface they use, and nobody counts twice. With `policy.grants.approvals` approvals the
//! grant starts, for its duration from the last approval. A request not decided within
//! `pending_ttl` expires; a grant ends at its end, when it is revoked, or when its holder's
//! account is disabled. Every transition is a pure function of the request and `now`, applied
//! by the store in one atomic update, so that two approvers racing see each other.
//!
//! ```text
//!   request ──▶ Pending ── approval (not the requester's, not twice) ──▶ Pending (more needed)
//!                 │  │ ── the last approval needed ───────────────────▶ Approved { start, end }
//!                 │  └─ deny (an approver's) ─────────────────────────▶ Denied
//!                 └──── now >= created + pending_ttl ─────────────────▶ (expired)
//!   Pending / Approved ── revoke (an operator, or the holder's account disabled) ──▶ Revoked
//!   Approved ── now >= end ──────────────────────────────────────────▶ (ended)
//! ```

use serde::{Deserialize, Serialize};

use super::{GrantRules, GrantUse};
use crate::identity::UserId;

crate::identity::store::random_id!(
    /// A request's (and its grant's) id: 128 random bits, 32 hex digits.
    GrantId,
    "grant id"
);

/// One approval of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub by: UserId,
    pub comment: String,
    pub at: u64,
}

/// Where a request stands, as stored; [`AccessRequest::status`] adds what time decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "state", rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved {
        start: u64,
        end: u64,
    },
    Denied {
        by: UserId,
        comment: String,
        at: u64,
    },
    Revoked {
        /// Who revoked it: an operator, or `account_disabled`.
        by: String,
        at: u64,
    },
}

/// A request for temporary access, and the grant it becomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    pub id: GrantId,
    pub requester: UserId,
    pub patient: String,
    /// Category names of the policy.
    pub categories: Vec<String>,
    pub reason: String,
    /// Seconds the grant lasts once approved.
    pub duration: u64,
    /// Unix seconds.
    pub created: u64,
    pub approvals: Vec<Approval>,
    pub state: State,
    /// Set for a break-glass access: its reason code, and the review it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<Emergency>,
}

/// A break-glass access: opened by the person themselves, reviewed afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Emergency {
    /// One of `policy.break_glass.reasons`.
    pub reason_code: String,
    pub review: Option<Review>,
}

/// A reviewer's verdict on a break-glass use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    pub by: UserId,
    pub outcome: Outcome,
    pub comment: String,
    pub at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The emergency was real and the access fitting.
    Appropriate,
    /// Not: the privacy officer follows up.
    Inappropriate,
}

/// A request's status at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Expired,
    Active,
    Ended,
    Denied,
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Expired => "expired",
            Status::Active => "active",
            Status::Ended => "ended",
            Status::Denied => "denied",
            Status::Revoked => "revoked",
        }
    }
}

/// Why a transition was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("no such access request")]
    Unknown,
    #[error("the requester cannot approve or deny their own request")]
    OwnRequest,
    #[error("only a role that approves may approve or deny access requests")]
    NotApprover,
    #[error("the request is no longer pending")]
    NotPending,
    #[error("this approver has approved the request already")]
    ApprovedAlready,
    #[error("the grant is neither pending nor active")]
    NotRevocable,
    #[error("only a role that reviews may review break-glass uses")]
    NotReviewer,
    #[error("not a break-glass use, or reviewed already")]
    NotReviewable,
}

/// What a person asks for; checked by [`AccessRequest::new`].
pub struct Asked<'a> {
    pub patient: &'a str,
    pub categories: Vec<String>,
    pub reason: &'a str,
    pub duration: u64,
}

impl AccessRequest {
    /// A new pending request under `id` (drawn with [`GrantId::random`]).
    pub fn new(id: GrantId, requester: UserId, asked: Asked<'_>, now: u64) -> Self {
        Self {
            id,
            requester,
            patient: asked.patient.to_owned(),
            categories: asked.categories,
            reason: asked.reason.to_owned(),
            duration: asked.duration,
            created: now,
            approvals: Vec::new(),
            state: State::Pending,
            emergency: None,
        }
    }

    /// A break-glass access, active at once for `asked.duration`; `reason_code` is one of the
    /// configured reasons, `asked.reason` the person's own words.
    pub fn emergency(
        id: GrantId,
        requester: UserId,
        asked: Asked<'_>,
        reason_code: &str,
        now: u64,
    ) -> Self {
        let end = now.saturating_add(asked.duration);
        Self {
            state: State::Approved { start: now, end },
            emergency: Some(Emergency {
                reason_code: reason_code.to_owned(),
                review: None,
            }),
            ..Self::new(id, requester, asked, now)
        }
    }

    /// A break-glass use waiting for its review.
    pub fn awaits_review(&self) -> bool {
        self.emergency.as_ref().is_some_and(|e| e.review.is_none())
    }

    /// The review of a break-glass use, once, by a reviewer who did not open it.
    pub fn review(
        &mut self,
        by: UserId,
        by_reviews: bool,
        outcome: Outcome,
        comment: &str,
        now: u64,
    ) -> Result<(), GrantError> {
        if by == self.requester {
            return Err(GrantError::OwnRequest);
        }
        if !by_reviews {
            return Err(GrantError::NotReviewer);
        }
        match &mut self.emergency {
            Some(emergency) if emergency.review.is_none() => {
                emergency.review = Some(Review {
                    by,
                    outcome,
                    comment: comment.to_owned(),
                    at: now,
                });
                Ok(())
            }
            _ => Err(GrantError::NotReviewable),
        }
    }

    pub fn status(&self, rules: &GrantRules, now: u64) -> Status {
        match self.state {
            State::Pending if now >= self.created.saturating_add(rules.pending_ttl) => {
                Status::Expired
            }
            State::Pending => Status::Pending,
            State::Approved { end, .. } if now >= end => Status::Ended,
            State::Approved { .. } => Status::Active,
            State::Denied { .. } => Status::Denied,
            State::Revoked { .. } => Status::Revoked,
        }
    }

    /// Whether the grant lets `user` see `category` of `patient` at `now`.
    pub fn covers(&self, user: UserId, patient: &str, category: &str, now: u64) -> bool {
        self.use_at(user, patient, category, now).is_some()
    }

    /// The grant as `user` uses it to see `category` of `patient` at `now`, when it covers that.
    pub fn use_at(
        &self,
        user: UserId,
        patient: &str,
        category: &str,
        now: u64,
    ) -> Option<GrantUse> {
        match self.state {
            State::Approved { start, end }
                if start <= now
                    && now < end
                    && self.requester == user
                    && self.patient == patient
                    && self.categories.iter().any(|c| c == category) =>
            {
                Some(GrantUse {
                    id: self.id,
                    emergency: self.emergency.is_some(),
                    until: end,
                })
            }
            _ => None,
        }
    }

    /// Checks that `by` may decide this request now.
    fn decidable(
        &self,
        by: UserId,
        by_approves: bool,
        rules: &GrantRules,
        now: u64,
    ) -> Result<(), GrantError> {
        // The requester never decides their own request, whatever their roles.
        if by == self.requester {
            return Err(GrantError::OwnRequest);
        }
        if !by_approves {
            return Err(GrantError::NotApprover);
        }
        if self.status(rules, now) != Status::Pending {
            return Err(GrantError::NotPending);
        }
        Ok(())
    }

    /// One approval by `by` (`by_approves`: their roles approve); the last one needed starts
    /// the grant.
    pub fn approve(
        &mut self,
        by: UserId,
        by_approves: bool,
        comment: &str,
        rules: &GrantRules,
        now: u64,
    ) -> Result<(), GrantError> {
        self.decidable(by, by_approves, rules, now)?;
        if self.approvals.iter().any(|a| a.by == by) {
            return Err(GrantError::ApprovedAlready);
        }
        self.approvals.push(Approval {
            by,
            comment: comment.to_owned(),
            at: now,
        });
        if self.approvals.len() >= rules.approvals as usize {
            self.state = State::Approved {
                start: now,
                end: now.saturating_add(self.duration),
            };
        }
        Ok(())
    }

    pub fn deny(
        &mut self,
        by: UserId,
        by_approves: bool,
        comment: &str,
        rules: &GrantRules,
        now: u64,
    ) -> Result<(), GrantError> {
        self.decidable(by, by_approves, rules, now)?;
        self.state = State::Denied {
            by,
            comment: comment.to_owned(),
            at: now,
        };
        Ok(())
    }

    /// Ends a pending request or an active grant.
    pub fn revoke(&mut self, by: &str, rules: &GrantRules, now: u64) -> Result<(), GrantError> {
        match self.status(rules, now) {
            Status::Pending | Status::Active => {
                self.state = State::Revoked {
                    by: by.to_owned(),
                    at: now,
                };
                Ok(())
            }
            _ => Err(GrantError::NotRevocable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const T0: u64 = 1_800_000_000;
    const HOUR: u64 = 3600;
    const DERMATOLOGIST: UserId = UserId::from_bytes([1; 16]);
    const CHIEF: UserId = UserId::from_bytes([2; 16]);
    const OTHER_CHIEF: UserId = UserId::from_bytes([3; 16]);

    fn rules(approvals: u32) -> GrantRules {
        GrantRules {
            max_duration: 24 * HOUR,
            pending_ttl: HOUR,
            approvals,
        }
    }

    fn request() -> AccessRequest {
        let asked = Asked {
            patient: "p7",
            categories: vec!["labs".into()],
            reason: "suspected drug reaction",
            duration: 8 * HOUR,
        };
        let id = GrantId::random(&mut StdRng::seed_from_u64(1));
        AccessRequest::new(id, DERMATOLOGIST, asked, T0)
    }

    #[test]
    fn an_approval_starts_the_grant_for_its_duration_and_it_ends() {
        let rules = rules(1);
        let mut request = request();
        assert_eq!(request.status(&rules, T0), Status::Pending);
        assert!(!request.covers(DERMATOLOGIST, "p7", "labs", T0));
        request
            .approve(CHIEF, true, "ok for this episode", &rules, T0 + 60)
            .unwrap();
        assert_eq!(
            request.state,
            State::Approved {
                start: T0 + 60,
                end: T0 + 60 + 8 * HOUR
            }
        );
        let end = T0 + 60 + 8 * HOUR;
        assert!(request.covers(DERMATOLOGIST, "p7", "labs", end - 1));
        assert!(!request.covers(DERMATOLOGIST, "p7", "labs", end), "ended");
        assert_eq!(request.status(&rules, end), Status::Ended);
        assert!(
            !request.covers(DERMATOLOGIST, "p8", "labs", T0 + 61),
            "another patient"
        );
        assert!(
            !request.covers(DERMATOLOGIST, "p7", "notes", T0 + 61),
            "another category"
        );
        assert!(
            !request.covers(CHIEF, "p7", "labs", T0 + 61),
            "someone else"
        );
    }

    #[test]
    fn the_requester_never_decides_their_own_request() {
        let rules = rules(1);
        let mut request = request();
        // Even holding a role that approves.
        assert_eq!(
            request.approve(DERMATOLOGIST, true, "", &rules, T0),
            Err(GrantError::OwnRequest)
        );
        assert_eq!(
            request.deny(DERMATOLOGIST, true, "", &rules, T0),
            Err(GrantError::OwnRequest)
        );
        assert_eq!(
            request.approve(OTHER_CHIEF, false, "", &rules, T0),
            Err(GrantError::NotApprover)
        );
        assert_eq!(request.state, State::Pending);
        assert!(request.approvals.is_empty());
    }

    #[test]
    fn two_approvals_from_two_people_when_two_are_needed() {
        let rules = rules(2);
        let mut request = request();
        request.approve(CHIEF, true, "", &rules, T0).unwrap();
        assert_eq!(request.state, State::Pending);
        assert_eq!(
            request.approve(CHIEF, true, "again", &rules, T0 + 1),
            Err(GrantError::ApprovedAlready)
        );
        request
            .approve(OTHER_CHIEF, true, "", &rules, T0 + 2)
            .unwrap();
        assert!(matches!(request.state, State::Approved { start, .. } if start == T0 + 2));
        assert_eq!(
            request.approve(UserId::from_bytes([4; 16]), true, "", &rules, T0 + 3),
            Err(GrantError::NotPending)
        );
    }

    #[test]
    fn a_pending_request_expires_and_a_denied_one_stays_denied() {
        let rules = rules(1);
        let mut request = request();
        assert_eq!(request.status(&rules, T0 + HOUR - 1), Status::Pending);
        assert_eq!(request.status(&rules, T0 + HOUR), Status::Expired);
        assert_eq!(
            request.approve(CHIEF, true, "", &rules, T0 + HOUR),
            Err(GrantError::NotPending)
        );
        let mut denied = self::request();
        denied.deny(CHIEF, true, "not needed", &rules, T0).unwrap();
        assert_eq!(denied.status(&rules, T0 + 1), Status::Denied);
        assert_eq!(
            denied.approve(OTHER_CHIEF, true, "", &rules, T0 + 1),
            Err(GrantError::NotPending)
        );
        assert_eq!(
            denied.revoke("operator", &rules, T0 + 1),
            Err(GrantError::NotRevocable)
        );
    }

    #[test]
    fn a_revoked_grant_covers_nothing() {
        let rules = rules(1);
        let mut request = request();
        request.approve(CHIEF, true, "", &rules, T0).unwrap();
        request.revoke("operator", &rules, T0 + 10).unwrap();
        assert_eq!(request.status(&rules, T0 + 11), Status::Revoked);
        assert!(!request.covers(DERMATOLOGIST, "p7", "labs", T0 + 11));
        assert_eq!(
            request.revoke("operator", &rules, T0 + 12),
            Err(GrantError::NotRevocable)
        );
    }

    #[test]
    fn a_break_glass_access_is_active_at_once_and_reviewed_once_by_someone_else() {
        let asked = Asked {
            patient: "p7",
            categories: vec!["labs".into()],
            reason: "unresponsive in the ER",
            duration: HOUR,
        };
        let id = GrantId::from_bytes([4; 16]);
        let mut used = AccessRequest::emergency(id, DERMATOLOGIST, asked, "unconscious", T0);
        assert!(used.covers(DERMATOLOGIST, "p7", "labs", T0));
        assert!(!used.covers(DERMATOLOGIST, "p7", "labs", T0 + HOUR));
        assert!(used.awaits_review());
        let outcome = Outcome::Appropriate;
        assert_eq!(
            used.review(DERMATOLOGIST, true, outcome, "", T0),
            Err(GrantError::OwnRequest)
        );
        assert_eq!(
            used.review(CHIEF, false, outcome, "", T0),
            Err(GrantError::NotReviewer)
        );
        used.review(CHIEF, true, outcome, "justified", T0 + 5)
            .unwrap();
        assert!(!used.awaits_review());
        assert_eq!(
            used.review(OTHER_CHIEF, true, Outcome::Inappropriate, "", T0 + 6),
            Err(GrantError::NotReviewable)
        );
        let mut plain = request();
        assert_eq!(
            plain.review(CHIEF, true, outcome, "", T0),
            Err(GrantError::NotReviewable)
        );
    }

    #[test]
    fn statuses_have_the_names_the_apis_show() {
        let names = [
            Status::Pending,
            Status::Expired,
            Status::Active,
            Status::Ended,
            Status::Denied,
            Status::Revoked,
        ]
        .map(Status::as_str);
        assert_eq!(
            names,
            ["pending", "expired", "active", "ended", "denied", "revoked"]
        );
    }

    #[test]
    fn ids_are_random_hex_and_round_trip() {
        let id = GrantId::random(&mut StdRng::seed_from_u64(3));
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<GrantId>().unwrap(), id);
        assert!("xyz".parse::<GrantId>().is_err());
        let json = serde_json::to_string(&request()).unwrap();
        let back: AccessRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, request());
    }
}
