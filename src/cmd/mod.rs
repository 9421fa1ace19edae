//! The command lines of the two binaries, and what they share: the exit
//! codes and which outcome gives which, the logging set-up, `ur-train`'s
//! panic hook, and the `main` both binaries call. [`train`] is `ur-train`,
//! [`ur`] is `ur`.

pub mod train;
pub mod ur;

use crate::train::TrainError;
use std::io::IsTerminal;

/// How a command ended: the process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done (model written, query answered, alias moved).
    Ok,
    /// 1: the work failed (training: no model written; `ur`: Elasticsearch
    /// or the query failed).
    Failed,
    /// 2: bad command line, engine.json or input location: nothing was done.
    Usage,
    /// 70: a bug (a panic); no model written.
    Internal,
}

// `ur-train` stopped by SIGINT/SIGTERM exits 128 + the signal (130/143),
// from `train`'s signal thread, without an `Exit`.

impl Exit {
    /// The exit status.
    pub const fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Internal => 70,
        }
    }
}

/// A command that did not succeed, by what its exit status says.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad command line, engine.json, query or input location.
    #[error("{0}")]
    Usage(String),
    /// The work failed.
    #[error("{0}")]
    Failed(String),
}

impl From<&CommandError> for Exit {
    fn from(e: &CommandError) -> Exit {
        match e {
            CommandError::Usage(_) => Exit::Usage,
            CommandError::Failed(_) => Exit::Failed,
        }
    }
}

impl From<&TrainError> for Exit {
    fn from(e: &TrainError) -> Exit {
        match e {
            TrainError::Setup(_) => Exit::Usage,
            TrainError::Failed(_) => Exit::Failed,
        }
    }
}

/// Parses the process arguments (clap exits with its message and status 2
/// on a bad command line), runs `command` and exits with its status.
pub fn main<A: clap::Parser>(command: fn(A) -> Exit) -> ! {
    std::process::exit(command(A::parse()).code())
}

/// Logs to stderr at the level the flags ask for (RUST_LOG overrides).
pub fn init_logging(quiet: bool, verbose: u8) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("ur={default},timely=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// A panic in any thread would leave the other workers (and processes)
/// waiting: report it and end the process, removing temporary directories
/// and releasing state locks; no model is published. A lost connection to
/// another process is reported once, as a failed run.
pub fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("timely communication error") {
            // Timely's network threads are named `timely:recv-P` / `timely:send-P`.
            let thread = std::thread::current();
            let peer = thread.name().and_then(|n| n.rsplit('-').next()).unwrap_or("?");
            // A peer reported silent or lost (here or by another process):
            // that report, not this, ends the process. Otherwise the others
            // are told that this peer is lost, so that they all name it.
            match peer.parse::<usize>() {
                Ok(p) => crate::cluster::watchdog::connection_lost(p),
                Err(_) => crate::cluster::watchdog::await_report(),
            }
            // Several network threads may fail at once: the first one ends
            // the process (abandon_run), the others wait for it.
            crate::train::abandon_run(
                Exit::Failed.code(),
                &format!(
                    "lost the connection to process {peer} (line {} of the hosts file): {message}; no model written",
                    peer.parse::<usize>().map(|p| (p + 1).to_string()).unwrap_or_else(|_| "?".into())
                ),
            );
        }
        default_hook(info);
        crate::train::abandon_run(Exit::Internal.code(), "internal error (a bug); no model written");
    }));
}
