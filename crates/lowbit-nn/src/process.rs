//! Process settings that make candle's CPU kernels fast, for binaries (the CLI, the examples):
//! call them at the start of `main`. Neither changes a result.

/// Candle allocates a fresh buffer for every op's output, and a batch's activations are tens
/// of MB: above glibc's mmap threshold (at most 32 MB) each one is mapped and unmapped again,
/// and every page faults in anew (a third of `lowbit run`'s default time went to the kernel,
/// and half of a training step's). Serving them from the heap and keeping freed memory for
/// reuse removes that. Linux with glibc only; elsewhere it does nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters (under glibc's arena lock).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Candle allocates a fresh buffer for every op's output (see the Linux version); elsewhere
/// this does nothing.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

/// Candle's CPU kernels ask `RAYON_NUM_THREADS`, else count the cores anew (reading
/// `/proc/cpuinfo`) in every matrix product: a third of a CPU forward pass went there. This
/// sets it once, to `threads` or the cores available, so candle's kernels also use the thread
/// count asked for. An explicit `RAYON_NUM_THREADS` is kept when `threads` is `None`.
///
/// # Safety
///
/// It sets an environment variable: call it before the process starts any other thread (at the
/// start of `main`).
pub unsafe fn pin_thread_count(threads: Option<usize>) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() && threads.is_none() {
        return;
    }
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // SAFETY: the caller guarantees no other thread exists yet.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string()) };
}
