//! Delta synchronization end to end: a live publisher, a lossy or slow path, and a shadow
//! that must always converge to the live state.
//!
//! Every test runs on a current-thread runtime with paused time: the follower only runs
//! when the test yields, which makes "a subscriber stalls" a matter of not yielding, and
//! heartbeats and retries fire as soon as everything is idle.

use std::collections::HashMap;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use shadowlib::delta::{
    AppendLog, BusError, Coalescing, DeltaBus, Epoch, Frame, Freshness, InProcess,
    InProcessSubscription, KeyValueMap, KvDelta, LiveState, Position, ShadowState, SnapshotSource,
    StalenessBound, Transport, TransportError,
};
use shadowlib::{Evidence, MetricSource, StateDelta, Version};

type Map = KeyValueMap<u8, u16>;

const HEARTBEAT: Duration = Duration::from_millis(100);
/// Long enough for any resync and heartbeat in paused time; a test waiting this long has
/// found a shadow that never converges.
const SETTLE: Duration = Duration::from_secs(60);

/// The in-process transport, except that it loses or truncates the delta frames it is
/// told to (a lossy broker). Heartbeats always get through.
struct Lossy {
    inner: InProcess,
    to_lose: AtomicU64,
    lost: AtomicU64,
    to_truncate: AtomicU64,
}

impl Lossy {
    fn new(subscriber_buffer: usize) -> Self {
        Self {
            inner: InProcess::new(subscriber_buffer).expect("valid buffer"),
            to_lose: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            to_truncate: AtomicU64::new(0),
        }
    }

    fn truncate_next_frame(&self) {
        self.to_truncate.fetch_add(1, Ordering::SeqCst);
    }

    fn lose_next_frame(&self) {
        self.to_lose.fetch_add(1, Ordering::SeqCst);
    }

    fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }
}

fn carries_deltas(frame: &Frame) -> bool {
    let header = postcard::take_from_bytes::<(u64, u64, u64)>(&frame.bytes);
    header.is_ok_and(|((_, _, count), _)| count > 0)
}

impl Transport for Lossy {
    type Subscription = InProcessSubscription;

