//! The governor's decisions, look by look, and its loop under paused time.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::task::LocalSet;

use super::*;
use crate::mirror::{BodySize, HeaderList, RequestHead};
use crate::model::{Arm, Outcome, Version};
use crate::rollout::Rollout;
use crate::shadow::{AdaptiveShare, OffPeakWindow, ShadowConfig, ShadowResources};

fn percent(value: f64) -> Share {
    Share::from_percent(value).expect("a valid share")
}

/// 2024-01-01T00:00:00Z.
const NEW_YEAR: u64 = 1_704_067_200;

/// Totals after `seconds` of a steady live load: `rps` requests a second, each taking
/// `latency`, on two cores of which the process uses `cpu_cores`.
fn steady(seconds: u64, rps: u64, latency: Duration, cpu_cores: f64) -> Totals {
    let requests = seconds * rps;
    Totals {
        live_timed: requests,
        live_busy_ns: requests * latency.as_nanos() as u64,
        process_cpu_ns: Some((seconds as f64 * cpu_cores * 1e9) as u64),
        ..Totals::default()
    }
}

/// A look one second long from `since` to `now`, at `unix_seconds`.
fn look(since: Totals, now: Totals, unix_seconds: u64) -> Look {
    Look {
        wall: Duration::from_secs(1),
        unix_seconds,
        cores: 2.0,
        now,
        since,
    }
}

/// A pacer with the default adaptive share under a 100% ceiling.
fn adaptive_pacer() -> Pacer {
    let resources = ShadowResources {
        adaptive: Some(AdaptiveShare::default()),
        ..ShadowResources::default()
    };
    Pacer::new(resources, Share::FULL)
}

/// Drives `pacer` through one-second looks in which live does what `load` says at each
/// second, and returns the share and reason after each.
fn drive(
    pacer: &mut Pacer,
    seconds: u64,
    load: impl Fn(u64) -> (Duration, f64),
) -> Vec<(Share, ShareReason)> {
    let mut since = Totals::default();
    let mut now = Totals::default();
    (1..=seconds)
        .map(|second| {
            let (latency, cpu) = load(second);
            let step = steady(1, 1_000, latency, cpu);
            now.live_timed += step.live_timed;
            now.live_busy_ns += step.live_busy_ns;
            now.process_cpu_ns =
                Some(now.process_cpu_ns.unwrap_or(0) + step.process_cpu_ns.unwrap_or(0));
            let paced = pacer.look(&look(since, now, NEW_YEAR + 43_200 + second));
            since = now;
            (paced.share.share, paced.share.reason)
        })
        .collect()
}

#[test]
fn the_adaptive_share_climbs_while_live_has_headroom_and_halves_on_a_latency_rise() {
    let mut pacer = adaptive_pacer();
    assert_eq!(pacer.initial(NEW_YEAR).share.reason, ShareReason::Starting);
    // Ten seconds at 100 µs, then one at 1 ms, then 100 µs again.
    let shares = drive(&mut pacer, 14, |second| {
        let latency = if second == 11 { 1_000 } else { 100 };
        (Duration::from_micros(latency), 0.3)
    });
    // From the 1% floor, 5 points a second.
    assert_eq!(shares[0], (percent(6.0), ShareReason::Headroom));
    assert_eq!(shares[9], (percent(51.0), ShareReason::Headroom));
    // Cut within the interval of the rise.
    assert_eq!(shares[10], (percent(25.5), ShareReason::LiveLatency));
    // And climbing back: the rise did not move the baseline.
    assert_eq!(shares[11], (percent(30.5), ShareReason::Headroom));
    assert_eq!(shares[13], (percent(40.5), ShareReason::Headroom));
}

#[test]
fn a_lasting_rise_that_the_floor_does_not_cure_becomes_the_new_baseline() {
    let mut pacer = adaptive_pacer();
    let shares = drive(&mut pacer, 60, |second| {
        let latency = if second > 5 { 2_000 } else { 100 };
        (Duration::from_micros(latency), 0.3)
    });
    assert!(shares[5].1.is_cut());
    // At the floor, live's latency is live's own: the baseline follows it, and the share
    // climbs again.
    assert_eq!(shares[59].1, ShareReason::Headroom, "{shares:?}");
    assert!(shares[59].0 > percent(1.0));
}

