//! An axum service rolling out its v2 beside v1, driven by its own load generator.
//!
//! ```text
//! cargo run -p examples --example axum_shadow -- --regression latency|errors|none
//! cargo run -p examples --example axum_shadow -- --serve 15 [--port 8080] [--no-mirror | --layer-only]
//! ```
//!
//! The default mode builds the rollout (which starts it and its loop), serves
//! `ShadowLayer::new(v2, &rollout).around(v1)` on 127.0.0.1, v1 stable and v2 the
//! candidate, and sends a bounded load of sticky users (90% reads, 10% writes) until the
//! rollout ends. v2 carries the chosen regression:
//! 20 ms more latency on reads, 20% of reads failing with 500, or none. It prints each
//! transition with its reasons and ends with `outcome: rolled_back` or
//! `outcome: promoted`. It stops by itself: the load is bounded to 30 s and 200,000
//! requests; a rollout still undecided then is aborted.
//!
//! `--serve SECONDS` instead serves `GET /ping` for that long with every read mirrored to
//! an identical shadow, in a rollout that only compares and never moves traffic (without
//! the middleware with `--no-mirror`; with the middleware but the rollout aborted as soon
//! as it is built, so nothing mirrored, with `--layer-only`), for an external load tool
//! such as
//! `wrk -t1 -c32 -d10s http://127.0.0.1:PORT/ping`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shadowlib::mirror::StickyKey;
use shadowlib::shadow::ShadowConfig;
use shadowlib::{Phase, Rollout, RolloutBuilder, RolloutEvent, RolloutPolicy, Version};
use shadowlib_tower::ShadowLayer;
use tokio::net::TcpListener;
use tokio::time::Instant;

const LOAD_DEADLINE: Duration = Duration::from_secs(30);
const MAX_REQUESTS: u64 = 200_000;
const CLIENTS: u64 = 8;
const USERS: u64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regression {
    Latency,
    Errors,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Rollout(Regression),
    Serve {
        seconds: u64,
        port: u16,
        serving: Serving,
    },
}

/// What `--serve` puts in front of the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serving {
    /// The middleware, shadowing: every read mirrored.
    Mirroring,
    /// The middleware, rollout rolled back: nothing mirrored.
    LayerOnly,
    /// The handler alone.
    Bare,
}

#[derive(Debug)]
struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\nusage: axum_shadow [--regression latency|errors|none] | --serve SECONDS [--port PORT] [--no-mirror | --layer-only]",
            self.0
        )
    }
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Mode, UsageError> {
    let mut regression = Regression::Latency;
    let (mut serve, mut port, mut serving) = (None, 0u16, Serving::Mirroring);
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| UsageError(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--regression" => {
                regression = match value("--regression")?.as_str() {
                    "latency" => Regression::Latency,
                    "errors" => Regression::Errors,
                    "none" => Regression::None,
                    other => return Err(UsageError(format!("unknown regression `{other}`"))),
                }
            }
            "--serve" => {
                let text = value("--serve")?;
                serve = Some(text.parse().map_err(|_| {
                    UsageError(format!("--serve: `{text}` is not a number of seconds"))
                })?);
            }
            "--port" => {
                let text = value("--port")?;
                port = text
                    .parse()
                    .map_err(|_| UsageError(format!("--port: `{text}` is not a port")))?;
            }
            "--no-mirror" => serving = Serving::Bare,
            "--layer-only" => serving = Serving::LayerOnly,
            other => return Err(UsageError(format!("unknown argument `{other}`"))),
        }
    }
    Ok(match serve {
        Some(seconds) => Mode::Serve {
            seconds,
            port,
            serving,
        },
        None => Mode::Rollout(regression),
    })
}

/// Simulated work of a read: a lookup taking a couple of milliseconds.
const WORK: Duration = Duration::from_millis(2);

fn v1() -> Router {
    Router::new()
        .route(
            "/items/{id}",
            get(|Path(id): Path<u64>| async move {
                tokio::time::sleep(WORK).await;
                format!("{{\"id\":{id},\"name\":\"item {id}\"}}")
            })
            .post(|| async { StatusCode::CREATED }),
        )
        .route("/ping", get(|| async { "pong" }))
}

