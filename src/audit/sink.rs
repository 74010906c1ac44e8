//! The audit writer: one thread owns the trail ([`Backend`]: segment files, or PostgreSQL) and
//! writes records in groups, so that many requests share one `fdatasync`, or one transaction
//! (group commit).
//!
//! ```text
//!  request path ── record (enqueued) ──────────────┐
//!               ── decision, waits ── durable ─────┤  unbounded queue, nothing dropped
//!                                                  ▼
//!  writer thread: take one, then all that wait (up to GROUP) ─▶ append them in one write
//!                 ─▶ one fdatasync when any waits for it ─▶ answer the waiters
//!                 ─▶ checkpoint when due
//! ```
//!
//! A record that must be durable (a patient-data request about to be forwarded) is answered only
//! after its group is on disk; when the trail cannot be written the answer is an error, the
//! request is refused (503 `WG-AUDIT-001`), and [`AuditSink::healthy`] (and `/readyz`) say so
//! until a write succeeds again. The other records of a failed group are written with the next
//! one, so none is lost; a refused decision's record is not (its request never left, and its
//! `request` record says so). The queue is unbounded so that no record is ever dropped: it only
//! grows while the disk fails, and then the patient-data routes, which wait, stop. Dropping the
//! last handle drains the queue, signs a last checkpoint and waits for the writer; a disk that
//! still fails then is tried for two seconds more, and the records it would not take are
//! reported lost in the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use std::path::PathBuf;

use super::backend::{Backend, Source};
use super::trail::{Checkpoint, TrailError};
use super::{AuditRecord, Query, Reader};
use crate::auth::events::SecurityEvent;
use crate::clock::Clock;

/// Keeps every security event in the trail (the channel is lossless: `emit` waits for this
/// task), until the gateway stops.
pub async fn keep_security_events(
    sink: Arc<AuditSink>,
    mut events: mpsc::Receiver<Arc<SecurityEvent>>,
    clock: Clock,
) {
    while let Some(event) = events.recv().await {
        sink.record(&AuditRecord {
            kind: "security".into(),
            time: clock(),
            event: Some(event.name().to_owned()),
            fields: Some(event.fields()),
            ..AuditRecord::default()
        });
    }
}

/// Records written per group, at most.
const GROUP: usize = 4096;
/// How often the writer applies the retention (seconds), while records come.
const RETENTION_EVERY: u64 = 3600;
/// After a failed group, the writer waits this long before it tries again…
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// …and, once the gateway is shutting down, gives up after this many tries (and says so).
const LAST_TRIES: u32 = 20;

/// A syslog receiver of checkpoints: `udp://HOST:PORT`, or `unix:PATH` (a datagram socket such
/// as `/dev/log`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Syslog {
    Udp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl Syslog {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(address) = text.strip_prefix("udp://") {
            return address
                .parse()
                .map(Syslog::Udp)
                .map_err(|_| format!("`{text}`: udp://IP:PORT, e.g. udp://127.0.0.1:514"));
        }
        match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(Syslog::Unix(PathBuf::from(path))),
            _ => Err(format!(
                "`{text}`: udp://IP:PORT or unix:/ABSOLUTE/PATH (e.g. unix:/dev/log)"
            )),
        }
    }

    fn send(&self, line: &str) -> std::io::Result<()> {
        match self {
            Syslog::Udp(address) => {
                let local = if address.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                std::net::UdpSocket::bind(local)?.send_to(line.as_bytes(), address)?;
            }
            Syslog::Unix(path) => {
                std::os::unix::net::UnixDatagram::unbound()?.send_to(line.as_bytes(), path)?;
            }
        }
        Ok(())
    }
}

/// Where checkpoints go besides the trail's own files: out of the gateway's host, so that
/// whoever owns it cannot quietly rewrite history.
#[derive(Clone, Default)]
pub struct CheckpointSinks {
    pub webhook: Option<Webhook>,
    pub syslog: Option<Syslog>,
}

/// Hands a checkpoint (JSON) to a webhook, in the background (`hook::Hook::post`).
pub type Webhook = Arc<dyn Fn(&serde_json::Value) + Send + Sync>;

