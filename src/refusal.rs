//! Every way the gateway itself answers instead of the upstream, in one place.
//!
//! A refusal is a small fixed response: a status, a stable code that operators can search for
//! in the README and the logs, and a one-line reason. It never carries internal detail: no
//! upstream error text, no addresses, no file paths. Causes are logged; clients get the code.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request target is not an absolute path, or its percent-encoding is broken.
    BadTarget,
    /// No usable `Host` / `:authority`.
    BadHost,
    /// No route matches the host and normalized path.
    NoRoute,
    /// The upstream refused or reset the connection, or could not be resolved.
    UpstreamUnavailable,
    /// The upstream did not connect or answer in time.
    UpstreamTimeout,
    /// The upstream answered with something that is not HTTP.
    UpstreamProtocol,
    /// Plain HTTP request for something other than a redirect, or a redirect without a host.
    HttpsRequired,
    /// Admin listener: unknown path or method.
    AdminNotFound,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::BadTarget | Refusal::BadHost | Refusal::HttpsRequired => {
                StatusCode::BAD_REQUEST
            }
            Refusal::NoRoute | Refusal::AdminNotFound => StatusCode::NOT_FOUND,
            Refusal::UpstreamUnavailable | Refusal::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::BadTarget => "WG-REQ-001",
            Refusal::BadHost => "WG-REQ-002",
            Refusal::HttpsRequired => "WG-REQ-003",
            Refusal::NoRoute => "WG-ROUTE-001",
            Refusal::UpstreamUnavailable => "WG-UP-001",
            Refusal::UpstreamTimeout => "WG-UP-002",
            Refusal::UpstreamProtocol => "WG-UP-003",
            Refusal::AdminNotFound => "WG-ADMIN-001",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::BadTarget => "the request path is malformed",
            Refusal::BadHost => "the request has no valid host",
            Refusal::HttpsRequired => "use https",
            Refusal::NoRoute => "no such resource",
            Refusal::UpstreamUnavailable => "the service behind the gateway is unavailable",
            Refusal::UpstreamTimeout => "the service behind the gateway did not answer in time",
            Refusal::UpstreamProtocol => "the service behind the gateway sent an invalid answer",
            Refusal::AdminNotFound => "no such admin resource",
        }
    }

    /// The fixed JSON body: `{"error":"WG-…","message":"…"}`.
    pub fn body(self) -> Bytes {
        json_body(self.code(), self.reason())
    }

    /// A complete response (status, body, content type) for `body`'s type.
    pub fn response<B: From<Bytes>>(self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.body()));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The refusal body for a code and a one-line reason (both fixed text of the gateway's own).
pub fn json_body(code: &str, reason: &str) -> Bytes {
    Bytes::from(format!(r#"{{"error":"{code}","message":"{reason}"}}"#))
}

/// A whole HTTP/1.1 refusal as bytes, for the layers below hyper that must answer on the raw
/// connection: the same body and security headers as every other refusal, then the connection
/// closes.
pub fn http1_bytes(status: StatusCode, code: &str, reason: &str) -> Vec<u8> {
    let body = json_body(code, reason);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in crate::proxy::SECURITY_HEADERS {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_bodies_are_json() {
        let all = [
            Refusal::BadTarget,
            Refusal::BadHost,
            Refusal::NoRoute,
            Refusal::UpstreamUnavailable,
            Refusal::UpstreamTimeout,
            Refusal::UpstreamProtocol,
            Refusal::HttpsRequired,
            Refusal::AdminNotFound,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
        for refusal in all {
            let body: serde_json::Value = serde_json::from_slice(&refusal.body()).unwrap();
            assert_eq!(body["error"], refusal.code());
        }
    }

    #[test]
    fn raw_refusals_are_complete_http_responses() {
        let raw =
            String::from_utf8(http1_bytes(StatusCode::BAD_REQUEST, "WG-X-001", "bad")).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains("\r\nx-content-type-options: nosniff"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(body, r#"{"error":"WG-X-001","message":"bad"}"#);
    }
}
