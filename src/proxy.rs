//! Forwarding: the upstream clients and the header rules at the trust boundary.
//!
//! Threats: request smuggling through hop-by-hop headers, clients forging their address or the
//! request id, and upstream responses that advertise server software or ask to be cached.
//! Rules (RFC 9110 section 7.6.1, RFC 7239): hop-by-hop headers (`Connection` and every header
//! it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) never
//! cross the gateway, except `Upgrade: websocket` on routes that allow it; forwarding headers
//! are written by the gateway and believed only from configured proxies.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ipnet::IpNet;
use metrics::SharedString;

use crate::body::{IdleTimeout, RequestBody, TooLarge};
use crate::config::Upstream;
use crate::refusal::Refusal;
use crate::tls::{self, TlsError};

pub type UpstreamRequestBody = RequestBody;
type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// One upstream: a pooled client and where requests go.
pub struct UpstreamClient {
    pub name: SharedString,
    client: Client<HttpsConnector, UpstreamRequestBody>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    base_path: String,
    pub response_timeout: Duration,
    pub body_idle_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(
        name: &str,
        upstream: &Upstream,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(upstream.connect_timeout.0));
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls::upstream_client_config(upstream, resolve)?);
        let builder = if upstream.url.tls {
            builder.https_only()
        } else {
            builder.https_or_http()
        };
        let connector = builder.enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(upstream.pool_idle_timeout.0)
            .pool_max_idle_per_host(upstream.pool_max_idle)
            .build(connector);
        let uri = &upstream.url.uri;
        Ok(Self {
            name: SharedString::from(name.to_owned()),
            client,
            scheme: uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP),
            authority: uri
                .authority()
                .cloned()
                .ok_or_else(|| TlsError::Identity("upstream URL has no host".into()))?,
            base_path: upstream.url.base_path().to_owned(),
            response_timeout: upstream.response_timeout.0,
            body_idle_timeout: upstream.body_idle_timeout.0,
        })
    }

    /// The upstream URI for a forwarded path (already normalized and rewritten) and query.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, Refusal> {
        let mut path_and_query = String::with_capacity(
            self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        path_and_query.push_str(&self.base_path);
        path_and_query.push_str(path);
        if let Some(query) = query {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| Refusal::BadTarget)
    }

    /// Sends the request, waiting at most `upstream.response_timeout` for the response head.
    pub async fn send(
        &self,
        request: Request<UpstreamRequestBody>,
    ) -> Result<http::Response<Incoming>, UpstreamFailure> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_) => Err(UpstreamFailure {
                refusal: Refusal::UpstreamTimeout,
                cause: format!("no response head within {:?}", self.response_timeout),
            }),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(UpstreamFailure {
                refusal: classify(&error),
                cause: error_chain(&error),
            }),
        }
    }
}

/// Why an exchange with an upstream failed: the refusal the client gets, and for the log what
/// went wrong ("connection refused", "invalid peer certificate: Expired").
#[derive(Debug)]
pub struct UpstreamFailure {
    pub refusal: Refusal,
    pub cause: String,
}

/// An error and each of its sources, `outer: inner: innermost`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Connect timeouts are timeouts; refused, reset and unresolvable are "unavailable"; anything
/// else the upstream said is a protocol failure.
fn classify(error: &hyper_util::client::legacy::Error) -> Refusal {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        // The client's side of the exchange failed first: its body broke a rule.
        if cause.is::<TooLarge>() {
            return Refusal::BodyTooLarge;
        }
        if cause.is::<IdleTimeout>() {
            return Refusal::BodyTimeout;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return Refusal::UpstreamTimeout;
        }
        source = cause.source();
    }
    if error.is_connect() {
        return Refusal::UpstreamUnavailable;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>()
            && (hyper_error.is_incomplete_message()
                || hyper_error.is_canceled()
                || hyper_error.is_closed())
        {
            return Refusal::UpstreamUnavailable;
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return Refusal::UpstreamUnavailable;
        }
        source = cause.source();
    }
    Refusal::UpstreamProtocol
}

