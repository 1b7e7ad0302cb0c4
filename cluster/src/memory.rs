//! The master gives the memory that a flood took back to the system once it is freed.
//!
//! glibc's malloc serves a block above its mmap threshold (128 KiB at first) from an mmap of
//! its own, unmapped when freed; but each time it frees such a block it raises the threshold
//! to that block's size (up to 32 MiB). After one large frame, later ones come from the heap,
//! and a heap freed in the middle stays resident. Measured with `tests/memory.rs`: after 300
//! broadcasts of 1 MiB, with one receiver stopped, the master stayed at 49 MiB resident for
//! good (12 MiB before the flood); with the threshold fixed, it came back to 12 MiB. A threshold
//! set explicitly is no longer raised.

/// Fixes glibc's mmap threshold at its initial 128 KiB, unless the environment sets it
/// (`MALLOC_MMAP_THRESHOLD_`, which glibc reads itself). Other allocators and C libraries are
/// left alone.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}