    fn publish(&self, mut frame: Frame) {
        let take = |counter: &AtomicU64| {
            counter
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if carries_deltas(&frame) && take(&self.to_lose) {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if carries_deltas(&frame) && take(&self.to_truncate) {
            frame.bytes.truncate(frame.bytes.len() - 1);
        }
        self.inner.publish(frame);
    }

    fn subscribe(&self) -> InProcessSubscription {
        self.inner.subscribe()
    }

    fn serve_snapshots(&self, source: Weak<dyn SnapshotSource>) {
        self.inner.serve_snapshots(source);
    }

    async fn request_snapshot(&self) -> Result<Bytes, TransportError> {
        self.inner.request_snapshot().await
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds")
}

/// Lets the follower run for a few turns.
async fn let_follower_run() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// Lets the follower take its first snapshot, so every later loss happens to a follower
/// that was in sync (a loss before it would be covered by the first snapshot).
async fn initial_sync(shadow: &ShadowState<Map>) {
    let_follower_run().await;
    assert!(
        shadow.position().is_some(),
        "the first snapshot is taken at once"
    );
}

fn start_live<T: Transport>(bus: &DeltaBus<Map, T>, state: Map, epoch: u64) -> LiveState<Map, T> {
    bus.live(state)
        .epoch(Epoch::new(epoch))
        .heartbeat(HEARTBEAT)
        .start()
        .expect("started within a runtime")
}

/// Waits for the shadow to reach everything live committed, and checks the states match.
async fn assert_converged<T: Transport>(live: &LiveState<Map, T>, shadow: &ShadowState<Map>) {
    live.flush();
    assert!(
        shadow.reach(live.position(), SETTLE).await,
        "shadow stuck at {:?}, live at {}",
        shadow.position(),
        live.position()
    );
    assert_eq!(
        shadow.read(StateDelta::snapshot),
        live.read(StateDelta::snapshot)
    );
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16),
    Remove(u8),
    Clear,
    /// The follower gets to run.
    Yield,
    /// Many writes while the follower is stalled.
    Burst(u8),
    /// The transport loses the next delta frame.
    LoseNext,
    /// The publisher restarts with the state it had (reloaded from storage).
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..32u8, any::<u16>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0..32u8).prop_map(Op::Remove),
        1 => Just(Op::Clear),
        6 => Just(Op::Yield),
        1 => (1..64u8).prop_map(Op::Burst),
        1 => Just(Op::LoseNext),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random interleavings of writes, stalls, lost frames and restarts: once things are
    /// quiet the shadow equals live every time, and its position never goes backwards.
    #[test]
    fn the_shadow_converges_under_any_interleaving(ops in prop::collection::vec(op(), 1..150)) {
        paused_runtime().block_on(async {
            // A small buffer, so bursts overflow it.
            let bus = DeltaBus::<Map, _>::new(Lossy::new(16));
            let shadow = bus.follow(Map::new()).expect("within a runtime");
            let mut epoch = 1;
            let mut live = start_live(&bus, Map::new(), epoch);
            initial_sync(&shadow).await;
            let mut seen: Vec<Position> = Vec::new();
            for op in ops {
                match op {
                    Op::Put(key, value) => { live.commit(KvDelta::put(key, value)).expect("commits"); }
                    Op::Remove(key) => { live.commit(KvDelta::remove(key)).expect("commits"); }
                    Op::Clear => { live.commit(KvDelta::Clear).expect("commits"); }
                    Op::Yield => let_follower_run().await,
                    Op::Burst(writes) => for i in 0..writes {
                        live.commit(KvDelta::put(i % 32, u16::from(i))).expect("commits");
                    },
                    Op::LoseNext => bus.transport().lose_next_frame(),
                    Op::Restart => {
                        let reloaded = live.read(Clone::clone);
                        drop(live);
                        epoch += 1;
                        live = start_live(&bus, reloaded, epoch);
                    }
                }
                if let Some(at) = shadow.position() {
                    if let Some(last) = seen.last() {
                        prop_assert!(at.epoch.get() >= last.epoch.get(), "went back to an old epoch: {at} after {last}");
                        prop_assert!(at.epoch != last.epoch || at.sequence >= last.sequence, "sequence went backwards: {at} after {last}");
                    }
                    seen.push(at);
                } else {
                    prop_assert!(seen.is_empty(), "lost its position after having one");
                }
            }
            assert_converged(&live, &shadow).await;
            let stats = shadow.stats();
            let lost = bus.transport().lost();
            prop_assert!(stats.resyncs.gap <= lost, "{} gap resyncs for {lost} lost frames", stats.resyncs.gap);
            if lost > 0 {
                prop_assert!(stats.resyncs.recoveries() >= 1, "lost frames went unnoticed");
            }
            prop_assert_eq!(stats.resyncs.initial, 1);
            Ok(())
        })?;
    }

    /// One lost frame anywhere in a stream the shadow otherwise keeps up with: exactly one
    /// resync, for a gap — even when the lost frame is the last one.
    #[test]
    fn a_lost_frame_triggers_exactly_one_resync(
        yields in prop::collection::vec(any::<bool>(), 1..100),
        lost_at in any::<prop::sample::Index>(),
    ) {
        paused_runtime().block_on(async {
            let bus = DeltaBus::<Map, _>::new(Lossy::new(1024));
            let shadow = bus.follow(Map::new()).expect("within a runtime");
            let live = start_live(&bus, Map::new(), 1);
            initial_sync(&shadow).await;
            let lost_at = lost_at.index(yields.len());
            for (i, yield_after) in yields.iter().enumerate() {
                if i == lost_at {
                    bus.transport().lose_next_frame();
                }
                live.commit(KvDelta::put(i as u8, i as u16)).expect("commits");
                if *yield_after {
                    let_follower_run().await;
                }
            }
            assert_converged(&live, &shadow).await;
            let stats = shadow.stats();
            prop_assert_eq!(bus.transport().lost(), 1);
            prop_assert_eq!(stats.resyncs.gap, 1);
            prop_assert_eq!(stats.resyncs.recoveries(), 1);
            Ok(())
        })?;
    }

    /// A restarted publisher, whose state may have changed while it was down: the shadow
    /// resynchronizes to the new epoch exactly once and ends up equal.
    #[test]
    fn a_new_publisher_epoch_forces_a_resync(
        before in prop::collection::vec((0..16u8, any::<u16>()), 0..40),
        changed_while_down in prop::collection::vec((0..16u8, any::<u16>()), 0..5),
        after in prop::collection::vec((0..16u8, any::<u16>()), 0..40),
    ) {
        paused_runtime().block_on(async {
            let bus = DeltaBus::<Map>::in_process(1024).expect("valid buffer");
            let shadow = bus.follow(Map::new()).expect("within a runtime");
            let live = start_live(&bus, Map::new(), 1);
            initial_sync(&shadow).await;
            for &(key, value) in &before {
                live.commit(KvDelta::put(key, value)).expect("commits");
                let_follower_run().await;
            }
            let mut reloaded = live.read(Clone::clone);
            drop(live);
            for &(key, value) in &changed_while_down {
                let Ok(()) = reloaded.apply(&KvDelta::put(key, value));
            }
            let live = start_live(&bus, reloaded, 2);
            for &(key, value) in &after {
                live.commit(KvDelta::put(key, value)).expect("commits");
                let_follower_run().await;
            }
            assert_converged(&live, &shadow).await;
            let stats = shadow.stats();
            prop_assert_eq!(stats.position.map(|at| at.epoch), Some(Epoch::new(2)));
            prop_assert_eq!(stats.resyncs.epoch_changed, 1);
            prop_assert_eq!(stats.resyncs.recoveries(), 1);
            Ok(())
        })?;
    }
}

#[test]
fn a_stalled_subscriber_never_blocks_the_live_side_and_resyncs_once() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Map>::in_process(8).expect("valid buffer");
        let shadow = bus.follow(Map::new()).expect("within a runtime");
        let live = start_live(&bus, Map::new(), 1);
        initial_sync(&shadow).await;
        // The follower does not run during these 10,000 commits: its buffer of 8 overflows
        // at once, and every commit still returns.
        for i in 0..10_000u32 {
            live.commit(KvDelta::put((i % 256) as u8, i as u16))
                .expect("commits");
        }
        assert_eq!(live.position().sequence, 10_000);
        assert_converged(&live, &shadow).await;
        let stats = shadow.stats();
        assert_eq!(stats.resyncs.lagged, 1);
        assert_eq!(stats.resyncs.recoveries(), 1);
        assert!(
            stats.frames_applied < 10,
            "the snapshot replaced the lost frames"
        );
    });
}

