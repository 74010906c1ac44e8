//! The embedded audit trail: append-only segment files of sealed, hash-chained records under a
//! Merkle tree with signed checkpoints.
//!
//! ```text
//!  <dir>/seg-<first seq, 20 digits>.wga   frames, appended; a new segment past `segment_bytes`
//!  frame  = "WGA1" | body length u32 BE | body
//!  body   = seq u64 BE | time u64 BE | prev (32) | sealed record
//!  leaf   = SHA-256(0x00 || body)            (RFC 6962 leaf hash; `prev` of the next record)
//!  sealed = XChaCha20-Poly1305 under the audit keyring, associated data bound to `seq`
//!
//!  <dir>/checkpoints.jsonl, and every `checkpoint_copies` file (another volume):
//!  {"size":n,"root":hex,"time":t,"key":kid,"signature":base64} one per line
//!  signed = "wardgate-audit-checkpoint\n" | size u64 BE | root (32) | time u64 BE
//! ```
//!
//! The chain and the tree cover the sealed bytes, so [`verify`] needs no key to check them, only
//! the checkpoints' public key; with the audit keyring it also opens every record. It names the
//! first broken record: a changed body breaks the next record's `prev` (and the record's seal,
//! and the root of every checkpoint after it); a removed, added or moved record breaks the
//! sequence; a trail cut short has fewer records than a checkpoint covers (the copy on another
//! volume says so even when the local checkpoints were cut too). A record changed after the last
//! checkpoint, when it is the last record, is caught only by its seal: checkpoints come often.
//!
//! A crash can leave a frame half-written at the end of the last segment: it was never
//! acknowledged, so no request waited on it; [`Trail::open`] cuts it off and says so.
//!
//! **Retention** ([`Trail::retain`]) removes whole segments whose records are all older than
//! the retention, oldest first, never the segment being written and never a record no
//! checkpoint covers yet. It first writes `<dir>/cut.json`: how many records are gone, the last
//! one's leaf hash (the next record's `prev`) and the tree's subtrees over them (the frontier at
//! the cut), and only then deletes the files. Readers start from the cut: the chain goes on
//! from its `prev`, and the roots of later checkpoints are computed from its subtrees and the
//! records kept ([`merkle::Tree`]), so those checkpoints still verify and later records can
//! still be proven; a cut that lies about what it removed breaks the next record's chain or the
//! next checkpoint's root. Checkpoints older than the cut keep their signatures, which are
//! checked, but their roots can no longer be recomputed. The writer records every removal in
//! the trail itself.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::merkle::{self, Frontier, Hash, Tree, leaf_hash};
use crate::assertion::AssertionKey;
use crate::identity::seal::{Keyring, Purpose};

const MAGIC: &[u8; 4] = b"WGA1";
const HEAD: usize = 8;
const BODY_FIXED: usize = 8 + 8 + 32;
/// A record is a few hundred bytes; anything near this is not one.
const MAX_BODY: usize = 1 << 20;
const CHECKPOINTS: &str = "checkpoints.jsonl";
const CUT: &str = "cut.json";
const SIGNED_PREFIX: &[u8] = b"wardgate-audit-checkpoint\n";

#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit record {seq}: {message}")]
    Broken { seq: u64, message: String },
    #[error("an audit record could not be sealed")]
    Seal,
    #[error("a checkpoint could not be encoded")]
    Encode,
    #[error("the audit trail's reader stopped")]
    Reader,
    #[error("the audit database: {0}")]
    Database(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrailError + '_ {
    move |source| TrailError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A signed tree head: the first `size` records have this `root`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub size: u64,
    pub root: String,
    pub time: u64,
    pub key: String,
    pub signature: String,
}

fn signed_bytes(size: u64, root: &Hash, time: u64) -> Vec<u8> {
    let mut signed = SIGNED_PREFIX.to_vec();
    signed.extend_from_slice(&size.to_be_bytes());
    signed.extend_from_slice(root);
    signed.extend_from_slice(&time.to_be_bytes());
    signed
}

/// One frame read back.
pub(super) struct Frame {
    pub(super) seq: u64,
    pub(super) time: u64,
    pub(super) prev: Hash,
    sealed: Vec<u8>,
    pub(super) leaf: Hash,
}

/// Why the bytes at `offset` are not a whole frame.
enum Unreadable {
    /// The file ends inside the frame: a torn write, or a cut.
    Torn,
    /// Not a frame at all.
    Garbled,
}

/// Reads the frames of one segment's bytes, up to the first that is not whole.
fn frames(bytes: &[u8]) -> (Vec<Frame>, Option<(usize, Unreadable)>) {
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + HEAD) else {
            return (found, Some((at, Unreadable::Torn)));
        };
        if &head[..4] != MAGIC {
            return (found, Some((at, Unreadable::Garbled)));
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if !(BODY_FIXED..=MAX_BODY).contains(&len) {
            return (found, Some((at, Unreadable::Garbled)));
        }
        let Some(body) = bytes.get(at + HEAD..at + HEAD + len) else {
            return (found, Some((at, Unreadable::Torn)));
        };
        let number = |range: std::ops::Range<usize>| {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(&body[range]);
            u64::from_be_bytes(buf)
        };
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&body[16..48]);
        found.push(Frame {
            seq: number(0..8),
            time: number(8..16),
            prev,
            sealed: body[BODY_FIXED..].to_vec(),
            leaf: leaf_hash(body),
        });
        at += HEAD + len;
    }
    (found, None)
}

/// The segment files of `dir`, in order.
fn segments(dir: &Path) -> Result<Vec<PathBuf>, TrailError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("seg-") && name.ends_with(".wga") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

fn read(path: &Path) -> Result<Vec<u8>, TrailError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io(path))?;
    Ok(bytes)
}

/// What retention removed: the first `size` records, and what the records after them need
/// of those (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cut {
    pub size: u64,
    /// The last removed record's leaf hash (hex).
    pub prev: String,
    /// `(height, root hex)`, largest first.
    pub subtrees: Vec<(u32, String)>,
    /// When the records were removed, and the newest one's time (unix seconds).
    pub time: u64,
    pub newest: u64,
}

