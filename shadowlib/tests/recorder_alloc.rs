//! The recorder's hot path allocates nothing once a thread's shard has seen the values it
//! records: every live request is recorded, so an allocation there would be one per request.
//!
//! This binary installs its own counting allocator (the crate's `CountingAllocator` needs the
//! `count-allocations` feature, which `cargo test -p shadowlib` leaves off).

// A counting global allocator is unsafe to implement by definition.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use shadowlib::metrics::{KpiRecorder, RequestRecord};
use shadowlib::{Arm, Outcome, Version};

struct CountingSystem;

thread_local! {
    // `const` and without a destructor, so reaching it from the allocator never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only a
// thread-local `Cell`, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded with the caller's layout, under the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged, under the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingSystem = CountingSystem;

/// How many allocations `f` made on this thread.
fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Latencies from 1 µs to `top`, spread over the histogram's buckets.
fn latencies(top: Duration) -> impl Iterator<Item = Duration> {
    let top = top.as_micros() as u64;
    (0..2_000u64).map(move |i| Duration::from_micros(1 + (i * 7_919) % top))
}

fn recorder() -> KpiRecorder {
    KpiRecorder::new(Version::new("svc", "1"), Version::new("svc", "2"))
}

#[test]
fn recording_allocates_nothing_once_the_shard_has_seen_the_range() {
    let recorder = recorder();
    let top = Duration::from_millis(50);
    // The first record of each arm creates its histogram; the top value grows it to the range.
    for arm in [Arm::Stable, Arm::Candidate] {
        recorder.record(arm, Outcome::Success, top, 0, 0);
    }
    let allocated = allocations_during(|| {
        for latency in latencies(top) {
            recorder.record(Arm::Stable, Outcome::Success, latency, 120, 2_048);
            recorder.record(Arm::Candidate, Outcome::ServerError, latency, 120, 0);
        }
    });
    assert_eq!(allocated, 0, "allocations while recording 4,000 requests");
}

#[test]
fn recording_with_a_known_route_allocates_nothing() {
    let recorder = recorder();
    let top = Duration::from_millis(50);
    let record = |latency| {
        recorder.record_request(
            RequestRecord::new(Arm::Candidate, Outcome::Success, latency)
                .route("GET /users/{id}")
                .bytes(120, 2_048),
        );
    };
    // Admits the route, creates its statistics in this thread's shard and grows them.
    record(top);
    let allocated = allocations_during(|| latencies(top).for_each(record));
    assert_eq!(allocated, 0, "allocations while recording 2,000 requests");
}

#[test]
fn reading_the_recorder_keeps_the_shards_allocations() {
    let recorder = recorder();
    let top = Duration::from_millis(50);
    recorder.record(Arm::Stable, Outcome::Success, top, 0, 0);
    // Folding a shard into the reader's totals empties it but keeps its histogram.
    recorder.snapshot(Arm::Stable);
    let allocated = allocations_during(|| {
        for latency in latencies(top) {
            recorder.record(Arm::Stable, Outcome::Success, latency, 0, 0);
        }
    });
    assert_eq!(allocated, 0, "allocations while recording after a read");
    assert_eq!(recorder.snapshot(Arm::Stable).requests(), 2_001);
}
