//! Every path the gateway answers itself, in one table: under [`PREFIX`], never routed and
//! never proxied (`pipeline/own_api.rs`). Pages are HTML for browsers; the JSON API is under
//! [`API_PREFIX`]; the stylesheet and script under [`ASSET_PREFIX`]. The pages' templates
//! link only to paths listed here (a test reads them).

/// Paths under this prefix are the gateway's own.
pub const PREFIX: &str = "/.wardgate/";
/// The JSON API for apps and API clients, and for the WebAuthn script of the pages.
pub const API_PREFIX: &str = "/.wardgate/api/";
/// The enrollment API.
pub const ENROLL_API_PREFIX: &str = "/.wardgate/api/enroll/";
pub const ENROLL_PASSWORD_API: &str = "/.wardgate/api/enroll/password";
pub const ENROLL_TOTP_API: &str = "/.wardgate/api/enroll/totp";
pub const ENROLL_WEBAUTHN_START_API: &str = "/.wardgate/api/enroll/webauthn/start";
pub const ENROLL_WEBAUTHN_FINISH_API: &str = "/.wardgate/api/enroll/webauthn/finish";
pub const LOGIN_API: &str = "/.wardgate/api/login";
pub const LOGIN_TOTP_API: &str = "/.wardgate/api/login/totp";
pub const LOGIN_RECOVERY_API: &str = "/.wardgate/api/login/recovery";
pub const LOGIN_WEBAUTHN_START_API: &str = "/.wardgate/api/login/webauthn/start";
pub const LOGIN_WEBAUTHN_FINISH_API: &str = "/.wardgate/api/login/webauthn/finish";
pub const STEP_UP_API: &str = "/.wardgate/api/step-up";
pub const LOGOUT_API: &str = "/.wardgate/api/logout";
pub const LOGOUT_ALL_API: &str = "/.wardgate/api/logout-all";
pub const SESSION_API: &str = "/.wardgate/api/session";
pub const PASSKEY_START_API: &str = "/.wardgate/api/passkeys/start";
pub const PASSKEY_FINISH_API: &str = "/.wardgate/api/passkeys/finish";
/// Access requests: ask (POST), list one's own (GET).
pub const ACCESS_REQUESTS_API: &str = "/.wardgate/api/access/requests";
/// Requests waiting for approval, for approvers.
pub const ACCESS_PENDING_API: &str = "/.wardgate/api/access/pending";
pub const ACCESS_APPROVE_API: &str = "/.wardgate/api/access/approve";
pub const ACCESS_DENY_API: &str = "/.wardgate/api/access/deny";
/// Emergency access (break-glass), and its review by privacy officers.
pub const BREAK_GLASS_API: &str = "/.wardgate/api/access/break-glass";
pub const REVIEWS_API: &str = "/.wardgate/api/access/reviews";
pub const REVIEW_API: &str = "/.wardgate/api/access/review";
/// The public keys upstreams verify identity assertions with (RFC 7517).
pub const JWKS: &str = "/.wardgate/jwks.json";

/// The pages.
pub const HOME_PAGE: &str = "/.wardgate/";
pub const LOGIN_PAGE: &str = "/.wardgate/login";
pub const LOGIN_TOTP_PAGE: &str = "/.wardgate/login/totp";
pub const LOGIN_RECOVERY_PAGE: &str = "/.wardgate/login/recovery";
pub const LOGIN_WEBAUTHN_PAGE: &str = "/.wardgate/login/webauthn";
pub const LOGOUT_PAGE: &str = "/.wardgate/logout";
pub const PASSKEYS_PAGE: &str = "/.wardgate/passkeys";
pub const ENROLL_PAGE: &str = "/.wardgate/enroll";
pub const ENROLL_TOTP_PAGE: &str = "/.wardgate/enroll/totp";
pub const ENROLL_WEBAUTHN_PAGE: &str = "/.wardgate/enroll/webauthn";
/// The access pages (`pages/access.rs`), over the same workflows as the access API.
pub const ACCESS_PAGE_PREFIX: &str = "/.wardgate/access/";
pub const ACCESS_REQUEST_PAGE: &str = "/.wardgate/access/request";
pub const ACCESS_MINE_PAGE: &str = "/.wardgate/access/mine";
pub const APPROVALS_PAGE: &str = "/.wardgate/access/approvals";
pub const BREAK_GLASS_PAGE: &str = "/.wardgate/access/break-glass";
pub const REVIEWS_PAGE: &str = "/.wardgate/access/reviews";

/// The static files (`pages/assets/`).
pub const ASSET_PREFIX: &str = "/.wardgate/assets/";
pub const STYLE_ASSET: &str = "/.wardgate/assets/style.css";
pub const WEBAUTHN_ASSET: &str = "/.wardgate/assets/webauthn.js";