#[test]
fn coalescing_merges_changes_to_a_key_within_the_window() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Map>::in_process(64).expect("valid buffer");
        let shadow = bus.follow(Map::new()).expect("within a runtime");
        let window = Duration::from_millis(10);
        let live = bus
            .live(Map::new())
            .coalesce(Coalescing {
                window,
                max_batch: 1000,
            })
            .start()
            .expect("valid settings");
        let_follower_run().await;
        for i in 0..100u16 {
            live.commit(KvDelta::put((i % 10) as u8, i))
                .expect("commits");
        }
        assert_eq!(live.stats().frames_published, 0, "held for the window");
        assert_eq!(
            live.position().sequence,
            1,
            "the pending batch is the next frame"
        );
        assert!(!shadow.reach(live.position(), window / 2).await);
        assert!(shadow.reach(live.position(), window).await);

        let published = live.stats();
        assert_eq!(published.deltas_committed, 100);
        assert_eq!(published.deltas_published, 10, "one per key");
        assert_eq!(published.frames_published, 1);
        let followed = shadow.stats();
        assert_eq!(followed.deltas_applied, 10);
        assert_eq!(followed.bytes_received, published.delta_bytes);
        assert_eq!(shadow.read(|map| map.get(&3).copied()), Some(93));
        assert_converged(&live, &shadow).await;
    });
}

