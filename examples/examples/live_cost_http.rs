//! What the shadow costs live over HTTP, measured with `wrk` on 127.0.0.1.
//!
//! ```text
//! apt-get install -y wrk
//! cargo run --release -p examples --example live_cost_http [endpoint|cpu-bound|adaptive]
//! ```
//!
//! * `endpoint`: an endpoint with real work (JSON rendering and a simulated I/O wait), bare,
//!   behind the tower layer with nothing mirrored, and mirroring every read to an
//!   identical candidate, under a light load (one connection): live p50 and p99 of each.
//!   Goal: mirrored p50 and p99 at most 1.03x bare.
//! * `cpu-bound`: a candidate that spends 1 ms of CPU per read against stable's 100 µs,
//!   with `wrk` saturating the server, for both adapters: live throughput and p99 with
//!   every read mirrored against the layer with nothing mirrored (goal: throughput at
//!   least 0.95x, p99 at most 1.10x), and how long the shadowing rollout took to reach a
//!   verdict, on how many copies.
//! * `adaptive`: the same builds with the adaptive share, under a load step from about a
//!   fifth of capacity to saturation and back: the share each second, live p99 per phase.
//!
//! The machine is shared and timing is noisy: every run prints the load average beside it,
//! and the saturated runs alternate the two variants twice. Without an argument, all three.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde::Serialize;
use shadowlib::shadow::{AdaptiveShare, ShadowConfig, ShadowCounts, ShadowResources};
use shadowlib::{Rollout, RolloutDriver, Version};
use shadowlib_tower::ShadowLayer;

/// How long each measured `wrk` run lasts.
const RUN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The builds.

#[derive(Serialize)]
struct Item {
    id: u32,
    name: String,
    price_cents: u64,
    tags: [&'static str; 3],
}

/// The endpoint with real work: 40 items rendered as JSON, and a wait on "the database"
/// (a blocking-pool thread that sleeps, as a driver would on a socket: with the kernel's
/// default timer slack, about 60 µs).
async fn endpoint() -> String {
    endpoint_waiting(Duration::from_micros(5)).await
}

/// The same endpoint with a database ten times slower.
async fn slow_endpoint() -> String {
    endpoint_waiting(Duration::from_micros(600)).await
}

async fn endpoint_waiting(wait: Duration) -> String {
    let items: Vec<Item> = (0..40)
        .map(|id| Item {
            id,
            name: format!("item number {id}"),
            price_cents: u64::from(id) * 199 + 5,
            tags: ["fresh", "in stock", "popular"],
        })
        .collect();
    let body = serde_json::to_string(&items).unwrap_or_default();
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(wait)).await;
    body
}

/// Spends `cpu` of the calling thread's CPU time (not wall time: a preempted spin waits
/// like any other thread).
fn spin(cpu: Duration) {
    let Some(start) = shadowlib::metrics::thread_cpu_time() else {
        return;
    };
    loop {
        for i in 0..2_000u64 {
            std::hint::black_box(i);
        }
        match shadowlib::metrics::thread_cpu_time() {
            Some(now) if now.saturating_sub(start) < cpu => {}
            _ => return,
        }
    }
}

/// What a build does per request.
#[derive(Clone, Copy)]
enum Work {
    Endpoint,
    SlowEndpoint,
    Spin(Duration),
}

const STABLE_CPU: Duration = Duration::from_micros(100);
const CANDIDATE_CPU: Duration = Duration::from_millis(1);

fn axum_app(work: Work) -> Router {
    match work {
        Work::Endpoint => Router::new().route("/", get(endpoint)),
        Work::SlowEndpoint => Router::new().route("/", get(slow_endpoint)),
        Work::Spin(cpu) => Router::new().route(
            "/",
            get(move || async move {
                spin(cpu);
                "ok"
            }),
        ),
    }
}

fn actix_app(
    work: Work,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new().route(
        "/",
        actix_web::web::get().to(move || async move {
            match work {
                Work::Endpoint => endpoint().await,
                Work::SlowEndpoint => slow_endpoint().await,
                Work::Spin(cpu) => {
                    spin(cpu);
                    "ok".to_owned()
                }
            }
        }),
    )
}

// ---------------------------------------------------------------------------------------
// Rollouts and servers.

/// Where the request goes through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layering {
    Bare,
    NothingMirrored,
    Mirrored,
}

