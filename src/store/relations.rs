//! Relations between people and patients: care-team links, and access requests with the grants
//! they become (`policy::grants`).
//!
//! **Contract.** A care-team link is (user, patient, optional end): [`Relations::link`] adds or
//! replaces it, [`Relations::import`] adds many in one transaction (all or none), and
//! [`Relations::on_care_team`] finds only a link whose end has not passed at `now`, and says
//! how long that holds.
//! Requests are stored whole; [`Relations::update_request`] applies a transition to the stored
//! request in one atomic read-modify-write, so that two approvers racing see each other's
//! approval, and hands back the request as stored after it (`GrantError::Unknown` for an id the
//! store does not know). [`Relations::grant_for`] finds an active grant of the user for the
//! patient and category at `now`, with its end. A store that cannot answer returns an error, and
//! the request is refused (503): a failing store never lets anyone through.
//!
//! **The decision cache.** Every patient request asks the two reads above. [`Cached`] answers
//! them from memory: an answer is kept with the relations' *epoch*, a counter that every write
//! through the cache moves on once it has returned, and is used only while the epoch is the same
//! and the `now` asked for is not earlier than the one it was read for, and, for a link or grant
//! found, before its end. A write that changes any relation therefore
//! stops every cached answer at once (a revoked grant, an ended link, a disabled account's
//! grants): writes are rare beside reads, so forgetting everything costs little. The epoch is
//! read *before* the store is asked, so a read that races a write is kept under the old epoch
//! and never used after the write returns. Only writes through this process move the epoch, so
//! the cache stands only in front of the embedded store: relations in PostgreSQL, which other
//! replicas write too, are read from the database on every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::Pending;
use crate::identity::{StoreError, UserId};
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

/// How long a care-team link found at `now` holds: until its end, or for ever (until a write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    Until(u64),
    Always,
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
    /// The live link's hold at `now`, `None` when the user is not on the patient's care team.
    fn on_care_team(&self, user: UserId, patient: &str, now: u64) -> Pending<'_, Option<Holds>>;

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

/// An answer kept with the epoch it was read under and the `now` it was read for: it holds
/// for that `now` and later, never earlier (a grant found now did not cover the past).
#[derive(Clone)]
struct Kept<T> {
    epoch: u64,
    at: u64,
    answer: T,
}

/// The decision cache in front of a [`Relations`] backend (see the module's essay).
pub struct Cached {
    inner: Arc<dyn Relations>,
    epoch: AtomicU64,
    care_team: Cache<(UserId, Box<str>), Kept<Option<Holds>>>,
    grants: Cache<GrantKey, Kept<Option<GrantUse>>>,
}

/// A cache of answers under a fast seeded hash: every patient request looks one up.
type Cache<K, V> = moka::sync::Cache<K, V, foldhash::fast::RandomState>;

/// User, patient, category.
type GrantKey = (UserId, Box<str>, Box<str>);

/// Answers kept per kind: a few hundred bytes each, so tens of MiB at most.
const CACHED_ANSWERS: u64 = 100_000;

impl Cached {
    pub fn new(inner: Arc<dyn Relations>) -> Self {
        Self {
            inner,
            epoch: AtomicU64::new(0),
            care_team: cache(),
            grants: cache(),
        }
    }

    /// The answer kept under `key` when it still holds at `now`, else `read`'s, then kept.
    async fn kept<'a, K, T>(
        &'a self,
        cache: &'a Cache<K, Kept<T>>,
        key: K,
        now: u64,
        holds: impl Fn(&T) -> bool,
        read: impl FnOnce(&K) -> Pending<'a, T>,
    ) -> Result<T, StoreError>
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
    {
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(kept) = cache.get(&key)
            && kept.epoch == epoch
            && kept.at <= now
            && holds(&kept.answer)
        {
            return Ok(kept.answer);
        }
        let answer = read(&key).await?;
        let kept = Kept {
            epoch,
            at: now,
            answer: answer.clone(),
        };
        cache.insert(key, kept);
        Ok(answer)
    }

    /// Runs a write, then moves the epoch on (also when it failed: it may have written).
    fn write<'a, T: Send + 'a>(&'a self, write: Pending<'a, T>) -> Pending<'a, T> {
        Box::pin(async move {
            let written = write.await;
            self.epoch.fetch_add(1, Ordering::AcqRel);
            written
        })
    }
}

