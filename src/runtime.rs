//! The process's async runtime, for the clients that are async (HDFS,
//! Elasticsearch) and the servers. Training threads call into it with `block_on`; it is
//! created on first use, so runs that touch neither start no threads.

use std::future::Future;
use std::sync::OnceLock;

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ur-io")
            .enable_all()
            .build()
            .expect("a tokio runtime for I/O clients")
    })
}

/// Runs a future to completion from a synchronous thread.
pub fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// Resolves on SIGTERM or Ctrl-C: the servers' signal to stop accepting
/// and finish the requests in flight.
pub async fn shutdown_signal() {
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
