//! The one rescue path: every refusal, from any phase, becomes its response here.
//!
//! A phase that ends a request returns a [`Refused`]: a [`Refusal`] (status, stable code and
//! fixed reason from the registry in `refusal.rs`) and, rarely, what the client needs to act on
//! it (a header, a page, a redirect). The response never carries internal detail, and is never
//! cached (`no-store`).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::pages;
use crate::refusal::Refusal;

/// A refusal, with the headers some carry (`Allow` on a 405, `Retry-After` and the
/// `RateLimit` headers on a 429) and, rarely, a body with more than the fixed reason (the
/// password rules a refused password failed, or the form again with its errors). Refusals on
/// the gateway's own pages are HTML pages; all others are JSON.
#[derive(Debug)]
pub struct Refused {
    refusal: Refusal,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Bytes>,
    /// A browser is sent here (303) instead of reading the refusal.
    redirect: Option<HeaderValue>,
    html: bool,
    /// What went wrong, for the log line the rescue path writes; never sent.
    cause: Option<Box<str>>,
}

impl Refused {
    pub fn with_header(refusal: Refusal, name: HeaderName, value: HeaderValue) -> Self {
        Self::with_headers(refusal, vec![(name, value)])
    }

    pub fn with_headers(refusal: Refusal, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Self {
            refusal,
            headers,
            body: None,
            redirect: None,
            html: false,
            cause: None,
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

    /// A refusal for a failure inside the gateway or upstream: `cause` is logged with the
    /// request id, the client gets only the fixed answer.
    pub fn because(refusal: Refusal, cause: &dyn std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string().into()),
            ..Self::from(refusal)
        }
    }

    /// The log line of a refusal that has a cause: the refusal's code, the cause, the request.
    pub(super) fn log_cause(&self, request_id: &HeaderValue) {
        let Some(cause) = &self.cause else { return };
        let request_id = request_id.to_str().unwrap_or_default();
        let code = self.refusal.code();
        if self.refusal.status().is_server_error() {
            tracing::error!(request_id, code, cause = &**cause, "request failed");
        } else {
            tracing::warn!(request_id, code, cause = &**cause, "request refused");
        }
    }

    /// The refusal with `html` as its page (a form shown again with its errors).
    pub fn page(refusal: Refusal, html: Bytes) -> Self {
        Self {
            refusal,
            headers: Vec::new(),
            body: Some(html),
            redirect: None,
            html: true,
            cause: None,
        }
    }

    /// Answered as an HTML page: the fixed refusal page unless it already has one.
    pub fn in_html(mut self) -> Self {
        self.html = true;
        self
    }

    /// The one place a refusal becomes a response: status, body, `no-store`, its headers.
    pub(super) fn into_response(self) -> Response<ResponseBody> {
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
            cause: None,
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
            cause: None,
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
            cause: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(response: &'a Response<ResponseBody>, name: &str) -> Option<&'a [u8]> {
        response.headers().get(name).map(HeaderValue::as_bytes)
    }

    #[test]
    fn a_refusal_is_answered_as_fixed_json_never_cached() {
        let response = Refused::method_not_allowed("GET, HEAD").into_response();
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
        let response = Refused::redirect(Refusal::SessionMissing, location.clone()).into_response();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers().get(header::LOCATION), Some(&location));
        assert_eq!(header(&response, "cache-control"), Some(&b"no-store"[..]));

        let response = Refused::from(Refusal::NoRoute).in_html().into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(header(&response, "content-type").is_some_and(|t| t.starts_with(b"text/html")));
    }
}