fn cache<K, V>() -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(CACHED_ANSWERS)
        .build_with_hasher(foldhash::fast::RandomState::default())
}

impl Relations for Cached {
    fn link(&self, link: CareTeamLink) -> Pending<'_, ()> {
        self.write(self.inner.link(link))
    }

    fn import(&self, links: Vec<CareTeamLink>) -> Pending<'_, usize> {
        self.write(self.inner.import(links))
    }

    fn unlink(&self, user: UserId, patient: &str) -> Pending<'_, bool> {
        self.write(self.inner.unlink(user, patient))
    }

    fn links(&self, user: Option<UserId>) -> Pending<'_, Vec<CareTeamLink>> {
        self.inner.links(user)
    }

    fn on_care_team(&self, user: UserId, patient: &str, now: u64) -> Pending<'_, Option<Holds>> {
        let key = (user, Box::from(patient));
        let holds = move |answer: &Option<Holds>| match answer {
            Some(Holds::Until(end)) => now < *end,
            Some(Holds::Always) | None => true,
        };
        let read = move |key: &(UserId, Box<str>)| self.inner.on_care_team(user, &key.1, now);
        Box::pin(self.kept(&self.care_team, key, now, holds, read))
    }

    fn create_request(&self, request: AccessRequest) -> Pending<'_, ()> {
        self.write(self.inner.create_request(request))
    }

    fn request(&self, id: GrantId) -> Pending<'_, Option<AccessRequest>> {
        self.inner.request(id)
    }

    fn requests(&self) -> Pending<'_, Vec<AccessRequest>> {
        self.inner.requests()
    }

    fn requests_of(&self, user: UserId) -> Pending<'_, Vec<AccessRequest>> {
        self.inner.requests_of(user)
    }

    fn update_request(
        &self,
        id: GrantId,
        change: Change,
    ) -> Pending<'_, Result<AccessRequest, GrantError>> {
        self.write(self.inner.update_request(id, change))
    }

    fn grant_for(
        &self,
        user: UserId,
        patient: &str,
        category: &str,
        now: u64,
    ) -> Pending<'_, Option<GrantUse>> {
        let key = (user, Box::from(patient), Box::from(category));
        let holds = move |answer: &Option<GrantUse>| answer.is_none_or(|grant| now < grant.until);
        let read = move |key: &GrantKey| self.inner.grant_for(user, &key.1, &key.2, now);
        Box::pin(self.kept(&self.grants, key, now, holds, read))
    }
}

#[cfg(test)]
pub(crate) mod contract {
    use super::*;
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
        assert_eq!(
            relations.on_care_team(ALICE, "p1", T0).await.unwrap(),
            Some(Holds::Always)
        );
        assert_eq!(
            relations.on_care_team(ALICE, "p2", T0).await.unwrap(),
            Some(Holds::Until(T0 + 60))
        );
        assert!(
            relations
                .on_care_team(ALICE, "p2", T0 + 59)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            relations
                .on_care_team(ALICE, "p2", T0 + 60)
                .await
                .unwrap()
                .is_none(),
            "ended"
        );
        assert!(
            relations
                .on_care_team(BOB, "p1", T0)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            relations
                .on_care_team(ALICE, "p3", T0)
                .await
                .unwrap()
                .is_none()
        );
        // Replaced, not doubled.
        relations.link(link(ALICE, "p2", None)).await.unwrap();
        assert!(
            relations
                .on_care_team(ALICE, "p2", T0 + 60)
                .await
                .unwrap()
                .is_some()
        );
        let imported = relations
            .import(vec![link(BOB, "p1", None), link(BOB, "p9", None)])
            .await
            .unwrap();
        assert_eq!(imported, 2);
        assert_eq!(relations.links(Some(BOB)).await.unwrap().len(), 2);
        assert_eq!(relations.links(None).await.unwrap().len(), 4);
        assert!(relations.unlink(BOB, "p9").await.unwrap());
        assert!(!relations.unlink(BOB, "p9").await.unwrap());
        assert!(
            relations
                .on_care_team(BOB, "p9", T0)
                .await
                .unwrap()
                .is_none()
        );

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
                emergency: false,
                until: T0 + 1 + 600
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
