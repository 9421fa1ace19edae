//! Ending the process in the middle of a run (a lost or silent peer, a
//! signal, a panic) without unwinding: the temporary directories of the
//! unfinished model and state are removed, the state locks released, the
//! message printed, and the process exits with the status given. Only the
//! first caller ends the process; any other waits for it. A signal during
//! the publication waits for it instead ([`Publishing`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// Cleans up and exits with `code`, printing `error: {message}`.
pub fn abandon_run(code: i32, message: &str) -> ! {
    static ENDING: AtomicBool = AtomicBool::new(false);
    if ENDING.swap(true, Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
    crate::sink::directory::abandon_all();
    crate::state::lock::release_all();
    eprintln!("error: {message}");
    std::process::exit(code)
}

/// Where the run's publication is: a signal waits for one under way and
/// then lets the run end as it ends ([`stop_by_signal`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Publication {
    NotYet,
    UnderWay,
    Ended,
    /// A signal came first: the process is exiting.
    Abandoned,
}

static PUBLICATION: Mutex<Publication> = Mutex::new(Publication::NotYet);
static PUBLICATION_ENDED: Condvar = Condvar::new();

/// The publication of a run (Elasticsearch alias, model directory, state)
/// under way: from its start to its drop, a signal does not end the
/// process — once some of the model is published, "no model written" would
/// be false and the state would lag the model it describes. It waits, and
/// the run ends as it would have: published (exit 0) or failing with its
/// own error.
pub struct Publishing(());

impl Publishing {
    pub fn begin() -> Publishing {
        let mut state = PUBLICATION.lock().unwrap_or_else(|p| p.into_inner());
        if *state == Publication::Abandoned {
            // A signal came first and its thread is removing the temporary
            // directories: publish nothing, the process is exiting.
            drop(state);
            loop {
                std::thread::park();
            }
        }
        *state = Publication::UnderWay;
        Publishing(())
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        *PUBLICATION.lock().unwrap_or_else(|p| p.into_inner()) = Publication::Ended;
        PUBLICATION_ENDED.notify_all();
    }
}

/// SIGINT or SIGTERM (`name`) in a one-shot run: before the publication,
/// abandons the run (exit 128 + the signal); during it, waits for it to end
/// and returns, leaving the run to end as it does.
pub fn stop_by_signal(signal: i32, name: &str) {
    let mut state = PUBLICATION.lock().unwrap_or_else(|p| p.into_inner());
    if *state == Publication::UnderWay {
        tracing::warn!("{name} during the publication: it ends first");
        while *state == Publication::UnderWay {
            state = PUBLICATION_ENDED.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
    if *state == Publication::Ended {
        tracing::warn!("{name} after the publication: the run ends as it did");
        return;
    }
    *state = Publication::Abandoned;
    drop(state);
    abandon_run(128 + signal, &format!("stopped by {name}; no model written"))
}
