//! The listener loop: accepts connections and serves a router on each (HTTP/1.1, and HTTP/2
//! with prior knowledge), with the limits that keep a monitor reachable by the services it
//! watches when something holds connections open.
//!
//! - **Header read timeout**: a client that has not sent a whole request head within
//!   `header_read_timeout` is disconnected (slowloris).
//! - **Idle timeout**: a connection with no request in progress for `idle_timeout` is closed.
//! - **Connection cap** below the open-file limit: when it is reached, the connection idle the
//!   longest (no request in progress: a kept-alive client, or one that is still sending its
//!   head) is closed to make room; when every connection is busy the new one is closed at once.
//!   So `accept` never runs out of file descriptors, and a reporter that connects always gets
//!   in unless every slot is serving a request.
//! - hyper's own answers to requests it cannot parse (400, 414, 431) get our JSON error body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Raises this process's soft limit of open files to its hard limit and returns the limit
/// in force: the default soft limit (often 1,024) is far below what a server that keeps
/// thousands of reporters' connections needs.
pub fn raise_open_file_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    }
}

/// The connection cap that leaves room below `open_files` for the database, log and
/// listening sockets: an eighth of the limit (at least 64), and at most 16,384.
pub fn default_max_connections(open_files: u64) -> usize {
    let reserve = (open_files / 8).max(64);
    open_files.saturating_sub(reserve).clamp(16, 16_384) as usize
}

/// One open connection, as the cap and the idle timeout see it.
struct Conn {
    /// Requests whose response has not been sent to the end.
    in_flight: AtomicUsize,
    /// Milliseconds since the table's epoch when a request last started or ended.
    last_active_ms: AtomicU64,
    /// Closes the connection at once (evicted to make room).
    evict: Notify,
}

