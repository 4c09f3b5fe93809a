//! The worker gives way to live: copies whose wall latency a wait for CPU stretched, and
//! timeouts that count only the time the shadow had the CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::LocalSet;

use crate::adapter::{
    BodySize, ResponseCapture, Runtime, ShadowCall, ShadowReply, ShadowTarget, Tracker,
};
use crate::mirror::{HeaderList, RequestCopy, RequestHead};
use crate::model::{Arm, Version};
use crate::rollout::Rollout;
use crate::shadow::{ShadowBudget, ShadowConfig, ShadowCounts};

/// Both builds answer 200 at once, except the candidate on `/hold`, which answers once
/// the test lets it.
struct Holding(Arc<Notify>);

impl ShadowTarget for Holding {
    fn call(&self, arm: Arm, copy: &RequestCopy, capture: ResponseCapture) -> ShadowCall {
        let hold = arm == Arm::Candidate && copy.target() == "/hold";
        let release = Arc::clone(&self.0);
        Box::pin(async move {
            if hold {
                release.notified().await;
            }
            Ok(ShadowReply {
                response: capture.head(200, &HeaderList::default()),
                latency: Duration::from_millis(1),
            })
        })
    }
}

/// A mirrored read of `path` whose live response is sent whole at once.
fn read(runtime: &Runtime, target: crate::adapter::TargetId, path: &str) {
    let headers = HeaderList::default();
    let head = RequestHead::new("GET", path, &headers);
    let (mut tracker, tee) = Tracker::start(runtime, target, &head, BodySize::Empty);
    assert!(tee.is_none());
    tracker.respond(200, &headers);
    tracker.finish();
}

