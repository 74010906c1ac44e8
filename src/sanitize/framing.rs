//! HTTP/1.1 framing guard: a strict byte-level check of the client's stream, below hyper.
//!
//! **Threat.** Request smuggling and desync: a request whose length two parsers can read two
//! ways (`Content-Length` against `Transfer-Encoding`, `Transfer-Encoding: xchunked`, a bare LF
//! that one parser ends a line on and another does not, an obs-folded header, a chunk size of
//! `0x0`) lets a client hide a second request inside the first, which an upstream then runs
//! outside every check of the gateway. hyper's parser is lenient in places (bare LF, some
//! whitespace) and answers its own refusals with a bare 400.
//!
//! **Rule.** Every byte of an HTTP/1.x connection passes [`FramingGuard`] before hyper sees it.
//! Only messages whose length is unambiguous under the strict grammar below get through; the
//! first violation poisons the connection, hyper gets end-of-file, and the client gets one fixed
//! refusal with a stable `WG-FRAME-…` code ([`Violation`]) before the connection closes.
//!
//! - A request head (request line, fields, empty line) is held back until it is complete and
//!   valid, then released whole. A chunked request without `Expect` is held a little longer,
//!   until its first chunk-size line is valid too, so that a malformed first chunk never reaches
//!   an upstream at all.
//! - Bodies stream: `Content-Length` bytes are counted through unseen; chunk data is released as
//!   it arrives, chunk-size lines and trailer fields once each line is complete and valid.
//! - CRLF only (RFC 9112 section 2.2): a bare LF or bare CR anywhere is refused, and so is an
//!   empty line before the request line (which section 2.2 lets a server skip; refusing is
//!   stricter and simpler).
//! - Request line (section 3): `method SP request-target SP HTTP/1.1|HTTP/1.0`, one SP each,
//!   the target printable ASCII only (raw non-ASCII, CTL and NUL refused; clients percent-encode).
//! - Fields (section 5, RFC 9110 section 5.5): `token ":" OWS value OWS`, no whitespace before
//!   the colon, no obs-fold; value bytes are HTAB, SP, VCHAR and obs-text only.
//! - Framing (sections 6.1, 6.3, 7.1): `Content-Length` at most once and `1*DIGIT` (18 digits at
//!   most, no leading zero); `Transfer-Encoding` at most once, exactly `chunked`, never with HTTP/1.0, never with
//!   `Content-Length` (section 6.1 lets a server refuse this; we must). Neither: no body.
//! - Chunks (section 7.1): size `1*HEXDIG` (16 digits at most), extensions `;name[=value]` with no
//!   whitespace, data followed by exactly CRLF, the last chunk by trailer fields (same field
//!   rules, and no framing fields) and CRLF. Then the next request may follow (pipelining).
//!
//! ```text
//!            +---------------------- next request (pipelining) -----------------------+
//!            v                                                                        |
//!   +----> HEAD --CL--> BODY(n) -------------------------------------------------------+
//!   |       |  \--none--------------------------------------------------------------->+
//!   |       |                                                                        |
//!   |       +--TE--> CHUNK-SIZE --n>0--> CHUNK-DATA(n) --> CRLF --+                  |
//!   |                    ^   \--0--> TRAILERS --empty line----------------------------+
//!   |                    +----------------------------------------+
//!   |
//!   |   any state --violation--> POISONED (nothing more released; refusal, close)
//!   +-- HEAD --101 Switching Protocols (told by the request path)--> TUNNEL (raw bytes)
//! ```
//!
//! **Answering on the raw connection** ([`GuardedIo`]). How the refusal reaches the client
//! depends on where the violation sits:
//!
//! - *Between messages* (in a head, or in the first chunk line of a held head): hyper has seen
//!   nothing of the bad request, so to hyper the client simply stopped sending. It finishes the
//!   response it is writing, if any, and shuts the connection down; the refusal is written in
//!   `poll_shutdown`, just before the TLS close. This needs hyper's HTTP/1 `half_close(true)`
//!   (set in `server.rs`): otherwise hyper takes end-of-file during an in-flight request as the
//!   client leaving and drops that response. Nothing hangs: at end-of-file hyper either shuts
//!   down or, after an I/O error, drops the connection (which then closes without a refusal).
//! - *Inside a body* (the request is half-forwarded): hyper's later writes for it would be a
//!   502 or a parser error of its own, so they are swallowed (reported as written) from the
//!   moment of the violation, and the refusal is written at the first chance: hyper's next
//!   read (which then sees end-of-file), write, flush or shutdown. A response to an *earlier*
//!   pipelined request that hyper is still writing at that instant is cut; the client sent a
//!   malformed stream, and only the refusal is owed.
//!
//! After an accepted WebSocket upgrade the stream is no longer HTTP: the request path flips the
//! connection's [`TunnelSwitch`] when the upstream answered 101, and the guard then passes bytes
//! through unchanged. Until then, bytes after an upgrade request are still checked as HTTP,
//! because hyper reads them as HTTP if the upgrade is refused.
//!
//! Only HTTP/1.x connections are guarded; HTTP/2 frames its own messages. hyper's own limits
//! stay in place as a second line of defence.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use crate::refusal::Violation;

impl Violation {
    /// The whole HTTP/1.1 refusal written on the raw connection.
    pub fn refusal_bytes(self) -> Vec<u8> {
        let refusal = self.refusal();
        http1_bytes(refusal.status(), refusal.code(), refusal.reason())
    }
}

