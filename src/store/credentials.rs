//! Second factors: TOTP seeds (with the parameters they were enrolled with), WebAuthn
//! credentials and recovery codes.
//!
//! **Contract.** Callers hand over and receive plaintext secrets; a backend keeps only sealed
//! values (`identity::seal`) and hashes of recovery codes. Every "use once" operation is a single
//! atomic check-and-set inside the backend, so two requests racing with one code cannot both win:
//! [`Credentials::advance_totp_step`] records a TOTP step only when it is newer than the last one
//! (NIST SP 800-63B 5.1.4.2: an OTP is not accepted twice), [`Credentials::use_recovery_code`]
//! spends a code once (5.1.2), and [`Credentials::record_webauthn_use`] moves a signature counter
//! forward only past the stored one (a cloned authenticator or a replayed signature loses). "Not
//! found" is `None` or an empty list for a user without such a factor, and
//! `StoreError::NotFound` for a delete of one that is not there. Time is a parameter.
//!
//! The last accepted TOTP step is kept here, with the seed, and not in the ephemeral store: the
//! replay check is then one atomic update of the record that holds the seed, in whichever store
//! holds the credentials, so replicas that share the credentials share the check, and a restart
//! cannot forget it (a forgotten step would let a code seen in the last 30 s work again).

use zeroize::Zeroizing;

use super::Pending;
use crate::identity::{RecoveryCode, Totp, TotpParams, UserId, WebAuthnCredential, WebAuthnUse};

pub trait Credentials: Send + Sync {
    /// Stores (or replaces) the user's TOTP seed with the parameters it was enrolled with.
    fn set_totp(
        &self,
        id: UserId,
        seed: Zeroizing<Vec<u8>>,
        params: TotpParams,
        last_used_step: u64,
    ) -> Pending<'_, ()>;
    fn totp(&self, id: UserId) -> Pending<'_, Option<Totp>>;
    /// True when `step` was newer than the last accepted one and is now recorded; false for a
    /// replay.
    fn advance_totp_step(&self, id: UserId, step: u64) -> Pending<'_, bool>;
    fn delete_totp(&self, id: UserId) -> Pending<'_, ()>;

    /// Refuses with `Conflict` when the user already has this credential id.
    fn add_webauthn(&self, id: UserId, credential: WebAuthnCredential) -> Pending<'_, ()>;
    fn webauthn_credentials(&self, id: UserId) -> Pending<'_, Vec<WebAuthnCredential>>;
    /// After a verified assertion: the new counter and backup flags, `last_used = now`; false
    /// (nothing written) when the stored counter has meanwhile reached the new one. A counter
    /// both sides leave at 0 always passes (authenticators without counters).
    fn record_webauthn_use(
        &self,
        id: UserId,
        credential_id: Vec<u8>,
        used: WebAuthnUse,
        now: u64,
    ) -> Pending<'_, bool>;
    fn delete_webauthn(&self, id: UserId, credential_id: Vec<u8>) -> Pending<'_, ()>;

    /// Replaces the user's recovery codes with these hashes, all unused.
    fn set_recovery_codes(&self, id: UserId, hashes: Vec<String>) -> Pending<'_, ()>;
    fn recovery_codes(&self, id: UserId) -> Pending<'_, Vec<RecoveryCode>>;
    /// True if the code with this hash was unused and is now spent, false if already spent;
    /// `NotFound` when the user has no such code.
    fn use_recovery_code(&self, id: UserId, hash: String) -> Pending<'_, bool>;
}

#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use crate::identity::StoreError;

    const T0: u64 = 1_800_000_000;

    /// The contract every backend keeps, for a user `alice` that exists in the store.
    pub async fn kept_by(credentials: &dyn Credentials, alice: UserId) {
        let params = crate::auth::totp::TotpConfig::default().params().unwrap();
        assert!(credentials.totp(alice).await.unwrap().is_none());
        let seed = Zeroizing::new(b"seed".to_vec());
        credentials.set_totp(alice, seed, params, 10).await.unwrap();
        let stored = credentials.totp(alice).await.unwrap().unwrap();
        assert_eq!(
            (stored.seed.as_slice(), stored.params),
            (&b"seed"[..], Some(params))
        );
        assert!(
            !credentials.advance_totp_step(alice, 10).await.unwrap(),
            "a replay"
        );
        let (a, b) = tokio::join!(
            credentials.advance_totp_step(alice, 11),
            credentials.advance_totp_step(alice, 11)
        );
        assert!(a.unwrap() ^ b.unwrap(), "one of two racing codes wins");
        credentials.delete_totp(alice).await.unwrap();
        let gone = credentials.delete_totp(alice).await;
        assert!(matches!(gone, Err(StoreError::NotFound(_))));

        let key = WebAuthnCredential {
            credential_id: b"cred".to_vec(),
            credential: b"blob".to_vec().into(),
            created: T0,
            last_used: None,
            sign_count: 1,
            backup_eligible: false,
            backup_state: false,
        };
        credentials.add_webauthn(alice, key.clone()).await.unwrap();
        let twice = credentials.add_webauthn(alice, key).await;
        assert!(matches!(twice, Err(StoreError::Conflict(_))));
        let used = WebAuthnUse {
            sign_count: 2,
            backup_eligible: false,
            backup_state: false,
        };
        let record = |now| credentials.record_webauthn_use(alice, b"cred".to_vec(), used, now);
        let (a, b) = tokio::join!(record(T0 + 1), record(T0 + 1));
        assert!(a.unwrap() ^ b.unwrap(), "one of two racing signatures wins");
        let listed = credentials.webauthn_credentials(alice).await.unwrap();
        assert_eq!(
            (listed[0].sign_count, listed[0].last_used),
            (2, Some(T0 + 1))
        );
        credentials
            .delete_webauthn(alice, b"cred".to_vec())
            .await
            .unwrap();
        assert!(
            credentials
                .webauthn_credentials(alice)
                .await
                .unwrap()
                .is_empty()
        );

        let hashes = vec!["h1".to_owned(), "h2".to_owned()];
        credentials.set_recovery_codes(alice, hashes).await.unwrap();
        let spend = || credentials.use_recovery_code(alice, "h1".into());
        let (a, b) = tokio::join!(spend(), spend());
        assert!(a.unwrap() ^ b.unwrap(), "a recovery code works once");
        let unknown = credentials.use_recovery_code(alice, "h3".into()).await;
        assert!(matches!(unknown, Err(StoreError::NotFound(_))));
        let left = credentials.recovery_codes(alice).await.unwrap();
        assert_eq!(left.iter().filter(|c| !c.used).count(), 1);
    }
}
