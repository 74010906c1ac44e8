//! Differential: whatever `FramingGuard` releases must read, with `httparse` (the parser under
//! hyper, with hyper's server defaults), as the same sequence of whole messages. A disagreement
//! about where a message ends is exactly the desync that the guard exists to prevent.
//!
//! The released bytes are walked as hyper would: a request head must parse `Complete` (the guard
//! only releases whole heads), then `Content-Length` bytes or chunks (each chunk-size line whole,
//! data followed by CRLF, the last chunk by a trailer section without framing fields). The walk
//! may stop inside a body or a trailer section, where the guard is still streaming; nowhere else.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate::sanitize::framing::{FramingGuard, FramingLimits};

const LIMITS: FramingLimits = FramingLimits {
    max_request_line: 512,
    max_header_bytes: 2048,
    max_headers: 24,
};

/// More slots than the guard lets through, so `TooManyHeaders` is a disagreement too.
const SLOTS: usize = 64;

fn is(name: &str, wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted)
}

/// Walks `released`; panics where httparse reads it otherwise than the guard did.
fn walk(released: &[u8]) {
    let mut at = 0;
    while at < released.len() {
        let rest = &released[at..];
        let mut headers = [httparse::EMPTY_HEADER; SLOTS];
        let mut request = httparse::Request::new(&mut headers);
        let head = match request.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => panic!("guard released a partial head at {at}"),
            Err(e) => panic!("httparse refuses a head the guard released at {at}: {e:?}"),
        };
        let http10 = request.version == Some(0);
        let mut length = None;
        let mut chunked = false;
        for header in request.headers.iter() {
            if is(header.name, "content-length") {
                let text = std::str::from_utf8(header.value).expect("digits are UTF-8");
                let value: u64 = text
                    .trim()
                    .parse()
                    .expect("guard passed a bad Content-Length");
                assert!(length.replace(value).is_none(), "two Content-Length passed");
            } else if is(header.name, "transfer-encoding") {
                assert!(!chunked, "two Transfer-Encoding passed");
                let text = std::str::from_utf8(header.value).expect("coding is UTF-8");
                assert!(
                    text.trim().eq_ignore_ascii_case("chunked"),
                    "{text:?} passed"
                );
                chunked = true;
            }
        }
        assert!(
            !(chunked && length.is_some()),
            "Content-Length with chunked passed"
        );
        assert!(!(chunked && http10), "chunked HTTP/1.0 passed");
        at += head;
        if chunked {
            match chunks(&released[at..]) {
                Some(used) => at += used,
                None => return,
            }
        } else if let Some(length) = length {
            let left = released.len() - at;
            if length > left as u64 {
                return;
            }
            at += length as usize;
        }
    }
}

/// A chunked body from its first chunk-size line: `Some(bytes)` when it ends within `bytes`,
/// `None` when the released bytes stop inside it.
fn chunks(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        if at == bytes.len() {
            return None;
        }
        let (used, size) = match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => panic!("guard released part of a chunk-size line"),
            Err(_) => panic!("httparse refuses a chunk-size line the guard released"),
        };
        at += used;
        if size == 0 {
            let mut trailers = [httparse::EMPTY_HEADER; SLOTS];
            return match httparse::parse_headers(&bytes[at..], &mut trailers) {
                Ok(httparse::Status::Complete((used, fields))) => {
                    for field in fields {
                        assert!(
                            !is(field.name, "content-length")
                                && !is(field.name, "transfer-encoding"),
                            "framing field in trailers passed"
                        );
                    }
                    Some(at + used)
                }
                // Trailer lines are released one by one: the section may still be open.
                Ok(httparse::Status::Partial) => None,
                Err(e) => panic!("httparse refuses trailers the guard released: {e:?}"),
            };
        }
        let left = (bytes.len() - at) as u64;
        if size > left {
            return None;
        }
        at += size as usize;
        match &bytes[at..] {
            [] => return None,
            [b'\r', b'\n', ..] => at += 2,
            other => panic!(
                "chunk data not followed by CRLF: {:?}",
                &other[..other.len().min(2)]
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = FramingGuard::new(LIMITS);
    let step = guard.feed(data);
    walk(&data[..step.release]);
});
