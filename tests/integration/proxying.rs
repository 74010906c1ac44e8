//! Forwarding: what reaches the upstream, and what comes back.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

#[tokio::test]
async fn method_path_query_headers_and_body_arrive_exactly() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let client = gateway.client(false);
    let request = Request::post(gateway.url("/api/patients/7/notes?draft=1&q=a%20b&tag=x&tag=y"))
        .header("content-type", "application/fhir+json")
        .header("x-custom", "kept")
        .header("x-custom", "twice")
        .body(full(
            r#"{"resourceType":"Observation","note":"O'Brien <b>"}"#,
        ))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "recorded");

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(seen.uri.path(), "/api/patients/7/notes");
    assert_eq!(seen.uri.query(), Some("draft=1&q=a%20b&tag=x&tag=y"));
    assert_eq!(seen.headers["content-type"], "application/fhir+json");
    let custom: Vec<_> = seen.headers.get_all("x-custom").iter().collect();
    assert_eq!(custom, ["kept", "twice"]);
    assert_eq!(
        seen.body,
        Bytes::from_static(br#"{"resourceType":"Observation","note":"O'Brien <b>"}"#)
    );
    assert_eq!(seen.headers["host"], upstream.addr.to_string());
    assert_eq!(
        seen.headers["x-forwarded-host"],
        format!("localhost:{}", gateway.https.port())
    );
}

#[tokio::test]
async fn every_method_is_forwarded_as_sent() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let client = gateway.client(false);
    for method in ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"] {
        let request = Request::builder()
            .method(method)
            .uri(gateway.url("/m"))
            .body(full(""))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method}");
    }
    let methods: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.method.to_string())
        .collect();
    assert_eq!(
        methods,
        ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    );
}

const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 100;

#[tokio::test]
async fn a_100_mib_upload_streams_through() {
    let (first_chunk_tx, first_chunk_rx) = tokio::sync::oneshot::channel::<()>();
    let first_chunk_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(first_chunk_tx)));
    let upstream = MockUpstream::start(move |request: Request<Incoming>| {
        let first_chunk_tx = first_chunk_tx.clone();
        async move {
            let mut body = request.into_body();
            let mut hasher = Sha256::new();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    total += data.len();
                    hasher.update(&data);
                    if let Some(tx) = first_chunk_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
            }
            Response::new(full(format!("{total} {:x}", hasher.finalize())))
        }
    })
    .await;
    let gateway = TestGateway::start(
        &(simple_config(&upstream.url()) + "sanitize:\n  max_body_size: 200MiB\n"),
    )
    .await;
    let client = gateway.client(false);
    let (mut sender, body) =
        http_body_util::channel::Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(4);
    let request = Request::post(gateway.url("/upload"))
        .body(body.boxed())
        .unwrap();
    let response = tokio::spawn(client.request(request));

    let chunk = Bytes::from(vec![0x5a_u8; CHUNK]);
    let mut expected = Sha256::new();
    sender.send_data(chunk.clone()).await.unwrap();
    expected.update(&chunk);
    // The upstream has the first MiB while the client still holds the other 99: the gateway
    // streams instead of buffering (a buffering gateway would deadlock here and time out).
    tokio::time::timeout(Duration::from_secs(30), first_chunk_rx)
        .await
        .unwrap()
        .unwrap();
    for _ in 1..CHUNKS {
        sender.send_data(chunk.clone()).await.unwrap();
        expected.update(&chunk);
    }
    drop(sender);
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        body_text(response).await,
        format!("{} {:x}", CHUNK * CHUNKS, expected.finalize())
    );
}

#[tokio::test]
async fn a_100_mib_download_streams_through() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let upstream = MockUpstream::start(move |_request: Request<Incoming>| {
        let mut release_rx = release_rx.clone();
        async move {
            let (mut sender, body) = http_body_util::channel::Channel::<
                Bytes,
                Box<dyn std::error::Error + Send + Sync>,
            >::new(2);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![0xa5_u8; CHUNK]);
                sender.send_data(chunk.clone()).await.unwrap();
                // The rest only once the client has seen the first chunk.
                let _ = release_rx.wait_for(|released| *released).await;
                for _ in 1..CHUNKS {
                    if sender.send_data(chunk.clone()).await.is_err() {
                        return;
                    }
                }
            });
            Response::new(body.boxed())
        }
    })
    .await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let response = gateway
        .client(false)
        .request(get(&gateway.url("/download")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut total = 0usize;
    while total < CHUNK {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        total += frame.into_data().map_or(0, |d| d.len());
    }
    release_tx.send(true).unwrap();
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().into_data().map_or(0, |d| d.len());
    }
    assert_eq!(total, CHUNK * CHUNKS);
}

