//! Serving HTTP under hostile traffic, shared by `ur serve` and `ur
//! events`: an accept loop that holds at most `max_connections` connections
//! (one more is answered 503 with `Retry-After` and closed), closes a
//! connection whose request headers do not arrive within `header_timeout`,
//! and on shutdown stops accepting, lets the requests in flight finish and
//! gives up on the connections still open after `shutdown_timeout`. The
//! routers shed requests beyond their own in-flight limit with
//! [`overloaded`] and bound each request (body read included) by a
//! deadline.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Seconds a shed client is asked to wait (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Connection-level bounds of a server.
#[derive(clap::Args, Debug, Clone, Copy)]
#[command(next_help_heading = "Connections")]
pub struct ConnectionLimits {
    /// Connections held open at once; one more is answered 503 and closed.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's headers (idle
    /// keep-alive connections are closed after this too).
    #[arg(long = "header-timeout-ms", value_name = "MS", default_value = "5000", value_parser = millis)]
    pub header_timeout: Duration,
    /// Milliseconds the requests in flight get to finish after SIGTERM;
    /// connections still open then are dropped.
    #[arg(long = "shutdown-timeout-ms", value_name = "MS", default_value = "10000", value_parser = millis)]
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

fn millis(s: &str) -> Result<Duration, std::num::ParseIntError> {
    s.parse().map(Duration::from_millis)
}

/// Adds `Retry-After` to a 503: the answer to a request shed under load.
pub fn overloaded(mut response: Response) -> Response {
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

/// Serves `router` on `listener` until `stop` resolves, then drains within
/// the shutdown deadline.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let mut closing = closing_rx.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.wait_for(|c| *c) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_timeout, slots.acquire_many(all)).await.is_err() {
        let open = limits.max_connections - slots.available_permits();
        tracing::warn!(open, "shutdown deadline passed: dropping the connections still open");
    }
    Ok(())
}

/// A connection over the limit: 503, `Retry-After`, closed.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error": "too many clients; retry"}"#;
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {RETRY_AFTER_SECONDS}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(reply.as_bytes())).await;
    let _ = stream.shutdown().await;
}
