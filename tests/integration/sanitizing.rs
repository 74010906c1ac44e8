//! Request rules after parsing: hosts, methods, content types, body sizes and shapes.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;

use crate::binary::Binary;
use crate::harness::*;

fn config(url: &str, sanitize: &str, route_extra: &str) -> String {
    config_with(
        &format!("  backend: {{ url: \"{url}\" }}"),
        &format!("  - path: /**\n    upstream: backend\n    auth: none\n{route_extra}"),
        &format!("sanitize:\n{sanitize}"),
    )
}

async fn refusal(
    gateway: &TestGateway,
    request: Request<TestBody>,
) -> (StatusCode, http::HeaderMap, String) {
    let response = gateway.client(false).request(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, body_text(response).await)
}

#[tokio::test]
async fn only_configured_host_names_are_served() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(
        &upstream.url(),
        "  server_names: [localhost]\n",
        "",
    ))
    .await;
    let ok = raw_exchange(
        &gateway,
        b"GET /a HTTP/1.1\r\nHost: LOCALHOST:8443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let other = raw_exchange(
        &gateway,
        b"GET /a HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 400"), "{other}");
    assert!(other.contains("WG-HOST-001"), "{other}");
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn methods_outside_the_allow_list_get_405_with_allow() {
    let upstream = MockUpstream::recording().await;
    let gateway =
        TestGateway::start(&config(&upstream.url(), "  methods: [GET, POST]\n", "")).await;
    for method in ["TRACE", "CONNECT", "DELETE", "PROPFIND"] {
        let raw = format!("{method} /a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(&gateway, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{method}: {answer}");
        assert!(answer.contains("WG-METHOD-001"), "{method}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("allow: get, post"),
            "{method}: {answer}"
        );
    }
    assert!(upstream.seen().is_empty());

    // A route can narrow the list further.
    let narrow = TestGateway::start(&config(
        &upstream.url(),
        "  methods: [GET, POST]\n",
        "    sanitize: { methods: [GET] }\n",
    ))
    .await;
    let (status, headers, body) = refusal(
        &narrow,
        Request::post(narrow.url("/a")).body(full("x")).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(headers["allow"], "GET");
}

#[tokio::test]
async fn content_types_sizes_and_body_shapes_are_checked() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(
        &upstream.url(),
        "  max_body_size: 1KiB\n  json: { max_depth: 4, max_size: 512B }\n",
        "    sanitize: { content_types: [application/fhir+json, application/json, application/x-www-form-urlencoded, text/plain] }\n",
    ))
    .await;
    let post = |content_type: &str, body: Vec<u8>| {
        Request::post(gateway.url("/Observation"))
            .header("content-type", content_type)
            .body(full(body))
            .unwrap()
    };
    let cases = [
        (
            post("application/fhir+xml", b"<Patient/>".to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "WG-BODY-002",
        ),
        (
            post("text/plain", vec![b'a'; 2048]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "WG-BODY-001",
        ),
        (
            post("application/json", vec![b' '; 600]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "WG-BODY-001",
        ),
        (
            post("application/json", br#"{"a": [1, 2,]}"#.to_vec()),
            StatusCode::BAD_REQUEST,
            "WG-BODY-003",
        ),
        (
            post(
                "application/fhir+json",
                br#"{"a":{"b":{"c":{"d":{"e":1}}}}}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "WG-BODY-004",
        ),
        (
            post("application/x-www-form-urlencoded", b"name=%zz".to_vec()),
            StatusCode::BAD_REQUEST,
            "WG-BODY-005",
        ),
    ];
    for (request, status, code) in cases {
        let (got, _, body) = refusal(&gateway, request).await;
        assert_eq!(got, status, "{body}");
        assert!(body.contains(code), "{code}: {body}");
    }
    let no_type = Request::post(gateway.url("/x")).body(full("data")).unwrap();
    assert_eq!(
        refusal(&gateway, no_type).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    // Well-formed bodies arrive byte for byte, with their length.
    let resource = br#"{"resourceType":"Patient","name":[{"family":"O'Brien"}],"text":{"div":"<div>x</div>"}}"#;
    let response = gateway
        .client(false)
        .request(post("application/fhir+json", resource.to_vec()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen[0].body, Bytes::from_static(resource));
    assert_eq!(
        seen[0].headers["content-length"],
        resource.len().to_string()
    );
}

/// A body over the limit is cut off as soon as the limit is passed, without being buffered:
/// the refusal arrives while the client still holds most of its 100 MiB.
#[tokio::test]
async fn a_100_mib_body_over_the_limit_is_cut_off_early() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url(), "  max_body_size: 1MiB\n", "")).await;

    // Announced length: refused from the head alone.
    let announced = "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 104857600\r\nContent-Type: application/octet-stream\r\n\r\n";
    let answer = raw_exchange(&gateway, announced.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("WG-BODY-001"), "{answer}");

    // Chunked, no length: counted while streaming.
    let (mut sender, body) =
        http_body_util::channel::Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(1);
    let request = Request::post(gateway.url("/upload"))
        .header("content-type", "application/octet-stream")
        .body(body.boxed())
        .unwrap();
    let response = tokio::spawn(gateway.client(false).request(request));
    let sent = tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        let mut sent = 0usize;
        while sent < 100 && sender.send_data(chunk.clone()).await.is_ok() {
            sent += 1;
        }
        sent
    });
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body_text(response).await.contains("WG-BODY-001"));
    let sent = tokio::time::timeout(Duration::from_secs(30), sent)
        .await
        .unwrap()
        .unwrap();
    assert!(
        sent < 100,
        "the client pushed all {sent} MiB: the gateway kept reading"
    );
    // A part of the body may have streamed to the upstream before the count ran over; that
    // request must then end in an error, never look complete.
    let seen = upstream.seen_even_cut();
    assert!(seen.len() <= 1, "{seen:?}");
    if let [seen] = &seen[..] {
        assert!(seen.cut.is_some(), "a cut body looked whole: {seen:?}");
        assert!(
            seen.body.len() <= 1 << 20,
            "the upstream got {} bytes",
            seen.body.len()
        );
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(
        &(config(&upstream.url(), "  max_body_size: 1KiB\n", "")
            + "server:\n  body_idle_timeout: 200ms\n"),
    )
    .await;
    let stalled = "POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":";
    let answer = raw_exchange(&gateway, stalled.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("WG-BODY-006"), "{answer}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn injection_attempts_are_refused_and_clinical_text_passes() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(
        &upstream.url(),
        "  server_names: [localhost]\n",
        "",
    ))
    .await;
    let json = |body: &'static str| {
        Request::post(gateway.url("/Observation"))
            .header("content-type", "application/fhir+json")
            .body(full(body))
            .unwrap()
    };
    let cases = [
        (
            Request::get(gateway.url("/Patient?name=x%27%20OR%20%271%27%3D%271"))
                .body(full(""))
                .unwrap(),
            "WG-INJ-001",
        ),
        (
            json(r#"{"note":{"text":"<img src=x onerror=alert(1)>"}}"#),
            "WG-INJ-002",
        ),
        (
            Request::get(gateway.url("/files?name=..%2F..%2Fetc%2Fpasswd"))
                .body(full(""))
                .unwrap(),
            "WG-INJ-003",
        ),
        (
            Request::post(gateway.url("/lab"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(full("sample=1%3B%20cat%20%2Fetc%2Fpasswd"))
                .unwrap(),
            "WG-INJ-004",
        ),
    ];
    for (request, code) in cases {
        let (status, _, body) = refusal(&gateway, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains(code), "{code}: {body}");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    let narrative = r#"{"resourceType":"Condition","note":[{"text":"Mrs O'Brien: select the drop-down; 5 < 7"}],"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><b>Allergy</b> to penicillin <script>x</script></div>"}}"#;
    let response = gateway
        .client(false)
        .request(json(narrative))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let search = gateway
        .client(false)
        .request(get(&gateway.url("/Patient?family=O%27Brien&_count=10")))
        .await
        .unwrap();
    assert_eq!(search.status(), StatusCode::OK);
    assert_eq!(upstream.seen().len(), 2);
}

#[tokio::test]
async fn in_log_mode_an_injection_is_forwarded_as_sent_and_logged() {
    let upstream = MockUpstream::recording().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&upstream.url(), "  injection: { mode: log }\n", "");
    // The real binary: its log is what an operator reads, and no other test writes to it.
    let binary = Binary::start(dir.path(), &config).await;
    let attack = "/Patient?name=x%27%20OR%20%271%27%3D%271";
    let response = binary
        .client(false)
        .request(get(&binary.url(attack)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.headers()["x-request-id"].clone();
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].uri.path_and_query().unwrap().as_str(), attack);

    let log = binary.stop().await;
    let security: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["target"] == "wardgate::security")
        .collect();
    assert_eq!(security.len(), 1, "{log:#?}");
    let finding = &security[0];
    assert_eq!(
        finding["message"],
        "injection pattern let through (injection.mode: log)"
    );
    assert_eq!(finding["level"], "WARN");
    assert_eq!(finding["request_id"], request_id.to_str().unwrap());
    assert_eq!(finding["code"], "WG-INJ-001");
    assert_eq!(finding["field"], "query:name");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_policy_headers() {
    let upstream = MockUpstream::recording().await;
    let text = config(&upstream.url(), "  server_names: [localhost]\n", "")
        + "rate_limits:\n  per_client: { requests: 1, per: 60s, burst: 2 }\n";
    let gateway = TestGateway::start(&text).await;
    let client = gateway.client(false);
    for _ in 0..2 {
        let response = client.request(get(&gateway.url("/a"))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = client.request(get(&gateway.url("/a"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let headers = response.headers().clone();
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(headers["ratelimit-policy"], "\"client\";q=1;w=60");
    assert!(
        headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"client\";r=0;t="),
        "{headers:?}"
    );
    assert!(body_text(response).await.contains("WG-RATE-001"));
    assert_eq!(
        upstream.seen().len(),
        2,
        "the refused request reached the upstream"
    );
}

#[tokio::test]
async fn an_http2_uri_over_the_request_line_limit_gets_414() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(
        &(simple_config(&upstream.url()) + "server:\n  max_request_line: 1KiB\n"),
    )
    .await;
    let long = format!("/a?q={}", "x".repeat(2000));
    let response = gateway
        .client(true)
        .request(get(&gateway.url(&long)))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::URI_TOO_LONG);
    assert!(body_text(response).await.contains("WG-REQ-004"));
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn refusals_are_counted_by_code() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(
        &upstream.url(),
        "  server_names: [localhost]\n",
        "",
    ))
    .await;
    raw_exchange(
        &gateway,
        b"GET /a/../b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    raw_exchange(
        &gateway,
        b"GET /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    )
    .await;
    let metrics =
        metrics_containing(&gateway, r#"wardgate_refusals_total{code="WG-PATH-005"} 1"#).await;
    assert!(
        metrics.contains(r#"wardgate_refusals_total{code="WG-PATH-005"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wardgate_refusals_total{code="WG-FRAME-014"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_host_header_that_disagrees_with_the_target_is_not_forwarded() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(
        &upstream.url(),
        "  server_names: [localhost]\n",
        "",
    ))
    .await;
    let raw =
        b"GET https://localhost/a HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(&gateway, raw).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream.seen()[0].headers["x-forwarded-host"], "localhost");
    let raw =
        b"GET https://evil.example/a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(&gateway, raw).await;
    assert!(answer.contains("WG-HOST-001"), "{answer}");
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn the_login_limit_counts_attempts_not_the_pages_own_assets() {
    let upstream = MockUpstream::recording().await;
    let text = config(&upstream.url(), "  server_names: [localhost]\n", "")
        + "auth:\n  login_rate_limit:\n    per_client: { requests: 1, per: 60s, burst: 2 }\n";
    let gateway = TestGateway::start(&text).await;
    let client = gateway.client(false);
    let login = || {
        Request::builder()
            .method(Method::POST)
            .uri(gateway.url("/.wardgate/api/login"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(r#"{"user":"nobody","password":"wrong"}"#))
            .unwrap()
    };
    for _ in 0..2 {
        let response = client.request(login()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = client.request(login()).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(body_text(response).await.contains("WG-RATE-001"));
    // The login page itself is an attempt's first step: limited too, as a page.
    let page = client
        .request(get(&gateway.url("/.wardgate/login")))
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
    // Its stylesheet and script are not.
    for asset in ["style.css", "webauthn.js"].repeat(3) {
        let url = gateway.url(&format!("/.wardgate/assets/{asset}"));
        let response = client.request(get(&url)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
}
