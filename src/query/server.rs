//! `ur serve`: the PredictionServer's `POST /queries.json`, plus `GET
//! /health`, safe to expose behind a load balancer. Connections are bounded
//! by [`crate::serving`] (header timeout, connection limit, shutdown
//! deadline); requests beyond `max_in_flight` wait briefly in arrival order
//! and are then shed with 503 + `Retry-After`; each request, body read included, has a deadline; bodies
//! and queries are capped ([`QueryLimits`]). A client's mistake gets 400
//! with what is wrong; a failure of Elasticsearch gets a generic 5xx with
//! a request id, the detail going to the log only. The server starts while
//! Elasticsearch is down and answers 503 until it is reachable. Every
//! request is logged (request id, method, path, status, milliseconds).

use super::request::{Query, QueryLimits};
use super::{QueryError, Recommender};
use crate::config::Engine;
use crate::es::{Es, EsConfig};
use crate::serving::{self, ConnectionLimits, overloaded};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How `ur serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Per-request deadline, body read included.
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// Requests served at once; more get 503 + `Retry-After`.
    pub max_in_flight: usize,
    pub connections: ConnectionLimits,
    pub limits: QueryLimits,
    /// `/health` names the alias, its indices and the Elasticsearch version.
    pub health_details: bool,
}

/// Why `ur serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// The model, once Elasticsearch has answered.
pub type Model = Arc<OnceLock<Arc<Recommender>>>;

#[derive(Clone)]
struct App {
    model: Model,
    timeout: Duration,
    max_body_bytes: usize,
    health_details: bool,
    limits: QueryLimits,
    gate: Arc<Semaphore>,
    ids: Arc<RequestIds>,
}

/// Request ids: a per-process prefix and a counter.
struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

/// The id of the request being served (a request extension).
#[derive(Clone)]
struct RequestId(String);

/// The routes, for serving or testing.
pub fn router(model: Model, options: &ServeOptions) -> Router {
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let prefix = format!("{:08x}", (started.as_nanos() as u64 ^ u64::from(std::process::id())) as u32);
    let app = App {
        model,
        timeout: options.timeout,
        max_body_bytes: options.max_body_bytes,
        health_details: options.health_details,
        limits: options.limits,
        gate: Arc::new(Semaphore::new(options.max_in_flight)),
        ids: Arc::new(RequestIds { prefix, next: AtomicU64::new(0) }),
    };
    Router::new()
        .route("/queries.json", post(queries))
        .route("/health", get(health))
        .route("/", get(health))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route: POST /queries.json or GET /health") })
        .layer(middleware::from_fn_with_state(app.clone(), shed_load))
        .layer(middleware::from_fn_with_state(app.clone(), access_log))
        .with_state(app)
}

/// Serves until SIGTERM or Ctrl-C, connecting to Elasticsearch in the background if it is down.
pub async fn serve(es: EsConfig, engine: Engine, options: ServeOptions) -> Result<(), ServeError> {
    let stop = crate::runtime::shutdown_signal();
    let listener =
        tokio::net::TcpListener::bind(options.listen).await.map_err(|e| ServeError::Listen(options.listen, e))?;
    let local = listener.local_addr()?;
    let model: Model = Arc::default();
    let limits = options.limits;
    let first = tokio::time::timeout(Duration::from_secs(5), Es::connect(&es)).await;
    match first {
        Ok(Ok(client)) => {
            let _ = model.set(Arc::new(Recommender::new(client, engine).with_limits(limits)));
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e,
                _ => "no answer within 5 s".into(),
            };
            tracing::warn!("Elasticsearch is not reachable ({why}): answering 503 until it is");
            tokio::spawn(reconnect(model.clone(), es, engine, limits));
        }
    }
    tracing::info!(addr = %local, "serving POST /queries.json");
    serving::serve(listener, router(model, &options), options.connections, stop).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Retries until Elasticsearch answers, then publishes the model.
