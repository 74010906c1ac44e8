//! Sealing secrets at rest: XChaCha20-Poly1305 under a master key that is not in the store.
//!
//! **Threat.** A copy of the data directory (a backup, a stolen disk, a snapshot) must not yield
//! TOTP seeds or WebAuthn credentials, and someone who can write to the store must not be able to
//! move a sealed value to another account or another field and have it accepted.
//!
//! **Rule.** Every secret is sealed before it reaches the store. The associated data binds each
//! sealed value to its purpose, its owner and the value's own header, so a value copied to another
//! user, another credential or another field fails to open. The master keys live outside the
//! store, in a key file only the gateway's user may read (mode 0600, anything wider is refused) or
//! in the `WARDGATE_MASTER_KEY` environment variable. Keys are zeroized when dropped and never
//! printed: `Debug` shows the key id only.
//!
//! **Standard.** HIPAA 164.312(a)(2)(iv) (encryption and decryption of ePHI at rest); AEAD as in
//! NIST SP 800-38D's model, here XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha, RFC 8439), whose
//! 192-bit nonces may be drawn at random without a collision budget; OWASP ASVS 5 V11
//! (cryptography: approved AEAD, key ids for rotation) and V13 (secrets kept out of code and data).
//!
//! ```text
//!  sealed value
//!  +---------+-------------+---------------------+--------------------------------+
//!  | version | key id      | nonce               | ciphertext || Poly1305 tag    |
//!  | 1 byte  | 4 bytes, BE | 24 bytes, random    | len(plaintext) + 16 bytes      |
//!  +---------+-------------+---------------------+--------------------------------+
//!  associated data = "wardgate/" purpose 0x00 owner 0x00 version key-id
//! ```
//!
//! Key file and `WARDGATE_MASTER_KEY` share one syntax: entries `<id>:<64 hex digits>`, one per
//! line (or separated by `;` in the variable), `#` starts a comment. The **last** entry is the
//! current key, which seals; the others only open values sealed before a rotation.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use blake2::Blake2bMac;
use blake2::digest::Mac;
use blake2::digest::consts::U32;
use chacha20poly1305::aead::{Aead, AeadInOut, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// The environment variable that may hold the master keys instead of a key file.
pub const MASTER_KEY_ENV: &str = "WARDGATE_MASTER_KEY";

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// What a sealed value is for; part of its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    TotpSeed,
    WebAuthnCredential,
    Session,
    /// A ceremony's state while it waits in a store outside the process (Redis).
    Ceremony,
    /// A record of the audit trail (its own keyring, apart from the identity store's).
    AuditRecord,
    /// Key material every replica shares (PostgreSQL): owner is the key's name.
    SharedKey,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::TotpSeed => b"totp-seed",
            Self::WebAuthnCredential => b"webauthn-credential",
            Self::Session => b"session",
            Self::Ceremony => b"ceremony",
            Self::AuditRecord => b"audit-record",
            Self::SharedKey => b"shared-key",
        }
    }
}

/// A 256-bit master key and its id. Zeroized on drop; `Debug` shows the id only.
pub struct MasterKey {
    id: u32,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl MasterKey {
    pub fn new(id: u32, bytes: [u8; KEY_LEN]) -> Self {
        Self {
            id,
            bytes: Zeroizing::new(bytes),
        }
    }

    pub fn generate<R: CryptoRng + ?Sized>(id: u32, rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(bytes.as_mut());
        Self { id, bytes }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(*self.bytes))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "sealed with master key {0}, which the keyring does not hold (was it removed after a rotation?)"
    )]
    UnknownKey(u32),
    #[error("sealed value is malformed (too short or unknown version)")]
    Malformed,
    #[error("value too long to seal")]
    TooLong,
    #[error("sealed value does not authenticate: tampered, or moved to another owner or field")]
    Inauthentic,
}

/// Why master keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{0}: the master key file is missing; restore it, set {MASTER_KEY_ENV}, or for development set store.dev_generate_key"
    )]
    Missing(PathBuf),
    #[error(
        "{file}: the master key file has mode {mode:04o}; it must be readable by its owner only (chmod 600)"
    )]
    Permissions { file: PathBuf, mode: u32 },
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: entry {entry}: {message}")]
    Format {
        origin: String,
        entry: usize,
        message: String,
    },
}

/// The current master key (last) and older ones kept to open values sealed before a rotation.
pub struct Keyring {
    current: MasterKey,
    older: Vec<MasterKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .field("current", &self.current.id)
            .finish()
    }
}

