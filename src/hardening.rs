//! Response hardening: what every answer carries and loses, whoever produced it (an upstream,
//! the gateway's own API, a refusal, a raw refusal below hyper).
//!
//! **The threat.** A browser that caches, frames or sniffs a patient-data response, or an
//! attacker who reads the upstream's software banner to pick an exploit. **The rule.** Every
//! response gets HSTS, `nosniff`, `no-referrer` and `DENY` framing, and loses `Server` and
//! `X-Powered-By`. **The standard.** OWASP ASVS 5 V3.4 (browser security headers), RFC 6797.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// Security headers on every response, whoever produced it.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// Removes what upstreams say about their software and sets [`SECURITY_HEADERS`].
pub fn harden_response(headers: &mut HeaderMap) {
    headers.remove(header::SERVER);
    headers.remove(HeaderName::from_static("x-powered-by"));
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_lose_the_software_banner_and_gain_the_security_headers() {
        let mut map = HeaderMap::new();
        for (name, value) in [
            ("server", "legacy-ehr/1.0"),
            ("x-powered-by", "PHP/5.2"),
            ("content-type", "application/json"),
        ] {
            map.append(name, HeaderValue::from_static(value));
        }
        harden_response(&mut map);
        assert!(!map.contains_key("server") && !map.contains_key("x-powered-by"));
        assert_eq!(map["content-type"], "application/json");
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(map[name], value, "{name}");
        }
        assert_eq!(map.len(), 1 + SECURITY_HEADERS.len());
    }
}
