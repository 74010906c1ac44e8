//! Test harness: a real gateway over real TLS, in-process mock upstreams, real clients.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// What a mock upstream saw.
#[derive(Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    /// The body as far as it could be read.
    pub body: Bytes,
    /// Why the body could not be read to its end; `None` for a whole body.
    pub cut: Option<String>,
}

/// An HTTP/1.1 upstream on loopback that records requests and answers with `respond`.
pub struct MockUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockUpstream {
    /// Answers every request with 200 and `body`, after reading the whole request body.
    pub async fn ok(body: &'static str) -> Self {
        Self::start(move |_req: Request<Incoming>| async move {
            let mut response = Response::new(full(body));
            response
                .headers_mut()
                .insert("server", "legacy-ehr/1.0".parse().unwrap());
            response
                .headers_mut()
                .insert("x-powered-by", "PHP/5.2".parse().unwrap());
            response
        })
        .await
    }

    /// `respond` gets the request with its body unread (streaming tests read it themselves);
    /// requests are recorded with an empty body.
    pub async fn start<F, Fut>(respond: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Response<TestBody>> + Send,
    {
        Self::start_recording(respond, false).await
    }

    /// Like [`MockUpstream::start`], but records the whole request body first and hands the
    /// handler the request with its body already consumed.
    pub async fn recording() -> Self {
        Self::start_recording(
            |_req: Request<Incoming>| async move { Response::new(full("recorded")) },
            true,
        )
        .await
    }

    async fn start_recording<F, Fut>(respond: F, read_body: bool) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Response<TestBody>> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (respond, recorded) = (respond.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (respond, recorded) = (respond.clone(), recorded.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let (request, bytes, cut) = if read_body {
                                let (bytes, cut) = read_to_end(body).await;
                                (None, bytes, cut)
                            } else {
                                let request = Request::from_parts(parts.clone(), body);
                                (Some(request), Bytes::new(), None)
                            };
                            recorded.lock().unwrap().push(Seen {
                                method: parts.method.clone(),
                                uri: parts.uri.clone(),
                                headers: parts.headers.clone(),
                                body: bytes,
                                cut,
                            });
                            let response = match request {
                                Some(request) => respond(request).await,
                                None => Response::new(full("recorded")),
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    /// A back end that reads headers the CGI way (WSGI, Rack, PHP): `X_User` and `X-User` are
    /// both `HTTP_X_USER`, and repeated names are joined with a comma. It answers the CGI
    /// environment it built, as JSON, and records each request like [`MockUpstream::recording`].
    pub async fn cgi() -> Self {
        Self::start_recording(
            |request: Request<Incoming>| async move {
                let mut environ = serde_json::Map::new();
                for (name, value) in request.headers() {
                    let key = format!(
                        "HTTP_{}",
                        name.as_str().to_ascii_uppercase().replace('-', "_")
                    );
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    let joined = match environ.remove(&key) {
                        Some(Value::String(prior)) => format!("{prior},{value}"),
                        _ => value,
                    };
                    environ.insert(key, Value::String(joined));
                }
                Response::new(full(Value::Object(environ).to_string()))
            },
            false,
        )
        .await
    }

    /// Every request seen so far; fails the test when a body could not be read to its end, so
    /// that a body cut short is never mistaken for an empty or shorter one.
    pub fn seen(&self) -> Vec<Seen> {
        let seen = self.seen_even_cut();
        if let Some(cut) = seen.iter().find(|seen| seen.cut.is_some()) {
            panic!("the upstream could not read a whole body: {cut:?}");
        }
        seen
    }

    /// Every request seen so far, those whose body was cut short included (see [`Seen::cut`]).
    pub fn seen_even_cut(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Shows at most the first 256 bytes of the body, so that a failed test stays readable.
impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.body[..self.body.len().min(256)];
        f.debug_struct("Seen")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body", &Bytes::copy_from_slice(shown))
            .field("cut", &self.cut)
            .finish()
    }
}

/// Reads `body` frame by frame: what arrived, and why it stopped short if it did.
async fn read_to_end(mut body: Incoming) -> (Bytes, Option<String>) {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Err(error) => return (bytes.into(), Some(error.to_string())),
        }
    }
    (bytes.into(), None)
}

/// A gateway started from config text in a temporary directory, on ephemeral ports.
pub struct TestGateway {
    pub https: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub redirect: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    /// Seconds added to the wall clock the gateway reads: moved by [`TestGateway::advance`].
    skew: Arc<std::sync::atomic::AtomicU64>,
    /// The gateway's security events: subscribe before the requests whose events a test reads.
    pub events: wardgate::auth::events::SecurityEvents,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The config every test starts from; `extra` is appended at the top level.
pub fn config_with(upstreams: &str, routes: &str, extra: &str) -> String {
    format!(
        r#"version: 1
listen:
  https: "127.0.0.1:0"
  admin: "127.0.0.1:0"
tls:
  cert: gateway.crt
  key: gateway.key
  dev_self_signed: true
log:
  requests: false
store:
  dev_generate_key: true
upstreams:
{upstreams}
routes:
{routes}
{extra}"#
    )
}

/// One upstream `backend` at `url`, one route for every path to it.
pub fn simple_config(url: &str) -> String {
    config_with(
        &format!("  backend: {{ url: \"{url}\" }}"),
        "  - { path: /**, upstream: backend, auth: none }",
        "",
    )
}

impl TestGateway {
    pub async fn start(config: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config).await
    }

    /// Starts from `config` written into `dir`, next to files the test put there.
    pub async fn start_in(dir: tempfile::TempDir, config: &str) -> Self {
        Self::launch(dir, config, None).await
    }

    /// Starts from `config`, serving HTTPS on `https`: for a config that names the port.
    pub async fn start_on(https: std::net::TcpListener, config: &str) -> Self {
        Self::launch(tempfile::tempdir().unwrap(), config, Some(https)).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        config: &str,
        https: Option<std::net::TcpListener>,
    ) -> Self {
        let file = dir.path().join("gateway.yaml");
        std::fs::write(&file, config).unwrap();
        let loaded = wardgate::config::load(&file).unwrap();
        let skew = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let wall = wardgate::clock::system();
        let read = skew.clone();
        let clock: wardgate::clock::Clock =
            Arc::new(move || wall() + read.load(std::sync::atomic::Ordering::SeqCst));
        let bound = match https {
            Some(listener) => wardgate::server::Bound::bind_on(&loaded, clock, listener).await,
            None => wardgate::server::Bound::bind_with_clock(&loaded, clock).await,
        }
        .unwrap();
        let events = bound.security_events();
        let https = bound.https_addr().unwrap();
        let admin = bound.admin_addr();
        let redirect = bound.redirect_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        Self {
            https,
            admin,
            redirect,
            dir,
            skew,
            events,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Moves the gateway's clock forward: sessions, links and lockouts age without sleeping.
    pub fn advance(&self, seconds: u64) {
        self.skew
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops the gateway, waits until it has let go of its data directory, and starts it again
    /// there with `config`: what the store holds survives, as after a restart in production.
    pub async fn restart(self, config: &str) -> Self {
        Self::start_in(self.stop().await, config).await
    }

    /// Stops the gateway and waits until it has let go of its data directory, which it hands
    /// back: [`open_store`] can read it then, and [`TestGateway::start_in`] start it again.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.begin_shutdown().await.unwrap();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Starts the drain and returns the task that ends when the gateway has stopped.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }

    /// A raw TLS connection for requests no well-behaved client would send.
    pub async fn raw_tls(&self) -> TlsStream<TcpStream> {
        let mut config = client_tls(&self.cert_path());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.https).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }
}

/// A gateway under test, as its clients reach it: in-process ([`TestGateway`]) or the real
/// binary. Its directory holds the config, the generated certificate and the data.
pub trait Listening {
    fn https_port(&self) -> u16;
    fn admin_addr(&self) -> SocketAddr;
    fn dir_path(&self) -> &Path;

    fn cert_path(&self) -> PathBuf {
        self.dir_path().join("gateway.crt")
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("https://localhost:{}{path_and_query}", self.https_port())
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    /// The admin listener's token: where the embedded store writes it.
    fn admin_token(&self) -> String {
        let file = self.dir_path().join("data/admin.token");
        std::fs::read_to_string(file).unwrap().trim().to_owned()
    }

    /// A pooled hyper client that trusts the gateway's generated certificate.
    fn client(&self, http2: bool) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, TestBody> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls(&self.cert_path()))
            .https_only();
        let connector = if http2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let mut client = Client::builder(TokioExecutor::new());
        client.http2_only(http2);
        client.build(connector)
    }
}

impl Listening for TestGateway {
    fn https_port(&self) -> u16 {
        self.https.port()
    }

    fn admin_addr(&self) -> SocketAddr {
        self.admin.unwrap()
    }

    fn dir_path(&self) -> &Path {
        self.dir.path()
    }
}

/// The identity store a stopped gateway left in `dir`, opened with its key file, as
/// `wardgate keys rotate` opens it. Drop it before the gateway starts there again.
pub fn open_store(dir: &Path) -> wardgate::identity::EmbeddedStore {
    let data = dir.join("data");
    let keyring = wardgate::identity::Keyring::read_file(&data.join("master.key")).unwrap();
    wardgate::identity::EmbeddedStore::open(&data, Arc::new(keyring)).unwrap()
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn client_tls(cert: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A plain HTTP/1.1 client (admin listener, redirect listener).
pub fn plain_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn get(url: &str) -> Request<TestBody> {
    Request::get(url).body(full(Bytes::new())).unwrap()
}

pub async fn body_text(response: Response<Incoming>) -> String {
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// Sends raw bytes on a fresh TLS connection and reads until the server closes it.
pub async fn raw_exchange(gateway: &TestGateway, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = gateway.raw_tls().await;
    tls.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The admin listener's metrics once they contain `expected` (records close when a response
/// body ends, a moment after the client has read it); the last scrape otherwise.
pub async fn metrics_containing(gateway: &TestGateway, expected: &str) -> String {
    let admin = plain_client();
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = body_text(
            admin
                .request(get(&gateway.admin_url("/metrics")))
                .await
                .unwrap(),
        )
        .await;
        if metrics.contains(expected) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    metrics
}

/// An admin API call with the admin token; the answer as JSON.
pub async fn admin(gateway: &impl Listening, method: Method, path: &str, body: &str) -> Value {
    let request = Request::builder()
        .method(method)
        .uri(gateway.admin_url(path))
        .header("authorization", format!("Bearer {}", gateway.admin_token()))
        .body(full(body.to_owned()))
        .unwrap();
    let response = plain_client().request(request).await.unwrap();
    serde_json::from_str(&body_text(response).await).unwrap()
}

/// Creates `name` through the admin API and returns its enrollment token.
pub async fn add_user(gateway: &impl Listening, name: &str) -> String {
    let created = admin(
        gateway,
        Method::POST,
        "/admin/users",
        &json!({ "name": name, "email": format!("{name}@example.org"), "roles": ["physician"] })
            .to_string(),
    )
    .await;
    created["enrollment"]["token"].as_str().unwrap().to_owned()
}

/// Asserts, through the admin API, that `name` has a password, an authenticator and 10
/// recovery codes, and needs no more enrollment.
pub async fn assert_enrolled(gateway: &TestGateway, name: &str) {
    let shown = admin(gateway, Method::GET, &format!("/admin/users/{name}"), "").await;
    let user = &shown["user"];
    assert_eq!(user["password_set"], true, "{shown}");
    assert_eq!(user["mfa"]["totp"], true, "{shown}");
    assert_eq!(user["mfa"]["recovery_codes_left"], 10, "{shown}");
    assert_eq!(user["mfa"]["enrollment_required"], false, "{shown}");
}

/// The strings of a JSON array.
pub fn strings(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|item| item.as_str().unwrap())
        .collect()
}

/// Asserts that the JSON array `list` holds every string of `expected`.
pub fn assert_lists_all(list: &Value, expected: &[&str]) {
    let list = strings(list);
    for item in expected {
        assert!(list.contains(item), "{item:?} missing from {list:?}");
    }
}

/// Why the gateway configured by `file` refuses to start (the test fails if it starts).
pub async fn start_error(file: &Path) -> String {
    let loaded = wardgate::config::load(file).unwrap();
    match wardgate::server::Bound::bind(&loaded).await {
        Ok(_) => panic!("{} started", file.display()),
        Err(error) => error.to_string(),
    }
}
