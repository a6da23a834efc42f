//! Serving HTTP the way every server of ours must (the service's API, the
//! agent's push endpoint): a cap on connections held at once, deadlines for
//! the TLS handshake and each request head, connections closed after a
//! while with no request in progress and no byte moving, and a bounded
//! drain of requests in progress at shutdown. At the cap, or when `accept`
//! fails for want of file descriptors, the idlest connection with no
//! request in progress is closed to make room, so silent connections cannot
//! lock others out; `accept` errors back off rather than spin.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

/// Limits on what peers may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a TLS handshake, and each request's head, may take.
    pub handshake_timeout: Duration,
    /// A connection with no request in progress and no byte read or written
    /// for this long is closed.
    pub idle_timeout: Duration,
    /// How long requests in progress may run on after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `service` on `listener` (over TLS when `tls` is given) until
/// `shutdown` resolves, then lets requests in progress finish for at most
/// `limits.drain_timeout`.
pub async fn serve<S, B>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    service: S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = Arc::new(Connections::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors (or memory): free one and
                    // wait for it, rather than spin on the error.
                    connections.evict_idlest();
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tracing::warn!("accepting a connection: {e}; trying again in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // At the cap: someone idle makes room, or everyone waits
                // for a request in progress to end.
                connections.evict_idlest();
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (tls, service, watcher) = (tls.clone(), service.clone(), graceful.watcher());
        let (activity, registered) = connections.open();
        tokio::spawn(async move {
            let (_slot, _registered) = (slot, registered);
            let serving = serve_connection(stream, peer, tls, limits, service, watcher, activity.clone());
            tokio::select! {
                () = serving => {}
                () = activity.evicted.notified() => tracing::debug!("{peer}: closed to make room"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in progress after {:?} were cut off",
            limits.drain_timeout
        );
    }
}

/// One connection, from the TLS handshake to its end or its idle limit.
async fn serve_connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    activity: Arc<Activity>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let Some(stream) = handshake(stream, peer, tls, limits.handshake_timeout).await else {
        return;
    };
    let io = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    let service = Counted {
        inner: service,
        activity: activity.clone(),
    };
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 2);
    let connection = watcher.watch(http.serve_connection(TokioIo::new(io), service).into_owned());
    tokio::select! {
        served = connection => if let Err(e) = served {
            tracing::debug!("{peer}: {e}");
        },
        () = activity.idled(limits.idle_timeout) => {
            tracing::debug!("{peer}: idle for {:?}, closed", limits.idle_timeout);
        }
    }
}

/// The connections being served, so that the idlest can make room.
struct Connections {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

/// A connection's place in [`Connections`], given up when dropped.
struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Connections {
    fn new() -> Self {
        Connections {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(self: &Arc<Self>) -> (Arc<Activity>, Registered) {
        let activity = Arc::new(Activity::new(self.epoch));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity.clone());
        let registered = Registered {
            connections: self.clone(),
            id,
        };
        (activity, registered)
    }

    /// Closes the connection that has gone longest without a byte and has
    /// no request in progress, if there is one.
    fn evict_idlest(&self) {
        let mut open = self.lock();
        let idlest = open
            .iter()
            .filter(|(_, activity)| activity.in_flight.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, activity)| activity.last_byte_ms.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        if let Some(activity) = idlest.and_then(|id| open.remove(&id)) {
            activity.evicted.notify_one();
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeout: Duration,
) -> Option<Stream> {
    let Some(acceptor) = tls else {
        return Some(Stream::Plain(stream));
    };
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(Stream::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!("{peer}: TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("{peer}: TLS handshake timed out");
            None
        }
    }
}

/// What a connection is doing: when it last moved a byte (milliseconds
/// since the server's epoch, so connections compare), how many of its
/// requests are being answered, and whether it must make room.
struct Activity {
    epoch: Instant,
    last_byte_ms: AtomicU64,
    in_flight: AtomicUsize,
    evicted: Notify,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let activity = Activity {
            epoch,
            last_byte_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            evicted: Notify::new(),
        };
        activity.touch();
        activity
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_byte_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once the connection has been idle for `limit`.
    async fn idled(&self, limit: Duration) {
        loop {
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // A request being answered (a long install, say) is not
                // idling, however quiet the socket.
                self.touch();
            }
            let last = Duration::from_millis(self.last_byte_ms.load(Ordering::Relaxed));
            let since = self.epoch.elapsed().saturating_sub(last);
            if since >= limit {
                return;
            }
            tokio::time::sleep(limit - since).await;
        }
    }
}

/// A stream that notes each byte it moves in the connection's activity.
struct Watched {
    inner: Stream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = match &mut self.inner {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = match &mut self.inner {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        };
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The service, counting the connection's requests in progress.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

/// One request in progress, for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, R> hyper::service::Service<R> for Counted<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        let in_flight = InFlight::new(self.activity.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper::body::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server under `limits` whose `/slow` answers after 600 ms; its
    /// address and the sender that shuts it down.
    async fn server(
        limits: Limits,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            if request.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, None, limits, shutdown, service));
        (address, stop, task)
    }

    /// Sends one HTTP/1.1 request on `stream` and reads the answer's
    /// status line.
    async fn get(stream: &mut TcpStream, path: &str) -> io::Result<String> {
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        Ok(answer.lines().next().unwrap_or("").to_string())
    }

    async fn closed(stream: &mut TcpStream) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_slow_answers_are_not() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(300),
            handshake_timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let (address, _stop, _task) = server(limits).await;
        let mut silent = TcpStream::connect(address).await.unwrap();
        let mut waiting = TcpStream::connect(address).await.unwrap();
        // Answered after 600 ms, twice the idle limit, with no byte moving.
        assert_eq!(get(&mut waiting, "/slow").await.unwrap(), "HTTP/1.1 200 OK");
        assert!(closed(&mut silent).await, "the silent connection is closed");
    }

    #[tokio::test]
    async fn a_request_head_must_arrive_in_time() {
        let limits = Limits {
            handshake_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let (address, _stop, _task) = server(limits).await;
        let mut trickle = TcpStream::connect(address).await.unwrap();
        // A byte at a time keeps the idle watch happy; the head deadline
        // still ends it.
        let mut cut = false;
        for byte in b"GET / HTTP/1.1\r\nhost: slowloris\r\nx-a: b\r\n"
            .iter()
            .cycle()
            .take(40)
        {
            if trickle.write_all(&[*byte]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(cut || closed(&mut trickle).await, "the slow head is cut off");
    }

    #[tokio::test]
    async fn at_the_cap_the_idlest_connection_makes_room() {
        let limits = Limits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let (address, _stop, _task) = server(limits).await;
        // The oldest silent connection, then one kept busy, take both slots.
        let mut silent = TcpStream::connect(address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut busy = TcpStream::connect(address).await.unwrap();
        let answer = tokio::spawn(async move { get(&mut busy, "/slow").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A third is served at once (long before the idle limit), in the
        // silent one's place; the request in progress is not touched.
        let mut third = TcpStream::connect(address).await.unwrap();
        assert_eq!(get(&mut third, "/").await.unwrap(), "HTTP/1.1 200 OK");
        assert!(closed(&mut silent).await, "the silent connection made room");
        assert_eq!(answer.await.unwrap().unwrap(), "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn shutdown_lets_requests_in_progress_finish_and_closes_idle_ones() {
        let (address, stop, task) = server(Limits::default()).await;
        let mut idle = TcpStream::connect(address).await.unwrap();
        assert_eq!(get(&mut idle, "/").await.unwrap(), "HTTP/1.1 200 OK");
        let mut busy = TcpStream::connect(address).await.unwrap();
        let answer = tokio::spawn(async move { get(&mut busy, "/slow").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        assert_eq!(answer.await.unwrap().unwrap(), "HTTP/1.1 200 OK");
        assert!(closed(&mut idle).await, "the kept-alive connection is closed");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(address).await.is_err(), "no longer listening");
    }
}
