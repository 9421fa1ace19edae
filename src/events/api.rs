//! `ur events`' HTTP API, PIO's EventServer routes: `GET /`, `POST
//! /events.json`, `POST /batch/events.json` (at most 50 events, one status
//! per event), `GET /events.json` with PIO's filters, `GET
//! /events/{id}.json`. `DELETE /events/{id}.json` answers 501: deleting
//! one event from an append-only log is not offered (send `$delete` for an
//! entity instead). The access key comes from `?accessKey=` or HTTP Basic
//! authentication, as in PIO; a missing or wrong key is 401 and is never
//! logged (the access log has the path only). Requests are bounded in body
//! size, in number at once and in time.

use super::apps::{AccessKey, Registry};
use super::live::ops::LiveOp;
use super::log::{EventLog, LogError, now_millis};
use super::read::{self, Filter};
use super::validate::{Accepted, accept};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// PIO's limit on a batch request.
pub const MAX_BATCH: usize = 50;

/// Request bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    pub timeout: Duration,
}

/// What the handlers share.
pub struct EventServer {
    pub root: PathBuf,
    pub log: EventLog,
    pub registry: RwLock<Arc<Registry>>,
    /// Query-time history updates, with `--es-url`.
    pub live: Option<super::live::Live>,
    ids: EventIds,
}

impl EventServer {
    pub fn new(root: PathBuf, log: EventLog, registry: Registry, live: Option<super::live::Live>) -> EventServer {
        EventServer { root, log, registry: RwLock::new(Arc::new(registry)), live, ids: EventIds::new() }
    }

    /// The live effects of `app`'s accepted events, to send once acknowledged.
    fn live_ops<'a>(&self, app: &str, accepted: impl IntoIterator<Item = &'a Accepted>) -> Vec<LiveOp> {
        self.live.as_ref().map(|l| l.ops_of(app, accepted)).unwrap_or_default()
    }

    /// Appends `lines` to `app`'s log, then hands their live effects over,
    /// in a task of its own: a handler dropped mid-write (its client gone,
    /// the shutdown deadline) still hands over what was written, so every
    /// event in the log reaches the live task ([`super::live`] relies on it
    /// at a clean stop).
    async fn store(self: &Arc<Self>, app: &str, lines: Vec<String>, live: Vec<LiveOp>) -> Result<(), LogError> {
        let (server, app) = (self.clone(), app.to_string());
        let stored = tokio::spawn(async move {
            let stored = server.log.append(&app, lines).await;
            if let (Ok(()), Some(l)) = (&stored, &server.live) {
                l.send(live);
            }
            stored
        });
        stored.await.unwrap_or_else(|e| Err(LogError(format!("storing events: {e}"))))
    }

    fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry lock").clone()
    }
}

/// Event ids: a random prefix per server and a counter, 32 hex digits.
struct EventIds {
    prefix: String,
    next: AtomicU64,
}

impl EventIds {
    fn new() -> EventIds {
        EventIds { prefix: super::random_hex(8), next: AtomicU64::new(0) }
    }
    fn next(&self) -> String {
        format!("{}{:016x}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

type Shared = Arc<EventServer>;

/// The routes with their bounds.
pub fn router(server: Shared, limits: Limits) -> Router {
    let gate = Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight));
    Router::new()
        .route("/", get(alive))
        .route("/events.json", get(list_events).post(create_event))
        .route("/batch/events.json", axum::routing::post(create_batch))
        .route("/events/{file}", get(get_event).delete(delete_event))
        .fallback(|| async { message(StatusCode::NOT_FOUND, "Not Found") })
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn(move |r, n| bounded(gate.clone(), limits.timeout, r, n)))
        .layer(middleware::from_fn(access_log))
        .with_state(server)
}

fn message(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "message": msg.into() }))).into_response()
}

/// A 500 whose detail (paths, I/O errors) goes to the log, not the client.
fn internal(what: &str, detail: impl std::fmt::Display) -> Response {
    tracing::error!("{what}: {detail}");
    message(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: internal error (see the server log)"))
}

/// A request refused, with PIO's `{"message": ...}` body.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        message(self.0, self.1)
    }
}

async fn alive() -> Response {
    axum::Json(json!({"status": "alive"})).into_response()
}

/// The key of a request: `?accessKey=` or Basic authentication's user.
fn authenticate(server: &EventServer, q: &HashMap<String, String>, headers: &HeaderMap) -> Result<AccessKey, Refusal> {
    let given = match q.get("accessKey") {
        Some(k) => Some(k.clone()),
        None => headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| super::base64_decode(b.trim()))
            .map(|user_pass| user_pass.split(':').next().unwrap_or_default().trim().to_string()),
    };
    let Some(given) = given else {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "Missing accessKey.".into()));
    };
    let key = server.registry().authenticate(&given).cloned();
    let key = key.ok_or_else(|| Refusal(StatusCode::UNAUTHORIZED, "Invalid accessKey.".into()))?;
    if let Some(ch) = q.get("channel") {
        // No channels are ever created: PIO's answer for an unknown one.
        return Err(Refusal(StatusCode::UNAUTHORIZED, format!("Invalid channel '{ch}'.")));
    }
    Ok(key)
}

enum Checked {
    Ok(Accepted),
    Refused(StatusCode, String),
}

