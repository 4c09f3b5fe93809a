//! The shadow's behaviour, driven through the tracker as an adapter drives it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::LocalSet;

use super::*;
use crate::compare::{CompareResponses, Comparison, ResponseSummary};
use crate::mirror::{ArmOverride, HeaderList, StickyKey};
use crate::model::{Phase, Share, Version};
use crate::rollout::RolloutPolicy;
use crate::shadow::{ShadowBudget, ShadowConfig, Worker, in_shadow};
use crate::steer::{TrafficSteerer, WeightedSteerer};

/// Both builds behave as the copy's target says: on the candidate `/hang` never answers
/// and `/panic` panics, on the stable twin `/twin-panic` panics; `/status/N` answers N,
/// anything else 200. The body is the copy's body; the candidate answers with
/// `content-type` from the copy's `x-content-type` header, the twin with its
/// `content-type` (as live did). The status is 599 outside the shadow scope.
struct TestCandidate;

thread_local! {
    /// The builds in the order their runs began, on this test's thread (the worker runs
    /// on the test's own `LocalSet`).
    static RUN_ORDER: std::cell::RefCell<Vec<Arm>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ShadowTarget for TestCandidate {
    fn call(&self, arm: Arm, copy: &RequestCopy, capture: ResponseCapture) -> ShadowCall {
        let target = copy.target().to_owned();
        let body = copy.body().to_vec();
        let header = match arm {
            Arm::Candidate => "x-content-type",
            Arm::Stable => "content-type",
        };
        let content_type = copy.first(header).map(<[u8]>::to_vec);
        Box::pin(async move {
            RUN_ORDER.with(|order| order.borrow_mut().push(arm));
            match (arm, target.as_str()) {
                (Arm::Candidate, "/hang") => std::future::pending::<()>().await,
                (Arm::Candidate, "/panic") => panic!("candidate bug"),
                (Arm::Stable, "/twin-panic") => panic!("stable bug"),
                _ => {}
            }
            let status = target
                .strip_prefix("/status/")
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let status = if in_shadow() { status } else { 599 };
            let headers = HeaderList(
                content_type
                    .iter()
                    .map(|v| ("content-type", v.as_slice()))
                    .collect(),
            );
            let mut summary = capture.head(status, &headers);
            let mut copied = capture.body();
            copied.push(&body);
            summary.set_body(copied);
            Ok(ShadowReply {
                response: summary,
                latency: Duration::from_millis(1),
            })
        })
    }
}

struct Fixture {
    rollout: Rollout,
    runtime: Runtime,
    target: TargetId,
    steerer: Arc<WeightedSteerer>,
    worker: Option<Worker>,
}

fn fixture(config: ShadowConfig) -> Fixture {
    fixture_with(config, None)
}

fn fixture_with(config: ShadowConfig, arm_override: Option<ArmOverride>) -> Fixture {
    let steerer = Arc::new(WeightedSteerer::new());
    let mut builder = Rollout::builder(Version::new("t", "1"), Version::new("t", "2"))
        .policy(RolloutPolicy::default())
        .steerer(Arc::clone(&steerer))
        .shadow(config)
        .without_process_sampling();
    if let Some(header) = arm_override {
        builder = builder.override_header(header);
    }
    let (rollout, _driver, worker) = builder.build_with_worker().expect("a valid configuration");
    let runtime = Runtime::new(&rollout);
    let target = runtime.register(Box::new(|| {
        Box::pin(async { Ok(Box::new(TestCandidate) as Box<dyn ShadowTarget>) })
    }));
    Fixture {
        rollout,
        runtime,
        target,
        steerer,
        worker: Some(worker),
    }
}

impl Fixture {
    /// Runs the worker on the current `LocalSet`.
    fn start(&mut self) {
        if let Some(worker) = self.worker.take() {
            tokio::task::spawn_local(worker.run());
        }
    }

    fn counts(&self) -> ShadowCounts {
        self.rollout.shadow_counts()
    }

    /// The candidate as the shadow measured it.
    fn candidate(&self) -> crate::evidence::ArmEvidence {
        self.rollout.pairs().snapshot().candidate
    }

    /// Live requests are recorded (as at a canary step) from now on, not only counted.
    fn record_live(&self) {
        let at_step = Phase::Canary { step: 0 };
        crate::metrics::MetricSource::phase_changed(
            &**self.rollout.recorder(),
            at_step,
            Share::ZERO,
        );
    }

    /// One build's live requests recorded so far.
    fn live(&self, arm: Arm) -> crate::evidence::ArmEvidence {
        self.rollout.recorder().snapshot(arm)
    }

    /// A read of `path`, with `headers`, and a body of `body_size`.
    fn read(
        &self,
        path: &str,
        headers: &HeaderList<'_>,
        body: BodySize,
    ) -> (Tracker, Option<BodyTee>) {
        let (mut tracker, tee) = Tracker::start(
            &self.runtime,
            self.target,
            &RequestHead::new("GET", path, headers),
            body,
        );
        // As the adapters do, right before they call the build.
        tracker.calling();
        (tracker, tee)
    }

    /// A mirrored read of `path` with `body`, its copy handed to the shadow, and its live
    /// response answered with `status` and the same body.
    fn mirrored(&self, path: &str, status: u16, body: &[u8]) {
        let headers = HeaderList::default();
        let (mut tracker, tee) = self.read(path, &headers, BodySize::Exact(body.len() as u64));
        let mut tee = tee.expect("a read with a body while shadowing is mirrored");
        assert!(tee.chunk(body));
        tee.end();
        tracker.respond(status, &headers);
        tracker.chunk(body);
        tracker.finish();
    }

    async fn settle(&self, done: impl Fn(&ShadowCounts) -> bool) {
        for _ in 0..10_000 {
            if done(&self.counts()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("shadow never settled: {:?}", self.counts());
    }
}

fn budget(queue_capacity: usize, concurrency: usize) -> ShadowConfig {
    ShadowConfig::new().with_budget(ShadowBudget {
        queue_capacity,
        concurrency,
        timeout: Duration::from_secs(1),
    })
}

#[tokio::test(start_paused = true)]
async fn hung_copies_time_out_and_a_full_queue_drops() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(budget(2, 1));
            f.start();
            let headers = HeaderList::default();
            for _ in 0..5 {
                let (_tracker, _) = f.read("/hang", &headers, BodySize::Empty);
                // Let the worker's next look at the queue pick up the first copy before the
                // next arrives.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            f.settle(|c| c.timed_out == 3).await;
            let counts = f.counts();
            assert_eq!(
                (counts.mirrored, counts.dropped_queue_full, counts.completed),
                (3, 2, 0),
                "one running and two waiting; the rest dropped"
            );
            let candidate = f.candidate();
            assert_eq!(candidate.outcomes.timeout, 3);
            assert_eq!(candidate.outcomes.shed, 2);
            // The twin answered each of them: the pairs stand, failed on the candidate
            // alone, and none is paired for latency.
            let pairs = f.rollout.pairs().snapshot().pairs.total;
            assert_eq!(pairs.pairs(), 3);
            assert_eq!(pairs.outcomes.candidate_only, 3);
            assert_eq!((pairs.latency.count(), pairs.incomplete()), (0, 3));
        })
        .await;
}

#[tokio::test]
async fn a_pair_survives_a_panic_of_the_twin() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(budget(8, 1));
            f.start();
            f.mirrored("/twin-panic", 200, b"x");
            f.settle(|c| c.compared == 1).await;
            let shadow = f.rollout.pairs().snapshot();
            let pairs = &shadow.pairs.total;
            assert_eq!((pairs.pairs(), pairs.outcomes.twin_only), (1, 1));
            assert_eq!(pairs.latency.count(), 0, "one side did not answer");
            assert_eq!(
                pairs.mismatches.compared, 0,
                "without the twin's answer there is no noise to net out"
            );
            assert_eq!(shadow.twin.outcomes.panic, 1);
            assert_eq!(shadow.candidate.outcomes.success, 1);
        })
        .await;
}