/// A shadowing rollout, driven by hand so that it never moves traffic and its looks say
/// when the evidence would decide (or rolled back at once, to mirror nothing).
fn rollout(layering: Layering, resources: ShadowResources) -> (Rollout, RolloutDriver) {
    let (rollout, driver) = Rollout::builder(Version::new("http", "1"), Version::new("http", "2"))
        .shadow(ShadowConfig::new().with_resources(resources))
        .shadow_only()
        .without_process_sampling()
        .build_driven()
        .expect("a valid configuration");
    if layering == Layering::NothingMirrored {
        rollout
            .handle()
            .abort("nothing mirrored")
            .expect("a shadowing rollout can be rolled back");
    }
    (rollout, driver)
}

struct Server {
    addr: SocketAddr,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// The live runtime: two workers, one per core.
fn serve_axum(app: Router) -> Server {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a free port on loopback");
            let _ = addr_tx.send(listener.local_addr().expect("a bound address"));
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
    });
    let addr = addr_rx.recv().expect("the server started");
    Server {
        addr,
        stop: Some(Box::new(move || {
            let _ = stop_tx.send(());
        })),
    }
}

fn axum_server(layering: Layering, stable: Work, candidate: Work, rollout: &Rollout) -> Server {
    let app = match layering {
        Layering::Bare => axum_app(stable),
        _ => ShadowLayer::new(axum_app(candidate), rollout).around(axum_app(stable)),
    };
    serve_axum(app)
}

/// Two actix workers, one per core.
fn actix_server(layering: Layering, stable: Work, candidate: Work, rollout: &Rollout) -> Server {
    let shadow = (layering != Layering::Bare).then(|| {
        shadowlib_actix::Shadow::new(
            move || actix_app(stable),
            move || actix_app(candidate),
            rollout,
        )
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let bind = ("127.0.0.1", 0);
            let (addr, server) = match shadow {
                Some(shadow) => {
                    let server =
                        actix_web::HttpServer::new(move || actix_app(stable).wrap(shadow.clone()))
                            .workers(2)
                            .disable_signals()
                            .bind(bind)
                            .expect("a free port on loopback");
                    (server.addrs()[0], server.run())
                }
                None => {
                    let server = actix_web::HttpServer::new(move || actix_app(stable))
                        .workers(2)
                        .disable_signals()
                        .bind(bind)
                        .expect("a free port on loopback");
                    (server.addrs()[0], server.run())
                }
            };
            let _ = tx.send((addr, server.handle()));
            let _ = server.await;
        });
    });
    let (addr, handle) = rx.recv().expect("the server started");
    Server {
        addr,
        // The stop command is sent at once; its completion is not waited for.
        stop: Some(Box::new(move || drop(handle.stop(false)))),
    }
}

/// Which adapter serves.
#[derive(Clone, Copy, Debug)]
enum Adapter {
    Tower,
    Actix,
}

fn server(
    adapter: Adapter,
    layering: Layering,
    stable: Work,
    candidate: Work,
    rollout: &Rollout,
) -> Server {
    match adapter {
        Adapter::Tower => axum_server(layering, stable, candidate, rollout),
        Adapter::Actix => actix_server(layering, stable, candidate, rollout),
    }
}

// ---------------------------------------------------------------------------------------
// The load generator.

/// What one `wrk` run measured.
#[derive(Debug, Clone, Copy)]
struct Load {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `wrk` against `addr` for `duration` with `connections`, each waiting `delay_ms` between
/// its requests (0: as fast as the server answers); `None` when `wrk` is missing or says
/// nothing usable.
fn wrk(addr: SocketAddr, connections: u32, duration: Duration, delay_ms: u32) -> Option<Load> {
    let mut command = Command::new("wrk");
    command.args([
        "-t1".to_owned(),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs()),
        "--latency".to_owned(),
        "--timeout".to_owned(),
        "10s".to_owned(),
    ]);
    let script = std::env::temp_dir().join(format!("live_cost_http_delay_{delay_ms}.lua"));
    if delay_ms > 0 {
        std::fs::write(&script, format!("function delay() return {delay_ms} end\n")).ok()?;
        command.arg("-s").arg(&script);
    }
    let output = command.arg(format!("http://{addr}/")).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let micros = |value: &str| -> Option<f64> {
        let (number, factor) = if let Some(n) = value.strip_suffix("us") {
            (n, 1.0)
        } else if let Some(n) = value.strip_suffix("ms") {
            (n, 1e3)
        } else if let Some(n) = value.strip_suffix('s') {
            (n, 1e6)
        } else {
            (value, 1.0)
        };
        number.parse::<f64>().ok().map(|n| n * factor)
    };
    let percentile = |label: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| micros(rest.trim()))
    };
    let rps = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|rest| rest.trim().parse().ok())?;
    Some(Load {
        rps,
        p50_us: percentile("50%")?,
        p99_us: percentile("99%")?,
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            format!(
                "load {}",
                l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            )
        })
        .unwrap_or_else(|_| "load unknown".to_owned())
}