const FIXED_HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// True for a request that asks to become a WebSocket (RFC 6455 section 4.1).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
    });
    upgrade && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers. With `keep_websocket`, the upgrade survives as
/// `Connection: upgrade` + `Upgrade: websocket`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_websocket: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|t| HeaderName::try_from(t).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in FIXED_HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy_headers: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy_headers {
            headers.remove(name);
        }
    }
    if keep_websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// Removes every header through which a client could claim an identity: `X-Wardgate-*` (the
/// gateway's own), the usual auth-proxy names, and the `extra` ones the config lists (given as
/// [`identity_header_key`]s). Only the gateway, after authentication, may set identity for the
/// upstream. Names are compared the way CGI, WSGI, Rack and PHP back ends read them: without
/// case, and `_` the same as `-`, so `X_Wardgate_User` goes too when underscores are allowed.
pub fn strip_identity_headers(headers: &mut HeaderMap, extra: &[String]) {
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_identity_header(&identity_header_key(name.as_str()), extra))
        .cloned()
        .collect();
    for name in claimed {
        headers.remove(name);
    }
}

/// A header name as a CGI-style back end reads it: lower case, `_` as `-`.
pub fn identity_header_key(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase().replace('_', "-"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Identity headers of common authenticating proxies (oauth2-proxy, Apache, nginx auth_request).
const IDENTITY_HEADERS: [&str; 7] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-remote-user",
    "remote-user",
];

fn is_identity_header(key: &str, extra: &[String]) -> bool {
    key.starts_with("x-wardgate-")
        || key.starts_with("x-auth-request-")
        || IDENTITY_HEADERS.contains(&key)
        || extra.iter().any(|e| e == key)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which peers' forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer, or, behind trusted proxies, the right-most address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        hops.into_iter()
            .rev()
            .find(|ip| !self.contains(*ip))
            .unwrap_or(peer)
    }
}

/// A request id as a trusted peer may hand it on: visible ASCII, at most 128 bytes.
pub fn acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// 128 bits of `rng`, hex.
pub fn new_request_id(rng: &mut dyn rand::RngCore) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = [0u8; 16];
    rng.fill_bytes(&mut bits);
    let mut text = [0u8; 32];
    for (pair, byte) in text.chunks_exact_mut(2).zip(bits) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&text))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The direct peer of a connection and the forwarding values it earns, worked out once per
/// connection rather than once per request.
pub struct Peer {
    pub addr: SocketAddr,
    pub trusted: bool,
    /// `X-Forwarded-For` entry: the peer's address.
    node: HeaderValue,
    /// `Forwarded` element (RFC 7239): `for=<peer>;proto=https`.
    forwarded: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, trusted_proxies: &TrustedProxies) -> Self {
        let ip = addr.ip().to_canonical();
        let for_node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        Self {
            addr,
            trusted: trusted_proxies.contains(ip),
            node: header_value(&ip.to_string()),
            forwarded: header_value(&format!("for={for_node};proto=https")),
        }
    }

    /// Replaces the forwarding headers; `host` is the authority the client addressed. From an
    /// untrusted peer whatever it sent is discarded; behind a trusted proxy the gateway appends.
    pub fn set_forwarding_headers(&self, headers: &mut HeaderMap, host: Option<HeaderValue>) {
        if self.trusted {
            append_hop(headers, X_FORWARDED_FOR, &self.node);
            append_hop(headers, header::FORWARDED, &self.forwarded);
            if !headers.contains_key(X_FORWARDED_PROTO) {
                headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            }
            if let Some(host) = host
                && !headers.contains_key(X_FORWARDED_HOST)
            {
                headers.insert(X_FORWARDED_HOST, host);
            }
            return;
        }
        headers.insert(X_FORWARDED_FOR, self.node.clone());
        headers.insert(header::FORWARDED, self.forwarded.clone());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
}

/// `prior, ours` as one header value, for a list-valued forwarding header.
fn append_hop(headers: &mut HeaderMap, name: HeaderName, ours: &HeaderValue) {
    let prior: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = match (prior.is_empty(), ours.to_str()) {
        (false, Ok(ours)) => header_value(&format!("{}, {ours}", prior.join(", "))),
        _ => ours.clone(),
    };
    headers.insert(name, value);
}

