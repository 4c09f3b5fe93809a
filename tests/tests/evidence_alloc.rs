//! Allocation attribution with the counting allocator installed, as a user would: one line.

use std::future::Future;
use std::hint::black_box;
use std::task::Poll;
use std::time::Duration;

use shadowlib::metrics::KpiRecorder;
use shadowlib::metrics::{CountingAllocator, MeasureExt, RequestRecord, thread_allocations};
use shadowlib::{Arm, Outcome, Version};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::system();

const CHUNK: usize = 10 * 1024;
const CHUNKS: usize = 100;

fn yield_once() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// Allocates `CHUNKS` chunks of `CHUNK` bytes, yielding after every ten, and frees half of
/// them along the way (freeing does not undo an allocation).
async fn allocating_request() -> usize {
    let mut kept = Vec::new();
    for i in 0..CHUNKS {
        let chunk = black_box(vec![i as u8; CHUNK]);
        if i % 2 == 0 {
            kept.push(chunk);
        }
        if i % 10 == 9 {
            yield_once().await;
        }
    }
    kept.len()
}

#[test]
fn allocations_are_measured_once_the_allocator_is_installed() {
    assert!(thread_allocations().is_some());
}

#[test]
fn a_request_allocating_n_bytes_in_chunks_is_attributed_at_least_n() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime builds");
    let (kept, usage) = runtime.block_on(async {
        // Spawned, so it runs on the workers and may move between them at each yield.
        tokio::spawn(allocating_request().measured())
            .await
            .expect("the request does not panic")
    });
    assert_eq!(kept, CHUNKS / 2);
    let allocations = usage
        .allocations
        .expect("the counting allocator is installed");
    let n = (CHUNK * CHUNKS) as u64;
    assert!(
        allocations.bytes >= n,
        "attributed {} bytes, allocated at least {n}",
        allocations.bytes
    );
    assert!(
        allocations.count >= CHUNKS as u64,
        "{} allocations",
        allocations.count
    );
    // Only what the request allocated: not a multiple of it from the runtime or elsewhere.
    assert!(
        allocations.bytes < 2 * n,
        "attributed {} bytes",
        allocations.bytes
    );
}

#[test]
fn allocations_flow_into_the_evidence_and_the_report() {
    let recorder = KpiRecorder::new(Version::new("svc", "1"), Version::new("svc", "2"));
    let (_, heavy) = run_here(allocating_request().measured());
    let (_, light) = run_here(async { black_box(1 + 1) }.measured());
    let latency = Duration::from_millis(1);
    recorder
        .record_request(RequestRecord::new(Arm::Candidate, Outcome::Success, latency).usage(heavy));
    recorder
        .record_request(RequestRecord::new(Arm::Stable, Outcome::Success, latency).usage(light));

    let candidate = recorder.snapshot(Arm::Candidate);
    let bytes = candidate
        .alloc_bytes
        .as_ref()
        .expect("allocations were measured");
    assert!(bytes.max() >= (CHUNK * CHUNKS) as u64);
    let count = candidate
        .alloc_count
        .as_ref()
        .expect("allocations were measured");
    assert!(count.max() >= CHUNKS as u64);
    assert!(candidate.to_string().contains("allocations per request"));

    let stable = recorder.snapshot(Arm::Stable);
    assert_eq!(
        stable.alloc_bytes.expect("allocations were measured").max(),
        0
    );
}

/// Runs a future to completion on this thread.
fn run_here<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime builds")
        .block_on(future)
}
