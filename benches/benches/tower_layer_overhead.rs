//! What the tower middleware costs the live path: a trivial axum handler called
//! in-process, bare and behind the `ShadowLayer` mirroring 100% of reads to an identical
//! shadow. Goal: live-path median ≤ 1.10× bare. The same with 10% of reads mirrored
//! (`ShadowConfig::with_mirror_share`) shows what sampling buys back, and the same with a
//! handler that has work to do (rendering a 150-row table, about 15 µs) shows what the
//! middleware costs next to a typical endpoint.
//!
//! The shadow runs where it does in production: on its rollout's own thread. (This bench
//! also measured the shadow on the live requests' runtime, `ShadowLayer::new_on`, until
//! the adapters moved every shadow onto the rollout's thread; that variant is gone.)
//! Criterion measures each; a final interleaved run (alternating blocks, so drift in
//! machine load hits every side alike) prints the ratios of per-call medians and what the
//! shadow did with the copies. Each block is timed while its own
//! shadow works beside it (after a few settling batches), and the next block waits until
//! that shadow has finished its copies, so no variant is charged another's shadow work.

use std::fmt::Write;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group};
use http_body_util::BodyExt;
use shadowlib::shadow::ShadowConfig;
use shadowlib::{Rollout, Share};
use shadowlib_tower::{ShadowLayer, ShadowService};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

fn app(build: &'static str) -> Router {
    Router::new().route("/items/{id}", get(move || async move { build }))
}

/// An endpoint with work to do: it renders a 150-row text table (about 2.5 KB).
fn working_app() -> Router {
    Router::new().route("/items/{id}", get(|| async { render_rows(150) }))
}

fn render_rows(rows: u64) -> String {
    let mut table = String::with_capacity(rows as usize * 20);
    for row in 0..rows {
        // Writing into a String cannot fail.
        let _ = writeln!(table, "{row}\t{}\t{}", row * 7 % 13, row * 31 % 97);
    }
    table
}

/// A stable build behind the middleware, and the rollout it serves (whose counts say what
/// the shadow did with the copies).
struct Layered {
    service: ShadowService<Router, Router>,
    rollout: Rollout,
}

/// `app()` behind the middleware with another `app()` as the candidate, serving the
/// rollout `rollout` builds on `rt` (where its loop then runs, beside the live requests).
fn layered(rt: &Runtime, app: impl Fn() -> Router, rollout: impl FnOnce() -> Rollout) -> Layered {
    rt.block_on(async {
        let rollout = rollout();
        let service = ShadowLayer::new(app(), &rollout).layer(app());
        Layered { service, rollout }
    })
}

/// The middleware over `app("ok")` with an identical candidate, mirroring `mirror_share`
/// of the reads.
fn mirroring(rt: &Runtime, mirror_share: Share) -> Layered {
    let config = ShadowConfig::new().with_mirror_share(mirror_share);
    layered(rt, || app("ok"), || benches::shadowing_rollout(config))
}

/// The middleware over `app("ok")` with its rollout rolled back, so nothing is mirrored.
fn not_mirroring(rt: &Runtime) -> Layered {
    layered(rt, || app("ok"), benches::rolled_back_rollout)
}

/// One request through `service`, its response body read to the end (which is when the
/// middleware sees the live response complete).
async fn call<S, B>(service: &S)
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let request = http::Request::get("/items/42")
        .body(Body::empty())
        .expect("valid request");
    let response = service.clone().oneshot(request).await.expect("infallible");
    response
        .into_body()
        .collect()
        .await
        .expect("in-memory body");
}

fn overhead(c: &mut Criterion) {
    let rt = benches::live_runtime();
    let bare = app("ok");
    let rolled_back = not_mirroring(&rt);
    let shadowed = mirroring(&rt, Share::FULL);
    let mut group = c.benchmark_group("tower_layer_overhead");
    group.bench_function("bare", |b| b.to_async(&rt).iter(|| call(&bare)));
    group.bench_function("layer_not_mirroring", |b| {
        b.to_async(&rt).iter(|| call(&rolled_back.service))
    });
    group.bench_function("mirrored_100pct", |b| {
        b.to_async(&rt).iter(|| call(&shadowed.service))
    });
    group.finish();
}