impl CheckpointSinks {
    /// Sends `checkpoint` to each sink; a failure is an `ERROR` line, never a failed write.
    fn send(&self, checkpoint: &Checkpoint) {
        let Ok(json) = serde_json::to_value(checkpoint) else {
            return;
        };
        if let Some(webhook) = &self.webhook {
            webhook(&json);
        }
        if let Some(syslog) = &self.syslog {
            let line = format!(
                "<86>1 {} - wardgate - checkpoint - {json}",
                super::export::rfc3339(checkpoint.time)
            );
            if let Err(error) = syslog.send(&line) {
                tracing::error!(target: "wardgate::audit", %error, "the checkpoint could not be sent to syslog");
            }
        }
    }
}

/// What `/metrics` shows of the writer (no-ops by default).
#[derive(Clone)]
pub struct Gauges {
    /// Records queued and not yet written.
    pub pending: metrics::Gauge,
    /// 1 while the last group was written, 0 while the trail cannot be.
    pub writable: metrics::Gauge,
}

impl Default for Gauges {
    fn default() -> Self {
        Self {
            pending: metrics::Gauge::noop(),
            writable: metrics::Gauge::noop(),
        }
    }
}

/// The trail could not be written (the cause is in the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail cannot be written")]
pub struct AuditUnavailable;

struct Entry {
    time: u64,
    /// The record's JSON; `None` for a barrier, answered once everything before it is written.
    record: Option<Vec<u8>>,
    durable: Option<oneshot::Sender<Result<u64, AuditUnavailable>>>,
}

/// The request path's handle on the writer.
pub struct AuditSink {
    queue: Option<mpsc::UnboundedSender<Entry>>,
    healthy: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Where queries read the records, beside the writer.
    reader: Source,
    /// Counts the records queued.
    pending: metrics::Gauge,
}

impl Drop for AuditSink {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl AuditSink {
    /// Starts the writer thread over `trail`; it ends when every handle is gone.
    pub fn start(
        trail: Backend,
        clock: Clock,
        sinks: CheckpointSinks,
        gauges: Gauges,
    ) -> std::io::Result<Self> {
        let reader = trail.source();
        let (queue, entries) = mpsc::unbounded_channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let (flag, writer_gauges, pending) = (healthy.clone(), gauges.clone(), gauges.pending);
        gauges.writable.set(1.0);
        let writer = std::thread::Builder::new()
            .name("wardgate-audit".into())
            .spawn(move || write(trail, entries, &flag, &clock, &sinks, &writer_gauges))?;
        Ok(Self {
            queue: Some(queue),
            healthy,
            writer: Some(writer),
            reader,
            pending,
        })
    }

    /// The records `query` keeps, oldest first (every record is read and opened: a scan),
    /// including every record queued before the query (when the trail can be written).
    pub async fn query(&self, query: Query) -> Result<Vec<AuditRecord>, TrailError> {
        // A failing trail is read as far as it was written: the error is in the log already.
        let _ = self.wait(0, None).await;
        let read = self.reader.records().await?;
        let mut reader = Reader::default();
        Ok(read
            .iter()
            .filter_map(|(seq, _, json)| {
                let record = serde_json::from_slice::<AuditRecord>(json).ok()?;
                Some(reader.read(*seq, record))
            })
            .filter(|record| query.keeps(record))
            .collect())
    }

    fn send(&self, entry: Entry) -> Result<(), AuditUnavailable> {
        let queue = self.queue.as_ref().ok_or(AuditUnavailable)?;
        let record = entry.record.is_some();
        queue.send(entry).map_err(|_| AuditUnavailable)?;
        if record {
            self.pending.increment(1.0);
        }
        Ok(())
    }

    /// Enqueues `record`; it is written with the next group.
    pub fn record(&self, record: &AuditRecord) {
        if let Ok(bytes) = encode(record) {
            let entry = Entry {
                time: record.time,
                record: Some(bytes),
                durable: None,
            };
            if self.send(entry).is_err() {
                self.healthy.store(false, Ordering::Release);
            }
        }
    }

    /// Writes `record` and waits until it is on disk: its sequence number.
    pub async fn durable(&self, record: &AuditRecord) -> Result<u64, AuditUnavailable> {
        let bytes = encode(record).map_err(|_| AuditUnavailable)?;
        self.wait(record.time, Some(bytes)).await
    }

    /// Sends an entry that waits for its group to be on disk, and waits.
    async fn wait(&self, time: u64, record: Option<Vec<u8>>) -> Result<u64, AuditUnavailable> {
        let (done, written) = oneshot::channel();
        let entry = Entry {
            time,
            record,
            durable: Some(done),
        };
        self.send(entry)?;
        written.await.map_err(|_| AuditUnavailable)?
    }

