//! Where a browser may be sent after logging in: the `return_to` of a login link.
//!
//! **The threat.** An open redirect: a phishing mail links to the real gateway's login page
//! with `return_to=//evil.example/fake-ehr`; the user checks the address bar, logs in for real,
//! and is then sent to the attacker's copy of the application, which asks for the password
//! again or serves malware. Browsers are generous in what they read as "another host":
//! `//evil`, `/\evil` and `\\evil` (backslash taken as slash), `/<tab>/evil` (tabs and newlines
//! dropped), `https:evil`, `javascript:…`, and each of these percent-encoded once or twice for
//! servers and frameworks that decode before redirecting.
//!
//! **The rule.** Only a same-origin relative path is returned, and only when it passes these
//! checks as sent, after one percent-decoding and after a second one:
//!
//! ```text
//!  at most 2 KiB, visible ASCII only (no space, control character or raw UTF-8)
//!  begins with exactly one `/`, the next character neither `/` nor `\`
//!  no `\` and no `#` anywhere (fragments are never sent to a server, so no real target has one)
//!  percent-encoding as sent is well formed
//! ```
//!
//! The decoded forms are held to the same rules, so an encoded space (`/a%20b`) is refused as
//! well: the caller then falls back to its default page, which is safe and rarely noticed.
//! A string that begins with a single `/` has no scheme and no authority, so neither `https:`
//! nor `user@host` can sneak in. A target that still decodes to something new after the second
//! round (`%25252F`) is refused too: nothing legitimate is encoded three times. The value
//! returned is the one sent, unchanged, ready for a `Location` header.
//!
//! **The standard.** OWASP ASVS 5.0 V3.7 (unvalidated redirects), OWASP Unvalidated Redirects
//! and Forwards Cheat Sheet (allow only relative, same-origin targets), RFC 3986 section 4.2
//! (network-path references), WHATWG URL (backslash and tab/newline handling).

use crate::path::escape_at;
use crate::sanitize::injection::{has_stray_percent, percent_decode_lenient};

/// The longest target accepted, in bytes.
const MAX_LENGTH: usize = 2048;
/// Percent-decodings checked after the target as sent.
const DECODINGS: usize = 2;

/// `raw` when it is a safe same-origin relative path (module doc), else `None`.
pub fn safe_return_target(raw: &str) -> Option<String> {
    if raw.len() > MAX_LENGTH || !raw.is_ascii() || has_stray_percent(raw.as_bytes()) {
        return None;
    }
    let mut current = raw.to_owned();
    for _ in 0..DECODINGS {
        if !is_relative_path(&current) {
            return None;
        }
        if !has_escape(current.as_bytes()) {
            return Some(raw.to_owned());
        }
        current = String::from_utf8(percent_decode_lenient(current.as_bytes(), false)).ok()?;
    }
    (is_relative_path(&current) && !has_escape(current.as_bytes())).then(|| raw.to_owned())
}

/// One `/`, then anything but `/` or `\`; no `\`, `#`, whitespace or control character.
fn is_relative_path(target: &str) -> bool {
    let bytes = target.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && target
            .chars()
            .all(|c| !(c.is_whitespace() || c.is_control() || matches!(c, '\\' | '#')))
}

fn has_escape(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|at| escape_at(bytes, at).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_paths_are_returned_unchanged() {
        for good in [
            "/",
            "/api/patients/7?x=1",
            "/a/b/",
            "/labs?from=2024-01-01&to=2024-02-01",
            "/search?q=100%25",
            "/caf%C3%A9",
            "/user@home",
            "/x?next=https://elsewhere",
            "/a:b",
        ] {
            assert_eq!(safe_return_target(good).as_deref(), Some(good), "{good}");
        }
    }

    #[test]
    fn other_origins_and_tricks_are_refused() {
        let long = format!("/{}", "a".repeat(MAX_LENGTH));
        for bad in [
            "",
            "//evil",
            "///evil",
            "/\\evil",
            "\\\\evil",
            "\\/evil",
            "/\t/evil",
            "/%09/evil",
            "/\n/evil",
            "/ /evil",
            // Strict on purpose: a decoded space is refused too; such a target falls back to
            // the default page after login.
            "/a%20b",
            "https:evil",
            "https://evil",
            "HTTPS://evil",
            "user@evil",
            "javascript:alert(1)",
            " /a",
            "evil",
            "./a",
            "/a#frag",
            "/a\\b",
            "/caf\u{e9}",
            "/a%",
            "/a%zz",
            "/a%2",
            "%2F%2Fevil",
            "/%2F/evil",
            "/%2f/evil",
            "/%5Cevil",
            "/%5cevil",
            "%252F%252Fevil",
            "/%252F/evil",
            "/%255Cevil",
            "/%2509/evil",
            "/%23frag",
            "/%00",
            "/%0d%0aSet-Cookie:x=1",
            "/%25252F/evil",
            "/%FF",
            long.as_str(),
        ] {
            assert_eq!(safe_return_target(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_length_cap_is_inclusive() {
        let longest = format!("/{}", "a".repeat(MAX_LENGTH - 1));
        assert_eq!(safe_return_target(&longest), Some(longest.clone()));
    }
}