#[tokio::test]
async fn hop_by_hop_and_spoofed_forwarding_headers_never_reach_the_upstream() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let raw = "GET /hdr HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, X-Hop-Secret\r\nX-Hop-Secret: 1\r\n\
Keep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
Trailer: X-Sum\r\nUpgrade: h2c\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n\
X-Forwarded-Proto: http\r\nForwarded: for=6.6.6.6;proto=http\r\nX-Request-Id: forged-id\r\nX-Kept: yes\r\n\
Connection: close\r\n\r\n";
    let answer = raw_exchange(&gateway, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = upstream.seen();
    let headers = &seen[0].headers;
    for gone in [
        "x-hop-secret",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the upstream: {headers:?}"
        );
    }
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-host"], "localhost");
    assert_eq!(headers["forwarded"], "for=127.0.0.1;proto=https");
    let request_id = headers["x-request-id"].to_str().unwrap();
    assert_ne!(request_id, "forged-id");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("x-request-id: {request_id}")),
        "{answer}"
    );
}

#[tokio::test]
async fn trusted_proxies_may_pass_on_the_client_address_and_request_id() {
    let upstream = MockUpstream::recording().await;
    let config =
        simple_config(&upstream.url()) + "forwarding:\n  trusted_proxies: [\"127.0.0.0/8\"]\n";
    let gateway = TestGateway::start(&config).await;
    let request = Request::get(gateway.url("/t"))
        .header("x-forwarded-for", "198.51.100.4")
        .header("x-request-id", "lb-1234")
        .body(full(""))
        .unwrap();
    let response = gateway.client(false).request(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "lb-1234");
    let headers = &upstream.seen()[0].headers;
    assert_eq!(headers["x-forwarded-for"], "198.51.100.4, 127.0.0.1");
    assert_eq!(headers["x-request-id"], "lb-1234");
}

#[tokio::test]
async fn http2_is_negotiated_through_alpn() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let client = gateway.client(true);
    let request = Request::put(gateway.url("/h2/resource?x=1"))
        .body(full("over h2"))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let seen = &upstream.seen()[0];
    assert_eq!(seen.uri.path(), "/h2/resource");
    assert_eq!(seen.uri.query(), Some("x=1"));
    assert_eq!(seen.body, Bytes::from_static(b"over h2"));
    assert_eq!(
        seen.headers["x-forwarded-host"],
        format!("localhost:{}", gateway.https.port())
    );

    let http1 = gateway
        .client(false)
        .request(get(&gateway.url("/h1")))
        .await
        .unwrap();
    assert_eq!(http1.version(), Version::HTTP_11);
}