#[test]
fn a_full_batch_is_published_before_its_window_ends() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Map>::in_process(64).expect("valid buffer");
        let live = bus
            .live(Map::new())
            .coalesce(Coalescing {
                window: Duration::from_secs(5),
                max_batch: 4,
            })
            .start()
            .expect("valid settings");
        for key in 0..10u8 {
            live.commit(KvDelta::put(key, 1u16)).expect("commits");
        }
        let stats = live.stats();
        assert_eq!((stats.frames_published, stats.deltas_published), (2, 8));
        assert_eq!(live.position().sequence, 3, "two frames out, one pending");
    });
}

#[test]
fn a_dropped_publisher_publishes_its_pending_batch() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Map>::in_process(64).expect("valid buffer");
        let shadow = bus.follow(Map::new()).expect("within a runtime");
        let live = bus
            .live(Map::new())
            .coalesce(Coalescing {
                window: Duration::from_secs(5),
                max_batch: 100,
            })
            .start()
            .expect("valid settings");
        let_follower_run().await;
        live.commit(KvDelta::put(1u8, 7u16)).expect("commits");
        let at = live.position();
        drop(live);
        assert!(shadow.reach(at, Duration::from_millis(1)).await);
        assert_eq!(shadow.read(|map| map.get(&1).copied()), Some(7));
    });
}

#[test]
fn an_append_log_follows_with_deltas_the_live_log_produces() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<AppendLog<String>>::in_process(64).expect("valid buffer");
        let shadow = bus.follow(AppendLog::new()).expect("within a runtime");
        let live = bus
            .live(AppendLog::new())
            .start()
            .expect("within a runtime");
        for event in ["created", "paid", "shipped"] {
            live.commit_with(|log| log.append_delta(event.to_owned()))
                .expect("commits");
        }
        assert!(shadow.reach(live.position(), SETTLE).await);
        assert_eq!(
            shadow.read(|log| log.items().to_vec()),
            ["created", "paid", "shipped"]
        );

        let stale = live.read(|log| log.append_delta("refunded".to_owned()));
        live.commit_with(|log| log.append_delta("delivered".to_owned()))
            .expect("commits");
        let refused = live.commit(stale).expect_err("index 3 is taken");
        assert!(refused.to_string().contains("index 3"), "{refused}");
        assert_eq!(
            live.read(AppendLog::len),
            4,
            "a refused delta changes nothing"
        );
        assert_eq!(live.stats().deltas_committed, 4);
    });
}

#[test]
fn a_follower_started_before_its_publisher_syncs_when_it_appears() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Map>::in_process(64).expect("valid buffer");
        let shadow = bus.follow(Map::new()).expect("within a runtime");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(shadow.position(), None);
        let live = start_live(&bus, [(1, 1)].into_iter().collect(), 1);
        live.commit(KvDelta::put(2u8, 2u16)).expect("commits");
        assert_converged(&live, &shadow).await;
        assert_eq!(shadow.stats().resyncs.recoveries(), 0);
    });
}

