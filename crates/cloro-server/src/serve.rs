//! Accepting connections: HTTP/1.1 and HTTP/2 (hyper-util's auto builder),
//! over TLS when configured, at most `--max-connections` at once and each
//! within its time bounds (SPEC §9), and a graceful shutdown that stops
//! accepting, lets requests in flight finish, then returns.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::body_timeout::TimeoutBody;
use crate::connection::{
    AT_ONCE, Activity, Closing, GRACEFULLY, InFlight, InFlightBody, Seen, Timeouts, TrackedIo,
};
use cloro_guard::Body;

/// How long shutdown waits for requests in flight before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection told to close (it timed out) may take to finish
/// closing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The pause after a failed accept (out of descriptors, mostly).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Descriptors kept back from client connections: the listener, the store
/// (redb, or Redis with its pub/sub connections), idle upstream
/// connections, logs, the runtime's own.
const DESCRIPTOR_RESERVE: usize = 64;
/// HTTP/2 connections are pinged this often, and closed when a ping is not
/// answered in time: a peer that vanished does not hold its streams.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams one HTTP/2 connection may have open at once.
const HTTP2_MAX_STREAMS: u32 = 100;

/// Why TLS could not be set up, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("TLS setup failed for {path}: {message}")]
pub struct TlsError {
    path: String,
    message: String,
}

/// A TLS acceptor from PEM files (certificate chain, private key), using
/// the `ring` provider and offering HTTP/2 and HTTP/1.1 by ALPN.
///
/// # Errors
/// Unreadable files, no certificate, or a key that does not fit.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let error = |path: &Path, message: String| TlsError {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| error(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(error(cert, "no PEM certificate found".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| error(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| error(key, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `shutdown` completes, then drains.
///
/// Connections are bounded (SPEC §9): at most the effective
/// `--max-connections` are open at once (the accept loop waits for one to
/// close, without spinning), and each is closed by its own deadlines
/// (the `connection` module), so a flood of silent or trickling connections
/// ends by itself and the node serves again.
///
/// # Errors
/// Never for a single connection's failure (those are logged); only when
/// the listener itself fails permanently.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let settings = app.settings();
    let limits = settings.connections;
    let cap = connection_cap(limits.max_connections, settings.upstream.is_some());
    let timeouts = Timeouts {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
        stalled: limits
            .idle_timeout
            .max(limits.body_timeout)
            .max(settings.upstream_timeout),
    };
    let body_timeout = limits.body_timeout;
    tracing::info!(max_connections = cap, "accepting connections");

    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No HTTP/1 timer: hyper's header timeout would also cut idle
    // keep-alive connections short; `connection.rs` times heads instead.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HTTP2_PING_INTERVAL))
        .keep_alive_timeout(HTTP2_PING_TIMEOUT)
        .max_concurrent_streams(HTTP2_MAX_STREAMS);
    let permits = Arc::new(Semaphore::new(cap));
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors (the cap leaves a reserve, so only
                    // when something else used them) or a connection reset
                    // before accept: back off, never spin.
                    static ACCEPT_FAILED: cloro_keystore::LogLimit =
                        cloro_keystore::LogLimit::per_second();
                    if let Some(suppressed) = ACCEPT_FAILED.admit() {
                        tracing::warn!(%error, suppressed, "accept failed");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: Arc::clone(&app),
            builder: builder.clone(),
            timeouts,
            body_timeout,
            peer,
            stop: stopped.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            connection.run(stream, tls).await;
            drop(permit);
        });
    }
    drop(listener);
    let open = cap - permits.available_permits();
    tracing::info!(
        connections = open,
        "shutting down: finishing requests in flight"
    );
    let _ = stop.send(true);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish within {DRAIN_TIMEOUT:?}; closing anyway");
    }
    Ok(())
}

/// The most connections this process can hold: the configured cap, but
/// never more than the descriptor limit minus a reserve (each proxied
/// request also holds an upstream connection, so half of that when there is
/// an upstream). The soft descriptor limit is first raised to the hard one,
/// as a server that means to hold thousands of connections should.
fn connection_cap(configured: usize, has_upstream: bool) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.maximum > limit.current {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(%error, "could not raise the descriptor limit");
        }
    }
    let descriptors = getrlimit(Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let available = descriptors.saturating_sub(DESCRIPTOR_RESERVE);
    let per_connection = if has_upstream { 2 } else { 1 };
    let cap = configured.min(available / per_connection).max(1);
    if cap < configured {
        tracing::info!(
            configured,
            descriptors,
            cap,
            "--max-connections lowered to fit the descriptor limit"
        );
    }
    cap
}

