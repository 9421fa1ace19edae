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

/// Resolves on SIGTERM or Ctrl-C (SIGINT): the servers' signal to stop
/// accepting and finish the requests in flight. The handlers are installed
/// by this call (inside the runtime), before the future is first polled, so
/// a signal that comes right after start-up is not missed.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(term.take()) => {},
            _ = wait(int.take()) => {},
        }
        tracing::info!("shutting down: finishing the requests in flight");
    }
}
