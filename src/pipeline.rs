//! The request path, written down once.
//!
//! Every request walks these phases in this order (DESIGN.md, "The request path"). A phase
//! either hands the request on or ends it with a [`Refusal`]; whatever happens, the response
//! phase and the record at the end run.
//!
//! ```text
//!  1 accept        server.rs   TLS (ALPN h2 / http/1.1), connection limit, handshake and
//!                              header-read timeouts, header size and count limits; HTTP/1.x
//!                              framing guard below hyper (sanitize/framing.rs)
//!  2 early         here        request id (kept only from a trusted proxy), client address
//!                              (forwarded headers believed only from trusted proxies)
//!  3 sanitize      here        path normalized once (path.rs): malformed paths end here (400)
//!  4 route         route.rs    host + normalized path (never the query) -> route, or 404
//!  5 rate limit    -           anonymous, per client address        (issue: rate limiting)
//!  6 authenticate  -           session / bearer token, MFA          (issue: accounts, sessions)
//!  7 authorize     -           role x data category x patient       (issue: policy)
//!  8 rate limit    -           per identity                         (issue: rate limiting)
//!  9 upstream      proxy.rs    hop-by-hop and forwarding headers rewritten, request streamed
//!                              to the pooled client; connect/response timeouts -> 502/504
//! 10 response      here        security headers, route headers, no-store on patient data,
//!                              upstream Server/X-Powered-By removed, X-Request-Id returned
//! 11 record        telemetry   one log line and metrics when the response body ends or the
//!                              client leaves (the audit trail will hang off this point)
//! ```
//!
//! Phases 5 to 8 are not built yet: today every route must say `auth: none`, and no request is
//! rate-limited. They will slot in between `route` and `upstream` below.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics::SharedString;

use crate::body::{IdleBody, ResponseBody};
use crate::config::Loaded;
use crate::path;
use crate::proxy::{self, Peer, TrustedProxies, UpstreamClient, X_REQUEST_ID};
use crate::refusal::Refusal;
use crate::route::RouteTable;
use crate::sanitize::framing::TunnelSwitch;
use crate::telemetry::{Finished, NO_ROUTE, RequestRecord, RouteLabels, Telemetry};
use crate::tls::TlsError;

/// Everything a matched route decides.
pub struct RouteTarget {
    labels: Arc<RouteLabels>,
    upstream: Arc<UpstreamClient>,
    rewrite: Option<(String, String)>,
    websocket: bool,
    response_headers: HeaderMap,
}

impl RouteTarget {
    /// The path the upstream sees: the normalized path with the route's prefix rewritten.
    fn forwarded_path<'a>(&self, path: &'a str) -> Cow<'a, str> {
        match &self.rewrite {
            Some((prefix, to)) => {
                let rest = path.strip_prefix(prefix.as_str()).unwrap_or(path);
                match (to.as_str(), rest) {
                    ("", "") => Cow::Borrowed("/"),
                    ("", rest) => Cow::Borrowed(rest),
                    (to, rest) => Cow::Owned(format!("{to}{rest}")),
                }
            }
            None => Cow::Borrowed(path),
        }
    }
}

/// The shared, immutable state of the request path.
pub struct Gateway {
    routes: RouteTable<RouteTarget>,
    trusted: TrustedProxies,
    telemetry: Arc<Telemetry>,
    unrouted: Arc<RouteLabels>,
    body_idle_timeout: Duration,
}

impl Gateway {
    pub fn new(loaded: &Loaded, telemetry: Arc<Telemetry>) -> Result<Self, TlsError> {
        let config = &loaded.config;
        let mut upstreams = std::collections::BTreeMap::new();
        for (name, upstream) in &config.upstreams {
            let client = UpstreamClient::new(name, &upstream.value, |p| loaded.resolve(p))?;
            upstreams.insert(name.as_str(), Arc::new(client));
        }
        let mut targets = Vec::with_capacity(config.routes.value.len());
        for route in &config.routes.value {
            let Some(upstream) = upstreams.get(route.upstream.value.as_str()) else {
                // `config::load` refuses routes that name an unknown upstream.
                continue;
            };
            let name = SharedString::from(
                route
                    .name
                    .clone()
                    .unwrap_or_else(|| route.path.value.to_string()),
            );
            let mut response_headers = HeaderMap::new();
            for (header_name, value) in &route.response_headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::try_from(header_name.as_str()),
                    HeaderValue::try_from(value.value.as_str()),
                ) {
                    response_headers.insert(n, v);
                }
            }
            if route.cache_no_store.unwrap_or(route.patient_data) {
                response_headers
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            let target = RouteTarget {
                labels: Arc::new(telemetry.route_labels(name, upstream.name.clone())),
                upstream: upstream.clone(),
                rewrite: route
                    .rewrite
                    .as_ref()
                    .map(|r| (r.value.prefix.clone(), r.value.to.clone())),
                websocket: route.websocket,
                response_headers,
            };
            targets.push((
                route.host.as_ref().map(|h| h.value.clone()),
                route.path.value.clone(),
                target,
            ));
        }
        Ok(Self {
            routes: RouteTable::new(targets),
            trusted: TrustedProxies::new(config.forwarding.trusted_proxies.clone()),
            unrouted: Arc::new(telemetry.route_labels(
                SharedString::const_str(NO_ROUTE),
                SharedString::const_str(""),
            )),
            telemetry,
            body_idle_timeout: config.server.value.body_idle_timeout.0,
        })
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The connection's peer, with the forwarding values it earns.
    pub fn peer(&self, addr: SocketAddr) -> Arc<Peer> {
        Arc::new(Peer::new(addr, &self.trusted))
    }

