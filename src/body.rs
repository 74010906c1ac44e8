//! Bodies that stream through the gateway.
//!
//! Nothing here buffers: each frame is handed on as it arrives, so a 100 MiB upload or download
//! costs a few frames of memory. [`IdleBody`] cuts a body whose sender stalls for longer than its
//! idle timeout (a slow-drip client or a hung upstream holds no resources for ever).
//! [`ResponseBody`] counts the bytes sent and, when the response is done or the client goes
//! away, closes the request's record: every request ends in exactly one log line. It also
//! tells an HTTP/2 connection's watch when the client takes data (`deadlines.rs`), and holds
//! the client's in-flight slot until it is gone.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::deadlines::{StallTimer, Stream};
use crate::per_address::Slot;
use crate::refusal::Refusal;
use crate::telemetry::Finished;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("the body stalled for longer than its idle timeout")]
pub struct IdleTimeout;

/// A body that fails when no frame arrives for `timeout`.
pub struct IdleBody<B> {
    inner: B,
    stall: StallTimer,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            stall: StallTimer::new(timeout),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.stall.progressed();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        ready!(this.stall.poll_expired(cx));
        Poll::Ready(Some(Err(Box::new(IdleTimeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the route allows")]
pub struct TooLarge;

/// What the gateway sends upstream: the client's body streamed and counted against the route's
/// limit, or a body that was read whole to be checked.
pub enum RequestBody {
    Streamed {
        inner: IdleBody<Incoming>,
        left: u64,
    },
    Buffered(Option<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Buffered(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Streamed { inner, left } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    let size = data.map_or(0, |d| d.len() as u64);
                    if size > *left {
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    *left -= size;
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Buffered(bytes) => bytes.is_none(),
            RequestBody::Streamed { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Buffered(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Buffered(None) => SizeHint::with_exact(0),
            RequestBody::Streamed { inner, .. } => inner.size_hint(),
        }
    }
}

/// Why a body was not read whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unread {
    /// More than the limit.
    TooLarge,
    /// A stall, or the sender went away mid-body.
    Failed,
}

/// A client's body that was not read whole: too large, or it stalled (or the client went away,
/// and then nobody reads the answer anyway).
impl From<Unread> for Refusal {
    fn from(unread: Unread) -> Self {
        match unread {
            Unread::TooLarge => Refusal::BodyTooLarge,
            Unread::Failed => Refusal::BodyTimeout,
        }
    }
}

/// Reads a whole body of at most `limit` bytes (for checks that need all of it).
pub async fn read_limited<B>(mut body: B, limit: u64) -> Result<Bytes, Unread>
where
    B: Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Unread::Failed)?;
        if let Ok(data) = frame.into_data() {
            if collected.len() as u64 + data.len() as u64 > limit {
                return Err(Unread::TooLarge);
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

enum Source {
    Fixed(Option<Bytes>),
    Upstream(IdleBody<Incoming>),
}

/// What the gateway sends to the client.
pub struct ResponseBody {
    source: Source,
    sent: u64,
    ended: bool,
    finished: Option<Finished>,
    /// The request on a watched (HTTP/2) connection: tells the watch when data is taken.
    stream: Option<Stream>,
    /// The client's slot among its upstream requests in flight, held until the body is gone.
    slot: Option<Slot>,
}

impl ResponseBody {
    pub fn upstream(body: IdleBody<Incoming>) -> Self {
        Self {
            source: Source::Upstream(body),
            sent: 0,
            ended: false,
            finished: None,
            stream: None,
            slot: None,
        }
    }

    /// Closes `finished` when this body is done or dropped.
    pub fn with_record(mut self, finished: Finished) -> Self {
        self.finished = Some(finished);
        self
    }

    /// Reports delivery progress to the connection's watch (`deadlines.rs`).
    pub fn watched(mut self, stream: Stream) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Holds `slot` until this body is done or dropped.
    pub fn holding(mut self, slot: Slot) -> Self {
        self.slot = Some(slot);
        self
    }
}

impl From<Bytes> for ResponseBody {
    fn from(bytes: Bytes) -> Self {
        Self {
            source: Source::Fixed(Some(bytes)),
            sent: 0,
            ended: false,
            finished: None,
            stream: None,
            slot: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(stream) = &mut this.stream {
            stream.polled();
        }
        let frame = match &mut this.source {
            Source::Fixed(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Source::Upstream(body) => ready!(Pin::new(body).poll_frame(cx)),
        };
        match &frame {
            Some(Ok(frame)) => {
                this.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(stream) = &mut this.stream {
                    stream.handed();
                }
            }
            Some(Err(_)) => {
                if let Some(finished) = &mut this.finished {
                    finished.upstream_failed_midway();
                }
            }
            None => this.ended = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Fixed(bytes) => bytes.is_none(),
            Source::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Fixed(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Source::Fixed(None) => SizeHint::with_exact(0),
            Source::Upstream(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(finished) = self.finished.take() {
            let complete = self.ended || self.is_end_stream();
            finished.close(self.sent, complete);
        }
    }
}
