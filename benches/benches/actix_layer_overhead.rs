//! What the actix-web middleware costs the live path: a trivial handler called in-process,
//! bare and behind the `Shadow` middleware mirroring 100% of reads to an identical shadow
//! (which runs on its own shadow thread). Goal: live-path median ≤ 1.10× bare.
//!
//! Criterion measures three services: bare; behind the middleware with the rollout rolled
//! back (routing and KPI recording only, nothing mirrored); and behind the middleware
//! while shadowing, every read mirrored. A final interleaved run (alternating batches, so
//! drift in machine load hits every side alike) prints the ratios of per-call medians and
//! what the shadow did with the copies, and the same with 10% of reads mirrored
//! (`ShadowConfig::with_mirror_share`).

use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::rt::{System, SystemRunner};
use actix_web::{App, test, web};
use criterion::{Criterion, criterion_group};
use shadowlib::shadow::ShadowConfig;
use shadowlib::{Rollout, Share};
use shadowlib_actix::Shadow;

fn app() -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new().route("/items/{id}", web::get().to(|| async { "ok" }))
}

/// The middleware with `app` as both builds, serving the rollout `rollout` builds on
/// `system` (where its loop then runs, beside the live requests).
fn shadow(system: &SystemRunner, rollout: impl FnOnce() -> Rollout) -> Shadow {
    system.block_on(async { Shadow::new(app, app, &rollout()) })
}

/// The middleware mirroring `mirror_share` of the reads.
fn mirroring(system: &SystemRunner, mirror_share: Share) -> Shadow {
    let config = ShadowConfig::new().with_mirror_share(mirror_share);
    shadow(system, || benches::shadowing_rollout(config))
}

/// The middleware with its rollout rolled back, so nothing is mirrored.
fn not_mirroring(system: &SystemRunner) -> Shadow {
    shadow(system, benches::rolled_back_rollout)
}

/// One request through `service`, its response body read to the end (which is when the
/// middleware sees the live response complete).
async fn call<S, B>(service: &S)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let request = test::TestRequest::get().uri("/items/42").to_request();
    let response = test::call_service(service, request).await;
    test::read_body(response).await;
}

/// Total time of `iters` calls, run back to back on the actix runtime.
fn timed<S, B>(system: &SystemRunner, service: &S, iters: u64) -> Duration
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    system.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            call(service).await;
        }
        start.elapsed()
    })
}

fn overhead(c: &mut Criterion) {
    let system = System::new();
    let bare = system.block_on(test::init_service(app()));
    let rolled_back = system.block_on(test::init_service(app().wrap(not_mirroring(&system))));
    let mirrored = system.block_on(test::init_service(
        app().wrap(mirroring(&system, Share::FULL)),
    ));
    let mut group = c.benchmark_group("actix_layer_overhead");
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| timed(&system, &bare, iters))
    });
    group.bench_function("not_shadowing", |b| {
        b.iter_custom(|iters| timed(&system, &rolled_back, iters))
    });
    group.bench_function("mirrored_100pct", |b| {
        b.iter_custom(|iters| timed(&system, &mirrored, iters))
    });
    group.finish();
}

/// Per-call times of `batches` batches of 100 calls.
fn per_call<S, B>(system: &SystemRunner, service: &S, batches: usize) -> Vec<f64>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    (0..batches)
        .map(|_| timed(system, service, 100).as_nanos() as f64 / 100.0)
        .collect()
}

fn interleaved_ratio() {
    let system = System::new();
    let every_read = mirroring(&system, Share::FULL);
    let tenth = mirroring(&system, Share::from_percent(10.0).expect("valid share"));
    let bare = system.block_on(test::init_service(app()));
    let rolled_back = system.block_on(test::init_service(app().wrap(not_mirroring(&system))));
    let mirrored = system.block_on(test::init_service(app().wrap(every_read.clone())));
    let sampled = system.block_on(test::init_service(app().wrap(tenth.clone())));
    // Warm every path up.
    per_call(&system, &bare, 50);
    per_call(&system, &rolled_back, 50);
    per_call(&system, &mirrored, 50);
    per_call(&system, &sampled, 50);
    let (mut bare_samples, mut rolled_back_samples, mut mirrored_samples) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut sampled_samples = Vec::new();
    for _ in 0..40 {
        bare_samples.extend(per_call(&system, &bare, 10));
        rolled_back_samples.extend(per_call(&system, &rolled_back, 10));
        mirrored_samples.extend(per_call(&system, &mirrored, 10));
        sampled_samples.extend(per_call(&system, &sampled, 10));
    }
    // Let the shadow drain before reading its counters.
    std::thread::sleep(Duration::from_millis(200));
    let (bare, rolled_back, with_layer, tenth_mirrored) = (
        benches::median(&bare_samples),
        benches::median(&rolled_back_samples),
        benches::median(&mirrored_samples),
        benches::median(&sampled_samples),
    );
    println!(
        "actix_layer_overhead: bare median {bare:.0} ns/call, not shadowing {rolled_back:.0} ns/call ({:.3}x), mirrored median {with_layer:.0} ns/call",
        rolled_back / bare
    );
    println!(
        "actix_layer_overhead: live-path median ratio {:.3}x (goal <= 1.10x); {}",
        with_layer / bare,
        benches::copies(&every_read.counts()),
    );
    println!(
        "actix_layer_overhead: mirroring 10% of reads: {tenth_mirrored:.0} ns/call, live-path median ratio {:.3}x; {}",
        tenth_mirrored / bare,
        benches::copies(&tenth.counts()),
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
}
