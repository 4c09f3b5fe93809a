//! Allocation counting: an opt-in global allocator with per-thread counters.
//!
//! With the `count-allocations` feature on, [`CountingAllocator`] wraps another allocator and
//! adds every allocation's size and count to counters local to the allocating thread. A
//! [`Measured`](super::Measured) future reads them around each poll, which attributes the
//! allocations to the request being polled. Without the feature, or with the feature but
//! without the allocator installed, [`thread_allocations`] returns `None` and reports say
//! "allocations: not measured".

use serde::{Deserialize, Serialize};

/// Memory allocated: how many allocations and how many bytes in all.
///
/// A reallocation counts as one allocation of its new size, as a growing `Vec` or `String`
/// asks the allocator for that much again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    /// Bytes requested from the allocator.
    pub bytes: u64,
    /// Number of allocations (and reallocations).
    pub count: u64,
}

impl Allocations {
    /// What was allocated between an `earlier` reading of the same thread's counters and this one.
    pub fn since(self, earlier: Allocations) -> Allocations {
        // The counters only grow (wrapping after 2^64 bytes, which is why this wraps too).
        Allocations {
            bytes: self.bytes.wrapping_sub(earlier.bytes),
            count: self.count.wrapping_sub(earlier.count),
        }
    }

    /// Adds another amount to this one.
    pub fn add(&mut self, other: Allocations) {
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.count = self.count.saturating_add(other.count);
    }
}

/// The calling thread's allocation counters since it started, or `None` when allocations are
/// not counted (the `count-allocations` feature is off, or `CountingAllocator` is not the
/// global allocator).
///
/// ```
/// // Without the counting allocator installed, allocations are "not measured".
/// assert_eq!(shadowlib::metrics::thread_allocations(), None);
/// ```
pub fn thread_allocations() -> Option<Allocations> {
    counting::thread_allocations()
}

#[cfg(feature = "count-allocations")]
pub use counting::CountingAllocator;

// Implementing `GlobalAlloc` is unsafe by definition; this module is the only place the
// crate allows it, and every block says why it is sound.
#[cfg(feature = "count-allocations")]
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::Allocations;

    /// Set by the first allocation through a [`CountingAllocator`]: from then on the counters
    /// mean something. Before it, they stay zero and must read as "not measured".
    static INSTALLED: AtomicBool = AtomicBool::new(false);

    thread_local! {
        // `const` and free of destructors: the allocator may touch it at any time, including
        // while the thread is being torn down, and reaching it must never allocate.
        static COUNTERS: Cell<Allocations> = const { Cell::new(Allocations { bytes: 0, count: 0 }) };
    }

    /// A global allocator that counts each thread's allocations, so that shadowlib can
    /// attribute allocated bytes to each request of each build.
    ///
    /// Install it with one line in the binary (not in a library):
    ///
    /// ```
    /// #[global_allocator]
    /// static ALLOCATOR: shadowlib::metrics::CountingAllocator = shadowlib::metrics::CountingAllocator::system();
    /// # fn main() {
    /// # let before = shadowlib::metrics::thread_allocations().expect("installed above");
    /// # let v = std::hint::black_box(vec![0u8; 4096]);
    /// # let after = shadowlib::metrics::thread_allocations().expect("installed above");
    /// # assert!(after.since(before).bytes >= 4096);
    /// # drop(v);
    /// # }
    /// ```
    ///
    /// It adds two thread-local increments to each allocation and leaves deallocation as it
    /// was. To count on top of another allocator (jemalloc, mimalloc), wrap it with
    /// [`CountingAllocator::new`].
    #[derive(Debug, Default)]
    pub struct CountingAllocator<A = System> {
        inner: A,
    }

    impl CountingAllocator<System> {
        /// Counts on top of the system allocator.
        pub const fn system() -> Self {
            Self { inner: System }
        }
    }

    impl<A> CountingAllocator<A> {
        /// Counts on top of `inner`.
        pub const fn new(inner: A) -> Self {
            Self { inner }
        }
    }

    #[inline]
    fn count(bytes: usize) {
        if !INSTALLED.load(Ordering::Relaxed) {
            // Written once; later allocations only read the (shared, unchanging) cache line.
            INSTALLED.store(true, Ordering::Relaxed);
        }
        // `try_with` fails only after the thread's locals are gone; that allocation goes
        // uncounted rather than aborting the process.
        let _ = COUNTERS.try_with(|counters| {
            let mut now = counters.get();
            now.bytes = now.bytes.wrapping_add(bytes as u64);
            now.count = now.count.wrapping_add(1);
            counters.set(now);
        });
    }

    // SAFETY: every method forwards to the wrapped allocator with the caller's arguments
    // unchanged and returns its result unchanged, so this allocator upholds exactly the
    // contract the inner one does. The counting neither allocates nor unwinds.
    unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { self.inner.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
            unsafe { self.inner.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::dealloc`'s contract.
            unsafe { self.inner.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(new_size);
            // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::realloc`'s contract.
            unsafe { self.inner.realloc(ptr, layout, new_size) }
        }
    }

    pub(super) fn thread_allocations() -> Option<Allocations> {
        if !INSTALLED.load(Ordering::Relaxed) {
            return None;
        }
        COUNTERS.try_with(Cell::get).ok()
    }
}

#[cfg(not(feature = "count-allocations"))]
mod counting {
    use super::Allocations;

    pub(super) fn thread_allocations() -> Option<Allocations> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_the_difference_even_across_wrapping() {
        let earlier = Allocations {
            bytes: u64::MAX - 10,
            count: 5,
        };
        let later = Allocations {
            bytes: 20,
            count: 8,
        };
        assert_eq!(
            later.since(earlier),
            Allocations {
                bytes: 31,
                count: 3
            }
        );
    }
}
