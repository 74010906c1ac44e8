//! Relations between people and patients: care-team links, and access requests with the grants
//! they become (`policy::grants`).
//!
//! **Contract.** A care-team link is (user, patient, optional end): [`Relations::link`] adds or
//! replaces it, [`Relations::import`] adds many in one transaction (all or none), and
//! [`Relations::on_care_team`] is true only for a link whose end has not passed at `now`.
//! Requests are stored whole; [`Relations::update_request`] applies a transition to the stored
//! request in one atomic read-modify-write, so that two approvers racing see each other's
//! approval, and hands back the request as stored after it (`GrantError::Unknown` for an id the
//! store does not know). [`Relations::grant_for`] finds an active grant of the user for the
//! patient and category at `now`. A store that cannot answer returns an error, and the request
//! is refused (503): a failing store never lets anyone through.

use serde::{Deserialize, Serialize};

use super::Pending;
use crate::identity::UserId;
use crate::policy::GrantUse;
use crate::policy::grants::{AccessRequest, GrantError, GrantId};

/// A person on a patient's care team, until `until` (unix seconds) when set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CareTeamLink {
    pub user: UserId,
    pub patient: String,
    #[serde(default)]
    pub until: Option<u64>,
}

/// A transition of a stored request; it may refuse.
pub type Change = Box<dyn FnOnce(&mut AccessRequest) -> Result<(), GrantError> + Send>;

pub trait Relations: Send + Sync {
    fn link(&self, link: CareTeamLink) -> Pending<'_, ()>;
    /// Adds every link, in one transaction; returns how many.
    fn import(&self, links: Vec<CareTeamLink>) -> Pending<'_, usize>;
    /// `false` when there was no such link.
    fn unlink(&self, user: UserId, patient: &str) -> Pending<'_, bool>;
    /// Every link, or the user's, ordered by user and patient.
    fn links(&self, user: Option<UserId>) -> Pending<'_, Vec<CareTeamLink>>;
    fn on_care_team(&self, user: UserId, patient: &str, now: u64) -> Pending<'_, bool>;

    /// Refuses with `Conflict` when the id is taken.
    fn create_request(&self, request: AccessRequest) -> Pending<'_, ()>;
    fn request(&self, id: GrantId) -> Pending<'_, Option<AccessRequest>>;
    /// Every request, oldest first.
    fn requests(&self) -> Pending<'_, Vec<AccessRequest>>;
    /// The requests `user` made, oldest first.
    fn requests_of(&self, user: UserId) -> Pending<'_, Vec<AccessRequest>>;
    fn update_request(
        &self,
        id: GrantId,
        change: Change,
    ) -> Pending<'_, Result<AccessRequest, GrantError>>;
    /// An active grant of `user` for `patient` that covers `category` at `now`.
    fn grant_for(
        &self,
        user: UserId,
        patient: &str,
        category: &str,
        now: u64,
    ) -> Pending<'_, Option<GrantUse>>;
}

#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use crate::identity::StoreError;
    use crate::policy::GrantRules;
    use crate::policy::grants::{Asked, State};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const T0: u64 = 1_800_000_000;
    const ALICE: UserId = UserId::from_bytes([1; 16]);
    const BOB: UserId = UserId::from_bytes([2; 16]);
    const CAROL: UserId = UserId::from_bytes([3; 16]);
    const RULES: GrantRules = GrantRules {
        max_duration: 86_400,
        pending_ttl: 3600,
        approvals: 2,
    };

    fn link(user: UserId, patient: &str, until: Option<u64>) -> CareTeamLink {
        CareTeamLink {
            user,
            patient: patient.into(),
            until,
        }
    }

    /// The contract every backend keeps; each backend's tests call it on a fresh store.
    pub async fn kept_by(relations: &dyn Relations) {
        relations.link(link(ALICE, "p1", None)).await.unwrap();
        relations
            .link(link(ALICE, "p2", Some(T0 + 60)))
            .await
            .unwrap();
        assert!(relations.on_care_team(ALICE, "p1", T0).await.unwrap());
        assert!(relations.on_care_team(ALICE, "p2", T0 + 59).await.unwrap());
        assert!(
            !relations.on_care_team(ALICE, "p2", T0 + 60).await.unwrap(),
            "ended"
        );
        assert!(!relations.on_care_team(BOB, "p1", T0).await.unwrap());
        assert!(!relations.on_care_team(ALICE, "p3", T0).await.unwrap());
        // Replaced, not doubled.
        relations.link(link(ALICE, "p2", None)).await.unwrap();
        assert!(relations.on_care_team(ALICE, "p2", T0 + 60).await.unwrap());
        let imported = relations
            .import(vec![link(BOB, "p1", None), link(BOB, "p9", None)])
            .await
            .unwrap();
        assert_eq!(imported, 2);
        assert_eq!(relations.links(Some(BOB)).await.unwrap().len(), 2);
        assert_eq!(relations.links(None).await.unwrap().len(), 4);
        assert!(relations.unlink(BOB, "p9").await.unwrap());
        assert!(!relations.unlink(BOB, "p9").await.unwrap());
        assert!(!relations.on_care_team(BOB, "p9", T0).await.unwrap());

        let asked = Asked {
            patient: "p1",
            categories: vec!["labs".into()],
            reason: "a reason",
            duration: 600,
        };
        let id = GrantId::random(&mut StdRng::seed_from_u64(1));
        let request = AccessRequest::new(id, ALICE, asked, T0);
        let id = request.id;
        relations.create_request(request.clone()).await.unwrap();
        let twice = relations.create_request(request).await;
        assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
        assert!(
            relations
                .grant_for(ALICE, "p1", "labs", T0)
                .await
                .unwrap()
                .is_none()
        );
        // Two approvers at once: both count, in one stored request.
        let approve = |by: UserId| -> Change {
            Box::new(move |request| request.approve(by, true, "", &RULES, T0 + 1))
        };
        let (a, b) = tokio::join!(
            relations.update_request(id, approve(BOB)),
            relations.update_request(id, approve(CAROL))
        );
        assert!(a.unwrap().is_ok() && b.unwrap().is_ok());
        let stored = relations.request(id).await.unwrap().unwrap();
        assert_eq!(stored.approvals.len(), 2);
        assert!(matches!(stored.state, State::Approved { .. }));
        // A refused change leaves the request as it was.
        let refused = relations.update_request(id, approve(BOB)).await.unwrap();
        assert_eq!(refused, Err(GrantError::NotPending));
        assert_eq!(relations.request(id).await.unwrap().unwrap(), stored);
        let unknown = GrantId::from_bytes([9; 16]);
        let missing = relations
            .update_request(unknown, approve(BOB))
            .await
            .unwrap();
        assert_eq!(missing, Err(GrantError::Unknown));

        let used = relations
            .grant_for(ALICE, "p1", "labs", T0 + 1)
            .await
            .unwrap();
        assert_eq!(
            used,
            Some(GrantUse {
                id,
                emergency: false
            })
        );
        assert!(
            relations
                .grant_for(ALICE, "p1", "notes", T0 + 1)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            relations
                .grant_for(ALICE, "p2", "labs", T0 + 1)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            relations
                .grant_for(BOB, "p1", "labs", T0 + 1)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            relations
                .grant_for(ALICE, "p1", "labs", T0 + 601)
                .await
                .unwrap()
                .is_none()
        );
        let alices = relations.requests_of(ALICE).await.unwrap();
        assert_eq!(alices, std::slice::from_ref(&stored));
        assert!(relations.requests_of(BOB).await.unwrap().is_empty());
        assert_eq!(relations.requests().await.unwrap(), [stored]);
    }
}
