//! The measuring side end to end: CPU attribution across polls and threads, the route cap,
//! noise filtering in response comparison, and evidence from every source through serde.
//!
//! No counting allocator is installed in this test binary, so allocations must read as
//! "not measured" here; `evidence_alloc.rs` installs it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use shadowlib::compare::{Comparator, ResponseParts};
use shadowlib::metrics::{KpiRecorder, MeasureExt, RecorderConfig, RequestRecord, thread_cpu_time};
use shadowlib::{
    Arm, Evidence, MetricSource, Moments, OTHER_ROUTES, Outcome, ProcessEvidence, Version,
};

const SLICE: Duration = Duration::from_millis(5);
const SLICES: u32 = 4;
const BUSY: Duration = Duration::from_millis(20);

fn cpu_now() -> Duration {
    thread_cpu_time().expect("the test platform has a thread CPU clock")
}

/// Keeps this thread's CPU busy for `cpu` of CPU time (not wall time, which a loaded
/// machine would stretch with time the thread did not run).
fn busy_for(cpu: Duration) {
    let start = cpu_now();
    while cpu_now() - start < cpu {
        std::hint::spin_loop();
    }
}

/// Returns `Pending` once (asking to be polled again), then `Ready`.
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

/// A request that busy-loops `BUSY` in all, in `SLICES` slices with a yield after each.
async fn busy_request() {
    for _ in 0..SLICES {
        busy_for(SLICE);
        yield_once().await;
    }
}

fn assert_about_busy(cpu: Duration) {
    let (low, high) = (BUSY.mul_f64(0.8), BUSY.mul_f64(1.2));
    assert!(
        cpu >= low && cpu <= high,
        "attributed {cpu:?}, expected {BUSY:?} ± 20%"
    );
}

#[test]
fn busy_request_polled_on_different_threads_is_attributed_its_own_cpu_only() {
    let mut request = Box::pin(busy_request().measured());
    let mut threads_seen = Vec::new();
    let mut usage = None;
    // Poll each slice on a fresh thread, and burn CPU on that thread outside the poll: the
    // request moves between threads on every poll, and must not be charged the other work.
    while usage.is_none() {
        let (done, thread) = std::thread::scope(|s| {
            s.spawn(|| {
                busy_for(Duration::from_millis(10));
                let mut cx = Context::from_waker(Waker::noop());
                let poll = Pin::as_mut(&mut request).poll(&mut cx);
                busy_for(Duration::from_millis(10));
                (poll, std::thread::current().id())
            })
            .join()
            .expect("the polling thread does not panic")
        });
        threads_seen.push(thread);
        if let Poll::Ready(((), measured)) = done {
            usage = Some(measured);
        }
    }
    let usage = usage.expect("loop ends when the request is done");
    threads_seen.dedup();
    assert_eq!(
        threads_seen.len(),
        SLICES as usize + 1,
        "every poll ran on its own thread"
    );
    assert_eq!(usage.polls, u64::from(SLICES) + 1);
    assert_about_busy(usage.cpu_time.expect("the platform has a thread CPU clock"));
    assert_eq!(
        usage.allocations, None,
        "no counting allocator in this binary"
    );
}

#[test]
fn busy_request_on_a_multi_thread_runtime_is_attributed_its_cpu() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime builds");
    let (usage, noise_cpu) = runtime.block_on(async {
        // Other busy requests share the workers, so the measured one is interleaved with
        // them and free to be stolen by the other worker at each yield.
        let neighbours: Vec<_> = (0..2)
            .map(|_| tokio::spawn(busy_request().measured()))
            .collect();
        let ((), usage) = tokio::spawn(busy_request().measured())
            .await
            .expect("the request does not panic");
        let mut neighbours_cpu = Duration::ZERO;
        for neighbour in neighbours {
            let ((), usage) = neighbour.await.expect("the neighbour does not panic");
            neighbours_cpu += usage.cpu_time.expect("the platform has a thread CPU clock");
        }
        (usage, neighbours_cpu)
    });
    assert_about_busy(usage.cpu_time.expect("the platform has a thread CPU clock"));
    // The neighbours were each charged their own slices, not the measured request's.
    assert!(
        noise_cpu >= BUSY * 2 && noise_cpu <= BUSY.mul_f64(2.4),
        "neighbours: {noise_cpu:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn sleeping_request_is_attributed_about_no_cpu() {
    let ((), usage) = tokio::time::sleep(Duration::from_millis(200))
        .measured()
        .await;
    let cpu = usage.cpu_time.expect("the platform has a thread CPU clock");
    assert!(
        cpu < Duration::from_millis(2),
        "a sleeping request used {cpu:?}"
    );
    assert!(usage.polls >= 2, "it was polled before and after the sleep");
}

#[tokio::test(start_paused = true)]
async fn cpu_per_request_reaches_the_evidence_of_its_build() {
    let recorder = KpiRecorder::new(Version::new("svc", "1"), Version::new("svc", "2"));
    let ((), idle) = tokio::time::sleep(Duration::from_millis(50))
        .measured()
        .await;
    let ((), busy) = busy_request().measured().await;
    let latency = Duration::from_millis(50);
    recorder.record_request(RequestRecord::new(Arm::Stable, Outcome::Success, latency).usage(idle));
    recorder
        .record_request(RequestRecord::new(Arm::Candidate, Outcome::Success, latency).usage(busy));

    let stable_cpu = recorder
        .snapshot(Arm::Stable)
        .cpu_ns
        .expect("CPU was recorded");
    let candidate = recorder.snapshot(Arm::Candidate);
    let candidate_cpu = candidate.cpu_ns.as_ref().expect("CPU was recorded");
    assert!(
        stable_cpu.max() < 2_000_000,
        "stable: {} ns",
        stable_cpu.max()
    );
    assert_about_busy(Duration::from_nanos(candidate_cpu.max()));
    assert!(candidate.alloc_bytes.is_none());
    assert!(candidate.to_string().contains("allocations: not measured"));
}

