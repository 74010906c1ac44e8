//! Request path normalization, done once per request.
//!
//! Threat: a path that the gateway reads one way and the back end another (`/public/../admin`,
//! `/public/%2e%2e/admin`, `//admin`) slips past a route rule. Rule: the gateway normalizes the
//! path once, and that same string is both matched against routes and forwarded, so the back end
//! never sees a path the gateway did not judge. Follows RFC 3986 section 6.2.2: percent-encoded
//! unreserved characters are decoded, other percent-encodings are kept with upper-case hex (so an
//! encoded `/` stays data, never a separator), and dot-segments are removed (section 5.2.4).
//! Duplicate slashes are collapsed as well. The query string is not part of the path.

use std::borrow::Cow;

/// Why a path cannot be normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target is not an absolute path")]
    NotAbsolute,
    #[error("the path has a `%` that is not followed by two hex digits")]
    BadPercentEncoding,
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The byte that a `%XX` escape starting at `at` encodes; `None` if there is no valid escape.
pub(crate) fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    match bytes.get(at..at + 3)? {
        [b'%', high, low] => Some(hex_value(*high)? << 4 | hex_value(*low)?),
        _ => None,
    }
}

/// True when `path` is already in normal form: nothing to decode, no empty or dot segments.
fn is_normal(path: &[u8]) -> bool {
    !path.contains(&b'%')
        && path.windows(2).all(|w| w != b"//")
        && path
            .split(|&b| b == b'/')
            .all(|segment| segment != b"." && segment != b"..")
}

/// Returns the normal form of an absolute path, borrowing when it is already normal.
///
/// `normalize(normalize(p)) == normalize(p)` for every `p` that normalizes.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

fn decode_unreserved(bytes: &[u8]) -> Result<String, PathError> {
    // Bytes, not chars: only ASCII `%XX` triplets change, so UTF-8 in the path passes untouched.
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let value = escape_at(bytes, i).ok_or(PathError::BadPercentEncoding)?;
        if is_unreserved(value) {
            out.push(value);
        } else {
            let (hi, lo) = (usize::from(value >> 4), usize::from(value & 0xf));
            out.extend_from_slice(&[b'%', HEX_UPPER[hi], HEX_UPPER[lo]]);
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| PathError::BadPercentEncoding)
}

fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = true;
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => {
                segments.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize(p).unwrap().into_owned()
    }

    #[test]
    fn traversal_and_duplicates_are_resolved() {
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/public/%2e%2e/admin"), "/admin");
        assert_eq!(n("/public/%2E%2e/admin"), "/admin");
        assert_eq!(n("/public/.%2e/admin"), "/admin");
        assert_eq!(n("//admin"), "/admin");
        assert_eq!(n("/a//b///c"), "/a/b/c");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/"), "/");
    }

    #[test]
    fn reserved_encodings_stay_encoded() {
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a%2F..%2Fb"), "/a%2F..%2Fb");
        assert_eq!(n("/%252e%252e/admin"), "/%252e%252e/admin");
        assert_eq!(n("/%41%7e"), "/A~");
        assert_eq!(n("/p%20q"), "/p%20q");
        assert_eq!(n("/caf\u{e9}/%2e/x"), "/caf\u{e9}/x");
    }

    #[test]
    fn already_normal_paths_are_borrowed() {
        assert!(matches!(
            normalize("/api/patients/7/labs"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize("/a/b/"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a/.hidden/b..c"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn malformed_paths_are_refused() {
        assert_eq!(normalize("admin"), Err(PathError::NotAbsolute));
        assert_eq!(normalize(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("/a%2"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadPercentEncoding));
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        let samples = [
            "/a/../b",
            "/%2e/x",
            "//a//",
            "/a%2f%2e%2e",
            "/%7E/./%2E",
            "/x/..%2f..",
            "/a/b/c/../../..",
            "/.../a",
        ];
        for sample in samples {
            let once = n(sample);
            assert_eq!(n(&once), once, "{sample}");
        }
    }

    proptest::proptest! {
        /// Any path of URI characters: no panic, and a second normalization changes nothing.
        #[test]
        fn normalization_is_idempotent(path in "/[a-zA-Z0-9._~%/!$&'()*+,;=:@-]{0,64}") {
            if let Ok(once) = normalize(&path) {
                let twice = normalize(&once).unwrap();
                proptest::prop_assert_eq!(twice.as_ref(), once.as_ref());
            }
        }

        /// The path rules never panic, and whatever they let through normalizes.
        #[test]
        fn accepted_paths_normalize(path in "/[a-zA-Z0-9._~%/\\\\\x00-\x1f\u{80}-\u{10ffff}-]{0,64}") {
            if crate::sanitize::request::check_path(&path, false).is_ok() {
                proptest::prop_assert!(normalize(&path).is_ok());
            }
        }
    }
}
