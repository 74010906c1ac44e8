//! The embedded backend of the state layer: the identity store's redb file
//! (`identity::EmbeddedStore`) behind the async traits, with the care-team and access-request
//! tables beside its own ([`relations`]). redb is synchronous, so every operation runs on the
//! blocking pool, off the runtime's threads; a task that died is a store failure.

mod relations;

use std::sync::Arc;

use tokio::sync::broadcast;
use zeroize::Zeroizing;

use super::Pending;
use super::accounts::Accounts;
use super::credentials::Credentials;
use super::relations::{CareTeamLink, Change, Holds, Relations};
use super::sessions::{Published, SessionStore};
use crate::identity::{
    EmbeddedStore, RecoveryCode, SessionKey, SessionRecord, StoreError, Totp, TotpParams, User,
    UserId, WebAuthnCredential, WebAuthnUse,
};
use crate::policy::GrantUse;
use crate::policy::grants::{AccessRequest, GrantError, GrantId};

/// Revocations a subscriber may fall behind by before it must drop its whole cache.
const FEED_CAPACITY: usize = 1024;

/// Accounts, credentials and sessions in one redb file; the revocation feed within the process
/// (the file is one process's: a second replica needs a shared store).
pub struct Embedded {
    store: Arc<EmbeddedStore>,
    feed: broadcast::Sender<Published>,
}

impl Embedded {
    pub fn new(store: Arc<EmbeddedStore>) -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Self { store, feed }
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Pending<'_, T> {
        let store = self.store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&store))
                .await
                .map_err(|error| StoreError::Storage(format!("store task: {error}")))?
        })
    }
}

impl Accounts for Embedded {
    fn create(&self, user: User) -> Pending<'_, ()> {
        self.run(move |store| store.create_user(&user))
    }

    fn user(&self, id: UserId) -> Pending<'_, User> {
        self.run(move |store| store.user(id))
    }

    fn user_by_name(&self, name: &str) -> Pending<'_, User> {
        let name = name.to_owned();
        self.run(move |store| store.user_by_name(&name))
    }

    fn users(&self) -> Pending<'_, Vec<User>> {
        self.run(|store| store.users())
    }

    fn set_disabled(&self, id: UserId, disabled: bool) -> Pending<'_, ()> {
        self.run(move |store| store.set_disabled(id, disabled))
    }

    fn set_roles(&self, id: UserId, roles: Vec<String>) -> Pending<'_, ()> {
        self.run(move |store| store.set_roles(id, &roles))
    }

    fn set_password_hash(&self, id: UserId, phc: Option<String>) -> Pending<'_, ()> {
        self.run(move |store| store.set_password_hash(id, phc.as_deref()))
    }

    fn set_mfa_required_enrollment(&self, id: UserId, required: bool) -> Pending<'_, ()> {
        self.run(move |store| store.set_mfa_required_enrollment(id, required))
    }

    fn create_enrollment_token(&self, id: UserId, token: &[u8], expires: u64) -> Pending<'_, ()> {
        let token = Zeroizing::new(token.to_vec());
        self.run(move |store| store.create_enrollment_token(id, &token, expires))
    }

    fn enrollment_token_user(&self, token: &[u8], now: u64) -> Pending<'_, Option<UserId>> {
        let token = Zeroizing::new(token.to_vec());
        self.run(move |store| store.enrollment_token_user(&token, now))
    }

    fn consume_enrollment_token(&self, token: &[u8], now: u64) -> Pending<'_, Option<UserId>> {
        let token = Zeroizing::new(token.to_vec());
        self.run(move |store| store.consume_enrollment_token(&token, now))
    }
}

