//! The slot a mirrored read travels in, from the live path to the shadow's worker and
//! back, and the pool that keeps slots for reuse.
//!
//! A slot holds the request copy the live path writes and the live response it reports
//! once sent. Its buffers keep their allocations from one read to the next, so in a steady
//! state mirroring allocates nothing, and no memory allocated on the live thread is freed
//! on the shadow's (with the system allocator such a free takes the lock of the other
//! thread's arena, and the two threads would fight over it on every request).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use super::StatePosition;
use crate::compare::{BodyCapture, ResponseSummary};
use crate::mirror::{HeaderView, PackedHeaders, RequestCopy};

/// How far the live response of a mirrored read has got, as the shadow's worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LiveProgress {
    /// Not sent whole yet.
    Awaited,
    /// Sent whole: the slot's summary is the live response.
    Seen,
    /// Will never be seen whole (the client went away, the body failed, nobody observed
    /// it): nothing to compare with.
    Lost,
}

/// The live response of a mirrored read, for the shadow to compare with: status, the
/// compared headers packed into one buffer, and the body's first bytes.
#[derive(Debug)]
pub(crate) struct LiveSide {
    status: u16,
    headers: Vec<u8>,
    pub(crate) body: Vec<u8>,
    body_len: u64,
    truncated: bool,
    pub(crate) progress: LiveProgress,
    /// Where live's state stood when its response head was ready, for a stateful service.
    pub(crate) state_position: Option<StatePosition>,
    /// The live request's latency to its response head, once known: the part of live's
    /// load the recorder does not see (it only counts mirrored reads).
    pub(crate) latency: Option<Duration>,
}

impl LiveSide {
    /// Starts capturing a response with `status`, sent `latency` after the build was
    /// called, and the `compared` headers of `headers`.
    pub(crate) fn fill_head(
        &mut self,
        status: u16,
        latency: Option<Duration>,
        compared: &[String],
        headers: &dyn HeaderView,
    ) {
        self.latency = latency;
        self.status = status;
        self.headers.clear();
        for name in compared {
            headers.each_value(name, &mut |value| {
                PackedHeaders::push(&mut self.headers, name, value);
            });
        }
    }

    /// Sets the body from a capture.
    /// An empty body, keeping the buffer for the slot's next read.
    pub(crate) fn clear_body(&mut self) {
        self.body.clear();
        self.body_len = 0;
        self.truncated = false;
    }

    pub(crate) fn set_body(&mut self, body: BodyCapture) {
        self.body_len = body.seen();
        self.truncated = body.overflowed();
        self.body = body.into_bytes();
    }

    /// Writes the captured response into `summary`, reusing its allocations.
    pub(crate) fn summarize(&self, summary: &mut ResponseSummary) {
        summary.refill(self.status, |push| {
            for (name, value) in PackedHeaders(&self.headers) {
                push(name, value);
            }
        });
        summary.body.extend_from_slice(&self.body);
        summary.body_len = self.body_len;
        summary.truncated = self.truncated;
    }
}

/// One mirrored read on its way: the copy the live path made, and the live response once
/// sent. Shared by the live path and the shadow's worker, and used again once both are
/// done with it (see [`SlotPool`]).
#[derive(Debug)]
pub(crate) struct CopySlot {
    request: Mutex<RequestCopy>,
    live: Mutex<LiveSide>,
}

impl CopySlot {
    fn new() -> Self {
        Self {
            request: Mutex::new(RequestCopy::default()),
            live: Mutex::new(LiveSide {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
                body_len: 0,
                truncated: false,
                progress: LiveProgress::Awaited,
                state_position: None,
                latency: None,
            }),
        }
    }

    /// The request copy. Only the ticket holder writes it, before the copy is queued,
    /// and only the worker reads it after, so the lock is never waited for.
    pub(crate) fn request(&self) -> MutexGuard<'_, RequestCopy> {
        lock(&self.request)
    }

    /// The live response.
    pub(crate) fn live(&self) -> MutexGuard<'_, LiveSide> {
        lock(&self.live)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both sides hold plain data that is valid at every point, so a lock poisoned by a
    // panic elsewhere is used as it is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The slots not in use, for the next mirrored reads.
///
/// A slot is taken on the live path and given back by whichever of the live path and the
/// worker is done with it last; its buffers keep their allocations from one read to the
/// next, so in a steady state mirroring allocates nothing.
///
/// Aligned to two cache lines so that, behind an `Arc`, the reference count the live
/// path changes per read is on a line of its own.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct SlotPool {
    free: ArrayQueue<Arc<CopySlot>>,
}

impl SlotPool {
    /// A pool keeping at most `capacity` free slots (more are freed).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            free: ArrayQueue::new(capacity.max(1)),
        }
    }

    /// A slot for a new read: its live response awaited, its request to be filled with a
    /// body of at most `body_limit` bytes.
    pub(crate) fn take(&self, body_limit: usize) -> Arc<CopySlot> {
        let slot = self.free.pop().unwrap_or_else(|| Arc::new(CopySlot::new()));
        // Nobody else holds it, so neither lock is ever waited for.
        {
            let mut live = slot.live();
            live.progress = LiveProgress::Awaited;
            live.state_position = None;
            live.latency = None;
        }
        slot.request().start_body(body_limit);
        slot
    }

    /// Done with `slot`: it goes back to the pool if nobody else holds it any more.
    ///
    /// When both holders give it back at the same moment, each may see the other's
    /// reference and the slot is freed instead: a missed reuse, never a shared one.
    pub(crate) fn give_back(&self, slot: Arc<CopySlot>) {
        if Arc::strong_count(&slot) == 1 {
            // A full pool frees the slot: the pool only has to cover the reads in flight.
            let _ = self.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_returns_to_the_pool_only_from_its_last_holder() {
        let pool = SlotPool::new(4);
        let slot = pool.take(16);
        let other = Arc::clone(&slot);
        slot.live().progress = LiveProgress::Seen;
        pool.give_back(slot);
        assert_eq!(pool.free.len(), 0, "the other holder still has it");
        pool.give_back(other);
        assert_eq!(pool.free.len(), 1);
        let again = pool.take(16);
        assert_eq!(again.live().progress, LiveProgress::Awaited);
    }
}
