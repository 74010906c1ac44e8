//! Phase 3, sanitize: the checks every request's head passes before anything reads it.
//!
//! Runs after `early`, before anything looks at the path or the host. Reads the request line
//! and the headers, never the body. Decides: refuse (400 `WG-REQ-*`, 414), or hand on the path
//! normalized once (`path.rs`) and the authority the client addressed. Every later phase reads
//! only the normalized path: a route, a policy or a log line never sees `/a/../b` or `%2e`.
//! HTTP/1 request lines were already measured below hyper (`sanitize/framing.rs`); HTTP/2 ones
//! are measured here.

use std::borrow::Cow;

use http::Request;
use http::header;
use http::uri::Authority;

use crate::path;
use crate::refusal::Refusal;
use crate::sanitize;
use crate::settings::HeadRules;

/// A request head that passed: what the later phases read instead of the raw one.
pub(super) struct Sanitized<'a> {
    pub(super) path: Cow<'a, str>,
    /// As the client sent it, for `X-Forwarded-Host`.
    pub(super) authority: Authority,
    /// Lower case, for routing.
    pub(super) host: String,
}

impl HeadRules {
    /// Phase 3: the head passes, normalized, or is refused with the first rule it breaks.
    pub(super) fn check<'a, B>(&self, request: &'a Request<B>) -> Result<Sanitized<'a>, Refusal> {
        let uri_length = request
            .uri()
            .path_and_query()
            .map_or(0, |p| p.as_str().len());
        if uri_length as u64 > self.max_request_line {
            return Err(Refusal::UriTooLong);
        }
        let raw_path = request.uri().path();
        sanitize::request::check_path(raw_path, self.allow_encoded_slash)?;
        let path = path::normalize(raw_path).map_err(|_| Refusal::BadTarget)?;
        sanitize::request::check_headers(
            request.headers(),
            request.version(),
            self.allow_underscores,
        )?;
        let authority = request_authority(request).ok_or(Refusal::BadHost)?;
        let host = authority.host().to_ascii_lowercase();
        sanitize::request::check_host(&host, &self.server_names)?;
        Ok(Sanitized {
            path,
            authority,
            host,
        })
    }
}

/// The authority the client addressed: `:authority` (HTTP/2, absolute-form) or `Host`.
fn request_authority<B>(request: &Request<B>) -> Option<Authority> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.clone(),
        None => {
            let host = request.headers().get(header::HOST)?;
            Authority::try_from(host.as_bytes()).ok()?
        }
    };
    (!authority.as_str().contains('@') && !authority.host().is_empty()).then_some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;

    fn rules() -> HeadRules {
        HeadRules {
            max_request_line: 64,
            server_names: vec!["gw.example".to_owned()],
            allow_encoded_slash: false,
            allow_underscores: false,
        }
    }

    fn request(uri: &str, host: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri(uri).version(Version::HTTP_11);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_clean_head_is_handed_on_normalized() {
        let request = request("/api//labs?x=1", Some("GW.example:8443"));
        let clean = rules().check(&request).unwrap();
        assert_eq!(clean.path, "/api/labs");
        assert_eq!(clean.host, "gw.example");
        assert_eq!(clean.authority.as_str(), "GW.example:8443");
    }

    #[test]
    fn each_head_rule_refuses_with_its_code() {
        let long = format!("/{}", "a".repeat(64));
        let cases = [
            (request(&long, Some("gw.example")), Refusal::UriTooLong),
            (
                request("/a%2Fb", Some("gw.example")),
                Refusal::PathEncodedSeparator,
            ),
            (
                request("/a/../b", Some("gw.example")),
                Refusal::PathDotSegment,
            ),
            (request("*", Some("gw.example")), Refusal::BadTarget),
            (request("/api", None), Refusal::BadHost),
            (request("/api", Some("user@gw.example")), Refusal::BadHost),
            (request("/api", Some("other.example")), Refusal::UnknownHost),
        ];
        for (request, refusal) in cases {
            assert_eq!(
                rules().check(&request).err(),
                Some(refusal),
                "{}",
                request.uri()
            );
        }
    }

    #[test]
    fn the_absolute_form_authority_wins_over_host() {
        let request = request("https://gw.example/api", Some("other.example"));
        assert_eq!(rules().check(&request).unwrap().host, "gw.example");
    }
}