    /// Whether the last group was written.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

/// A record's JSON, in one allocation for most records.
fn encode(record: &AuditRecord) -> serde_json::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(512);
    serde_json::to_writer(&mut bytes, record)?;
    Ok(bytes)
}

fn write(
    mut trail: Backend,
    mut entries: mpsc::UnboundedReceiver<Entry>,
    healthy: &AtomicBool,
    clock: &Clock,
    sinks: &CheckpointSinks,
    gauges: &Gauges,
) {
    let mut group: Vec<Entry> = Vec::with_capacity(GROUP);
    let mut failures = 0;
    let mut next_retention = 0;
    loop {
        // Records of a failed group are still here: write them with the next.
        if group.is_empty() {
            match entries.blocking_recv() {
                Some(first) => group.push(first),
                None => break,
            }
        }
        while group.len() < GROUP {
            match entries.try_recv() {
                Ok(entry) => group.push(entry),
                Err(_) => break,
            }
        }
        let (appended, written) = write_group(&mut trail, &group, clock(), sinks);
        if let Err(error) = &written {
            tracing::error!(target: "wardgate::audit", %error, "the audit trail cannot be written: patient-data routes answer 503 WG-AUDIT-001");
            if let Err(error) = trail.recover() {
                tracing::error!(target: "wardgate::audit", %error, "the audit trail cannot be reopened");
            }
        }
        // A group of barriers alone wrote nothing: it says nothing of the disk.
        if group.iter().any(|entry| entry.record.is_some()) {
            healthy.store(written.is_ok(), Ordering::Release);
            gauges.writable.set(if written.is_ok() { 1.0 } else { 0.0 });
        }
        if written.is_ok() && clock() >= next_retention {
            next_retention = clock() + RETENTION_EVERY;
            expire(&mut trail, clock());
        }
        let answered = std::mem::take(&mut group);
        let mut records = 0;
        for (index, mut entry) in answered.into_iter().enumerate() {
            // A record's sequence number; a barrier's is that of the next record.
            let seq = match &written {
                Ok(first) => Ok(first + records),
                Err(_) => Err(AuditUnavailable),
            };
            let is_record = entry.record.is_some();
            records += u64::from(is_record);
            let settled = match entry.durable.take() {
                Some(done) => {
                    let _ = done.send(seq);
                    true
                }
                None if written.is_err() && index >= appended => {
                    group.push(entry);
                    false
                }
                None => true,
            };
            if settled && is_record {
                gauges.pending.decrement(1.0);
            }
        }
        if written.is_err() {
            failures += 1;
            if entries.is_closed() && failures >= LAST_TRIES {
                tracing::error!(
                    target: "wardgate::audit",
                    records = group.len(),
                    "shutting down with audit records that could not be written: they are lost"
                );
                return;
            }
            // Give the disk a moment before the next try.
            std::thread::sleep(RETRY_PAUSE);
        } else {
            failures = 0;
        }
    }
    match trail.finish(clock()) {
        Ok(Some(checkpoint)) => sinks.send(&checkpoint),
        Ok(None) => {}
        Err(error) => {
            tracing::error!(target: "wardgate::audit", %error, "the last checkpoint could not be written");
        }
    }
}

/// Applies the retention and records what it removed, in the trail itself.
fn expire(trail: &mut Backend, now: u64) {
    let cut = match trail.expire(now) {
        Ok(Some(cut)) => cut,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(target: "wardgate::audit", %error, "the audit retention could not remove old records");
            return;
        }
    };
    tracing::info!(target: "wardgate::audit", records = cut.size, newest = cut.newest, "the audit retention removed the oldest records");
    let removed = AuditRecord {
        kind: "security".into(),
        time: now,
        event: Some("audit_records_removed".into()),
        fields: Some(serde_json::json!({ "records": cut.size, "newest": cut.newest })),
        ..AuditRecord::default()
    };
    if let Err(error) = encode(&removed)
        .map_err(|_| TrailError::Encode)
        .and_then(|json| trail.append_group([(now, &json[..])], false, now).1)
    {
        tracing::error!(target: "wardgate::audit", %error, "the audit retention's record could not be written");
    }
}

