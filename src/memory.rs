//! Process memory between phases: handing freed memory back to the
//! operating system at once, and logging what the process holds.
//!
//! The binaries allocate with jemalloc, which keeps freed pages ("dirty")
//! for seconds to reuse them. A training frees its largest structures (the
//! events as read, the batches between workers) right before allocating
//! the next phase's, so without a purge both would count in the peak.

use std::ffi::CStr;

/// Returns the allocator's freed pages of every arena to the operating
/// system. Every arena: allocations of 8 MB and more, the big ones here,
/// share one arena whichever thread made them. (Where jemalloc is not the
/// global allocator, as in test binaries, this starts an unused one.)
pub fn release_freed() {
    const PURGE_ALL: &CStr = c"arena.4096.purge";
    // SAFETY: `arena.<MALLCTL_ARENAS_ALL>.purge` takes and returns
    // nothing: every pointer is null and the length 0, as it requires.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// Logs (at debug level, when `lead`) the process's resident memory at the
/// end of a phase, from `/proc/self/statm` (nothing where there is none).
pub fn log_resident(lead: bool, phase: &str) {
    if !lead || !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return;
    };
    let Some(pages) = statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()) else {
        return;
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    tracing::debug!(phase, rss_mb = (pages * page) >> 20, "memory");
}
