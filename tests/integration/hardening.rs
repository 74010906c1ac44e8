//! The holes an outside review found, each sent again over real TLS: the refusal it must get
//! now, and, where something must never reach a back end, a recording (or CGI-style) upstream
//! that proves it did not.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::harness::*;

/// A bound well above every short timeout these tests configure, and well below the defaults
/// they replace: a test that waits this long has seen the setting ignored.
const PATIENCE: Duration = Duration::from_secs(10);

fn with_server(url: &str, server: &str) -> String {
    format!("{}server:\n{server}", simple_config(url))
}

/// A request from the typed client; the answer's status and body.
async fn send(
    gateway: &TestGateway,
    http2: bool,
    request: Request<TestBody>,
) -> (StatusCode, String) {
    let response = gateway.client(http2).request(request).await.unwrap();
    let status = response.status();
    (status, body_text(response).await)
}

fn request(gateway: &TestGateway, method: Method, path: &str) -> http::request::Builder {
    Request::builder().method(method).uri(gateway.url(path))
}

fn assert_code(answer: &(StatusCode, String), status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert!(answer.1.contains(code), "{code} missing: {}", answer.1);
}

/// A TLS connection to the gateway offering `alpn`, from the loopback address `from`.
async fn tls_from(
    gateway: &TestGateway,
    from: &str,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let tcp = socket.connect(gateway.https).await?;
    let mut config = client_tls(&gateway.cert_path());
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Reads until the peer closes; what it sent.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the gateway kept the connection open");
    out
}

// 1. Identity headers spoofed through `_`.

const SPOOFS: [(&str, &str); 6] = [
    ("X_Wardgate_User", "superuser"),
    ("x_wardgate-roles", "admin"),
    ("X-Forwarded_User", "superuser"),
    ("X_Remote_User", "superuser"),
    ("X-Auth-Request_User", "superuser"),
    ("X_Custom_Identity", "superuser"),
];

#[tokio::test]
async fn header_names_with_underscores_are_refused_on_http1_and_h2() {
    let upstream = MockUpstream::cgi().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    for http2 in [false, true] {
        for (name, value) in SPOOFS {
            let sent = request(&gateway, Method::GET, "/public/x")
                .header(name, value)
                .body(full(""))
                .unwrap();
            let answer = send(&gateway, http2, sent).await;
            assert_code(&answer, StatusCode::BAD_REQUEST, "WG-HDR-001");
        }
    }
    assert_eq!(
        upstream.seen().len(),
        0,
        "a refused request reached the back end"
    );
}

#[tokio::test]
async fn with_underscores_allowed_no_spelling_of_an_identity_header_reaches_a_cgi_back_end() {
    let upstream = MockUpstream::cgi().await;
    let gateway = TestGateway::start(&crate::sessions::config(&upstream.url()).replace(
        "auth:\n",
        "sanitize: { allow_underscores_in_headers: true }\nforwarding: { strip_headers: [X-Custom-Identity] }\nauth:\n",
    ))
    .await;
    let (_, codes) = crate::sessions::enroll(&gateway, "alice").await;
    let token = crate::sessions::cached_session(&gateway, "alice", &codes[0]).await;
    for http2 in [false, true] {
        for (path, bearer) in [("/public/x", None), ("/api/records/1", Some(&token))] {
            let mut sent = request(&gateway, Method::GET, path);
            for (name, value) in SPOOFS {
                sent = sent.header(name, value);
            }
            if let Some(token) = bearer {
                sent = sent.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let (status, body) = send(&gateway, http2, sent.body(full("")).unwrap()).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let environ: Value = serde_json::from_str(&body).unwrap();
            for key in [
                "HTTP_X_FORWARDED_USER",
                "HTTP_X_REMOTE_USER",
                "HTTP_X_AUTH_REQUEST_USER",
                "HTTP_X_CUSTOM_IDENTITY",
            ] {
                assert!(
                    environ.get(key).is_none(),
                    "{key} reached the back end: {environ}"
                );
            }
            let (user, roles) = match bearer {
                Some(_) => (Some("alice"), Some("physician")),
                None => (None, None),
            };
            assert_eq!(environ["HTTP_X_WARDGATE_USER"].as_str(), user, "{environ}");
            assert_eq!(
                environ["HTTP_X_WARDGATE_ROLES"].as_str(),
                roles,
                "{environ}"
            );
        }
    }
    // The session's first request, then the four above.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 5);
    for request in seen {
        assert!(
            request
                .headers
                .keys()
                .all(|name| !name.as_str().contains('_')),
            "{:?}",
            request.headers
        );
    }
}

// 3. An empty or malformed admin token.

#[tokio::test]
async fn an_empty_short_or_malformed_admin_token_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let upstream = MockUpstream::ok("ok").await;
    for token in ["", "\n", "abc", &"g".repeat(64), &"a".repeat(63)] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = data.join("admin.token");
        std::fs::write(&file, token).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, simple_config(&upstream.url())).unwrap();
        let error = start_error(&config).await;
        assert!(
            error.contains("is not an admin token"),
            "{token:?}: {error}"
        );
    }
}

