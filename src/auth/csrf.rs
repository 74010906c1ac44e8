//! Cross-site request forgery protection for the gateway's own HTML forms.
//!
//! **The threat.** A page on another site (or a sibling host) makes a logged-in or enrolling
//! user's browser post a form to the gateway: set a password the attacker chose, confirm an
//! authenticator the attacker controls, approve an access grant, log the victim into the
//! attacker's account (login CSRF). The browser attaches the user's cookies to such a post; the
//! gateway must tell it apart from a post made by its own page.
//!
//! **The rule.** Three checks, every one of which must pass:
//!
//! ```text
//!  GET form page ── valid __Host-wardgate-csrf cookie? ── yes: embed its value
//!                                                    └── no: mint 256 random bits (base64url),
//!                                                         Set-Cookie, embed the new value
//!  POST form ── Sec-Fetch-Site (when sent) is same-origin or none ──┐
//!            ── Origin (when sent) is exactly https://<Host> ───────┤ any fails: 403 WG-AUTH-020
//!            ── cookie and hidden field `csrf` both present, equal ─┘ (constant-time compare)
//! ```
//!
//! The token is a double-submit cookie: another site can make the browser send the cookie but
//! can neither read it nor set it, so it cannot put the same value in the form. The `__Host-`
//! prefix makes the browser refuse the cookie unless it is `Secure`, has `Path=/` and no
//! `Domain`: a sibling subdomain cannot plant (toss) a value of its own. `SameSite=Strict`
//! keeps the cookie off cross-site requests altogether, `HttpOnly` out of scripts; there is no
//! `Expires`, so it ends with the browser session. The fetch-metadata and `Origin` checks are
//! defence in depth for browsers that send them (all current ones do); a request without them
//! still needs the token. The token protects forms, not identity: it is not a session.
//!
//! **The standard.** OWASP ASVS 5.0 V3.5 (browser origin separation: anti-forgery tokens,
//! `Sec-Fetch-*` and `Origin` checks) and V3.3 (cookie attributes, `__Host-` prefix); OWASP
//! Cross-Site Request Forgery Prevention Cheat Sheet (signed/double-submit cookie, fetch
//! metadata, origin verification); RFC 6265bis (`__Host-` prefix, `SameSite`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{self, HeaderMap, HeaderValue};
use rand::CryptoRng;
use subtle::ConstantTimeEq;

use crate::refusal::Refusal;

/// The cookie's name; the `__Host-` prefix is part of the protection (module doc).
pub const COOKIE: &str = "__Host-wardgate-csrf";
/// The hidden form field that must repeat the cookie's value.
pub const FIELD: &str = "csrf";
/// 256 random bits.
const TOKEN_BYTES: usize = 32;
/// 32 bytes in unpadded base64url.
const TOKEN_CHARS: usize = 43;

/// A well-formed token: 43 base64url characters that decode to 32 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(String);

impl std::fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfToken(..)")
    }
}

impl CsrfToken {
    fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// 43 characters of unpadded base64url are exactly 32 bytes, so the length and a clean
    /// decode (alphabet, zero trailing bits) are the whole check.
    fn parse(value: &str) -> Option<Self> {
        URL_SAFE_NO_PAD.decode(value).ok()?;
        (value.len() == TOKEN_CHARS).then(|| Self(value.to_owned()))
    }

    /// The value for the hidden field.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The token from the request's cookies: `None` when absent, malformed or sent twice.
    fn from_cookies(headers: &HeaderMap) -> Option<Self> {
        crate::session::cookie_value(headers, COOKIE).and_then(Self::parse)
    }
}

/// The token a form page embeds, and the `Set-Cookie` to send when the browser had none.
#[derive(Clone)]
pub struct FormToken {
    pub token: CsrfToken,
    pub set_cookie: Option<HeaderValue>,
}

/// For a page that shows a form: the browser's token when it sent a valid one, else a new one.
pub fn for_form(headers: &HeaderMap, rng: &mut impl CryptoRng) -> FormToken {
    match CsrfToken::from_cookies(headers) {
        Some(token) => FormToken {
            token,
            set_cookie: None,
        },
        None => {
            let token = CsrfToken::generate(rng);
            let cookie = format!(
                "{COOKIE}={}; Secure; HttpOnly; SameSite=Strict; Path=/",
                token.as_str()
            );
            // Base64url and fixed attributes: always a valid header value.
            let set_cookie = HeaderValue::try_from(cookie).ok();
            FormToken { token, set_cookie }
        }
    }
}

/// Why a form post was refused; logged, never shown (the user sees one refusal for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    CrossSiteFetch,
    ForeignOrigin,
    NoCookie,
    NoField,
    Mismatch,
}

/// Checks a form post: fetch metadata, `Origin` against `authority` (the `Host` the request
/// was addressed to, already checked against `sanitize.server_names`), and the token in
/// `field` against the cookie. Any failure is `WG-AUTH-020`; success hands back the token.
pub fn verify(
    headers: &HeaderMap,
    authority: &str,
    field: Option<&str>,
) -> Result<CsrfToken, Refusal> {
    check(headers, authority, field).map_err(|failure| {
        tracing::warn!(target: "wardgate::security", event = "csrf_refused", cause = ?failure);
        Refusal::FormNotVerified
    })
}