fn show(what: &str, load: &Load) {
    println!(
        "    {what:<26} {:>8.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs  ({})",
        load.rps,
        load.p50_us,
        load.p99_us,
        load_average()
    );
}

fn copies(counts: &ShadowCounts) -> String {
    format!(
        "copies: mirrored {}, dropped {}, started {}, compared {}, starved {}",
        counts.mirrored, counts.dropped_queue_full, counts.started, counts.compared, counts.starved
    )
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

// ---------------------------------------------------------------------------------------
// The figures.

/// The endpoint with real work: bare, nothing mirrored, every read mirrored to an
/// identical candidate, and to one ten times slower on I/O.
fn endpoint_figure() {
    println!("live_cost_http: an endpoint with real work (tower), one connection, {RUN:?} a run:");
    let variants = [
        ("bare", Layering::Bare, Work::Endpoint),
        (
            "nothing mirrored",
            Layering::NothingMirrored,
            Work::Endpoint,
        ),
        ("every read mirrored", Layering::Mirrored, Work::Endpoint),
        (
            "mirrored, 10x slower I/O",
            Layering::Mirrored,
            Work::SlowEndpoint,
        ),
    ];
    let mut results: Vec<Vec<Load>> = vec![Vec::new(); variants.len()];
    for round in 0..3 {
        for ((name, layering, candidate), loads) in variants.iter().zip(&mut results) {
            let (rollout, _driver) = rollout(*layering, ShadowResources::default());
            let server = axum_server(*layering, Work::Endpoint, *candidate, &rollout);
            let Some(load) = wrk(server.addr, 1, RUN, 0) else {
                println!("  wrk is not installed (apt-get install -y wrk)");
                return;
            };
            show(&format!("{name} ({})", round + 1), &load);
            if *layering == Layering::Mirrored {
                println!("      {}", copies(&rollout.shadow_counts()));
            }
            loads.push(load);
        }
    }
    let p = |variant: usize, pick: fn(&Load) -> f64| {
        median(results[variant].iter().map(pick).collect())
    };
    for (variant, (name, _, _)) in variants.iter().enumerate().skip(1) {
        println!(
            "  {name}: p50 {:.3}x bare, p99 {:.3}x bare (medians of three runs)",
            p(variant, |l| l.p50_us) / p(0, |l| l.p50_us),
            p(variant, |l| l.p99_us) / p(0, |l| l.p99_us)
        );
    }
    println!(
        "  goals: every read mirrored p50 and p99 <= 1.03x bare; 10x slower I/O p99 <= 1.05x bare"
    );
}

/// Looks at `rollout` once a second on a thread of its own until its evidence decides or
/// `done` is set; returns when it decided, what, on how many pairs and copies.
fn watch_verdict(
    rollout: Rollout,
    mut driver: RolloutDriver,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Option<(Duration, String, u64, u64)>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let decision = driver.look().await.to_string();
                if decision.contains("the evidence says") {
                    let counts = rollout.shadow_counts();
                    let pairs = rollout.evidence().shadow_pairs();
                    return Some((started.elapsed(), decision, pairs, counts.started));
                }
            }
            None
        })
    })
}