/// A whole HTTP/1.1 refusal as bytes, for the layers below hyper that must answer on the raw
/// connection: the same body and security headers as every other refusal, then the connection
/// closes.
fn http1_bytes(status: StatusCode, code: &str, reason: &str) -> Vec<u8> {
    let body = crate::refusal::json_body(code, reason);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in crate::hardening::SECURITY_HEADERS {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// Size limits of a request head, from `server.*` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingLimits {
    /// Request line without its CRLF; longer: 414.
    pub max_request_line: usize,
    /// Whole head (request line, fields, CRLFs), and separately each trailer section; larger: 431.
    pub max_header_bytes: usize,
    /// Fields in a head, and separately in a trailer section; more: 431.
    pub max_headers: usize,
}

/// Chunk-size lines carry a size and extensions nobody needs to be long.
const MAX_CHUNK_LINE: usize = 4096;
/// 18 decimal digits always fit in a u64; longer is a client probing for overflow.
const MAX_CONTENT_LENGTH_DIGITS: usize = 18;
/// 16 hexadecimal digits are a full u64.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

/// What one [`FramingGuard::feed`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How many bytes may go to hyper now, counted from the oldest byte not yet released: bytes
    /// held back from earlier calls first, then bytes of this call.
    pub release: usize,
    /// The violation that poisoned the stream, in this call or earlier.
    pub violation: Option<Violation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Lines of a request head; nothing of it released yet.
    Head,
    /// A `Content-Length` body with this many bytes still to come.
    Body(u64),
    /// A chunk-size line.
    ChunkSize,
    /// Chunk data with this many bytes still to come.
    ChunkData(u64),
    /// The CRLF after chunk data; `true` once the CR is in.
    ChunkEnd(bool),
    /// Trailer field lines after the last chunk.
    Trailers,
    /// After an accepted upgrade: no longer HTTP.
    Tunnel,
    Poisoned(Violation),
}

/// What the current head (or trailer section) has said so far.
#[derive(Debug, Default)]
struct Section {
    /// Lines completed so far; in a head, line 0 is the request line.
    lines: usize,
    bytes: usize,
    fields: usize,
    http10: bool,
    content_length: Option<u64>,
    chunked: bool,
    expect: bool,
}

/// The incremental framing state machine of one HTTP/1.x connection (client to server).
///
/// Pure: no I/O, no clock, no stored payload beyond the line being parsed. The caller keeps the
/// bytes it fed and has not been told to release.
#[derive(Debug)]
pub struct FramingGuard {
    limits: FramingLimits,
    state: State,
    /// The line being read, without its CRLF.
    line: Vec<u8>,
    /// The previous byte was a CR: the next must be LF.
    cr: bool,
    section: Section,
    /// Bytes fed but not released.
    held: usize,
    /// Some bytes of the current message have been released.
    forwarded: bool,
}

impl FramingGuard {
    pub fn new(limits: FramingLimits) -> Self {
        Self {
            limits,
            state: State::Head,
            line: Vec::new(),
            cr: false,
            section: Section::default(),
            held: 0,
            forwarded: false,
        }
    }

    /// The violation that poisoned the stream, if any.
    pub fn violation(&self) -> Option<Violation> {
        match self.state {
            State::Poisoned(v) => Some(v),
            _ => None,
        }
    }

    /// True when part of the message being read has reached hyper: a violation now falls
    /// inside a request that is half-forwarded.
    pub fn half_forwarded(&self) -> bool {
        self.forwarded
    }

    /// Bytes fed and held back.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The connection has switched protocols: everything from here on, and everything held, is
    /// released unchecked. Returns how many held bytes that releases; a poisoned guard stays so.
    pub fn open_tunnel(&mut self) -> usize {
        match self.state {
            State::Poisoned(_) | State::Tunnel => 0,
            _ => {
                self.state = State::Tunnel;
                std::mem::take(&mut self.held)
            }
        }
    }

