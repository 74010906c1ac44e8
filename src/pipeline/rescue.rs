//! The one rescue path: every refusal, from any phase, becomes its response here.
//!
//! The response is the refusal's fixed answer (JSON, or the refusal page for the gateway's own
//! pages), `no-store`, with the headers the refusal carries; a browser that must go elsewhere
//! gets a 303. A refusal with a cause writes one log line with the request id (`ERROR` for a
//! 5xx): the operator learns why, the client never does.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::own_api::pages;
use crate::refused::Refused;

/// The one place a refusal becomes a response: status, body, `no-store`, its headers.
pub(super) fn respond(refused: Refused) -> Response<ResponseBody> {
    let mut response: Response<ResponseBody> = if refused.html {
        pages::refusal_response(refused.refusal, refused.body)
    } else {
        let mut response = refused.refusal.response();
        if let Some(body) = refused.body {
            *response.body_mut() = ResponseBody::from(body);
        }
        response
    };
    if let Some(location) = refused.redirect {
        *response.status_mut() = StatusCode::SEE_OTHER;
        response.headers_mut().insert(header::LOCATION, location);
    }
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in refused.headers {
        headers.insert(name, value);
    }
    response
}

/// The log line of a refusal that has a cause: the refusal's code, the cause, the request.
pub(super) fn log_cause(refused: &Refused, request_id: &HeaderValue) {
    let Some(cause) = &refused.cause else { return };
    let request_id = request_id.to_str().unwrap_or_default();
    let code = refused.refusal.code();
    if refused.refusal.status().is_server_error() {
        tracing::error!(request_id, code, cause = &**cause, "request failed");
    } else {
        tracing::warn!(request_id, code, cause = &**cause, "request refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Refusal;

    fn header<'a>(response: &'a Response<ResponseBody>, name: &str) -> Option<&'a [u8]> {
        response.headers().get(name).map(HeaderValue::as_bytes)
    }

    #[test]
    fn a_refusal_is_answered_as_fixed_json_never_cached() {
        let response = respond(Refused::method_not_allowed("GET, HEAD"));
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            header(&response, "content-type"),
            Some(&b"application/json"[..])
        );
        assert_eq!(header(&response, "cache-control"), Some(&b"no-store"[..]));
        assert_eq!(header(&response, "allow"), Some(&b"GET, HEAD"[..]));
    }

    #[test]
    fn a_browser_is_redirected_and_a_page_refused_as_a_page() {
        let location = HeaderValue::from_static("/.wardgate/login?return_to=%2Fapi");
        let response = respond(Refused::redirect(Refusal::SessionMissing, location.clone()));
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers().get(header::LOCATION), Some(&location));
        assert_eq!(header(&response, "cache-control"), Some(&b"no-store"[..]));

        let response = respond(Refused::from(Refusal::NoRoute).in_html());
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(header(&response, "content-type").is_some_and(|t| t.starts_with(b"text/html")));
    }
}
