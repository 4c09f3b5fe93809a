//! Cost of recording one request (latency + outcome + bytes) in the `KpiRecorder`.
//!
//! Goal: under 100 ns per record single-threaded, and no collapse when two threads record
//! at once. `global_mutex` is the design the sharded recorder replaced (one lock per arm),
//! measured the same way for comparison.

use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use shadowlib::metrics::RequestRecord;
use shadowlib::{Arm, ArmEvidence, KpiRecorder, Outcome, Version};

/// Latencies spread over several histogram buckets, as real traffic is.
fn latencies() -> Vec<Duration> {
    (0..1024u64)
        .map(|i| Duration::from_micros(200 + (i * 7_919) % 50_000))
        .collect()
}

fn recorder() -> KpiRecorder {
    KpiRecorder::new(Version::new("bench", "1"), Version::new("bench", "2"))
}

/// Runs `record(i)` `iters` times on each of `threads` threads started together, and
/// returns the wall time until all are done. With perfect scaling that equals one thread's
/// time for `iters` records, so criterion's figure is the time per record as each thread
/// sees it: a lock that threads fight over shows as a multiple of the one-thread figure.
fn run_on_threads(threads: usize, iters: u64, record: &(dyn Fn(u64) + Sync)) -> Duration {
    let start_line = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start_line.wait();
                for i in 0..iters {
                    record(i);
                }
            });
        }
        start_line.wait();
        let started = Instant::now();
        // The scope joins every thread before returning, so the time covers all of them.
        started
    })
    .elapsed()
}

fn bench_recorder(c: &mut Criterion) {
    let latencies = latencies();
    let latency = |i: u64| latencies[(i % 1024) as usize];
    let mut group = c.benchmark_group("record");

    let sharded = recorder();
    let mut i = 0u64;
    group.bench_function("one_thread", |b| {
        b.iter(|| {
            i += 1;
            sharded.record(
                Arm::Candidate,
                Outcome::Success,
                black_box(latency(i)),
                120,
                2_048,
            );
        })
    });

    let with_route = recorder();
    group.bench_function("one_thread_with_route", |b| {
        b.iter(|| {
            i += 1;
            with_route.record_request(
                RequestRecord::new(Arm::Candidate, Outcome::Success, black_box(latency(i)))
                    .route(black_box("GET /users/{id}"))
                    .bytes(120, 2_048),
            );
        })
    });

    let shared = recorder();
    group.bench_function("one_thread_spawned", |b| {
        b.iter_custom(|iters| {
            run_on_threads(1, iters, &|i| {
                shared.record(
                    Arm::Candidate,
                    Outcome::Success,
                    black_box(latency(i)),
                    120,
                    2_048,
                );
            })
        })
    });
    group.bench_function("two_threads", |b| {
        b.iter_custom(|iters| {
            run_on_threads(2, iters, &|i| {
                shared.record(
                    Arm::Candidate,
                    Outcome::Success,
                    black_box(latency(i)),
                    120,
                    2_048,
                );
            })
        })
    });

    // The replaced design: every record takes the arm's single lock.
    let global = Mutex::new(ArmEvidence::new(Version::new("bench", "2")));
    let record_global = |i: u64| {
        let mut arm = global.lock().expect("no panics while recording");
        let micros = latency(i).as_micros() as u64;
        arm.record_request(Outcome::Success, black_box(micros));
        arm.request_bytes += 120;
        arm.response_bytes += 2_048;
    };
    group.bench_function("global_mutex_one_thread", |b| {
        b.iter_custom(|iters| run_on_threads(1, iters, &record_global))
    });
    group.bench_function("global_mutex_two_threads", |b| {
        b.iter_custom(|iters| run_on_threads(2, iters, &record_global))
    });
    group.finish();

    // What a reader pays once per look: folding the shards and building the evidence.
    let mut reads = c.benchmark_group("read");
    reads.bench_function("snapshot", |b| {
        b.iter(|| black_box(sharded.snapshot(Arm::Candidate)))
    });
    reads.finish();
}

criterion_group!(benches, bench_recorder);
criterion_main!(benches);
