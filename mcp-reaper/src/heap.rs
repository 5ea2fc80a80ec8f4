//! The daemon's heap, as the kernel sees it.
//!
//! Owns: handing freed heap pages back to the kernel (`release_freed`), so
//! the resident set follows what the daemon holds rather than the highest
//! it ever held (glibc keeps freed memory in its arenas otherwise: a burst
//! of short-lived processes would stay in the resident set for good).
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