#[tokio::test]
async fn both_builds_run_every_copy_in_either_order() {
    LocalSet::new()
        .run_until(async {
            // One copy at a time, so that each copy's two runs are next to each other.
            let mut f = fixture(budget(256, 1));
            f.start();
            for _ in 0..200 {
                f.mirrored("/r", 200, b"x");
            }
            f.settle(|c| c.compared == 200).await;
            let order = RUN_ORDER.with(|order| order.take());
            assert_eq!(order.len(), 400);
            let twin_first = order
                .chunks(2)
                .filter(|runs| {
                    assert_ne!(runs[0], runs[1], "each copy runs on both builds");
                    runs[0] == Arm::Stable
                })
                .count();
            // A fair coin per copy: 100 ± 7; outside 50..150 once in about 10^12 runs.
            assert!(
                (50..150).contains(&twin_first),
                "twin first {twin_first} of 200"
            );
            let counts = f.counts();
            assert_eq!((counts.paired, counts.mismatched), (200, 0));
            let pairs = f.rollout.pairs().snapshot().pairs.total;
            assert_eq!((pairs.pairs(), pairs.latency.count()), (200, 200));
            assert_eq!(pairs.mismatches.compared, 200);
        })
        .await;
}

#[tokio::test]
async fn without_the_twin_a_read_is_compared_and_never_paired() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new().with_twin_share(Share::ZERO));
            f.start();
            f.mirrored("/r", 200, b"x");
            f.settle(|c| c.compared == 1).await;
            assert_eq!(f.counts().paired, 0);
            let shadow = f.rollout.pairs().snapshot();
            assert_eq!((shadow.unpaired, shadow.pairs.total.pairs()), (1, 0));
            assert_eq!(shadow.twin.requests(), 0);
        })
        .await;
}

