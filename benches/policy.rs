//! One access decision (`pipeline/authorize.rs`) with 100 routes, 10,000 care-team links and
//! 1,000 live grants in the embedded store: the part the roles settle alone (`plan` + `decide`,
//! no store), the whole decision on a hit of the decision cache (`store::relations::Cached`,
//! what a patient route pays once the answer is kept; target under 2 us), and the same read from
//! the store itself on the blocking pool (what a miss pays: after a write, or the first time).
//! The whole decision starts from the request's path: its route found among the 100, the
//! category and patient id taken from the route, as the gateway does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use wardgate::identity::{EmbeddedStore, Keyring, MasterKey, UserId};
use wardgate::policy::grants::{AccessRequest, Asked, GrantId};
use wardgate::policy::{AccessPolicy, Category, PatientAt, PolicyConfig, decide};
use wardgate::route::{PathPattern, RouteTable};
use wardgate::store::Stores;
use wardgate::store::embedded::Embedded;
use wardgate::store::relations::{CareTeamLink, Relations};

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

/// 100 patient routes: one per category under `/api/patients/{patient}/`, the rest under other
/// services; each carries its category and where its patient id is.
fn routes(policy: &AccessPolicy) -> RouteTable<(Category, PatientAt)> {
    let categories = ["demographics", "labs", "notes", "imaging", "mental-health"];
    let routes = (0..100).map(|n| {
        let name = categories[n % categories.len()];
        let path = if n < categories.len() {
            format!("/api/patients/{{patient}}/{name}/**")
        } else {
            format!("/service-{n}/patients/{{patient}}/{name}/**")
        };
        let pattern = PathPattern::try_from(path).unwrap();
        let at = PatientAt::Segment(pattern.param_index("patient").unwrap());
        (None, pattern, (policy.category(name).unwrap(), at))
    });
    RouteTable::new(routes)
}

fn decision(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), Arc::new(keyring)).unwrap());
    let stores = Stores::embedded(store.clone());
    let uncached = Embedded::new(store);
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
    let routes = routes(&policy);
    let roles = vec!["dermatologist".to_owned()];
    let notes = policy.category("notes").unwrap();
    let (user, now) = (users[7], T0 + 60);
    // The route's category and patient for a request's path.
    let route = |path: &str| {
        let (category, at) = routes.find(None, path).unwrap().as_ref();
        (*category, at.find(path, None).unwrap())
    };

    c.bench_function("policy/plan_and_decide", |b| {
        b.iter(|| {
            let plan = policy.plan(black_box(&roles), black_box(notes)).unwrap();
            decide(plan, black_box(true), None)
        })
    });
    let sources: [(&str, &dyn Relations); 2] = [
        ("cache_hit", stores.relations.as_ref()),
        ("from_the_store", &uncached),
    ];
    for (source, relations) in sources {
        c.bench_function(&format!("policy/care_team_{source}"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let (category, patient) = route(black_box("/api/patients/p7/notes/n1"));
                    let plan = policy.plan(&roles, category).unwrap();
                    let on = relations.on_care_team(user, &patient, now).await.unwrap();
                    decide(plan, on.is_some(), None).unwrap()
                })
            })
        });
        c.bench_function(&format!("policy/grant_{source}"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let (category, patient) = route(black_box("/api/patients/g7/labs/l1"));
                    let plan = policy.plan(&roles, category).unwrap();
                    let name = policy.category_name(category);
                    let grant = relations
                        .grant_for(user, &patient, name, now)
                        .await
                        .unwrap();
                    decide(plan, false, grant).unwrap()
                })
            })
        });
    }
}

criterion_group!(benches, decision);
criterion_main!(benches);