/// Every open connection of one listener.
struct Table {
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Table {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn len(&self) -> usize {
        self.conns.lock().len()
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
        });
        self.conns.lock().insert(id, conn.clone());
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().remove(&id);
    }

    /// Closes the connection idle the longest; `false` when every one is serving a request.
    fn evict_one(&self) -> bool {
        let mut conns = self.conns.lock();
        let oldest = conns
            .iter()
            .filter(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, c)| c.last_active_ms.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| conns.remove(&id)) {
            Some(conn) => {
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets every
/// connection finish its requests, and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let table = Arc::new(Table {
        epoch: Instant::now(),
        conns: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut accept_trouble =
        crate::trouble::Trouble::new("cannot accept connections", "accepting connections again");
    let mut full = crate::trouble::Trouble::new(
        "every connection is busy; refusing new ones",
        "taking new connections again",
    );
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                accept_trouble.report(Ok::<(), io::Error>(()));
                accepted
            }
            Err(err) => {
                // Out of file descriptors, most likely: free one, and do not spin.
                accept_trouble.report(Err(err));
                table.evict_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if table.len() >= limits.max_connections && !table.evict_one() {
            full.report(Err(format!(
                "{} connections, all serving requests",
                limits.max_connections
            )));
            drop(stream);
            continue;
        }
        full.report(Ok::<(), String>(()));
        let _ = stream.set_nodelay(true);
        let (id, conn) = table.add();
        let router = router.clone();
        let table = table.clone();
        let stopping = stopping.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            match tls {
                None => {
                    serve_connection(stream, peer, router, conn, table, id, limits, stopping).await
                }
                // The handshake is part of the head a client must send in time; a
                // connection still shaking hands is idle, so the cap may close it to make
                // room, and a stopping server does not wait for it.
                Some(acceptor) => {
                    let mut stop_wait = stopping.clone();
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(
                            limits.header_read_timeout,
                            acceptor.accept(stream),
                        ) => Some(done),
                        _ = conn.evict.notified() => None,
                        _ = stop_wait.wait_for(|stop| *stop) => None,
                    };
                    match handshake {
                        Some(Ok(Ok(stream))) => {
                            serve_connection(
                                stream, peer, router, conn, table, id, limits, stopping,
                            )
                            .await
                        }
                        Some(Ok(Err(err))) => {
                            tracing::debug!(%peer, %err, "TLS handshake failed");
                            table.remove(id);
                        }
                        Some(Err(_)) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            table.remove(id);
                        }
                        None => table.remove(id),
                    }
                }
            }
        });
    }
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Counts a request in progress on its connection until its response has been sent (or the
/// request abandoned): an event stream is in progress for as long as it streams.
struct InFlight {
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl InFlight {
    fn start(conn: Arc<Conn>, table: Arc<Table>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.last_active_ms.store(table.now_ms(), Ordering::Relaxed);
        InFlight { conn, table }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .last_active_ms
            .store(self.table.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`InFlight`] until it is sent or dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    conn: Arc<Conn>,
    table: Arc<Table>,
    id: u64,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let conn = conn.clone();
        let table = table.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(conn.clone(), table.clone());
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let response = match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        body,
                        _in_flight: in_flight,
                    })
                }))
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let io = TokioIo::new(JsonErrors::new(stream));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_for = Duration::from_millis(
            table
                .now_ms()
                .saturating_sub(conn.last_active_ms.load(Ordering::Relaxed)),
        );
        let idle_check = tokio::time::sleep(limits.idle_timeout.saturating_sub(idle_for));
        tokio::select! {
            _ = connection.as_mut() => break,
            _ = conn.evict.notified() => break,
            _ = stopping.wait_for(|stop| *stop), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle_check, if !closing => {
                let idle = conn.in_flight.load(Ordering::Relaxed) == 0
                    && table.now_ms().saturating_sub(conn.last_active_ms.load(Ordering::Relaxed))
                        >= limits.idle_timeout.as_millis() as u64;
                if idle {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    table.remove(id);
}

/// The connection's socket, with hyper's own error answers rewritten to carry our JSON body.
///
/// hyper answers a request it cannot parse by itself (400 for a malformed head, 414 for an
/// over-long URI, 431 for over-large headers) with an empty body, before any of our code runs.
/// Those answers are recognised as they are written (a status line of those three with
/// `content-length: 0` and nothing after the head; every answer of ours has a body) and
/// replaced by the same head with our error body.
struct JsonErrors<S> {
    inner: S,
    /// Rewritten bytes not yet written, and how many of them were.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonErrors<S> {
    fn new(inner: S) -> JsonErrors<S> {
        JsonErrors {
            inner,
            pending: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        if let Some(rewritten) = rewrite_error_answer(buf) {
            this.pending = Some((rewritten, 0));
            // Whatever is left is written by the next write, flush or shutdown.
            if let Poll::Ready(Err(err)) = this.drain(cx) {
                return Poll::Ready(Err(err));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    /// Not vectored, so that hyper writes a response head in one piece.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// hyper's automatic answer in `buf`, rewritten with our error body; `None` for anything else.
fn rewrite_error_answer(buf: &[u8]) -> Option<Vec<u8>> {
    const ANSWERS: [(&[u8], &str, &str); 3] = [
        (
            b"HTTP/1.1 400 Bad Request\r\n",
            "invalid_http",
            "the request is not valid HTTP/1.1",
        ),
        (
            b"HTTP/1.1 414 URI Too Long\r\n",
            "uri_too_long",
            "the request URI is too long",
        ),
        (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            "headers_too_large",
            "the request headers are too large",
        ),
    ];
    let (_, code, message) = ANSWERS.iter().find(|(line, _, _)| buf.starts_with(line))?;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..head_end - 2]).ok()?;
    let mut lines: Vec<&str> = head.split("\r\n").filter(|l| !l.is_empty()).collect();
    let empty = lines
        .iter()
        .position(|l| l.eq_ignore_ascii_case("content-length: 0"))?;
    lines.remove(empty);
    let body = serde_json::to_vec(&vigil_proto::ErrorBody {
        error: vigil_proto::ErrorDetail {
            code: (*code).into(),
            message: (*message).into(),
        },
    })
    .ok()?;
    let mut out = Vec::with_capacity(head_end + body.len() + 64);
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_answers_get_our_body() {
        let answer =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let rewritten = String::from_utf8(rewrite_error_answer(answer).unwrap()).unwrap();
        assert!(rewritten.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(rewritten.contains("date: x\r\n"));
        assert!(!rewritten.contains("content-length: 0\r\n"));
        assert!(rewritten.ends_with(r#"{"error":{"code":"headers_too_large","message":"the request headers are too large"}}"#));
    }

    #[test]
    fn answers_with_a_body_are_left_alone() {
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(rewrite_error_answer(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite_error_answer(ok).is_none());
    }

    #[test]
    fn the_cap_leaves_room_below_the_file_limit() {
        assert_eq!(default_max_connections(1024), 896);
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(1 << 20), 16_384);
    }
}
