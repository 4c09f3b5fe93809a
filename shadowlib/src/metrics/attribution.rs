//! Per-request resource attribution: CPU time and allocations summed over every poll.
//!
//! An async request runs in slices — one per poll — and tokio may run each slice on a
//! different worker thread, interleaved with other requests. Per-thread counters read just
//! before and just after each poll therefore measure exactly this request's slice, wherever
//! it runs; the [`Measured`] wrapper adds the slices up. Time the request spends waiting
//! (on I/O, a timer, a lock) is not CPU it used, and is not counted.
//!
//! Work a request hands to another task (`tokio::spawn`, `spawn_blocking`) is that task's,
//! not this request's: wrap that future too if it should count.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};

use super::alloc::{Allocations, thread_allocations};

/// The CPU time the calling thread has used since it started, or `None` on platforms without
/// a per-thread CPU clock, and under valgrind (where reading it through rustix would fault
/// the process: rustix issue 1559).
///
/// ```
/// let before = shadowlib::metrics::thread_cpu_time();
/// let mut x = 0u64;
/// for i in 0..1_000_000u64 { x = std::hint::black_box(x.wrapping_add(i)); }
/// if let (Some(before), Some(after)) = (before, shadowlib::metrics::thread_cpu_time()) {
///     assert!(after > before);
/// }
/// ```
pub fn thread_cpu_time() -> Option<Duration> {
    if under_valgrind() {
        return None;
    }
    cpu_clock::thread_cpu_time()
}

/// Whether the process runs under valgrind, which the clock and page-size readings must
/// not touch.
///
/// On Linux they go through rustix, which finds the vDSO from `/proc/self/auxv`; under
/// valgrind that file describes valgrind's own process, whose vDSO the program cannot
/// read, and the first reading is a segmentation fault (rustix issue 1559). A library in
/// a service must never take the process down, so under valgrind (known by the preloaded
/// `vgpreload` library it injects) CPU is "not measured" instead. Checked once.
pub(crate) fn under_valgrind() -> bool {
    static UNDER_VALGRIND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNDER_VALGRIND.get_or_init(|| {
        std::env::var_os("LD_PRELOAD")
            .is_some_and(|preload| preload.to_string_lossy().contains("vgpreload"))
    })
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    target_os = "freebsd"
))]
mod cpu_clock {
    use std::time::Duration;

    use rustix::time::{ClockId, clock_gettime};

    pub(super) fn thread_cpu_time() -> Option<Duration> {
        let now = clock_gettime(ClockId::ThreadCPUTime);
        // The kernel never reports a negative CPU time; a failed conversion means no reading.
        let secs = u64::try_from(now.tv_sec).ok()?;
        let nanos = u32::try_from(now.tv_nsec).ok()?;
        Some(Duration::new(secs, nanos))
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    target_os = "freebsd"
)))]
mod cpu_clock {
    use std::time::Duration;

    pub(super) fn thread_cpu_time() -> Option<Duration> {
        None
    }
}

/// What one request used, summed over all its polls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// CPU time spent inside the request's polls; `None` where there is no thread CPU clock.
    pub cpu_time: Option<Duration>,
    /// Memory allocated inside the request's polls; `None` without the counting allocator.
    pub allocations: Option<Allocations>,
    /// How many times the request's future was polled.
    pub polls: u64,
}

pin_project! {
    /// A future that measures the CPU time and allocations of every poll of the future it
    /// wraps, and yields them with its output.
    ///
    /// Each poll reads the thread CPU clock twice. On Linux that clock is a system call, not
    /// a vDSO read, so the wrapper adds a few hundred nanoseconds to a few microseconds per
    /// poll depending on the machine (see the `attribution` bench); where requests are many
    /// and tiny, measure a sample of them and record the rest without usage.
    ///
    /// ```
    /// use shadowlib::metrics::MeasureExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (answer, usage) = async { 6 * 7 }.measured().await;
    /// assert_eq!(answer, 42);
    /// assert_eq!(usage.polls, 1);
    /// # }
    /// ```
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Measured<F> {
        #[pin]
        inner: F,
        usage: ResourceUsage,
        // Whether the clocks are read; without them only the polls are counted.
        clocks: bool,
    }
}

impl<F> Measured<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        Self {
            inner,
            usage: ResourceUsage::default(),
            clocks: true,
        }
    }

    /// Wraps `inner` counting its polls only: for the work the shadow leaves unmeasured,
    /// where reading the clocks would cost more than the measurement is worth.
    pub(crate) fn polls_only(inner: F) -> Self {
        Self {
            clocks: false,
            ..Self::new(inner)
        }
    }

    /// What the wrapped future used so far (useful when it is dropped before finishing).
    pub fn usage(&self) -> ResourceUsage {
        self.usage
    }
}

impl<F: Future> Future for Measured<F> {
    type Output = (F::Output, ResourceUsage);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if !*this.clocks {
            let poll = this.inner.poll(cx);
            this.usage.polls += 1;
            return poll.map(|output| (output, *this.usage));
        }
        let cpu_before = thread_cpu_time();
        let alloc_before = thread_allocations();
        let poll = this.inner.poll(cx);
        // The readings nest around the poll, so each window holds the poll and as little
        // of the measuring itself as possible.
        let alloc_after = thread_allocations();
        let cpu_after = thread_cpu_time();

        let usage = this.usage;
        usage.polls += 1;
        if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
            // Both readings come from the same thread (a poll never migrates mid-way), so the
            // clock is monotonic between them.
            let spent = after.saturating_sub(before);
            usage.cpu_time = Some(usage.cpu_time.unwrap_or_default() + spent);
        }
        if let (Some(before), Some(after)) = (alloc_before, alloc_after) {
            usage
                .allocations
                .get_or_insert_with(Allocations::default)
                .add(after.since(before));
        }
        poll.map(|output| (output, *usage))
    }
}

/// Adds [`measured`](MeasureExt::measured) to every future.
pub trait MeasureExt: Future + Sized {
    /// Wraps the future so that it yields its output together with the CPU time and
    /// allocations spent in its polls.
    fn measured(self) -> Measured<Self> {
        Measured::new(self)
    }
}

impl<F: Future> MeasureExt for F {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_poll_and_passes_the_output_through() {
        let mut yielded = false;
        let future = std::future::poll_fn(move |cx| {
            if yielded {
                Poll::Ready("done")
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime without drivers always builds");
        let (output, usage) = runtime.block_on(future.measured());
        assert_eq!(output, "done");
        assert_eq!(usage.polls, 2);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_spent_outside_the_polls_is_not_counted() {
        let spin_for = |d: Duration| {
            let start = thread_cpu_time().expect("linux has a thread CPU clock");
            while thread_cpu_time().expect("linux has a thread CPU clock") - start < d {
                std::hint::spin_loop();
            }
        };
        let mut future = Box::pin(async { 1 }.measured());
        spin_for(Duration::from_millis(20));
        let waker = std::task::Waker::noop();
        let Poll::Ready((_, usage)) = future.as_mut().poll(&mut Context::from_waker(waker)) else {
            panic!("an async block without awaits finishes on its first poll");
        };
        let cpu = usage.cpu_time.expect("linux has a thread CPU clock");
        assert!(cpu < Duration::from_millis(5), "attributed {cpu:?}");
    }
}
