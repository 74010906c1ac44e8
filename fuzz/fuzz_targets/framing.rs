//! `FramingGuard` on arbitrary bytes, fed whole, byte by byte, in pseudo-random pieces, and with a
//! tunnel opened part way. Checks what `src/sanitize/framing.rs` promises:
//!
//! - any split of the stream gives the same released bytes and the same violation, and after
//!   every piece the bytes released so far are those that a byte-by-byte feed had released by
//!   the same offset (so released bytes are a prefix-consistent function of the input);
//! - `Step::release` counts only bytes fed and held; `held()` is what was fed and not released;
//! - once poisoned, nothing more is released, the violation never changes, a tunnel opens nothing;
//! - the guard holds at most one head (plus, for chunked, its first chunk-size line);
//! - an opened tunnel releases everything held, then everything fed.
//!
//! Input: 8 control bytes, then the stream.
//! `[request line limit, header bytes limit / 2, max headers, split seed (4 bytes), tunnel piece]`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wardgate::sanitize::framing::{FramingGuard, FramingLimits, Violation};

/// `MAX_CHUNK_LINE` in the guard, plus the CRLF and the one byte that poisons.
const CHUNK_LINE_SLACK: usize = 4096 + 3;

struct Control {
    limits: FramingLimits,
    seed: u32,
    tunnel_before_piece: Option<usize>,
}

fn control(data: &[u8]) -> Option<(Control, &[u8])> {
    let (head, stream) = data.split_at_checked(8)?;
    let limits = FramingLimits {
        max_request_line: 4 + usize::from(head[0]),
        max_header_bytes: 4 + 2 * usize::from(head[1]),
        max_headers: 1 + usize::from(head[2] & 31),
    };
    let seed = u32::from_le_bytes([head[3], head[4], head[5], head[6]]) | 1;
    let tunnel_before_piece = (head[7] < 32).then_some(usize::from(head[7]));
    Some((
        Control {
            limits,
            seed,
            tunnel_before_piece,
        },
        stream,
    ))
}

/// Piece lengths from a xorshift generator: mostly short, sometimes long.
fn pieces(len: usize, mut seed: u32) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut at = 0;
    while at < len {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let r = seed as usize;
        let piece = if r % 4 == 0 { 1 + r % 257 } else { 1 + r % 13 };
        at = (at + piece).min(len);
        cuts.push(at);
    }
    cuts
}

/// Checks one `feed` against the guard's accounting; returns the bytes it released.
fn feed_checked(
    guard: &mut FramingGuard,
    piece: &[u8],
    before: Option<Violation>,
    bound: usize,
) -> (usize, Option<Violation>) {
    let held_before = guard.held();
    let step = guard.feed(piece);
    assert!(
        step.release <= held_before + piece.len(),
        "released {} of {} held and fed",
        step.release,
        held_before + piece.len()
    );
    assert_eq!(step.violation, guard.violation());
    if let Some(violation) = before {
        assert_eq!(
            step.release, 0,
            "released after the violation {violation:?}"
        );
        assert_eq!(step.violation, before, "the violation changed");
    }
    if step.violation.is_none() {
        assert_eq!(guard.held(), held_before + piece.len() - step.release);
    }
    assert!(
        guard.held() <= bound,
        "holds {} bytes, more than one head and chunk line ({bound})",
        guard.held()
    );
    (step.release, step.violation)
}

fuzz_target!(|data: &[u8]| {
    let Some((control, stream)) = control(data) else {
        return;
    };
    let limits = control.limits;
    let head_bound = limits.max_header_bytes.max(limits.max_request_line + 2) + 1;
    let bound = head_bound + CHUNK_LINE_SLACK;

    // Byte by byte: the reference. `released_at[k]` is what had been released after k bytes.
    let mut guard = FramingGuard::new(limits);
    let mut released_at = Vec::with_capacity(stream.len() + 1);
    let mut released = 0;
    let mut violation = None;
    let mut poisoned_at = None;
    released_at.push(0);
    for (k, byte) in stream.iter().enumerate() {
        let (release, now) = feed_checked(&mut guard, std::slice::from_ref(byte), violation, bound);
        released += release;
        if violation.is_none() && now.is_some() {
            poisoned_at = Some(k);
        }
        violation = now;
        released_at.push(released);
    }
    assert!(released <= stream.len());

    // Whole.
    let mut whole = FramingGuard::new(limits);
    let (whole_released, whole_violation) = feed_checked(&mut whole, stream, None, bound);
    assert_eq!(
        whole_released, released,
        "whole and byte-by-byte release differ"
    );
    assert_eq!(
        whole_violation, violation,
        "whole and byte-by-byte verdicts differ"
    );
    // Feeding more after a violation releases nothing.
    if let Some(v) = whole_violation {
        feed_checked(&mut whole, b"GET / HTTP/1.1\r\n\r\n", Some(v), bound);
        assert_eq!(whole.open_tunnel(), 0, "a poisoned guard opened a tunnel");
    }

    // Pseudo-random pieces, checked at every boundary against the byte-by-byte run.
    let cuts = pieces(stream.len(), control.seed);
    let mut split = FramingGuard::new(limits);
    let (mut total, mut verdict, mut start) = (0, None, 0);
    for &end in &cuts {
        let (release, now) = feed_checked(&mut split, &stream[start..end], verdict, bound);
        total += release;
        verdict = now;
        assert_eq!(
            total, released_at[end],
            "pieces ending at {end} released a different prefix"
        );
        let poisoned_by_now = poisoned_at.is_some_and(|p| p < end);
        assert_eq!(
            verdict.is_some(),
            poisoned_by_now,
            "violation at a different offset"
        );
        start = end;
    }
    assert_eq!(verdict, violation);

    // A tunnel opened before one of the pieces releases what was held and everything after.
    if let Some(k) = control.tunnel_before_piece {
        let mut tunnel = FramingGuard::new(limits);
        let (mut total, mut verdict, mut start) = (0, None, 0);
        for (index, &end) in cuts.iter().enumerate() {
            if index == k {
                let held = tunnel.held();
                let opened = tunnel.open_tunnel();
                match verdict {
                    Some(_) => assert_eq!(opened, 0),
                    None => {
                        assert_eq!(opened, held, "the tunnel kept bytes back");
                        assert_eq!(tunnel.held(), 0);
                    }
                }
                total += opened;
                let expected = if verdict.is_some() {
                    released_at[start]
                } else {
                    start
                };
                assert_eq!(
                    total, expected,
                    "the tunnel did not release all that was fed"
                );
            }
            let piece = &stream[start..end];
            let (release, now) = feed_checked(&mut tunnel, piece, verdict, bound);
            if index >= k && verdict.is_none() {
                assert_eq!(release, piece.len(), "a tunnel checked bytes");
                assert_eq!(now, None, "a tunnel found a violation");
            }
            total += release;
            verdict = now;
            start = end;
        }
        if k < cuts.len() && tunnel.violation().is_none() {
            assert_eq!(total, stream.len());
        }
    }
});
