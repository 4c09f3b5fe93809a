//! How long the shadow's thread has waited for CPU: runnable, but not running, because
//! live (or anything else of a higher class) had the cores.
//!
//! On Linux the kernel counts it per thread, in the second field of
//! `/proc/thread-self/schedstat` (nanoseconds spent on a run queue). Reading it is a system
//! call of about a microsecond, so the worker reads it at most every sixteenth of the
//! deadline: how long the thread waited during a copy is the difference of two readings,
//! each at most that gap old, which is precise enough against the deadline. Other
//! platforms do not tell, and there the clock reads zero: no copy is starved.
//!
//! Read from the file rather than through a crate: one number from one line does not
//! justify `procfs` and its dependencies, as for the process sampler.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

/// Where the count comes from.
enum Source {
    /// `/proc/thread-self/schedstat`, opened on the thread it describes.
    #[cfg(target_os = "linux")]
    Schedstat(std::fs::File),
    /// Nothing tells (another platform, or a kernel without scheduler statistics).
    Unavailable,
    /// A count the test sets, in nanoseconds.
    #[cfg(test)]
    Scripted(std::sync::Arc<std::sync::atomic::AtomicU64>),
}

/// See the [module docs](self). It lives on the shadow's thread only.
pub(crate) struct CpuWaitClock {
    source: Source,
    /// The thread's total wait at the last reading.
    total: Cell<Duration>,
    gap: Duration,
    last_read: Cell<Option<Instant>>,
}

impl CpuWaitClock {
    /// The clock of the calling thread, read at most every `deadline / 16`.
    pub(crate) fn for_this_thread(deadline: Duration) -> Self {
        Self::with_source(Self::open(), deadline)
    }

    /// A clock that never tells of a wait.
    #[cfg(test)]
    pub(crate) fn unavailable(deadline: Duration) -> Self {
        Self::with_source(Source::Unavailable, deadline)
    }

    /// A clock whose count the test sets.
    #[cfg(test)]
    pub(crate) fn scripted(
        count: std::sync::Arc<std::sync::atomic::AtomicU64>,
        deadline: Duration,
    ) -> Self {
        Self::with_source(Source::Scripted(count), deadline)
    }

    fn with_source(source: Source, deadline: Duration) -> Self {
        let clock = Self {
            source,
            total: Cell::new(Duration::ZERO),
            gap: deadline / 16,
            last_read: Cell::new(None),
        };
        clock.sample(Instant::now());
        clock
    }

    #[cfg(target_os = "linux")]
    fn open() -> Source {
        // `thread-self` is resolved when the file is opened: the descriptor keeps
        // describing this thread wherever it is read from.
        match std::fs::File::open("/proc/thread-self/schedstat") {
            Ok(file) => Source::Schedstat(file),
            Err(error) => {
                tracing::info!(%error, "no scheduler statistics: the shadow sheds nothing for waiting for CPU");
                Source::Unavailable
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn open() -> Source {
        Source::Unavailable
    }

    /// The thread's total wait for CPU, if the source tells.
    fn read(&self) -> Option<Duration> {
        match &self.source {
            #[cfg(target_os = "linux")]
            Source::Schedstat(file) => {
                use std::os::unix::fs::FileExt;
                let mut text = [0u8; 96];
                let read = file.read_at(&mut text, 0).ok()?;
                let text = std::str::from_utf8(text.get(..read)?).ok()?;
                // "<ns on CPU> <ns waiting on a run queue> <timeslices>".
                let waited = text.split_whitespace().nth(1)?.parse().ok()?;
                Some(Duration::from_nanos(waited))
            }
            Source::Unavailable => None,
            #[cfg(test)]
            Source::Scripted(count) => Some(Duration::from_nanos(
                count.load(std::sync::atomic::Ordering::Relaxed),
            )),
        }
    }

    /// Takes a reading at `now`, unless the last one is younger than the gap.
    pub(crate) fn sample(&self, now: Instant) {
        if self
            .last_read
            .get()
            .is_some_and(|last| now.saturating_duration_since(last) < self.gap)
        {
            return;
        }
        self.last_read.set(Some(now));
        if let Some(total) = self.read() {
            self.total.set(total);
        }
    }

    /// The thread's total wait for CPU at the latest reading.
    pub(crate) fn total(&self) -> Duration {
        self.total.get()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn readings_closer_together_than_the_gap_are_skipped() {
        let count = Arc::new(AtomicU64::new(0));
        // A deadline of 160 ms: a reading every 10 ms at most.
        let clock = CpuWaitClock::scripted(Arc::clone(&count), Duration::from_millis(160));
        count.store(50_000_000, Ordering::Relaxed);
        clock.sample(Instant::now() + Duration::from_millis(5));
        assert_eq!(clock.total(), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(10)).await;
        clock.sample(Instant::now());
        assert_eq!(clock.total(), Duration::from_millis(50));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_thread_can_read_its_own_wait() {
        let clock = CpuWaitClock::for_this_thread(Duration::from_millis(100));
        assert!(
            matches!(clock.source, Source::Schedstat(_)),
            "the kernel keeps scheduler statistics"
        );
        assert!(clock.read().is_some());
    }
}