fn v2(regression: Regression) -> Router {
    let served = Arc::new(AtomicU64::new(0));
    Router::new()
        .route(
            "/items/{id}",
            get(move |Path(id): Path<u64>| {
                let n = served.fetch_add(1, Ordering::Relaxed);
                async move {
                    tokio::time::sleep(WORK).await;
                    match regression {
                        Regression::Latency => tokio::time::sleep(Duration::from_millis(20)).await,
                        Regression::Errors if n.is_multiple_of(5) => {
                            return Err((
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "inventory lookup failed",
                            ));
                        }
                        Regression::Errors | Regression::None => {}
                    }
                    Ok(format!("{{\"id\":{id},\"name\":\"item {id}\"}}"))
                }
            })
            .post(|| async { StatusCode::CREATED }),
        )
        .route("/ping", get(|| async { "pong" }))
}

/// The rollout of v2 over v1, not yet built: sticky per `session` cookie, judged by the
/// default predictor (the sequential tests on the shadow's pairs, then on the canary).
fn rollout_builder(policy: RolloutPolicy) -> Result<RolloutBuilder, Box<dyn std::error::Error>> {
    let config = ShadowConfig::new().with_sticky_key(StickyKey::cookie("session")?);
    Ok(
        Rollout::builder(Version::new("shop", "v1"), Version::new("shop", "v2"))
            .policy(policy)
            .shadow(config),
    )
}

async fn bind(port: u16) -> Result<(TcpListener, std::net::SocketAddr), std::io::Error> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

fn describe(event: &RolloutEvent) -> String {
    let t = event.transition;
    format!(
        "[{:>5.1}s] {} -> {} (candidate share {}): {}",
        event.elapsed.as_secs_f64(),
        t.from,
        t.to,
        t.share_after,
        event.decision
    )
}

#[derive(Default)]
struct LoadCounts {
    sent: AtomicU64,
    failed: AtomicU64,
    server_errors: AtomicU64,
}

