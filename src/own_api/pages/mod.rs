//! The gateway's own browser pages: plain server-rendered HTML under `/.wardgate/`.
//!
//! **The threat.** Pages that handle passwords and second factors are what an attacker wants to
//! frame (clickjacking), inject into (a reflected value that becomes markup or script), forge
//! posts to (CSRF), load third-party code into (a compromised CDN reads every password), or find
//! later in a shared computer's cache or history.
//!
//! **The rule.** Every page is rendered from an askama template (`src/pages/templates`), which
//! HTML-escapes every value; there is one layout (`base.html`), one stylesheet served by the
//! gateway itself, and no third-party asset. Every page and asset response carries
//! `Content-Type` with its charset, `Cache-Control: no-store` and the strict [`CSP`] (no inline
//! script or style, nothing from elsewhere, forms post only here, never framed); the security
//! headers of every response (HSTS, `nosniff`, `no-referrer`, `X-Frame-Options`) come on top.
//! The layout narrows the referrer policy to `same-origin` in a `<meta>`: under `no-referrer`
//! browsers send `Origin: null` with a form post, and the CSRF check needs the real origin;
//! a link to elsewhere still carries no `Referer`.
//! Every form carries the CSRF token ([`crate::auth::csrf`]) and every post is checked against
//! it before a field is read. A refusal on a page is a small HTML page with the same status and
//! stable code as its JSON twin, in fixed words, never with detail.
//!
//! ```text
//!  pipeline 3a ── /.wardgate/api/…  JSON API (auth::enrollment, auth::login)
//!              └─ /.wardgate/…      handle() here ── ASSETS (GET): style.css, webauthn.js
//!                                                 ├─ enroll: /enroll, /enroll/totp, /enroll/webauthn
//!                                                 ├─ login: /login, /login/{totp,recovery,webauthn}
//!                                                 ├─ home, logout, more passkeys: /, /logout, /passkeys
//!                                                 ├─ access (with a policy): /access/{request,mine,
//!                                                 │    approvals,break-glass,reviews}
//!                                                 └─ anything else: 404 WG-AUTH-006 (HTML)
//!
//!  GET a form page:  request.form_token()  ->  page(status, &Template { csrf, … }, Some(&token))
//!  POST a form:      request.form().await? (415 / 413 / WG-BODY-005 / WG-AUTH-020)
//!                    form.take(["field", …])? (exactly these fields, else WG-BODY-005)
//!  form with errors: Err(Refused::page(refusal, render(&Template { errors, … })?))
//! ```
//!
//! **The standard.** OWASP ASVS 5.0 V3.4 (browser security headers: CSP, `nosniff`, framing),
//! V3.5 (CSRF), V14.3 (no sensitive data in client caches); W3C CSP Level 3; WCAG 2.2
//! (labels on every input, `autocomplete` purposes, a viewport for phones).

mod access;
mod enroll;
mod login;

use std::net::IpAddr;
use std::time::Duration;

use askama::Template;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::Access;
use crate::auth::csrf::{self, FormToken};
use crate::auth::enrollment::Enrollment;
use crate::auth::login::{Client, Login};
use crate::body::{self, IdleBody, ResponseBody};
use crate::own_api::paths;
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::sanitize::injection::form_pairs;
use crate::sanitize::request::media_type;

/// The Content-Security-Policy of every page: the gateway's own styles, images (and `data:` for
/// the QR code), scripts and API calls (the WebAuthn step) only; forms post only here; never
/// framed; no `<base>`.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

const HTML: &str = "text/html; charset=utf-8";

/// The gateway's own static files: path, content type, contents (compiled in). The WebAuthn
/// script is one of them, so that `script-src 'self'` covers it and nothing else runs.
const ASSETS: [(&str, &str, &str); 2] = [
    (
        paths::STYLE_ASSET,
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        paths::WEBAUTHN_ASSET,
        "text/javascript; charset=utf-8",
        include_str!("assets/webauthn.js"),
    ),
];

/// Whether `path` (normalized) is one of the gateway's static files.
pub fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|(asset, ..)| *asset == path)
}

/// Form bodies are a few short fields: a token, a password (at most 128 characters), a code,
/// or a WebAuthn answer (a few hundred bytes of base64url, percent-encoded once more).
const FORM_LIMIT: u64 = 16 * 1024;