/// A header value the gateway composed from addresses and fixed text; such text is always
/// visible ASCII, so the fallback (an empty value) is never used.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Removes an upstream's `Set-Cookie` for a gateway cookie (`__Host-wardgate-…`, any case):
/// an upstream must never plant or overwrite the gateway's session or CSRF cookie.
pub fn strip_gateway_cookies(headers: &mut HeaderMap) {
    const PREFIX: &[u8] = b"__host-wardgate-";
    let planted = |value: &HeaderValue| {
        let name = value
            .as_bytes()
            .split(|&b| b == b'=')
            .next()
            .unwrap_or_default();
        let name = name.trim_ascii();
        name.len() >= PREFIX.len() && name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(planted) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|value| !planted(value))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::try_from(*value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_go() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9v"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!(map["x-kept"], "yes");
    }

    #[test]
    fn websocket_upgrade_survives_only_when_allowed() {
        let sent = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_websocket_upgrade(&sent));
        let mut kept = sent.clone();
        strip_hop_by_hop(&mut kept, true);
        assert_eq!(kept["upgrade"], "websocket");
        assert_eq!(kept["connection"], "upgrade");
        assert!(!is_websocket_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!is_websocket_upgrade(&headers(&[
            ("connection", "upgrade"),
            ("upgrade", "h2c")
        ])));
    }

    #[test]
    fn client_address_only_from_trusted_proxies() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let spoof = headers(&[("x-forwarded-for", "1.2.3.4, 10.1.1.1")]);
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(trusted.client_address(outsider, &spoof), outsider);
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            trusted.client_address(proxy, &spoof),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            TrustedProxies::default().client_address(proxy, &spoof),
            proxy
        );
    }

    #[test]
    fn forwarding_headers_replace_what_an_untrusted_client_sent() {
        let mut map = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let peer = Peer::new(
            "[2001:db8::7]:5555".parse().unwrap(),
            &TrustedProxies::default(),
        );
        peer.set_forwarding_headers(&mut map, Some(HeaderValue::from_static("ehr.example.org")));
        assert_eq!(map["x-forwarded-for"], "2001:db8::7");
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "ehr.example.org");
        assert_eq!(map["forwarded"], "for=\"[2001:db8::7]\";proto=https");

        let mut chained = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-host", "public.example.org"),
        ]);
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let proxy = Peer::new("10.0.0.2:1".parse().unwrap(), &trusted);
        proxy.set_forwarding_headers(&mut chained, Some(HeaderValue::from_static("inner")));
        assert_eq!(chained["x-forwarded-for"], "1.2.3.4, 10.0.0.2");
        assert_eq!(
            chained["forwarded"],
            "for=1.2.3.4, for=10.0.0.2;proto=https"
        );
        assert_eq!(chained["x-forwarded-host"], "public.example.org");
        // The proxy did not say how its client came: the gateway says TLS, which it ended.
        assert_eq!(chained["x-forwarded-proto"], "https");
    }

    #[test]
    fn request_ids_from_peers_are_checked() {
        assert!(acceptable_request_id(&HeaderValue::from_static("abc-123")));
        assert!(!acceptable_request_id(&HeaderValue::from_static(
            "has space"
        )));
        assert!(!acceptable_request_id(
            &HeaderValue::from_str(&"x".repeat(129)).unwrap()
        ));
        assert_eq!(new_request_id(&mut rand::rng()).len(), 32);
    }

    #[test]
    fn every_spelling_of_an_identity_header_goes_and_nothing_else() {
        let claims = [
            "x-wardgate-user",
            "x-wardgate-roles",
            "x-wardgate-user-id",
            "x-wardgate-assertion",
            "x_wardgate_user",
            "x-wardgate_roles",
            "x-auth-request-user",
            "x-auth-request-email",
            "x_auth_request_groups",
            "x-forwarded-user",
            "x-forwarded-email",
            "x-forwarded-groups",
            "x-forwarded-preferred-username",
            "x-forwarded-access-token",
            "x_forwarded_user",
            "x-remote-user",
            "remote-user",
            "remote_user",
            "x-clinic-badge",
            "x_clinic_badge",
        ];
        let kept = [
            "accept",
            "x-wardgate",
            "x-auth-request",
            "x-forwarded-for",
            "remote-user-agent",
            "x-clinic-badge-color",
        ];
        let mut map = HeaderMap::new();
        for name in claims.iter().chain(&kept) {
            map.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_static("forged"),
            );
        }
        strip_identity_headers(&mut map, &["x-clinic-badge".to_owned()]);
        let mut left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        let mut expected = kept.to_vec();
        expected.sort_unstable();
        assert_eq!(left, expected);
    }

    #[test]
    fn a_header_name_is_read_the_cgi_way_and_copied_only_when_it_must_be() {
        assert_eq!(identity_header_key("X_Wardgate_User"), "x-wardgate-user");
        assert_eq!(identity_header_key("x_remote_user"), "x-remote-user");
        assert_eq!(identity_header_key("X-Remote-User"), "x-remote-user");
        // The common case on the request path, a lower-case name with dashes, is not copied.
        assert!(matches!(
            identity_header_key("x-remote-user"),
            std::borrow::Cow::Borrowed("x-remote-user")
        ));
    }

    fn client_of(url: &str) -> UpstreamClient {
        let upstream: Upstream = serde_saphyr::from_str(&format!("url: \"{url}\"\n")).unwrap();
        UpstreamClient::new("backend", &upstream, Path::to_path_buf).unwrap()
    }

    async fn failure(client: &UpstreamClient) -> UpstreamFailure {
        let request = Request::get(client.uri_for("/x", None).unwrap())
            .body(RequestBody::Buffered(None))
            .unwrap();
        client.send(request).await.unwrap_err()
    }

    #[test]
    fn the_upstream_uri_keeps_its_base_path_and_the_query() {
        let client = client_of("http://10.0.0.7:8080/ehr");
        assert_eq!(
            client.uri_for("/patients/7", Some("a=1&b=2")).unwrap(),
            "http://10.0.0.7:8080/ehr/patients/7?a=1&b=2"
        );
        assert_eq!(
            client.uri_for("/patients/7", None).unwrap(),
            "http://10.0.0.7:8080/ehr/patients/7"
        );
    }

    #[tokio::test]
    async fn upstream_failures_are_told_apart() {
        // A port this test holds without listening on it: refused while connecting.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://{}", held.local_addr().unwrap());
        let refused = failure(&client_of(&url)).await;
        assert_eq!(refused.refusal, Refusal::UpstreamUnavailable);
        // The operator's log says why, down to the operating system's words.
        assert!(
            refused.cause.contains("Connection refused"),
            "{}",
            refused.cause
        );

        // The upstream takes the request and hangs up without an answer, or answers nonsense.
        for (answer, expected) in [
            (&b""[..], Refusal::UpstreamUnavailable),
            (&b"NOT HTTP AT ALL\r\n\r\n"[..], Refusal::UpstreamProtocol),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let served = tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut head = [0u8; 1024];
                let _ = tcp.read(&mut head).await.unwrap();
                tcp.write_all(answer).await.unwrap();
            });
            assert_eq!(failure(&client_of(&url)).await.refusal, expected);
            served.await.unwrap();
        }
    }

    #[test]
    fn an_upstream_cannot_set_a_gateway_cookie() {
        let mut map = headers(&[
            ("set-cookie", "theme=dark; Path=/"),
            (
                "set-cookie",
                "__Host-wardgate-session=forged; Secure; Path=/",
            ),
            ("set-cookie", " __HOST-WARDGATE-CSRF =forged"),
            ("set-cookie", "__Host-wardgate=short"),
            ("set-cookie", "__Host-other=1"),
        ]);
        strip_gateway_cookies(&mut map);
        let left: Vec<&str> = map
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            left,
            [
                "theme=dark; Path=/",
                "__Host-wardgate=short",
                "__Host-other=1"
            ]
        );
    }
}