impl Cut {
    /// The cut after the records `frontier` covers, the last of them `prev`, made at `now`.
    pub(super) fn at(frontier: &Frontier, prev: &Hash, now: u64, newest: u64) -> Self {
        Self {
            size: frontier.size(),
            prev: hex::encode(prev),
            subtrees: frontier
                .subtrees()
                .iter()
                .map(|(height, root)| (*height, hex::encode(root)))
                .collect(),
            time: now,
            newest,
        }
    }
}

/// Where the records kept start: the tree and chain of what retention removed.
pub(super) struct Start {
    pub(super) frontier: Frontier,
    pub(super) prev: Hash,
    pub(super) cut: Option<Cut>,
}

fn read_cut(dir: &Path) -> Result<Start, TrailError> {
    let path = dir.join(CUT);
    let cut = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Cut>(&bytes).map_err(|_| TrailError::Broken {
            seq: 0,
            message: format!("{} is not a retention cut", path.display()),
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Start::of(None),
        Err(error) => return Err(io(&path)(error)),
    };
    Start::of(Some(cut)).map_err(|_| TrailError::Broken {
        seq: 0,
        message: format!("{} is not a retention cut", path.display()),
    })
}

impl Start {
    /// Where the records after `cut` start (at the first record without one).
    pub(super) fn of(cut: Option<Cut>) -> Result<Self, TrailError> {
        let Some(cut) = cut else {
            return Ok(Start {
                frontier: Frontier::default(),
                prev: [0; 32],
                cut: None,
            });
        };
        let hash = |text: &str| hex::decode(text).ok().and_then(|h| Hash::try_from(h).ok());
        let subtrees = cut
            .subtrees
            .iter()
            .map(|(height, root)| Some((*height, hash(root)?)))
            .collect::<Option<Vec<_>>>();
        let start = subtrees.and_then(|subtrees| {
            Some(Start {
                frontier: Frontier::resume(cut.size, subtrees)?,
                prev: hash(&cut.prev)?,
                cut: Some(cut.clone()),
            })
        });
        start.ok_or_else(|| TrailError::Broken {
            seq: 0,
            message: "the retention cut is not one".into(),
        })
    }
}

/// Writes `cut` in place of the last one: a new file, synced, renamed over it.
fn write_cut(dir: &Path, cut: &Cut) -> Result<(), TrailError> {
    let (path, new) = (dir.join(CUT), dir.join("cut.json.new"));
    let json = serde_json::to_vec(cut).map_err(|_| TrailError::Encode)?;
    let mut file = File::create(&new).map_err(io(&new))?;
    file.write_all(&json).map_err(io(&new))?;
    file.sync_all().map_err(io(&new))?;
    fs::rename(&new, &path).map_err(io(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), TrailError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// How often checkpoints are signed, and where segments end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrailRules {
    /// A checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or this many seconds after the last one, when records came since.
    pub checkpoint_interval: u64,
    pub segment_bytes: u64,
    /// Records older than this many seconds are removed ([`Trail::retain`]); `None` keeps all.
    pub retention: Option<u64>,
}

impl TrailRules {
    /// Whether a checkpoint is due at `now`, `unsigned` records after the last one, signed at
    /// `signed_at`.
    pub fn checkpoint_due(&self, unsigned: u64, signed_at: u64, now: u64) -> bool {
        unsigned >= self.checkpoint_every
            || (unsigned > 0 && now.saturating_sub(signed_at) >= self.checkpoint_interval)
    }
}

/// The trail, open for appending. One writer: the audit task owns it.
pub struct Trail {
    dir: PathBuf,
    keyring: std::sync::Arc<Keyring>,
    signer: AssertionKey,
    rules: TrailRules,
    copies: Vec<PathBuf>,
    segment: File,
    segment_path: PathBuf,
    segment_len: u64,
    prev: Hash,
    frontier: Frontier,
    /// Size and time of the last checkpoint.
    checkpointed: (u64, u64),
}

/// What [`Trail::open`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    pub records: u64,
    /// Bytes of a half-written last frame that were cut off.
    pub torn_bytes: u64,
}

impl Trail {
    /// Opens (or creates, mode 0700) the trail in `dir`: reads every segment back to rebuild
    /// the chain and the tree, refuses a trail whose chain is broken, and cuts a torn tail.
    pub fn open(
        dir: &Path,
        keyring: std::sync::Arc<Keyring>,
        signer: AssertionKey,
        rules: TrailRules,
        copies: Vec<PathBuf>,
        now: u64,
    ) -> Result<(Self, Opened), TrailError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        make_copy_dirs(&copies)?;
        let Start {
            mut frontier,
            mut prev,
            ..
        } = read_cut(dir)?;
        let removed = frontier.size();
        let mut opened = Opened::default();
        let paths = segments(dir)?;
        for (index, path) in paths.iter().enumerate() {
            let bytes = read(path)?;
            let (found, stopped) = frames(&bytes);
            // Records of a cut whose files are not deleted yet are skipped.
            for frame in found.iter().filter(|frame| frame.seq >= removed) {
                if frame.seq != frontier.size() || frame.prev != prev {
                    return Err(TrailError::Broken {
                        seq: frontier.size(),
                        message: "the chain is broken: run `wardgate audit verify`".into(),
                    });
                }
                prev = frame.leaf;
                frontier.push(frame.leaf);
            }
            match stopped {
                None => {}
                Some((at, Unreadable::Torn)) if index + 1 == paths.len() => {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io(path))?;
                    file.set_len(at as u64).map_err(io(path))?;
                    file.sync_all().map_err(io(path))?;
                    opened.torn_bytes = (bytes.len() - at) as u64;
                }
                Some(_) => {
                    return Err(TrailError::Broken {
                        seq: frontier.size(),
                        message:
                            "a segment holds bytes that are no record: run `wardgate audit verify`"
                                .into(),
                    });
                }
            }
        }
        opened.records = frontier.size();
        let checkpointed = read_checkpoints(&dir.join(CHECKPOINTS))?
            .last()
            .map_or((0, now), |c| (c.size, c.time));
        let segment_path = match paths.last() {
            Some(last) => last.clone(),
            None => dir.join(segment_name(0)),
        };
        let segment = open_append(&segment_path)?;
        let segment_len = segment.metadata().map_err(io(&segment_path))?.len();
        let trail = Self {
            dir: dir.to_owned(),
            keyring,
            signer,
            rules,
            copies,
            segment,
            segment_path,
            segment_len,
            prev,
            frontier,
            checkpointed,
        };
        Ok((trail, opened))
    }

    /// The trail's directory and the keys that open its records, for readers beside the writer.
    pub fn reader(&self) -> (PathBuf, std::sync::Arc<Keyring>) {
        (self.dir.clone(), self.keyring.clone())
    }

    /// Records in the trail.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Seals and appends `record` (JSON) written at `time`; durable only after [`Trail::sync`].
    /// Returns its sequence number.
    pub fn append(&mut self, time: u64, record: &[u8]) -> Result<u64, TrailError> {
        self.append_all([(time, record)])
    }

    /// Seals and appends `records` (each written at its time, JSON) with one write: all of them
    /// or, when sealing or the write fails, none (the chain and the tree stay as they were, and
    /// [`Trail::recover`] cuts what a failed write left). Durable only after [`Trail::sync`].
    /// Returns the first one's sequence number. A segment ends at the first group that takes it
    /// past `segment_bytes`.
    pub fn append_all<'r>(
        &mut self,
        records: impl IntoIterator<Item = (u64, &'r [u8])>,
    ) -> Result<u64, TrailError> {
        let first = self.frontier.size();
        if self.segment_len >= self.rules.segment_bytes {
            self.sync()?;
            self.segment_path = self.dir.join(segment_name(first));
            self.segment = open_append(&self.segment_path)?;
            self.segment_len = 0;
        }
        let (mut frontier, mut prev) = (self.frontier.clone(), self.prev);
        let mut frames = Vec::with_capacity(4096);
        for (time, record) in records {
            let seq = frontier.size();
            let sealed = self
                .keyring
                .seal(Purpose::AuditRecord, &seq.to_be_bytes(), record)
                .map_err(|_| TrailError::Seal)?;
            frames.extend_from_slice(MAGIC);
            frames.extend_from_slice(&((BODY_FIXED + sealed.len()) as u32).to_be_bytes());
            let body = frames.len();
            frames.extend_from_slice(&seq.to_be_bytes());
            frames.extend_from_slice(&time.to_be_bytes());
            frames.extend_from_slice(&prev);
            frames.extend_from_slice(&sealed);
            prev = leaf_hash(&frames[body..]);
            frontier.push(prev);
        }
        self.segment
            .write_all(&frames)
            .map_err(io(&self.segment_path))?;
        self.segment_len += frames.len() as u64;
        (self.frontier, self.prev) = (frontier, prev);
        Ok(first)
    }

    /// After a failed write: opens the segment again and cuts whatever part of a frame the
    /// failure left after the last whole one, so that the next append continues the chain.
    pub fn recover(&mut self) -> Result<(), TrailError> {
        self.segment = open_append(&self.segment_path)?;
        let len = self
            .segment
            .metadata()
            .map_err(io(&self.segment_path))?
            .len();
        if len > self.segment_len {
            self.segment
                .set_len(self.segment_len)
                .map_err(io(&self.segment_path))?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable (one `fdatasync` for a whole group).
    pub fn sync(&mut self) -> Result<(), TrailError> {
        self.segment.sync_data().map_err(io(&self.segment_path))
    }

    /// Records appended since the last checkpoint.
    pub fn unsigned(&self) -> u64 {
        self.frontier.size() - self.checkpointed.0
    }

    /// Whether a checkpoint is due at `now`.
    pub fn checkpoint_due(&self, now: u64) -> bool {
        self.rules
            .checkpoint_due(self.unsigned(), self.checkpointed.1, now)
    }

    /// Syncs, signs a checkpoint of the whole trail and appends it to the checkpoint file and
    /// every copy.
    pub fn checkpoint(&mut self, now: u64) -> Result<Checkpoint, TrailError> {
        self.sync()?;
        let checkpoint = sign(&self.signer, &self.frontier, now);
        let local = self.dir.join(CHECKPOINTS);
        for path in std::iter::once(&local).chain(&self.copies) {
            append_checkpoint(path, &checkpoint)?;
        }
        self.checkpointed = (checkpoint.size, now);
        Ok(checkpoint)
    }

    /// Appends a group (all or none: [`Trail::append_all`]), makes it durable when `durable`
    /// or a checkpoint is due, and then signs the checkpoint: whether the records were appended
    /// (when only the sync failed they were, and the next sync covers them), and the first
    /// one's sequence number with the checkpoint signed, if one was.
    pub fn append_group<'r>(
        &mut self,
        records: impl IntoIterator<Item = (u64, &'r [u8])>,
        durable: bool,
        now: u64,
    ) -> (bool, Result<(u64, Option<Checkpoint>), TrailError>) {
        let first = match self.append_all(records) {
            Ok(first) => first,
            Err(error) => return (false, Err(error)),
        };
        let synced = if self.checkpoint_due(now) {
            self.checkpoint(now).map(Some)
        } else if durable {
            self.sync().map(|()| None)
        } else {
            Ok(None)
        };
        (true, synced.map(|checkpoint| (first, checkpoint)))
    }

    /// Signs a last checkpoint when records came since the one before (the writer stops).
    pub fn finish(&mut self, now: u64) -> Result<Option<Checkpoint>, TrailError> {
        match self.unsigned() {
            0 => Ok(None),
            _ => self.checkpoint(now).map(Some),
        }
    }

    /// Removes what the configured retention no longer keeps at `now` ([`Trail::retain`]).
    pub fn expire(&mut self, now: u64) -> Result<Option<Cut>, TrailError> {
        match self.rules.retention {
            Some(retention) => self.retain(now.saturating_sub(retention), now),
            None => Ok(None),
        }
    }

    /// Removes the oldest segments whose records are all older than `before`, as long as a
    /// checkpoint covers them and they are not the segment being written: the cut, when any
    /// were removed (see the module doc).
    pub fn retain(&mut self, before: u64, now: u64) -> Result<Option<Cut>, TrailError> {
        let Start {
            mut frontier,
            mut prev,
            ..
        } = read_cut(&self.dir)?;
        let mut newest = 0;
        let mut removed = Vec::new();
        for path in segments(&self.dir)? {
            if path == self.segment_path {
                break;
            }
            let (found, _) = frames(&read(&path)?);
            let kept: Vec<&Frame> = found.iter().filter(|f| f.seq >= frontier.size()).collect();
            let covered = kept
                .last()
                .is_none_or(|last| last.seq < self.checkpointed.0);
            if !covered || kept.iter().any(|frame| frame.time >= before) {
                break;
            }
            for frame in kept {
                if frame.seq != frontier.size() || frame.prev != prev {
                    return Err(TrailError::Broken {
                        seq: frontier.size(),
                        message: "the chain is broken: run `wardgate audit verify`".into(),
                    });
                }
                (prev, newest) = (frame.leaf, frame.time.max(newest));
                frontier.push(frame.leaf);
            }
            removed.push(path);
        }
        if removed.is_empty() {
            return Ok(None);
        }
        let cut = Cut::at(&frontier, &prev, now, newest);
        write_cut(&self.dir, &cut)?;
        for path in &removed {
            fs::remove_file(path).map_err(io(path))?;
        }
        sync_dir(&self.dir)?;
        Ok(Some(cut))
    }

    /// The public key that verifies this trail's checkpoints.
    pub fn public_key(&self) -> Vec<u8> {
        self.signer.public_key()
    }
}

/// Creates (mode 0700) the directories of the checkpoint copies.
pub(super) fn make_copy_dirs(copies: &[PathBuf]) -> Result<(), TrailError> {
    use std::os::unix::fs::DirBuilderExt;
    for copy in copies {
        if let Some(parent) = copy.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io(parent))?;
        }
    }
    Ok(())
}

fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.wga")
}

fn open_append(path: &Path) -> Result<File, TrailError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

/// The signed tree head of `frontier` at `now`.
pub(super) fn sign(signer: &AssertionKey, frontier: &Frontier, now: u64) -> Checkpoint {
    let (size, root) = (frontier.size(), frontier.root());
    Checkpoint {
        size,
        root: hex::encode(root),
        time: now,
        key: signer.kid().to_owned(),
        signature: STANDARD.encode(signer.sign_bytes(&signed_bytes(size, &root, now))),
    }
}

/// Appends `checkpoint` to the checkpoint file at `path` (one JSON line), synced.
pub(super) fn append_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<(), TrailError> {
    let mut line = serde_json::to_string(checkpoint).map_err(|_| TrailError::Encode)?;
    line.push('\n');
    let mut file = open_append(path)?;
    file.write_all(line.as_bytes()).map_err(io(path))?;
    file.sync_data().map_err(io(path))
}

fn read_checkpoints(path: &Path) -> Result<Vec<Checkpoint>, TrailError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(path)(error)),
    };
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let checkpoint = serde_json::from_str(line).map_err(|_| TrailError::Broken {
            seq: 0,
            message: format!("{} line {}: not a checkpoint", path.display(), index + 1),
        })?;
        found.push(checkpoint);
    }
    Ok(found)
}