/// The CPU-bound candidate under saturation, for one adapter.
fn cpu_bound_figure(adapter: Adapter) {
    println!(
        "live_cost_http: CPU-bound candidate ({CANDIDATE_CPU:?} of CPU a read against stable's {STABLE_CPU:?}), {adapter:?}, wrk at saturation (16 connections), {RUN:?} a run:"
    );
    let (stable, candidate) = (Work::Spin(STABLE_CPU), Work::Spin(CANDIDATE_CPU));
    let mut plain = Vec::new();
    let mut mirrored = Vec::new();
    let mut verdict = None;
    for round in 0..3 {
        let (rollout_off, _driver) = rollout(Layering::NothingMirrored, ShadowResources::default());
        let server_off = server(
            adapter,
            Layering::NothingMirrored,
            stable,
            candidate,
            &rollout_off,
        );
        let Some(load) = wrk(server_off.addr, 16, RUN, 0) else {
            println!("  wrk is not installed (apt-get install -y wrk)");
            return;
        };
        show(&format!("nothing mirrored ({})", round + 1), &load);
        plain.push(load);
        drop(server_off);

        let (rollout_on, driver) = rollout(Layering::Mirrored, ShadowResources::default());
        let server_on = server(adapter, Layering::Mirrored, stable, candidate, &rollout_on);
        let done = Arc::new(AtomicBool::new(false));
        let watcher = watch_verdict(rollout_on.clone(), driver, Arc::clone(&done));
        let started = Instant::now();
        let Some(load) = wrk(server_on.addr, 16, RUN, 0) else {
            return;
        };
        show(&format!("every read mirrored ({})", round + 1), &load);
        println!("      {}", copies(&rollout_on.shadow_counts()));
        mirrored.push(load);
        if round == 0 {
            // After the saturating run, light traffic (one connection, 10 ms apart) until
            // the evidence decides, for at most two minutes more.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !watcher.is_finished() && Instant::now() < deadline {
                let _ = wrk(server_on.addr, 1, Duration::from_secs(5), 10);
            }
            done.store(true, Ordering::Relaxed);
            verdict = watcher
                .join()
                .ok()
                .flatten()
                .map(|v| (v, started.elapsed()));
            println!(
                "      after the light traffic: {}",
                copies(&rollout_on.shadow_counts())
            );
        } else {
            done.store(true, Ordering::Relaxed);
            let _ = watcher.join();
        }
    }
    // Ratios of the medians of three runs each, and round by round (runs next to each
    // other share the machine's load).
    let ratio = |pick: fn(&Load) -> f64| {
        median(mirrored.iter().map(pick).collect()) / median(plain.iter().map(pick).collect())
    };
    let rounds = |pick: fn(&Load) -> f64| {
        mirrored
            .iter()
            .zip(&plain)
            .map(|(on, off)| format!("{:.3}", pick(on) / pick(off)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  every read mirrored against nothing mirrored: throughput {:.3}x (goal >= 0.95x; by round {}), p99 {:.3}x (goal <= 1.10x; by round {})",
        ratio(|l| l.rps),
        rounds(|l| l.rps),
        ratio(|l| l.p99_us),
        rounds(|l| l.p99_us)
    );
    match verdict {
        Some(((at, decision, pairs, started), _)) => println!(
            "  verdict after {:.1} s of shadowing, on {pairs} pairs ({started} copies run): {decision}",
            at.as_secs_f64()
        ),
        None => println!("  no verdict within the run and two minutes of light traffic"),
    }
}

/// The adaptive share under a load step.
fn adaptive_figure() {
    println!(
        "live_cost_http: the adaptive share (tower), a load step from about a fifth of capacity to saturation and back:"
    );
    let resources = ShadowResources {
        adaptive: Some(AdaptiveShare::default()),
        ..ShadowResources::default()
    };
    let (rollout, _driver) = rollout(Layering::Mirrored, resources);
    let server = axum_server(
        Layering::Mirrored,
        Work::Spin(STABLE_CPU),
        Work::Spin(CANDIDATE_CPU),
        &rollout,
    );
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (rollout, done) = (rollout.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut timeline = Vec::new();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let counts = rollout.shadow_counts();
                timeline.push(format!(
                    "{:>3.0}s {:>6} {}",
                    started.elapsed().as_secs_f64(),
                    counts.mirror_share.to_string(),
                    counts.share_reason
                ));
            }
            timeline
        })
    };
    let phase = Duration::from_secs(15);
    // Four connections 1 ms apart: about a fifth of what the two cores serve.
    let phases = [
        ("light (4 conn., 1 ms apart)", 4, 1),
        ("saturating (32 conn.)", 32, 0),
        ("light again", 4, 1),
    ];
    let mut loads = Vec::new();
    for (name, connections, delay) in phases {
        match wrk(server.addr, connections, phase, delay) {
            Some(load) => loads.push((name, load)),
            None => {
                println!("  wrk is not installed (apt-get install -y wrk)");
                done.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let timeline = sampler.join().unwrap_or_default();
    println!("  the share in force, each second:");
    for line in timeline.chunks(5) {
        println!("    {}", line.join(" | "));
    }
    for (name, load) in &loads {
        show(name, load);
    }
    println!("  {}", copies(&rollout.shadow_counts()));
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".to_owned());
    if matches!(which.as_str(), "endpoint" | "all") {
        endpoint_figure();
    }
    if matches!(which.as_str(), "cpu-bound" | "all") {
        cpu_bound_figure(Adapter::Tower);
        cpu_bound_figure(Adapter::Actix);
    }
    if matches!(which.as_str(), "adaptive" | "all") {
        adaptive_figure();
    }
}
