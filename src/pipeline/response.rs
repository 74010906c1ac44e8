//! Phase 10, response: what every answer carries, and what a route's answers lose and gain.
//!
//! Runs on every response, proxied or refused. The upstream's answer loses its hop-by-hop
//! headers and any cookie in the gateway's own namespace, and gains the route's headers
//! (`no-store` on patient data unless the route says otherwise) and, on an authenticated
//! request, how long the session has left. Every answer then gets the security headers, its
//! `Server`/`X-Powered-By` removed, and the request id. An HTTP/1 connection is closed after a
//! refusal that may have left bytes unread.

use http::Response;
use http::header::{self, HeaderValue};

use crate::body::ResponseBody;
use crate::hardening;
use crate::proxy::{self, X_REQUEST_ID};
use crate::refusal::Refusal;
use crate::session::{self, Live};

use super::build::RouteTarget;
use super::upstream::Answer;

/// Phase 10, the route's part: the upstream's answer as the client will see it.
pub(super) fn from_upstream(
    answer: Answer,
    target: &RouteTarget,
    live: Option<&Live>,
    now: u64,
) -> Response<ResponseBody> {
    let (mut parts, body) = answer.response.into_parts();
    proxy::strip_hop_by_hop(&mut parts.headers, answer.switching);
    proxy::strip_gateway_cookies(&mut parts.headers);
    for (name, value) in &target.response_headers {
        parts.headers.insert(name, value.clone());
    }
    if let (Some(live), Some(auth)) = (live, &target.auth) {
        parts.headers.insert(
            session::EXPIRES_IN,
            HeaderValue::from(live.remaining(&auth.lifetimes, now)),
        );
    }
    Response::from_parts(parts, body.holding(answer.slot))
}

/// Phase 10, every response's part.
pub(super) fn finish(response: &mut Response<ResponseBody>, request_id: &HeaderValue) {
    hardening::harden_response(response.headers_mut());
    response
        .headers_mut()
        .insert(X_REQUEST_ID, request_id.clone());
}

/// HTTP/1: after a refusal of a malformed request, or of one whose body may be left unread,
/// nothing more is read from the connection (nginx does the same): the next pipelined request
/// would start wherever this one's bytes were left.
pub(super) fn closes_connection(http1: bool, had_body: bool, refusal: Refusal) -> bool {
    http1 && (had_body || refusal.is_malformed_request())
}

/// Marks `response` as the connection's last.
pub(super) fn close(response: &mut Response<ResponseBody>) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http1_connection_ends_after_a_refusal_that_may_leave_bytes() {
        let malformed = Refusal::BadHost;
        let clean = Refusal::NoRoute;
        assert!(malformed.is_malformed_request() && !clean.is_malformed_request());
        assert!(closes_connection(true, true, clean));
        assert!(closes_connection(true, false, malformed));
        assert!(!closes_connection(true, false, clean));
        // HTTP/2 streams are framed: the connection stays.
        assert!(!closes_connection(false, true, malformed));
    }

    #[test]
    fn every_answer_is_hardened_and_names_its_request() {
        let mut response = Refusal::NoRoute.response::<ResponseBody>();
        response
            .headers_mut()
            .insert(header::SERVER, HeaderValue::from_static("upstream/1.0"));
        finish(&mut response, &HeaderValue::from_static("req-1"));
        let headers = response.headers();
        assert_eq!(headers[X_REQUEST_ID], "req-1");
        assert!(!headers.contains_key(header::SERVER));
        for (name, value) in hardening::SECURITY_HEADERS {
            assert_eq!(headers[name], value, "{name}");
        }
    }
}