/// What [`verify`] checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub checkpoints: usize,
    /// Records opened with the keyring (0 without one).
    pub opened: u64,
    /// What retention removed, if anything: those records were not checked.
    pub cut: Option<Cut>,
}

/// A trail as read back, wherever it is kept (segment files here, rows in PostgreSQL:
/// `audit::postgres`): what retention removed, the records kept, in the order they were read,
/// and every checkpoint found. Nothing in it is trusted until [`Stored::verify`] checked it.
pub struct Stored {
    start: Start,
    frames: Vec<Frame>,
    /// Why the reading stopped after `frames`: bytes that are no record. A writer's frame being
    /// written reads so too; only [`Stored::verify`] calls it broken.
    stopped: Option<TrailError>,
    checkpoints: Vec<Checkpoint>,
}

#[cfg(feature = "postgres")]
impl Frame {
    /// A record read from columns: its leaf hash is that of the frame body it would be.
    pub(super) fn new(seq: u64, time: u64, prev: Hash, sealed: Vec<u8>) -> Self {
        let leaf = leaf_hash(&frame_body(seq, time, &prev, &sealed));
        Self {
            seq,
            time,
            prev,
            sealed,
            leaf,
        }
    }
}

/// `seq | time | prev | sealed`: what a leaf hash covers.
#[cfg(feature = "postgres")]
pub(super) fn frame_body(seq: u64, time: u64, prev: &Hash, sealed: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_FIXED + sealed.len());
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend_from_slice(&time.to_be_bytes());
    body.extend_from_slice(prev);
    body.extend_from_slice(sealed);
    body
}

impl Stored {
    /// The trail in `dir`, with the checkpoints of its own file and of `copies`.
    pub fn read(dir: &Path, copies: &[PathBuf]) -> Result<Self, TrailError> {
        let checkpoints = read_checkpoints(&dir.join(CHECKPOINTS))?;
        let start = read_cut(dir)?;
        let removed = start.frontier.size();
        let (mut frames, mut stopped) = (Vec::new(), None);
        for path in segments(dir)? {
            let (found, torn) = self::frames(&read(&path)?);
            // Records of a cut whose files are not deleted yet are skipped.
            frames.extend(found.into_iter().filter(|frame| frame.seq >= removed));
            if let Some((at, _)) = torn {
                stopped = Some(TrailError::Broken {
                    seq: frames.last().map_or(removed, |f| f.seq + 1),
                    message: format!("{} byte {at}: not a whole record", path.display()),
                });
                break;
            }
        }
        Self {
            start,
            frames,
            stopped,
            checkpoints,
        }
        .with_copies(copies)
    }

    /// With the checkpoints of `copies` too (files on another volume).
    pub fn with_copies(mut self, copies: &[PathBuf]) -> Result<Self, TrailError> {
        for copy in copies {
            self.checkpoints.extend(read_checkpoints(copy)?);
        }
        Ok(self)
    }

