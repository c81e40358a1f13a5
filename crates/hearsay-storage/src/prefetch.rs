//! A cache-line prefetch hint, for batched lookups that overlap their cache misses.

/// Asks the CPU to start loading the cache line holding `*r` and returns at once. Only a
/// hint: nothing is read or written, and on other architectures it does nothing.
#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` cannot fault or change memory (it is a hint to the cache), SSE
    // is part of the x86_64 baseline, and the pointer comes from a live reference.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(r).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}