/// Where the keyring came from; `Generated` deserves a loud warning from the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Environment,
    File(PathBuf),
    /// Development mode: the file was missing and a new key was written to it.
    Generated(PathBuf),
}

impl Keyring {
    /// A keyring whose current key is `current`; `older` keys only open.
    pub fn new(current: MasterKey, older: Vec<MasterKey>) -> Result<Self, KeyError> {
        let mut keys = older;
        keys.push(current);
        Self::from_ordered(keys, "keyring")
    }

    /// A keyring from keys in file order: the last one is current.
    fn from_ordered(mut keys: Vec<MasterKey>, origin: &str) -> Result<Self, KeyError> {
        for (index, key) in keys.iter().enumerate() {
            if keys[..index].iter().any(|k| k.id == key.id) {
                return Err(KeyError::Format {
                    origin: origin.to_owned(),
                    entry: index + 1,
                    message: format!("key id {} appears twice", key.id),
                });
            }
        }
        match keys.pop() {
            Some(current) => Ok(Self {
                current,
                older: keys,
            }),
            None => Err(KeyError::Format {
                origin: origin.to_owned(),
                entry: 0,
                message: "no key".into(),
            }),
        }
    }

    /// Every key in file order, the current one last.
    fn keys(&self) -> impl DoubleEndedIterator<Item = &MasterKey> {
        self.older.iter().chain(std::iter::once(&self.current))
    }

    /// Loads the keys: from `env_value` (the content of [`MASTER_KEY_ENV`], read by the caller)
    /// when it is set, else from `key_file`. A missing file is generated only when
    /// `dev_generate` allows it.
    pub fn load<R: CryptoRng + ?Sized>(
        key_file: &Path,
        env_value: Option<&str>,
        dev_generate: bool,
        rng: &mut R,
    ) -> Result<(Self, KeyOrigin), KeyError> {
        if let Some(text) = env_value {
            let keyring = Self::parse(text, MASTER_KEY_ENV)?;
            return Ok((keyring, KeyOrigin::Environment));
        }
        match Self::read_file(key_file) {
            Err(KeyError::Missing(_)) if dev_generate => {
                let keyring = Self {
                    current: MasterKey::generate(1, rng),
                    older: Vec::new(),
                };
                keyring.write_new_file(key_file)?;
                Ok((keyring, KeyOrigin::Generated(key_file.to_path_buf())))
            }
            Err(error) => Err(error),
            Ok(keyring) => Ok((keyring, KeyOrigin::File(key_file.to_path_buf()))),
        }
    }