/// Serves one page request; every refusal becomes an HTML page in the pipeline.
pub async fn handle(
    enrollment: &Enrollment,
    login: &Login,
    access: Option<&Access>,
    request: PageRequest<'_>,
    path: &str,
) -> Result<Response<ResponseBody>, Refused> {
    if let Some((_, content_type, contents)) = ASSETS.iter().find(|(asset, ..)| *asset == path) {
        if request.method() != Method::GET {
            return Err(Refused::method_not_allowed("GET"));
        }
        return Ok(response(
            StatusCode::OK,
            content_type,
            Bytes::from_static(contents.as_bytes()),
        ));
    }
    match path {
        paths::ENROLL_PAGE => enroll::password(enrollment, request).await,
        paths::ENROLL_TOTP_PAGE | paths::ENROLL_WEBAUTHN_PAGE => {
            enroll::second_factor(enrollment, request, path).await
        }
        paths::LOGIN_PAGE => login::password(login, request).await,
        paths::LOGIN_TOTP_PAGE | paths::LOGIN_RECOVERY_PAGE | paths::LOGIN_WEBAUTHN_PAGE => {
            login::second_factor(login, request, path).await
        }
        paths::HOME_PAGE => login::home(login, access, request).await,
        paths::LOGOUT_PAGE => login::logout(login, request).await,
        paths::PASSKEYS_PAGE => login::add_passkey(login, access, request).await,
        _ if path.starts_with(paths::ACCESS_PAGE_PREFIX) => {
            access::handle(access, login, request, path).await
        }
        _ => Err(Refusal::GatewayPathNotFound.into()),
    }
}

/// A request for a page, as the pipeline hands it over.
pub struct PageRequest<'a> {
    parts: Parts,
    body: Incoming,
    /// The authority the client addressed (checked against `sanitize.server_names`): the origin
    /// that form posts must come from.
    authority: &'a str,
    idle: Duration,
    /// Unix seconds.
    pub now: u64,
    /// The client's address, as the forwarding rules established it.
    address: IpAddr,
}

impl<'a> PageRequest<'a> {
    pub fn new(
        request: Request<Incoming>,
        authority: &'a http::uri::Authority,
        idle: Duration,
        now: u64,
        address: IpAddr,
    ) -> Self {
        let (parts, body) = request.into_parts();
        Self {
            parts,
            body,
            authority: authority.as_str(),
            idle,
            now,
            address,
        }
    }

    /// Who sends the request, for a login: address, user agent, the session it carries.
    pub fn client(&self) -> Client {
        Client::new(self.address, &self.parts.headers)
    }

    pub fn method(&self) -> &Method {
        &self.parts.method
    }

    /// A query parameter, decoded; `None` when absent, sent twice or badly encoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.parts.uri.query()?;
        let mut found = None;
        for pair in form_pairs(query.as_bytes()) {
            let (key, value) = pair.ok()?;
            if key == name {
                if found.is_some() {
                    return None;
                }
                found = Some(value);
            }
        }
        found
    }

    /// The CSRF token for a page that shows a form (the browser's own, or a new one to set).
    pub fn form_token(&self) -> FormToken {
        csrf::for_form(&self.parts.headers, &mut rand::rng())
    }

    /// The posted form, once its CSRF checks pass: `application/x-www-form-urlencoded` (415),
    /// at most [`FORM_LIMIT`] (413), well formed with no field twice (`WG-BODY-005`), and
    /// cookie, field, `Origin` and fetch metadata in agreement (`WG-AUTH-020`).
    pub async fn form(self) -> Result<Form, Refused> {
        if !is_form(&self.parts.headers) {
            return Err(Refusal::UnsupportedMediaType.into());
        }
        let bytes = body::read_limited(IdleBody::new(self.body, self.idle), FORM_LIMIT)
            .await
            .map_err(Refusal::from)?;
        let mut fields: Vec<(String, String)> = Vec::new();
        for pair in form_pairs(&bytes) {
            let (name, value) = pair.map_err(|_| Refusal::MalformedForm)?;
            if fields.iter().any(|(seen, _)| *seen == name) {
                return Err(Refusal::MalformedForm.into());
            }
            fields.push((name, value));
        }
        let field = fields
            .iter()
            .position(|(name, _)| name == csrf::FIELD)
            .map(|at| fields.remove(at).1);
        let token = csrf::verify(&self.parts.headers, self.authority, field.as_deref())?;
        Ok(Form {
            fields,
            csrf: FormToken {
                token,
                set_cookie: None,
            },
        })
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    media_type(headers).as_deref() == Some("application/x-www-form-urlencoded")
}

/// A posted form whose CSRF checks passed.
pub struct Form {
    fields: Vec<(String, String)>,
    /// The verified token, for a form shown again in answer.
    pub csrf: FormToken,
}

impl Form {
    /// The values of exactly these fields, in this order; a missing or unexpected field is
    /// `WG-BODY-005`.
    pub fn take<const N: usize>(mut self, names: [&str; N]) -> Result<[String; N], Refused> {
        let values = names.map(|name| {
            self.fields
                .iter()
                .position(|(field, _)| field == name)
                .map(|at| self.fields.remove(at).1)
        });
        if !self.fields.is_empty() || values.iter().any(Option::is_none) {
            return Err(Refusal::MalformedForm.into());
        }
        Ok(values.map(Option::unwrap_or_default))
    }

    /// The names of the ticked checkboxes named `{prefix}NAME`, taken out of the form: a box
    /// is sent only when ticked, with its default value `on` (anything else is `WG-BODY-005`).
    pub fn ticked(&mut self, prefix: &str) -> Result<Vec<String>, Refused> {
        let boxes: Vec<_> = self
            .fields
            .extract_if(.., |(name, _)| name.starts_with(prefix))
            .collect();
        boxes
            .into_iter()
            .map(|(name, value)| match value.as_str() {
                "on" => Ok(name[prefix.len()..].to_owned()),
                _ => Err(Refusal::MalformedForm.into()),
            })
            .collect()
    }
}

