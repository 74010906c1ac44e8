//! Phase 9, upstream: the request as the back end sees it, then sent.
//!
//! Runs last on the way in, after every check has passed. Takes one of the client's slots for
//! requests in flight (each holds an upstream connection until its response body is gone, so
//! one client may hold only so many: 429 `WG-RATE-003`). The head is rewritten here and nowhere
//! else: hop-by-hop headers, client-supplied identity headers, the gateway's own credentials and
//! method overrides removed; the length written canonically; the verified identity the route
//! asks for added (plain headers, a signed assertion); forwarding headers set from what the
//! gateway itself saw. The body is streamed under its size limit, or read whole and checked
//! (JSON and form shape, injection) when the route inspects it. Upstream failures are 502/504
//! (`proxy.rs`).

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::RngCore;

use crate::assertion::{self, AccessClaims, Claims};
use crate::body::{self, IdleBody, RequestBody, ResponseBody};
use crate::config::IdentityField;
use crate::per_address::Slot;
use crate::policy::{self, DataRule};
use crate::proxy::{self, Peer, X_REQUEST_ID};
use crate::refusal::Refusal;
use crate::sanitize;
use crate::sanitize::framing::TunnelSwitch;
use crate::sanitize::request::BodyPlan;
use crate::session::{self, Live};
use crate::telemetry::RequestRecord;

use super::authorize::{self, Allowed};
use super::build::{Gateway, RouteTarget};
use super::route;
use crate::refused::Refused;
use crate::settings::RouteAuth;

/// The upstream's URI for a normalized `path` and the client's query, on `target`'s upstream.
pub(super) fn upstream_uri(
    target: &RouteTarget,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, Refusal> {
    let path = match &target.rewrite {
        Some(rewrite) => rewrite.apply(path),
        None => Cow::Borrowed(path),
    };
    target.upstream.uri_for(&path, query)
}

/// What the earlier phases decided about a request about to leave.
pub(super) struct Outbound<'a> {
    pub(super) target: &'a RouteTarget,
    pub(super) uri: Uri,
    pub(super) authority: Authority,
    pub(super) plan: BodyPlan,
    pub(super) live: Option<&'a Live>,
    /// The access decision, on a route that carries patient data.
    pub(super) allowed: Option<&'a Allowed>,
}

/// Who is asking, and what the policy decided.
struct Identity<'a> {
    live: &'a Live,
    allowed: Option<&'a Allowed>,
}

/// The upstream's answer (its body cut when it stalls), with the client's slot it holds until
/// its body is gone.
pub(super) struct Answer {
    pub(super) response: Response<ResponseBody>,
    pub(super) switching: bool,
    pub(super) slot: Slot,
}

impl Gateway {
    /// Phase 9: sends the request upstream; `now` is unix seconds.
    pub(super) async fn upstream(
        &self,
        mut request: Request<Incoming>,
        outbound: Outbound<'_>,
        peer: &Peer,
        record: &RequestRecord,
        now: u64,
    ) -> Result<Answer, Refused> {
        let Outbound {
            target,
            uri,
            authority,
            plan,
            live,
            allowed,
        } = outbound;
        let slot = self
            .in_flight
            .try_take(record.client)
            .ok_or(Refusal::TooManyInFlight)?;
        let websocket = target.websocket
            && request.version() == Version::HTTP_11
            && proxy::is_websocket_upgrade(request.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        let switch = request.extensions().get::<TunnelSwitch>().cloned();
        let (mut parts, body) = request.into_parts();
        rewrite_head(
            &mut parts.headers,
            &self.strip_headers,
            websocket,
            &authority,
            peer,
        )?;
        if let (Some(live), Some(auth)) = (live, &target.auth) {
            let route = &target.labels.route;
            let identity = Identity { live, allowed };
            self.add_identity(
                &mut parts.headers,
                identity,
                auth,
                route,
                now,
                &mut rand::rng(),
            );
        }
        parts
            .headers
            .insert(X_REQUEST_ID, record.request_id.clone());
        if matches!(target.data, Some(DataRule::Fhir { .. })) {
            // The answer is checked before it leaves: FHIR JSON, not content-encoded.
            parts.headers.insert(
                header::ACCEPT,
                HeaderValue::from_static("application/fhir+json"),
            );
            parts.headers.remove(header::ACCEPT_ENCODING);
        }
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
                let bytes = body::read_limited(body, limit)
                    .await
                    .map_err(Refusal::from)?;
                if let Some(finding) = target.rules.check_body(kind, &bytes)? {
                    route::log_finding(&record.request_id, &finding);
                }
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                RequestBody::Buffered(Some(bytes))
            }
        };
        let outbound = Request::from_parts(parts, body);