    /// A trail read from a database: `cut` as retention left it, `frames` in sequence order.
    #[cfg(feature = "postgres")]
    pub(super) fn assemble(
        cut: Option<Cut>,
        frames: Vec<Frame>,
        checkpoints: Vec<Checkpoint>,
    ) -> Result<Self, TrailError> {
        Ok(Self {
            start: Start::of(cut)?,
            frames,
            stopped: None,
            checkpoints,
        })
    }

    /// Checks the frames, the sequence and the chain, every checkpoint (signature under
    /// `public_key`, size, root), and, with `keyring`, every record's seal. The error names the
    /// first broken record.
    pub fn verify(
        mut self,
        public_key: &[u8],
        keyring: Option<&Keyring>,
    ) -> Result<Verified, TrailError> {
        let broken = |seq: u64, message: String| TrailError::Broken { seq, message };
        let key = UnparsedPublicKey::new(&ED25519, public_key);
        for checkpoint in &self.checkpoints {
            if !signed_by(&key, checkpoint) {
                return Err(broken(
                    checkpoint.size,
                    format!(
                        "the checkpoint of {} records at {} is not signed by this key",
                        checkpoint.size, checkpoint.time
                    ),
                ));
            }
        }
        self.checkpoints.sort_by_key(|c| c.size);
        let checkpoints = &self.checkpoints;
        let Start {
            mut frontier,
            mut prev,
            cut,
        } = self.start;
        let removed = frontier.size();
        if cut.is_some() && checkpoints.last().is_none_or(|c| c.size < removed) {
            return Err(broken(
                removed,
                "no checkpoint covers the records before the retention cut".into(),
            ));
        }
        // Checkpoints of records that retention removed: signed, but no longer recomputable.
        let first = checkpoints.partition_point(|c| c.size < removed);
        let mut pending = checkpoints[first..].iter().peekable();
        let mut opened = 0;
        let check_roots = |frontier: &Frontier,
                           pending: &mut std::iter::Peekable<std::slice::Iter<'_, Checkpoint>>|
         -> Result<(), TrailError> {
            while let Some(checkpoint) = pending.next_if(|c| c.size == frontier.size()) {
                if checkpoint.root != hex::encode(frontier.root()) {
                    return Err(broken(
                        frontier.size().saturating_sub(1),
                        format!(
                            "the first {} records are not those the checkpoint at {} signed: one was changed",
                            checkpoint.size, checkpoint.time
                        ),
                    ));
                }
            }
            Ok(())
        };
        check_roots(&frontier, &mut pending)?;
        for frame in self.frames {
            let expected = frontier.size();
            if frame.seq > expected {
                return Err(broken(
                    expected,
                    format!("missing: the next record is {}", frame.seq),
                ));
            }
            if frame.seq < expected {
                return Err(broken(
                    expected,
                    format!(
                        "out of place: record {} follows record {}",
                        frame.seq,
                        expected.saturating_sub(1)
                    ),
                ));
            }
            if frame.prev != prev {
                return Err(broken(
                    expected.saturating_sub(1),
                    format!("changed: record {expected} does not chain to it"),
                ));
            }
            if let Some(keyring) = keyring {
                keyring
                    .open(
                        Purpose::AuditRecord,
                        &frame.seq.to_be_bytes(),
                        &frame.sealed,
                    )
                    .map_err(|_| broken(frame.seq, "changed: its seal does not open".into()))?;
                opened += 1;
            }
            prev = frame.leaf;
            frontier.push(frame.leaf);
            check_roots(&frontier, &mut pending)?;
        }
        if let Some(stopped) = self.stopped {
            return Err(stopped);
        }
        if let Some(checkpoint) = pending.next() {
            return Err(broken(
                frontier.size(),
                format!(
                    "truncated: the trail has {} records, the checkpoint at {} covers {}",
                    frontier.size(),
                    checkpoint.time,
                    checkpoint.size
                ),
            ));
        }
        Ok(Verified {
            records: frontier.size(),
            checkpoints: checkpoints.len(),
            opened,
            cut,
        })
    }

    /// Proves record `seq` against the first checkpoint that covers it and verifies under
    /// `public_key`; the proof is checked before it is handed out.
    pub fn prove(mut self, seq: u64, public_key: &[u8]) -> Result<Proof, TrailError> {
        let broken = |message: String| TrailError::Broken { seq, message };
        let cut = self.start.frontier;
        if seq < cut.size() {
            return Err(broken("retention removed it".into()));
        }
        let leaves: Vec<Hash> = self.frames.iter().map(|f| f.leaf).collect();
        let tree = Tree::new(&cut, &leaves);
        let key = UnparsedPublicKey::new(&ED25519, public_key);
        self.checkpoints.sort_by_key(|c| c.size);
        let checkpoint = self
            .checkpoints
            .into_iter()
            .find(|c| c.size > seq && c.size <= tree.size())
            .ok_or_else(|| broken("no checkpoint covers it yet".into()))?;
        let unproven =
            || broken("the trail does not match its checkpoint: run `audit verify`".into());
        let root = tree.root(checkpoint.size).ok_or_else(unproven)?;
        if hex::encode(root) != checkpoint.root || !signed_by(&key, &checkpoint) {
            return Err(unproven());
        }
        let (leaf, path) = tree
            .leaf(seq)
            .zip(tree.inclusion(seq, checkpoint.size))
            .ok_or_else(unproven)?;
        if !merkle::verify_inclusion(seq, checkpoint.size, leaf, &path, &root) {
            return Err(broken("the proof does not verify".into()));
        }
        Ok(Proof {
            seq,
            leaf: hex::encode(leaf),
            path: path.iter().map(hex::encode).collect(),
            checkpoint,
        })
    }

    /// Every record kept, opened: `(seq, time, JSON)`.
    pub fn records(self, keyring: &Keyring) -> Result<Vec<(u64, u64, Vec<u8>)>, TrailError> {
        let mut all = Vec::with_capacity(self.frames.len());
        for frame in self.frames {
            let opened = keyring
                .open(
                    Purpose::AuditRecord,
                    &frame.seq.to_be_bytes(),
                    &frame.sealed,
                )
                .map_err(|_| TrailError::Broken {
                    seq: frame.seq,
                    message: "its seal does not open".into(),
                })?;
            all.push((frame.seq, frame.time, opened.to_vec()));
        }
        Ok(all)
    }
}

