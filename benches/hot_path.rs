//! Micro-benchmarks of the per-request hot path: path normalization, route matching and
//! header processing. Figures go in the README's performance section.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use wardgate::path;
use wardgate::proxy::{self, Peer, TrustedProxies};
use wardgate::route::{PathPattern, RouteTable};

/// A route table the size of a hospital's API front door.
fn table() -> RouteTable<usize> {
    let mut patterns = vec![
        "/api/patients/{patient}/labs/**".to_owned(),
        "/api/patients/{patient}/notes/**".to_owned(),
        "/api/patients/{patient}/imaging/**".to_owned(),
        "/api/patients/{patient}".to_owned(),
        "/api/patients".to_owned(),
        "/public/*".to_owned(),
        "/fhir/**".to_owned(),
        "/**".to_owned(),
    ];
    patterns.extend((0..24).map(|i| format!("/api/service{i}/**")));
    RouteTable::new(
        patterns
            .into_iter()
            .enumerate()
            .map(|(i, p)| (None, PathPattern::try_from(p).unwrap(), i)),
    )
}

fn routing(c: &mut Criterion) {
    let table = table();
    let mut group = c.benchmark_group("route");
    group.bench_function("match_labs", |b| {
        b.iter(|| {
            table.find(
                Some("ehr.example.org"),
                black_box("/api/patients/123/labs/2024/glucose"),
            )
        })
    });
    group.bench_function("match_fallback", |b| {
        b.iter(|| {
            table.find(
                Some("ehr.example.org"),
                black_box("/unknown/deep/path/here"),
            )
        })
    });
    group.bench_function("normalize_clean", |b| {
        b.iter(|| path::normalize(black_box("/api/patients/123/labs/2024/glucose")))
    });
    group.bench_function("normalize_dirty", |b| {
        b.iter(|| path::normalize(black_box("/api//patients/./123/%6Cabs/../labs/%7E2024")))
    });
    group.finish();
}

fn browser_like_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "ehr.example.org"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36",
        ),
        (
            "accept",
            "application/fhir+json, application/json;q=0.9, */*;q=0.1",
        ),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("connection", "keep-alive"),
        ("cookie", "theme=dark; lang=en"),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

fn headers(c: &mut Criterion) {
    let trusted = TrustedProxies::default();
    let peer = Peer::new("198.51.100.20:51234".parse().unwrap(), &trusted);
    let host = HeaderValue::from_static("ehr.example.org");
    let template = browser_like_headers();
    let mut group = c.benchmark_group("headers");
    group.bench_function("request_rewrite", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |headers| {
                let client = trusted.client_address(peer.addr.ip(), headers);
                proxy::strip_hop_by_hop(headers, false);
                headers.remove(http::header::HOST);
                peer.set_forwarding_headers(headers, Some(host.clone()));
                headers.insert(proxy::X_REQUEST_ID, proxy::new_request_id(&mut rand::rng()));
                black_box(client)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut response = HeaderMap::new();
    response.insert("content-type", HeaderValue::from_static("application/json"));
    response.insert("server", HeaderValue::from_static("Apache/2.2.15"));
    response.insert("x-powered-by", HeaderValue::from_static("PHP/5.3"));
    response.insert("connection", HeaderValue::from_static("keep-alive"));
    group.bench_function("response_harden", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |headers| {
                proxy::strip_hop_by_hop(headers, false);
                wardgate::hardening::harden_response(headers);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, routing, headers);
criterion_main!(benches);