#[tokio::test]
async fn a_new_admin_token_is_private_whole_and_an_empty_presented_token_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let upstream = MockUpstream::ok("ok").await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let file = gateway.dir.path().join("data/admin.token");
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    for presented in ["Bearer ", "Bearer", ""] {
        let mut call = Request::get(gateway.admin_url("/admin/users"));
        if !presented.is_empty() {
            call = call.header(header::AUTHORIZATION, presented);
        }
        let response = plain_client()
            .request(call.body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{presented:?}");
        assert!(body_text(response).await.contains("WG-ADMIN-003"));
    }
}

// 4. HTTP/2 connections that never time out, and one address taking every slot.

#[tokio::test]
async fn h2_connections_without_a_request_are_closed_after_the_head_deadline() {
    let upstream = MockUpstream::ok("ok").await;
    let gateway = TestGateway::start(&with_server(
        &upstream.url(),
        "  max_connections: 4\n  header_read_timeout: 1s\n",
    ))
    .await;
    // Four silent h2 connections: before, they held every slot for ever.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tls_from(&gateway, "127.0.0.1", b"h2").await.unwrap());
    }
    for mut connection in silent {
        read_until_closed(&mut connection).await;
    }
    // The slots are free again: a real request is served.
    let answer = send(
        &gateway,
        true,
        request(&gateway, Method::GET, "/x").body(full("")).unwrap(),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_its_last_request() {
    let upstream = MockUpstream::ok("ok").await;
    let gateway =
        TestGateway::start(&with_server(&upstream.url(), "  header_read_timeout: 1s\n")).await;
    let tls = tls_from(&gateway, "127.0.0.1", b"h2").await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let closed = tokio::spawn(connection);
    let response = sender
        .send_request(request(&gateway, Method::GET, "/x").body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_text(response).await;
    // The gateway says GOAWAY and closes; the client's connection task then ends.
    let ended = tokio::time::timeout(PATIENCE, closed).await;
    assert!(ended.is_ok(), "the idle h2 connection stayed open");
}

#[tokio::test]
async fn one_address_may_hold_only_its_share_of_connections() {
    let upstream = MockUpstream::ok("ok").await;
    let gateway = TestGateway::start(&with_server(
        &upstream.url(),
        "  max_connections_per_address: 2\n",
    ))
    .await;
    let _first = tls_from(&gateway, "127.0.0.2", b"http/1.1").await.unwrap();
    let _second = tls_from(&gateway, "127.0.0.2", b"http/1.1").await.unwrap();
    assert!(tls_from(&gateway, "127.0.0.2", b"http/1.1").await.is_err());
    // Another address is not affected.
    let mut other = tls_from(&gateway, "127.0.0.3", b"http/1.1").await.unwrap();
    other
        .write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_until_closed(&mut other).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let metrics = metrics_containing(&gateway, "per_address_limit").await;
    assert!(
        metrics.contains(r#"wardgate_connections_ended_total{reason="per_address_limit"} 1"#),
        "{metrics}"
    );
}

// 5. The plain-HTTP listeners and file descriptors.

#[tokio::test]
async fn side_listeners_hold_only_their_connection_limit_and_drop_idle_clients() {
    let upstream = MockUpstream::ok("ok").await;
    let gateway = TestGateway::start(&with_server(
        &upstream.url(),
        "  side_max_connections: 2\n  header_read_timeout: 1s\n",
    ))
    .await;
    let admin = gateway.admin.unwrap();
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(admin).await.unwrap());
    }
    // The listener stops accepting; the gateway's HTTPS side is untouched.
    let answer = send(
        &gateway,
        false,
        request(&gateway, Method::GET, "/x").body(full("")).unwrap(),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    // The idle ones are dropped at the head deadline; then a third client is served.
    for mut connection in idle {
        read_until_closed(&mut connection).await;
    }
    let health = tokio::time::timeout(
        PATIENCE,
        plain_client().request(get(&gateway.admin_url("/healthz"))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

// 6. A client that stops reading.

/// An upstream that streams `size` bytes and reports when the gateway dropped its body.
pub(crate) async fn endless_upstream(
    size: usize,
) -> (MockUpstream, tokio::sync::mpsc::Receiver<()>) {
    let (dropped_tx, dropped) = tokio::sync::mpsc::channel::<()>(16);
    let upstream = MockUpstream::start(move |_request: Request<Incoming>| {
        let dropped_tx = dropped_tx.clone();
        async move {
            let (mut body_tx, body) = http_body_util::channel::Channel::<
                Bytes,
                Box<dyn std::error::Error + Send + Sync>,
            >::new(1);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let mut sent = 0;
                while sent < size {
                    if body_tx.send_data(chunk.clone()).await.is_err() {
                        break;
                    }
                    sent += chunk.len();
                }
                // The gateway went away before taking everything (or it took it all).
                if sent < size {
                    let _ = dropped_tx.send(()).await;
                }
            });
            Response::new(body.boxed())
        }
    })
    .await;
    (upstream, dropped)
}

/// Waits for the gateway to give up an [`endless_upstream`] response.
async fn assert_released(dropped: &mut tokio::sync::mpsc::Receiver<()>) {
    let gave_up = tokio::time::timeout(PATIENCE, dropped.recv()).await;
    assert!(
        gave_up.is_ok(),
        "the upstream response was held past send_timeout"
    );
}

#[tokio::test]
async fn an_http1_client_that_stops_reading_loses_its_connection_and_its_upstream() {
    let (upstream, mut dropped) = endless_upstream(64 << 20).await;
    let gateway = TestGateway::start(&with_server(&upstream.url(), "  send_timeout: 1s\n")).await;
    let mut tls = gateway.raw_tls().await;
    tls.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Read nothing: socket buffers fill, then the gateway's writes block.
    assert_released(&mut dropped).await;
    drop(tls);
}

#[tokio::test]
async fn an_h2_client_that_withholds_flow_control_loses_its_connection_and_its_upstream() {
    let (upstream, mut dropped) = endless_upstream(64 << 20).await;
    let gateway = TestGateway::start(&with_server(&upstream.url(), "  send_timeout: 1s\n")).await;
    let tls = tls_from(&gateway, "127.0.0.1", b"h2").await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            request(&gateway, Method::GET, "/big")
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The connection stays readable (pings are answered) but this stream's window stays shut.
    assert_released(&mut dropped).await;
    drop(response);
}

#[tokio::test]
async fn one_client_may_hold_only_so_many_upstream_requests() {
    let (upstream, _dropped) = endless_upstream(64 << 20).await;
    let gateway = TestGateway::start(&with_server(
        &upstream.url(),
        "  max_upstream_requests_per_client: 2\n",
    ))
    .await;
    let client = gateway.client(true);
    let first = client
        .request(
            request(&gateway, Method::GET, "/big")
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let second = client
        .request(
            request(&gateway, Method::GET, "/big")
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = send(
        &gateway,
        true,
        request(&gateway, Method::GET, "/big")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_code(&third, StatusCode::TOO_MANY_REQUESTS, "WG-RATE-003");
    // A response given up frees its slot.
    drop(first);
    let mut fourth = None;
    for _ in 0..50 {
        let response = client
            .request(
                request(&gateway, Method::GET, "/big")
                    .body(full(""))
                    .unwrap(),
            )
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            fourth = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        fourth.is_some(),
        "the slot of a dropped response never came back"
    );
    drop(second);
}

// 7. Headers that must appear once, 16. Content-Length, 17. closing after a refusal.

#[tokio::test]
async fn a_repeated_single_valued_header_is_refused_and_reaches_nobody() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    for repeated in [
        "Content-Type: application/json\r\nContent-Type: text/plain\r\n",
        "Host: localhost\r\n",
        "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n",
        "Cookie: a=1\r\nCookie: b=2\r\n",
        "X-HTTP-Method-Override: GET\r\nX-HTTP-Method-Override: DELETE\r\n",
    ] {
        let sent = format!(
            "POST /api/x HTTP/1.1\r\nHost: localhost\r\n{repeated}Content-Length: 2\r\n\r\n{{}}"
        );
        let answer = raw_exchange(&gateway, sent.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{repeated:?}: {answer}");
        assert!(answer.contains("WG-HDR-002"), "{repeated:?}: {answer}");
    }
    // HTTP/2 may split cookies over several fields: that is allowed there.
    let split = request(&gateway, Method::GET, "/api/x")
        .header(header::COOKIE, "a=1")
        .header(header::COOKIE, "b=2")
        .body(full(""))
        .unwrap();
    assert_eq!(send(&gateway, true, split).await.0, StatusCode::OK);
    let content_types = request(&gateway, Method::POST, "/api/x")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full("{}"))
        .unwrap();
    assert_code(
        &send(&gateway, true, content_types).await,
        StatusCode::BAD_REQUEST,
        "WG-HDR-002",
    );
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn content_length_reaches_the_back_end_only_as_the_gateway_counted_it() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    for length in ["0005", "010", "00"] {
        let sent = format!(
            "POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\nhello"
        );
        let answer = raw_exchange(&gateway, sent.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{length}: {answer}");
        assert!(answer.contains("WG-FRAME-013"), "{length}: {answer}");
    }
    assert_eq!(upstream.seen().len(), 0);
    let padded = request(&gateway, Method::POST, "/api/x")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, "0005")
        .body(full("hello"))
        .unwrap();
    let answer = send(&gateway, true, padded).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers[header::CONTENT_LENGTH], "5");
    assert_eq!(&seen[0].body[..], b"hello");
}

#[tokio::test]
async fn after_refusing_a_malformed_request_or_one_with_a_body_http1_closes() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config_with(
        &format!("  backend: {{ url: \"{}\" }}", upstream.url()),
        "  - { path: /read/**, upstream: backend, auth: none, sanitize: { methods: [GET] } }\n  - { path: /**, upstream: backend, auth: none }",
        "",
    ))
    .await;
    let next = "GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for (first, status) in [
        ("GET ! HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(), "400"),
        (
            "GET /a/%2e%2e;/b HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
            "400",
        ),
        (
            "POST /read/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
            "405",
        ),
        (
            "POST /read/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n".to_owned(),
            "405",
        ),
    ] {
        let answer = raw_exchange(&gateway, format!("{first}{next}").as_bytes()).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{first:?}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{first:?}: {answer}");
    }
    assert_eq!(
        upstream.seen().len(),
        0,
        "a request after a refusal was forwarded"
    );
    // A refusal that leaves the framing certain keeps the connection: a 404 on the own API.
    let answer = raw_exchange(
        &gateway,
        format!("GET /.wardgate/nothing HTTP/1.1\r\nHost: localhost\r\n\r\n{next}").as_bytes(),
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 2, "{answer}");
    assert_eq!(upstream.seen().len(), 1);
}

// 8. `..;` segments, 9. duplicate JSON keys, 15. multipart and method overrides.

#[tokio::test]
async fn dot_segments_with_path_parameters_are_refused() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    for path in [
        "/public/..;/admin",
        "/public/..;jsessionid=1/admin",
        "/a/.;/b",
        "/a/%2e%2e;x/b",
        "/a/%2E;/b",
        "/a/..%3Bx/b",
    ] {
        let answer = send(
            &gateway,
            false,
            request(&gateway, Method::GET, path).body(full("")).unwrap(),
        )
        .await;
        assert_code(&answer, StatusCode::BAD_REQUEST, "WG-PATH-005");
    }
    assert_eq!(upstream.seen().len(), 0);
    let kept = send(
        &gateway,
        false,
        request(&gateway, Method::GET, "/a/b;jsessionid=1/c")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(kept.0, StatusCode::OK);
    assert_eq!(upstream.seen()[0].uri.path(), "/a/b;jsessionid=1/c");
}

fn post_body(
    gateway: &TestGateway,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Request<TestBody> {
    request(gateway, Method::POST, "/api/x")
        .header(header::CONTENT_TYPE, content_type)
        .body(full(body.into()))
        .unwrap()
}

#[tokio::test]
async fn json_objects_that_repeat_a_key_are_refused() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    for body in [
        r#"{"note":"fine","note":"1' OR '1'='1"}"#,
        r#"{"resourceType":"Patient","name":[{"family":"A","family":"B"}]}"#,
        r#"[{"a":1},{"b":2,"b":3}]"#,
    ] {
        let answer = send(
            &gateway,
            false,
            post_body(&gateway, "application/json", body),
        )
        .await;
        assert_code(&answer, StatusCode::BAD_REQUEST, "WG-BODY-007");
    }
    let fine = send(
        &gateway,
        false,
        post_body(
            &gateway,
            "application/fhir+json",
            r#"{"a":{"x":1},"b":{"x":2}}"#,
        ),
    )
    .await;
    assert_eq!(fine.0, StatusCode::OK);
    assert_eq!(upstream.seen().len(), 1);
}

fn multipart(parts: &[(&str, Option<&str>, &str)]) -> String {
    let mut body = String::new();
    for (name, filename, value) in parts {
        body.push_str("--XyZ\r\nContent-Disposition: form-data; name=\"");
        body.push_str(name);
        body.push('"');
        if let Some(filename) = filename {
            body.push_str(&format!(
                "; filename=\"{filename}\"\r\nContent-Type: text/plain"
            ));
        }
        body.push_str("\r\n\r\n");
        body.push_str(value);
        body.push_str("\r\n");
    }
    body.push_str("--XyZ--\r\n");
    body
}

const MULTIPART: &str = "multipart/form-data; boundary=XyZ";

#[tokio::test]
async fn multipart_fields_are_scanned_and_malformed_multipart_is_refused() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let sqli = multipart(&[("note", None, "fine"), ("q", None, "1' OR '1'='1")]);
    let answer = send(&gateway, false, post_body(&gateway, MULTIPART, sqli)).await;
    assert_code(&answer, StatusCode::BAD_REQUEST, "WG-INJ-001");
    let traversal = multipart(&[("upload", Some("../../etc/passwd"), "data")]);
    let answer = send(&gateway, false, post_body(&gateway, MULTIPART, traversal)).await;
    assert_code(&answer, StatusCode::BAD_REQUEST, "WG-INJ-003");
    for (content_type, body) in [
        ("multipart/form-data", multipart(&[("a", None, "1")])),
        (
            "multipart/form-data; boundary=\"\"",
            multipart(&[("a", None, "1")]),
        ),
        (
            MULTIPART,
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n".to_owned(),
        ),
        (
            MULTIPART,
            "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ--"
                .to_owned(),
        ),
        (
            MULTIPART,
            "--XyZ\r\nContent-Type: text/plain\r\n\r\n1\r\n--XyZ--".to_owned(),
        ),
        (
            MULTIPART,
            "--XyZ\nContent-Disposition: form-data; name=\"a\"\n\n1\n--XyZ--".to_owned(),
        ),
    ] {
        let answer = send(
            &gateway,
            false,
            post_body(&gateway, content_type, body.clone()),
        )
        .await;
        assert_code(&answer, StatusCode::BAD_REQUEST, "WG-BODY-008");
    }
    assert_eq!(upstream.seen().len(), 0);
    // A file's contents are data: SQL in an uploaded text file passes, byte for byte.
    let upload = multipart(&[
        ("note", None, "lab result"),
        ("file", Some("q.sql"), "1' OR '1'='1"),
    ]);
    let answer = send(
        &gateway,
        false,
        post_body(&gateway, MULTIPART, upload.clone()),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(upstream.seen()[0].body, upload.as_bytes());
}

#[tokio::test]
async fn method_overrides_are_held_to_the_routes_methods_and_not_forwarded() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config_with(
        &format!("  backend: {{ url: \"{}\" }}", upstream.url()),
        "  - { path: /api/**, upstream: backend, auth: none, sanitize: { methods: [GET, POST] } }",
        "",
    ))
    .await;
    let override_with = |name: &str, value: &str| {
        request(&gateway, Method::POST, "/api/x")
            .header(name, value)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full("{}"))
            .unwrap()
    };
    for name in [
        "X-HTTP-Method-Override",
        "X-Method-Override",
        "X-HTTP-Method",
    ] {
        let answer = send(&gateway, false, override_with(name, "DELETE")).await;
        assert_code(&answer, StatusCode::METHOD_NOT_ALLOWED, "WG-METHOD-001");
        let answer = send(&gateway, false, override_with(name, "DE LETE")).await;
        assert_code(&answer, StatusCode::BAD_REQUEST, "WG-METHOD-002");
    }
    for path in ["/api/x?_method=DELETE", "/api/x?a=1&%5Fmethod=DELETE"] {
        let query = request(&gateway, Method::POST, path)
            .body(full(""))
            .unwrap();
        assert_code(
            &send(&gateway, false, query).await,
            StatusCode::METHOD_NOT_ALLOWED,
            "WG-METHOD-001",
        );
    }
    let form = post_body(
        &gateway,
        "application/x-www-form-urlencoded",
        "a=1&_method=delete",
    );
    assert_code(
        &send(&gateway, false, form).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "WG-METHOD-001",
    );
    let parts = multipart(&[("_method", None, "PUT")]);
    assert_code(
        &send(&gateway, false, post_body(&gateway, MULTIPART, parts)).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "WG-METHOD-001",
    );
    assert_eq!(upstream.seen().len(), 0);
    // An override to an allowed method passes, without the header.
    let answer = send(
        &gateway,
        false,
        override_with("X-HTTP-Method-Override", "GET"),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert!(seen[0].headers.get("x-http-method-override").is_none());
}

