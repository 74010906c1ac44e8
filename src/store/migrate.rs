//! `wardgate migrate`: a gateway's embedded store copied into an empty PostgreSQL database, for
//! the step from one replica to several.
//!
//! Everything is read and written through the store traits, so the copy is what the gateway
//! itself would read back: accounts (password hashes as they are), TOTP seeds with their
//! parameters and last used step (a code seen before the move stays spent), passkeys with
//! their counters, recovery codes with the spent ones spent again, care-team links, access
//! requests and grants, and the assertion key and admin token (upstreams keep trusting the
//! assertions, operators keep their token). Secrets are opened and sealed again under the same
//! identity keyring, which every replica must hold. Not copied: sessions (people log in again)
//! and pending enrollment links, whose tokens the store keeps only as hashes (issue them again).
//!
//! The target must hold nothing yet: a copy never merges into accounts that are already there.
//! A copy that fails half-way leaves a database that is not empty, so a second run refuses it;
//! drop and create the database, then run again.

use std::path::Path;

use crate::assertion::{self, AssertionKey};
use crate::identity::{StoreError, TotpParams};
use crate::store::Stores;
use crate::store::accounts::Accounts;
use crate::store::credentials::Credentials;
use crate::store::keys::{self, AdminToken, AdminTokenError};
use crate::store::postgres::Postgres;
use crate::store::relations::Relations;

/// What was copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub users: usize,
    pub totp: usize,
    pub passkeys: usize,
    pub recovery_codes: usize,
    pub links: usize,
    pub requests: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the PostgreSQL database already holds accounts, relations or keys: migrate copies into an empty database only"
    )]
    NotEmpty,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    AssertionKey(#[from] assertion::AssertionKeyError),
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
}

