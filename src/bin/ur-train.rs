//! `ur-train`: see `ur_train --help` and the README.

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // A panic in any worker would leave the others waiting for it: report it
    // and end the process (no model is published).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("error: internal error (a bug); no model written");
        std::process::exit(70);
    }));
    std::process::exit(ur::cli::main_with(ur::cli::parse()));
}
