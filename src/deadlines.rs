//! Deadlines on a connection that hyper does not keep: delivery progress and HTTP/2 idleness.
//!
//! **Threat.** A client that holds resources by doing nothing. It stops reading: the response
//! it asked for, and the upstream connection streaming it, wait for ever (a 9 MiB download
//! whose client stopped reading was still open on both sides after 95 s). Or it completes the
//! TLS handshake with ALPN `h2` and sends nothing, or nothing more: hyper's header-read
//! deadline exists only for HTTP/1, so such a connection kept its `max_connections` slot for
//! ever (four of them starved a gateway with `max_connections: 4`).
//!
//! **Rules.**
//! - [`SendDeadline`], under TLS on every client connection: a write, flush or close that
//!   cannot make progress for `server.send_timeout` fails, and the connection ends. This is the
//!   client that stops reading the socket (HTTP/1 and HTTP/2 alike).
//! - [`ConnectionWatch`], on HTTP/2 connections: an HTTP/2 client can keep reading the socket
//!   (pings, other streams) while it withholds flow-control credit for one stream, so the
//!   socket never blocks. Each response body reports when it has handed hyper data and when
//!   hyper comes back for more; while some response has data the client has not taken and
//!   nothing on the connection moves for `server.send_timeout`, the connection ends.
//! - Also on HTTP/2: with no request in flight, the connection may sit for
//!   `server.header_read_timeout` (from the handshake for the first request, from the end of
//!   the last one after that) before it is closed with GOAWAY: the same limit as HTTP/1's
//!   keep-alive idle time, which is hyper's header-read timeout.
//!
//! ```text
//!   watch:   nothing in flight --header_read_timeout, no progress--> Idle (GOAWAY, close)
//!            data owed to the client --send_timeout, no progress--> Stalled (close)
//!   progress: a request starts or ends, or hyper takes a frame of any response
//! ```
//!
//! Dropping the connection drops every response body, and with them the upstream requests.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A deadline that runs while something waits and starts again once it makes progress.
pub struct StallTimer {
    timeout: Duration,
    /// Allocated on the first stall only; most waits never happen.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl StallTimer {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// The awaited thing moved: the next wait gets the whole timeout again.
    pub fn progressed(&mut self) {
        self.armed = false;
    }

    /// Called while waiting: ready once the wait has lasted `timeout`.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        timer.as_mut().poll(cx)
    }
}

/// Why [`ConnectionWatch::expired`] ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No request in flight for the idle time (or none ever arrived).
    Idle,
    /// A response has data the client did not take for `send_timeout`.
    Stalled,
}

impl Expiry {
    /// The `reason` label of `wardgate_connections_ended_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Expiry::Idle => "idle",
            Expiry::Stalled => "stalled",
        }
    }
}

/// What the requests of one HTTP/2 connection are doing.
#[derive(Debug, Default)]
pub struct ConnectionWatch {
    in_flight: AtomicUsize,
    /// Responses that handed hyper a frame and wait for it to come back for the next one.
    owed: AtomicUsize,
    /// Moves on every start and end of a request and every frame hyper takes.
    progress: AtomicU64,
}

/// One request on a watched connection, from its start until its response body is gone.
#[derive(Debug)]
pub struct Stream {
    watch: Arc<ConnectionWatch>,
    owed: bool,
}

impl ConnectionWatch {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A request starts: it is in flight until the returned [`Stream`] is dropped.
    pub fn begin(self: &Arc<Self>) -> Stream {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.progress.fetch_add(1, Ordering::SeqCst);
        Stream {
            watch: self.clone(),
            owed: false,
        }
    }

