//! The per-request session check: a live session found in the moka cache (what every request
//! to an `auth: session` route pays once logged in; target under 1 us), and finding the token in
//! the request's `Authorization` or `Cookie` headers. The memory a cached session takes is
//! measured by `benches/session_memory.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use wardgate::session::{self, SessionConfig, Sessions};

mod support;
use support::{Fixture, T0};

/// Runs a future that must not wait: a cache hit touches neither the store nor the runtime, so
/// it is ready at the first poll (within the touch interval, `check` spawns no write-back).
fn ready<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the future waited: not a cache hit"),
    }
}

fn session(c: &mut Criterion) {
    let fixture = Fixture::new();
    let sessions = Sessions::new(
        &fixture.stores(),
        fixture.keyring.clone(),
        &SessionConfig::default(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (token, _) = runtime
        .block_on(sessions.create(fixture.new_session(), sessions.epoch(), T0))
        .unwrap();
    let lifetimes = sessions.lifetimes();
    let now = T0 + 1;
    ready(sessions.check(token.as_str(), &lifetimes, now))
        .unwrap()
        .unwrap();
    c.bench_function("session check, cache hit", |b| {
        b.iter(|| ready(sessions.check(black_box(token.as_str()), &lifetimes, now)))
    });

    let mut bearer = HeaderMap::new();
    bearer.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", token.as_str())).unwrap(),
    );
    bearer.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    c.bench_function("session token from Authorization: Bearer", |b| {
        b.iter(|| session::presented(black_box(&bearer)))
    });

    let mut cookie = HeaderMap::new();
    cookie.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!(
            "lang=en; theme=dark; {}={}; _ga=GA1.1.123456789.1700000000",
            session::COOKIE,
            token.as_str()
        ))
        .unwrap(),
    );
    cookie.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
    c.bench_function("session token from the Cookie header, 4 cookies", |b| {
        b.iter(|| session::presented(black_box(&cookie)))
    });
}

criterion_group!(benches, session);
criterion_main!(benches);