    /// Checks the next bytes of the stream. Any split of the stream into calls gives the same
    /// released bytes and the same violation.
    pub fn feed(&mut self, bytes: &[u8]) -> Step {
        let held_before = self.held;
        // End (in `bytes`) of the released prefix, if this call released anything.
        let mut mark: Option<usize> = None;
        let mut at = 0;
        while at < bytes.len() {
            let outcome = match self.state {
                State::Poisoned(_) => break,
                State::Tunnel => {
                    at = bytes.len();
                    Ok(true)
                }
                State::Body(left) | State::ChunkData(left) => {
                    let take = left.min(u64::try_from(bytes.len() - at).unwrap_or(u64::MAX));
                    // `take` is at most the bytes left, a usize.
                    at += usize::try_from(take).unwrap_or(0);
                    let left = left - take;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::ChunkEnd(false),
                        (_, left) => State::ChunkData(left),
                    };
                    if self.state == State::Head {
                        self.end_message();
                    }
                    Ok(true)
                }
                State::ChunkEnd(cr) => {
                    let byte = bytes[at];
                    at += 1;
                    match (cr, byte) {
                        (false, b'\r') => {
                            self.state = State::ChunkEnd(true);
                            Ok(false)
                        }
                        (true, b'\n') => {
                            self.state = State::ChunkSize;
                            Ok(true)
                        }
                        _ => Err(Violation::MissingChunkTerminator),
                    }
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    let byte = bytes[at];
                    at += 1;
                    self.line_byte(byte)
                }
            };
            match outcome {
                Ok(true) => {
                    mark = Some(at);
                    if self.state != State::Head {
                        self.forwarded = true;
                    }
                }
                Ok(false) => {}
                Err(violation) => {
                    self.state = State::Poisoned(violation);
                    break;
                }
            }
        }
        let release = mark.map_or(0, |end| held_before + end);
        self.held = held_before + at - release;
        Step {
            release,
            violation: self.violation(),
        }
    }

    /// The next byte of a line (head, chunk size, trailers). `Ok(true)`: release up to here.
    fn line_byte(&mut self, byte: u8) -> Result<bool, Violation> {
        self.grow()?;
        if self.cr {
            self.cr = false;
            if byte != b'\n' {
                return Err(Violation::BareCarriageReturn);
            }
            let line = std::mem::take(&mut self.line);
            let outcome = self.end_line(&line);
            self.line = line;
            self.line.clear();
            return outcome;
        }
        match byte {
            b'\n' => Err(Violation::BareLineFeed),
            b'\r' => {
                self.cr = true;
                Ok(false)
            }
            _ => {
                self.line.push(byte);
                let long = self.line.len();
                match self.state {
                    State::Head
                        if self.section.lines == 0 && long > self.limits.max_request_line =>
                    {
                        Err(Violation::RequestLineTooLong)
                    }
                    State::ChunkSize if long > MAX_CHUNK_LINE => Err(Violation::ChunkLineTooLong),
                    _ => Ok(false),
                }
            }
        }
    }

    /// Counts a byte of a head or trailer section against its size limit.
    fn grow(&mut self) -> Result<(), Violation> {
        if matches!(self.state, State::Head | State::Trailers) {
            self.section.bytes += 1;
            // The request line has its own, more telling limit (414) while it is being read.
            let in_request_line = self.state == State::Head && self.section.lines == 0;
            if self.section.bytes > self.limits.max_header_bytes && !in_request_line {
                return Err(Violation::HeadTooLarge);
            }
        }
        Ok(())
    }

    fn end_line(&mut self, line: &[u8]) -> Result<bool, Violation> {
        let first = self.section.lines == 0;
        self.section.lines += 1;
        match self.state {
            State::Head if first => {
                if line.is_empty() {
                    return Err(Violation::EmptyLineBeforeRequest);
                }
                self.section.http10 = request_line(line)?;
                Ok(false)
            }
            State::Head if line.is_empty() => self.end_head(),
            State::Head => {
                let (name, value) = self.field(line)?;
                self.framing_field(name, value)?;
                Ok(false)
            }
            State::ChunkSize => {
                match chunk_size(line)? {
                    0 => {
                        self.state = State::Trailers;
                        self.section = Section::default();
                    }
                    size => self.state = State::ChunkData(size),
                }
                Ok(true)
            }
            State::Trailers if line.is_empty() => {
                self.end_message();
                Ok(true)
            }
            State::Trailers => {
                let (name, _) = self.field(line)?;
                if name.eq_ignore_ascii_case(b"content-length")
                    || name.eq_ignore_ascii_case(b"transfer-encoding")
                {
                    return Err(Violation::FramingFieldInTrailer);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A field line of a head or trailer section: counted, split, checked.
    fn field<'l>(&mut self, line: &'l [u8]) -> Result<(&'l [u8], &'l [u8]), Violation> {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(Violation::ObsFold);
        }
        self.section.fields += 1;
        if self.section.fields > self.limits.max_headers {
            return Err(Violation::TooManyFields);
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(Violation::MalformedField)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(Violation::MalformedField);
        }
        if !value
            .iter()
            .all(|b| matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff))
        {
            return Err(Violation::BadFieldValue);
        }
        Ok((name, trim_ows(value)))
    }

    fn framing_field(&mut self, name: &[u8], value: &[u8]) -> Result<(), Violation> {
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.section.content_length.is_some() {
                return Err(Violation::DuplicateContentLength);
            }
            // No leading zeros: back ends that read `010` as octal would frame the body
            // differently from the gateway (http-garden).
            if value.is_empty()
                || value.len() > MAX_CONTENT_LENGTH_DIGITS
                || !value.iter().all(u8::is_ascii_digit)
                || (value.len() > 1 && value[0] == b'0')
            {
                return Err(Violation::BadContentLength);
            }
            let length = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            self.section.content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.section.http10 {
                return Err(Violation::TransferEncodingInHttp10);
            }
            if self.section.chunked {
                return Err(Violation::DuplicateTransferEncoding);
            }
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Violation::UnsupportedTransferEncoding);
            }
            self.section.chunked = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            self.section.expect = true;
        }
        Ok(())
    }

    /// The empty line after the fields: the framing is now known.
    fn end_head(&mut self) -> Result<bool, Violation> {
        let section = &self.section;
        match (section.content_length, section.chunked) {
            (Some(_), true) => Err(Violation::ContentLengthWithTransferEncoding),
            (_, true) => {
                // A client that sent `Expect` waits for 100 Continue before the first chunk:
                // holding its head would stall it.
                let release = section.expect;
                self.state = State::ChunkSize;
                self.section = Section::default();
                Ok(release)
            }
            (Some(length), false) if length > 0 => {
                self.state = State::Body(length);
                self.section = Section::default();
                Ok(true)
            }
            _ => {
                self.end_message();
                Ok(true)
            }
        }
    }

    fn end_message(&mut self) {
        self.state = State::Head;
        self.section = Section::default();
        self.forwarded = false;
    }
}

/// `method SP request-target SP HTTP-version`; returns whether the version is HTTP/1.0.
fn request_line(line: &[u8]) -> Result<bool, Violation> {
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Violation::MalformedRequestLine);
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) || target.is_empty() {
        return Err(Violation::MalformedRequestLine);
    }
    if !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Violation::BadRequestTarget);
    }
    match version {
        b"HTTP/1.1" => Ok(false),
        b"HTTP/1.0" => Ok(true),
        _ => Err(Violation::UnsupportedVersion),
    }
}

/// `1*HEXDIG *( ";" token [ "=" ( token / quoted-string ) ] )`, no whitespace anywhere.
fn chunk_size(line: &[u8]) -> Result<u64, Violation> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(Violation::BadChunkSize);
    }
    let mut rest = &line[digits..];
    match rest.first() {
        None | Some(b';') => {}
        Some(_) => return Err(Violation::BadChunkSize),
    }
    while let Some((b';', after)) = rest.split_first() {
        let name = after.iter().take_while(|b| is_tchar(**b)).count();
        if name == 0 {
            return Err(Violation::BadChunkExtension);
        }
        rest = &after[name..];
        if let Some((b'=', after)) = rest.split_first() {
            let value = match after.first() {
                Some(b'"') => quoted_string(after).ok_or(Violation::BadChunkExtension)?,
                _ => after.iter().take_while(|b| is_tchar(**b)).count(),
            };
            if value == 0 {
                return Err(Violation::BadChunkExtension);
            }
            rest = &after[value..];
        }
    }
    if !rest.is_empty() {
        return Err(Violation::BadChunkExtension);
    }
    let size = line[..digits].iter().fold(0u64, |n, d| {
        // Only hex digits get here; at most 16 of them fit.
        let digit = char::from(*d).to_digit(16).map_or(0, u64::from);
        (n << 4) | digit
    });
    Ok(size)
}