#[test]
fn live_cpu_cuts_the_share_but_the_shadows_own_cpu_does_not() {
    let mut pacer = adaptive_pacer();
    let busy = Totals {
        process_cpu_ns: Some(1_900_000_000),
        ..Totals::default()
    };
    let idle = Totals {
        process_cpu_ns: Some(0),
        ..Totals::default()
    };
    let paced = pacer.look(&look(idle, busy, NEW_YEAR));
    assert_eq!(paced.share.reason, ShareReason::LiveCpu);
    // The same process CPU, of which a core and a half is the shadow's (idle CPU).
    let mut pacer = adaptive_pacer();
    let shadow_busy = Totals {
        shadow_cpu_ns: 1_500_000_000,
        ..busy
    };
    let paced = pacer.look(&look(idle, shadow_busy, NEW_YEAR));
    assert_eq!(paced.share.reason, ShareReason::Headroom);
}

#[test]
fn sheds_beyond_the_tolerance_cut_the_share() {
    let mut pacer = adaptive_pacer();
    let few = Totals {
        offered: 1_000,
        shed: 5,
        ..Totals::default()
    };
    assert_eq!(
        pacer
            .look(&look(Totals::default(), few, NEW_YEAR))
            .share
            .reason,
        ShareReason::Headroom,
        "half a percent is within the tolerance"
    );
    let many = Totals {
        offered: 2_000,
        shed: 100,
        ..Totals::default()
    };
    assert_eq!(
        pacer.look(&look(few, many, NEW_YEAR)).share.reason,
        ShareReason::ShadowSheds
    );
}

#[test]
fn an_off_peak_window_sets_the_share_from_its_first_minute_to_its_end() {
    let window = OffPeakWindow::new(
        "01:00".parse().expect("valid"),
        "05:00".parse().expect("valid"),
        Share::FULL,
    );
    let resources = ShadowResources {
        off_peak: vec![window],
        ..ShadowResources::default()
    };
    let mut pacer = Pacer::new(resources, percent(5.0));
    let at = |hour: u64, minute: u64, second: u64| NEW_YEAR + hour * 3600 + minute * 60 + second;
    let share_at = |pacer: &mut Pacer, unix| {
        let paced = pacer.look(&look(Totals::default(), Totals::default(), unix));
        (paced.share.share, paced.share.reason, paced.share.off_peak)
    };
    assert_eq!(
        share_at(&mut pacer, at(0, 59, 59)),
        (percent(5.0), ShareReason::Configured, false)
    );
    assert_eq!(
        share_at(&mut pacer, at(1, 0, 0)),
        (Share::FULL, ShareReason::OffPeak, true)
    );
    assert_eq!(
        share_at(&mut pacer, at(4, 59, 59)),
        (Share::FULL, ShareReason::OffPeak, true)
    );
    assert_eq!(
        share_at(&mut pacer, at(5, 0, 0)),
        (percent(5.0), ShareReason::Configured, false)
    );
}

#[test]
fn concurrency_follows_the_peak_of_live_and_the_queue_what_can_start_in_time() {
    let resources = ShadowResources {
        budget: crate::shadow::ShadowBudget {
            queue_capacity: 1024,
            concurrency: 64,
            timeout: Duration::from_secs(5),
        },
        ..ShadowResources::default()
    };
    let mut pacer = Pacer::new(resources, Share::FULL);
    let initial = pacer.initial(NEW_YEAR);
    let mut half_twinned =
        Pacer::new(ShadowResources::default(), Share::FULL).with_twin_share(percent(50.0));
    let ten_in_flight = steady(1, 1_000, Duration::from_millis(10), 0.1);
    assert_eq!(
        half_twinned
            .look(&look(Totals::default(), ten_in_flight, NEW_YEAR))
            .concurrency,
        15
    );
    assert_eq!((initial.concurrency, initial.queue_limit), (64, 1024));
    // 1,000 requests a second of 10 ms each: ten in flight, so twenty copies at once (each
    // runs twice, on the twin and the candidate). Copies of 20 ms each: at twenty at once,
    // 100 start in the 100 ms deadline.
    let now = Totals {
        copies_finished: 100,
        copy_wall_ns: 100 * 20_000_000,
        ..steady(1, 1_000, Duration::from_millis(10), 0.1)
    };
    let paced = pacer.look(&look(Totals::default(), now, NEW_YEAR));
    assert_eq!((paced.concurrency, paced.queue_limit), (20, 100));
    assert!((paced.live_concurrency - 10.0).abs() < 1e-9);
    // A quiet second keeps the peak; more than live can use is capped by the budget.
    let quiet = pacer.look(&look(now, now, NEW_YEAR + 1));
    assert_eq!(quiet.concurrency, 20);
    let flood = Totals {
        live_busy_ns: now.live_busy_ns + 500_000_000_000,
        ..now
    };
    assert_eq!(pacer.look(&look(now, flood, NEW_YEAR + 2)).concurrency, 64);
}

