//! Cost of recording one request (latency + outcome + bytes) in the `KpiRecorder`, and of
//! the other read the live path makes on every request: the rollout's phase.
//!
//! Goal: under 100 ns per record single-threaded, and no collapse when two threads record
//! at once. `global_mutex` is the design the sharded recorder replaced (one lock per arm),
//! measured the same way for comparison. The phase is read three ways: the lock-free
//! `RolloutHandle::phase`, a borrow of a status watch receiver (what the live path did
//! before: a read lock, so an atomic write on a line every reader shares) and a full
//! `status()` copy.
//!
//! Multi-thread figures come in two clocks. `wall` is the time until every thread is done:
//! with two free cores and no contention it equals the one-thread figure, but on a machine
//! busy with other work the two threads may share a core and `wall` doubles whatever the
//! code does. `cpu` is the largest per-thread CPU time, which time slicing does not inflate
//! but contention (cache lines bouncing between cores, lock spinning, futex calls) does.

use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use shadowlib::metrics::{KpiRecorder, RequestRecord, thread_cpu_time};
use shadowlib::{Arm, ArmEvidence, Outcome, Rollout, Version};

/// Latencies spread over several histogram buckets, as real traffic is.
fn latencies() -> Vec<Duration> {
    (0..1024u64)
        .map(|i| Duration::from_micros(200 + (i * 7_919) % 50_000))
        .collect()
}

fn recorder() -> KpiRecorder {
    KpiRecorder::new(Version::new("bench", "1"), Version::new("bench", "2"))
}

/// What `run_on_threads` reports.
#[derive(Clone, Copy)]
enum Clock {
    /// Wall time until every thread is done.
    Wall,
    /// The largest CPU time any one thread used.
    Cpu,
}

/// Runs `record(i)` `iters` times on each of `threads` threads started together. Either
/// clock equals one thread's time for `iters` records when the threads do not get in each
/// other's way, so criterion's figure is the time per record as each thread sees it.
fn run_on_threads(
    threads: usize,
    iters: u64,
    clock: Clock,
    record: &(dyn Fn(u64) + Sync),
) -> Duration {
    let start_line = Barrier::new(threads + 1);
    let cpu_now = || thread_cpu_time().expect("the bench platform has a thread CPU clock");
    let (started, cpu_times) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start_line.wait();
                    let cpu_start = cpu_now();
                    for i in 0..iters {
                        record(i);
                    }
                    cpu_now() - cpu_start
                })
            })
            .collect();
        start_line.wait();
        let started = Instant::now();
        let cpu_times: Vec<Duration> = workers
            .into_iter()
            .map(|w| w.join().expect("recording does not panic"))
            .collect();
        (started, cpu_times)
    });
    match clock {
        Clock::Wall => started.elapsed(),
        Clock::Cpu => cpu_times.into_iter().max().unwrap_or_default(),
    }
}

fn on_threads(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, record: &(dyn Fn(u64) + Sync)) {
    for (threads, clock, label) in [
        (1, Clock::Wall, "one_thread"),
        (2, Clock::Wall, "two_threads_wall"),
        (2, Clock::Cpu, "two_threads_cpu"),
    ] {
        group.bench_function(format!("{name}/{label}"), |b| {
            b.iter_custom(|iters| run_on_threads(threads, iters, clock, record))
        });
    }
}

fn bench_recorder(c: &mut Criterion) {
    let latencies = latencies();
    let latency = |i: u64| latencies[(i % 1024) as usize];
    let mut group = c.benchmark_group("record");

    let sharded = recorder();
    on_threads(&mut group, "sharded", &|i| {
        sharded.record(
            Arm::Candidate,
            Outcome::Success,
            black_box(latency(i)),
            120,
            2_048,
        );
    });

    let routed = recorder();
    on_threads(&mut group, "sharded_with_route", &|i| {
        routed.record_request(
            RequestRecord::new(Arm::Candidate, Outcome::Success, black_box(latency(i)))
                .route(black_box("GET /users/{id}"))
                .bytes(120, 2_048),
        );
    });

    // The replaced design: every record takes the arm's single lock.
    let global = Mutex::new(ArmEvidence::default());
    on_threads(&mut group, "global_mutex", &|i| {
        let mut arm = global.lock().expect("no panics while recording");
        let micros = latency(i).as_micros() as u64;
        arm.record_request(Outcome::Success, black_box(micros));
        arm.request_bytes += 120;
        arm.response_bytes += 2_048;
    });
    group.finish();

    // What a reader pays once per look: folding the shards and building the evidence.
    let mut reads = c.benchmark_group("read");
    reads.bench_function("snapshot", |b| {
        b.iter(|| black_box(sharded.snapshot(Arm::Candidate)))
    });
    reads.finish();
}

fn bench_phase(c: &mut Criterion) {
    // Built started, in Shadowing. Its driver is never run: nothing writes the phase while
    // it is read, so the figures are the reads alone.
    let (rollout, _driver) =
        Rollout::builder(Version::new("bench", "1"), Version::new("bench", "2"))
            .shadow_only()
            .without_process_sampling()
            .build_driven()
            .expect("the default configuration is valid");
    let handle = rollout.handle();
    let watch = handle.watch();
    let mut group = c.benchmark_group("phase");
    on_threads(&mut group, "lock_free", &|_| {
        black_box(black_box(&handle).phase());
    });
    on_threads(&mut group, "watch_borrow", &|_| {
        black_box(black_box(&watch).borrow().phase);
    });
    on_threads(&mut group, "status_copy", &|_| {
        black_box(black_box(&handle).status().phase);
    });
    group.finish();
}

criterion_group!(benches, bench_recorder, bench_phase);
criterion_main!(benches);