#[tokio::test]
async fn panics_are_recorded_and_the_worker_survives() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(budget(8, 1));
            f.start();
            f.mirrored("/panic", 200, b"");
            f.mirrored("/fine", 200, b"x");
            f.settle(|c| c.panicked == 1 && c.completed == 1).await;
            assert_eq!(f.candidate().outcomes.panic, 1);
        })
        .await;
}

#[tokio::test]
async fn copies_run_inside_the_shadow_scope_and_are_compared() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new());
            f.start();
            let headers = HeaderList(vec![
                ("content-type", b"text/plain".as_slice()),
                ("x-content-type", b"text/html".as_slice()),
            ]);
            let (mut tracker, tee) = f.read("/r", &headers, BodySize::Exact(5));
            let mut tee = tee.expect("mirrored");
            assert!(tee.chunk(b"hello"));
            tee.end();
            tracker.respond(200, &headers);
            tracker.chunk(b"hello");
            tracker.finish();
            f.settle(|c| c.compared == 1).await;
            assert_eq!(f.counts().mismatched, 1, "content-type differs");
            let pairs = f.rollout.evidence().shadow.pairs;
            let route = &pairs.routes["GET /r"];
            assert_eq!(route.mismatches.candidate_only, 1);
            assert_eq!(route.fields["header:content-type"].candidate_only, 1);
            let candidate = f.candidate();
            assert_eq!(
                (
                    candidate.outcomes.success,
                    candidate.request_bytes,
                    candidate.response_bytes
                ),
                (1, 5, 5)
            );
            assert_eq!(pairs.total.pairs(), 1);
        })
        .await;
}

