//! The daemon's heap, as the kernel sees it.
//!
//! Owns: handing freed heap pages back to the kernel (`release_freed`), so
//! the resident set follows what the daemon holds rather than the highest
//! it ever held (glibc keeps freed memory in its arenas otherwise: a burst
//! of short-lived processes would stay in the resident set for good), and
//! the allocator settings that keep it so (`configure`).
//! Must never: touch memory that is in use (`malloc_trim` only returns
//! whole free pages), or be called on a hot path: it walks every arena.

/// Returns freed heap pages to the kernel (a no-op outside glibc).
pub fn release_freed() {
    // SAFETY: malloc_trim only walks glibc's own heap structures.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets the allocator up for a long-running daemon whose tables grow in
/// bursts and shrink back (a no-op outside glibc):
/// - a fixed mmap threshold (glibc's default raises it each time a large
///   mapped block is freed, after which the next burst's tables come from
///   the heap, where small long-lived allocations made meanwhile pin their
///   pages: the resident set then keeps part of every burst);
/// - at most two arenas: reaps run on short-lived blocking threads, and
///   each new thread would otherwise get an arena of its own to fragment.
pub fn configure() {
    #[cfg(target_env = "gnu")]
    {
        /// Blocks of at least this many bytes are mapped on their own and
        /// unmapped when freed: a table of a few thousand entries and up.
        const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only sets glibc's allocator parameters; called
        // at start-up, before the runtime's threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
