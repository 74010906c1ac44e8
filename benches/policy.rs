//! One access decision (`pipeline/authorize.rs`) with 10,000 care-team links and 1,000 live
//! grants in the embedded store: the part the roles settle alone (`plan` + `decide`, no store),
//! and the whole decision as a patient route pays it today, with the store's two reads on the
//! blocking pool (care-team link, then grants). The target, under 2 us on a cache hit,
//! needs a decision cache in front of the store that does not exist yet: this bench says how far
//! off the current path is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use wardgate::identity::{EmbeddedStore, Keyring, MasterKey, UserId};
use wardgate::policy::grants::{AccessRequest, Asked, GrantId};
use wardgate::policy::{AccessPolicy, PolicyConfig, decide};
use wardgate::store::Stores;
use wardgate::store::relations::CareTeamLink;

const T0: u64 = 1_800_000_000;

const POLICY: &str = "
categories: { demographics: {}, labs: {}, notes: {}, imaging: {}, mental-health: { sensitive: true } }
roles:
  physician: { care_team: [demographics, labs, notes, imaging], request: [mental-health] }
  dermatologist: { care_team: [demographics, notes, imaging], request: [labs] }
  chief-physician: { care_team: [demographics, labs, notes, imaging], approve: true }
";

fn policy() -> AccessPolicy {
    serde_saphyr::from_str::<PolicyConfig>(POLICY)
        .unwrap()
        .compile()
        .unwrap()
}

fn decision(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap();
    let store = EmbeddedStore::open(dir.path(), Arc::new(keyring)).unwrap();
    let stores = Stores::embedded(Arc::new(store));
    let approver = UserId::from_bytes([0xAA; 16]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let users: Vec<UserId> = (0..1000).map(|_| UserId::random(&mut rng)).collect();
    let links: Vec<CareTeamLink> = (0..10_000)
        .map(|n| CareTeamLink {
            user: users[n % users.len()],
            patient: format!("p{n}"),
            until: None,
        })
        .collect();
    let policy = policy();
    runtime.block_on(async {
        stores.relations.import(links).await.unwrap();
        for (n, user) in users.iter().enumerate() {
            let asked = Asked {
                patient: &format!("g{n}"),
                categories: vec!["labs".into()],
                reason: "bench",
                duration: 3600,
            };
            let mut request = AccessRequest::new(GrantId::random(&mut rng), *user, asked, T0);
            request
                .approve(approver, true, "", &policy.grants, T0)
                .unwrap();
            stores.relations.create_request(request).await.unwrap();
        }
    });
    let roles = vec!["dermatologist".to_owned()];
    let labs = policy.category("labs").unwrap();
    let notes = policy.category("notes").unwrap();
    let (user, now) = (users[7], T0 + 60);

    c.bench_function("policy/plan_and_decide", |b| {
        b.iter(|| {
            let plan = policy.plan(black_box(&roles), black_box(notes)).unwrap();
            decide(plan, black_box(true), None)
        })
    });
    let relations = stores.relations.clone();
    c.bench_function("policy/care_team_from_the_store", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let plan = policy.plan(&roles, notes).unwrap();
                let on = relations.on_care_team(user, "p7", now).await.unwrap();
                decide(plan, on, None).unwrap()
            })
        })
    });
    c.bench_function("policy/grant_from_the_store", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let plan = policy.plan(&roles, labs).unwrap();
                let grant = relations.grant_for(user, "g7", "labs", now).await.unwrap();
                decide(plan, false, grant).unwrap()
            })
        })
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