#[tokio::test]
async fn copies_reuse_their_slots_and_never_mix_two_reads() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(budget(64, 4));
            f.start();
            // More reads than the pool keeps, each with its own status and body, compared
            // with a live response that matches only when the copy went to the right pair.
            for round in 0..300_u16 {
                let status = 200 + round % 50;
                f.mirrored(
                    &format!("/status/{status}"),
                    status,
                    round.to_string().as_bytes(),
                );
                // Let the worker take the queue (capacity 64) before it fills.
                if round % 32 == 31 {
                    f.settle(|c| c.completed == u64::from(round) + 1).await;
                }
            }
            f.settle(|c| c.compared == 300).await;
            let counts = f.counts();
            assert_eq!((counts.mismatched, counts.comparison_missed), (0, 0));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_from_many_threads_never_mix_two_reads() {
    // Shadow responses wait for live ones that a yield, or a descheduled thread on a loaded
    // machine, holds back for real time: the wait is bounded far beyond any stall, so a
    // missed comparison is a fault, not the machine's speed.
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new().with_budget(ShadowBudget {
                queue_capacity: 4096,
                concurrency: 8,
                timeout: Duration::from_secs(60),
            }));
            f.start();
            let (runtime, target) = (f.runtime.clone(), f.target);
            let tasks: Vec<_> = (0..4_u16)
                .map(|thread| {
                    let runtime = runtime.clone();
                    tokio::spawn(async move {
                        for round in 0..400_u16 {
                            let status = 200 + (thread * 400 + round) % 300;
                            let path = format!("/status/{status}");
                            let body = format!("{thread}-{round}");
                            let headers = HeaderList::default();
                            let size = BodySize::Exact(body.len() as u64);
                            let (mut tracker, tee) = {
                                let head = RequestHead::new("GET", &path, &headers);
                                Tracker::start(&runtime, target, &head, size)
                            };
                            let mut tee = tee.expect("mirrored");
                            assert!(tee.chunk(body.as_bytes()));
                            tee.end();
                            tracker.respond(status, &headers);
                            // Some live responses end after their copy has run.
                            if round % 3 == 0 {
                                tokio::task::yield_now().await;
                            }
                            tracker.chunk(body.as_bytes());
                            tracker.finish();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("no panic");
            }
            let queued = f.counts().mirrored;
            f.settle(|c| c.compared + c.comparison_missed == queued)
                .await;
            let counts = f.counts();
            assert_eq!(counts.mismatched, 0, "{counts:?}");
            assert_eq!(counts.comparison_missed, 0, "{counts:?}");
        })
        .await;
}

// Paused time: the first shadow response waits for its live one for the budget's second,
// which a descheduled test thread could otherwise use up in real time.
#[tokio::test(start_paused = true)]
async fn a_shadow_waiting_for_its_live_response_does_not_hold_a_copy_slot() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(budget(8, 1));
            f.start();
            let headers = HeaderList::default();
            let (mut first, _) = f.read("/r", &headers, BodySize::Empty);
            first.respond(200, &headers);
            f.settle(|c| c.completed == 1).await;

            // With one copy at a time, the second runs while the first waits for live.
            let (mut second, _) = f.read("/r", &headers, BodySize::Empty);
            second.respond(200, &headers);
            second.finish();
            f.settle(|c| c.compared == 1).await;

            first.finish();
            f.settle(|c| c.compared == 2).await;
            assert_eq!(f.counts().comparison_missed, 0);
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_live_response_that_is_never_sent_whole_is_counted_but_not_compared() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new());
            f.start();
            f.record_live();
            let headers = HeaderList::default();
            let (mut tracker, _) = f.read("/r", &headers, BodySize::Empty);
            tracker.respond(200, &headers);
            tracker.chunk(b"part");
            drop(tracker);
            f.settle(|c| c.comparison_missed == 1).await;
            assert_eq!(f.counts().compared, 0);
            // A mirrored read paid for its copy: counted, and kept out of the canary's
            // live comparison.
            assert_eq!(f.rollout.evidence().live_requests, 1);
            assert_eq!(f.live(Arm::Stable).requests(), 0);
        })
        .await;
}

