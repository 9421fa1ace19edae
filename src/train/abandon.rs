//! Ending the process in the middle of a run (a lost or silent peer, a
//! signal, a panic) without unwinding: the temporary directories of the
//! unfinished model and state are removed, the state locks released, the
//! message printed, and the process exits with the status given. Only the
//! first caller ends the process; any other waits for it.

use std::sync::atomic::{AtomicBool, Ordering};

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