/// One client: sticky user sessions, 90% reads and 10% writes, until aborted or a bound.
async fn client_loop(addr: std::net::SocketAddr, client_id: u64, counts: Arc<LoadCounts>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let started = Instant::now();
    let mut n = client_id;
    loop {
        if started.elapsed() > LOAD_DEADLINE
            || counts.sent.fetch_add(1, Ordering::Relaxed) >= MAX_REQUESTS
        {
            return;
        }
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let user = (n >> 33) % USERS;
        let write = (n >> 20).is_multiple_of(10);
        let request = http::Request::builder()
            .method(if write { "POST" } else { "GET" })
            .uri(format!("http://{addr}/items/{}", (n >> 40) % 1000))
            .header("cookie", format!("session=user-{user}"))
            .body(Full::new(Bytes::new()));
        let Ok(request) = request else {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match client.request(request).await {
            Ok(response) => {
                if response.status().is_server_error() {
                    counts.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                if response.into_body().collect().await.is_err() {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn rollout(regression: Regression) -> Result<(), Box<dyn std::error::Error>> {
    let policy = RolloutPolicy::from_toml(
        r#"
        interval = "250ms"
        steps = [10, 50, 100]
        min_samples = 300
        min_samples_per_step = 150
        no_data_deadline = "10s"
        "#,
    )?;
    // Building starts the rollout (shadowing) and its loop, which first looks one interval
    // from now: subscribing next misses no decision.
    let rollout = rollout_builder(policy)?.build()?;
    let handle = rollout.handle();
    let mut events = handle.subscribe();
    let app = ShadowLayer::new(v2(regression), &rollout).around(v1());
    let (listener, addr) = bind(0).await?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("serving v1 on http://{addr} with v2 as the candidate (regression: {regression:?})");
    let status = rollout.status();
    println!(
        "[  0.0s] {} -> {} (candidate share {}): the rollout started when it was built",
        Phase::Idle,
        status.phase,
        status.share
    );

    let counts = Arc::new(LoadCounts::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client_loop(addr, id + 1, counts.clone())))
        .collect();
    let stop_clients: Vec<_> = clients.iter().map(|c| c.abort_handle()).collect();
    let load = join_all(clients);
    tokio::pin!(load);
    let mut load_finished = false;

    let started = Instant::now();
    let last_event = loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    println!("{}", describe(&event));
                    if event.transition.to.is_terminal() {
                        break Some(event);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => println!("({missed} events missed)"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break None,
            },
            _ = &mut load, if !load_finished => {
                load_finished = true;
                println!("load finished after {:.1}s without a verdict; aborting the rollout", started.elapsed().as_secs_f64());
                // Only a rollout that ended in the meantime refuses, and then it has its verdict.
                let _ = handle.abort("no verdict within the example's time bound");
            }
        }
    };
    let status = rollout.status();
    stop_clients.iter().for_each(|client| client.abort());
    server.abort();

    let shadow = rollout.shadow_counts();
    println!(
        "requests: {} sent, {} failed, {} answered 5xx",
        counts.sent.load(Ordering::Relaxed).min(MAX_REQUESTS),
        counts.failed.load(Ordering::Relaxed),
        counts.server_errors.load(Ordering::Relaxed)
    );
    println!(
        "shadow: {} mirrored, {} writes and other non-reads never mirrored, {} dropped (queue full), {} compared, {} mismatched",
        shadow.mirrored,
        shadow.not_read,
        shadow.dropped_queue_full,
        shadow.compared,
        shadow.mismatched
    );
    // The status may not hold the last event's prediction yet when the event arrives.
    let prediction = last_event
        .and_then(|event| event.prediction)
        .or(status.last_prediction);
    if let Some(prediction) = &prediction {
        for reason in &prediction.reasons {
            println!("  {reason}");
        }
    }
    println!(
        "outcome: {}",
        match status.phase {
            Phase::Promoted => "promoted",
            _ => "rolled_back",
        }
    );
    Ok(())
}

/// Waits for every task; a task that panicked is reported, not propagated.
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        if let Err(e) = task.await
            && !e.is_cancelled()
        {
            eprintln!("a load client failed: {e}");
        }
    }
}

async fn serve(
    seconds: u64,
    port: u16,
    serving: Serving,
) -> Result<(), Box<dyn std::error::Error>> {
    let (listener, addr) = bind(port).await?;
    let deadline = Duration::from_secs(seconds);
    let builder = rollout_builder(RolloutPolicy::default())?;
    let rollout = match serving {
        Serving::Bare => {
            println!("serving http://{addr}/ping for {seconds}s, without the middleware");
            let _ = tokio::time::timeout(deadline, axum::serve(listener, v1())).await;
            return Ok(());
        }
        // Every read is mirrored and compared; no live request is ever steered to the copy.
        Serving::Mirroring => builder.shadow_only().build()?,
        Serving::LayerOnly => {
            let rollout = builder.build()?;
            // A rolled-back rollout mirrors nothing: what is left is the layer's own cost.
            rollout
                .handle()
                .abort("--layer-only: measure the layer alone")?;
            rollout
        }
    };
    let app = ShadowLayer::new(v1(), &rollout).around(v1());
    println!("serving http://{addr}/ping for {seconds}s through the middleware ({serving:?})");
    let _ = tokio::time::timeout(deadline, axum::serve(listener, app)).await;
    let shadow = rollout.shadow_counts();
    println!(
        "shadow: {} mirrored, {} dropped (queue full), {} compared, {} mismatched",
        shadow.mirrored, shadow.dropped_queue_full, shadow.compared, shadow.mismatched
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let mode = match parse_args(std::env::args().skip(1)) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let result = match mode {
        Mode::Rollout(regression) => rollout(regression).await,
        Mode::Serve {
            seconds,
            port,
            serving,
        } => serve(seconds, port, serving).await,
    };
    if let Err(e) = result {
        eprintln!("axum_shadow: {e}");
        std::process::exit(1);
    }
}
