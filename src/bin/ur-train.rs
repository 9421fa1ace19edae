//! `ur-train`: see `ur-train --help` and the README.

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // A panic in any thread would leave the other workers (and processes)
    // waiting: report it and end the process; no model is published.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        ur::sink::directory::abandon_all();
        if message.starts_with("timely communication error") {
            // Several network threads may fail at once: report the first.
            static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if REPORTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            // Timely's network threads are named `timely:recv-P` / `timely:send-P`.
            let thread = std::thread::current();
            let peer = thread.name().and_then(|n| n.rsplit('-').next()).unwrap_or("?");
            eprintln!(
                "error: lost the connection to process {peer} (line {} of the hosts file): {message}; no model written",
                peer.parse::<usize>().map(|p| (p + 1).to_string()).unwrap_or_else(|_| "?".into())
            );
            std::process::exit(ur::cli::EXIT_FAILED);
        }
        default_hook(info);
        eprintln!("error: internal error (a bug); no model written");
        std::process::exit(70);
    }));
    std::process::exit(ur::cli::main_with(ur::cli::parse()));
}
