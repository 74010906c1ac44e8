//! How any part of the gateway ends a request: a [`Refused`], which the pipeline's one rescue
//! path (`pipeline/rescue.rs`) turns into the response.
//!
//! A [`Refusal`] (status, stable code and fixed reason from the registry in `refusal.rs`) and,
//! rarely, what the client needs to act on it (a header, a page, a redirect); for a failure, its
//! cause, which is logged and never sent. A leaf: the login and enrollment state machines and
//! the pages refuse with it without knowing the pipeline.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

use crate::refusal::Refusal;

/// A refusal, with the headers some carry (`Allow` on a 405, `Retry-After` and the
/// `RateLimit` headers on a 429) and, rarely, a body with more than the fixed reason (the
/// password rules a refused password failed, or the form again with its errors). Refusals on
/// the gateway's own pages are HTML pages; all others are JSON.
#[derive(Debug)]
pub struct Refused {
    pub(crate) refusal: Refusal,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Option<Bytes>,
    /// A browser is sent here (303) instead of reading the refusal.
    pub(crate) redirect: Option<HeaderValue>,
    pub(crate) html: bool,
    /// What went wrong, for the log line the rescue path writes; never sent.
    pub(crate) cause: Option<Box<str>>,
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
            http::header::ALLOW,
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
