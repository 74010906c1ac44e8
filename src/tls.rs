//! TLS for clients (termination) and for upstreams (origination).
//!
//! Threat: downgrade to old protocol versions and weak suites, and a gateway that quietly runs on
//! a certificate nobody chose. Rule: rustls with TLS 1.2 and 1.3 only (1.3 only if configured),
//! its default (AEAD, forward-secret) suites in the server's order (AES-256-GCM first), ALPN
//! `h2` and `http/1.1`; private keys that other users can read are refused. A missing or broken
//! certificate stops the start, unless `tls.dev_self_signed` is set, in which case a self-signed
//! localhost certificate is generated once (key file mode 0600) and a loud warning is logged.
//! HIPAA 164.312(e)(1): transmission security.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{TlsVersion, Upstream};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read the certificate chain: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path}: cannot read the private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the certificate and key do not form a usable TLS identity: {0}")]
    Identity(String),
    #[error("{path}: cannot write the generated development certificate: {reason}")]
    Generate { path: PathBuf, reason: String },
}

static TLS12_AND_13: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];
static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn protocol_versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => &TLS12_AND_13,
        TlsVersion::Tls13 => &TLS13_ONLY,
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: path.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // Like the master key and the assertion key: a private key others can read is refused.
    crate::secret_file::check(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    // The parser's message can quote key material; say only what went wrong in general terms.
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key in the file".into(),
            rustls::pki_types::pem::Error::Io(io) => io.to_string(),
            _ => "the file is not a PEM private key".into(),
        },
    })
}

/// True when a development certificate would be generated for these paths.
pub fn would_generate(cert: &Path, key: &Path, dev_self_signed: bool) -> bool {
    dev_self_signed && !cert.exists() && !key.exists()
}

/// Writes a self-signed certificate for localhost. Only called when both files are missing.
pub fn generate_dev_certificate(cert: &Path, key: &Path) -> Result<(), TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate {
        path: cert.to_owned(),
        reason: e.to_string(),
    })?;
    if let Some(dir) = cert.parent() {
        fs::create_dir_all(dir).map_err(|e| TlsError::Generate {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
    }
    write_new(key, generated.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert, generated.cert.pem().as_bytes(), 0o644)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| TlsError::Generate {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)
}

/// The server side: the gateway's certificate, versions and ALPN.
pub fn server_config(
    cert: &Path,
    key: &Path,
    min: TlsVersion,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_chain(cert)?;
    let key = read_key(key)?;
    let mut config = ServerConfig::builder_with_protocol_versions(protocol_versions(min))
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Identity(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's order of suites, strongest AEAD first (the provider's default order), not
    // whatever the client lists first.
    config.ignore_client_order = true;
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| TlsError::Identity(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The client side towards one upstream: its CA bundle (or the system roots) and, for mutual
/// TLS, its client certificate.
pub fn upstream_client_config(
    upstream: &Upstream,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match &upstream.ca_bundle {
        _ if !upstream.url.tls => {}
        Some(bundle) => {
            let path = resolve(bundle);
            for cert in read_chain(&path)? {
                roots.add(cert).map_err(|e| TlsError::Certificate {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let system = rustls_native_certs::load_native_certs();
            for cert in system.certs {
                // A broken system root is skipped; the upstream's chain check still applies.
                let _ = roots.add(cert);
            }
        }
    }
    let builder =
        ClientConfig::builder_with_protocol_versions(protocol_versions(TlsVersion::Tls12))
            .with_root_certificates(roots);
    // ALPN (http/1.1) is set by the connector builder, which refuses a config that has it already.
    let config = match &upstream.client_cert {
        Some(client) => {
            let chain = read_chain(&resolve(&client.cert))?;
            let key = read_key(&resolve(&client.key))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Identity(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}