/// Renders a template; a failure (none is expected: the templates are compiled in) is logged.
pub fn render(template: &impl Template) -> Result<Bytes, Refused> {
    template.render().map(Bytes::from).map_err(|error| {
        tracing::error!(%error, "page template");
        Refusal::AuthUnavailable.into()
    })
}

/// A page: the rendered template with the page headers, and the CSRF cookie when `csrf` is new.
pub fn page(
    status: StatusCode,
    template: &impl Template,
    csrf: Option<&FormToken>,
) -> Result<Response<ResponseBody>, Refused> {
    Ok(html(status, render(template)?, csrf))
}

/// A page already rendered: the page headers, and the CSRF cookie when `csrf` is new.
pub fn html(status: StatusCode, body: Bytes, csrf: Option<&FormToken>) -> Response<ResponseBody> {
    let mut response = response(status, HTML, body);
    if let Some(cookie) = csrf.and_then(|c| c.set_cookie.clone()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

/// The fixed refusal page: the refusal's status, code and reason, nothing else.
#[derive(Template)]
#[template(path = "refusal.html")]
struct RefusalPage<'a> {
    code: &'static str,
    reason: &'static str,
    /// For a patient route that needs a grant: the request page, pre-filled.
    ask: Option<Ask<'a>>,
}

/// What a refused person may ask for: this patient's data of this category.
struct Ask<'a> {
    patient: &'a str,
    category: &'a str,
}

/// The refusal page of a patient route that needs a grant (`WG-POLICY-001`), for a browser: it
/// links to the request page with `patient` and `category` filled in.
pub fn needs_grant(patient: &str, category: &str) -> Refused {
    let refusal = Refusal::PolicyNeedsGrant;
    let page = RefusalPage {
        code: refusal.code(),
        reason: refusal.reason(),
        ask: Some(Ask { patient, category }),
    };
    match render(&page) {
        Ok(body) => Refused::page(refusal, body),
        Err(refused) => refused.in_html(),
    }
}

/// A refusal as a page: `body` when the handler rendered one (a form with its errors), else the
/// fixed refusal page.
pub fn refusal_response(refusal: Refusal, body: Option<Bytes>) -> Response<ResponseBody> {
    let body = body.unwrap_or_else(|| {
        let page = RefusalPage {
            code: refusal.code(),
            reason: refusal.reason(),
            ask: None,
        };
        render(&page).unwrap_or_else(|_| Bytes::from_static(refusal.reason().as_bytes()))
    });
    response(refusal.status(), HTML, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(response: Response<ResponseBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_refusal_page_has_the_code_the_page_headers_and_no_detail() {
        let response = refusal_response(Refusal::FormNotVerified, None);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], HTML);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
        let html = text(response).await;
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.contains(r#"<html lang="en">"#));
        assert!(html.contains(r#"name="viewport""#));
        assert!(html.contains(r#"id="refusal-code">WG-AUTH-020<"#), "{html}");
        assert!(html.contains("the form could not be verified; reload the page and try again"));
        assert!(html.contains(r#"href="/.wardgate/assets/style.css""#));
        assert!(!html.contains("<script"));
    }

    #[tokio::test]
    async fn values_are_escaped() {
        let page = RefusalPage {
            code: "<b>",
            reason: "\"&'",
            ask: Some(Ask {
                patient: "p1\"><script>",
                category: "labs&x=1",
            }),
        };
        let html = String::from_utf8(render(&page).ok().unwrap().to_vec()).unwrap();
        assert!(
            html.contains("&#60;b&#62;") || html.contains("&lt;b&gt;"),
            "{html}"
        );
        assert!(!html.contains("<b>"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("?patient=p1%22%3E%3Cscript%3E&#38;category=labs%26x%3D1")
                || html.contains("?patient=p1%22%3E%3Cscript%3E&amp;category=labs%26x%3D1"),
            "{html}"
        );
    }

    #[test]
    fn the_csp_is_the_strict_one() {
        assert_eq!(
            CSP,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
    }

    #[test]
    fn forms_are_recognized_by_their_media_type() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_form(&headers)
        };
        assert!(with("application/x-www-form-urlencoded"));
        assert!(with("Application/X-WWW-Form-Urlencoded; charset=UTF-8"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!with("application/json"));
        assert!(!is_form(&HeaderMap::new()));
    }

    #[test]
    fn take_wants_exactly_the_named_fields() {
        let form = |pairs: &[(&str, &str)]| Form {
            fields: pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            csrf: csrf::for_form(&HeaderMap::new(), &mut rand::rng()),
        };
        let [a, b] = form(&[("b", "2"), ("a", "1")])
            .take(["a", "b"])
            .ok()
            .unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("1", "2"));
        assert!(form(&[("a", "1")]).take(["a", "b"]).is_err());
        assert!(
            form(&[("a", "1"), ("b", "2"), ("c", "3")])
                .take(["a", "b"])
                .is_err()
        );
    }
}