fn check(headers: &HeaderMap, authority: &str, field: Option<&str>) -> Result<CsrfToken, Failure> {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(Failure::CrossSiteFetch);
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && !same_origin(origin.as_bytes(), authority)
    {
        return Err(Failure::ForeignOrigin);
    }
    let cookie = CsrfToken::from_cookies(headers).ok_or(Failure::NoCookie)?;
    let field = field.ok_or(Failure::NoField)?;
    if bool::from(cookie.0.as_bytes().ct_eq(field.as_bytes())) {
        Ok(cookie)
    } else {
        Err(Failure::Mismatch)
    }
}

/// `Origin` is `https://` and the authority, case-insensitively; browsers leave out `:443`.
fn same_origin(origin: &[u8], authority: &str) -> bool {
    let authority = authority.strip_suffix(":443").unwrap_or(authority);
    origin
        .strip_prefix(b"https://")
        .is_some_and(|host| host.eq_ignore_ascii_case(authority.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "gw.example.org:8443";

    fn token() -> CsrfToken {
        CsrfToken::generate(&mut rand::rng())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::try_from(*value).unwrap());
        }
        map
    }

    fn cookie(token: &CsrfToken) -> String {
        format!("theme=dark; {COOKIE}={}; other=1", token.as_str())
    }

    #[test]
    fn a_new_token_is_256_random_bits_in_a_host_cookie() {
        let form = for_form(&HeaderMap::new(), &mut rand::rng());
        assert_eq!(form.token.as_str().len(), TOKEN_CHARS);
        let set_cookie = form.set_cookie.unwrap();
        assert_eq!(
            set_cookie.to_str().unwrap(),
            format!(
                "__Host-wardgate-csrf={}; Secure; HttpOnly; SameSite=Strict; Path=/",
                form.token.as_str()
            )
        );
        assert_ne!(
            form.token,
            for_form(&HeaderMap::new(), &mut rand::rng()).token
        );
    }

    #[test]
    fn the_debug_form_hides_the_token() {
        assert_eq!(format!("{:?}", token()), "CsrfToken(..)");
    }

    #[test]
    fn a_valid_cookie_is_kept_and_a_bad_one_replaced() {
        let known = token();
        let form = for_form(&headers(&[("cookie", &cookie(&known))]), &mut rand::rng());
        assert_eq!((form.token, form.set_cookie), (known.clone(), None));
        for bad in [
            format!("{COOKIE}=short"),
            format!("{COOKIE}={}=", known.as_str()),
            format!("{COOKIE}={}; {COOKIE}={}", known.as_str(), token().as_str()),
            format!("{COOKIE}={}", "*".repeat(TOKEN_CHARS)),
        ] {
            let form = for_form(&headers(&[("cookie", &bad)]), &mut rand::rng());
            assert!(form.set_cookie.is_some(), "{bad}");
            assert_ne!(form.token, known, "{bad}");
        }
    }

    #[test]
    fn a_matching_post_passes_with_or_without_browser_metadata() {
        let known = token();
        let field = Some(known.as_str());
        let c = cookie(&known);
        assert_eq!(
            check(&headers(&[("cookie", &c)]), HOST, field),
            Ok(known.clone())
        );
        let browser = headers(&[
            ("cookie", &c),
            ("origin", "https://GW.example.org:8443"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(check(&browser, HOST, field), Ok(known.clone()));
        let typed = headers(&[("cookie", &c), ("sec-fetch-site", "none")]);
        assert_eq!(check(&typed, HOST, field), Ok(known.clone()));
        // HTTP/2 split cookies, and the default port left out of Origin.
        let split = headers(&[
            ("cookie", "a=1"),
            ("cookie", &c),
            ("origin", "https://gw.example.org"),
        ]);
        assert_eq!(
            check(&split, "gw.example.org:443", field),
            Ok(known.clone())
        );
        assert_eq!(verify(&split, "gw.example.org", field), Ok(known.clone()));
    }

    #[test]
    fn every_forgery_is_refused() {
        let known = token();
        let other = token();
        let field = Some(known.as_str());
        let c = cookie(&known);
        type Case<'a> = (&'a [(&'static str, &'a str)], Option<&'a str>, Failure);
        let cases: [Case; 9] = [
            (&[], field, Failure::NoCookie),
            (&[("cookie", &c)], None, Failure::NoField),
            (&[("cookie", &c)], Some(""), Failure::Mismatch),
            (&[("cookie", &c)], Some(other.as_str()), Failure::Mismatch),
            (
                &[("cookie", &c), ("sec-fetch-site", "cross-site")],
                field,
                Failure::CrossSiteFetch,
            ),
            (
                &[("cookie", &c), ("sec-fetch-site", "same-site")],
                field,
                Failure::CrossSiteFetch,
            ),
            (
                &[("cookie", &c), ("origin", "https://evil.example")],
                field,
                Failure::ForeignOrigin,
            ),
            (
                &[("cookie", &c), ("origin", "http://gw.example.org:8443")],
                field,
                Failure::ForeignOrigin,
            ),
            (
                &[("cookie", &c), ("origin", "null")],
                field,
                Failure::ForeignOrigin,
            ),
        ];
        for (pairs, field, failure) in cases {
            assert_eq!(
                check(&headers(pairs), HOST, field),
                Err(failure),
                "{pairs:?}"
            );
            assert_eq!(
                verify(&headers(pairs), HOST, field),
                Err(Refusal::FormNotVerified)
            );
        }
    }
}
