//! Accounts and their secrets: users, password hashes, TOTP seeds, WebAuthn credentials,
//! recovery codes and enrollment tokens.
//!
//! **Threat.** The identity store is what an attacker wants after the patient data: a copy of it
//! must not let anyone log in, and nobody who can write to it may graft one user's second factor
//! onto another account. **Rule.** Secrets are sealed ([`seal`]) under a master key kept outside
//! the store before they are written; bearer tokens and recovery codes are kept only as hashes;
//! single-use things are spent atomically; time is always a parameter. **Standard.** HIPAA
//! 164.312(a)(2)(iv) (encryption at rest), 164.312(d) (person authentication); NIST SP 800-38D
//! AEAD model with XChaCha20-Poly1305; NIST SP 800-63B; OWASP ASVS 5 V6, V11, V13.
//!
//! ```text
//!   store layer (async traits)     EmbeddedStore (sync)               storage
//!   plaintext seed, blob  ──────►  seal with Keyring.current  ──────► identity.redb
//!                         ◄──────  open with any ring key     ◄────── (sealed values,
//!   token                 ──────►  keyed BLAKE2b hash         ──────►  hashes, metadata)
//!
//!   sealed value: [ version 1B | key id 4B | nonce 24B | ciphertext + tag 16B ]
//! ```
//!
//! Key rotation ([`rotate_master_key`], `wardgate keys rotate`): a new key is appended to the
//! key file as the current key, then every sealed value is re-sealed under it in one write
//! transaction. Older keys stay in the file to open older backups; delete their lines once no
//! backup needs them.

pub mod embedded;
pub mod seal;
pub mod store;
mod totp_params;

use std::path::Path;
use std::sync::Arc;

use rand::CryptoRng;

pub use embedded::EmbeddedStore;
pub use seal::{KeyError, KeyOrigin, Keyring, MASTER_KEY_ENV, MasterKey, Purpose, SealError};
pub use store::{
    RecoveryCode, SessionKey, SessionRecord, StoreError, Totp, User, UserId, WebAuthnCredential,
    WebAuthnUse,
};
pub use totp_params::{Digits, TotpAlgorithm, TotpParams};

/// The outcome of a key rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub new_key_id: u32,
    /// Sealed values re-sealed under the new key.
    pub resealed: usize,
    /// The keys that were in the file before; they are still there.
    pub older_key_ids: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds a new current key to `key_file` and re-seals the embedded store in `store_dir` under it.
///
/// Order matters: the store is opened first (a running gateway holds its lock, and then nothing
/// is changed), the key file is replaced next (so no value is ever sealed under a key that is not
/// on disk), and the re-seal is one transaction (a crash leaves the old values, still readable
/// with the old keys that the file keeps).
pub fn rotate_master_key<R: CryptoRng + ?Sized>(
    store_dir: &Path,
    key_file: &Path,
    rng: &mut R,
) -> Result<Rotation, RotateError> {
    let (keyring, new_key_id, older_key_ids) = with_new_key(key_file, rng)?;
    let keyring = Arc::new(keyring);
    let store = EmbeddedStore::open(store_dir, Arc::clone(&keyring))?;
    keyring.replace_file(key_file)?;
    let resealed = store.reseal_all()?;
    Ok(Rotation {
        new_key_id,
        resealed,
        older_key_ids,
    })
}

/// The keys of `key_file` with a new current one generated from `rng`, not written yet: the
/// keyring, the new key's id and the ids of the keys before it (which stay, to open what they
/// sealed).
pub fn with_new_key<R: CryptoRng + ?Sized>(
    key_file: &Path,
    rng: &mut R,
) -> Result<(Keyring, u32, Vec<u32>), KeyError> {
    let keyring = Keyring::read_file(key_file)?;
    let older = keyring.key_ids();
    let key = MasterKey::generate(keyring.next_id(), rng);
    let id = key.id();
    Ok((keyring.with_current(key)?, id, older))
}

/// Adds a new current key to `key_file` and re-seals nothing: for a store that several
/// replicas share (PostgreSQL), whose values are re-sealed (`wardgate keys reseal`) only once
/// every replica holds the new file.
pub fn add_master_key<R: CryptoRng + ?Sized>(
    key_file: &Path,
    rng: &mut R,
) -> Result<Rotation, RotateError> {
    let (keyring, new_key_id, older_key_ids) = with_new_key(key_file, rng)?;
    keyring.replace_file(key_file)?;
    Ok(Rotation {
        new_key_id,
        resealed: 0,
        older_key_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_rotation_only_the_new_key_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let (data, key_file) = (dir.path().join("data"), dir.path().join("data/master.key"));
        let key_a = || MasterKey::new(1, [0xA; 32]);
        let ring_a = Keyring::new(key_a(), Vec::new()).unwrap();
        ring_a.write_new_file(&key_file).unwrap();
        let alice = User::new(UserId::random(&mut rand::rng()), "alice", 0);
        {
            let store = EmbeddedStore::open(&data, Arc::new(ring_a)).unwrap();
            store.create_user(&alice).unwrap();
            let params = crate::auth::totp::TotpConfig::default().params().unwrap();
            store.set_totp(alice.id, b"seed", params, 3).unwrap();
            let credential = WebAuthnCredential {
                credential_id: b"cred".to_vec(),
                credential: b"blob".to_vec().into(),
                created: 0,
                last_used: None,
                sign_count: 0,
                backup_eligible: false,
                backup_state: false,
            };
            store.add_webauthn(alice.id, &credential).unwrap();
        }

        let rotation = rotate_master_key(&data, &key_file, &mut rand::rng()).unwrap();
        assert_eq!(
            rotation,
            Rotation {
                new_key_id: 2,
                resealed: 2,
                older_key_ids: vec![1],
            }
        );

        let file_ring = Keyring::read_file(&key_file).unwrap();
        assert_eq!(file_ring.key_ids(), vec![1, 2]);
        let text = std::fs::read_to_string(&key_file).unwrap();
        let key_b = text.lines().last().unwrap();
        assert!(key_b.starts_with("2:"));
        let (only_b, _) = Keyring::load(&key_file, Some(key_b), false, &mut rand::rng()).unwrap();
        let store = EmbeddedStore::open(&data, Arc::new(only_b)).unwrap();
        assert_eq!(
            store.totp(alice.id).unwrap().unwrap().seed.as_slice(),
            b"seed"
        );
        assert_eq!(
            store.webauthn_credentials(alice.id).unwrap()[0]
                .credential
                .as_slice(),
            b"blob"
        );
        assert_eq!(store.reseal_all().unwrap(), 0);
        drop(store);

        let store =
            EmbeddedStore::open(&data, Arc::new(Keyring::new(key_a(), Vec::new()).unwrap()))
                .unwrap();
        assert!(matches!(
            store.totp(alice.id),
            Err(StoreError::Seal(SealError::UnknownKey(2)))
        ));
        assert!(matches!(
            store.webauthn_credentials(alice.id),
            Err(StoreError::Seal(SealError::UnknownKey(2)))
        ));
    }
}