#[test]
fn read_spans_measure_how_far_the_shadow_was_from_live() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Map>::in_process(64).expect("valid buffer");
        let shadow = bus.follow(Map::new()).expect("within a runtime");
        let live = start_live(&bus, Map::new(), 1);
        live.commit(KvDelta::put(1u8, 1u16)).expect("commits");

        // The follower has not run since the commit: one frame behind.
        let live_at = live.position();
        assert_eq!(
            shadow.freshness(live_at),
            Freshness::Unrelated,
            "not synced yet"
        );
        let_follower_run().await;
        live.commit(KvDelta::put(1u8, 2u16)).expect("commits");
        assert_eq!(
            shadow.freshness(live.position()),
            Freshness::Distance {
                behind: 1,
                ahead: 0
            }
        );

        // Exact: the span waits for the shadow, which serves from live's state.
        let bound = StalenessBound::default();
        let (live_value, live_at) = live.read_with_position(|map| map.get(&1).copied());
        assert_eq!(live_at, live.position());
        let span = shadow.catch_up(live_at, bound).await;
        assert_eq!(
            span.start(),
            Freshness::Distance {
                behind: 0,
                ahead: 0
            }
        );
        assert_eq!(shadow.read(|map| map.get(&1).copied()), live_value);
        let (freshness, comparable) = span.finish();
        assert!(freshness.is_exact() && comparable);

        // Ahead: live writes again while the shadow serves the read.
        let span = shadow.catch_up(live_at, bound).await;
        live.commit(KvDelta::put(1u8, 3u16)).expect("commits");
        let_follower_run().await;
        assert_eq!(
            span.finish(),
            (
                Freshness::Distance {
                    behind: 0,
                    ahead: 1
                },
                false
            )
        );

        let reads = shadow.stats().reads;
        assert_eq!(
            (reads.observed, reads.exact, reads.outside_bound),
            (2, 1, 1)
        );

        let mut evidence = Evidence::new(Version::new("kv", "1"), Version::new("kv", "2"));
        shadow
            .collect(&mut evidence)
            .await
            .expect("in-memory source");
        let outside = evidence.custom["delta_read_outside_bound"];
        assert_eq!(outside.candidate.mean(), 0.5);
        assert_eq!(outside.stable.count(), 0, "lag is the candidate's KPI");
        assert_eq!(
            evidence.custom["delta_lag_us"].candidate.count(),
            shadow.stats().frames_applied
        );
    });
}

#[test]
fn live_and_shadow_count_the_same_bytes() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Map>::in_process(1024).expect("valid buffer");
        let shadow = bus.follow(Map::new()).expect("within a runtime");
        let live = start_live(&bus, (0..200).map(|k| (k, 0)).collect(), 1);
        let_follower_run().await;
        for key in 0..10u8 {
            live.commit(KvDelta::put(key, 500u16)).expect("commits");
        }
        assert!(shadow.reach(live.position(), SETTLE).await);
        let (published, followed) = (live.stats(), shadow.stats());
        assert_eq!(followed.bytes_received, published.delta_bytes);
        assert_eq!(followed.snapshot_bytes, published.snapshot_bytes);
        assert!(
            published.delta_bytes < published.snapshot_bytes / 5,
            "10 changes must cost far less than 200 entries: {published:?}"
        );
    });
}

#[test]
fn setup_errors_are_typed() {
    assert!(matches!(
        DeltaBus::<Map>::in_process(0),
        Err(BusError::InvalidSetting {
            setting: "subscriber_buffer",
            ..
        })
    ));
    let bus = DeltaBus::<Map>::in_process(8).expect("valid buffer");
    assert_eq!(
        bus.live(Map::new()).start().map(|_| ()),
        Err(BusError::NoRuntime {
            what: "a live publisher"
        })
    );
    assert!(matches!(
        bus.follow(Map::new()),
        Err(BusError::NoRuntime { .. })
    ));
    paused_runtime().block_on(async {
        let zero_heartbeat = bus.live(Map::new()).heartbeat(Duration::ZERO).start();
        assert!(matches!(
            zero_heartbeat,
            Err(BusError::InvalidSetting {
                setting: "heartbeat",
                ..
            })
        ));
        let empty_batch = bus
            .live(Map::new())
            .coalesce(Coalescing {
                max_batch: 0,
                ..Coalescing::default()
            })
            .start();
        assert!(matches!(
            empty_batch,
            Err(BusError::InvalidSetting {
                setting: "coalescing.max_batch",
                ..
            })
        ));
    });
}