#[test]
fn without_following_live_the_budget_holds() {
    let resources = ShadowResources {
        follow_live: false,
        ..ShadowResources::default()
    };
    let budget = resources.budget.clone();
    let mut pacer = Pacer::new(resources, Share::FULL);
    let paced = pacer.look(&look(
        Totals::default(),
        steady(1, 1_000, Duration::from_millis(50), 0.1),
        NEW_YEAR,
    ));
    assert_eq!(
        (paced.concurrency, paced.queue_limit),
        (budget.concurrency, budget.queue_capacity)
    );
}

#[test]
fn the_share_in_force_packs_into_one_word_and_back() {
    let share = ShareInForce {
        share: percent(12.3456),
        ceiling: Share::FULL,
        reason: ShareReason::ShadowSheds,
        off_peak: true,
    };
    let pacing = Pacing::new(share, 3, 7);
    assert_eq!(pacing.share_in_force(), share);
    assert_eq!(pacing.mirror_ppm(), share.share.ppm());
}

/// The world a governor test plays: UTC from a fixed moment on paused tokio time, two
/// cores, and the process's CPU as the test sets it.
struct PlayedWorld {
    origin_unix: u64,
    origin: Instant,
    process_cpu_ns: Arc<AtomicU64>,
}

impl PlayedWorld {
    fn at(origin_unix: u64) -> (Self, Arc<AtomicU64>) {
        let cpu = Arc::new(AtomicU64::new(0));
        let world = Self {
            origin_unix,
            origin: Instant::now(),
            process_cpu_ns: Arc::clone(&cpu),
        };
        (world, cpu)
    }
}

impl Surroundings for PlayedWorld {
    fn process_cpu(&self) -> Option<Duration> {
        Some(Duration::from_nanos(
            self.process_cpu_ns.load(Ordering::Relaxed),
        ))
    }

    fn unix_seconds(&self) -> u64 {
        self.origin_unix + self.origin.elapsed().as_secs()
    }

    fn cores(&self) -> f64 {
        2.0
    }
}

/// A rollout shadowing with `resources`, its worker not running (what the live path and
/// the governor do is what these tests look at).
fn rollout_with(resources: ShadowResources, base_share: Share) -> Rollout {
    let config = ShadowConfig::new()
        .with_mirror_share(base_share)
        .with_resources(resources);
    let (rollout, _driver, _worker) =
        Rollout::builder(Version::new("t", "1"), Version::new("t", "2"))
            .shadow(config)
            .without_process_sampling()
            .build_with_worker()
            .expect("a valid configuration");
    rollout
}

/// Whether a read routed now is mirrored.
fn mirrored(rollout: &Rollout) -> bool {
    let headers = HeaderList::default();
    let head = RequestHead::new("GET", "/r", &headers);
    rollout
        .shadow_runtime()
        .route(&head, BodySize::Empty)
        .copy
        .is_some()
}