    /// Reads a key file, refusing one that group or others may read or write.
    pub fn read_file(file: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            file: file.to_path_buf(),
            source,
        };
        let mut handle = match File::open(file) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing(file.to_path_buf()));
            }
            other => other.map_err(io)?,
        };
        // Checked on the opened handle, so the file read is the file checked.
        let mode = handle.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                file: file.to_path_buf(),
                mode,
            });
        }
        let mut text = Zeroizing::new(String::new());
        handle.read_to_string(&mut text).map_err(io)?;
        Self::parse(&text, &file.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        let entries = text
            .split(['\n', ';'])
            .map(|line| line.split('#').next().unwrap_or_default().trim())
            .filter(|line| !line.is_empty());
        for (index, entry) in entries.enumerate() {
            let error = |message: &str| KeyError::Format {
                origin: origin.to_owned(),
                entry: index + 1,
                message: message.to_owned(),
            };
            let (id, hex) = entry
                .split_once(':')
                .ok_or_else(|| error("expected `<id>:<64 hex digits>`"))?;
            let id: u32 = id
                .trim()
                .parse()
                .map_err(|_| error("the key id is not a number"))?;
            let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
            if !hex_decode(hex.trim(), bytes.as_mut()) {
                return Err(error("the key is not 64 hex digits (256 bits)"));
            }
            keys.push(MasterKey { id, bytes });
        }
        Self::from_ordered(keys, origin)
    }

    /// The key file text: one `<id>:<hex>` line per key, the current key last.
    fn file_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::from(
            "# Wardgate master keys: `<id>:<hex>`, the last line is the current key. Keep this file\n\
             # out of backups of the data directory, and readable by the gateway's user only.\n",
        ));
        for key in self.keys() {
            text.push_str(&format!("{}:", key.id));
            hex_encode_into(key.bytes.as_ref(), &mut text);
            text.push('\n');
        }
        text
    }

    /// Writes a new key file (mode 0600, never over an existing file); parents get mode 0700.
    pub(crate) fn write_new_file(&self, file: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            file: file.to_path_buf(),
            source,
        };
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mut handle = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .map_err(io)?;
        handle.write_all(self.file_text().as_bytes()).map_err(io)?;
        handle.sync_all().map_err(io)
    }

    /// Replaces `file` with this keyring, atomically: a new file beside it, then a rename.
    pub(crate) fn replace_file(&self, file: &Path) -> Result<(), KeyError> {
        let mut staged = file.as_os_str().to_owned();
        staged.push(".new");
        let staged = PathBuf::from(staged);
        self.write_new_file(&staged)?;
        std::fs::rename(&staged, file).map_err(|source| KeyError::Io {
            file: file.to_path_buf(),
            source,
        })?;
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| KeyError::Io {
                    file: dir.to_path_buf(),
                    source,
                })?;
        }
        Ok(())
    }

    /// This keyring with `key` as the new current key; the old keys stay for opening.
    pub fn with_current(self, key: MasterKey) -> Result<Self, KeyError> {
        let mut keys = self.older;
        keys.push(self.current);
        keys.push(key);
        Self::from_ordered(keys, "keyring")
    }

    pub fn current_id(&self) -> u32 {
        self.current.id
    }

    /// Every key id, in file order: the current one last.
    pub fn key_ids(&self) -> Vec<u32> {
        self.keys().map(|k| k.id).collect()
    }

    /// The id after the highest one held, for a new key.
    pub fn next_id(&self) -> u32 {
        self.keys()
            .map(|k| k.id)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
    }

    fn key(&self, id: u32) -> Option<&MasterKey> {
        self.keys().find(|k| k.id == id)
    }

    /// Seals `plaintext` for `purpose` and `owner` under the current key, with a fresh random
    /// nonce from the thread's CSPRNG (192 bits: random nonces never realistically collide).
    pub fn seal(
        &self,
        purpose: Purpose,
        owner: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let key = &self.current;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        sealed.push(VERSION);
        sealed.extend_from_slice(&key.id.to_be_bytes());
        sealed.extend_from_slice(&nonce);
        let aad = associated_data(purpose, owner, &sealed[..5]);
        // Encrypted where it lies: no second buffer.
        sealed.extend_from_slice(plaintext);
        let tag = key
            .cipher()
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                &aad,
                (&mut sealed[HEADER_LEN..]).into(),
            )
            .map_err(|_| SealError::TooLong)?;
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }

    /// Opens a value sealed for `purpose` and `owner` by any key of the ring.
    pub fn open(
        &self,
        purpose: Purpose,
        owner: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let key_id = sealed_key_id(sealed)?;
        let key = self.key(key_id).ok_or(SealError::UnknownKey(key_id))?;
        let nonce = XNonce::try_from(&sealed[5..HEADER_LEN]).map_err(|_| SealError::Malformed)?;
        let aad = associated_data(purpose, owner, &sealed[..5]);
        let payload = Payload {
            msg: &sealed[HEADER_LEN..],
            aad: &aad,
        };
        key.cipher()
            .decrypt(&nonce, payload)
            .map(Zeroizing::new)
            .map_err(|_| SealError::Inauthentic)
    }

    /// Opens with any key and seals again under the current one; `None` when it already is.
    pub fn reseal(
        &self,
        purpose: Purpose,
        owner: &[u8],
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, SealError> {
        if sealed_key_id(sealed)? == self.current_id() {
            return Ok(None);
        }
        let plaintext = self.open(purpose, owner, sealed)?;
        self.seal(purpose, owner, &plaintext).map(Some)
    }

    /// Keyed BLAKE2b-256 of a bearer token under the current key: what the store keeps instead
    /// of the token. A stolen store cannot be used to test guesses without the key.
    pub fn token_hash(&self, token: &[u8]) -> [u8; 32] {
        token_hash(&self.current, token)
    }

    /// The token's hash under every key, current first, to find tokens issued before a rotation.
    pub fn token_hashes(&self, token: &[u8]) -> Vec<[u8; 32]> {
        self.keys()
            .rev()
            .map(|key| token_hash(key, token))
            .collect()
    }
}

fn token_hash(key: &MasterKey, token: &[u8]) -> [u8; 32] {
    // BLAKE2b's key block is 64 bytes: the master key, zero-padded. The label separates this
    // use of the key from the AEAD's.
    let mut block = Zeroizing::new([0u8; 64]);
    block[..KEY_LEN].copy_from_slice(key.bytes.as_ref());
    let mut mac = <Blake2bMac<U32> as KeyInit>::new(&(*block).into());
    mac.update(b"wardgate/token-hash\0");
    mac.update(token);
    mac.finalize().into_bytes().into()
}