impl Credentials for Embedded {
    fn set_totp(
        &self,
        id: UserId,
        seed: Zeroizing<Vec<u8>>,
        params: TotpParams,
        last_used_step: u64,
    ) -> Pending<'_, ()> {
        self.run(move |store| store.set_totp(id, &seed, params, last_used_step))
    }

    fn totp(&self, id: UserId) -> Pending<'_, Option<Totp>> {
        self.run(move |store| store.totp(id))
    }

    fn advance_totp_step(&self, id: UserId, step: u64) -> Pending<'_, bool> {
        self.run(move |store| store.advance_totp_step(id, step))
    }

    fn delete_totp(&self, id: UserId) -> Pending<'_, ()> {
        self.run(move |store| store.delete_totp(id))
    }

    fn add_webauthn(&self, id: UserId, credential: WebAuthnCredential) -> Pending<'_, ()> {
        self.run(move |store| store.add_webauthn(id, &credential))
    }

    fn webauthn_credentials(&self, id: UserId) -> Pending<'_, Vec<WebAuthnCredential>> {
        self.run(move |store| store.webauthn_credentials(id))
    }

    fn record_webauthn_use(
        &self,
        id: UserId,
        credential_id: Vec<u8>,
        used: WebAuthnUse,
        now: u64,
    ) -> Pending<'_, bool> {
        self.run(move |store| store.record_webauthn_use(id, &credential_id, used, now))
    }

    fn delete_webauthn(&self, id: UserId, credential_id: Vec<u8>) -> Pending<'_, ()> {
        self.run(move |store| store.delete_webauthn(id, &credential_id))
    }

    fn set_recovery_codes(&self, id: UserId, hashes: Vec<String>) -> Pending<'_, ()> {
        self.run(move |store| store.set_recovery_codes(id, &hashes))
    }

    fn recovery_codes(&self, id: UserId) -> Pending<'_, Vec<RecoveryCode>> {
        self.run(move |store| store.recovery_codes(id))
    }

    fn use_recovery_code(&self, id: UserId, hash: String) -> Pending<'_, bool> {
        self.run(move |store| store.use_recovery_code(id, &hash))
    }
}

impl Relations for Embedded {
    fn link(&self, link: CareTeamLink) -> Pending<'_, ()> {
        self.run(move |store| relations::link(store, &link))
    }

    fn import(&self, links: Vec<CareTeamLink>) -> Pending<'_, usize> {
        self.run(move |store| relations::import(store, &links))
    }

    fn unlink(&self, user: UserId, patient: &str) -> Pending<'_, bool> {
        let patient = patient.to_owned();
        self.run(move |store| relations::unlink(store, user, &patient))
    }

    fn links(&self, user: Option<UserId>) -> Pending<'_, Vec<CareTeamLink>> {
        self.run(move |store| relations::links(store, user))
    }

    fn on_care_team(&self, user: UserId, patient: &str, now: u64) -> Pending<'_, Option<Holds>> {
        let patient = patient.to_owned();
        self.run(move |store| relations::on_care_team(store, user, &patient, now))
    }

    fn create_request(&self, request: AccessRequest) -> Pending<'_, ()> {
        self.run(move |store| relations::create_request(store, &request))
    }

    fn request(&self, id: GrantId) -> Pending<'_, Option<AccessRequest>> {
        self.run(move |store| relations::request(store, id))
    }

    fn requests(&self) -> Pending<'_, Vec<AccessRequest>> {
        self.run(relations::requests)
    }

    fn requests_of(&self, user: UserId) -> Pending<'_, Vec<AccessRequest>> {
        self.run(move |store| relations::requests_of(store, user))
    }

    fn update_request(
        &self,
        id: GrantId,
        change: Change,
    ) -> Pending<'_, Result<AccessRequest, GrantError>> {
        self.run(move |store| relations::update_request(store, id, change))
    }

    fn grant_for(
        &self,
        user: UserId,
        patient: &str,
        category: &str,
        now: u64,
    ) -> Pending<'_, Option<GrantUse>> {
        let (patient, category) = (patient.to_owned(), category.to_owned());
        self.run(move |store| relations::grant_for(store, user, &patient, &category, now))
    }
}

