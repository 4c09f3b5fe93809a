//! The bounded queue of copies between the live path and the shadow's worker.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::task::Poll;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use futures_util::task::AtomicWaker;

use super::slots::CopySlot;
use super::target::TargetId;

/// How often an idle worker looks at the queue (and a finished copy at the live
/// response it waits for) instead of being woken by the live path.
///
/// Waking a parked thread is a futex call, several microseconds on the live request's
/// thread; a trivial request costs about as much. So the live path never wakes a worker
/// that is merely between copies: the worker looks at the queue every tick, which adds up
/// to one tick to when a copy starts (never to its measured latency, which starts when
/// the build is called) and costs the shadow's thread one timer wake-up per tick.
pub(crate) const SHADOW_TICK: Duration = Duration::from_millis(1);

/// A copy waiting for the worker.
pub(crate) struct Task {
    pub(crate) slot: Arc<CopySlot>,
    /// The adapter target that runs it.
    pub(crate) target: TargetId,
}

/// Lock-free, and the live path wakes the worker only when it has parked (see
/// [`SHADOW_TICK`]).
pub(crate) struct CopyQueue {
    pub(crate) tasks: ArrayQueue<Task>,
    /// The worker is parked and must be woken for the next copy.
    parked: AtomicBool,
    waker: AtomicWaker,
    /// Every live-side handle is gone: no copy will come any more.
    closed: AtomicBool,
}

impl CopyQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            tasks: ArrayQueue::new(capacity.max(1)),
            parked: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues a copy; gives it back when the queue is full.
    pub(crate) fn push(&self, task: Task) -> Result<(), Task> {
        self.tasks.push(task)?;
        // Pairs with the fence in `park`: either the worker sees the copy before parking,
        // or the live path sees it parked and wakes it.
        fence(Ordering::SeqCst);
        self.wake_if_parked();
        Ok(())
    }

    /// Wakes the worker if it parked: for a copy, or for anything else it should see now.
    pub(crate) fn wake_if_parked(&self) {
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// No copy will come any more: the worker finishes what it holds and ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.parked.store(false, Ordering::SeqCst);
        self.waker.wake();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until a copy is queued, the queue is closed, or `ready()` says there is other
    /// work.
    pub(crate) async fn park(&self, ready: impl Fn() -> bool) {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            self.parked.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.tasks.is_empty() && !self.closed.load(Ordering::SeqCst) && !ready() {
                Poll::Pending
            } else {
                self.parked.store(false, Ordering::SeqCst);
                Poll::Ready(())
            }
        })
        .await;
    }
}
