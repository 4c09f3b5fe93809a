//! Delta synchronization figures.
//!
//! Prints, before criterion's own measurement:
//! * bytes: a 100,000-key map with 1% of its keys changed — delta bytes against the bytes
//!   of a full snapshot (goal: at most 2%);
//! * staleness: the shadow's lag (publication to applied) while live commits 10,000
//!   writes per second for two seconds (goal: p99 at most 1 ms);
//!
//! then measures with criterion the publish + apply throughput in-process, one commit per
//! delta with small values (goal: at least 1,000,000 deltas per second).
//!
//! `cargo bench -p benches --bench delta`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shadowlib::delta::{Coalescing, DeltaBus, KeyValueMap, KvDelta, LiveState, ShadowState};
use tokio::runtime::Runtime;

const KEYS: usize = 100_000;
const CHANGED: usize = KEYS / 100;
const SETTLE: Duration = Duration::from_secs(30);

/// A runtime whose single worker runs the follower, while the bench thread publishes: the
/// two sides get a core each on a two-core machine.
fn one_worker_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime builds")
}

type Catalog = KeyValueMap<String, String>;

fn catalog_key(i: usize) -> String {
    format!("sku-{i:06}")
}

/// A 32-character value, different for each version.
fn catalog_value(i: usize, version: u32) -> String {
    format!("{:016x}{:016x}", i as u64 * 0x9e37_79b9, u64::from(version))
}

fn changed_keys() -> impl Iterator<Item = usize> {
    (0..CHANGED).map(|n| n * (KEYS / CHANGED) + 37)
}

/// Applies 1% of changes to a 100,000-key map and reports delta bytes against snapshot
/// bytes, one frame per change and coalesced into frames of up to 1,024 changes.
fn bytes_figure(runtime: &Runtime) {
    for coalescing in [
        None,
        Some(Coalescing {
            window: Duration::from_secs(60),
            max_batch: 1024,
        }),
    ] {
        let _guard = runtime.enter();
        let bus = DeltaBus::<Catalog>::in_process(1 << 14).expect("valid buffer");
        let initial: Catalog = (0..KEYS)
            .map(|i| (catalog_key(i), catalog_value(i, 0)))
            .collect();
        let builder = bus.live(initial);
        let live = match coalescing {
            Some(config) => builder.coalesce(config),
            None => builder,
        }
        .start()
        .expect("started within a runtime");
        let shadow = bus.follow(Catalog::new()).expect("within a runtime");
        runtime.block_on(async { shadow.reach(live.position(), SETTLE).await });
        let snapshot_bytes = live.stats().snapshot_bytes;

        for i in changed_keys() {
            live.commit(KvDelta::put(catalog_key(i), catalog_value(i, 1)))
                .expect("commits");
        }
        live.flush();
        let reached = runtime.block_on(shadow.reach(live.position(), SETTLE));
        assert!(reached, "the shadow must follow the changes");
        assert_eq!(shadow.read(Catalog::len), KEYS);
        let stats = live.stats();
        println!(
            "delta/bytes ({}): {} keys, {} changed: delta {} B in {} frames vs snapshot {} B = {:.3}% (goal <= 2%); shadow received {} B",
            if coalescing.is_some() {
                "coalesced"
            } else {
                "frame per change"
            },
            KEYS,
            CHANGED,
            stats.delta_bytes,
            stats.frames_published,
            snapshot_bytes,
            100.0 * stats.delta_bytes as f64 / snapshot_bytes as f64,
            shadow.stats().bytes_received,
        );
    }
}

/// Commits 10,000 writes per second for two seconds from a paced thread and reports the
/// distribution of the shadow's lag.
fn staleness_figure(runtime: &Runtime) {
    const RATE: u32 = 10_000;
    const WRITES: u32 = 2 * RATE;
    let _guard = runtime.enter();
    let bus = DeltaBus::<KeyValueMap<u64, u64>>::in_process(4096).expect("valid buffer");
    let live = bus
        .live(KeyValueMap::new())
        .start()
        .expect("within a runtime");
    let shadow = bus.follow(KeyValueMap::new()).expect("within a runtime");
    runtime.block_on(shadow.reach(live.position(), SETTLE));

    let interval = Duration::from_secs(1) / RATE;
    let start = Instant::now();
    for n in 0..WRITES {
        // Absolute deadlines: an oversleep is made up by the next writes, so the rate holds.
        let deadline = start + interval * n;
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        live.commit(KvDelta::put(u64::from(n % 1024), u64::from(n)))
            .expect("commits");
    }
    let elapsed = start.elapsed();
    assert!(runtime.block_on(shadow.reach(live.position(), SETTLE)));
    let stats = shadow.stats();
    let lag = &stats.lag_us;
    // The tail is the follower thread waiting for a core, so the machine's load is part of
    // the figure.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_1min = load.split_whitespace().next().unwrap_or("unknown");
    println!(
        "delta/staleness: {} writes at {:.0}/s: lag p50 {} us, p99 {} us, p99.9 {} us, max {} us (goal p99 <= 1000 us); resyncs after the first: {}; load average {load_1min} on {} cores",
        lag.count(),
        f64::from(WRITES) / elapsed.as_secs_f64(),
        lag.quantile(0.50),
        lag.quantile(0.99),
        lag.quantile(0.999),
        lag.max(),
        stats.resyncs.recoveries(),
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
    );
}

/// Publishes `count` small deltas and waits until the shadow has applied them all.
fn publish_and_apply(
    runtime: &Runtime,
    live: &LiveState<KeyValueMap<u64, u64>>,
    shadow: &ShadowState<KeyValueMap<u64, u64>>,
    count: u64,
) -> Duration {
    let start = Instant::now();
    for n in 0..count {
        live.commit(KvDelta::put(n % 1024, black_box(n)))
            .expect("commits");
    }
    let reached = runtime.block_on(shadow.reach(live.position(), SETTLE));
    let elapsed = start.elapsed();
    assert!(reached, "the shadow must apply every delta");
    elapsed
}

fn throughput(c: &mut Criterion, runtime: &Runtime) {
    const BATCH: u64 = 10_000;
    let _guard = runtime.enter();
    // The buffer holds a whole batch, so the follower never falls behind it: every delta
    // is applied, none replaced by a snapshot (checked below).
    let bus = DeltaBus::<KeyValueMap<u64, u64>>::in_process(1 << 16).expect("valid buffer");
    let live = bus
        .live(KeyValueMap::new())
        .start()
        .expect("within a runtime");
    let shadow = bus.follow(KeyValueMap::new()).expect("within a runtime");
    runtime.block_on(shadow.reach(live.position(), SETTLE));

    let mut group = c.benchmark_group("delta");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("publish_apply_u64_pairs", |b| {
        b.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| publish_and_apply(runtime, &live, &shadow, BATCH))
                .sum()
        })
    });
    group.finish();
    let stats = shadow.stats();
    println!(
        "delta/throughput: {} deltas applied in {} frames, {} B; resyncs after the first: {}",
        stats.deltas_applied,
        stats.frames_applied,
        stats.bytes_received,
        stats.resyncs.recoveries(),
    );
}

fn main() {
    let runtime = one_worker_runtime();
    bytes_figure(&runtime);
    staleness_figure(&runtime);
    let mut criterion = Criterion::default().configure_from_args();
    throughput(&mut criterion, &runtime);
    criterion.final_summary();
}