impl SessionStore for Embedded {
    fn create(&self, token: &[u8], record: SessionRecord) -> Pending<'_, SessionKey> {
        let token = Zeroizing::new(token.to_vec());
        self.run(move |store| store.create_session(&token, &record))
    }

    fn find(&self, token: &[u8]) -> Pending<'_, Option<(SessionKey, SessionRecord)>> {
        let token = Zeroizing::new(token.to_vec());
        self.run(move |store| store.session(&token))
    }

    fn touch(&self, key: SessionKey, last_seen: u64) -> Pending<'_, bool> {
        self.run(move |store| store.touch_session(key, last_seen))
    }

    fn delete(&self, key: SessionKey) -> Pending<'_, bool> {
        self.run(move |store| store.delete_session(key))
    }

    fn delete_user(&self, user: UserId) -> Pending<'_, Vec<SessionKey>> {
        self.run(move |store| store.delete_user_sessions(user))
    }

    fn all(&self) -> Pending<'_, Vec<(SessionKey, SessionRecord)>> {
        self.run(|store| store.sessions())
    }

    fn publish(&self, published: Published) -> Pending<'_, ()> {
        // No subscriber is no error: then no cache holds anything stale.
        let _ = self.feed.send(published);
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.feed.subscribe()
    }

    /// In-process: nothing can cut it.
    fn feed_is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keyring, MasterKey};
    use crate::store::relations::Cached;

    fn embedded(dir: &std::path::Path) -> Embedded {
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        Embedded::new(Arc::new(EmbeddedStore::open(dir, keyring).unwrap()))
    }

    #[tokio::test]
    async fn keeps_the_accounts_contract() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::accounts::contract::kept_by(&embedded(dir.path())).await;
    }

    /// A store holding the user `alice`.
    async fn with_alice(dir: &std::path::Path) -> (Embedded, UserId) {
        let store = embedded(dir);
        let alice = User::new(UserId::from_bytes([1; 16]), "alice", 0);
        Accounts::create(&store, alice.clone()).await.unwrap();
        (store, alice.id)
    }

    #[tokio::test]
    async fn keeps_the_credentials_contract() {
        let dir = tempfile::tempdir().unwrap();
        let (store, alice) = with_alice(dir.path()).await;
        crate::store::credentials::contract::kept_by(&store, alice).await;
    }

    #[tokio::test]
    async fn keeps_the_relations_contract() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::relations::contract::kept_by(&embedded(dir.path())).await;
    }

    #[tokio::test]
    async fn the_decision_cache_keeps_the_relations_contract() {
        let dir = tempfile::tempdir().unwrap();
        let cached = Cached::new(Arc::new(embedded(dir.path())));
        crate::store::relations::contract::kept_by(&cached).await;
    }

    #[tokio::test]
    async fn the_decision_cache_answers_from_memory_until_a_write_or_an_end() {
        use crate::policy::GrantRules;
        use crate::policy::grants::{AccessRequest, Asked};
        const T0: u64 = 1_800_000_000;
        let (alice, bob) = (UserId::from_bytes([1; 16]), UserId::from_bytes([2; 16]));
        let dir = tempfile::tempdir().unwrap();
        let raw = embedded(dir.path());
        // The same store behind the cache and beside it: a write beside it is not seen.
        let cached = Cached::new(Arc::new(Embedded::new(raw.store.clone())));
        let link = |user, patient: &str| CareTeamLink {
            user,
            patient: patient.into(),
            until: None,
        };
        cached.link(link(alice, "p1")).await.unwrap();
        assert_eq!(
            cached.on_care_team(alice, "p1", T0).await.unwrap(),
            Some(Holds::Always)
        );
        assert!(raw.unlink(alice, "p1").await.unwrap());
        assert_eq!(
            cached.on_care_team(alice, "p1", T0).await.unwrap(),
            Some(Holds::Always),
            "from memory"
        );
        cached.link(link(bob, "p9")).await.unwrap();
        assert_eq!(
            cached.on_care_team(alice, "p1", T0).await.unwrap(),
            None,
            "any write forgets every answer"
        );

        let rules = GrantRules {
            max_duration: 3600,
            pending_ttl: 600,
            approvals: 1,
        };
        let asked = Asked {
            patient: "p2",
            categories: vec!["labs".into()],
            reason: "a reason",
            duration: 600,
        };
        let id = crate::policy::grants::GrantId::from_bytes([5; 16]);
        let mut request = AccessRequest::new(id, alice, asked, T0);
        request.approve(bob, true, "", &rules, T0).unwrap();
        raw.create_request(request).await.unwrap();
        let used = cached.grant_for(alice, "p2", "labs", T0).await.unwrap();
        assert_eq!(used.map(|g| (g.id, g.until)), Some((id, T0 + 600)));
        assert!(
            cached
                .grant_for(alice, "p2", "labs", T0 + 600)
                .await
                .unwrap()
                .is_none(),
            "a kept grant is not used past its end"
        );
        assert!(
            cached
                .grant_for(alice, "p2", "labs", T0 + 1)
                .await
                .unwrap()
                .is_some()
        );
        let revoke: Change = Box::new(move |r| r.revoke("bob", &rules, T0 + 2));
        cached.update_request(id, revoke).await.unwrap().unwrap();
        assert!(
            cached
                .grant_for(alice, "p2", "labs", T0 + 3)
                .await
                .unwrap()
                .is_none(),
            "revoked: at once"
        );
    }

    #[tokio::test]
    async fn keeps_the_sessions_contract() {
        let dir = tempfile::tempdir().unwrap();
        let (store, alice) = with_alice(dir.path()).await;
        crate::store::sessions::contract::kept_by(&store, alice).await;
    }
}
