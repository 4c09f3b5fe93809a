//! A candidate 10× slower than stable (20 ms against 2 ms of waiting on a backend), run
//! two ways beside the live path, against a baseline:
//!
//! * `bare`: stable alone, the baseline;
//! * `mirrored`: shadowlib's design — the read is copied to the candidate off the request
//!   path, through the bounded queue, and the live response never waits for it; the
//!   shadow runs on its rollout's own thread. (A variant with the shadow on the live
//!   requests' runtime, `ShadowLayer::new_on`, was measured here until the adapters moved
//!   every shadow onto the rollout's thread; it is gone.)
//! * `scientist`: the design of GitHub's Scientist and its ports — the candidate runs
//!   inside the request, concurrently with stable, and the response is returned once both
//!   are done (so they can be compared in place).
//!
//! Goal: live p99 mirrored ≤ 1.05× bare. Criterion measures one request at a time; the
//! p99 figures come from a closed loop of 16 concurrent clients, five rounds interleaving
//! the designs, printed at the end as the median over rounds.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group};
use http_body_util::BodyExt;
use shadowlib::shadow::{ShadowBudget, ShadowConfig};
use shadowlib::{Distribution, Rollout};
use shadowlib_tower::{ShadowLayer, ShadowService};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const STABLE_WAIT: Duration = Duration::from_millis(2);
const CANDIDATE_WAIT: Duration = Duration::from_millis(20);
const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 150;
const ROUNDS: usize = 5;

fn app(wait: Duration) -> Router {
    Router::new().route(
        "/items/{id}",
        get(move || async move {
            tokio::time::sleep(wait).await;
            "item"
        }),
    )
}

/// The middleware over stable, mirroring every read, and the rollout it serves (built on
/// `rt`, where its loop runs beside the live requests).
fn mirrored(rt: &tokio::runtime::Runtime) -> (ShadowService<Router, Router>, Rollout) {
    rt.block_on(async {
        // Room for the candidate to keep up: 16 clients at ~2.5 ms each is ~6,400 reads/s,
        // which at 20 ms each is ~130 copies in flight.
        let budget = ShadowBudget {
            queue_capacity: 4096,
            concurrency: 512,
            timeout: Duration::from_secs(5),
        };
        let rollout = benches::shadowing_rollout(ShadowConfig::new().with_budget(budget));
        let service = ShadowLayer::new(app(CANDIDATE_WAIT), &rollout).layer(app(STABLE_WAIT));
        (service, rollout)
    })
}

fn request() -> http::Request<Body> {
    http::Request::get("/items/7")
        .body(Body::empty())
        .expect("valid request")
}

async fn call<S, B>(service: &S)
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = service
        .clone()
        .oneshot(request())
        .await
        .expect("infallible");
    response
        .into_body()
        .collect()
        .await
        .expect("in-memory body");
}

/// Scientist-style: both builds run inside the request, concurrently; the client gets
/// stable's response once both are done.
async fn scientist(stable: &Router, candidate: &Router) {
    let (control, experiment) = tokio::join!(call(stable), call(candidate));
    let ((), ()) = (control, experiment);
}

#[derive(Clone, Copy, Debug)]
enum Design {
    Bare,
    Mirrored,
    Scientist,
}

struct Services {
    stable: Router,
    candidate: Router,
    mirrored: ShadowService<Router, Router>,
    /// The rollout `mirrored` serves, whose counts say what the shadow did.
    rollout: Rollout,
}

impl Design {
    fn name(self) -> &'static str {
        match self {
            Design::Bare => "bare",
            Design::Mirrored => "mirrored",
            Design::Scientist => "scientist",
        }
    }
}

impl Services {
    async fn serve(&self, design: Design) {
        match design {
            Design::Bare => call(&self.stable).await,
            Design::Mirrored => call(&self.mirrored).await,
            Design::Scientist => scientist(&self.stable, &self.candidate).await,
        }
    }
}

fn services(rt: &tokio::runtime::Runtime) -> Services {
    let (mirrored, rollout) = mirrored(rt);
    Services {
        stable: app(STABLE_WAIT),
        candidate: app(CANDIDATE_WAIT),
        mirrored,
        rollout,
    }
}

const DESIGNS: [Design; 3] = [Design::Bare, Design::Mirrored, Design::Scientist];

fn single_request(c: &mut Criterion) {
    let rt = benches::live_runtime();
    let services = services(&rt);
    let mut group = c.benchmark_group("slow_candidate");
    for design in DESIGNS {
        group.bench_function(design.name(), |b| {
            b.to_async(&rt).iter(|| services.serve(design))
        });
    }
    group.finish();
}

/// Live latencies of a closed loop of `CLIENTS` concurrent clients.
async fn under_load(services: &Arc<Services>, design: Design, into: &mut Distribution) {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let services = Arc::clone(services);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(REQUESTS_PER_CLIENT);
                for _ in 0..REQUESTS_PER_CLIENT {
                    let started = Instant::now();
                    services.serve(design).await;
                    latencies.push(started.elapsed().as_micros() as u64);
                }
                latencies
            })
        })
        .collect();
    for client in clients {
        for micros in client.await.expect("client task") {
            into.record(micros);
        }
    }
}

fn p99_under_load() {
    let rt = benches::live_runtime();
    let services = Arc::new(services(&rt));
    // p99 per design per round; rounds interleave the designs, and the median over
    // rounds keeps one burst of load from other processes from deciding the figure.
    let mut p99s: Vec<Vec<f64>> = DESIGNS.iter().map(|_| Vec::new()).collect();
    let mut p50s: Vec<Vec<f64>> = DESIGNS.iter().map(|_| Vec::new()).collect();
    rt.block_on(async {
        for _ in 0..ROUNDS {
            for (i, design) in DESIGNS.iter().enumerate() {
                let mut latencies = Distribution::latency_us();
                under_load(&services, *design, &mut latencies).await;
                p99s[i].push(latencies.quantile(0.99) as f64 / 1000.0);
                p50s[i].push(latencies.quantile(0.5) as f64 / 1000.0);
            }
        }
        // Let the last copies finish before reading the counters.
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let range = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{lo:.2}-{hi:.2}")
    };
    for (i, design) in DESIGNS.iter().enumerate() {
        println!(
            "slow_candidate: {:<20} live p50 {:>6.2} ms, p99 {:>6.2} ms (median of {ROUNDS} rounds of {} requests; p99 range {} ms)",
            design.name(),
            benches::median(&p50s[i]),
            benches::median(&p99s[i]),
            CLIENTS * REQUESTS_PER_CLIENT,
            range(&p99s[i]),
        );
    }
    let ratio = |i: usize| benches::median(&p99s[i]) / benches::median(&p99s[0]);
    println!(
        "slow_candidate: live p99 ratio to bare: mirrored {:.3}x (goal <= 1.05x), scientist-style {:.3}x",
        ratio(1),
        ratio(2)
    );
    let counts = services.rollout.shadow_counts();
    println!(
        "slow_candidate: shadow copies: mirrored {}, dropped {}, completed {}, timed out {}",
        counts.mirrored, counts.dropped_queue_full, counts.completed, counts.timed_out
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = single_request
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    p99_under_load();
}