/// The key id of a sealed value, after checking its version and length.
pub fn sealed_key_id(sealed: &[u8]) -> Result<u32, SealError> {
    if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != VERSION {
        return Err(SealError::Malformed);
    }
    Ok(u32::from_be_bytes([
        sealed[1], sealed[2], sealed[3], sealed[4],
    ]))
}

fn associated_data(purpose: Purpose, owner: &[u8], header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(9 + 20 + owner.len() + 2 + header.len());
    aad.extend_from_slice(b"wardgate/");
    aad.extend_from_slice(purpose.label());
    aad.push(0);
    aad.extend_from_slice(owner);
    aad.push(0);
    aad.extend_from_slice(header);
    aad
}

pub(crate) fn hex_encode_into(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

/// Decodes exactly `out.len()` bytes of hex; false on any other length or a non-hex digit.
pub(crate) fn hex_decode(text: &str, out: &mut [u8]) -> bool {
    let digits = text.as_bytes();
    if digits.len() != out.len() * 2 {
        return false;
    }
    let value = |d: u8| char::from(d).to_digit(16);
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        match (value(pair[0]), value(pair[1])) {
            (Some(high), Some(low)) => *byte = (high * 16 + low) as u8,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(id: u32, byte: u8) -> Keyring {
        Keyring::new(MasterKey::new(id, [byte; KEY_LEN]), Vec::new()).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn sealed_values_open_only_for_their_purpose_and_owner() {
        let keyring = ring(7, 1);
        let sealed = keyring.seal(Purpose::TotpSeed, b"alice", b"seed").unwrap();
        assert_eq!(sealed_key_id(&sealed), Ok(7));
        assert_eq!(sealed.len(), HEADER_LEN + 4 + TAG_LEN);
        let opened = keyring.open(Purpose::TotpSeed, b"alice", &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"seed");
        assert_eq!(
            keyring.open(Purpose::TotpSeed, b"bob", &sealed),
            Err(SealError::Inauthentic)
        );
        assert_eq!(
            keyring.open(Purpose::WebAuthnCredential, b"alice", &sealed),
            Err(SealError::Inauthentic)
        );
        // An empty secret is a header and a tag, and opens.
        let empty = keyring.seal(Purpose::TotpSeed, b"alice", b"").unwrap();
        assert_eq!(empty.len(), HEADER_LEN + TAG_LEN);
        let opened = keyring.open(Purpose::TotpSeed, b"alice", &empty).unwrap();
        assert!(opened.is_empty());
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let keyring = ring(7, 1);
        let sealed = keyring.seal(Purpose::TotpSeed, b"alice", b"seed").unwrap();
        for index in 5..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 1;
            assert_eq!(
                keyring.open(Purpose::TotpSeed, b"alice", &tampered),
                Err(SealError::Inauthentic),
                "byte {index}"
            );
        }
        assert_eq!(
            keyring.open(Purpose::TotpSeed, b"alice", &sealed[..20]),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn an_unknown_key_id_is_named() {
        let sealed = ring(7, 1)
            .seal(Purpose::TotpSeed, b"alice", b"seed")
            .unwrap();
        let error = ring(8, 1)
            .open(Purpose::TotpSeed, b"alice", &sealed)
            .unwrap_err();
        assert_eq!(error, SealError::UnknownKey(7));
        assert!(error.to_string().contains("master key 7"), "{error}");
    }

    #[test]
    fn debug_prints_key_ids_only() {
        let key = MasterKey::new(3, [0xAB; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "MasterKey { id: 3, .. }");
        let keyring = Keyring::new(key, vec![MasterKey::new(2, [0xCD; KEY_LEN])]).unwrap();
        let debug = format!("{keyring:?}");
        assert!(!debug.contains("ab") && !debug.contains("171"), "{debug}");
        assert_eq!(debug, "Keyring { key_ids: [2, 3], current: 3 }");
    }

    #[test]
    fn dev_mode_generates_a_private_key_file_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data/master.key");
        let (keyring, origin) = Keyring::load(&file, None, true, &mut rand::rng()).unwrap();
        assert_eq!(origin, KeyOrigin::Generated(file.clone()));
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        let sealed = keyring.seal(Purpose::TotpSeed, b"a", b"s").unwrap();
        let (again, origin) = Keyring::load(&file, None, true, &mut rand::rng()).unwrap();
        assert_eq!(origin, KeyOrigin::File(file));
        assert_eq!(
            again
                .open(Purpose::TotpSeed, b"a", &sealed)
                .unwrap()
                .as_slice(),
            b"s"
        );
    }

    #[test]
    fn a_missing_key_file_stops_the_start_outside_dev_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.key");
        let error = Keyring::load(&file, None, false, &mut rand::rng()).unwrap_err();
        assert!(matches!(error, KeyError::Missing(_)));
        assert!(
            error.to_string().contains(&file.display().to_string()),
            "{error}"
        );
        assert!(!file.exists());
    }

    #[test]
    fn a_key_file_that_cannot_be_opened_is_not_reported_missing() {
        // The path runs through a regular file: the open fails (not a directory), and dev mode
        // must not take that for a missing file to generate.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data"), b"").unwrap();
        let file = dir.path().join("data/master.key");
        let error = Keyring::load(&file, None, true, &mut rand::rng()).unwrap_err();
        assert!(
            matches!(&error, KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotADirectory),
            "{error}"
        );
    }

    #[test]
    fn a_bad_key_entry_is_named_by_its_number() {
        let hex = "ab".repeat(32);
        let text = format!("1:{hex}\n2:{hex}\n1:{hex}\n");
        let Err(error) = Keyring::parse(&text, "master.key") else {
            panic!("a key id given twice was accepted");
        };
        assert_eq!(
            error.to_string(),
            "master.key: entry 3: key id 1 appears twice"
        );
        // Entries are counted without comments and blank lines, from 1.
        let text = format!("# keys\n\n1:{hex}\n2:{}\n", "ab".repeat(31));
        let Err(error) = Keyring::parse(&text, "master.key") else {
            panic!("a short key was accepted");
        };
        assert_eq!(
            error.to_string(),
            "master.key: entry 2: the key is not 64 hex digits (256 bits)"
        );
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.key");
        ring(1, 9).write_new_file(&file).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Keyring::load(&file, None, true, &mut rand::rng()).unwrap_err();
        assert!(
            error.to_string().contains("mode 0644") && error.to_string().contains("chmod 600"),
            "{error}"
        );
    }

    #[test]
    fn the_environment_variable_holds_keys_in_the_file_syntax() {
        let hex_a = "11".repeat(32);
        let hex_b = "22".repeat(32);
        let value = format!("1:{hex_a}; 2:{hex_b}");
        let missing = Path::new("/nonexistent/master.key");
        let (keyring, origin) =
            Keyring::load(missing, Some(&value), false, &mut rand::rng()).unwrap();
        assert_eq!(origin, KeyOrigin::Environment);
        assert_eq!(keyring.key_ids(), vec![1, 2]);
        assert_eq!(keyring.current_id(), 2);
        let older = ring(1, 0x11).seal(Purpose::TotpSeed, b"a", b"s").unwrap();
        assert!(keyring.open(Purpose::TotpSeed, b"a", &older).is_ok());

        let bad_values = [
            String::new(),
            "1:abc".into(),
            format!("x:{hex_a}"),
            format!("1:{hex_a};1:{hex_b}"),
        ];
        for bad in &bad_values {
            let error = Keyring::load(missing, Some(bad), false, &mut rand::rng()).unwrap_err();
            assert!(
                error.to_string().starts_with(MASTER_KEY_ENV),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn rotation_keeps_older_keys_for_opening_and_seals_with_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.key");
        ring(1, 1).write_new_file(&file).unwrap();
        let old = Keyring::read_file(&file).unwrap();
        let sealed = old.seal(Purpose::TotpSeed, b"a", b"s").unwrap();
        let rotated = old.with_current(MasterKey::new(2, [2; KEY_LEN])).unwrap();
        rotated.replace_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        let reread = Keyring::read_file(&file).unwrap();
        assert_eq!(reread.key_ids(), vec![1, 2]);
        let resealed = reread
            .reseal(Purpose::TotpSeed, b"a", &sealed)
            .unwrap()
            .unwrap();
        assert_eq!(sealed_key_id(&resealed), Ok(2));
        assert_eq!(reread.reseal(Purpose::TotpSeed, b"a", &resealed), Ok(None));
        assert_ne!(ring(1, 1).token_hash(b"t"), ring(2, 2).token_hash(b"t"));
        assert_eq!(reread.token_hashes(b"t")[1], ring(1, 1).token_hash(b"t"));
    }
}
