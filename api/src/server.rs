//! The HTTP server loop: accepts connections and serves the axum app over
//! HTTP/1.1, closing connections that are slow to send headers or that sit
//! idle, and shutting down gracefully.
//!
//! Why not `axum::serve`: it exposes no timeouts, so a client could hold a
//! connection (a socket and a task) forever by dribbling a header or by
//! keeping it alive and silent. hyper's own `header_read_timeout` does not
//! fit either: its clock starts when hyper begins waiting for a request
//! head, so between keep-alive requests it would be the idle timeout too.
//! Instead each connection is watched (as Go's `net/http` does it):
//!
//! - **Header read**: from a request's first byte (or from the connection's
//!   opening, for its first request) to the end of its headers, at most
//!   `header_read`; then the connection is dropped without an answer.
//! - **Idle**: with no request being handled, no byte read or written for
//!   `idle`; then the connection is closed. This also ends a response its
//!   client has stopped reading.
//!
//! While a request is being handled neither applies; the request timeout
//! layer of [`crate::app`] bounds that. Shutdown is as `with_graceful_shutdown`
//! did it: once `shutdown` is cancelled no connection is accepted, idle ones
//! are closed, requests in flight are finished, and [`serve`] returns when
//! every connection is gone.

use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long connections may be slow or silent.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From a request's first byte to the end of its headers.
    pub header_read: Duration,
    /// Between requests, or without progress on an unread response.
    pub idle: Duration,
}

/// Serves `app` on `listener` until `shutdown` is cancelled and every
/// connection has finished (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            timeouts,
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// An accept error: the connection's own (the client gave up) is ignored;
/// anything else (out of file descriptors) is logged and accepting pauses a
/// second, as `axum::serve` does, rather than spinning.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accepting an HTTP connection failed, pausing for a second: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handling = requests.request_started();
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(Body::new)).await;
            drop(handling);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Timed here instead (see the module docs); hyper's would also need a timer.
    builder.header_read_timeout(None);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut shutting_down = false;
    loop {
        let deadline = activity.deadline(timeouts);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!("HTTP connection ended: {e}");
                }
                return;
            }
            _ = shutdown.cancelled(), if !shutting_down => {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            _ = activity.changed.notified() => {}
            _ = sleep_until(deadline) => match activity.expired(timeouts) {
                Some(Expired::HeaderRead) => {
                    tracing::debug!("closing an HTTP connection: headers not received within {:?}", timeouts.header_read);
                    return;
                }
                Some(Expired::Idle) => {
                    // Nothing is being handled: no request is lost. (A
                    // graceful close would wait for an unread response.)
                    tracing::debug!("closing an HTTP connection idle for {:?}", timeouts.idle);
                    return;
                }
                None => {}
            },
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Which timeout a connection has run out of.
#[derive(Debug, PartialEq, Eq)]
enum Expired {
    HeaderRead,
    Idle,
}

/// What a connection is doing, as its IO and its requests report it.
#[derive(Debug)]
struct Activity {
    state: Mutex<State>,
    /// Woken when the deadline can move earlier (a request ends, a head
    /// begins); the watch loop then recomputes it.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Requests whose handler has not answered yet.
    handling: usize,
    /// When the head being read began (its first byte, or the opening of
    /// the connection), while no request is being handled.
    head_since: Option<Instant>,
    /// Last byte read or written.
    last_io: Instant,
}

impl Activity {
    fn new() -> Activity {
        let now = Instant::now();
        Activity {
            state: Mutex::new(State {
                handling: 0,
                head_since: Some(now),
                last_io: now,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let now = Instant::now();
        let mut s = self.lock();
        s.last_io = now;
        if s.handling == 0 && s.head_since.is_none() {
            s.head_since = Some(now);
            drop(s);
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.lock().last_io = Instant::now();
    }

    /// Marks a request handled until the returned guard is dropped.
    fn request_started(self: &Arc<Self>) -> Handling {
        let mut s = self.lock();
        s.handling += 1;
        s.head_since = None;
        Handling(self.clone())
    }

    /// When the connection runs out of time, if nothing happens before;
    /// `None` while a request is being handled.
    fn deadline(&self, t: Timeouts) -> Option<Instant> {
        let s = self.lock();
        match (s.handling, s.head_since) {
            (0, Some(since)) => Some(since + t.header_read),
            (0, None) => Some(s.last_io + t.idle),
            _ => None,
        }
    }

    fn expired(&self, t: Timeouts) -> Option<Expired> {
        let now = Instant::now();
        let s = self.lock();
        match (s.handling, s.head_since) {
            (0, Some(since)) if now >= since + t.header_read => Some(Expired::HeaderRead),
            (0, None) if now >= s.last_io + t.idle => Some(Expired::Idle),
            _ => None,
        }
    }
}

/// A request being handled; dropping it (the handler answered, or was
/// cancelled) makes the connection idle again if it was the last.
struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.handling -= 1;
        s.last_io = Instant::now();
        drop(s);
        self.0.changed.notify_one();
    }
}

/// The connection's socket, reporting each read and write to [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.read(buf.filled().len() - before);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
