//! `ur-train`: see `ur-train --help` and the README.

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    ur::cmd::train::main()
}