#[tokio::test]
async fn in_the_canary_only_a_share_of_stable_reads_is_mirrored() {
    let f = fixture(ShadowConfig::new());
    f.rollout.handle().step_up("test").expect("steps up");
    f.steerer.set_share(Share::ZERO);
    let headers = HeaderList::default();
    for _ in 0..1_000 {
        let (mut tracker, _) = f.read("/r", &headers, BodySize::Empty);
        tracker.respond(200, &headers);
        tracker.finish();
    }
    let counts = f.counts();
    let mirrored = counts.mirrored + counts.dropped_queue_full;
    // Half by default: 500 ± 16; outside 400..600 once in about 10^10 runs.
    assert!(
        (400..600).contains(&mirrored),
        "{mirrored} of 1000 mirrored"
    );
    let stable = f.live(Arm::Stable);
    assert_eq!(
        stable.requests(),
        1_000 - mirrored,
        "the unmirrored reads are the canary's"
    );
    assert_eq!(stable.routes["GET /r"].outcomes.success, stable.requests());
}

#[tokio::test]
async fn a_finished_response_is_recorded_with_its_bytes() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new().with_mirror_share(Share::ZERO));
            f.start();
            f.record_live();
            let headers = HeaderList::default();
            let (mut tracker, tee) = f.read("/r", &headers, BodySize::Exact(7));
            assert!(tee.is_none(), "not mirrored");
            tracker.respond(200, &headers);
            tracker.chunk(b"pay");
            tracker.chunk(b"load");
            tracker.finish();
            let stable = f.live(Arm::Stable);
            assert_eq!(
                (
                    stable.outcomes.success,
                    stable.request_bytes,
                    stable.response_bytes
                ),
                (1, 7, 7)
            );
        })
        .await;
}

#[tokio::test]
async fn a_request_whose_build_call_was_never_marked_is_counted_without_a_latency() {
    let f = fixture(ShadowConfig::new().with_mirror_share(Share::ZERO));
    f.record_live();
    let headers = HeaderList::default();
    let (mut tracker, _) = Tracker::start(
        &f.runtime,
        f.target,
        &RequestHead::new("GET", "/r", &headers),
        BodySize::Empty,
    );
    tracker.respond(200, &headers);
    tracker.finish();
    let stable = f.live(Arm::Stable);
    assert_eq!(f.rollout.recorder().live_requests(), 1, "counted");
    assert_eq!(
        stable.requests(),
        0,
        "no latency was measured, so none is recorded"
    );
}

#[tokio::test]
async fn failures_and_panics_are_recorded_as_their_class() {
    let f = fixture(ShadowConfig::new());
    f.steerer.set_share(Share::FULL);
    f.record_live();
    let headers = HeaderList::default();
    let (tracker, _) = f.read("/r", &headers, BodySize::Empty);
    assert_eq!(tracker.arm(), Arm::Candidate);
    tracker.fail(503);
    let (mut tracker, _) = f.read("/r", &headers, BodySize::Empty);
    tracker.respond(404, &headers);
    drop(tracker);
    let (tracker, _) = f.read("/r", &headers, BodySize::Empty);
    tracker.panicked(&"candidate bug");
    let candidate = f.live(Arm::Candidate);
    assert_eq!(
        (
            candidate.outcomes.server_error,
            candidate.outcomes.client_error,
            candidate.outcomes.panic
        ),
        (1, 1, 1)
    );
    assert_eq!(f.counts().canary_panics, 1);
}

#[tokio::test]
async fn a_request_abandoned_before_its_response_is_not_recorded() {
    let f = fixture(ShadowConfig::new());
    f.record_live();
    let headers = HeaderList::default();
    drop(f.read("/r", &headers, BodySize::Empty));
    assert_eq!(f.live(Arm::Stable).requests(), 0);
    assert_eq!(f.rollout.evidence().live_requests, 0);
}

#[tokio::test]
async fn the_mirror_share_decides_how_many_reads_are_copied() {
    let headers = HeaderList::default();
    let mirrored = |share: Share| {
        let f = fixture(ShadowConfig::new().with_mirror_share(share));
        for _ in 0..10_000 {
            drop(f.read("/r", &headers, BodySize::Empty));
        }
        // With no worker running, copies past the queue's capacity are dropped: copied all
        // the same.
        let counts = f.counts();
        let copied = counts.mirrored + counts.dropped_queue_full;
        assert_eq!(counts.not_sampled + copied, 10_000, "{counts:?}");
        copied
    };
    assert_eq!(mirrored(Share::FULL), 10_000);
    assert_eq!(mirrored(Share::ZERO), 0);
    // Binomial(10,000, 0.25): the standard deviation is 43, so this is ±11σ.
    let quarter = mirrored(Share::from_percent(25.0).expect("valid share"));
    assert!((2_000..=3_000).contains(&quarter), "{quarter} of 10,000");
}

