//! `ur serve`: the PredictionServer's `POST /queries.json`, plus `GET
//! /health`. Requests are served concurrently, each within a deadline; bad
//! queries get HTTP 400 with the reason; every request is logged (method,
//! path, status, milliseconds); SIGTERM or Ctrl-C stops accepting and lets
//! the requests in flight finish.

use super::request::Query;
use super::{QueryError, Recommender};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
struct App {
    recommender: Arc<Recommender>,
    timeout: Duration,
}

/// The routes, for serving or testing.
pub fn router(recommender: Arc<Recommender>, timeout: Duration) -> Router {
    Router::new()
        .route("/queries.json", post(queries))
        .route("/health", get(health))
        .route("/", get(health))
        .layer(middleware::from_fn(access_log))
        .with_state(App { recommender, timeout })
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn serve(recommender: Arc<Recommender>, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(addr = %local, alias = %recommender.alias, "serving POST /queries.json");
    axum::serve(listener, router(recommender, timeout))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("server: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

async fn queries(State(app): State<App>, body: Bytes) -> Response {
    let query = match Query::parse(&body) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match tokio::time::timeout(app.timeout, app.recommender.recommend(&query)).await {
        Ok(Ok(answer)) => axum::Json(answer).into_response(),
        Ok(Err(QueryError::BadRequest(e))) => error(StatusCode::BAD_REQUEST, e),
        Ok(Err(QueryError::Upstream(e))) => error(StatusCode::BAD_GATEWAY, e),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, format!("no answer within {} ms", app.timeout.as_millis())),
    }
}

async fn health(State(app): State<App>) -> Response {
    let r = &app.recommender;
    let path = format!("/_alias/{}", r.alias);
    match tokio::time::timeout(app.timeout, r.es.call(crate::es::HttpMethod::Get, &path, None)).await {
        Ok(Ok((200, v))) => {
            let index: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            axum::Json(json!({"status": "ok", "alias": r.alias, "index": index, "elasticsearch": r.es.info}))
                .into_response()
        }
        Ok(Ok((status, _))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, format!("no live model: alias {} answered {status}", r.alias))
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "Elasticsearch did not answer in time".into()),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::info!(
        target: "ur::access",
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
