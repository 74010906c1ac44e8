//! Accounts: users, their roles and password hashes, and the one-time enrollment tokens that let
//! a new or reset user set their own password and second factor.
//!
//! **Contract.** A user is found by id or by name, the name compared case-insensitively (after
//! NFKC normalization), which is also the uniqueness rule: [`Accounts::create`] refuses a taken id
//! or name with `Conflict`. "Not found" is `StoreError::NotFound` for a user, and `None` for a
//! token, which is unknown, used or expired (`now >= expires`) alike, so that an answer never tells
//! which. Password hashes are PHC strings (`$argon2id$...`), never passwords. Enrollment tokens are
//! kept only as keyed hashes; the newest token of a user revokes the older ones in the same
//! transaction, and [`Accounts::consume_enrollment_token`] is a single atomic check-and-set: of two
//! requests racing with one token, one gets the user. Time is a parameter (`now`, unix seconds).
//! A store that cannot answer returns an error, and the caller refuses (503); nothing falls back
//! to memory.

use super::Pending;
use crate::identity::{User, UserId};

pub trait Accounts: Send + Sync {
    /// Refuses with `Conflict` when the id or the name is taken.
    fn create(&self, user: User) -> Pending<'_, ()>;
    fn user(&self, id: UserId) -> Pending<'_, User>;
    fn user_by_name(&self, name: &str) -> Pending<'_, User>;
    /// Every user, ordered by id.
    fn users(&self) -> Pending<'_, Vec<User>>;
    fn set_disabled(&self, id: UserId, disabled: bool) -> Pending<'_, ()>;
    fn set_roles(&self, id: UserId, roles: Vec<String>) -> Pending<'_, ()>;
    /// `None` removes the password (a reset: the user sets a new one through an enrollment link).
    fn set_password_hash(&self, id: UserId, phc: Option<String>) -> Pending<'_, ()>;
    fn set_mfa_required_enrollment(&self, id: UserId, required: bool) -> Pending<'_, ()>;

    /// Keeps a keyed hash of `token` for `id` until `expires`, revoking `id`'s older tokens: the
    /// newest link is the only one that works, so a link reissued after a reset (or a lost mail)
    /// cannot be raced by the old one.
    fn create_enrollment_token(&self, id: UserId, token: &[u8], expires: u64) -> Pending<'_, ()>;
    /// The token's user without using the token up: a check before work that may still be
    /// refused (a password the policy rejects must not burn the link).
    fn enrollment_token_user(&self, token: &[u8], now: u64) -> Pending<'_, Option<UserId>>;
    /// The token's user, once: the token is gone afterwards.
    fn consume_enrollment_token(&self, token: &[u8], now: u64) -> Pending<'_, Option<UserId>>;
}

#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use crate::identity::StoreError;

    const T0: u64 = 1_800_000_000;

    /// The contract every backend keeps; each backend's tests call it on a fresh store.
    pub async fn kept_by(accounts: &dyn Accounts) {
        let alice = User::new(UserId::from_bytes([1; 16]), "Alice", T0);
        accounts.create(alice.clone()).await.unwrap();
        let same_name = User::new(UserId::from_bytes([2; 16]), "ALICE", T0);
        let taken = accounts.create(same_name).await;
        assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
        assert_eq!(accounts.user_by_name("alice").await.unwrap().id, alice.id);
        let missing = accounts.user(UserId::from_bytes([9; 16])).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))));

        accounts
            .set_roles(alice.id, vec!["nurse".into()])
            .await
            .unwrap();
        accounts.set_disabled(alice.id, true).await.unwrap();
        let phc = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned());
        accounts
            .set_password_hash(alice.id, phc.clone())
            .await
            .unwrap();
        accounts
            .set_mfa_required_enrollment(alice.id, true)
            .await
            .unwrap();
        let changed = accounts.user(alice.id).await.unwrap();
        assert_eq!(changed.roles, ["nurse"]);
        assert!(changed.disabled && changed.mfa_required_enrollment);
        assert_eq!(changed.password_hash, phc);
        assert_eq!(accounts.users().await.unwrap().len(), 1);

        // The newest link is the only one; looking it up leaves it; using it is once.
        accounts
            .create_enrollment_token(alice.id, b"old", T0 + 60)
            .await
            .unwrap();
        accounts
            .create_enrollment_token(alice.id, b"new", T0 + 60)
            .await
            .unwrap();
        let user_of = |token: &'static [u8], now| accounts.enrollment_token_user(token, now);
        assert_eq!(user_of(b"old", T0).await.unwrap(), None);
        assert_eq!(user_of(b"new", T0).await.unwrap(), Some(alice.id));
        assert_eq!(user_of(b"new", T0 + 60).await.unwrap(), None, "expired");
        let spend = |now| accounts.consume_enrollment_token(b"new", now);
        let (first, second) = tokio::join!(spend(T0), spend(T0));
        let mut won = [first.unwrap(), second.unwrap()];
        won.sort();
        assert_eq!(won, [None, Some(alice.id)], "one of two racing uses wins");
    }
}