#[tokio::test(start_paused = true)]
async fn under_paused_time_the_share_falls_within_one_interval_of_a_latency_rise_and_climbs_back() {
    LocalSet::new()
        .run_until(async {
            let resources = ShadowResources {
                adaptive: Some(AdaptiveShare::default()),
                ..ShadowResources::default()
            };
            let rollout = rollout_with(resources, Share::FULL);
            let (world, _cpu) = PlayedWorld::at(NEW_YEAR);
            tokio::task::spawn_local(
                rollout
                    .shadow_runtime()
                    .governor()
                    .in_surroundings(world)
                    .run(),
            );
            let recorder = Arc::clone(rollout.recorder());
            let serve = |micros: u64| {
                for _ in 0..100 {
                    recorder.record(
                        Arm::Stable,
                        Outcome::Success,
                        Duration::from_micros(micros),
                        0,
                        0,
                    );
                }
            };
            // Half-way through each interval: the look at its end sees what was served.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for _ in 0..6 {
                serve(100);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let before = rollout.shadow_counts();
            assert_eq!(
                (before.mirror_share, before.share_reason),
                (percent(31.0), ShareReason::Headroom)
            );
            serve(5_000);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let cut = rollout.shadow_counts();
            assert_eq!(
                (cut.mirror_share, cut.share_reason),
                (percent(15.5), ShareReason::LiveLatency),
                "cut at the first look after the rise"
            );
            // The evidence says so too.
            let share = rollout
                .evidence()
                .shadow
                .share
                .expect("the governor looked");
            assert_eq!(share.reason, ShareReason::LiveLatency);
            serve(100);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = rollout.shadow_counts();
            assert_eq!(
                (after.mirror_share, after.share_reason),
                (percent(20.5), ShareReason::Headroom)
            );
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn under_paused_time_an_off_peak_window_switches_the_share_at_its_edges() {
    LocalSet::new()
        .run_until(async {
            let window = OffPeakWindow::new(
                "01:00".parse().expect("valid"),
                "05:00".parse().expect("valid"),
                Share::FULL,
            );
            let resources = ShadowResources {
                off_peak: vec![window],
                interval: Duration::from_secs(10),
                ..ShadowResources::default()
            };
            let rollout = rollout_with(resources, Share::ZERO);
            // 00:59:00 UTC.
            let (world, _cpu) = PlayedWorld::at(NEW_YEAR + 59 * 60);
            tokio::task::spawn_local(
                rollout
                    .shadow_runtime()
                    .governor()
                    .in_surroundings(world)
                    .run(),
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(!mirrored(&rollout), "00:59:05: none of the reads");
            assert_eq!(
                rollout.shadow_counts().share_reason,
                ShareReason::Configured
            );
            // The look at 01:00:00 switches it.
            tokio::time::sleep(Duration::from_secs(56)).await;
            assert!(mirrored(&rollout), "01:00:01: every read");
            let counts = rollout.shadow_counts();
            assert_eq!(
                (counts.mirror_share, counts.share_reason, counts.off_peak),
                (Share::FULL, ShareReason::OffPeak, true)
            );
            // Four hours on, the look at 05:00:00 switches it back.
            tokio::time::sleep(Duration::from_secs(4 * 3600 - 10)).await;
            assert!(mirrored(&rollout), "04:59:51");
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(!mirrored(&rollout), "05:00:01");
            assert!(!rollout.shadow_counts().off_peak);
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn under_paused_time_the_cost_cap_stops_mirroring_for_the_rest_of_the_hour() {
    LocalSet::new()
        .run_until(async {
            let resources = ShadowResources {
                cpu_seconds_per_hour: Some(60.0),
                interval: Duration::from_secs(10),
                ..ShadowResources::default()
            };
            let rollout = rollout_with(resources, Share::FULL);
            // 12:30:00 UTC.
            let (world, _cpu) = PlayedWorld::at(NEW_YEAR + 12 * 3600 + 30 * 60);
            tokio::task::spawn_local(
                rollout
                    .shadow_runtime()
                    .governor()
                    .in_surroundings(world)
                    .run(),
            );
            let shadow_cpu = &rollout.shadow_runtime().shared().stats.shadow_cpu_ns;
            tokio::time::sleep(Duration::from_secs(15)).await;
            assert!(mirrored(&rollout));
            // The shadow has used a minute of CPU by 12:30:20.
            shadow_cpu.store(60_000_000_000, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(10)).await;
            let counts = rollout.shadow_counts();
            assert_eq!(
                (counts.mirror_share, counts.share_reason),
                (Share::ZERO, ShareReason::CostCap)
            );
            assert_eq!(counts.cpu_this_hour_ns, 60_000_000_000);
            assert!(!mirrored(&rollout));
            assert_eq!(rollout.shadow_counts().not_sampled, 1);
            assert_eq!(rollout.evidence().shadow.cost.cpu_ns, 60_000_000_000);
            // Still capped at 12:59:55; the first look of 13:00 lifts it.
            tokio::time::sleep(Duration::from_secs(29 * 60 + 30)).await;
            assert!(!mirrored(&rollout), "12:59:55");
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(mirrored(&rollout), "13:00:05");
            let counts = rollout.shadow_counts();
            assert_eq!(
                (counts.share_reason, counts.cpu_this_hour_ns),
                (ShareReason::Configured, 0)
            );
        })
        .await;
}