// 14. The redirect listener.

#[tokio::test]
async fn the_redirect_listener_names_only_the_gateways_own_hosts() {
    let upstream = MockUpstream::ok("ok").await;
    let config = simple_config(&upstream.url()).replace(
        "  admin: \"127.0.0.1:0\"",
        "  admin: \"127.0.0.1:0\"\n  http_redirect: \"127.0.0.1:0\"",
    ) + "sanitize: { server_names: [localhost, ehr.example.org] }\n";
    let gateway = TestGateway::start(&config).await;
    let redirect = gateway.redirect.unwrap();
    let ask = |host: &'static str| {
        Request::get(format!("http://{redirect}/api/x?y=1"))
            .header(header::HOST, host)
            .body(full(""))
            .unwrap()
    };
    let moved = plain_client()
        .request(ask("EHR.example.org"))
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        moved.headers()[header::LOCATION],
        format!("https://ehr.example.org:{}/api/x?y=1", gateway.https.port())
    );
    let foreign = plain_client().request(ask("evil.example")).await.unwrap();
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
    assert!(foreign.headers().get(header::LOCATION).is_none());
    assert!(body_text(foreign).await.contains("WG-HOST-001"));
}

// 18. The server's cipher order.

#[tokio::test]
async fn the_server_chooses_the_cipher_suite_strongest_first() {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    let upstream = MockUpstream::ok("ok").await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(gateway.cert_path()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    for (versions, weakest_first, expected) in [
        (
            &[&rustls::version::TLS13][..],
            vec![
                cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
            ],
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            &[&rustls::version::TLS12][..],
            vec![
                cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ],
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
    ] {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: weakest_first,
            ..default_provider()
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let tcp = TcpStream::connect(gateway.https).await.unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let chosen = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(chosen, expected);
    }
}

// 19. Gateway cookies from upstreams, a plain-HTTP admin listener, a readable TLS key.

#[tokio::test]
async fn an_upstream_cannot_plant_the_gateways_cookies() {
    let upstream = MockUpstream::start(|_request: Request<Incoming>| async move {
        let mut response = Response::new(full("ok"));
        for cookie in [
            "__Host-wardgate-session=wgs_planted; Path=/; Secure; HttpOnly",
            "__host-WARDGATE-csrf=planted; Path=/; Secure",
            "theme=dark; Path=/",
        ] {
            response
                .headers_mut()
                .append(header::SET_COOKIE, cookie.parse().unwrap());
        }
        response
    })
    .await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let response = gateway
        .client(false)
        .request(get(&gateway.url("/x")))
        .await
        .unwrap();
    let cookies: Vec<_> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies, ["theme=dark; Path=/"]);
}

#[tokio::test]
async fn a_plain_http_admin_listener_off_loopback_must_be_spelled_out() {
    let upstream = MockUpstream::ok("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let open =
        simple_config(&upstream.url()).replace("admin: \"127.0.0.1:0\"", "admin: \"0.0.0.0:0\"");
    std::fs::write(&file, &open).unwrap();
    let error = wardgate::config::load(&file).unwrap_err().to_string();
    assert!(
        error.contains("listen.admin") && error.contains("admin_insecure_plaintext"),
        "{error}"
    );
    let spelled = open.replace(
        "admin: \"0.0.0.0:0\"",
        "admin: \"0.0.0.0:0\"\n  admin_insecure_plaintext: true",
    );
    std::fs::write(&file, spelled).unwrap();
    let loaded = wardgate::config::load(&file).unwrap();
    assert!(
        loaded.warnings.iter().any(|w| w.0.contains("unencrypted")),
        "{:?}",
        loaded.warnings
    );
}

#[tokio::test]
async fn a_tls_key_readable_by_others_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let upstream = MockUpstream::ok("ok").await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["gateway.crt", "gateway.key"] {
        std::fs::copy(gateway.dir.path().join(name), dir.path().join(name)).unwrap();
    }
    std::fs::set_permissions(
        dir.path().join("gateway.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, simple_config(&upstream.url())).unwrap();
    let error = start_error(&file).await;
    assert!(
        error.contains("gateway.key") && error.contains("chmod 600"),
        "{error}"
    );
}