    /// Completes when the connection should end: checked a few times per deadline.
    pub async fn expired(&self, idle: Duration, send: Duration) -> Expiry {
        let period = (idle.min(send) / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        let mut seen = self.progress.load(Ordering::SeqCst);
        let mut since = Instant::now();
        loop {
            tick.tick().await;
            let now = Instant::now();
            let progress = self.progress.load(Ordering::SeqCst);
            if progress != seen {
                (seen, since) = (progress, now);
                continue;
            }
            let quiet = now.duration_since(since);
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                if quiet >= idle {
                    return Expiry::Idle;
                }
            } else if self.owed.load(Ordering::SeqCst) > 0 && quiet >= send {
                return Expiry::Stalled;
            }
        }
    }
}

impl Stream {
    /// hyper asks for the next frame: whatever was handed before has been taken.
    pub fn polled(&mut self) {
        if self.owed {
            self.owed = false;
            self.watch.owed.fetch_sub(1, Ordering::SeqCst);
        }
        self.watch.progress.fetch_add(1, Ordering::SeqCst);
    }

    /// A frame was handed to hyper: the client owes taking it until hyper asks again.
    pub fn handed(&mut self) {
        if !self.owed {
            self.owed = true;
            self.watch.owed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.owed {
            self.watch.owed.fetch_sub(1, Ordering::SeqCst);
        }
        self.watch.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.watch.progress.fetch_add(1, Ordering::SeqCst);
    }
}

/// The I/O of a client connection whose writes must make progress within `timeout`.
pub struct SendDeadline<T> {
    inner: T,
    stall: StallTimer,
}

impl<T> SendDeadline<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            stall: StallTimer::new(timeout),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Passes `poll` through; while it stays pending, the deadline runs.
    fn guard<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stall.progressed();
            return poll;
        }
        ready!(self.stall.poll_expired(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no response data for server.send_timeout",
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.guard(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const SHORT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn an_idle_connection_expires_after_the_idle_time() {
        let watch = ConnectionWatch::new();
        let started = Instant::now();
        assert_eq!(watch.expired(SHORT, 10 * SHORT).await, Expiry::Idle);
        assert!(started.elapsed() >= SHORT);
    }

    #[tokio::test]
    async fn a_request_waiting_for_its_upstream_never_expires_the_connection() {
        let watch = ConnectionWatch::new();
        let _stream = watch.begin();
        let expired = tokio::time::timeout(10 * SHORT, watch.expired(SHORT, SHORT)).await;
        assert!(expired.is_err(), "{expired:?}");
    }

    #[tokio::test]
    async fn data_the_client_never_takes_stalls_the_connection() {
        let watch = ConnectionWatch::new();
        let mut stream = watch.begin();
        stream.polled();
        stream.handed();
        let started = Instant::now();
        assert_eq!(watch.expired(10 * SHORT, SHORT).await, Expiry::Stalled);
        assert!(started.elapsed() >= SHORT);
        // Taken and ended: nothing is owed or in flight any more.
        stream.polled();
        drop(stream);
        assert_eq!(watch.owed.load(Ordering::SeqCst), 0);
        assert_eq!(watch.in_flight.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_write_that_never_completes_fails_after_the_send_timeout() {
        // A pipe whose reader never reads: its buffer fills, then writes block.
        let (client, _reader) = tokio::io::duplex(16);
        let mut io = SendDeadline::new(client, SHORT);
        let started = Instant::now();
        let error = io.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= SHORT);
    }

    #[tokio::test]
    async fn writes_that_progress_are_never_cut() {
        let (client, mut reader) = tokio::io::duplex(16);
        let mut io = SendDeadline::new(client, 4 * SHORT);
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            // Each pause is shorter than the deadline; all of them together are longer.
            loop {
                tokio::time::sleep(SHORT).await;
                let mut chunk = [0u8; 16];
                let n = tokio::io::AsyncReadExt::read(&mut reader, &mut chunk)
                    .await
                    .unwrap();
                if n == 0 {
                    return sink;
                }
                sink.extend_from_slice(&chunk[..n]);
            }
        });
        io.write_all(&[7u8; 96]).await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(drain.await.unwrap(), vec![7u8; 96]);
    }
}