async fn settle(rollout: &Rollout, done: impl Fn(&ShadowCounts) -> bool) {
    for _ in 0..10_000 {
        if done(&rollout.shadow_counts()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("shadow never settled: {:?}", rollout.shadow_counts());
}

/// A rollout shadowing under `budget`, with the builds of [`Holding`], whose worker runs on
/// the current `LocalSet` with its wait for CPU played by the test; and the handle that
/// lets the held copies answer.
fn holding_shadow(
    budget: ShadowBudget,
) -> (
    Rollout,
    Runtime,
    crate::adapter::TargetId,
    Arc<Notify>,
    Arc<AtomicU64>,
) {
    let (rollout, _driver, worker) =
        Rollout::builder(Version::new("t", "1"), Version::new("t", "2"))
            .shadow(ShadowConfig::new().with_budget(budget))
            .without_process_sampling()
            .build_with_worker()
            .expect("a valid configuration");
    let release = Arc::new(Notify::new());
    let runtime = Runtime::new(&rollout);
    let held = Arc::clone(&release);
    let target = runtime.register(Box::new(move || {
        Box::pin(async move { Ok(Box::new(Holding(held)) as Box<dyn ShadowTarget>) })
    }));
    let waited_ns = Arc::new(AtomicU64::new(0));
    tokio::task::spawn_local(worker.with_scripted_cpu_wait(Arc::clone(&waited_ns)).run());
    (rollout, runtime, target, release, waited_ns)
}

// Paused time: the wait for CPU is played, so real time must not move the test on.
#[tokio::test(start_paused = true)]
async fn a_copy_whose_thread_waited_for_cpu_past_the_deadline_keeps_all_but_its_latency() {
    LocalSet::new()
        .run_until(async {
            let budget = ShadowBudget {
                queue_capacity: 8,
                concurrency: 1,
                timeout: Duration::from_secs(5),
            };
            let (rollout, runtime, target, release, waited_ns) = holding_shadow(budget);
            read(&runtime, target, "/hold");
            settle(&rollout, |c| c.started == 1).await;
            // Queued behind the held copy: waiting for a slot is not waiting for CPU.
            read(&runtime, target, "/r");
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Live takes the CPU for 200 ms, twice the default deadline, while the first
            // copy runs.
            waited_ns.store(200_000_000, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            release.notify_one();
            settle(&rollout, |c| c.compared == 2).await;

            let counts = rollout.shadow_counts();
            assert_eq!(
                (counts.started, counts.starved, counts.in_flight()),
                (2, 1, 0)
            );
            let shadow = rollout.evidence().shadow;
            let pairs = &shadow.pairs.total;
            // Both are pairs, compared and judged on their outcomes; only the second is
            // judged on its latency.
            assert_eq!((pairs.pairs(), pairs.mismatches.compared), (2, 2));
            assert_eq!(pairs.latency.count(), 1);
            assert_eq!(shadow.candidate.latency_us.count(), 1);
            assert_eq!(shadow.candidate.outcomes.success, 2);
            assert_eq!(shadow.cost.starved, 0, "the governor has not looked yet");
            // The first copy is measured (the copies' cost is not known yet), the second
            // may be sampled out.
            let measured = counts.cpu_measured;
            assert!((1..=2).contains(&measured), "{counts:?}");
            if crate::metrics::thread_cpu_time().is_some() {
                assert_eq!(shadow.candidate.cpu_ns.map(|d| d.count()), Some(measured));
                assert_eq!(pairs.cpu.count(), measured);
            }
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_timeout_counts_only_the_time_the_shadow_had_the_cpu_and_ends_at_twice_the_budget() {
    LocalSet::new()
        .run_until(async {
            let budget = ShadowBudget {
                queue_capacity: 8,
                concurrency: 4,
                timeout: Duration::from_secs(1),
            };
            let (rollout, runtime, target, _release, waited_ns) = holding_shadow(budget);
            let started = tokio::time::Instant::now();
            read(&runtime, target, "/hold");
            settle(&rollout, |c| c.started == 1).await;
            // 600 ms of the first second the shadow had no CPU: the build gets them back.
            waited_ns.store(600_000_000, Ordering::Relaxed);
            settle(&rollout, |c| c.timed_out == 1).await;
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(1_600) && took < Duration::from_millis(1_700),
                "{took:?}"
            );
            // However long the wait, a copy ends at twice the timeout.
            let started = tokio::time::Instant::now();
            read(&runtime, target, "/hold");
            settle(&rollout, |c| c.started == 2).await;
            waited_ns.store(60_000_000_000, Ordering::Relaxed);
            settle(&rollout, |c| c.timed_out == 2).await;
            let took = started.elapsed();
            assert!(
                took >= Duration::from_secs(2) && took < Duration::from_millis(2_100),
                "{took:?}"
            );
            assert_eq!(rollout.evidence().shadow.candidate.outcomes.timeout, 2);
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn the_worker_reports_its_cpu_and_live_latency_of_mirrored_reads() {
    LocalSet::new()
        .run_until(async {
            let (rollout, _driver, worker) =
                Rollout::builder(Version::new("t", "1"), Version::new("t", "2"))
                    .without_process_sampling()
                    .build_with_worker()
                    .expect("a valid configuration");
            let runtime = Runtime::new(&rollout);
            let target = runtime.register(Box::new(|| {
                Box::pin(async {
                    Ok(Box::new(Holding(Arc::new(Notify::new()))) as Box<dyn ShadowTarget>)
                })
            }));
            tokio::task::spawn_local(worker.run());
            let headers = HeaderList::default();
            let head = RequestHead::new("GET", "/r", &headers);
            let (mut tracker, _) = Tracker::start(&runtime, target, &head, BodySize::Empty);
            tracker.calling();
            tokio::time::sleep(Duration::from_millis(3)).await;
            tracker.respond(200, &headers);
            tracker.finish();
            settle(&rollout, |c| c.compared == 1).await;
            let stats = &rollout.shadow_runtime().shared().stats;
            assert_eq!(stats.mirrored_live_timed.load(Ordering::Relaxed), 1);
            assert!(stats.mirrored_live_busy_ns.load(Ordering::Relaxed) >= 3_000_000);
            if crate::metrics::thread_cpu_time().is_some() {
                assert!(rollout.shadow_counts().shadow_cpu_ns > 0);
            }
        })
        .await;
}