/// Every path above that is answered (the prefixes are not).
pub const ALL: [&str; 40] = [
    ENROLL_PASSWORD_API,
    ENROLL_TOTP_API,
    ENROLL_WEBAUTHN_START_API,
    ENROLL_WEBAUTHN_FINISH_API,
    LOGIN_API,
    LOGIN_TOTP_API,
    LOGIN_RECOVERY_API,
    LOGIN_WEBAUTHN_START_API,
    LOGIN_WEBAUTHN_FINISH_API,
    STEP_UP_API,
    LOGOUT_API,
    LOGOUT_ALL_API,
    SESSION_API,
    PASSKEY_START_API,
    PASSKEY_FINISH_API,
    ACCESS_REQUESTS_API,
    ACCESS_PENDING_API,
    ACCESS_APPROVE_API,
    ACCESS_DENY_API,
    BREAK_GLASS_API,
    REVIEWS_API,
    REVIEW_API,
    JWKS,
    HOME_PAGE,
    LOGIN_PAGE,
    LOGIN_TOTP_PAGE,
    LOGIN_RECOVERY_PAGE,
    LOGIN_WEBAUTHN_PAGE,
    LOGOUT_PAGE,
    PASSKEYS_PAGE,
    ENROLL_PAGE,
    ENROLL_TOTP_PAGE,
    ENROLL_WEBAUTHN_PAGE,
    ACCESS_REQUEST_PAGE,
    ACCESS_MINE_PAGE,
    APPROVALS_PAGE,
    BREAK_GLASS_PAGE,
    REVIEWS_PAGE,
    STYLE_ASSET,
    WEBAUTHN_ASSET,
];

/// Whether `path` (normalized) is the gateway's own.
pub fn is_reserved(path: &str) -> bool {
    path.starts_with(PREFIX) || path == PREFIX.trim_end_matches('/')
}

/// Whether `path` (normalized) is a page or an asset: the gateway's own, but not its JSON.
pub fn is_page(path: &str) -> bool {
    is_reserved(path) && !path.starts_with(API_PREFIX) && path != JWKS
}

/// The login page for a browser that was going to `target` (a path and query), with the
/// `reason` it shows (`session::Ended::reason`): after the login it returns there.
pub fn login_to(target: &str, reason: &str) -> String {
    format!(
        "{LOGIN_PAGE}?return_to={}&reason={reason}",
        percent_encode(target)
    )
}

/// Percent-encodes everything but unreserved characters and `/`, for a query value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_prefix_is_reserved() {
        assert!(is_reserved("/.wardgate/api/enroll/password"));
        assert!(is_reserved("/.wardgate/"));
        assert!(is_reserved("/.wardgate"));
        assert!(!is_reserved("/.wardgatex"));
        assert!(!is_reserved("/api/.wardgate/"));
        assert!(ALL.iter().all(|path| is_reserved(path)));
    }

    #[test]
    fn only_paths_outside_the_api_are_pages() {
        assert!(is_page(ENROLL_PAGE));
        assert!(is_page(STYLE_ASSET));
        assert!(is_page("/.wardgate/"));
        assert!(is_page("/.wardgate"));
        assert!(!is_page(ENROLL_PASSWORD_API));
        assert!(!is_page(JWKS));
        assert!(!is_page("/api/patients"));
    }

    /// The pages link, post and fetch only to paths of this table: a path renamed here cannot
    /// leave a page pointing at nothing.
    #[test]
    fn the_pages_name_only_paths_of_this_table() {
        let sources = [
            include_str!("pages/templates/access_break_glass.html"),
            include_str!("pages/templates/access_mine.html"),
            include_str!("pages/templates/access_nav.html"),
            include_str!("pages/templates/access_request.html"),
            include_str!("pages/templates/access_patient.html"),
            include_str!("pages/templates/access_queue.html"),
            include_str!("pages/templates/access_row.html"),
            include_str!("pages/templates/base.html"),
            include_str!("pages/templates/csrf_field.html"),
            include_str!("pages/templates/enroll_done.html"),
            include_str!("pages/templates/enroll_password.html"),
            include_str!("pages/templates/enroll_totp.html"),
            include_str!("pages/templates/home.html"),
            include_str!("pages/templates/login_factor.html"),
            include_str!("pages/templates/login_password.html"),
            include_str!("pages/templates/login_recovery_used.html"),
            include_str!("pages/templates/refusal.html"),
            include_str!("pages/assets/webauthn.js"),
        ];
        let mut named = 0;
        for source in sources {
            for (at, _) in source.match_indices(PREFIX.trim_end_matches('/')) {
                let path: String = source[at..]
                    .chars()
                    .take_while(|c| !matches!(c, '"' | '\'' | '?' | '`' | ' ' | '<' | '{'))
                    .collect();
                assert!(ALL.contains(&path.as_str()), "{path} is not in the table");
                named += 1;
            }
        }
        assert!(named > 10, "the templates were not read");
    }
}
