//! `ur`: queries and model operations; see `ur --help`.

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    ur::cmd::main(ur::cmd::ur::main_with)
}