/// Appends the group (all or none), durable when anyone waits for it, and hands a checkpoint
/// signed on the way to the sinks: how many entries were appended, and the first record's
/// sequence number.
fn write_group(
    trail: &mut Backend,
    group: &[Entry],
    now: u64,
    sinks: &CheckpointSinks,
) -> (usize, Result<u64, TrailError>) {
    let records = group
        .iter()
        .filter_map(|entry| Some((entry.time, entry.record.as_deref()?)));
    let durable = group.iter().any(|entry| entry.durable.is_some());
    let (appended, written) = trail.append_group(records, durable, now);
    let written = written.map(|(first, checkpoint)| {
        if let Some(checkpoint) = checkpoint {
            sinks.send(&checkpoint);
        }
        first
    });
    (if appended { group.len() } else { 0 }, written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assertion::AssertionKey;
    use crate::audit::trail::{self, Trail, TrailRules};
    use crate::identity::seal::{Keyring, MasterKey};

    const T0: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    #[tokio::test]
    async fn a_query_sees_every_record_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [5; 32]), Vec::new()).unwrap());
        let signer = AssertionKey::load_or_create(&dir.path().join("signing.key"))
            .unwrap()
            .0;
        let rules = TrailRules {
            checkpoint_every: 1000,
            checkpoint_interval: 60,
            segment_bytes: 1 << 20,
            retention: None,
        };
        let (trail, _) = Trail::open(
            &dir.path().join("audit"),
            keyring,
            signer,
            rules,
            Vec::new(),
            T0,
        )
        .unwrap();
        let sink = AuditSink::start(
            Backend::Files(trail),
            Arc::new(|| T0),
            CheckpointSinks::default(),
            Gauges::default(),
        )
        .unwrap();
        for n in 0..500 {
            sink.record(&AuditRecord {
                kind: "request".into(),
                time: T0 + n,
                ..AuditRecord::default()
            });
        }
        let all = sink.query(Query::default()).await.unwrap();
        assert_eq!(all.len(), 500, "none still queued");
        assert!(sink.healthy());
        let seq = sink.durable(&AuditRecord::default()).await.unwrap();
        assert_eq!(seq, 500, "a barrier takes no sequence number");
    }

    #[test]
    fn the_writer_applies_the_retention_and_records_what_it_removed() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [5; 32]), Vec::new()).unwrap());
        let path = dir.path().join("audit");
        let rules = TrailRules {
            checkpoint_every: 1,
            checkpoint_interval: 60,
            segment_bytes: 4096,
            retention: Some(30 * DAY),
        };
        let open = || {
            let signer = AssertionKey::load_or_create(&dir.path().join("signing.key"))
                .unwrap()
                .0;
            Trail::open(&path, keyring.clone(), signer, rules, Vec::new(), T0)
                .unwrap()
                .0
        };
        let sink = AuditSink::start(
            Backend::Files(open()),
            Arc::new(|| T0),
            CheckpointSinks::default(),
            Gauges::default(),
        )
        .unwrap();
        let record = |time| AuditRecord {
            kind: "request".into(),
            time,
            path: Some("/api/patients/p7/notes/1".into()),
            ..AuditRecord::default()
        };
        // Enough records a month ago to fill several segments, one checkpoint each.
        for _ in 0..100 {
            sink.record(&record(T0));
        }
        drop(sink);
        let sink = AuditSink::start(
            Backend::Files(open()),
            Arc::new(move || T0 + 31 * DAY),
            CheckpointSinks::default(),
            Gauges::default(),
        )
        .unwrap();
        sink.record(&record(T0 + 31 * DAY));
        drop(sink);
        let kept = trail::records(&path, &keyring).unwrap();
        assert!(
            kept.len() < 100,
            "old segments removed: {} kept",
            kept.len()
        );
        let removed: Vec<AuditRecord> = kept
            .iter()
            .map(|(_, _, json)| serde_json::from_slice::<AuditRecord>(json).unwrap())
            .filter(|r| r.event.as_deref() == Some("audit_records_removed"))
            .collect();
        assert_eq!(removed.len(), 1);
        let fields = removed[0].fields.as_ref().unwrap();
        assert_eq!(
            fields["records"], kept[0].0,
            "the records before the first kept one"
        );
        let signer = AssertionKey::load_or_create(&dir.path().join("signing.key"))
            .unwrap()
            .0;
        let verified = trail::verify(&path, &signer.public_key(), Some(&keyring), &[]).unwrap();
        assert_eq!(verified.cut.unwrap().size, kept[0].0);
    }
}