/// One accepted connection and what serving it needs.
struct Connection {
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    timeouts: Timeouts,
    body_timeout: Duration,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.serve(stream, false).await;
        };
        let peer = self.peer;
        match tokio::time::timeout(self.timeouts.header, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.serve(stream, http2).await;
            }
            Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }

    /// Serves requests on `io` until the client leaves, a deadline of
    /// [`Activity`] passes, or the server stops. The deadlines are kept by
    /// a watchdog task of the connection's own, so the task that polls the
    /// connection does one atomic load per wake-up and nothing else.
    async fn serve<I>(self, io: I, http2: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            builder,
            timeouts,
            body_timeout,
            peer,
            stop,
        } = self;
        let activity = Activity::new(http2, timeouts);
        let closing = Arc::new(Closing::default());
        let watchdog = tokio::spawn(watch(
            Arc::clone(&activity),
            Arc::clone(&closing),
            stop,
            peer,
        ));
        let requests = Arc::clone(&activity);
        let service = service_fn(move |request: Request<Incoming>| {
            let in_flight = requests.request_started();
            answer(Arc::clone(&app), request, peer, body_timeout, in_flight)
        });
        let io = TokioIo::new(TrackedIo::new(io, activity));
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut shutting_down = false;
        let result = std::future::poll_fn(|cx| {
            match closing.poll(cx) {
                AT_ONCE => return Poll::Ready(None),
                GRACEFULLY if !shutting_down => {
                    shutting_down = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ => {}
            }
            connection.as_mut().poll(cx).map(Some)
        })
        .await;
        watchdog.abort();
        if let Some(Err(error)) = result {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
    }
}

/// A connection's watchdog: sleeps towards its deadline, re-arms when the
/// connection says a deadline moved earlier, and asks the connection to
/// close when one passes (gracefully, then at once after [`CLOSE_GRACE`]),
/// or gracefully when the server stops.
async fn watch(
    activity: Arc<Activity>,
    closing: Arc<Closing>,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
) {
    let mut seen = Seen::default();
    let recheck = activity.recheck();
    let mut closing_since: Option<Instant> = None;
    let mut stopping = false;
    loop {
        let deadline = match closing_since {
            Some(since) => since + CLOSE_GRACE,
            // Never sleep past the shorter of the head and idle timeouts:
            // then no request's start, end or next head can move a
            // deadline earlier than the armed one, and the hot path never
            // wakes this task (it wakes by itself, every 10 s by default).
            None => activity.deadline(&mut seen).min(Instant::now() + recheck),
        };
        activity.arm(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                if closing_since.is_some() {
                    // It had its chance to finish politely.
                    tracing::debug!(%peer, "connection closed: it did not finish closing");
                    closing.close(AT_ONCE);
                    return;
                }
                if Instant::now() >= activity.deadline(&mut seen) {
                    tracing::debug!(%peer, "connection closed: timed out");
                    closing.close(GRACEFULLY);
                    closing_since = Some(Instant::now());
                }
            }
            () = activity.deadline_moved() => {}
            _ = stop.changed(), if !stopping => {
                // The server's drain timeout bounds this one.
                stopping = true;
                closing.close(GRACEFULLY);
            }
        }
    }
}

/// One request: its body bounded in time, its answer counted as in flight
/// until sent.
async fn answer(
    app: Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
    body_timeout: Duration,
    in_flight: InFlight,
) -> Result<Response<InFlightBody<Body>>, Infallible> {
    let request = request.map(|body| TimeoutBody::new(body, body_timeout));
    let response = app.handle(request, peer).await;
    Ok(response.map(|body| InFlightBody::new(body, in_flight)))
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM received"),
        result = tokio::signal::ctrl_c() => {
            if result.is_ok() {
                tracing::info!("SIGINT received");
            }
        }
    }
}