#[tokio::test]
async fn head_responses_are_compared_without_bodies() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new());
            f.start();
            let headers = HeaderList::default();
            let head = RequestHead::new("HEAD", "/r", &headers);
            // The candidate echoes the copy's body, so its response to HEAD has one.
            let (mut tracker, tee) =
                Tracker::start(&f.runtime, f.target, &head, BodySize::Exact(34));
            let mut tee = tee.expect("HEAD is a read");
            assert!(tee.chunk(b"a body the live server never sends"));
            tee.end();
            // Servers drop a HEAD response's body unread: the live side ends at its head.
            tracker.respond(200, &headers);
            drop(tracker);
            f.settle(|c| c.compared == 1).await;
            let counts = f.counts();
            assert_eq!(
                (counts.mismatched, counts.comparison_missed),
                (0, 0),
                "{counts:?}"
            );
        })
        .await;
}

struct PanickingComparator;

impl CompareResponses for PanickingComparator {
    fn compare(&self, _: &str, _: &ResponseSummary, _: &ResponseSummary) -> Comparison {
        panic!("comparator bug")
    }
}

#[tokio::test]
async fn a_panicking_comparator_does_not_stop_the_worker() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new().with_comparator(PanickingComparator));
            f.start();
            for expected in 1..=2 {
                f.mirrored("/r", 200, b"x");
                f.settle(|c| c.comparison_missed == expected).await;
            }
            assert_eq!(f.counts().completed, 2);
        })
        .await;
}

struct NeverComparable;

impl CompareResponses for NeverComparable {
    fn compare(&self, _: &str, _: &ResponseSummary, _: &ResponseSummary) -> Comparison {
        Comparison::not_comparable("shadow state ahead of live")
    }
}

#[tokio::test]
async fn pairs_judged_not_comparable_are_neither_matches_nor_mismatches() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new().with_comparator(NeverComparable));
            f.start();
            f.mirrored("/status/500", 200, b"x");
            f.settle(|c| c.not_comparable == 1).await;
            let counts = f.counts();
            assert_eq!((counts.compared, counts.mismatched), (0, 0));
            let pairs = f.rollout.evidence().shadow.pairs.total;
            assert_eq!((pairs.pairs(), pairs.mismatches.compared), (1, 0));
        })
        .await;
}

#[tokio::test]
async fn unread_and_oversize_bodies_are_counted() {
    let f = fixture(ShadowConfig::new().with_body_limit(10));
    let headers = HeaderList::default();
    let (_tracker, tee) = f.read("/r", &headers, BodySize::AtLeast(0));
    drop(tee.expect("may fit"));
    let (_tracker, tee) = f.read("/r", &headers, BodySize::Exact(11));
    assert!(tee.is_none(), "announced larger than the limit");
    let (_tracker, tee) = f.read("/r", &headers, BodySize::AtLeast(10));
    let mut tee = tee.expect("may still fit");
    assert!(tee.chunk(&[0; 10]));
    assert!(!tee.chunk(&[0; 1]), "one byte over the limit");
    tee.end();
    let counts = f.counts();
    assert_eq!(
        (
            counts.skipped_unread_body,
            counts.skipped_oversize,
            counts.mirrored
        ),
        (1, 2, 0)
    );
}

