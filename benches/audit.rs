//! Records per second into the embedded audit trail through its writer (`audit::sink`), with
//! group commit: 10,000 records of a realistic size (a patient-data decision) written by 256
//! requests at once, each waiting until its record is on disk (`durable`, what a patient-data
//! route pays), and the same records queued without waiting (`record`, what every request's
//! end record costs), with one durable record at the end. Target: at least 50,000 records/s.
//! The temporary directory is on the machine's own disk (`TMPDIR`): an fdatasync there is the
//! real one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wardgate::assertion::AssertionKey;
use wardgate::audit::AuditRecord;
use wardgate::audit::sink::AuditSink;
use wardgate::audit::trail::{Trail, TrailRules};
use wardgate::identity::{Keyring, MasterKey};

const RECORDS: usize = 10_000;
const AT_ONCE: usize = 256;

fn record(n: usize) -> AuditRecord {
    AuditRecord {
        kind: "decision".into(),
        time: 1_800_000_000,
        request_id: Some(format!("4f3a9c1e2b7d4a6f8e0c1d2b3a4f5e{n:06}")),
        client: Some("203.0.113.7".into()),
        user: Some("9c1e2b7d4a6f8e0c1d2b3a4f5e6d7c8b".into()),
        roles: vec!["physician".into()],
        route: Some("labs".into()),
        method: Some("GET".into()),
        path: Some(format!("/api/patients/p{n}/labs/1")),
        patient: Some(format!("p{n}")),
        categories: vec!["labs".into()],
        decision: Some("allowed".into()),
        purpose_of_use: Some("TREAT".into()),
        ..AuditRecord::default()
    }
}

fn writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Arc::new(Keyring::new(MasterKey::new(1, [9; 32]), Vec::new()).unwrap());
    let signer = AssertionKey::load_or_create(&dir.path().join("signing.key"))
        .unwrap()
        .0;
    let rules = TrailRules {
        checkpoint_every: 1000,
        checkpoint_interval: 10,
        segment_bytes: 64 * 1024 * 1024,
        retention: None,
    };
    let trail_dir = dir.path().join("audit");
    let (trail, _) = Trail::open(&trail_dir, keyring, signer, rules, Vec::new(), 0).unwrap();
    let sink = Arc::new(
        AuditSink::start(
            wardgate::audit::backend::Backend::Files(trail),
            Arc::new(|| 1_800_000_000),
            Default::default(),
            Default::default(),
        )
        .unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let records: Arc<Vec<AuditRecord>> = Arc::new((0..RECORDS).map(record).collect());

    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    group.bench_function("durable_256_at_once", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut tasks = Vec::with_capacity(AT_ONCE);
                for task in 0..AT_ONCE {
                    let (sink, records) = (sink.clone(), records.clone());
                    tasks.push(tokio::spawn(async move {
                        for n in (task..RECORDS).step_by(AT_ONCE) {
                            sink.durable(&records[n]).await.unwrap();
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
            })
        })
    });
    group.bench_function("queued", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for record in records.iter().skip(1) {
                    sink.record(record);
                }
                sink.durable(&records[0]).await.unwrap();
            })
        })
    });
    group.finish();
}

criterion_group!(benches, writes);
criterion_main!(benches);
