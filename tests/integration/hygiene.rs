//! Server hygiene: slow clients, limits, shutdown, redirects, admin, TLS versions.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::harness::*;

fn with_server(url: &str, server: &str) -> String {
    simple_config(url) + "server:\n" + server
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&with_server(
        &upstream.url(),
        "  header_read_timeout: 300ms\n",
    ))
    .await;
    let mut tls = gateway.raw_tls().await;
    tls.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // Keep dripping one header byte at a time; the gateway must hang up regardless, well
    // before the default 15 s: the configured 300 ms applies.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if tls.write_all(b"X").await.is_err() || tls.flush().await.is_err() {
                return;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(100), tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) | Err(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped_and_counted() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&with_server(
        &upstream.url(),
        "  tls_handshake_timeout: 200ms\n",
    ))
    .await;
    let mut tcp = TcpStream::connect(gateway.https).await.unwrap();
    let mut buf = [0u8; 16];
    // Well before the default 10 s: the configured 200 ms applies.
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the handshake deadline was not the configured one");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let metrics = body_text(
        plain_client()
            .request(get(&gateway.admin_url("/metrics")))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        metrics.contains("wardgate_tls_handshake_failures_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&with_server(
        &upstream.url(),
        "  max_header_size: 8KiB\n  max_headers: 20\n",
    ))
    .await;
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let answer = raw_exchange(&gateway, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw_exchange(
        &gateway,
        format!("GET /x HTTP/1.1\r\nHost: localhost\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let (arrived_tx, arrived_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let upstream = MockUpstream::start(move |_request: Request<Incoming>| {
        let (arrived_tx, mut release_rx) = (arrived_tx.clone(), release_rx.clone());
        async move {
            let _ = arrived_tx.send(()).await;
            let _ = release_rx.wait_for(|released| *released).await;
            Response::new(full("finished after shutdown began"))
        }
    })
    .await;
    let mut gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let client = gateway.client(false);
    let in_flight = tokio::spawn(client.request(get(&gateway.url("/slow"))));
    let mut arrived_rx = arrived_rx;
    arrived_rx.recv().await.unwrap();

    let stopped = gateway.begin_shutdown();
    // Readiness flips at once so load balancers stop sending work; new connections are refused.
    let admin = plain_client();
    let mut readiness = StatusCode::OK;
    for _ in 0..100 {
        readiness = admin
            .request(get(&gateway.admin_url("/readyz")))
            .await
            .map(|r| r.status())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        if readiness != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(readiness, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!stopped.is_finished());

    release_tx.send(true).unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "finished after shutdown began");
    tokio::time::timeout(Duration::from_secs(20), stopped)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(gateway.https).await.is_err());
}

#[tokio::test]
async fn shutdown_gives_up_on_requests_that_outlast_the_grace_period() {
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::channel::<()>(1);
    let upstream = MockUpstream::start(move |_request: Request<Incoming>| {
        let arrived_tx = arrived_tx.clone();
        async move {
            let _ = arrived_tx.send(()).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(full(""))
        }
    })
    .await;
    let mut gateway = TestGateway::start(&with_server(
        &upstream.url(),
        "  shutdown_grace: 200ms
",
    ))
    .await;
    let client = gateway.client(false);
    let in_flight = tokio::spawn(client.request(get(&gateway.url("/forever"))));
    arrived.recv().await.unwrap();
    let stopped = gateway.begin_shutdown();
    // Well before the default 30 s: the configured grace applies.
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the drain outlasted the configured grace period")
        .unwrap();
    // The client is not left hanging: its connection was closed without an answer.
    let answer = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the client still waits after the gateway stopped")
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");
}