/// Whether `checkpoint` is a tree head signed under `key`.
fn signed_by(key: &UnparsedPublicKey<&[u8]>, checkpoint: &Checkpoint) -> bool {
    let root = hex::decode(&checkpoint.root)
        .ok()
        .and_then(|r| <Hash>::try_from(r).ok());
    let signature = STANDARD.decode(&checkpoint.signature).ok();
    match (root, signature) {
        (Some(root), Some(signature)) => key
            .verify(
                &signed_bytes(checkpoint.size, &root, checkpoint.time),
                &signature,
            )
            .is_ok(),
        _ => false,
    }
}

/// Checks the trail in `dir` with the checkpoints of `copies` ([`Stored::verify`]).
pub fn verify(
    dir: &Path,
    public_key: &[u8],
    keyring: Option<&Keyring>,
    copies: &[PathBuf],
) -> Result<Verified, TrailError> {
    Stored::read(dir, copies)?.verify(public_key, keyring)
}

/// The proof that record `seq` is in the tree a signed checkpoint covers (RFC 9162 2.1.3).
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Proof {
    pub seq: u64,
    /// The record's leaf hash (hex).
    pub leaf: String,
    /// The audit path, bottom up (hex).
    pub path: Vec<String>,
    pub checkpoint: Checkpoint,
}

/// Proves record `seq` of the trail in `dir` ([`Stored::prove`]).
pub fn prove(dir: &Path, seq: u64, public_key: &[u8]) -> Result<Proof, TrailError> {
    Stored::read(dir, &[])?.prove(seq, public_key)
}

