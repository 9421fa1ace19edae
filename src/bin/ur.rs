//! `ur`: queries and model operations; see `ur --help`.

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    use clap::Parser;
    std::process::exit(ur::ops::main_with(ur::ops::Args::parse()));
}
