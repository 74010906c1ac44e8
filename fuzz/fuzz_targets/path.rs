//! `path::normalize` and `sanitize::request::check_path` on arbitrary text.
//!
//! - Neither panics.
//! - `normalize` output is absolute, has no `.`/`..` segment and no `//`, keeps only upper-case
//!   escapes of reserved bytes, and normalizes to itself.
//! - A path `check_path` accepts normalizes, and a back end that decodes the forwarded path once
//!   sees the same segments the gateway judged (only empty segments gone), and the normal form
//!   passes the rules itself. Decoded once or twice, the accepted path never holds a dot segment
//!   or a control character (a back end that decodes twice must not be led into traversal).
//!
//! Input: one flag byte (bit 0: `allow_encoded_slash`), then the path (lossy UTF-8).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate::path::normalize;
use wardgate::sanitize::request::check_path;

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Decodes every valid `%XX`; a stray `%` stays.
fn decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if let [b'%', hi, lo, ..] = bytes[at..]
            && let (Some(hi), Some(lo)) = (hex(hi), hex(lo))
        {
            out.push(hi << 4 | lo);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    out
}

fn segments(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split(|b| *b == b'/')
        .filter(|s| !s.is_empty())
        .collect()
}

fn has_dot_segment(bytes: &[u8]) -> bool {
    bytes.split(|b| *b == b'/').any(|s| s == b"." || s == b"..")
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn check_normal_form(input: &str, out: &str) {
    let bytes = out.as_bytes();
    assert!(out.starts_with('/'), "{input:?} -> {out:?}: not absolute");
    assert!(!out.contains("//"), "{input:?} -> {out:?}: empty segment");
    assert!(!has_dot_segment(bytes), "{input:?} -> {out:?}: dot segment");
    for (at, _) in out.match_indices('%') {
        let escape = bytes.get(at + 1..at + 3);
        let ok = escape.is_some_and(|e| {
            e.iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
                && !is_unreserved(hex(e[0]).unwrap_or(0) << 4 | hex(e[1]).unwrap_or(0))
        });
        assert!(
            ok,
            "{input:?} -> {out:?}: escape at {at} not in normal form"
        );
    }
    // Owned is fine: any `%` sends a path down the slow path, normal or not.
    match normalize(out) {
        Ok(again) => assert_eq!(again, out, "{input:?}: normalize is not idempotent"),
        Err(e) => panic!("{input:?} -> {out:?}: output does not normalize: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let allow_encoded_slash = flags & 1 == 1;
    let path = String::from_utf8_lossy(rest);
    let path = path.as_ref();

    let normalized = normalize(path);
    if let Ok(out) = &normalized {
        check_normal_form(path, out);
    }
    let checked = check_path(path, allow_encoded_slash);
    if allow_encoded_slash {
        // Allowing encoded slashes only ever accepts more.
        if check_path(path, false).is_ok() {
            assert!(
                checked.is_ok(),
                "{path:?}: allow_encoded_slash refused more"
            );
        }
    }
    if checked.is_err() {
        return;
    }

    let once = decode(path.as_bytes());
    let twice = decode(&once);
    for (times, decoded) in [("once", &once), ("twice", &twice)] {
        assert!(
            !has_dot_segment(decoded),
            "{path:?} accepted; decoded {times} has a dot segment"
        );
        assert!(
            !decoded.iter().any(|b| *b < 0x20 || *b == 0x7f),
            "{path:?} accepted; decoded {times} has a control character"
        );
    }
    if !path.starts_with('/') {
        return;
    }
    let Ok(out) = normalized else {
        panic!("{path:?} passed check_path but does not normalize: {normalized:?}");
    };
    // What is forwarded would itself pass the rules.
    assert!(
        check_path(&out, allow_encoded_slash).is_ok(),
        "{path:?} accepted, but its normal form {out:?} is refused: {:?}",
        check_path(&out, allow_encoded_slash)
    );
    if !allow_encoded_slash {
        // No encoded separator: the gateway's segments are the back end's segments.
        assert_eq!(
            segments(&decode(out.as_bytes())),
            segments(&once),
            "{path:?} -> {out:?}: the back end would read other segments"
        );
    }
});
