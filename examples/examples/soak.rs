//! A soak: steady load on an axum service for a set time, with a candidate that hangs on
//! 1% of its shadow copies and panics on another 1%.
//!
//! ```text
//! cargo run --release -p examples --example soak -- --duration 10m [--rate 1000] [--report 60s]
//! ```
//!
//! The service serves `ShadowLayer::new(v2, &rollout).around(v1)` on 127.0.0.1; in-process
//! clients send `--rate` reads a second in all, paced, for `--duration`. The rollout only
//! compares (it never moves traffic, so every read is mirrored all the soak long), looks
//! every second, and its decision is printed. Every `--report` (a minute by default) the
//! soak prints the process's RSS, its threads and the tokio tasks alive, and what the
//! shadow did with its copies. At the end it checks: no live request failed, the rollout
//! decided (the evidence says roll back: the candidate fails 2% of reads the twin
//! answers), no thread or task leaked and RSS stayed bounded; it exits 1 otherwise.
//! Everything is bounded: the duration (at most 24 h), the rate, and the hung copies,
//! which the shadow's timeout cancels.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shadowlib::shadow::{ShadowBudget, ShadowConfig, in_shadow};
use shadowlib::{Rollout, RolloutPolicy, Version};
use shadowlib_tower::ShadowLayer;
use tokio::time::{Instant, MissedTickBehavior};

const CLIENTS: u64 = 8;
const LONGEST: Duration = Duration::from_secs(24 * 60 * 60);

/// What the command line asks for.
struct Args {
    duration: Duration,
    rate: u64,
    report: Duration,
}

/// `90`, `90s`, `10m` or `2h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (90s, 10m, 2h)"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("`{text}`: the unit is s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(600),
        rate: 1000,
        report: Duration::from_secs(60),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--duration" => args.duration = parse_duration(&value)?,
            "--report" => args.report = parse_duration(&value)?,
            "--rate" => {
                args.rate = value
                    .parse()
                    .map_err(|_| format!("--rate: `{value}` is not a number"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.duration.is_zero() || args.duration > LONGEST {
        return Err("--duration is between 1s and 24h".into());
    }
    if !(CLIENTS..=20_000).contains(&args.rate) {
        return Err(format!("--rate is between {CLIENTS} and 20000"));
    }
    if args.report.is_zero() {
        return Err("--report is at least 1s".into());
    }
    Ok(args)
}

/// The process's resident set in bytes and its thread count, from `/proc/self/status`
/// (Linux; `None` elsewhere).
fn rss_and_threads() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    (field("VmRSS:").map(|kib| kib * 1024), field("Threads:"))
}

/// A build that answers `/items/{id}`; the candidate, as a shadow, hangs on every 100th
/// copy and panics on every 100th (another one), live never.
fn build(copies: Option<Arc<AtomicU64>>) -> Router {
    Router::new().route(
        "/items/{id}",
        get(move |Path(id): Path<u64>| {
            let copies = copies.clone();
            async move {
                if let Some(copies) = copies.filter(|_| in_shadow()) {
                    match copies.fetch_add(1, Ordering::Relaxed) % 100 {
                        0 => std::future::pending::<()>().await,
                        50 => panic!("the candidate panicked on a copy, as planned"),
                        _ => {}
                    }
                }
                // The same answer from both builds: the candidate fails only by hanging and
                // panicking, which is what the rollout must find.
                format!("{{\"id\": {id}}}")
            }
        }),
    )
}

struct Sample {
    at: Duration,
    rss: Option<u64>,
    threads: Option<u64>,
    tasks: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("soak: {why}");
            std::process::exit(2);
        }
    };
    // 1% of copies panic by design: say so once, not once a copy.
    let planned = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&planned);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.to_string().contains("as planned") {
            counted.fetch_add(1, Ordering::Relaxed);
        } else {
            default_hook(info);
        }
    }));
    match soak(&args, &planned).await {
        Ok(()) => println!("soak: passed"),
        Err(why) => {
            println!("soak: FAILED: {why}");
            std::process::exit(1);
        }
    }
}