async fn reconnect(model: Model, es: EsConfig, engine: Engine, limits: QueryLimits) {
    let mut pause = Duration::from_millis(250);
    loop {
        tokio::time::sleep(pause).await;
        match Es::connect(&es).await {
            Ok(client) => {
                tracing::info!(version = %client.info.version, "Elasticsearch is reachable: serving queries");
                let _ = model.set(Arc::new(Recommender::new(client, engine).with_limits(limits)));
                return;
            }
            Err(e) => tracing::debug!("Elasticsearch still not reachable: {e}"),
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn queries(State(app): State<App>, request: Request) -> Response {
    let id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + app.timeout;
    let read = axum::body::to_bytes(request.into_body(), app.max_body_bytes);
    let body = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) if too_large(&e) => {
            let msg = format!("the request body is over {} bytes (--max-body-bytes)", app.max_body_bytes);
            return error(StatusCode::PAYLOAD_TOO_LARGE, &msg);
        }
        Ok(Err(_)) => return error(StatusCode::BAD_REQUEST, "the request body could not be read"),
        Err(_) => {
            let msg = format!("the request body did not arrive within {} ms", app.timeout.as_millis());
            return error(StatusCode::REQUEST_TIMEOUT, &msg);
        }
    };
    let query = match Query::parse(&body) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    if let Err(e) = app.limits.check(&query) {
        return error(StatusCode::BAD_REQUEST, &e);
    }
    let Some(recommender) = app.model.get().cloned() else { return unavailable() };
    match tokio::time::timeout_at(deadline, recommender.recommend(&query)).await {
        Ok(Ok(answer)) => axum::Json(answer).into_response(),
        Ok(Err(QueryError::BadRequest(e))) => error(StatusCode::BAD_REQUEST, &e),
        Ok(Err(QueryError::Upstream(detail))) => {
            tracing::error!(request_id = %id, "query failed: {detail}");
            failure(StatusCode::BAD_GATEWAY, "the query failed in Elasticsearch", &id)
        }
        Err(_) => {
            tracing::warn!(request_id = %id, "no answer within {} ms", app.timeout.as_millis());
            failure(StatusCode::GATEWAY_TIMEOUT, "no answer in time", &id)
        }
    }
}

/// Whether a body read failed on the size limit.
fn too_large(e: &axum::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
}

async fn health(State(app): State<App>, request: Request) -> Response {
    let id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let Some(r) = app.model.get().cloned() else { return unavailable() };
    let path = format!("/_alias/{}", r.alias);
    let why = match tokio::time::timeout(app.timeout, r.es.call(crate::es::HttpMethod::Get, &path, None)).await {
        Ok(Ok((200, v))) => {
            if !app.health_details {
                return axum::Json(json!({"status": "ok"})).into_response();
            }
            let index: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            return axum::Json(json!({"status": "ok", "alias": r.alias, "index": index, "elasticsearch": r.es.info}))
                .into_response();
        }
        Ok(Ok((status, _))) => format!("no live model: alias {} answered {status}", r.alias),
        Ok(Err(e)) => e,
        Err(_) => "Elasticsearch did not answer in time".into(),
    };
    tracing::warn!(request_id = %id, "health: {why}");
    overloaded(failure(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &id))
}

/// Elasticsearch has not been reached since the start.
fn unavailable() -> Response {
    overloaded(error(StatusCode::SERVICE_UNAVAILABLE, "Elasticsearch is not reachable yet; retry"))
}

/// A client's mistake, said precisely.
fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// A server-side failure: generic, with the id that finds the detail in the log.
fn failure(status: StatusCode, message: &str, id: &str) -> Response {
    let message = format!("{message}; the server log has the detail");
    (status, axum::Json(json!({ "error": message, "requestId": id }))).into_response()
}

/// How long a request may wait, in arrival order, for one in flight to finish.
const QUEUE_WAIT: Duration = Duration::from_millis(250);

/// At most `max_in_flight` requests at once; a request that finds none free
/// within [`QUEUE_WAIT`] gets 503 + `Retry-After`. Waiting is first come,
/// first served, so a flood cannot starve a client that sends one at a time.
async fn shed_load(State(app): State<App>, request: Request, next: Next) -> Response {
    let Ok(Ok(_permit)) = tokio::time::timeout(QUEUE_WAIT, app.gate.clone().acquire_owned()).await else {
        return overloaded(error(StatusCode::SERVICE_UNAVAILABLE, "too many requests in progress; retry"));
    };
    next.run(request).await
}

async fn access_log(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = format!("{}-{:x}", app.ids.prefix, app.ids.next.fetch_add(1, Ordering::Relaxed));
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    tracing::info!(
        target: "ur::access",
        request_id = %id,
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
