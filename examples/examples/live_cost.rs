//! What the tower layer costs the live thread, and what the shadow spends per copy.
//!
//! ```text
//! cargo run --release -p examples --example live_cost
//! ```
//!
//! Three figures, for a trivial axum handler called in-process on a one-thread runtime
//! (so that the live thread is one thread, and the shadow has the other core):
//!
//! 1. **Time per request** for the handler bare, behind the layer with nothing mirrored
//!    (a rolled-back rollout), and behind the layer mirroring every read to an identical
//!    candidate. Goals: the layer adds at most 150 ns, a mirrored read at most 300 ns
//!    more. Interleaved rounds, medians of batches, the machine's load printed beside.
//! 2. **Instructions per request** for the same three, counted by
//!    `valgrind --tool=callgrind` on this program's own request loop (only the live
//!    thread's instructions inside it): the same count whatever else the machine does, so
//!    a regression shows without noise. Skipped when valgrind is not installed.
//! 3. **Shadow CPU per copy beyond the handlers**: the shadow thread's CPU time over a
//!    stream of copies, less what the builds' runs measured (each handler, with the
//!    adapter's request building and response capture, on the copies whose CPU the
//!    shadow measured). Goal: at most 1 µs.
//!
//! `live_cost callgrind-run <bare|layer|mirrored> <requests>` is the loop valgrind runs.

use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http_body_util::BodyExt;
use shadowlib::shadow::{ShadowConfig, ShadowCounts};
use shadowlib::{Rollout, Version};
use shadowlib_tower::{ShadowLayer, ShadowService};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

/// Requests per timed batch; fewer than the shadow's queue holds, so that no copy of a
/// batch is dropped while the shadow catches up.
const BATCH: usize = 250;

fn app(build: &'static str) -> Router {
    Router::new().route("/items/{id}", get(move || async move { build }))
}

/// What is measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bare,
    Layer,
    Mirrored,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Bare, Variant::Layer, Variant::Mirrored];

    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Layer => "layer",
            Variant::Mirrored => "mirrored",
        }
    }

    fn parse(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// The service a variant calls, and its rollout.
enum Target {
    Bare(Router),
    Layered(ShadowService<Router, Router>, Rollout),
}

fn rollout() -> Rollout {
    Rollout::builder(Version::new("cost", "1"), Version::new("cost", "2"))
        .shadow(ShadowConfig::new())
        .shadow_only()
        .without_process_sampling()
        .build()
        .expect("a valid default configuration, inside a runtime")
}

impl Target {
    /// Built inside `rt`, where the rollout's loop runs.
    fn new(rt: &Runtime, variant: Variant) -> Target {
        rt.block_on(async {
            match variant {
                Variant::Bare => Target::Bare(app("ok")),
                Variant::Layer | Variant::Mirrored => {
                    let rollout = rollout();
                    if variant == Variant::Layer {
                        // Rolled back: every request goes to stable, none is copied.
                        rollout
                            .handle()
                            .abort("nothing mirrored")
                            .expect("a shadowing rollout can be rolled back");
                    }
                    let service = ShadowLayer::new(app("ok"), &rollout).layer(app("ok"));
                    Target::Layered(service, rollout)
                }
            }
        })
    }

    fn counts(&self) -> Option<ShadowCounts> {
        match self {
            Target::Bare(_) => None,
            Target::Layered(_, rollout) => Some(rollout.shadow_counts()),
        }
    }

    async fn call(&self) {
        match self {
            Target::Bare(router) => call(router).await,
            Target::Layered(service, _) => call(service).await,
        }
    }

    /// Waits until the shadow has done every copy handed to it.
    async fn drained(&self) {
        if let Target::Layered(_, rollout) = self {
            while rollout.shadow_counts().in_flight() > 0 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    }
}

/// One request, its response body read to the end (when the layer sees it whole).
async fn call<S, B>(service: &S)
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: axum::body::HttpBody,
    B::Error: std::fmt::Debug,
{
    let request = http::Request::get("/items/42")
        .body(Body::empty())
        .expect("a valid request");
    let response = service.clone().oneshot(request).await.expect("infallible");
    response
        .into_body()
        .collect()
        .await
        .expect("an in-memory body");
}

fn live_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            format!(
                "load average {}",
                l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            )
        })
        .unwrap_or_else(|_| "load average unknown".to_owned())
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Figure 1: interleaved batches of every variant, medians per request.
fn timing() {
    let rt = live_runtime();
    let targets: Vec<Target> = Variant::ALL.iter().map(|&v| Target::new(&rt, v)).collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    rt.block_on(async {
        for target in &targets {
            for _ in 0..5 * BATCH {
                target.call().await;
            }
            target.drained().await;
        }
        for _ in 0..120 {
            for (target, samples) in targets.iter().zip(&mut samples) {
                let started = Instant::now();
                for _ in 0..BATCH {
                    target.call().await;
                }
                samples.push(started.elapsed().as_nanos() as f64 / BATCH as f64);
                target.drained().await;
            }
        }
    });
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let (bare, layer, mirrored) = (medians[0], medians[1], medians[2]);
    println!("live_cost: time per request ({}):", load());
    println!("  bare {bare:.0} ns, layer {layer:.0} ns, mirrored {mirrored:.0} ns");
    println!(
        "  layer with nothing mirrored adds {:.0} ns (goal <= 150 ns); a mirrored read adds {:.0} ns more on the live thread (goal <= 300 ns)",
        layer - bare,
        mirrored - layer
    );
    if let Some(counts) = targets[2].counts() {
        println!(
            "  shadow copies: mirrored {}, dropped {}, compared {}, mismatched {}",
            counts.mirrored, counts.dropped_queue_full, counts.compared, counts.mismatched
        );
    }
}