/// Every record of the trail in `dir`, opened: `(seq, time, JSON)`.
pub fn records(dir: &Path, keyring: &Keyring) -> Result<Vec<(u64, u64, Vec<u8>)>, TrailError> {
    Stored::read(dir, &[])?.records(keyring)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::seal::MasterKey;
    use std::sync::Arc;

    const T0: u64 = 1_800_000_000;
    /// Small segments: ten records span several files.
    const RULES: TrailRules = TrailRules {
        checkpoint_every: 4,
        checkpoint_interval: 60,
        segment_bytes: 400,
        retention: None,
    };

    struct Written {
        dir: tempfile::TempDir,
        keyring: Arc<Keyring>,
        public: Vec<u8>,
        copy: PathBuf,
    }

    impl Written {
        fn trail(&self) -> PathBuf {
            self.dir.path().join("audit")
        }

        fn verify(&self) -> Result<Verified, TrailError> {
            verify(
                &self.trail(),
                &self.public,
                Some(&self.keyring),
                std::slice::from_ref(&self.copy),
            )
        }

        fn open(&self) -> Result<(Trail, Opened), TrailError> {
            let signer = AssertionKey::load_or_create(&self.dir.path().join("signing.key"))
                .unwrap()
                .0;
            let copies = vec![self.copy.clone()];
            Trail::open(
                &self.trail(),
                self.keyring.clone(),
                signer,
                RULES,
                copies,
                T0,
            )
        }

        /// Every segment file and its frames' byte ranges.
        fn spans(&self) -> Vec<(PathBuf, Vec<std::ops::Range<usize>>)> {
            let mut all = Vec::new();
            for path in segments(&self.trail()).unwrap() {
                let bytes = read(&path).unwrap();
                let mut at = 0;
                let mut spans = Vec::new();
                while at + HEAD <= bytes.len() {
                    let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap());
                    spans.push(at..at + HEAD + len as usize);
                    at += HEAD + len as usize;
                }
                all.push((path, spans));
            }
            all
        }

        /// The file and byte range of record `seq`.
        fn record(&self, seq: usize) -> (PathBuf, std::ops::Range<usize>) {
            let mut n = 0;
            for (path, spans) in self.spans() {
                for span in spans {
                    if n == seq {
                        return (path, span);
                    }
                    n += 1;
                }
            }
            panic!("no record {seq}")
        }
    }

    /// A trail of `n` records, checkpointed every 4 records, with a copy of the checkpoints.
    fn written(n: u64) -> Written {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [3; 32]), Vec::new()).unwrap());
        let signer = AssertionKey::load_or_create(&dir.path().join("signing.key"))
            .unwrap()
            .0;
        let public = signer.public_key();
        let copy = dir.path().join("elsewhere.jsonl");
        let written = Written {
            keyring,
            public,
            copy,
            dir,
        };
        let (mut trail, opened) = written.open().unwrap();
        assert_eq!(opened, Opened::default());
        for i in 0..n {
            let record = format!(r#"{{"patient":"p{i}","user":"dana"}}"#);
            assert_eq!(trail.append(T0 + i, record.as_bytes()).unwrap(), i);
            if trail.checkpoint_due(T0 + i) {
                trail.checkpoint(T0 + i).unwrap();
            }
        }
        trail.sync().unwrap();
        written
    }

    fn broken_at(result: Result<Verified, TrailError>) -> (u64, String) {
        match result {
            Err(TrailError::Broken { seq, message }) => (seq, message),
            other => panic!("not broken: {other:?}"),
        }
    }

    #[test]
    fn an_untouched_trail_verifies_with_and_without_the_key_and_reopens() {
        let written = written(10);
        assert!(
            segments(&written.trail()).unwrap().len() > 2,
            "several segments"
        );
        assert_eq!(
            written.verify().unwrap(),
            Verified {
                records: 10,
                checkpoints: 4,
                opened: 10,
                cut: None,
            }
        );
        let keyless = verify(&written.trail(), &written.public, None, &[]).unwrap();
        assert_eq!((keyless.records, keyless.opened), (10, 0));
        let all = records(&written.trail(), &written.keyring).unwrap();
        assert_eq!(all[7].0, 7);
        assert_eq!(all[7].2, br#"{"patient":"p7","user":"dana"}"#);
        let (mut trail, opened) = written.open().unwrap();
        assert_eq!(opened.records, 10);
        assert_eq!(trail.append(T0 + 10, b"{}").unwrap(), 10);
        trail.sync().unwrap();
        assert_eq!(written.verify().unwrap().records, 11);
        // A copy of the directory reveals no patient.
        for (path, _) in written.spans() {
            let bytes = read(&path).unwrap();
            assert!(!bytes.windows(2).any(|w| w == b"p7"), "{}", path.display());
        }
    }

    #[test]
    fn retention_removes_old_segments_and_leaves_the_rest_verifiable() {
        let written = written(10);
        let dir = written.trail();
        let segments_before = segments(&dir).unwrap().len();
        let (mut trail, _) = written.open().unwrap();
        // Records are written at T0 + their number: keep those from T0 + 5 on.
        let cut = trail.retain(T0 + 5, T0 + 100).unwrap().unwrap();
        assert!((1..=5).contains(&cut.size), "{cut:?}");
        assert!(cut.newest < T0 + 5 && cut.time == T0 + 100, "{cut:?}");
        let left = segments(&dir).unwrap();
        assert!(left.len() < segments_before);
        assert_eq!(left[0], dir.join(segment_name(cut.size)));
        assert_eq!(
            trail.retain(T0 + 5, T0 + 100).unwrap(),
            None,
            "nothing more is old"
        );
        let verified = written.verify().unwrap();
        assert_eq!((verified.records, verified.cut.as_ref()), (10, Some(&cut)));
        let kept = records(&dir, &written.keyring).unwrap();
        assert_eq!(kept.len() as u64, 10 - cut.size);
        assert_eq!(kept[0].0, cut.size);
        assert!(prove(&dir, 0, &written.public).is_err(), "removed");
        for seq in cut.size..8 {
            let proof = prove(&dir, seq, &written.public).unwrap();
            assert_eq!(proof.seq, seq);
        }
        // The writer goes on after the cut; never past what a checkpoint covers.
        drop(trail);
        let (mut trail, opened) = written.open().unwrap();
        assert_eq!(opened.records, 10);
        for seq in 10..17 {
            assert_eq!(trail.append(T0 + seq, b"{}").unwrap(), seq);
        }
        let last = trail.checkpointed.0;
        assert!(segments(&dir).unwrap().len() >= 3);
        let covered = trail.retain(T0 + 1000, T0 + 1000).unwrap().unwrap();
        assert!(
            covered.size <= last,
            "no record after checkpoint {last} is removed: {covered:?}"
        );
        trail.checkpoint(T0 + 1000).unwrap();
        let everything = trail.retain(T0 + 1000, T0 + 1000).unwrap().unwrap();
        assert!(everything.size > last, "{everything:?}");
        assert_eq!(written.verify().unwrap().records, 17);
        // A cut that lies about what it removed breaks the chain or the next checkpoint.
        let honest = fs::read(dir.join(CUT)).unwrap();
        let mut lying: Cut = serde_json::from_slice(&honest).unwrap();
        lying.prev = hex::encode([7u8; 32]);
        fs::write(dir.join(CUT), serde_json::to_vec(&lying).unwrap()).unwrap();
        let (seq, message) = broken_at(written.verify());
        assert_eq!(seq, everything.size - 1, "{message}");
        let mut lying: Cut = serde_json::from_slice(&honest).unwrap();
        lying.subtrees[0].1 = hex::encode([7u8; 32]);
        fs::write(dir.join(CUT), serde_json::to_vec(&lying).unwrap()).unwrap();
        let (_, message) = broken_at(written.verify());
        assert!(message.contains("not those the checkpoint"), "{message}");
        fs::write(dir.join(CUT), b"{}").unwrap();
        let (_, message) = broken_at(written.verify());
        assert!(message.contains("not a retention cut"), "{message}");
    }

    #[test]
    fn after_a_key_rotation_new_records_use_the_new_key_and_old_ones_still_open() {
        let written = written(3);
        let key_file = written.dir.path().join("audit.key");
        written.keyring.write_new_file(&key_file).unwrap();
        let (id, older) = crate::audit::rotate_key(&key_file, &mut rand::rng()).unwrap();
        assert_eq!((id, older), (2, vec![1]));
        let rotated = Arc::new(Keyring::read_file(&key_file).unwrap());
        let signer = AssertionKey::load_or_create(&written.dir.path().join("signing.key"))
            .unwrap()
            .0;
        let (mut trail, _) = Trail::open(
            &written.trail(),
            rotated.clone(),
            signer,
            RULES,
            Vec::new(),
            T0,
        )
        .unwrap();
        assert_eq!(trail.append(T0 + 3, b"{}").unwrap(), 3);
        trail.sync().unwrap();
        let (found, _) = frames(&read(&trail.segment_path).unwrap());
        let last = found.last().unwrap();
        assert_eq!(
            crate::identity::seal::sealed_key_id(&last.sealed).unwrap(),
            2
        );
        let all = records(&written.trail(), &rotated).unwrap();
        assert_eq!(all.len(), 4, "the old records open with the rotated file");
        let old_only = records(&written.trail(), &written.keyring);
        assert!(old_only.is_err(), "the new record needs the new key");
        let verified = verify(&written.trail(), &written.public, Some(&rotated), &[]).unwrap();
        assert_eq!(verified.opened, 4);
    }

    #[test]
    fn a_changed_byte_names_its_record_with_or_without_the_key() {
        let written = written(10);
        let (path, span) = written.record(2);
        let mut bytes = read(&path).unwrap();
        bytes[span.end - 3] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let (seq, message) = broken_at(written.verify());
        assert_eq!(seq, 2, "{message}");
        let (seq, message) = broken_at(verify(&written.trail(), &written.public, None, &[]));
        assert_eq!(seq, 2, "{message}");
        assert!(written.open().is_err(), "the writer refuses a broken chain");
    }

    #[test]
    fn a_removed_a_moved_and_an_added_record_break_the_sequence() {
        // Removed.
        let written = written(10);
        let (path, span) = written.record(5);
        let mut bytes = read(&path).unwrap();
        bytes.drain(span);
        fs::write(&path, &bytes).unwrap();
        let (seq, message) = broken_at(written.verify());
        assert_eq!(seq, 5, "{message}");
        assert!(message.starts_with("missing"), "{message}");

        // Two swapped in one segment.
        let written = super::tests::written(10);
        let (path, first) = written.record(4);
        let (same, second) = written.record(5);
        assert_eq!(path, same);
        let bytes = read(&path).unwrap();
        let mut swapped = bytes[..first.start].to_vec();
        swapped.extend_from_slice(&bytes[second.clone()]);
        swapped.extend_from_slice(&bytes[first]);
        swapped.extend_from_slice(&bytes[second.end..]);
        fs::write(&path, &swapped).unwrap();
        assert_eq!(broken_at(written.verify()).0, 4);

        // One added: a copy of record 3 after itself.
        let written = super::tests::written(10);
        let (path, span) = written.record(3);
        let mut bytes = read(&path).unwrap();
        let copy = bytes[span.clone()].to_vec();
        bytes.splice(span.end..span.end, copy);
        fs::write(&path, &bytes).unwrap();
        let (seq, message) = broken_at(written.verify());
        assert_eq!(seq, 4, "{message}");
        assert!(message.starts_with("out of place"), "{message}");
    }

    #[test]
    fn a_cut_trail_is_caught_by_the_checkpoints_even_when_they_were_cut_too() {
        let written = written(10);
        // Cut the last three records (the checkpoint of 8 covered one of them).
        let (path, span) = written.record(7);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(span.start as u64).unwrap();
        for later in segments(&written.trail()).unwrap() {
            if later > path {
                fs::remove_file(later).unwrap();
            }
        }
        let (seq, message) = broken_at(written.verify());
        assert_eq!(seq, 7, "{message}");
        assert!(message.starts_with("truncated"), "{message}");
        // The local checkpoints cut back to 4 as well: the copy elsewhere still says 8.
        let local = written.trail().join(CHECKPOINTS);
        let first = fs::read_to_string(&local)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned();
        fs::write(&local, format!("{first}\n")).unwrap();
        assert!(verify(&written.trail(), &written.public, None, &[]).is_ok());
        let (_, message) = broken_at(written.verify());
        assert!(message.starts_with("truncated"), "{message}");
    }

    #[test]
    fn a_checkpoint_under_another_key_or_over_other_records_is_refused() {
        let written = written(8);
        let other = AssertionKey::load_or_create(&written.dir.path().join("other.key"))
            .unwrap()
            .0;
        let (seq, message) = broken_at(verify(&written.trail(), &other.public_key(), None, &[]));
        assert_eq!(seq, 4, "{message}");
        // A record rewritten whole, chain and all, under the right key: the signed root differs.
        let local = written.trail().join(CHECKPOINTS);
        let text = fs::read_to_string(&local).unwrap();
        let mut checkpoint: Checkpoint =
            serde_json::from_str(text.lines().next().unwrap()).unwrap();
        checkpoint.root = hex::encode([0u8; 32]);
        fs::write(&local, serde_json::to_string(&checkpoint).unwrap() + "\n").unwrap();
        assert!(
            broken_at(verify(&written.trail(), &written.public, None, &[]))
                .1
                .contains("not signed")
        );
    }

    #[test]
    fn a_record_is_proven_against_the_checkpoint_that_covers_it() {
        let written = written(10);
        let proof = prove(&written.trail(), 5, &written.public).unwrap();
        assert_eq!(
            proof.checkpoint.size, 8,
            "the first checkpoint past record 5"
        );
        let hash = |h: &String| <Hash>::try_from(hex::decode(h).unwrap()).unwrap();
        let path: Vec<Hash> = proof.path.iter().map(hash).collect();
        let root = hash(&proof.checkpoint.root);
        assert!(merkle::verify_inclusion(
            5,
            8,
            hash(&proof.leaf),
            &path,
            &root
        ));
        let (seq, _) = broken_at(
            prove(&written.trail(), 9, &written.public).map(|_| Verified {
                records: 0,
                checkpoints: 0,
                opened: 0,
                cut: None,
            }),
        );
        assert_eq!(seq, 9, "not covered by a checkpoint yet");
        let other = AssertionKey::load_or_create(&written.dir.path().join("other.key"))
            .unwrap()
            .0;
        assert!(prove(&written.trail(), 5, &other.public_key()).is_err());
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_when_the_trail_opens() {
        let written = written(6);
        let (path, span) = written.record(5);
        let bytes = read(&path).unwrap();
        let mut torn = bytes[..span.end].to_vec();
        torn.extend_from_slice(&bytes[span.start..span.start + 20]);
        fs::write(&path, &torn).unwrap();
        let (seq, message) = broken_at(written.verify());
        assert_eq!(seq, 6, "{message}");
        let (trail, opened) = written.open().unwrap();
        assert_eq!((opened.records, opened.torn_bytes), (6, 20));
        assert_eq!(trail.size(), 6);
        assert_eq!(written.verify().unwrap().records, 6);
    }

    #[test]
    fn a_torn_frame_before_the_last_segment_is_no_crash_and_stops_the_start() {
        let written = written(10);
        let (path, span) = written.record(1);
        assert_ne!(path, *segments(&written.trail()).unwrap().last().unwrap());
        let bytes = read(&path).unwrap();
        fs::write(&path, &bytes[..span.start + 20]).unwrap();
        assert!(
            written.open().is_err(),
            "only the last segment's end can be torn"
        );
        assert_eq!(
            read(&path).unwrap().len(),
            span.start + 20,
            "nothing was cut"
        );
    }

    #[test]
    fn only_segment_files_are_read_and_an_unreadable_cut_stops_every_reader() {
        let written = written(6);
        let dir = written.trail();
        fs::write(dir.join("seg-notes.txt"), b"not a segment").unwrap();
        fs::write(dir.join("backup.wga"), b"not a segment either").unwrap();
        assert_eq!(written.verify().unwrap().records, 6);
        assert!(written.open().is_ok());
        fs::create_dir(dir.join(CUT)).unwrap();
        assert!(matches!(written.verify(), Err(TrailError::Io { .. })));
        assert!(written.open().is_err());
        assert!(records(&dir, &written.keyring).is_err());
    }
}
