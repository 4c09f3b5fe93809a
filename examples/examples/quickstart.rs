//! The whole loop on a real axum service: two rollouts, each served on 127.0.0.1 through
//! `ShadowLayer::new(v2, &rollout).around(v1)` and driven by a built-in load generator.
//!
//! The shop has three routes of different costs: `GET /items/{id}` (cheap),
//! `GET /search` (heavier) and `POST /cart` (a write, never mirrored), in a mix of about
//! 85% reads. The rollout uses the library's defaults — the `SequentialPredictor`, the
//! field-level response comparison, a stable twin in the shadow — with a policy that looks
//! four times a second so the demo ends in about a minute (less with `--release`).
//!
//! * Scenario `regression`: v2 is three times slower on `GET /items/{id}` and gets the
//!   price wrong on one search in fifty. It is rolled back while still a shadow, before any
//!   user saw it, with the route, the field and the numbers in the reasons.
//! * Scenario `healthy`: v2 answers exactly as v1 does (its timestamps excepted, which the
//!   twin shows to be noise). It is promoted through every step of the schedule.
//!
//! Run with `cargo run -p examples --example quickstart` (add `--release` for a faster
//! load). `-- --aa RUNS` runs only the healthy scenario, RUNS times, and counts how many
//! identical candidates were promoted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use shadowlib::mirror::PathPattern;
use shadowlib::{DecisionSource, Phase, Rollout, RolloutEvent, RolloutPolicy, Version};
use shadowlib_tower::ShadowLayer;
use tokio::net::TcpListener;

/// How a build of the shop behaves.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    /// Work per item lookup, in rounds of the busy loop.
    item_work: u64,
    /// One search in this many quotes a wrong price (0: never).
    wrong_price_every: u64,
}

const V1: Behaviour = Behaviour {
    item_work: 2_000,
    wrong_price_every: 0,
};

/// CPU work the handlers do, so that cost shows in latency and in CPU per request.
fn busy(rounds: u64) {
    let spun = (0..rounds).fold(0u64, |acc, i| {
        std::hint::black_box(acc.wrapping_mul(31) ^ i)
    });
    std::hint::black_box(spun);
}

/// A clock every build reads, as a real one would be: no two responses carry the same.
fn now_tick() -> u64 {
    static TICKS: AtomicU64 = AtomicU64::new(0);
    TICKS.fetch_add(1, Ordering::Relaxed)
}

#[derive(Deserialize)]
struct Search {
    q: u64,
}

/// One build of the shop.
fn shop(behaviour: Behaviour) -> Router {
    Router::new()
        .route(
            "/items/{id}",
            get(move |Path(id): Path<u64>| async move {
                busy(behaviour.item_work);
                format!(
                    r#"{{"id":{id},"price":{},"served_at":{}}}"#,
                    100 + id % 50,
                    now_tick()
                )
            }),
        )
        .route(
            "/search",
            get(move |Query(search): Query<Search>| async move {
                busy(10_000);
                let wrong =
                    behaviour.wrong_price_every > 0 && search.q % behaviour.wrong_price_every == 0;
                let price = if wrong { 1 } else { 100 + search.q % 50 };
                format!(
                    r#"{{"q":{},"best_price":{price},"served_at":{}}}"#,
                    search.q,
                    now_tick()
                )
            }),
        )
        .route("/cart", post(|| async { "added" }))
}

fn print_event(event: &RolloutEvent) {
    let transition = event.transition;
    let who = match event.decision.source {
        DecisionSource::Controller => "the controller",
        DecisionSource::Operator => "an operator",
    };
    println!(
        "[{:>5.2}s] {} -> {} (candidate share {}), {who} decided to {}:",
        event.elapsed.as_secs_f64(),
        transition.from,
        transition.to,
        transition.share_after,
        event.decision.action,
    );
    for reason in &event.decision.reasons {
        println!("          - {reason}");
    }
    if event.look > 0 {
        println!("          shadow: {}", event.shadow);
    }
}