#[tokio::test]
async fn writes_candidates_and_finished_rollouts_are_never_mirrored() {
    let header = ArmOverride::signed("x-arm", [9u8; 32]).expect("a long secret");
    let pin = header
        .sign(
            Arm::Candidate,
            &Version::new("t", "2"),
            std::time::SystemTime::now() + Duration::from_secs(60),
        )
        .expect("signs");
    let f = fixture_with(ShadowConfig::new(), Some(header));
    let none = HeaderList::default();
    let (tracker, _) = Tracker::start(
        &f.runtime,
        f.target,
        &RequestHead::new("DELETE", "/r", &none),
        BodySize::Empty,
    );
    assert_eq!(tracker.arm(), Arm::Stable);
    drop(tracker);
    assert_eq!(f.counts().not_read, 1);

    let forced = HeaderList(vec![("x-arm", pin.as_bytes())]);
    let (tracker, _) = f.read("/r", &forced, BodySize::Empty);
    assert_eq!(tracker.arm(), Arm::Candidate);
    drop(tracker);
    assert_eq!(
        f.counts().mirrored,
        0,
        "requests served by the candidate are not copied to it"
    );

    f.steerer.set_share(Share::FULL);
    assert_eq!(f.read("/r", &none, BodySize::Empty).0.arm(), Arm::Candidate);

    f.rollout
        .handle()
        .abort("test")
        .expect("live rollouts abort");
    assert_eq!(f.rollout.phase(), Phase::RolledBack);
    let (tracker, _) = f.read("/r", &forced, BodySize::Empty);
    assert_eq!(
        tracker.arm(),
        Arm::Stable,
        "the override is ignored after a rollback"
    );
    drop(tracker);
    let counts = f.counts();
    assert_eq!(counts.mirrored, 0, "nothing is mirrored after a rollback");
    assert_eq!(counts.overridden, 1);
}

#[tokio::test]
async fn sticky_keys_pick_consistently() {
    let f =
        fixture(ShadowConfig::new().with_sticky_key(StickyKey::header("x-user").expect("valid")));
    f.steerer
        .set_share(Share::from_percent(50.0).expect("valid"));
    for user in 0..50 {
        let id = user.to_string();
        let headers = HeaderList(vec![("x-user", id.as_bytes())]);
        let expected = f.steerer.pick(Some(id.as_bytes()));
        for _ in 0..3 {
            assert_eq!(f.read("/r", &headers, BodySize::Empty).0.arm(), expected);
        }
    }
}

#[tokio::test]
async fn the_worker_ends_when_every_handle_is_dropped() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new());
            let worker = f.worker.take().expect("not started");
            let worker = tokio::task::spawn_local(worker.run());
            drop(f);
            tokio::time::timeout(Duration::from_secs(5), worker)
                .await
                .expect("worker ended")
                .expect("worker did not panic");
        })
        .await;
}

#[tokio::test]
async fn a_target_that_cannot_be_built_rolls_the_rollout_back() {
    LocalSet::new()
        .run_until(async {
            let mut f = fixture(ShadowConfig::new());
            let broken = f.runtime.register(Box::new(|| {
                Box::pin(async { Err("the app's data factory failed".to_owned()) })
            }));
            f.start();
            let headers = HeaderList::default();
            let (mut tracker, _) = Tracker::start(
                &f.runtime,
                broken,
                &RequestHead::new("GET", "/r", &headers),
                BodySize::Empty,
            );
            tracker.respond(200, &headers);
            tracker.finish();
            f.settle(|c| c.failed == 1).await;
            assert_eq!(f.rollout.phase(), Phase::RolledBack);
            let reasons = f
                .rollout
                .status()
                .last_decision
                .expect("a decision")
                .to_string();
            assert!(reasons.contains("data factory failed"), "{reasons}");
        })
        .await;
}

/// A stateful service: a counter, kept current in the shadow by deltas.
#[cfg(feature = "delta")]
mod stateful {
    use super::*;
    use crate::delta::{DeltaBus, LiveState, ShadowState, StalenessBound, StateDelta};

    /// The state of its own this test plugs through the builder.
    #[derive(Debug, Default)]
    struct Counter(u64);

    #[derive(Debug, thiserror::Error)]
    #[error("the counter would overflow")]
    struct Overflow;

    impl StateDelta for Counter {
        type Delta = u64;
        type Snapshot = u64;
        type Error = Overflow;