        let upstream = &target.upstream;
        let mut response = upstream.send(outbound).await.map_err(|failure| {
            self.telemetry
                .upstream_error(&upstream.name, failure.refusal.code());
            let cause = format!("upstream {}: {}", upstream.name, failure.cause);
            Refused::because(failure.refusal, &cause)
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
                let cause = format!(
                    "upstream {}: 101 Switching Protocols to a request that asked for no upgrade",
                    upstream.name
                );
                return Err(Refused::because(Refusal::UpstreamProtocol, &cause));
            }
            (false, _) => {}
        }
        let idle = upstream.body_idle_timeout;
        Ok(Answer {
            response: response.map(|body| ResponseBody::upstream(IdleBody::new(body, idle))),
            switching,
            slot,
        })
    }

    /// What the route asked to tell the upstream about the user (and, on patient-data routes,
    /// the access decision), and nothing more.
    fn add_identity(
        &self,
        headers: &mut HeaderMap,
        identity: Identity<'_>,
        auth: &RouteAuth,
        route: &str,
        now: u64,
        rng: &mut dyn RngCore,
    ) {
        let Identity { live, allowed } = identity;
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
            let mut jti = [0u8; 16];
            rng.fill_bytes(&mut jti);
            let session_hash = sha2::Sha256::digest(live.key.0);
            let mut claims = Claims::new(
                live.user.to_string(),
                route,
                now,
                assertion::DEFAULT_TTL,
                live.auth_time,
                &session_hash,
                jti,
            );
            if fields.contains(&IdentityField::Name) {
                claims = claims.with_name(live.name.clone());
            }
            if fields.contains(&IdentityField::Roles) {
                claims = claims.with_roles(live.roles.clone());
            }
            if let Some(allowed) = allowed {
                let fhir = self.policy.as_ref().and_then(|p| p.fhir.as_ref());
                claims = claims.with_access(AccessClaims {
                    purpose_of_use: policy::purpose_of_use(allowed.decisions.iter().map(|d| d.1)),
                    grants: allowed.grants(),
                    patient: allowed.patient.clone(),
                    scopes: authorize::scopes(fhir, allowed),
                });
            }
            if let Ok(value) = HeaderValue::from_str(&self.assertion.sign(&claims)) {
                headers.insert(HeaderName::from_static(assertion::HEADER), value);
            }
        }
    }
}

/// The client's head made fit for the upstream, before the verified identity is added.
fn rewrite_head(
    headers: &mut HeaderMap,
    strip: &[String],
    websocket: bool,
    authority: &Authority,
    peer: &Peer,
) -> Result<(), Refusal> {
    proxy::strip_hop_by_hop(headers, websocket);
    proxy::strip_identity_headers(headers, strip);
    session::strip_credentials(headers);
    // Checked against the route's methods in `check_head`; the back end sees the real one.
    for name in &sanitize::request::METHOD_OVERRIDE_HEADERS {
        headers.remove(name);
    }
    // The length the gateway read, written canonically (`0005` and `010` never reach a back
    // end that might read them as octal); a body read whole gets its counted length later.
    if let Some(length) = sanitize::request::content_length(headers)? {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    // The authority that was checked becomes X-Forwarded-Host (a `Host` that disagrees with an
    // absolute-form target or `:authority` is ignored, RFC 9112 3.2.2); the upstream gets its
    // own Host.
    let host = match headers.remove(header::HOST) {
        Some(host)
            if host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Some(host)
        }
        _ => HeaderValue::from_str(authority.as_str()).ok(),
    };
    peer.set_forwarding_headers(headers, host);
    Ok(())
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
    use crate::proxy::TrustedProxies;

    #[test]
    fn the_upstream_sees_no_client_claims_and_the_checked_authority() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "gw.example"),
            ("x-wardgate-user", "chief"),
            ("x-wardgate-roles", "physician"),
            ("x-tenant", "other"),
            ("x-http-method-override", "DELETE"),
            ("content-length", "0005"),
            ("connection", "x-keep"),
            ("x-keep", "1"),
            ("x-forwarded-host", "evil.example"),
            ("accept", "application/json"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let peer = Peer::new(
            "198.51.100.4:4000".parse().unwrap(),
            &TrustedProxies::new(Vec::new()),
        );
        let authority = Authority::from_static("gw.example");
        rewrite_head(
            &mut headers,
            &["x-tenant".to_owned()],
            false,
            &authority,
            &peer,
        )
        .unwrap();
        for gone in [
            "host",
            "x-wardgate-user",
            "x-wardgate-roles",
            "x-tenant",
            "x-http-method-override",
            "connection",
            "x-keep",
        ] {
            assert!(!headers.contains_key(gone), "{gone} reached the upstream");
        }
        assert_eq!(headers["content-length"], "5");
        assert_eq!(headers["x-forwarded-host"], "gw.example");
        assert_eq!(headers["x-forwarded-for"], "198.51.100.4");
        assert_eq!(headers["accept"], "application/json");
    }
}