#[tokio::test]
async fn an_idle_admin_connection_ends_with_the_gateway() {
    let upstream = MockUpstream::ok("ok").await;
    let mut gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    // A metrics scraper's keep-alive connection, idle after its answer.
    let mut scraper = TcpStream::connect(gateway.admin.unwrap()).await.unwrap();
    scraper
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = scraper.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::timeout(Duration::from_secs(5), gateway.begin_shutdown())
        .await
        .unwrap()
        .unwrap();
    // Stopped means stopped: the connection is closed, not held open by a task left behind.
    let end = tokio::time::timeout(Duration::from_secs(5), scraper.read(&mut buf))
        .await
        .expect("the admin connection outlived the gateway");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn the_connection_limit_holds_new_connections_back() {
    let upstream = MockUpstream::ok("ok").await;
    let gateway = TestGateway::start(&with_server(&upstream.url(), "  max_connections: 1\n")).await;
    let mut first = gateway.raw_tls().await;
    first
        .write_all(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let cert = gateway.cert_path();
    let https = gateway.https;
    let second = tokio::spawn(async move {
        let connector = TlsConnector::from(Arc::new(client_tls(&cert)));
        let tcp = TcpStream::connect(https).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served past max_connections: 1"
    );
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .unwrap()
        .unwrap();
    assert!(second.is_ok());
}

#[tokio::test]
async fn plain_http_only_redirects() {
    let upstream = MockUpstream::recording().await;
    let config = simple_config(&upstream.url()).replace(
        "  admin: \"127.0.0.1:0\"",
        "  admin: \"127.0.0.1:0\"\n  http_redirect: \"127.0.0.1:0\"",
    );
    let gateway = TestGateway::start(&config).await;
    let redirect = gateway.redirect.unwrap();
    let request = Request::post(format!("http://{redirect}/api/patients/1?x=1"))
        .header("host", "ehr.example.org:8080")
        .body(full("data"))
        .unwrap();
    let response = plain_client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        format!(
            "https://ehr.example.org:{}/api/patients/1?x=1",
            gateway.https.port()
        )
    );
    let mut tcp = TcpStream::connect(redirect).await.unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: a@b\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("WG-REQ-003"), "{answer}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn admin_listener_answers_health_readiness_and_metrics() {
    let upstream = MockUpstream::ok("ok").await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let admin = plain_client();
    let health = admin
        .request(get(&gateway.admin_url("/healthz")))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = admin
        .request(get(&gateway.admin_url("/readyz")))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let missing = admin
        .request(get(&gateway.admin_url("/admin/secrets")))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let post = Request::post(gateway.admin_url("/metrics"))
        .body(full(""))
        .unwrap();
    assert_eq!(
        admin.request(post).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let metrics = body_text(
        admin
            .request(get(&gateway.admin_url("/metrics")))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        metrics.contains("# TYPE wardgate_open_connections gauge"),
        "{metrics}"
    );
}

async fn handshake_with(
    gateway: &TestGateway,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(), std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(
        rustls::pki_types::pem::PemObject::pem_file_iter(gateway.cert_path())
            .unwrap()
            .map(|c| c.unwrap()),
    );
    let config = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(gateway.https).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn tls_versions_follow_min_version() {
    let upstream = MockUpstream::recording().await;
    let default = TestGateway::start(&simple_config(&upstream.url())).await;
    assert!(
        handshake_with(&default, &[&rustls::version::TLS12])
            .await
            .is_ok()
    );
    assert!(
        handshake_with(&default, &[&rustls::version::TLS13])
            .await
            .is_ok()
    );
    let strict = TestGateway::start(&simple_config(&upstream.url()).replace(
        "  dev_self_signed: true",
        "  dev_self_signed: true\n  min_version: \"1.3\"",
    ))
    .await;
    assert!(
        handshake_with(&strict, &[&rustls::version::TLS12])
            .await
            .is_err()
    );
    assert!(
        handshake_with(&strict, &[&rustls::version::TLS13])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_dev_certificate_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let mode = std::fs::metadata(gateway.dir.path().join("gateway.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn missing_certificates_stop_the_start_without_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(
        &file,
        simple_config("http://127.0.0.1:1").replace("  dev_self_signed: true\n", ""),
    )
    .unwrap();
    let error = start_error(&file).await;
    assert!(error.contains("gateway.crt"), "{error}");
    assert!(!dir.path().join("gateway.crt").exists());

    std::fs::write(dir.path().join("gateway.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("gateway.key"), "not a key").unwrap();
    let error = start_error(&file).await;
    assert!(error.contains("gateway.crt"), "{error}");
}

#[tokio::test]
async fn a_missing_master_key_stops_the_start_without_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let config =
        simple_config("http://127.0.0.1:1").replace("store:\n  dev_generate_key: true\n", "");
    std::fs::write(&file, config).unwrap();
    let error = start_error(&file).await;
    assert!(error.contains("master.key"), "{error}");
    assert!(!dir.path().join("data/master.key").exists());
}

#[tokio::test]
async fn dev_mode_generates_a_private_master_key_and_a_private_store() {
    use std::os::unix::fs::PermissionsExt;
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let mode = |path: &str| {
        std::fs::metadata(gateway.dir.path().join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("data/master.key"), 0o600);
    assert_eq!(mode("data"), 0o700);
    assert_eq!(mode("data/identity.redb"), 0o600);
}