fn check(key: &AccessKey, value: &Value, now: crate::time::Millis, id: String) -> Checked {
    match accept(value, now, id) {
        Ok(a) if !key.allows(&a.event) => {
            Checked::Refused(StatusCode::FORBIDDEN, format!("{} events are not allowed", a.event))
        }
        Ok(a) => Checked::Ok(a),
        Err(e) => Checked::Refused(StatusCode::BAD_REQUEST, e.0),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

async fn create_event(
    State(server): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match authenticate(&server, &q, &headers) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let value = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let accepted = match check(&key, &value, now_millis(), server.ids.next()) {
        Checked::Ok(a) => a,
        Checked::Refused(status, msg) => return message(status, msg),
    };
    let live = server.live_ops(&key.app, [&accepted]);
    match server.store(&key.app, vec![accepted.line], live).await {
        Ok(()) => (StatusCode::CREATED, axum::Json(json!({"eventId": accepted.event_id}))).into_response(),
        Err(e) => internal("storing the event", e),
    }
}

async fn create_batch(
    State(server): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match authenticate(&server, &q, &headers) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let events = match parse_body(&body) {
        Ok(Value::Array(a)) => a,
        Ok(_) => return message(StatusCode::BAD_REQUEST, "a batch must be a JSON array of events"),
        Err(r) => return r.into_response(),
    };
    if events.len() > MAX_BATCH {
        return message(
            StatusCode::BAD_REQUEST,
            format!("Batch request must have less than or equal to {MAX_BATCH} events"),
        );
    }
    let now = now_millis();
    let checked: Vec<Checked> = events.iter().map(|v| check(&key, v, now, server.ids.next())).collect();
    let lines: Vec<String> =
        checked.iter().filter_map(|c| if let Checked::Ok(a) = c { Some(a.line.clone()) } else { None }).collect();
    let live =
        server.live_ops(&key.app, checked.iter().filter_map(|c| if let Checked::Ok(a) = c { Some(a) } else { None }));
    let stored = if lines.is_empty() { Ok(()) } else { server.store(&key.app, lines, live).await };
    if let Err(e) = &stored {
        tracing::error!("{e}");
    }
    let statuses: Vec<Value> = checked
        .into_iter()
        .map(|c| match (c, &stored) {
            (Checked::Ok(a), Ok(())) => json!({"status": 201, "eventId": a.event_id}),
            (Checked::Ok(_), Err(_)) => {
                json!({"status": 500, "message": "storing the event: internal error (see the server log)"})
            }
            (Checked::Refused(s, m), _) => json!({"status": s.as_u16(), "message": m}),
        })
        .collect();
    axum::Json(statuses).into_response()
}

/// PIO's query parameters of `GET /events.json`.
fn filter_of(q: &HashMap<String, String>) -> Result<Filter, String> {
    let time = |name: &str| -> Result<Option<i64>, String> {
        q.get(name)
            .map(|s| crate::time::parse_iso8601(s).ok_or_else(|| format!("{name}: `{s}` is not an ISO-8601 date-time")))
            .transpose()
    };
    let limit = match q.get("limit").map(|s| s.parse::<i64>()) {
        None => Some(20),
        Some(Ok(n)) if n < 0 => None,
        Some(Ok(n)) => Some(n as usize),
        Some(Err(_)) => return Err("limit must be an integer".into()),
    };
    let reversed = match q.get("reversed").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err("reversed must be true or false".into()),
    };
    let f = Filter {
        entity_type: q.get("entityType").cloned(),
        entity_id: q.get("entityId").cloned(),
        event: q.get("event").cloned(),
        target_entity_type: q.get("targetEntityType").cloned(),
        target_entity_id: q.get("targetEntityId").cloned(),
        start_time: time("startTime")?,
        until_time: time("untilTime")?,
        limit,
        reversed,
    };
    if f.reversed && (f.entity_type.is_none() || f.entity_id.is_none()) {
        return Err("the parameter reversed can only be used with both entityType and entityId specified.".into());
    }
    Ok(f)
}

async fn list_events(
    State(server): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let key = match authenticate(&server, &q, &headers) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let filter = match filter_of(&q) {
        Ok(f) => f,
        Err(m) => return message(StatusCode::BAD_REQUEST, m),
    };
    let root = server.root.clone();
    match tokio::task::spawn_blocking(move || read::find(&root, &key.app, &filter)).await {
        Ok(Ok(found)) if found.is_empty() => message(StatusCode::NOT_FOUND, "Not Found"),
        Ok(Ok(found)) => axum::Json(found).into_response(),
        Ok(Err(e)) => internal("reading events", e),
        Err(e) => internal("reading events", e),
    }
}

async fn get_event(
    State(server): State<Shared>,
    UrlPath(file): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let key = match authenticate(&server, &q, &headers) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let Some(id) = file.strip_suffix(".json").map(str::to_string) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let root = server.root.clone();
    match tokio::task::spawn_blocking(move || read::by_id(&root, &key.app, &id)).await {
        Ok(Ok(Some(event))) => axum::Json(event).into_response(),
        Ok(Ok(None)) => message(StatusCode::NOT_FOUND, "Not Found"),
        Ok(Err(e)) => internal("reading events", e),
        Err(e) => internal("reading events", e),
    }
}

async fn delete_event(
    State(server): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authenticate(&server, &q, &headers) {
        return r.into_response();
    }
    message(
        StatusCode::NOT_IMPLEMENTED,
        "deleting one event is not supported: events are stored in an append-only log \
         (send a $delete event for the entity instead; see docs/events.md)",
    )
}

/// At most `max_in_flight` requests at once (503 beyond), each within the deadline.
async fn bounded(gate: Arc<tokio::sync::Semaphore>, timeout: Duration, request: Request, next: Next) -> Response {
    let Ok(_permit) = gate.try_acquire_owned() else {
        return crate::serving::overloaded(message(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in progress; retry",
        ));
    };
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(r) => r,
        Err(_) => message(StatusCode::SERVICE_UNAVAILABLE, format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::debug!(
        target: "ur::access",
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
