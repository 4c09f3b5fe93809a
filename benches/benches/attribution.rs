//! Cost the attribution wrapper (`Measured`) adds to each poll, and what the counting
//! allocator adds to each allocation.
//!
//! This bench installs the counting allocator, so `poll/measured` reads both the thread CPU
//! clock and the allocation counters around each poll. Without the allocator the wrapper
//! skips the counters; `clock/*` gives the two readings' costs separately, so the
//! CPU-only overhead is `poll/measured` minus two `clock/thread_allocations`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use shadowlib::metrics::{CountingAllocator, MeasureExt, thread_allocations, thread_cpu_time};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::system();

/// A request future that is never done: each iteration of the bench is one poll of it.
fn pending_forever() -> impl Future<Output = ()> {
    std::future::poll_fn(|_| {
        black_box(());
        Poll::Pending
    })
}

fn bench_polls(c: &mut Criterion) {
    assert!(
        thread_allocations().is_some(),
        "the counting allocator is installed"
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("poll");

    let mut bare = pin!(pending_forever());
    group.bench_function("bare", |b| {
        b.iter(|| black_box(bare.as_mut().poll(&mut cx)))
    });

    let mut measured = pin!(pending_forever().measured());
    group.bench_function("measured", |b| {
        b.iter(|| black_box(measured.as_mut().poll(&mut cx)))
    });
    group.finish();

    let mut clock = c.benchmark_group("clock");
    clock.bench_function("thread_cpu_time", |b| {
        b.iter(|| black_box(thread_cpu_time()))
    });
    clock.bench_function("thread_allocations", |b| {
        b.iter(|| black_box(thread_allocations()))
    });
    clock.finish();
}

fn bench_allocations(c: &mut Criterion) {
    let layout = Layout::from_size_align(64, 8).expect("64 bytes aligned to 8 is a valid layout");
    let mut group = c.benchmark_group("alloc_dealloc_64_bytes");
    group.bench_function("system", |b| {
        b.iter(|| {
            // SAFETY: the layout has a non-zero size, and the pointer is freed with the
            // allocator and layout it came from (a null one is passed to neither).
            unsafe {
                let ptr = System.alloc(layout);
                if !ptr.is_null() {
                    System.dealloc(black_box(ptr), layout);
                }
            }
        })
    });
    group.bench_function("counting", |b| {
        b.iter(|| {
            // SAFETY: as above, with the counting allocator.
            unsafe {
                let ptr = ALLOCATOR.alloc(layout);
                if !ptr.is_null() {
                    ALLOCATOR.dealloc(black_box(ptr), layout);
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_polls, bench_allocations);
criterion_main!(benches);
