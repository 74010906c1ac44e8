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
//!  3 sanitize      sanitize/   URI length, path rules, then the path normalized once (path.rs),
//!                              host in server_names: refusals 400/414
//!  3a own API      auth/enrollment.rs  paths under /.wardgate/ are the gateway's own: per-client
//!                  pages/      rate limit (route label /.wardgate/), then answered here, never
//!                              routed or proxied: /.wardgate/api/ as JSON, the rest as HTML
//!                              pages (refusals too); unknown paths 404 WG-AUTH-006
//!  4 route         route.rs    host + normalized path (never the query) -> route, or 404; the
//!                              route's rules (sanitize/request.rs): method 405, content type
//!                              415, announced size 413, query injection 400
//!  5 rate limit    ratelimit   per client address, before any body is read: 429
//!  6 authenticate  -           session / bearer token, MFA          (issue: accounts, sessions)
//!  7 authorize     -           role x data category x patient       (issue: policy)
//!  8 rate limit    ratelimit   per route now; per user once there are users: 429
//!  9 upstream      proxy.rs    a slot among the client's requests in flight (429
//!                              WG-RATE-003); body streamed with its size limit, or read whole and checked
//!                              (JSON/form shape and injection); hop-by-hop and forwarding
//!                              headers rewritten; pooled client; timeouts -> 502/504
//! 10 response      here        security headers, route headers, no-store on patient data,
//!                              upstream Server/X-Powered-By removed, X-Request-Id returned
//! 11 record        telemetry   one log line and metrics when the response body ends or the
//!                              client leaves (the audit trail will hang off this point)
//! ```
//!
//! Phases 6 and 7 are not built yet: today every route must say `auth: none`. They will slot in
//! between the two rate-limit checks below.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics::SharedString;

use bytes::Bytes;

use crate::assertion::{self, AssertionKey, Claims};
use crate::auth::enrollment::{self, Enrollment};
use crate::auth::events::SecurityEvents;
use crate::auth::login::{self, Login, SecondFactors};
use crate::auth::password::{HashPool, Hasher};
use crate::auth::webauthn::Passkeys;
use crate::body::{self, IdleBody, RequestBody, ResponseBody};
use crate::clock::Clock;
use crate::config::Loaded;
use crate::config::{AuthMode, IdentityField};
use crate::identity::IdentityStore;
use crate::identity::Keyring;
use crate::pages::{self, PageRequest};
use crate::path;
use crate::per_address::PerAddress;
use crate::proxy::{self, Peer, TrustedProxies, UpstreamClient, X_REQUEST_ID};
use crate::ratelimit::{Decision, DenyCause, Limiter, LocalLimiter, Stage, Subject};
use crate::refusal::Refusal;
use crate::route::RouteTable;
use crate::sanitize;
use crate::sanitize::framing::TunnelSwitch;
use crate::sanitize::injection::Finding;
use crate::sanitize::request::{BodyPlan, RouteRules};
use crate::server::StartError;
use crate::session::{self, Lifetimes, Live, Sessions};
use crate::telemetry::{Finished, NO_ROUTE, RequestRecord, RouteLabels, Telemetry};

/// What a protected route asks of the session and tells the upstream.
struct RouteAuth {
    lifetimes: Lifetimes,
    headers: Vec<IdentityField>,
    assertion: Option<Vec<IdentityField>>,
}

/// Everything a matched route decides.
pub struct RouteTarget {
    auth: Option<RouteAuth>,
    labels: Arc<RouteLabels>,
    upstream: Arc<UpstreamClient>,
    rewrite: Option<(String, String)>,
    websocket: bool,
    response_headers: HeaderMap,
    rules: RouteRules,
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
    server_names: Vec<String>,
    allow_encoded_slash: bool,
    allow_underscores: bool,
    limiter: Arc<dyn Limiter>,
    /// Upstream requests in flight per client address (`server.max_upstream_requests_per_client`).
    in_flight: Arc<PerAddress>,
    max_request_line: u64,
    enrollment: Enrollment,
    login: Login,
    assertion: AssertionKey,
    /// Identity headers removed from every request besides the built-in ones.
    strip_headers: Vec<String>,
    /// Labels for the gateway's own API in logs and metrics.
    own_api: Arc<RouteLabels>,
    clock: Clock,
}