        fn apply(&mut self, by: &u64) -> Result<(), Overflow> {
            self.0 = self.0.checked_add(*by).ok_or(Overflow)?;
            Ok(())
        }

        fn snapshot(&self) -> u64 {
            self.0
        }

        fn restore(&mut self, snapshot: u64) {
            self.0 = snapshot;
        }
    }

    /// The candidate answers with the counter as the shadow's state has it.
    struct CountingCandidate(ShadowState<Counter>);

    impl ShadowTarget for CountingCandidate {
        fn call(&self, _arm: Arm, _copy: &RequestCopy, capture: ResponseCapture) -> ShadowCall {
            let shadow = self.0.clone();
            // Read when the call runs, as a handler would, once the shadow has caught up.
            Box::pin(async move {
                let value = shadow.read(|counter| counter.0).to_string();
                let mut summary = capture.head(200, &HeaderList::default());
                let mut body = capture.body();
                body.push(value.as_bytes());
                summary.set_body(body);
                Ok(ShadowReply {
                    response: summary,
                    latency: Duration::from_millis(1),
                })
            })
        }
    }

    struct Fixture {
        rollout: Rollout,
        runtime: Runtime,
        target: TargetId,
        live: LiveState<Counter>,
        worker: Option<Worker>,
    }

    fn fixture() -> Fixture {
        let bus = DeltaBus::<Counter>::in_process(64).expect("a valid buffer");
        let live = bus.live(Counter::default()).start().expect("starts");
        let shadow = bus.follow(Counter::default()).expect("follows");
        let (rollout, _driver, worker) =
            Rollout::builder(Version::new("t", "1"), Version::new("t", "2"))
                .state_delta(&live, &shadow, StalenessBound::default())
                .without_process_sampling()
                .build_with_worker()
                .expect("a valid configuration");
        let runtime = Runtime::new(&rollout);
        let target = runtime.register(Box::new(move || {
            Box::pin(
                async move { Ok(Box::new(CountingCandidate(shadow)) as Box<dyn ShadowTarget>) },
            )
        }));
        Fixture {
            rollout,
            runtime,
            target,
            live,
            worker: Some(worker),
        }
    }

    impl Fixture {
        /// A mirrored read live answers with its counter, with `meanwhile` committed while
        /// live serves it.
        fn read(&self, meanwhile: Option<u64>) {
            let headers = HeaderList::default();
            let head = RequestHead::new("GET", "/count", &headers);
            let (mut tracker, _) =
                Tracker::start(&self.runtime, self.target, &head, BodySize::Empty);
            let answer = self.live.read(|counter| counter.0).to_string();
            if let Some(by) = meanwhile {
                self.live.commit(by).expect("no overflow");
            }
            tracker.respond(200, &headers);
            tracker.chunk(answer.as_bytes());
            tracker.finish();
        }

        async fn settle(&self, done: impl Fn(&ShadowCounts) -> bool) {
            for _ in 0..10_000 {
                if done(&self.rollout.shadow_counts()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("shadow never settled: {:?}", self.rollout.shadow_counts());
        }
    }

    #[tokio::test]
    async fn reads_are_compared_only_when_the_shadow_served_the_state_live_did() {
        LocalSet::new()
            .run_until(async {
                let mut f = fixture();
                tokio::task::spawn_local(f.worker.take().expect("unstarted").run());
                f.live.commit(5).expect("no overflow");
                // The shadow catches up before the candidate serves the copy.
                f.read(None);
                f.settle(|c| c.compared == 1).await;
                assert_eq!(f.rollout.shadow_counts().mismatched, 0);

                // A write while live serves the read: live's answer belongs to neither
                // state the shadow could stand at, so the pair is not compared.
                f.read(Some(1));
                f.settle(|c| c.not_comparable == 1).await;
                let counts = f.rollout.shadow_counts();
                assert_eq!((counts.compared, counts.mismatched), (1, 0));

                // And once the state is still again, reads compare again.
                f.read(None);
                f.settle(|c| c.compared == 2).await;
                assert_eq!(f.rollout.shadow_counts().mismatched, 0);
            })
            .await;
    }
}