async fn soak(args: &Args, planned_panics: &AtomicU64) -> Result<(), String> {
    let policy = RolloutPolicy::from_toml("interval = \"1s\"").map_err(|e| e.to_string())?;
    let budget = ShadowBudget {
        timeout: Duration::from_millis(200),
        ..ShadowBudget::default()
    };
    let rollout = Rollout::builder(Version::new("soak", "1"), Version::new("soak", "2"))
        .policy(policy)
        .shadow(ShadowConfig::new().with_budget(budget))
        .shadow_only()
        .build()
        .map_err(|e| e.to_string())?;
    let copies = Arc::new(AtomicU64::new(0));
    let app = ShadowLayer::new(build(Some(copies)), &rollout).around(build(None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let started = Instant::now();
    let end = started + args.duration;
    let served = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let per_client = Duration::from_secs_f64(CLIENTS as f64 / args.rate as f64);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (client, served, errors) = (client.clone(), Arc::clone(&served), Arc::clone(&errors));
        clients.push(tokio::spawn(async move {
            let mut pace = tokio::time::interval(per_client);
            pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut n = c;
            while Instant::now() < end {
                pace.tick().await;
                let uri = format!("http://{addr}/items/{}", n % 1000);
                n += CLIENTS;
                let ok = match tokio::time::timeout(
                    Duration::from_secs(5),
                    client.get(uri.parse().expect("a valid uri")),
                )
                .await
                {
                    Ok(Ok(response)) => {
                        let status = response.status();
                        let body = response.into_body().collect().await;
                        status.is_success() && body.is_ok()
                    }
                    _ => false,
                };
                served.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    println!(
        "soak: {:?} at {} reads/s on http://{addr}, candidate hangs on 1% of copies and panics on 1%",
        args.duration, args.rate
    );
    let runtime = tokio::runtime::Handle::current();
    let mut samples: Vec<Sample> = Vec::new();
    let mut report =
        tokio::time::interval_at(started + args.report.min(args.duration), args.report);
    // The first sample at the first report, once the load and the shadow are running:
    // leaks are judged from there.
    loop {
        tokio::select! {
            _ = report.tick() => {}
            _ = tokio::time::sleep_until(end) => {}
        }
        let now = Instant::now();
        let (rss, threads) = rss_and_threads();
        let sample = Sample {
            at: now - started,
            rss,
            threads,
            tasks: runtime.metrics().num_alive_tasks(),
        };
        let counts = rollout.shadow_counts();
        println!(
            "t={:>5}s rss={} threads={} tasks={} live={} live_errors={} mirrored={} compared={} timed_out={} panicked={} dropped={} in_flight={}",
            sample.at.as_secs(),
            sample
                .rss
                .map_or("?".into(), |b| format!("{:.1}MiB", b as f64 / 1048576.0)),
            sample.threads.map_or("?".into(), |t| t.to_string()),
            sample.tasks,
            served.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
            counts.mirrored,
            counts.compared,
            counts.timed_out,
            counts.panicked,
            counts.dropped_queue_full,
            counts.in_flight(),
        );
        samples.push(sample);
        if now >= end {
            break;
        }
    }
    for client in clients {
        client
            .await
            .map_err(|e| format!("a client task failed: {e}"))?;
    }
    server.abort();

    let status = rollout.status();
    let decision = status
        .last_decision
        .map(|d| d.to_string())
        .unwrap_or_default();
    println!("soak: the rollout's last decision: {decision}");
    println!(
        "soak: {} planned candidate panics caught",
        planned_panics.load(Ordering::Relaxed)
    );

    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        return Err(format!("{errors} live requests failed"));
    }
    if !decision.contains("the evidence says roll back") {
        return Err(format!("the rollout did not decide: {decision}"));
    }
    let counts = rollout.shadow_counts();
    if counts.timed_out == 0 || counts.panicked == 0 {
        return Err("the candidate's hangs and panics were not seen".into());
    }
    // Leaks: compared with the first report, once the load and the shadow are running.
    let (first, final_sample) = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err("no sample taken".into()),
    };
    if let (Some(before), Some(after)) = (first.threads, final_sample.threads)
        && after > before + 2
    {
        return Err(format!("threads grew from {before} to {after}"));
    }
    // The clients and the server are done: what is left is the rollout's loop and a few
    // connections closing, not one task per hung copy.
    let tasks_now = runtime.metrics().num_alive_tasks();
    if tasks_now > 64 {
        return Err(format!("{tasks_now} tasks still alive"));
    }
    if let (Some(before), Some(after)) = (first.rss, final_sample.rss)
        && after > before.saturating_mul(2).saturating_add(32 << 20)
    {
        return Err(format!("RSS grew from {before} to {after} bytes"));
    }
    Ok(())
}