    /// Serves one request from `peer`; never fails: every outcome is a response.
    pub async fn handle(
        self: Arc<Self>,
        peer: Arc<Peer>,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        #[allow(clippy::disallowed_methods)] // the edge: the request starts now
        let start = Instant::now();

        // 2. early
        let request_id = match request.headers().get(X_REQUEST_ID) {
            Some(id) if peer.trusted && proxy::acceptable_request_id(id) => id.clone(),
            _ => proxy::new_request_id(),
        };
        let mut record = RequestRecord {
            start,
            request_id,
            client: self
                .trusted
                .client_address(peer.addr.ip(), request.headers()),
            method: request.method().clone(),
            path: None,
            route: None,
            status: 0,
            code: None,
        };

        let mut response = match self.forward(request, &peer, &mut record).await {
            Ok(response) => response,
            Err(refusal) => {
                record.code = Some(refusal.code());
                let mut response: Response<ResponseBody> = refusal.response();
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
        };

        // 10. response
        proxy::harden_response(response.headers_mut());
        response
            .headers_mut()
            .insert(X_REQUEST_ID, record.request_id.clone());
        record.status = response.status().as_u16();

        // 11. record
        let finished = Finished::new(self.telemetry.clone(), record, self.unrouted.clone());
        response.map(|body| body.with_record(finished))
    }

    /// Phases 3, 4 and 9: sanitize, route, upstream.
    async fn forward(
        &self,
        mut request: Request<Incoming>,
        peer: &Peer,
        record: &mut RequestRecord,
    ) -> Result<Response<ResponseBody>, Refusal> {
        // 3. sanitize
        let path = path::normalize(request.uri().path()).map_err(|_| Refusal::BadTarget)?;
        if self.telemetry.logs_requests() {
            record.path = Some(path.to_string());
        }
        let authority = request_authority(&request).ok_or(Refusal::BadHost)?;
        let host = authority.host().to_ascii_lowercase();

        // 4. route
        let target = self
            .routes
            .find(Some(&host), &path)
            .ok_or(Refusal::NoRoute)?
            .clone();
        record.route = Some(target.labels.clone());

        // 9. upstream
        let upstream = &target.upstream;
        let uri = upstream.uri_for(&target.forwarded_path(&path), request.uri().query())?;
        let websocket = target.websocket
            && request.version() == Version::HTTP_11
            && proxy::is_websocket_upgrade(request.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        let switch = request.extensions().get::<TunnelSwitch>().cloned();
        let (mut parts, body) = request.into_parts();
        proxy::strip_hop_by_hop(&mut parts.headers, websocket);
        // The client's Host becomes X-Forwarded-Host; the upstream gets its own.
        let host = match parts.headers.remove(header::HOST) {
            Some(host) => Some(host),
            None => HeaderValue::from_str(authority.as_str()).ok(),
        };
        peer.set_forwarding_headers(&mut parts.headers, host);
        parts
            .headers
            .insert(X_REQUEST_ID, record.request_id.clone());
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let outbound = Request::from_parts(parts, IdleBody::new(body, self.body_idle_timeout));

        let mut response = upstream.send(outbound).await.inspect_err(|refusal| {
            self.telemetry
                .upstream_error(&upstream.name, refusal.code());
        })?;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        match (switching, client_upgrade) {
            (true, Some(client_upgrade)) => {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                // Before hyper writes the 101: the client sends WebSocket frames only after it.
                if let Some(switch) = switch {
                    switch.open();
                }
                tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
            }
            (true, None) => {
                self.telemetry
                    .upstream_error(&upstream.name, Refusal::UpstreamProtocol.code());
                return Err(Refusal::UpstreamProtocol);
            }
            (false, _) => {}
        }

        // 10. response (route part; the rest applies to every response in `handle`)
        let (mut parts, body) = response.into_parts();
        proxy::strip_hop_by_hop(&mut parts.headers, switching);
        for (name, value) in &target.response_headers {
            parts.headers.insert(name, value.clone());
        }
        Ok(Response::from_parts(
            parts,
            ResponseBody::upstream(IdleBody::new(body, upstream.body_idle_timeout)),
        ))
    }
}

/// The authority the client addressed: `:authority` (HTTP/2, absolute-form) or `Host`.
fn request_authority(request: &Request<Incoming>) -> Option<http::uri::Authority> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.clone(),
        None => {
            let host = request.headers().get(header::HOST)?;
            http::uri::Authority::try_from(host.as_bytes()).ok()?
        }
    };
    (!authority.as_str().contains('@') && !authority.host().is_empty()).then_some(authority)
}

/// Joins an upgraded client connection to the upgraded upstream connection (WebSocket).
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    if let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) {
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        // Either side closing ends the tunnel; there is nobody left to tell about an error.
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_segment_boundaries() {
        let target = |prefix: &str, to: &str| RouteTarget {
            labels: Arc::new(
                Telemetry::new(false)
                    .route_labels(SharedString::const_str("r"), SharedString::const_str("u")),
            ),
            upstream: Arc::new(
                UpstreamClient::new(
                    "u",
                    &serde_saphyr::from_str("url: http://127.0.0.1:1").unwrap(),
                    |p| p.to_path_buf(),
                )
                .unwrap(),
            ),
            rewrite: Some((prefix.to_owned(), to.to_owned())),
            websocket: false,
            response_headers: HeaderMap::new(),
        };
        assert_eq!(
            target("/api", "").forwarded_path("/api/patients/1"),
            "/patients/1"
        );
        assert_eq!(target("/api", "").forwarded_path("/api"), "/");
        assert_eq!(
            target("/api", "/fhir").forwarded_path("/api/Patient"),
            "/fhir/Patient"
        );
        assert_eq!(target("/api", "/fhir").forwarded_path("/api"), "/fhir");
    }
}