/// Mean time per call of each of `batches` batches of 100 calls.
async fn median_per_call<S, B>(service: &S, batches: usize) -> Vec<f64>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let mut samples = Vec::with_capacity(batches);
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..100 {
            call(service).await;
        }
        samples.push(start.elapsed().as_nanos() as f64 / 100.0);
    }
    samples
}

/// Batches of each block run before its measured ones: the shadow takes its copies on a
/// 1 ms tick, so the first batches of a block would run before it starts competing.
const SETTLING_BATCHES: usize = 5;

/// One block of `batches` measured batches through `service`, after the settling ones,
/// so the live calls are timed while the shadow works on the copies beside them.
/// Then waits for the shadow of `rollout` to finish its copies, so none of its work lands
/// in the next block, which may be another variant's.
async fn block<S, B>(service: &S, rollout: Option<&Rollout>, batches: usize) -> Vec<f64>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    median_per_call(service, SETTLING_BATCHES).await;
    let samples = median_per_call(service, batches).await;
    if let Some(rollout) = rollout {
        while rollout.shadow_counts().in_flight() > 0 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    samples
}

fn interleaved_ratio() {
    let rt = benches::live_runtime();
    let bare = app("ok");
    let rolled_back = not_mirroring(&rt);
    let shadowed = mirroring(&rt, Share::FULL);
    let sampled = mirroring(&rt, Share::from_percent(10.0).expect("valid share"));
    let (mut bare_samples, mut rolled_back_samples, mut mirrored_samples, mut sampled_samples) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        // Warm every path up.
        median_per_call(&bare, 50).await;
        median_per_call(&rolled_back.service, 50).await;
        median_per_call(&shadowed.service, 50).await;
        median_per_call(&sampled.service, 50).await;
        for _ in 0..20 {
            bare_samples.extend(block(&bare, None, 20).await);
            rolled_back_samples.extend(block(&rolled_back.service, None, 20).await);
            let mirrored = block(&shadowed.service, Some(&shadowed.rollout), 20).await;
            mirrored_samples.extend(mirrored);
            sampled_samples.extend(block(&sampled.service, Some(&sampled.rollout), 20).await);
        }
        // Let the shadow drain before reading its counters.
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let (bare, not_mirroring, with_layer, tenth_mirrored) = (
        benches::median(&bare_samples),
        benches::median(&rolled_back_samples),
        benches::median(&mirrored_samples),
        benches::median(&sampled_samples),
    );
    println!(
        "tower_layer_overhead: per-call medians: bare {bare:.0} ns, layer not mirroring {not_mirroring:.0} ns ({:.3}x), mirroring 100% {with_layer:.0} ns",
        not_mirroring / bare
    );
    println!(
        "tower_layer_overhead: live-path median ratio {:.3}x (goal <= 1.10x); {}",
        with_layer / bare,
        benches::copies(&shadowed.rollout.shadow_counts()),
    );
    println!(
        "tower_layer_overhead: mirroring 10% of reads: {tenth_mirrored:.0} ns, live-path median ratio {:.3}x; {}",
        tenth_mirrored / bare,
        benches::copies(&sampled.rollout.shadow_counts()),
    );
}

fn working_handler_ratio() {
    let rt = benches::live_runtime();
    let bare = working_app();
    let shadowed = layered(&rt, working_app, || {
        benches::shadowing_rollout(ShadowConfig::new())
    });
    let (mut bare_samples, mut mirrored_samples) = (Vec::new(), Vec::new());
    rt.block_on(async {
        median_per_call(&bare, 20).await;
        median_per_call(&shadowed.service, 20).await;
        for _ in 0..10 {
            bare_samples.extend(block(&bare, None, 10).await);
            let mirrored = block(&shadowed.service, Some(&shadowed.rollout), 10).await;
            mirrored_samples.extend(mirrored);
        }
    });
    let (bare, mirrored) = (
        benches::median(&bare_samples),
        benches::median(&mirrored_samples),
    );
    println!(
        "tower_layer_overhead: a handler with work to do: bare {:.1} µs, mirroring 100% {:.1} µs, live-path median ratio {:.3}x; {}",
        bare / 1000.0,
        mirrored / 1000.0,
        mirrored / bare,
        benches::copies(&shadowed.rollout.shadow_counts()),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(2));
    targets = overhead
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    interleaved_ratio();
    working_handler_ratio();
}