#[tokio::test]
async fn responses_are_hardened() {
    let upstream = MockUpstream::ok(r#"{"id":"7"}"#).await;
    let config = config_with(
        &format!("  backend: {{ url: \"{}\" }}", upstream.url()),
        "  - { path: /api/patients/**, upstream: backend, auth: none, patient_data: true }\n\
         \x20 - path: /public/*\n    upstream: backend\n    auth: none\n    response_headers: { Content-Security-Policy: \"default-src 'none'\" }",
        "",
    );
    let gateway = TestGateway::start(&config).await;
    let client = gateway.client(false);
    for path in ["/api/patients/7", "/public/logo", "/missing"] {
        let response = client.request(get(&gateway.url(path))).await.unwrap();
        let headers = response.headers();
        assert_eq!(
            headers["strict-transport-security"], "max-age=31536000; includeSubDomains",
            "{path}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(!headers.contains_key("server"), "{path}");
        assert!(!headers.contains_key("x-powered-by"), "{path}");
        assert_eq!(headers["x-request-id"].len(), 32);
    }
    let patient = client
        .request(get(&gateway.url("/api/patients/7")))
        .await
        .unwrap();
    assert_eq!(patient.headers()["cache-control"], "no-store");
    let public = client
        .request(get(&gateway.url("/public/logo")))
        .await
        .unwrap();
    assert!(!public.headers().contains_key("cache-control"));
    assert_eq!(
        public.headers()["content-security-policy"],
        "default-src 'none'"
    );
}

#[tokio::test]
async fn upstream_failures_answer_502_and_504_without_detail() {
    // A port held bound but never listening: connections to it are refused, and
    // no other test can take it while this one runs.
    let closed_socket = tokio::net::TcpSocket::new_v4().unwrap();
    closed_socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = closed_socket.local_addr().unwrap();
    let silent = MockUpstream::start(|_request: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Response::new(full(""))
    })
    .await;
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = garbage.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"SSH-2.0-OpenSSH_9.2 internal-host-7 secret detail\r\n\r\n")
                .await;
        }
    });
    let config = config_with(
        &format!(
            "  closed: {{ url: \"http://{closed}\" }}\n  silent: {{ url: \"{}\", response_timeout: 300ms }}\n  garbage: {{ url: \"http://{garbage_addr}\" }}",
            silent.url()
        ),
        "  - { path: /closed/**, upstream: closed, auth: none }\n  - { path: /silent/**, upstream: silent, auth: none }\n  - { path: /garbage/**, upstream: garbage, auth: none }",
        "",
    );
    let gateway = TestGateway::start(&config).await;
    let client = gateway.client(false);
    for (path, status, code) in [
        ("/closed/x", StatusCode::BAD_GATEWAY, "WG-UP-001"),
        ("/silent/x", StatusCode::GATEWAY_TIMEOUT, "WG-UP-002"),
        ("/garbage/x", StatusCode::BAD_GATEWAY, "WG-UP-003"),
    ] {
        // Well before the default 30 s: the configured 300 ms response timeout applies.
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(get(&gateway.url(path))),
        )
        .await
        .unwrap_or_else(|_| panic!("{path}: the configured timeout was not applied"))
        .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = body_text(response).await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], code, "{path}: {body}");
        assert_eq!(json.as_object().unwrap().len(), 2, "{body}");
        for leak in [
            "127.0.0.1",
            "OpenSSH",
            "secret",
            "refused",
            "error trying",
            "hyper",
        ] {
            assert!(!body.contains(leak), "{path} leaked {leak}: {body}");
        }
    }
    let metrics = body_text(
        plain_client()
            .request(get(&gateway.admin_url("/metrics")))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        metrics.contains(r#"wardgate_upstream_errors_total{upstream="closed",kind="WG-UP-001"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wardgate_upstream_errors_total{upstream="silent",kind="WG-UP-002"} 1"#),
        "{metrics}"
    );
}

/// The path tricks of the issue: none of them may reach a route it should not.
#[tokio::test]
async fn path_tricks_never_reach_another_route() {
    let public = MockUpstream::recording().await;
    let config = config_with(
        &format!("  public: {{ url: \"{}\" }}", public.url()),
        "  - { path: /public/**, upstream: public, auth: none }",
        "",
    );
    let gateway = TestGateway::start(&config).await;
    // Dot-segments are refused outright (no client sends them); what normalizes cleanly is
    // matched as normalized, and the query never takes part.
    for (target, status, code) in [
        ("/public/../admin", "400", "WG-PATH-005"),
        ("/public/%2e%2e/admin", "400", "WG-PATH-005"),
        ("/public/%2E%2E/admin", "400", "WG-PATH-005"),
        ("/public/.%2e/admin", "400", "WG-PATH-005"),
        ("/public/./../../admin", "400", "WG-PATH-005"),
        ("/public/%252e%252e/admin", "400", "WG-PATH-006"),
        ("/public%2f..%2fadmin", "400", "WG-PATH-002"),
        ("//admin", "404", "WG-ROUTE-001"),
        ("/admin?x=/public", "404", "WG-ROUTE-001"),
    ] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(&gateway, raw.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{target}: {answer}"
        );
        assert!(answer.contains(code), "{target}: {answer}");
    }
    assert!(public.seen().is_empty(), "{:?}", public.seen());

    // The normalized path is what the upstream gets, and the query is left alone.
    let raw = "GET /public/a//c//d/%7Euser?next=/admin/x%2Fy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(&gateway, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = public.seen();
    assert_eq!(seen[0].uri.path(), "/public/a/c/d/~user");
    assert_eq!(seen[0].uri.query(), Some("next=/admin/x%2Fy"));
}

