//! The API's HTTP server: the router on hyper's HTTP/1 connections, with the bounds an open port needs. `axum::serve`
//! has none: 1,100 slow or idle connections held every file descriptor of the process, and the libp2p listener then
//! failed with "Too many open files".
//!
//! - **Header read timeout** ([`HEADER_READ_TIMEOUT`]): a connection must send a request's whole header within it,
//!   the first request and every next one on a kept-alive connection (so it is the idle timeout too).
//! - **Request timeout** ([`REQUEST_TIMEOUT`]): reading the body and answering, except for event streams, which
//!   last (they have their own bound, [`super::live::EVENT_STREAMS_MAX`]).
//! - **Connections** ([`CONNECTIONS_MAX`], lowered to leave [`FILE_DESCRIPTORS_RESERVED`] descriptors for the
//!   swarm, RocksDB and the rest when the process may open few): when all are taken, a new connection takes the
//!   place of the oldest one waiting for a request header (idle or slow), so slow clients cannot lock others out;
//!   when every connection is busy with a request, the new one is closed. A connection is busy only while a request
//!   is read and answered, or while an event stream flows (at most [`super::live::EVENT_STREAMS_MAX`]); writes are
//!   refused before their body is read unless they carry the token, so no stranger can keep one busy for long.
//!   Connections not yet accepted wait in the kernel's listen queue, holding no descriptor of the process.
//! - **Per client** ([`CONNECTIONS_PER_CLIENT_MAX`]): one address beyond loopback holds at most that many
//!   connections; past it, its own oldest idle connection gives way, or the new one is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use libp2p::futures::StreamExt as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt as _;
use tracing::{debug, warn};

/// Most API connections open at once.
pub const CONNECTIONS_MAX: usize = 256;
/// Descriptors left to the rest of the process (the swarm's connections and listeners, RocksDB's files, logs)
/// when sizing the API's connections: the API takes at most half of what remains.
pub const FILE_DESCRIPTORS_RESERVED: u64 = 768;
/// Fewest API connections, whatever the descriptor limit.
const CONNECTIONS_MIN: usize = 8;
/// Most connections of one client address beyond loopback (on loopback every local program shares one address).
pub const CONNECTIONS_PER_CLIENT_MAX: usize = 32;
/// Time a client has to send a request's header, on a new connection and between requests on a kept-alive one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to read a request's body and answer it (event streams excepted).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (out of descriptors), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The path of the server-sent event stream, whose responses last.
const EVENTS_PATH: &str = "/events";

/// API connections for a process that may open `file_limit` descriptors.
pub fn connections_max(file_limit: u64) -> usize {
    let spare = file_limit.saturating_sub(FILE_DESCRIPTORS_RESERVED) / 2;
    usize::try_from(spare).unwrap_or(usize::MAX).clamp(CONNECTIONS_MIN, CONNECTIONS_MAX)
}

/// Raises the process's soft limit of open files to its hard limit (the default soft limit, often 1,024, is small
/// for a node with peers, a database and an API); returns the limit in force.
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(error) => {
                debug!(%error, soft, hard, "could not raise the open-files limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// One open connection, as the accept loop sees it.
#[derive(Debug)]
struct Connection {
    client: std::net::IpAddr,
    /// Requests being read or answered.
    busy: AtomicUsize,
    /// An event stream: it lasts, and is not taken for an idle connection.
    streaming: AtomicBool,
    closed: AtomicBool,
    close: Notify,
}

impl Connection {
    fn idle(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0 && !self.streaming.load(Ordering::Relaxed)
    }
}

impl Connection {
    fn new(client: std::net::IpAddr) -> Connection {
        Connection {
            client,
            busy: AtomicUsize::new(0),
            streaming: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    fn evict(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.close.notify_one();
    }
}

/// Marks a connection busy while a request is handled.
struct Busy(Arc<Connection>);

impl Busy {
    fn new(connection: &Arc<Connection>) -> Busy {
        connection.busy.fetch_add(1, Ordering::Relaxed);
        Busy(connection.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until the task is dropped, with at most `connections_max` connections.
pub async fn serve(listener: TcpListener, app: Router, connections_max: usize) {
    let mut open: Vec<Arc<Connection>> = Vec::new();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "the API could not accept a connection");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        open.retain(|connection| !connection.closed.load(Ordering::Relaxed));
        let client = remote.ip();
        // A client beyond loopback past its share makes room among its own connections first.
        if !client.is_loopback()
            && open.iter().filter(|connection| connection.client == client).count() >= CONNECTIONS_PER_CLIENT_MAX
            && !make_room(&mut open, |connection| connection.client == client)
        {
            debug!(%remote, "this client's API connections are all busy: turned away");
            continue;
        }
        // The oldest connection waiting for a request makes room; with none, the new one is turned away.
        if open.len() >= connections_max && !make_room(&mut open, |_| true) {
            debug!(%remote, "every API connection is busy: turned away");
            continue;
        }
        let connection = Arc::new(Connection::new(client));
        open.push(connection.clone());
        tokio::spawn(serve_connection(stream, remote, app.clone(), connection));
    }
}

/// Closes the oldest idle connection among those `among` picks; `false` when there is none.
fn make_room(open: &mut Vec<Arc<Connection>>, among: impl Fn(&Connection) -> bool) -> bool {
    match open.iter().position(|connection| among(connection) && connection.idle()) {
        Some(index) => {
            open.remove(index).evict();
            true
        }
        None => false,
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    remote: std::net::SocketAddr,
    app: Router,
    connection: Arc<Connection>,
) {
    let state = connection.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let (app, connection) = (app.clone(), state.clone());
        async move {
            let streaming = request.uri().path() == EVENTS_PATH;
            let _busy = Busy::new(&connection);
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(axum::extract::ConnectInfo(remote));
            if streaming {
                // Busy for as long as the stream's body flows, not for the connection's life.
                let response = app.oneshot(request).await?;
                connection.streaming.store(true, Ordering::Relaxed);
                let guard = Streaming(connection.clone());
                return Ok(response.map(|body| {
                    axum::body::Body::from_stream(body.into_data_stream().inspect(move |_| {
                        let _ = &guard;
                    }))
                }));
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, app.oneshot(request)).await {
                Ok(response) => response,
                Err(_) => Ok(timed_out()),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = served => {
            if let Err(error) = result {
                debug!(%error, "an API connection ended");
            }
        }
        () = connection.close.notified() => debug!("an idle API connection made room for a new one"),
    }
    connection.closed.store(true, Ordering::Relaxed);
}

/// The answer to a request that took longer than [`REQUEST_TIMEOUT`]: in the API's one error shape.
fn timed_out() -> axum::response::Response {
    super::ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request took too long").into_response()
}

/// Marks a connection as streaming events until the stream's body is dropped.
struct Streaming(Arc<Connection>);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.streaming.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that took too long is answered in JSON like every other error (it was plain text).
    #[test]
    fn a_request_that_took_too_long_is_answered_in_json() {
        let response = timed_out();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let content_type = response.headers().get(axum::http::header::CONTENT_TYPE);
        assert_eq!(content_type.and_then(|value| value.to_str().ok()), Some("application/json"));
    }

    #[test]
    fn the_api_leaves_descriptors_to_the_rest_of_the_node() {
        assert_eq!(connections_max(1_024), 128);
        assert_eq!(connections_max(1_048_576), CONNECTIONS_MAX);
        assert_eq!(connections_max(256), CONNECTIONS_MIN);
    }
}
