//! One argon2id verification at the default parameters (m=19 MiB, t=2, p=1): its inverse is the
//! logins a core can check per second, and the price of one guess against a stolen hash. Also
//! the password policy check (zxcvbn) that runs when a password is chosen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wardgate::auth::password::{HashParams, Hasher, Owner, Policy, Secret, Verification};

fn password(c: &mut Criterion) {
    let hasher = Hasher::new(HashParams::OWASP_MINIMUM).unwrap();
    let secret = Secret::new("Violet kettle, 9 drums!".to_owned());
    let phc = hasher.hash(&secret).unwrap();
    assert_eq!(hasher.verify(&secret, &phc), Verification::Valid);
    c.bench_function("argon2id verify, m=19MiB t=2 p=1", |b| {
        b.iter(|| hasher.verify(black_box(&secret), black_box(&phc)))
    });

    let policy = Policy::default();
    let owner = Owner {
        user_name: "alice.m",
        email: Some("alice.martin@st-mary.example"),
    };
    c.bench_function("policy check, 23 characters", |b| {
        b.iter(|| policy.check(black_box(&secret), black_box(&owner)))
    });
}

criterion_group!(benches, password);
criterion_main!(benches);