#[tokio::test]
async fn routes_pick_the_most_specific_and_rewrite_prefixes() {
    let general = MockUpstream::recording().await;
    let labs = MockUpstream::recording().await;
    let config = config_with(
        &format!(
            "  general: {{ url: \"{}\" }}\n  labs: {{ url: \"{}/lab-system\" }}",
            general.url(),
            labs.url()
        ),
        "  - { path: /api/**, upstream: general, auth: none }\n  - { path: \"/api/patients/{patient}/labs/**\", upstream: labs, auth: none, rewrite: { prefix: /api, to: /v2 } }",
        "",
    );
    let gateway = TestGateway::start(&config).await;
    let client = gateway.client(false);
    for path in [
        "/api/patients/9/labs/2024?x=1",
        "/api/patients/9/notes",
        "/api",
    ] {
        let response = client.request(get(&gateway.url(path))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let labs_seen = labs.seen();
    assert_eq!(labs_seen.len(), 1);
    assert_eq!(
        labs_seen[0].uri.to_string(),
        "/lab-system/v2/patients/9/labs/2024?x=1"
    );
    let general_paths: Vec<String> = general
        .seen()
        .iter()
        .map(|s| s.uri.path().to_owned())
        .collect();
    assert_eq!(general_paths, ["/api/patients/9/notes", "/api"]);
}

#[tokio::test]
async fn unknown_hosts_and_paths_get_the_gateways_own_404() {
    let upstream = MockUpstream::recording().await;
    let config = config_with(
        &format!("  backend: {{ url: \"{}\" }}", upstream.url()),
        "  - { host: ehr.example.org, path: /**, upstream: backend, auth: none }",
        "",
    );
    let gateway = TestGateway::start(&config).await;
    let answer = raw_exchange(
        &gateway,
        b"GET /x HTTP/1.1\r\nHost: other.example.org\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = raw_exchange(
        &gateway,
        b"GET /x HTTP/1.1\r\nHost: EHR.example.org:8443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = raw_exchange(&gateway, b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("WG-REQ-002"), "{answer}");
    let answer = raw_exchange(
        &gateway,
        b"GET /x%zz HTTP/1.1\r\nHost: ehr.example.org\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("WG-PATH-001"), "{answer}");
    let answer = raw_exchange(
        &gateway,
        b"GET * HTTP/1.1\r\nHost: ehr.example.org\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("WG-REQ-001"), "{answer}");
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn websocket_upgrades_pass_only_on_routes_that_allow_them() {
    let upstream = MockUpstream::start(|mut request: Request<Incoming>| async move {
        let wants_upgrade = request
            .headers()
            .get("upgrade")
            .is_some_and(|v| v == "websocket");
        if !wants_upgrade {
            return Response::new(full("no upgrade asked"));
        }
        let on_upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            let mut buf = [0u8; 64];
            let n = io.read(&mut buf).await.unwrap();
            io.write_all(&[b"echo:".as_slice(), &buf[..n]].concat())
                .await
                .unwrap();
            io.flush().await.unwrap();
        });
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        response
            .headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        response
    })
    .await;
    let config = config_with(
        &format!("  backend: {{ url: \"{}\" }}", upstream.url()),
        "  - { path: /ws, upstream: backend, auth: none, websocket: true }\n  - { path: /plain, upstream: backend, auth: none }",
        "",
    );
    let gateway = TestGateway::start(&config).await;
    let handshake = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let mut tls = gateway.raw_tls().await;
    tls.write_all(handshake("/ws").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 9];
    tls.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"echo:ping");

    let answer = raw_exchange(
        &gateway,
        (handshake("/plain").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")).as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("no upgrade asked"), "{answer}");
}

#[tokio::test]
async fn the_request_log_counts_in_metrics_by_route_and_status() {
    let upstream = MockUpstream::ok("fine").await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let client = gateway.client(false);
    for _ in 0..3 {
        let response = client.request(get(&gateway.url("/a"))).await.unwrap();
        body_text(response).await;
    }
    // The record closes when the body is done; give the connection task a moment to drop it.
    let metrics = metrics_containing(
        &gateway,
        r#"wardgate_requests_total{route="/**",status="200"} 3"#,
    )
    .await;
    assert!(
        metrics.contains(r#"wardgate_requests_total{route="/**",status="200"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("wardgate_request_duration_seconds_bucket{route=\"/**\""),
        "{metrics}"
    );
    assert!(metrics.contains("wardgate_open_connections"), "{metrics}");
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_off() {
    let upstream = MockUpstream::start(|_request: Request<Incoming>| async move {
        let (mut sender, body) = http_body_util::channel::Channel::<
            Bytes,
            Box<dyn std::error::Error + Send + Sync>,
        >::new(1);
        tokio::spawn(async move {
            sender
                .send_data(Bytes::from_static(b"first part, then nothing"))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(sender);
        });
        Response::new(body.boxed())
    })
    .await;
    let config = config_with(
        &format!(
            "  backend: {{ url: \"{}\", body_idle_timeout: 200ms }}",
            upstream.url()
        ),
        "  - { path: /**, upstream: backend, auth: none }",
        "",
    );
    let gateway = TestGateway::start(&config).await;
    let response = gateway
        .client(false)
        .request(get(&gateway.url("/stall")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
        .await
        .unwrap();
    assert!(
        body.is_err(),
        "a stalled body must end in an error, not look complete"
    );
}
