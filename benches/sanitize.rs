//! Micro-benchmarks of the sanitize phase (target: under 2 us for a typical API request) and of
//! the checks on a 64 KiB JSON body. Figures go in the README's performance section.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use wardgate::config::{RouteSanitize, Sanitize};
use wardgate::path;
use wardgate::ratelimit::{LimitSpec, LocalLimiter, RateLimits, RouteRateLimit, Stage, Subject};
use wardgate::sanitize::request::{self, BodyKind, RouteRules};

/// A FHIR Bundle of Observations of at least 64 KiB, with narrative and free-text notes.
fn fhir_bundle() -> Vec<u8> {
    let entry = |i: usize| {
        format!(
            r#"{{"fullUrl":"urn:uuid:{i}","resource":{{"resourceType":"Observation","id":"obs-{i}","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"2345-7","display":"Glucose"}}]}},"subject":{{"reference":"Patient/123"}},"valueQuantity":{{"value":5.{i},"unit":"mmol/L"}},"note":[{{"text":"Mrs O'Brien: fasting sample; select the drop-down to compare < 7 days"}}],"text":{{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><b>Glucose</b> 5.{i} mmol/L</div>"}}}}}}"#
        )
    };
    let mut entries = Vec::new();
    let mut size = 0;
    while size < 64 * 1024 {
        let e = entry(entries.len());
        size += e.len() + 1;
        entries.push(e);
    }
    format!(
        r#"{{"resourceType":"Bundle","type":"collection","entry":[{}]}}"#,
        entries.join(",")
    )
    .into_bytes()
}

fn sanitize(c: &mut Criterion) {
    let global = Sanitize {
        server_names: vec!["ehr.example.org".into()],
        ..Sanitize::default()
    };
    let rules = RouteRules::new(&global, &RouteSanitize::default());
    // A limit high enough that every iteration takes the "allowed" path.
    let spec = LimitSpec::new(1_000_000, Duration::from_secs(1), 1_000_000).unwrap();
    let limits = RateLimits {
        per_client: Some(spec),
        ..RateLimits::default()
    };
    let limiter = LocalLimiter::new(&limits, [("patients", &RouteRateLimit::default())]).unwrap();
    let client: IpAddr = "198.51.100.20".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("application/fhir+json"));
    let mut group = c.benchmark_group("sanitize");
    group.bench_function("typical_request", |b| {
        b.iter(|| {
            let raw = black_box("/api/patients/123/labs");
            request::check_path(raw, false).unwrap();
            let normalized = path::normalize(raw).unwrap();
            request::check_host(black_box("ehr.example.org"), &global.server_names).unwrap();
            rules
                .check_head(&Method::GET, &headers, None, false)
                .unwrap();
            rules
                .check_query(black_box("patient=123&_count=10&date=ge2024-01-01"))
                .unwrap();
            let subject = Subject {
                stage: Stage::Anonymous,
                route: "patients",
                client,
                user: None,
                public: false,
            };
            black_box((normalized, limiter.check(&subject)))
        })
    });
    group.bench_function("query_scan_free_text", |b| {
        b.iter(|| {
            rules
                .check_query(black_box("_count=10&family=O%27Brien&date=ge2024-01-01"))
                .unwrap()
        })
    });
    group.bench_function("rate_limit_check", |b| {
        b.iter(|| {
            let subject = Subject {
                stage: Stage::Anonymous,
                route: "patients",
                client,
                user: None,
                public: false,
            };
            black_box(limiter.check(&subject))
        })
    });
    let bundle = fhir_bundle();
    group.throughput(criterion::Throughput::Bytes(bundle.len() as u64));
    group.bench_function("json_body_64kib", |b| {
        b.iter(|| {
            rules
                .check_body(BodyKind::Json, black_box(&bundle))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, sanitize);
criterion_main!(benches);
