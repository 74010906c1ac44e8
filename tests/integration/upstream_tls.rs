//! TLS towards upstreams: a private CA bundle and a client certificate (mutual TLS).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::harness::*;

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf(vec!["localhost".into()]),
        client: leaf(vec!["wardgate-client".into()]),
    }
}

/// An HTTPS upstream that requires a client certificate from `ca` and reports whether one came.
async fn mtls_upstream(pki: &Pki) -> std::net::SocketAddr {
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(pki.server.0.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let has_client_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let service = service_fn(move |_request: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(full(format!(
                        "mtls client cert: {has_client_cert}"
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
}

#[tokio::test]
async fn https_upstreams_use_the_ca_bundle_and_client_certificate() {
    let pki = pki();
    let upstream = mtls_upstream(&pki).await;
    let config = config_with(
        &format!(
            "  secure:\n    url: \"https://localhost:{port}\"\n    ca_bundle: upstream-ca.pem\n    client_cert: {{ cert: client.pem, key: client.key }}\n  no_client_cert:\n    url: \"https://localhost:{port}\"\n    ca_bundle: upstream-ca.pem\n  wrong_ca:\n    url: \"https://localhost:{port}\"\n    ca_bundle: client.pem",
            port = upstream.port()
        ),
        "  - { path: /secure, upstream: secure, auth: none }\n  - { path: /no-client-cert, upstream: no_client_cert, auth: none }\n  - { path: /wrong-ca, upstream: wrong_ca, auth: none }",
        "",
    );
    // The files must exist before the gateway loads them: write them next to the config.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upstream-ca.pem", &pki.ca_pem);
    write(dir.path(), "client.pem", &pki.client.0);
    write(dir.path(), "client.key", &pki.client.1);
    // A private key must be private (the gateway refuses it otherwise).
    std::fs::set_permissions(
        dir.path().join("client.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let gateway = TestGateway::start_in(dir, &config).await;
    let client = gateway.client(false);

    let response = client.request(get(&gateway.url("/secure"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "mtls client cert: true");

    for path in ["/no-client-cert", "/wrong-ca"] {
        let response = client.request(get(&gateway.url(path))).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{path}");
        let body = body_text(response).await;
        assert!(body.contains("WG-UP-"), "{path}: {body}");
        assert!(!body.contains("certificate"), "{path}: {body}");
    }
}