/// Length of the quoted-string at the start of `bytes` (RFC 9110 section 5.6.4), if any.
fn quoted_string(bytes: &[u8]) -> Option<usize> {
    let mut at = 1;
    loop {
        match bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => {
                let escaped = bytes.get(at + 1)?;
                if !matches!(escaped, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff) {
                    return None;
                }
                at += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => at += 1,
            _ => return None,
        }
    }
}

/// RFC 9110 section 5.6.2.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &value[start..end]
}

/// Set by the request path when the upstream accepted an upgrade (101): from then on the
/// connection carries another protocol and the guard lets it through unchecked.
#[derive(Debug, Clone, Default)]
pub struct TunnelSwitch(Arc<AtomicBool>);

impl TunnelSwitch {
    pub fn open(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_open(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Told once, with the violation, when a connection is refused.
pub type OnViolation = Box<dyn FnOnce(Violation) + Send>;

/// The refusal still to be written, and whether hyper's writes are swallowed meanwhile.
struct Refusal {
    bytes: Vec<u8>,
    written: usize,
    flushed: bool,
    /// The violation fell inside a half-forwarded request: hyper's answer to it must not reach
    /// the client.
    swallow: bool,
}

/// A client connection seen through a [`FramingGuard`]: hyper reads only released bytes.
pub struct GuardedIo<T> {
    inner: T,
    guard: FramingGuard,
    /// Bytes read from `inner` and not yet given to hyper: `pending[..ready]` are released, the
    /// rest held back by the guard.
    pending: Vec<u8>,
    ready: usize,
    on_violation: Option<OnViolation>,
    refusal: Option<Refusal>,
    tunnel: TunnelSwitch,
}

impl<T> GuardedIo<T> {
    pub fn new(inner: T, limits: FramingLimits, on_violation: OnViolation) -> Self {
        Self {
            inner,
            guard: FramingGuard::new(limits),
            pending: Vec::new(),
            ready: 0,
            on_violation: Some(on_violation),
            refusal: None,
            tunnel: TunnelSwitch::default(),
        }
    }

    /// The switch the request path flips when this connection is upgraded.
    pub fn tunnel_switch(&self) -> TunnelSwitch {
        self.tunnel.clone()
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn after_feed(&mut self) {
        let Some(violation) = self.guard.violation() else {
            return;
        };
        if self.refusal.is_none() {
            self.refusal = Some(Refusal {
                bytes: violation.refusal_bytes(),
                written: 0,
                flushed: false,
                swallow: self.guard.half_forwarded(),
            });
            if let Some(tell) = self.on_violation.take() {
                tell(violation);
            }
        }
    }

    fn swallowing(&self) -> bool {
        self.refusal.as_ref().is_some_and(|r| r.swallow)
    }
}

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Writes and flushes the refusal, if there is one still to write.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(refusal) = self.refusal.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while refusal.written < refusal.bytes.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &refusal.bytes[refusal.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            refusal.written += n;
        }
        if !refusal.flushed {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            refusal.flushed = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.tunnel.is_open() {
                this.ready += this.guard.open_tunnel();
            }
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.drain(..n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if this.guard.violation().is_some() {
                if this.swallowing() {
                    ready!(this.poll_refusal(cx))?;
                }
                // End of file: hyper sees the client stop here.
                return Poll::Ready(Ok(()));
            }
            if this.pending.is_empty() {
                // Nothing held: read straight into hyper's buffer, so bodies are not copied.
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let read = buf.filled().len() - before;
                if read == 0 {
                    return Poll::Ready(Ok(()));
                }
                let step = this.guard.feed(&buf.filled()[before..]);
                if step.release < read {
                    this.pending
                        .extend_from_slice(&buf.filled()[before + step.release..]);
                    buf.set_filled(before + step.release);
                }
                this.after_feed();
                if step.release > 0 {
                    return Poll::Ready(Ok(()));
                }
            } else {
                let mut chunk = [0u8; 8192];
                let mut read = ReadBuf::new(&mut chunk);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                if read.filled().is_empty() {
                    // The client left in the middle of a head: it was never forwarded.
                    this.pending.clear();
                    return Poll::Ready(Ok(()));
                }
                let step = this.guard.feed(read.filled());
                this.pending.extend_from_slice(read.filled());
                this.ready = step.release;
                this.after_feed();
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.swallowing() {
            ready!(this.poll_refusal(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.swallowing() {
            ready!(this.poll_refusal(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.swallowing() {
            return this.poll_refusal(cx);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_refusal(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FramingLimits = FramingLimits {
        max_request_line: 64,
        max_header_bytes: 256,
        max_headers: 8,
    };

    /// Feeds `input` in pieces of `step` bytes, as a caller would: returns the bytes released in
    /// order and the violation.
    fn run_split(input: &[u8], step: usize) -> (Vec<u8>, Option<Violation>) {
        let mut guard = FramingGuard::new(LIMITS);
        let mut held: Vec<u8> = Vec::new();
        let mut released = Vec::new();
        let mut violation = None;
        for piece in input.chunks(step.max(1)) {
            let result = guard.feed(piece);
            held.extend_from_slice(piece);
            released.extend(held.drain(..result.release));
            violation = result.violation;
            if violation.is_some() {
                break;
            }
        }
        (released, violation)
    }

    /// Runs `input` whole and byte by byte; both must agree.
    fn run(input: &[u8]) -> (Vec<u8>, Option<Violation>) {
        let whole = run_split(input, input.len());
        assert_eq!(run_split(input, 1), whole, "byte by byte differs");
        assert_eq!(run_split(input, 7), whole, "7-byte pieces differ");
        whole
    }

    fn refused(input: &str) -> Option<Violation> {
        run(input.as_bytes()).1
    }

    fn passes(input: &str) {
        let (released, violation) = run(input.as_bytes());
        assert_eq!(violation, None, "{input:?}");
        assert_eq!(released, input.as_bytes(), "{input:?}");
    }

    const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    /// A chunked POST whose body (chunks, trailers) is `body`.
    fn chunked(body: &str) -> String {
        format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
    }

    #[test]
    fn valid_pipelined_requests_pass_in_order() {
        passes(GET);
        passes(&format!(
            "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello{GET}"
        ));
        passes(&format!(
            "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tChunked \r\n\r\n\
             5;a=b;c=\"x y\";d\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n{GET}"
        ));
        passes("GET /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        passes("GET / HTTP/1.1\r\nX-Empty:\r\nX-Obs-Text: caf\u{e9}\r\n\r\n");
        passes("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n");
        // An empty body ends the message at once: what follows is the next request's head.
        let empty = format!("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n{GET}");
        passes(&empty);
        assert_eq!(
            refused(&format!("{empty}GET / HTTP/1.1\n\n")),
            Some(Violation::BareLineFeed)
        );
    }

    #[test]
    fn heads_are_held_until_complete_and_bodies_stream() {
        let mut guard = FramingGuard::new(LIMITS);
        let head = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r";
        assert_eq!(guard.feed(head).release, 0);
        assert_eq!(guard.held(), head.len());
        assert_eq!(guard.feed(b"\n").release, head.len() + 1);
        assert_eq!(guard.feed(b"abc").release, 3);
        assert!(guard.half_forwarded());
        assert_eq!(guard.feed(b"defghij").release, 7);
        assert!(!guard.half_forwarded());
        assert_eq!(guard.held(), 0);
        // An empty body: the message is over with its head, nothing of a next one is out.
        assert_eq!(
            guard
                .feed(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                .release,
            38
        );
        assert!(!guard.half_forwarded());
    }

    #[test]
    fn chunked_heads_wait_for_the_first_chunk_line_unless_expect() {
        let mut guard = FramingGuard::new(LIMITS);
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(guard.feed(head).release, 0);
        assert_eq!(guard.feed(b"3\r\n").release, head.len() + 3);
        assert_eq!(guard.feed(b"ab").release, 2);

        let mut guard = FramingGuard::new(LIMITS);
        let head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(guard.feed(head).release, head.len());

        let mut guard = FramingGuard::new(LIMITS);
        guard.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x0\r\n");
        assert_eq!(guard.violation(), Some(Violation::BadChunkSize));
        assert!(!guard.half_forwarded(), "nothing of it reached hyper");
    }

    #[test]
    fn line_endings_are_crlf_only() {
        use Violation::*;
        assert_eq!(
            refused("GET / HTTP/1.1\nHost: a\r\n\r\n"),
            Some(BareLineFeed)
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nHost: a\n\r\n"),
            Some(BareLineFeed)
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nHost: a\r\n\n"),
            Some(BareLineFeed)
        );
        assert_eq!(
            refused("GET / HTTP/1.1\rHost: a\r\n\r\n"),
            Some(BareCarriageReturn)
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"),
            Some(BareCarriageReturn)
        );
        assert_eq!(refused(&format!("\r\n{GET}")), Some(EmptyLineBeforeRequest));
    }

    #[test]
    fn request_lines_are_strict() {
        use Violation::*;
        for bad in [
            "GET  / HTTP/1.1",
            "GET / HTTP/1.1 ",
            " GET / HTTP/1.1",
            "GET /",
            "G(T / HTTP/1.1",
            "GET\t/ HTTP/1.1",
            "GET / x HTTP/1.1",
        ] {
            assert_eq!(
                refused(&format!("{bad}\r\n\r\n")),
                Some(MalformedRequestLine),
                "{bad:?}"
            );
        }
        for bad in [
            "GET /\x00 HTTP/1.1",
            "GET /\u{e9} HTTP/1.1",
            "GET /a\tb HTTP/1.1",
        ] {
            assert_eq!(
                refused(&format!("{bad}\r\n\r\n")),
                Some(BadRequestTarget),
                "{bad:?}"
            );
        }
        for bad in ["HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.1x"] {
            assert_eq!(
                refused(&format!("GET / {bad}\r\n\r\n")),
                Some(UnsupportedVersion),
                "{bad:?}"
            );
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(64));
        assert_eq!(refused(&long), Some(RequestLineTooLong));
        assert_eq!(
            RequestLineTooLong.refusal().status(),
            StatusCode::URI_TOO_LONG
        );
    }

    #[test]
    fn field_lines_are_strict() {
        use Violation::*;
        let head = |fields: &str| format!("GET / HTTP/1.1\r\n{fields}\r\n");
        assert_eq!(refused(&head("Host: a\r\n x\r\n")), Some(ObsFold));
        assert_eq!(refused(&head("\tHost: a\r\n")), Some(ObsFold));
        assert_eq!(
            refused(&head("Transfer-Encoding : chunked\r\n")),
            Some(MalformedField)
        );
        assert_eq!(refused(&head("No colon\r\n")), Some(MalformedField));
        assert_eq!(refused(&head(": empty name\r\n")), Some(MalformedField));
        assert_eq!(refused(&head("X: a\x00b\r\n")), Some(BadFieldValue));
        assert_eq!(refused(&head("X:\x0bchunked\r\n")), Some(BadFieldValue));
        assert_eq!(refused(&head("X: a\x7f\r\n")), Some(BadFieldValue));
        let many: String = (0..9).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(refused(&head(&many)), Some(TooManyFields));
        let big = format!("X: {}\r\n", "v".repeat(250));
        assert_eq!(refused(&head(&big)), Some(HeadTooLarge));
        assert_eq!(
            HeadTooLarge.refusal().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn framing_fields_leave_one_reading() {
        use Violation::*;
        let head = |fields: &str| format!("POST / HTTP/1.1\r\n{fields}\r\n");
        for bad in [
            "1,2",
            "+5",
            " 5 6",
            "",
            "-1",
            "0x10",
            "1234567890123456789",
            "5;",
            "0005",
            "010",
            "00",
        ] {
            assert_eq!(
                refused(&head(&format!("Content-Length: {bad}\r\n"))),
                Some(BadContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            refused(&head("Content-Length: 1\r\nContent-Length: 1\r\n")),
            Some(DuplicateContentLength)
        );
        for bad in [
            "xchunked",
            "chunked, identity",
            "identity",
            "chunked;x",
            "chunked,",
            "gzip, chunked",
            "",
        ] {
            assert_eq!(
                refused(&head(&format!("Transfer-Encoding: {bad}\r\n"))),
                Some(UnsupportedTransferEncoding),
                "{bad:?}"
            );
        }
        assert_eq!(
            UnsupportedTransferEncoding.refusal().status(),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            refused(&head(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
            )),
            Some(DuplicateTransferEncoding)
        );
        assert_eq!(
            refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(TransferEncodingInHttp10)
        );
        assert_eq!(
            refused(&head("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n")),
            Some(ContentLengthWithTransferEncoding)
        );
        assert_eq!(
            refused(&head("Transfer-Encoding: chunked\r\nContent-Length: 6\r\n")),
            Some(ContentLengthWithTransferEncoding)
        );
        passes(&head("content-length:  18 \r\n").replace("\r\n\r\n", "\r\n\r\n012345678901234567"));
    }

    #[test]
    fn limits_hold_at_their_exact_bounds() {
        use Violation::*;
        let request_line = |len: usize| format!("GET /{} HTTP/1.1", "a".repeat(len - 14));
        assert_eq!(
            request_line(LIMITS.max_request_line).len(),
            LIMITS.max_request_line
        );
        passes(&format!(
            "{}\r\nHost: a\r\n\r\n",
            request_line(LIMITS.max_request_line)
        ));
        let longer = request_line(LIMITS.max_request_line + 1);
        assert_eq!(
            refused(&format!("{longer}\r\nHost: a\r\n\r\n")),
            Some(RequestLineTooLong)
        );

        // The whole head, CRLFs included: the request line, one field, the empty line.
        let head = |len: usize| format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(len - 23));
        assert_eq!(head(LIMITS.max_header_bytes).len(), LIMITS.max_header_bytes);
        passes(&head(LIMITS.max_header_bytes));
        assert_eq!(
            refused(&head(LIMITS.max_header_bytes + 1)),
            Some(HeadTooLarge)
        );
        let fields = |count: usize| format!("GET / HTTP/1.1\r\n{}\r\n", "A: 1\r\n".repeat(count));
        passes(&fields(LIMITS.max_headers));
        assert_eq!(
            refused(&fields(LIMITS.max_headers + 1)),
            Some(TooManyFields)
        );
        let length = |digits: usize| {
            format!(
                "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\nabc",
                "9".repeat(digits)
            )
        };
        passes(&length(MAX_CONTENT_LENGTH_DIGITS));
        assert_eq!(
            refused(&length(MAX_CONTENT_LENGTH_DIGITS + 1)),
            Some(BadContentLength)
        );

        let size_line = |len: usize| format!("1;a={}", "x".repeat(len - 4));
        passes(&chunked(&format!(
            "{}\r\nx\r\n0\r\n\r\n",
            size_line(MAX_CHUNK_LINE)
        )));
        assert_eq!(
            refused(&chunked(&format!("{}\r\n", size_line(MAX_CHUNK_LINE + 1)))),
            Some(ChunkLineTooLong)
        );
        // A first trailer line is held to the section's size while it is still being read.
        let trailer = format!("0\r\nX-Sum: {}", "1".repeat(LIMITS.max_header_bytes));
        assert_eq!(refused(&chunked(&trailer)), Some(HeadTooLarge));
    }

    #[test]
    fn quoted_strings_end_at_their_unescaped_quote() {
        let cases: [(&[u8], Option<usize>); 10] = [
            (b"\"x y\"", Some(5)),
            (b"\"a\"rest", Some(3)),
            (b"\"\"", Some(2)),
            (b"\"a\\\"b\"", Some(6)),
            (b"\"\\\"abc\"", Some(7)),
            (b"\"a\\\\\"", Some(5)),
            (b"\"abc", None),
            (b"\"a\\", None),
            (b"\"a\\\x01\"", None),
            (b"\"a\x7f\"", None),
        ];
        for (bytes, length) in cases {
            assert_eq!(
                quoted_string(bytes),
                length,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn chunks_are_strict() {
        use Violation::*;
        for bad in ["0x0", "+5", "-1", " 5", "5 ", "", "g", "12345678901234567"] {
            assert_eq!(
                refused(&chunked(&format!("{bad}\r\n"))),
                Some(BadChunkSize),
                "{bad:?}"
            );
        }
        for bad in ["5 ;ext", "5\t;ext"] {
            assert_eq!(
                refused(&chunked(&format!("{bad}\r\n"))),
                Some(BadChunkSize),
                "{bad:?}"
            );
        }
        for bad in [
            "5;",
            "5; a",
            "5;a =b",
            "5;a=",
            "5;a=\"x",
            "5;a=b c",
            "5;a=\"\x01\"",
        ] {
            assert_eq!(
                refused(&chunked(&format!("{bad}\r\n"))),
                Some(BadChunkExtension),
                "{bad:?}"
            );
        }
        let long = format!("1;a={}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert_eq!(refused(&chunked(&long)), Some(ChunkLineTooLong));
        assert_eq!(
            refused(&chunked("3\r\nabcd\r\n")),
            Some(MissingChunkTerminator)
        );
        assert_eq!(
            refused(&chunked("3\r\nabc\n")),
            Some(MissingChunkTerminator)
        );
        assert_eq!(
            refused(&chunked("3\r\nabc\r\r")),
            Some(MissingChunkTerminator)
        );
        assert_eq!(
            refused(&chunked("0\r\nX: a\nb\r\n\r\n")),
            Some(BareLineFeed)
        );
        assert_eq!(refused(&chunked("0\r\n x\r\n\r\n")), Some(ObsFold));
        assert_eq!(
            refused(&chunked("0\r\nContent-Length: 5\r\n\r\n")),
            Some(FramingFieldInTrailer)
        );
        assert_eq!(
            refused(&chunked("0\r\ntransfer-encoding: chunked\r\n\r\n")),
            Some(FramingFieldInTrailer)
        );
        passes(&chunked("0000000000000001\r\nx\r\n0\r\n\r\n"));
    }

    #[test]
    fn a_smuggled_request_behind_a_valid_one_is_cut_at_its_head() {
        let first = "POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let second = "POST /x HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n";
        let (released, violation) = run(format!("{first}{second}").as_bytes());
        assert_eq!(
            violation,
            Some(Violation::ContentLengthWithTransferEncoding)
        );
        assert_eq!(released, first.as_bytes());
    }

    #[test]
    fn a_poisoned_guard_releases_nothing_more() {
        let mut guard = FramingGuard::new(LIMITS);
        let step = guard.feed(b"GET / HTTP/1.1\nHost: a\r\n\r\n");
        assert_eq!(step.violation, Some(Violation::BareLineFeed));
        assert_eq!(guard.feed(GET.as_bytes()).release, 0);
        assert_eq!(guard.open_tunnel(), 0);
        assert_eq!(guard.violation(), Some(Violation::BareLineFeed));
    }

    #[test]
    fn a_tunnel_releases_held_and_later_bytes_unchecked() {
        let mut guard = FramingGuard::new(LIMITS);
        assert_eq!(guard.feed(GET.as_bytes()).release, GET.len());
        assert_eq!(guard.feed(b"\x81\x84partial").release, 0);
        assert_eq!(guard.open_tunnel(), 9);
        assert_eq!(guard.feed(b"\n\r\x00").release, 3);
    }

    #[test]
    fn raw_refusals_are_complete_http_responses() {
        let raw =
            String::from_utf8(http1_bytes(StatusCode::BAD_REQUEST, "WG-X-001", "bad")).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains("\r\nx-content-type-options: nosniff"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(body, r#"{"error":"WG-X-001","message":"bad"}"#);
    }

    #[test]
    fn codes_are_unique_and_reasons_fit_in_json() {
        let codes: std::collections::BTreeSet<_> =
            Violation::ALL.iter().map(|v| v.refusal().code()).collect();
        assert_eq!(codes.len(), Violation::ALL.len());
        let reasons: std::collections::BTreeSet<_> = Violation::ALL
            .iter()
            .map(|v| v.refusal().reason())
            .collect();
        assert_eq!(reasons.len(), Violation::ALL.len(), "one reason each");
        let statuses = Violation::ALL.map(|v| v.refusal().status().as_u16());
        assert_eq!(statuses.iter().filter(|&&s| s == 400).count(), 19);
        assert_eq!(
            [
                Violation::RequestLineTooLong,
                Violation::HeadTooLarge,
                Violation::TooManyFields,
                Violation::UnsupportedTransferEncoding
            ]
            .map(|v| v.refusal().status().as_u16()),
            [414, 431, 431, 501]
        );
        for (i, v) in Violation::ALL.iter().enumerate() {
            let bytes = v.refusal_bytes();
            let status_line = format!("HTTP/1.1 {} ", v.refusal().status().as_u16());
            assert!(bytes.starts_with(status_line.as_bytes()), "{v:?}");
            assert!(bytes.ends_with(&crate::refusal::json_body(
                v.refusal().code(),
                v.refusal().reason()
            )));
            assert_eq!(v.refusal().code(), format!("WG-FRAME-{:03}", i + 1));
            let body = crate::refusal::json_body(v.refusal().code(), v.refusal().reason());
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["message"], v.refusal().reason());
        }
    }

    /// The I/O adapter over an in-memory connection: `read_all` plays hyper, reading a few
    /// bytes at a time so that heads arrive over several reads.
    mod guarded_io {
        use super::*;
        use std::sync::Mutex;
        use std::time::Duration;
        use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter, DuplexStream, duplex};

        type Told = Arc<Mutex<Vec<Violation>>>;
        /// Writes wait in a buffer until flushed, as they do in TLS.
        type Server = GuardedIo<BufWriter<DuplexStream>>;

        fn connection() -> (Server, DuplexStream, Told) {
            let (client, server) = duplex(1 << 16);
            let told = Told::default();
            let tell = told.clone();
            let on_violation: OnViolation = Box::new(move |v| tell.lock().unwrap().push(v));
            let io = GuardedIo::new(BufWriter::new(server), LIMITS, on_violation);
            (io, client, told)
        }

        /// The next `len` bytes the client receives; a bound instead of a hang when they never
        /// come (`what` says what should have sent them).
        async fn receive(client: &mut DuplexStream, len: usize, what: &str) -> Vec<u8> {
            let mut got = vec![0u8; len];
            tokio::time::timeout(Duration::from_secs(30), client.read_exact(&mut got))
                .await
                .expect(what)
                .unwrap();
            got
        }

        async fn read_all(io: &mut Server) -> Vec<u8> {
            let mut all = Vec::new();
            let mut buf = [0u8; 5];
            loop {
                let n = io.read(&mut buf).await.unwrap();
                if n == 0 {
                    return all;
                }
                all.extend_from_slice(&buf[..n]);
            }
        }

        /// One `poll_read` to completion, bounded (`what` says what it should have found).
        async fn read_once(io: &mut Server, buf: &mut ReadBuf<'_>, what: &str) {
            let read = std::future::poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, buf));
            tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .expect(what)
                .unwrap();
        }

        /// hyper may call with bytes of its own already in the buffer: the guard counts only
        /// what this read added, and the end of the stream is still the end.
        #[tokio::test]
        async fn a_read_into_a_partly_filled_buffer_adds_only_what_arrived() {
            let (mut io, mut client, _) = connection();
            client.write_all(GET.as_bytes()).await.unwrap();
            drop(client);
            let mut storage = [0u8; 256];
            let mut buf = ReadBuf::new(&mut storage);
            buf.put_slice(b"held");
            read_once(&mut io, &mut buf, "a read").await;
            assert_eq!(buf.filled(), format!("held{GET}").as_bytes());
            let before = buf.filled().len();
            read_once(&mut io, &mut buf, "the end of the stream, not a wait").await;
            assert_eq!(buf.filled().len(), before, "nothing after the end");
        }

        #[tokio::test]
        async fn a_refusal_follows_the_answers_to_the_requests_before_it() {
            let (mut io, mut client, told) = connection();
            let input = format!("{GET}GET / HTTP/1.1\nHost: a\r\n\r\n");
            client.write_all(input.as_bytes()).await.unwrap();
            assert_eq!(read_all(&mut io).await, GET.as_bytes());
            assert_eq!(*told.lock().unwrap(), [Violation::BareLineFeed]);
            let answer = b"HTTP/1.1 204 No Content\r\n\r\n";
            io.write_all(answer).await.unwrap();
            io.flush().await.unwrap();
            let flushed = receive(&mut client, answer.len(), "hyper's flush").await;
            assert_eq!(flushed, answer);
            io.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, Violation::BareLineFeed.refusal_bytes());
        }

        #[tokio::test]
        async fn inside_a_half_forwarded_request_the_refusal_replaces_hypers_answer() {
            let (mut io, mut client, told) = connection();
            let released = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
            client
                .write_all(format!("{released}zz\r\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(read_all(&mut io).await, released.as_bytes());
            assert_eq!(*told.lock().unwrap(), [Violation::BadChunkSize]);
            let refusal = Violation::BadChunkSize.refusal_bytes();
            let got = receive(
                &mut client,
                refusal.len(),
                "the refusal, flushed before EOF",
            )
            .await;
            assert_eq!(got, refusal);
            io.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                .await
                .unwrap();
            let vectored = [io::IoSlice::new(b"more")];
            assert_eq!(io.write_vectored(&vectored).await.unwrap(), 4);
            io.flush().await.unwrap();
            io.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "hyper's answer was swallowed: {rest:?}");
        }

        #[tokio::test]
        async fn an_open_tunnel_passes_anything() {
            let (mut io, mut client, told) = connection();
            let switch = io.tunnel_switch();
            // The first bytes of the other protocol arrive with the upgrade request, and wait.
            client
                .write_all(format!("{GET}\x01\x02").as_bytes())
                .await
                .unwrap();
            let mut head = [0u8; 100];
            assert_eq!(io.read(&mut head).await.unwrap(), GET.len());
            switch.open();
            client.write_all(b"\x81\x84ab\n\r\x00").await.unwrap();
            client.shutdown().await.unwrap();
            assert_eq!(read_all(&mut io).await, b"\x01\x02\x81\x84ab\n\r\x00");
            assert!(told.lock().unwrap().is_empty());
        }

        #[tokio::test]
        async fn bytes_already_in_the_read_buffer_stay_in_front() {
            let (mut io, mut client, _) = connection();
            client
                .write_all(format!("{GET}GET /next").as_bytes())
                .await
                .unwrap();
            client.shutdown().await.unwrap();
            let mut storage = [0u8; 128];
            let mut buf = ReadBuf::new(&mut storage);
            buf.put_slice(b"xx");
            std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf))
                .await
                .unwrap();
            assert_eq!(buf.filled(), format!("xx{GET}").as_bytes());
            // End of file in the middle of the next head: nothing more, and no spin.
            std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf))
                .await
                .unwrap();
            assert_eq!(buf.filled(), format!("xx{GET}").as_bytes());
        }

        #[tokio::test]
        async fn a_client_that_leaves_inside_a_head_sends_nothing_on() {
            let (mut io, mut client, told) = connection();
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
                .await
                .unwrap();
            client.shutdown().await.unwrap();
            assert!(read_all(&mut io).await.is_empty());
            assert!(told.lock().unwrap().is_empty());
            assert_eq!(io.read(&mut []).await.unwrap(), 0);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Valid requests of every framing, in any order.
        fn request() -> impl Strategy<Value = Vec<u8>> {
            let body = proptest::collection::vec(any::<u8>(), 0..40);
            prop_oneof![
                Just(GET.as_bytes().to_vec()),
                body.clone().prop_map(|body| {
                    let mut r = format!(
                        "PUT /b HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(body);
                    r
                }),
                proptest::collection::vec(body, 0..4).prop_map(|chunks| {
                    let mut r = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                        r.extend(format!("{:x};n=v\r\n", chunk.len()).into_bytes());
                        r.extend(chunk);
                        r.extend(b"\r\n");
                    }
                    r.extend(b"0\r\nX-T: 1\r\n\r\n");
                    r
                }),
            ]
        }

        fn feed_split(input: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<Violation>) {
            let mut guard = FramingGuard::new(LIMITS);
            let mut held: Vec<u8> = Vec::new();
            let mut released = Vec::new();
            let mut violation = None;
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(input.len());
            let mut start = 0;
            for end in cuts {
                let piece = &input[start..end];
                start = end;
                let step = guard.feed(piece);
                held.extend_from_slice(piece);
                released.extend(held.drain(..step.release));
                violation = step.violation;
            }
            (released, violation)
        }

        proptest! {
            #[test]
            fn valid_traffic_is_released_whole_at_any_split(
                requests in proptest::collection::vec(request(), 1..5),
                cuts in proptest::collection::vec(any::<usize>(), 0..12),
            ) {
                let input: Vec<u8> = requests.concat();
                let (released, violation) = feed_split(&input, &cuts);
                prop_assert_eq!(violation, None);
                prop_assert_eq!(released, input);
            }

            #[test]
            fn any_bytes_at_any_split_give_one_answer(
                input in proptest::collection::vec(any::<u8>(), 0..300),
                cuts in proptest::collection::vec(any::<usize>(), 0..12),
            ) {
                let whole = feed_split(&input, &[]);
                prop_assert_eq!(feed_split(&input, &cuts), whole.clone());
                prop_assert!(input.starts_with(&whole.0));
            }

            #[test]
            fn mutated_requests_never_panic_and_agree_across_splits(
                request in request(),
                at in any::<usize>(),
                byte in any::<u8>(),
                cuts in proptest::collection::vec(any::<usize>(), 0..12),
            ) {
                let mut input = request;
                let at = at % input.len();
                input[at] = byte;
                let whole = feed_split(&input, &[]);
                prop_assert_eq!(feed_split(&input, &cuts), whole.clone());
                prop_assert!(input.starts_with(&whole.0));
            }
        }
    }
}