/// The loop valgrind counts: `requests` requests of `variant`, after a warm-up outside it.
fn callgrind_run(variant: Variant, requests: usize) {
    let rt = live_runtime();
    let target = Target::new(&rt, variant);
    // Enough warm-up copies for the slot pool to hold a slot (with grown buffers) for
    // every copy of the counted loop: under valgrind the shadow runs only when the live
    // thread yields, so it may hold them all at once.
    rt.block_on(async {
        for _ in 0..requests + 100 {
            target.call().await;
        }
        target.drained().await;
    });
    counted_requests(&rt, &target, requests);
    if let Some(counts) = target.counts() {
        // The parent reads this line: copies dropped would make the count look cheaper.
        println!("dropped {}", counts.dropped_queue_full);
    }
}

/// The only function whose instructions callgrind collects (`--toggle-collect`).
#[inline(never)]
fn counted_requests(rt: &Runtime, target: &Target, requests: usize) {
    rt.block_on(async {
        for _ in 0..requests {
            target.call().await;
        }
    });
}

/// Figure 2: instructions per request, from callgrind runs of this program.
fn instructions() {
    let Ok(me) = std::env::current_exe() else {
        println!("live_cost: instructions per request: this program's path is unknown");
        return;
    };
    let requests = 900;
    let mut counts = Vec::new();
    for variant in Variant::ALL {
        let out = std::env::temp_dir().join(format!("live_cost.{}.callgrind", variant.name()));
        let run = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--toggle-collect=*counted_requests*")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&me)
            .args(["callgrind-run", variant.name(), &requests.to_string()])
            .output();
        let run = match run {
            Ok(run) if run.status.success() => run,
            Ok(run) => {
                println!(
                    "live_cost: callgrind failed for {}: {}",
                    variant.name(),
                    String::from_utf8_lossy(&run.stderr)
                        .lines()
                        .last()
                        .unwrap_or_default()
                );
                return;
            }
            Err(_) => {
                println!(
                    "live_cost: instructions per request: valgrind is not installed (apt-get install valgrind)"
                );
                return;
            }
        };
        let dropped = String::from_utf8_lossy(&run.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("dropped ").map(str::to_owned))
            .unwrap_or_else(|| "0".to_owned());
        let total = std::fs::read_to_string(&out).ok().and_then(|text| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("totals:")
                        .or_else(|| l.strip_prefix("summary:"))
                })
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        });
        let _ = std::fs::remove_file(&out);
        let Some(total) = total else {
            println!(
                "live_cost: no instruction count in callgrind's output for {}",
                variant.name()
            );
            return;
        };
        counts.push((variant, total as f64 / requests as f64, dropped));
    }
    println!(
        "live_cost: instructions per request (callgrind, live thread only, {requests} requests):"
    );
    for (variant, per_request, dropped) in &counts {
        println!(
            "  {:<8} {per_request:>8.0}  (copies dropped: {dropped})",
            variant.name()
        );
    }
    if let [(_, bare, _), (_, layer, _), (_, mirrored, _)] = counts[..] {
        println!(
            "  layer adds {:.0} instructions, a mirrored read {:.0} more",
            layer - bare,
            mirrored - layer
        );
    }
}

/// Figure 3: the shadow thread's CPU per copy beyond both builds' runs.
fn shadow_cpu() {
    let rt = live_runtime();
    let target = Target::new(&rt, Variant::Mirrored);
    let copies = 50_000;
    rt.block_on(async {
        for _ in 0..copies / BATCH {
            for _ in 0..BATCH {
                target.call().await;
            }
            target.drained().await;
        }
    });
    let Target::Layered(_, rollout) = &target else {
        return;
    };
    // The worker reports its thread's CPU at most every millisecond: let it.
    std::thread::sleep(Duration::from_millis(20));
    let counts = rollout.shadow_counts();
    let shadow = rollout.evidence().shadow;
    // The CPU of a run, on the copies whose CPU was measured (a random sample of them).
    let mean_run_ns =
        |cpu: &Option<shadowlib::Distribution>| cpu.as_ref().map_or(0.0, |d| d.mean());
    let (candidate, twin) = (
        mean_run_ns(&shadow.candidate.cpu_ns),
        mean_run_ns(&shadow.twin.cpu_ns),
    );
    let per_copy = counts.shadow_cpu_ns as f64 / counts.started.max(1) as f64;
    println!(
        "live_cost: shadow CPU per copy ({}), {} copies ({} with their CPU measured), scheduling {:?}:",
        load(),
        counts.started,
        counts.cpu_measured,
        counts.scheduling
    );
    println!(
        "  all {:.2} µs = candidate's run {:.2} µs + twin's run {:.2} µs + the rest {:.2} µs",
        per_copy / 1e3,
        candidate / 1e3,
        twin / 1e3,
        (per_copy - candidate - twin) / 1e3
    );
    println!(
        "  beyond the candidate's run {:.2} µs; beyond both runs {:.2} µs (goal <= 1 µs)",
        (per_copy - candidate) / 1e3,
        (per_copy - candidate - twin) / 1e3
    );
    println!(
        "  dropped {}, compared {}",
        counts.dropped_queue_full, counts.compared
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("callgrind-run") {
        let variant = args.get(2).and_then(|v| Variant::parse(v));
        let requests = args.get(3).and_then(|n| n.parse().ok());
        match (variant, requests) {
            (Some(variant), Some(requests)) => callgrind_run(variant, requests),
            _ => eprintln!("usage: live_cost callgrind-run <bare|layer|mirrored> <requests>"),
        }
        return;
    }
    timing();
    instructions();
    shadow_cpu();
}