#[test]
fn the_route_past_the_cap_lands_in_the_overflow_bucket() {
    let config = RecorderConfig {
        max_routes: 3,
        ..RecorderConfig::default()
    };
    let recorder =
        KpiRecorder::with_config(Version::new("svc", "1"), Version::new("svc", "2"), &config)
            .expect("a valid config");
    for route in ["GET /a", "GET /b", "GET /c", "GET /d", "GET /a", "GET /e"] {
        recorder.record_request(
            RequestRecord::new(Arm::Candidate, Outcome::Success, Duration::from_millis(1))
                .route(route),
        );
    }
    let routes = recorder.snapshot(Arm::Candidate).routes;
    let names: Vec<&str> = routes.keys().map(String::as_str).collect();
    assert_eq!(names, ["(other routes)", "GET /a", "GET /b", "GET /c"]);
    assert_eq!(OTHER_ROUTES, "(other routes)");
    assert_eq!(routes["GET /a"].outcomes.success, 2);
    // "GET /d" was the (cap+1)-th route; "GET /e" joins it.
    assert_eq!(routes[OTHER_ROUTES].outcomes.success, 2);
    assert_eq!(routes[OTHER_ROUTES].latency_us.count(), 2);
}

fn item(price: u32, generated_at: &str) -> String {
    format!(r#"{{"id": 7, "price": {price}, "generated_at": "{generated_at}"}}"#)
}

#[test]
fn a_timestamp_differs_for_the_twin_too_and_a_changed_price_for_the_candidate_alone() {
    let comparator = Comparator::default();
    // Live, the stable twin and the candidate answered the same read: the timestamp
    // differs in all three, only the candidate changed the price.
    let live = item(10, "2024-05-01T12:00:00.001Z");
    let twin = item(10, "2024-05-01T12:00:00.007Z");
    let candidate = item(12, "2024-05-01T12:00:00.004Z");
    let fields = |other: &str| -> Vec<String> {
        comparator
            .fields(
                &ResponseParts::new(200, live.as_bytes()),
                &ResponseParts::new(200, other.as_bytes()),
            )
            .into_iter()
            .map(|f| f.field)
            .collect()
    };
    assert_eq!(
        fields(&twin),
        ["/generated_at"],
        "noise: two runs of stable differ"
    );
    assert_eq!(fields(&candidate), ["/generated_at", "/price"]);
}

#[tokio::test]
async fn evidence_from_every_source_round_trips_through_serde() {
    let (v1, v2) = (Version::new("svc", "1"), Version::new("svc", "2"));
    let recorder = Arc::new(KpiRecorder::new(v1.clone(), v2.clone()));

    for arm in [Arm::Stable, Arm::Candidate] {
        let ((), usage) = busy_request().measured().await;
        recorder.record_request(
            RequestRecord::new(arm, Outcome::Success, Duration::from_millis(21))
                .route("GET /items/{id}")
                .bytes(0, 64)
                .usage(usage),
        );
        recorder.record_custom(arm, "db_queries", 2.0);
    }

    let sources: [Arc<dyn MetricSource>; 1] = [recorder];
    let mut evidence = Evidence::new(v1, v2);
    for source in &sources {
        source
            .collect(&mut evidence)
            .await
            .expect("sources do not fail");
    }
    let candidate = evidence.canary.total(Arm::Candidate);
    assert_eq!(candidate.requests(), 1);
    assert!(candidate.cpu_ns.is_some());
    assert_eq!(evidence.custom["db_queries"].candidate.mean(), 2.0);
    let route = candidate.routes["GET /items/{id}"].clone();
    assert_eq!(route.outcomes.success, 1);
    // A pair from the shadow, and the process's context, as the rollout adds them.
    let pairs = &mut evidence.shadow.pairs;
    let stats = pairs.routes.entry("GET /items/{id}".into()).or_default();
    stats.outcomes.record(false, false);
    stats.mismatches.record(true, false);
    stats
        .fields
        .entry("/price".into())
        .or_default()
        .candidate_only += 1;
    pairs.route_order.push("GET /items/{id}".into());
    let mut cores = Moments::default();
    cores.add(0.42);
    evidence.process = Some(ProcessEvidence {
        cpu_cores: cores,
        peak_rss_bytes: 64 << 20,
        ..ProcessEvidence::default()
    });

    let json = serde_json::to_string(&evidence).expect("evidence serializes");
    let back: Evidence = serde_json::from_str(&json).expect("evidence deserializes");
    assert_eq!(
        serde_json::to_string(&back).expect("serializes again"),
        json
    );
    assert_eq!(
        back.canary.total(Arm::Candidate).routes["GET /items/{id}"],
        route
    );
    assert_eq!(
        back.shadow.pairs.routes["GET /items/{id}"].fields["/price"].candidate_only,
        1
    );
}