/// Copies the embedded `from` (its key files in `data_dir`) into `to`. `totp` stands for the
/// parameters of a seed stored before they were kept with it, as the gateway reads such a seed.
pub async fn embedded_to_postgres(
    from: &Stores,
    data_dir: &Path,
    to: &Postgres,
    totp: TotpParams,
) -> Result<Copied, MigrateError> {
    if !to.is_empty().await? {
        return Err(MigrateError::NotEmpty);
    }
    let assertion_key = AssertionKey::read_pkcs8(&data_dir.join(assertion::KEY_FILE))?;
    let admin_token = match AdminToken::load(&keys::token_path(data_dir)) {
        Ok(token) => Some(token),
        Err(AdminTokenError::File { source, .. }) if source.is_missing() => None,
        Err(error) => return Err(error.into()),
    };
    let mut copied = Copied::default();
    for user in from.accounts.users().await? {
        let id = user.id;
        to.create(user).await?;
        copied.users += 1;
        if let Some(seed) = from.credentials.totp(id).await? {
            let params = seed.params.unwrap_or(totp);
            to.set_totp(id, seed.seed, params, seed.last_used_step)
                .await?;
            copied.totp += 1;
        }
        for passkey in from.credentials.webauthn_credentials(id).await? {
            to.add_webauthn(id, passkey).await?;
            copied.passkeys += 1;
        }
        let codes = from.credentials.recovery_codes(id).await?;
        copied.recovery_codes += codes.len();
        let hashes = codes.iter().map(|code| code.hash.clone()).collect();
        to.set_recovery_codes(id, hashes).await?;
        for spent in codes.into_iter().filter(|code| code.used) {
            to.use_recovery_code(id, spent.hash).await?;
        }
    }
    copied.links = to.import(from.relations.links(None).await?).await?;
    for request in from.relations.requests().await? {
        to.create_request(request).await?;
        copied.requests += 1;
    }
    to.adopt_keys(&assertion_key, admin_token.as_ref()).await?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use zeroize::Zeroizing;

    use super::*;
    use crate::identity::{EmbeddedStore, User, UserId, WebAuthnCredential};
    use crate::policy::grants::{AccessRequest, Asked, GrantId};
    use crate::store::keys::{DataDirKeys, SharedKeys};
    use crate::store::postgres::tests::{fresh, keyring};
    use crate::store::relations::CareTeamLink;

    const T0: u64 = 1_800_000_000;
    const ALICE: UserId = UserId::from_bytes([1; 16]);

    fn totp() -> TotpParams {
        crate::auth::totp::TotpConfig::default().params().unwrap()
    }

    /// An embedded store with one of everything, and its key files.
    async fn embedded(dir: &Path) -> (Stores, AccessRequest) {
        let store = EmbeddedStore::open(dir, keyring()).unwrap();
        let stores = Stores::embedded(Arc::new(store));
        let mut alice = User::new(ALICE, "Alice", T0);
        alice.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        alice.roles = vec!["physician".into()];
        stores.accounts.create(alice).await.unwrap();
        let seed = Zeroizing::new(vec![7; 20]);
        let credentials = &stores.credentials;
        credentials.set_totp(ALICE, seed, totp(), 42).await.unwrap();
        let passkey = WebAuthnCredential {
            credential_id: b"cred".to_vec(),
            credential: b"blob".to_vec().into(),
            created: T0,
            last_used: Some(T0 + 1),
            sign_count: 9,
            backup_eligible: true,
            backup_state: false,
        };
        credentials.add_webauthn(ALICE, passkey).await.unwrap();
        let hashes = vec!["h1".to_owned(), "h2".to_owned()];
        credentials.set_recovery_codes(ALICE, hashes).await.unwrap();
        assert!(
            credentials
                .use_recovery_code(ALICE, "h1".into())
                .await
                .unwrap()
        );
        let link = CareTeamLink {
            user: ALICE,
            patient: "p1".into(),
            until: Some(T0 + 60),
        };
        stores.relations.link(link).await.unwrap();
        let asked = Asked {
            patient: "p2",
            categories: vec!["labs".into()],
            reason: "a consult",
            duration: 600,
        };
        let id = GrantId::random(&mut rand::rngs::StdRng::seed_from_u64(1));
        let request = AccessRequest::new(id, ALICE, asked, T0);
        stores
            .relations
            .create_request(request.clone())
            .await
            .unwrap();
        let keys = DataDirKeys::new(dir.to_path_buf());
        keys.assertion_key().await.unwrap();
        keys.admin_token().await.unwrap();
        (stores, request)
    }

    #[tokio::test]
    async fn everything_the_gateway_reads_arrives_and_a_second_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (from, request) = embedded(dir.path()).await;
        let (_server, to) = fresh().await;
        let copied = embedded_to_postgres(&from, dir.path(), &to, totp())
            .await
            .unwrap();
        let all = Copied {
            users: 1,
            totp: 1,
            passkeys: 1,
            recovery_codes: 2,
            links: 1,
            requests: 1,
        };
        assert_eq!(copied, all);

        let (was, is) = (from.accounts.user(ALICE).await, to.user(ALICE).await);
        assert_eq!(format!("{:?}", was.unwrap()), format!("{:?}", is.unwrap()));
        let seed = to.totp(ALICE).await.unwrap().unwrap();
        assert_eq!((&seed.seed[..], seed.last_used_step), (&[7; 20][..], 42));
        assert!(
            !to.advance_totp_step(ALICE, 42).await.unwrap(),
            "spent stays spent"
        );
        let passkeys = to.webauthn_credentials(ALICE).await.unwrap();
        assert_eq!(
            format!("{passkeys:?}"),
            format!(
                "{:?}",
                from.credentials.webauthn_credentials(ALICE).await.unwrap()
            )
        );
        assert!(!to.use_recovery_code(ALICE, "h1".into()).await.unwrap());
        assert!(to.use_recovery_code(ALICE, "h2".into()).await.unwrap());
        assert_eq!(
            to.links(None).await.unwrap(),
            from.relations.links(None).await.unwrap()
        );
        assert_eq!(to.request(request.id).await.unwrap(), Some(request));
        let embedded = DataDirKeys::new(dir.path().to_path_buf());
        let ((was, _), (is, created)) = (
            embedded.assertion_key().await.unwrap(),
            to.assertion_key().await.unwrap(),
        );
        assert_eq!(
            (was.kid(), false),
            (is.kid(), created),
            "upstreams keep their JWKS"
        );
        let token = embedded.admin_token().await.unwrap();
        assert_eq!(token.expose(), to.admin_token().await.unwrap().expose());

        let again = embedded_to_postgres(&from, dir.path(), &to, totp()).await;
        assert!(matches!(again, Err(MigrateError::NotEmpty)), "{again:?}");
    }
}