/// Sends requests from `clients` concurrent connections, each pausing 5 ms between its
/// requests, until the rollout ends or the deadline passes: about 85% reads.
async fn load(
    addr: std::net::SocketAddr,
    rollout: &Rollout,
    clients: u64,
    deadline: Instant,
) -> u64 {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let sent = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let (client, sent, rollout) = (client.clone(), Arc::clone(&sent), rollout.clone());
            tokio::spawn(async move {
                let mut n = worker;
                while !rollout.phase().is_terminal() && Instant::now() < deadline {
                    n = n
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let pick = (n >> 33) % 100;
                    let request = if pick < 15 {
                        http::Request::post(format!("http://{addr}/cart"))
                            .body(Full::new(Bytes::from_static(b"{}")))
                    } else if pick < 45 {
                        http::Request::get(format!("http://{addr}/search?q={}", n % 10_000))
                            .body(Full::default())
                    } else {
                        http::Request::get(format!("http://{addr}/items/{}", n % 1_000))
                            .body(Full::default())
                    };
                    let Ok(request) = request else { continue };
                    // Reading the whole body makes the response comparable.
                    if let Ok(response) = client.request(request).await {
                        let _ = response.into_body().collect().await;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    // Each user pauses between requests: a service with headroom, as a
                    // real one runs. The shadow runs only on CPU live leaves idle, so a load
                    // generator that saturates every core would leave it none.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    sent.load(Ordering::Relaxed)
}

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Promoted,
    RolledBack,
    /// No verdict before the demo's load ended: the demo aborted it.
    Undecided,
}

async fn run_scenario(
    name: &str,
    candidate: Behaviour,
) -> Result<(Ending, Duration), Box<dyn std::error::Error>> {
    let (v1, v2) = (
        Version::new("shop", "1.41.0"),
        Version::new("shop", "1.42.0"),
    );
    println!("\n=== scenario {name}: rolling out {v2} over {v1} ===");
    let policy = RolloutPolicy::from_toml(
        r#"
        interval = "250ms"
        steps = [25, 50, 100]
        min_samples = 500
        min_samples_per_step = 2000
        no_data_deadline = "20s"
        decision_deadline = "90s"
        # What the built-in load generator mirrors on two cores, for the plan below.
        expected_reads_per_second = 1000
        "#,
    )?;
    let items = PathPattern::new("/items/{id}")?;
    let rollout = Rollout::builder(v1, v2)
        .policy(policy)
        .route_patterns([items])
        .build()?;
    // What the rollout can tell and how soon, worked out before it starts.
    println!("{}", rollout.plan());
    // The start went out as the rollout was built: it is the first of the history.
    for event in rollout.handle().history() {
        print_event(&event);
    }
    let mut events = rollout.handle().subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            print_event(&event);
        }
    });

    let app = ShadowLayer::new(shop(candidate), &rollout).around(shop(V1));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    let sent = load(addr, &rollout, 16, started + Duration::from_secs(100)).await;
    let undecided = !rollout.phase().is_terminal();
    if undecided {
        // No verdict in time: say what the rollout was waiting for.
        let status = rollout.status();
        if let Some(decision) = &status.last_decision {
            println!("the last look, in {}: {decision}", status.phase);
        }
        println!("the shadow: {}", status.shadow);
        // Refused only if the rollout ended in the meantime.
        let _ = rollout
            .handle()
            .abort("the demo's load ended before a verdict");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    printer.abort();
    server.abort();

    let counts = rollout.shadow_counts();
    let ending = match rollout.phase() {
        _ if undecided => Ending::Undecided,
        Phase::Promoted => Ending::Promoted,
        _ => Ending::RolledBack,
    };
    let outcome = match ending {
        Ending::Promoted => "promoted",
        Ending::RolledBack => "rolled_back",
        Ending::Undecided => "undecided (aborted when the load ended)",
    };
    let took = started.elapsed();
    println!(
        "scenario {name}: {outcome} after {:.1}s and {sent} requests; the shadow ran {} reads \
         on both builds ({} dropped when it was full), {} differed only on the candidate",
        took.as_secs_f64(),
        counts.paired,
        counts.dropped_queue_full,
        counts.mismatched,
    );
    Ok((ending, took))
}

/// `--aa RUNS`: the healthy scenario (an identical candidate) RUNS times, each on a fresh
/// rollout and server, and how many were promoted.
async fn aa(runs: u32) -> Result<(), Box<dyn std::error::Error>> {
    let mut endings = Vec::new();
    for run in 1..=runs {
        let (ending, took) = run_scenario(&format!("A/A {run} of {runs}"), V1).await?;
        endings.push((ending, took));
    }
    let count = |wanted| endings.iter().filter(|(e, _)| *e == wanted).count();
    let mut promoted: Vec<f64> = endings
        .iter()
        .filter(|(e, _)| *e == Ending::Promoted)
        .map(|(_, took)| took.as_secs_f64())
        .collect();
    promoted.sort_by(f64::total_cmp);
    let median = promoted
        .get(promoted.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    let slowest = promoted.last().copied().unwrap_or(f64::NAN);
    println!(
        "\nA/A, {runs} runs: {} promoted (median {median:.1}s, slowest {slowest:.1}s), {} rolled back, {} undecided",
        count(Ending::Promoted),
        count(Ending::RolledBack),
        count(Ending::Undecided),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, runs] = args.as_slice()
        && flag == "--aa"
    {
        let runs = runs
            .parse()
            .map_err(|_| format!("--aa takes a number of runs, not {runs:?}"))?;
        return aa(runs).await;
    }
    let slower_and_wrong = Behaviour {
        item_work: V1.item_work * 3,
        wrong_price_every: 50,
    };
    run_scenario("regression", slower_and_wrong).await?;
    run_scenario("healthy", V1).await?;
    Ok(())
}