#[test]
fn snapshots_keep_keys_the_map_had_before_following() {
    // Guards the resync path against restoring into a map that starts non-empty.
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Map>::in_process(64).expect("valid buffer");
        let shadow = bus
            .follow([(9, 9)].into_iter().collect())
            .expect("within a runtime");
        let live = start_live(&bus, HashMap::from([(1, 1)]).into(), 1);
        assert_converged(&live, &shadow).await;
        assert_eq!(shadow.read(|map| map.get(&9).copied()), None);
    });
}

/// A state whose shadow copy refuses or panics on one value, as a buggy shadow build might.
#[derive(Debug, Default)]
struct Fragile {
    values: Vec<u32>,
    refuse: Option<u32>,
    panic_on: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("refused {0}")]
struct Refused(u32);

impl StateDelta for Fragile {
    type Delta = u32;
    type Snapshot = Vec<u32>;
    type Error = Refused;

    fn apply(&mut self, value: &u32) -> Result<(), Refused> {
        if self.panic_on == Some(*value) {
            panic!("the shadow's apply crashed on {value}");
        }
        if self.refuse.take_if(|refused| refused == value).is_some() {
            return Err(Refused(*value));
        }
        self.values.push(*value);
        Ok(())
    }

    fn snapshot(&self) -> Vec<u32> {
        self.values.clone()
    }

    fn restore(&mut self, values: Vec<u32>) {
        self.values = values;
    }
}

#[test]
fn a_refused_delta_or_a_corrupt_frame_triggers_a_resync() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Fragile, _>::new(Lossy::new(64));
        let shadow_state = Fragile {
            refuse: Some(2),
            ..Fragile::default()
        };
        let shadow = bus.follow(shadow_state).expect("within a runtime");
        let live = bus
            .live(Fragile::default())
            .start()
            .expect("within a runtime");
        let_follower_run().await;
        for value in 1..=3 {
            live.commit(value).expect("live accepts every value");
        }
        assert!(shadow.reach(live.position(), SETTLE).await);
        bus.transport().truncate_next_frame();
        live.commit(4).expect("commits");
        live.commit(5).expect("commits");
        assert!(shadow.reach(live.position(), SETTLE).await);

        assert_eq!(shadow.read(|state| state.values.clone()), [1, 2, 3, 4, 5]);
        let resyncs = shadow.stats().resyncs;
        assert_eq!((resyncs.apply_failed, resyncs.undecodable), (1, 1));
        assert_eq!(resyncs.recoveries(), 2);
    });
}

#[test]
fn a_shadow_whose_apply_panicked_is_never_comparable() {
    paused_runtime().block_on(async {
        let bus = DeltaBus::<Fragile>::in_process(64).expect("valid buffer");
        let shadow_state = Fragile {
            panic_on: Some(13),
            ..Fragile::default()
        };
        let shadow = bus.follow(shadow_state).expect("within a runtime");
        let live = bus
            .live(Fragile::default())
            .start()
            .expect("within a runtime");
        live.commit(1).expect("commits");
        assert!(shadow.reach(live.position(), SETTLE).await);

        live.commit(13).expect("the live side is unaffected");
        let_follower_run().await;
        assert_eq!(
            shadow.position(),
            None,
            "the half-applied state is at no position"
        );
        let live_at = live.commit(14).expect("the live side is unaffected");
        let span = shadow.catch_up(live_at, StalenessBound::default()).await;
        assert_eq!(span.finish(), (Freshness::Unrelated, false));
    });
}