/// The account side of the gateway, opened before it is built.
pub struct Accounts {
    pub store: Arc<dyn IdentityStore>,
    pub keyring: Arc<Keyring>,
    pub assertion: AssertionKey,
    pub events: SecurityEvents,
}

impl Gateway {
    pub fn new(
        loaded: &Loaded,
        telemetry: Arc<Telemetry>,
        accounts: Accounts,
        clock: Clock,
    ) -> Result<Self, StartError> {
        let config = &loaded.config;
        let hashing = &config.auth.password.hashing;
        let pool = Arc::new(
            HashPool::new(
                Hasher::new(hashing.params.clone())?,
                hashing.threads(),
                hashing.queue,
                hashing.nice,
            )
            .map_err(StartError::HashPool)?,
        );
        // Checked here, before a port is bound: a login must not fail on a bad setting.
        let totp = config.auth.totp.params()?;
        let lockout = config.auth.lockout.policy()?;
        let passkeys = match &config.auth.webauthn {
            Some(webauthn) => Some(Arc::new(Passkeys::new(&webauthn.value)?)),
            None => None,
        };
        let sessions = Arc::new(Sessions::new(
            accounts.store.clone(),
            accounts.keyring,
            &config.session.value,
        ));
        let enrollment = Enrollment::new(
            accounts.store.clone(),
            pool.clone(),
            config.auth.password.policy,
            config.auth.totp.clone(),
            passkeys.clone(),
            config.auth.mfa.clone(),
            accounts.events.clone(),
        );
        enrollment.end_with_sessions(&sessions);
        let login = Login::new(
            accounts.store,
            pool,
            sessions,
            accounts.events,
            SecondFactors {
                totp,
                passkeys,
                mfa: config.auth.mfa.clone(),
            },
            lockout,
        );
        let labels: Vec<String> = config.routes.value.iter().map(|r| r.label()).collect();
        let limiter = LocalLimiter::new(
            &config.rate_limits,
            labels
                .iter()
                .map(String::as_str)
                .zip(config.routes.value.iter().map(|r| &r.rate_limit))
                .chain([(enrollment::PREFIX, &config.auth.login_rate_limit)]),
        )?;
        let global_lifetimes = config.session.value.lifetimes();
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
            let name = SharedString::from(route.label());
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
            let auth = (route.auth == AuthMode::Session).then(|| {
                let identity = route.identity.as_ref().map(|i| i.value.clone());
                RouteAuth {
                    lifetimes: global_lifetimes.narrowed(
                        route.session.idle_timeout.map(|d| d.0),
                        route.session.absolute_timeout.map(|d| d.0),
                        route.reauth_within.map(|d| d.0),
                    ),
                    headers: identity
                        .as_ref()
                        .map(|i| i.headers.clone())
                        .unwrap_or_default(),
                    assertion: identity.and_then(|i| i.assertion),
                }
            });
            let target = RouteTarget {
                auth,
                labels: Arc::new(telemetry.route_labels(name, upstream.name.clone())),
                upstream: upstream.clone(),
                rewrite: route
                    .rewrite
                    .as_ref()
                    .map(|r| (r.value.prefix.clone(), r.value.to.clone())),
                websocket: route.websocket,
                response_headers,
                rules: RouteRules::new(&config.sanitize.value, &route.sanitize),
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
            own_api: Arc::new(telemetry.route_labels(
                SharedString::const_str(enrollment::PREFIX),
                SharedString::const_str(""),
            )),
            telemetry,
            body_idle_timeout: config.server.value.body_idle_timeout.0,
            server_names: config.sanitize.value.host_names(),
            allow_encoded_slash: config.sanitize.value.allow_encoded_slash,
            allow_underscores: config.sanitize.value.allow_underscores_in_headers,
            limiter: Arc::new(limiter),
            in_flight: PerAddress::new(config.server.value.max_upstream_requests_per_client),
            max_request_line: config.server.value.max_request_line.0,
            enrollment,
            login,
            assertion: accounts.assertion,
            strip_headers: config
                .forwarding
                .strip_headers
                .iter()
                .map(|name| proxy::identity_header_key(&name.value).into_owned())
                .collect(),
            clock,
        })
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        self.login.sessions()
    }

    /// Forgets expired login and enrollment state and dead sessions (`now`: unix seconds).
    pub async fn prune(&self, now: u64) -> Result<usize, crate::session::SessionError> {
        self.login.prune(now);
        self.enrollment.prune(now);
        self.sessions().prune(now).await
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn limiter(&self) -> &Arc<dyn Limiter> {
        &self.limiter
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
        // The edge: unix seconds for every expiry check below.
        let now = (self.clock)();

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

        // HTTP/1: after a refusal of a malformed request, or of one whose body may be left
        // unread, nothing more is read from the connection (nginx does the same): the next
        // pipelined request would start wherever this one's bytes were left.
        let http1 = request.version() < Version::HTTP_2;
        let had_body = !request.body().is_end_stream();
        let mut response = match self.forward(request, &peer, &mut record, now).await {
            Ok(response) => response,
            Err(refused) => {
                record.code = Some(refused.refusal.code());
                let close = http1 && (had_body || refused.refusal.is_malformed_request());
                let mut response = refused.into_response();
                if close {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
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

    /// Phases 3, 3a, 4 and 9: sanitize, the own API, route, upstream; `now` is unix seconds.
    async fn forward(
        &self,
        mut request: Request<Incoming>,
        peer: &Peer,
        record: &mut RequestRecord,
        now: u64,
    ) -> Result<Response<ResponseBody>, Refused> {
        // 3. sanitize
        // HTTP/1 request lines are measured below hyper (sanitize::framing); HTTP/2 ones here.
        let uri_length = request
            .uri()
            .path_and_query()
            .map_or(0, |p| p.as_str().len());
        if uri_length as u64 > self.max_request_line {
            return Err(Refusal::UriTooLong.into());
        }
        let raw_path = request.uri().path();
        let logs = self.telemetry.logs_requests();
        if logs {
            // A refused path is logged as sent; a passed one as normalized (below).
            record.path = Some(raw_path.to_owned());
        }
        sanitize::request::check_path(raw_path, self.allow_encoded_slash)?;
        let path = path::normalize(raw_path).map_err(|_| Refusal::BadTarget)?;
        if logs && path != raw_path {
            record.path = Some(path.to_string());
        }
        sanitize::request::check_headers(
            request.headers(),
            request.version(),
            self.allow_underscores,
        )?;
        let authority = request_authority(&request).ok_or(Refusal::BadHost)?;
        let host = authority.host().to_ascii_lowercase();
        sanitize::request::check_host(&host, &self.server_names)?;

        // 3a. the gateway's own API: never routed, never proxied.
        if enrollment::is_reserved(&path) {
            record.route = Some(self.own_api.clone());
            // The login limit is for attempts; the gateway's stylesheet and script share the
            // ordinary per-client limit, so quick page loads never lose a page its own assets.
            let limit = if pages::is_asset(&path) {
                pages::ASSET_PREFIX
            } else {
                enrollment::PREFIX
            };
            let decision = self.limiter.check(&Subject {
                stage: Stage::Anonymous,
                route: limit,
                client: record.client,
                user: None,
            });
            let path = path.into_owned();
            // Pages answer refusals as pages, the JSON API as JSON, the rate limit's included.
            if pages::is_page(&path) {
                let page = PageRequest::new(
                    request,
                    &authority,
                    self.body_idle_timeout,
                    now,
                    record.client,
                );
                return match deny(&decision) {
                    Ok(()) => pages::handle(&self.enrollment, &self.login, page, &path).await,
                    Err(refused) => Err(refused),
                }
                .map_err(Refused::in_html);
            }
            deny(&decision)?;
            return self.own_api(request, &path, record.client, now).await;
        }

        // 4. route
        let target = self
            .routes
            .find(Some(&host), &path)
            .ok_or(Refusal::NoRoute)?
            .clone();
        record.route = Some(target.labels.clone());
        let has_body = !request.body().is_end_stream();
        let plan = target
            .rules
            .check_head(
                request.method(),
                request.headers(),
                request.uri().query(),
                has_body,
            )
            .map_err(|refusal| match refusal {
                Refusal::MethodNotAllowed => Refused::with_header(
                    refusal,
                    header::ALLOW,
                    target.rules.allow_header().clone(),
                ),
                _ => refusal.into(),
            })?;

        if let Some(query) = request.uri().query()
            && let Some(finding) = target.rules.check_query(query)?
        {
            log_finding(&record.request_id, &finding);
        }

        // 5. rate limit (anonymous): per client address, before any body is read.
        let mut subject = Subject {
            stage: Stage::Anonymous,
            route: &target.labels.route,
            client: record.client,
            user: None,
        };
        deny(&self.limiter.check(&subject))?;

        // 6. authenticate: a live session on protected routes.
        let live = match &target.auth {
            Some(auth) => Some(self.authenticate(&request, auth, now).await?),
            None => None,
        };
        // 7. authorize: not built yet (issue: policy).
        // 8. rate limit (per identity): per user, per route, per user and route.
        let user_id = live.as_ref().map(|live| live.user.to_string());
        subject.user = user_id.as_deref();
        subject.stage = Stage::Identified;
        deny(&self.limiter.check(&subject))?;

        // 9. upstream: each request in flight holds an upstream connection until its response
        // body is gone, so one client may hold only so many.
        let slot = self
            .in_flight
            .try_take(record.client)
            .ok_or(Refusal::TooManyInFlight)?;
        let upstream = &target.upstream;
        let uri = upstream.uri_for(&target.forwarded_path(&path), request.uri().query())?;
        let websocket = target.websocket
            && request.version() == Version::HTTP_11
            && proxy::is_websocket_upgrade(request.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        let switch = request.extensions().get::<TunnelSwitch>().cloned();
        let (mut parts, body) = request.into_parts();
        proxy::strip_hop_by_hop(&mut parts.headers, websocket);
        proxy::strip_identity_headers(&mut parts.headers, &self.strip_headers);
        session::strip_credentials(&mut parts.headers);
        // Checked against the route's methods in `check_head`; the back end sees the real one.
        for name in &sanitize::request::METHOD_OVERRIDE_HEADERS {
            parts.headers.remove(name);
        }
        // The length the gateway read, written canonically (`0005` and `010` never reach a back
        // end that might read them as octal); a body read whole gets its counted length below.
        if let Some(length) = sanitize::request::content_length(&parts.headers)? {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        if let (Some(live), Some(auth)) = (&live, &target.auth) {
            self.add_identity(&mut parts.headers, live, auth, &target.labels.route, now);
        }
        // The authority that was checked becomes X-Forwarded-Host (a `Host` that disagrees with
        // an absolute-form target or `:authority` is ignored, RFC 9112 3.2.2); the upstream
        // gets its own Host.
        let host = match parts.headers.remove(header::HOST) {
            Some(host)
                if host
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
            {
                Some(host)
            }
            _ => HeaderValue::from_str(authority.as_str()).ok(),
        };
        peer.set_forwarding_headers(&mut parts.headers, host);
        parts
            .headers
            .insert(X_REQUEST_ID, record.request_id.clone());
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let body = IdleBody::new(body, self.body_idle_timeout);
        let body = match plan {
            BodyPlan::Empty => RequestBody::Streamed {
                inner: body,
                left: 0,
            },
            BodyPlan::Stream { limit } => RequestBody::Streamed {
                inner: body,
                left: limit,
            },
            BodyPlan::Inspect { kind, limit } => {
                let bytes = body::read_limited(body, limit).await?;
                if let Some(finding) = target.rules.check_body(kind, &bytes)? {
                    log_finding(&record.request_id, &finding);
                }
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                RequestBody::Buffered(Some(bytes))
            }
        };
        let outbound = Request::from_parts(parts, body);

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
                return Err(Refusal::UpstreamProtocol.into());
            }
            (false, _) => {}
        }

        // 10. response (route part; the rest applies to every response in `handle`)
        let (mut parts, body) = response.into_parts();
        proxy::strip_hop_by_hop(&mut parts.headers, switching);
        proxy::strip_gateway_cookies(&mut parts.headers);
        for (name, value) in &target.response_headers {
            parts.headers.insert(name, value.clone());
        }
        if let (Some(live), Some(auth)) = (&live, &target.auth) {
            parts.headers.insert(
                SESSION_EXPIRES_IN,
                HeaderValue::from(live.remaining(&auth.lifetimes, now)),
            );
        }
        Ok(Response::from_parts(
            parts,
            ResponseBody::upstream(IdleBody::new(body, upstream.body_idle_timeout)).holding(slot),
        ))
    }
}

/// An injection finding on a route in `log` mode: the field is named, its value never is.
/// On every response to an authenticated request: seconds until the session ends (the earlier
/// of its idle and absolute expiry under the route's caps), so apps can warn before it does.
pub const SESSION_EXPIRES_IN: HeaderName = HeaderName::from_static("wardgate-session-expires-in");

impl Gateway {
    /// The gateway's own endpoints under `/.wardgate/`.
    async fn own_api(
        &self,
        request: Request<Incoming>,
        path: &str,
        client: std::net::IpAddr,
        now: u64,
    ) -> Result<Response<ResponseBody>, Refused> {
        let idle = self.body_idle_timeout;
        if path == assertion::JWKS_PATH {
            return Ok(crate::auth::api::ok(&self.assertion.jwks()));
        }
        if path.starts_with(enrollment::API_PREFIX) {
            return self.enrollment.handle(request, path, idle, now).await;
        }
        self.login.handle(request, path, client, idle, now).await
    }

    /// Phase 6: the live session of a protected route, or the refusal that says why not.
    /// Browsers asking for a page are sent to the login page with the original target.
    async fn authenticate(
        &self,
        request: &Request<Incoming>,
        auth: &RouteAuth,
        now: u64,
    ) -> Result<Arc<Live>, Refused> {
        let presented = session::presented(request.headers());
        let ended = match presented {
            Some((_, token)) => match self.sessions().check(token, &auth.lifetimes, now).await {
                Ok(Ok(live)) => return Ok(live),
                Ok(Err(ended)) => ended,
                Err(error) => return Err(crate::auth::api::unavailable(&error)),
            },
            None => session::Ended::Missing,
        };
        let refusal = login::ended_refusal(ended);
        if wants_html(request) {
            let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let location = format!(
                "{}?return_to={}&reason={}",
                login::LOGIN_PAGE,
                percent_encode(target),
                ended.reason()
            );
            if let Ok(location) = HeaderValue::from_str(&location) {
                return Err(Refused::redirect(refusal, location));
            }
        }
        let challenge = match (presented, ended) {
            (None, _) => r#"Bearer realm="wardgate""#.to_owned(),
            (Some(_), session::Ended::StepUp) => format!(
                r#"Bearer realm="wardgate", error="insufficient_user_authentication", error_description="{}""#,
                ended.reason()
            ),
            (Some(_), _) => format!(
                r#"Bearer realm="wardgate", error="invalid_token", error_description="{}""#,
                ended.reason()
            ),
        };
        Err(Refused::with_header(
            refusal,
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer")),
        ))
    }

    /// Phase 9: what the route asked to tell the upstream about the user, and nothing more.
    fn add_identity(
        &self,
        headers: &mut HeaderMap,
        live: &Live,
        auth: &RouteAuth,
        route: &str,
        now: u64,
    ) {
        for field in &auth.headers {
            let (name, value) = match field {
                IdentityField::Id => ("x-wardgate-user-id", live.user.to_string()),
                IdentityField::Name => ("x-wardgate-user", live.name.clone()),
                IdentityField::Roles => ("x-wardgate-roles", live.roles.join(",")),
            };
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        if let Some(fields) = &auth.assertion {
            use sha2::Digest;
            let session_hash = sha2::Sha256::digest(live.key.0);
            let mut claims = Claims::new(
                live.user.to_string(),
                route,
                now,
                assertion::DEFAULT_TTL,
                live.auth_time,
                &session_hash,
                rand::random(),
            );
            if fields.contains(&IdentityField::Name) {
                claims = claims.with_name(live.name.clone());
            }
            if fields.contains(&IdentityField::Roles) {
                claims = claims.with_roles(live.roles.clone());
            }
            if let Ok(value) = HeaderValue::from_str(&self.assertion.sign(&claims)) {
                headers.insert(HeaderName::from_static(assertion::HEADER), value);
            }
        }
    }
}

/// A browser navigating to a page (not a script or an API client).
fn wants_html(request: &Request<Incoming>) -> bool {
    (request.method() == http::Method::GET || request.method() == http::Method::HEAD)
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

/// Percent-encodes everything but unreserved characters and `/`, for a query value.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn log_finding(request_id: &HeaderValue, finding: &Finding) {
    tracing::warn!(
        target: "wardgate::security",
        request_id = request_id.to_str().unwrap_or_default(),
        code = finding.attack.code(),
        field = %finding.field,
        "injection pattern let through (injection.mode: log)"
    );
}

/// A rate-limit denial as a refusal, with its `Retry-After` and `RateLimit` headers.
fn deny(decision: &Decision) -> Result<(), Refused> {
    match decision {
        Decision::Deny { cause, .. } => Err(Refused {
            refusal: match cause {
                DenyCause::Exhausted => Refusal::RateLimited,
                DenyCause::TooManyKeys => Refusal::RateLimitFull,
            },
            headers: decision.headers(),
            body: None,
            redirect: None,
            html: false,
        }),
        Decision::Allow { .. } => Ok(()),
    }
}

/// A refusal, with the headers some carry (`Allow` on a 405, `Retry-After` and the
/// `RateLimit` headers on a 429) and, rarely, a body with more than the fixed reason (the
/// password rules a refused password failed, or the form again with its errors). Refusals on
/// the gateway's own pages are HTML pages; all others are JSON.
pub struct Refused {
    refusal: Refusal,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Bytes>,
    /// A browser is sent here (303) instead of reading the refusal.
    redirect: Option<HeaderValue>,
    html: bool,
}

impl Refused {
    pub fn with_header(refusal: Refusal, name: HeaderName, value: HeaderValue) -> Self {
        Self {
            refusal,
            headers: vec![(name, value)],
            body: None,
            redirect: None,
            html: false,
        }
    }

    /// 405 with the methods that are allowed.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::with_header(
            Refusal::MethodNotAllowed,
            header::ALLOW,
            HeaderValue::from_static(allow),
        )
    }

    pub fn refusal(&self) -> Refusal {
        self.refusal
    }

    /// The refusal with `html` as its page (a form shown again with its errors).
    pub fn page(refusal: Refusal, html: Bytes) -> Self {
        Self {
            refusal,
            headers: Vec::new(),
            body: Some(html),
            redirect: None,
            html: true,
        }
    }

    /// Answered as an HTML page: the fixed refusal page unless it already has one.
    pub fn in_html(mut self) -> Self {
        self.html = true;
        self
    }

    /// The one place a refusal becomes a response: status, body, `no-store`, its headers.
    fn into_response(self) -> Response<ResponseBody> {
        let mut response: Response<ResponseBody> = if self.html {
            pages::refusal_response(self.refusal, self.body)
        } else {
            let mut response = self.refusal.response();
            if let Some(body) = self.body {
                *response.body_mut() = ResponseBody::from(body);
            }
            response
        };
        if let Some(location) = self.redirect {
            *response.status_mut() = StatusCode::SEE_OTHER;
            response.headers_mut().insert(header::LOCATION, location);
        }
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }

    /// The refusal and its extra headers, for tests of the modules that refuse.
    #[cfg(test)]
    pub(crate) fn parts(&self) -> (Refusal, &[(HeaderName, HeaderValue)]) {
        (self.refusal, &self.headers)
    }

    /// `body` replaces the fixed one; it must be JSON carrying the refusal's code.
    pub fn with_body(refusal: Refusal, body: Bytes) -> Self {
        Self {
            refusal,
            headers: Vec::new(),
            body: Some(body),
            redirect: None,
            html: false,
        }
    }

    /// A browser asked for a page it may not see yet: it is sent to `location` (303).
    pub fn redirect(refusal: Refusal, location: HeaderValue) -> Self {
        Self {
            refusal,
            headers: Vec::new(),
            body: None,
            redirect: Some(location),
            html: false,
        }
    }
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Self {
            refusal,
            headers: Vec::new(),
            body: None,
            redirect: None,
            html: false,
        }
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
            auth: None,
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
            rules: RouteRules::new(&Default::default(), &Default::default()),
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
