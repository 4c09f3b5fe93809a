//! Two builds of one shop in one binary: the released `shop` 1.4.0 and the working tree's
//! 1.5.0, both dependencies of this crate under two names (see its Cargo.toml):
//!
//! ```toml
//! shop_stable = { package = "shop", path = "../shop-1.4" }  # in a real project: a git tag
//! shop_candidate = { package = "shop", path = "../shop" }   # the working tree
//! ```
//!
//! Each build's crate gives its `axum::Router` and its `VERSION`; the service serves
//! `ShadowLayer::new(shop_candidate::router(), &rollout).around(shop_stable::router())`.
//!
//! ```text
//! cargo run -p shop-service                       # the in-process demo below, then exits
//! cargo run -p shop-service -- --for 30 [--port 8080]
//! ```
//!
//! Without arguments it runs two rollouts in-process (requests call the app directly, no
//! socket), each bounded to 30 s and 100,000 requests, and prints each transition:
//!
//! * `two-versions`: 1.5.0 over 1.4.0, two builds of the code;
//! * `two-configurations`: the simpler case, the same code (1.5.0) with another
//!   configuration (a cache of 256 items instead of none). `shadowlib::Releases` pairs each
//!   build with its configuration and is the rollout's release switch, so on promotion or
//!   rollback the configuration in force switches with the code.
//!
//! With `--for SECONDS` it serves the two versions on 127.0.0.1 (port 0, any free one,
//! unless `--port`) for that long, for a client of your own (`curl
//! http://127.0.0.1:PORT/items/7`), printing each transition, then the status.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use shadowlib::mirror::StickyKey;
use shadowlib::shadow::ShadowConfig;
use shadowlib::{
    Arm, Phase, Releases, Rollout, RolloutBuilder, RolloutEvent, RolloutHandle, RolloutPolicy,
    ThresholdPredictor, ThresholdPredictorConfig, Version,
};
use shadowlib_tower::ShadowLayer;
use tokio::time::Instant;
use tower::ServiceExt;

/// The demo's load stops after this long or this many requests, whatever the rollout's
/// phase; a rollout still undecided then is aborted.
const LOAD_DEADLINE: Duration = Duration::from_secs(30);
const MAX_REQUESTS: u64 = 100_000;
/// Concurrent in-process clients: each request waits 2 ms on the shop's "database".
const CLIENTS: u64 = 16;
/// Users, each sticky to one build as the share grows.
const USERS: u64 = 1_000;
/// Item ids the load asks for (the catalogue has 500).
const ITEMS: u64 = 500;

/// Errors of the demo's tasks as well as its own.
type BoxError = Box<dyn Error + Send + Sync>;

enum Mode {
    Demo,
    Serve { seconds: u64, port: u16 },
}

#[derive(Debug)]
struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\nusage: shop-service [--for SECONDS [--port PORT]]",
            self.0
        )
    }
}

impl Error for UsageError {}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Mode, UsageError> {
    let (mut seconds, mut port) = (None, None);
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| UsageError(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--for" => {
                let text = value("--for")?;
                seconds = Some(text.parse().map_err(|_| {
                    UsageError(format!("--for: `{text}` is not a number of seconds"))
                })?);
            }
            "--port" => {
                let text = value("--port")?;
                port = Some(
                    text.parse()
                        .map_err(|_| UsageError(format!("--port: `{text}` is not a port")))?,
                );
            }
            other => return Err(UsageError(format!("unknown argument `{other}`"))),
        }
    }
    match (seconds, port) {
        (Some(seconds), port) => Ok(Mode::Serve {
            seconds,
            port: port.unwrap_or(0),
        }),
        (None, None) => Ok(Mode::Demo),
        (None, Some(_)) => Err(UsageError("--port goes with --for".into())),
    }
}

/// A rollout of `candidate` over `stable`, judged by fixed thresholds and sticky per
/// `x-user` header, not yet built.
fn rollout_of(
    stable: Version,
    candidate: Version,
    policy: RolloutPolicy,
) -> Result<RolloutBuilder, BoxError> {
    // Millisecond handlers on a shared machine jitter; allow generous noise, as the
    // axum_shadow example does: a real regression here is several times slower, or failing.
    let predictor = ThresholdPredictor::new(ThresholdPredictorConfig {
        max_error_rate_increase: 0.02,
        max_p99_increase: 1.5,
        max_p50_increase: 0.5,
        ..ThresholdPredictorConfig::default()
    });
    let config = ShadowConfig::new().with_sticky_key(StickyKey::header("x-user")?);
    Ok(Rollout::builder(stable, candidate)
        .policy(policy)
        .predictor(predictor)
        .shadow(config))
}

/// The demo's pace: a look every 250 ms, three canary steps.
fn demo_policy() -> Result<RolloutPolicy, BoxError> {
    Ok(RolloutPolicy::from_toml(
        r#"
        interval = "250ms"
        steps = [10, 50, 100]
        min_samples = 300
        min_samples_per_step = 150
        no_data_deadline = "10s"
        "#,
    )?)
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

/// Prints every transition of the rollout from now on. The rollout started shadowing
/// when it was built, before anyone could subscribe, so that one is told from the status.
fn print_transitions(handle: &RolloutHandle) -> tokio::task::JoinHandle<()> {
    let status = handle.status();
    println!(
        "[  0.0s] {} -> {} (candidate share {}): started when built",
        Phase::Idle,
        status.phase,
        status.share
    );
    let mut events = handle.subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            println!("{}", describe(&event));
        }
    })
}

/// Sends sticky users' reads to `app` in-process until the rollout ends or the load's
/// bound is reached, then aborts a rollout still undecided. Returns its final phase.
async fn drive(app: Router, rollout: &Rollout) -> Result<Phase, BoxError> {
    let handle = rollout.handle();
    let printer = print_transitions(&handle);
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (app, handle, sent) = (app.clone(), handle.clone(), sent.clone());
            tokio::spawn(async move {
                let mut n = client;
                while !handle.phase().is_terminal()
                    && started.elapsed() < LOAD_DEADLINE
                    && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                {
                    n = n
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let request = http::Request::get(format!("/items/{}", (n >> 33) % ITEMS))
                        .header("x-user", format!("user-{}", (n >> 20) % USERS))
                        .body(Body::empty())?;
                    // Reading the body to its end makes the response whole, and comparable.
                    let response = app.clone().oneshot(request).await?;
                    response.into_body().collect().await?;
                }
                Ok::<(), BoxError>(())
            })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    if !handle.phase().is_terminal() {
        println!(
            "load finished after {:.1}s without a verdict; aborting the rollout",
            started.elapsed().as_secs_f64()
        );
        // Refused only if the rollout ended in the meantime, and then it has its verdict.
        let _ = handle.abort("no verdict within the demo's time bound");
    }
    // Let the printer show the last transition, then stop it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    printer.abort();
    let counts = rollout.shadow_counts();
    println!(
        "{} requests; shadow: {} reads mirrored, {} compared, {} mismatched",
        sent.load(Ordering::Relaxed).min(MAX_REQUESTS),
        counts.mirrored,
        counts.compared,
        counts.mismatched
    );
    Ok(handle.phase())
}

fn outcome(phase: Phase) -> &'static str {
    match phase {
        Phase::Promoted => "promoted",
        Phase::RolledBack => "rolled_back",
        _ => "unfinished",
    }
}

/// The released code and the working tree's, as two builds.
async fn two_versions() -> Result<(), BoxError> {
    let stable = Version::new("shop", shop_stable::VERSION);
    let candidate = Version::new("shop", shop_candidate::VERSION);
    println!("\n=== scenario two-versions: {candidate} over {stable} ===");
    let rollout = rollout_of(stable, candidate, demo_policy()?)?.build()?;
    let app = ShadowLayer::new(shop_candidate::router(), &rollout).around(shop_stable::router());
    let phase = drive(app, &rollout).await?;
    println!("scenario two-versions: {}", outcome(phase));
    Ok(())
}

/// One build of the code with two configurations, switched with the rollout.
async fn two_configurations() -> Result<(), BoxError> {
    use shop_candidate::Config;

    let version = |config: Config| {
        Version::new(
            "shop",
            format!("{}+cache-{}", shop_candidate::VERSION, config.cache_entries),
        )
    };
    let (without_cache, with_cache) = (Config { cache_entries: 0 }, Config { cache_entries: 256 });
    let releases = Arc::new(Releases::new(
        version(without_cache),
        without_cache,
        version(with_cache),
        with_cache,
    ));
    let (stable, candidate) = (
        releases.release(Arm::Stable),
        releases.release(Arm::Candidate),
    );
    println!(
        "\n=== scenario two-configurations: {} over {} ===",
        candidate.version, stable.version
    );
    let rollout = rollout_of(
        stable.version.clone(),
        candidate.version.clone(),
        demo_policy()?,
    )?
    .release_switch(releases.clone())
    .build()?;
    // Each build is made with its own release's configuration, so a request runs with the
    // configuration of the build that serves it. `active()` tells the rest of the process
    // (what it writes down for its next start, its background jobs) which pair is in
    // force: the rollout switches it with the code.
    let app = ShadowLayer::new(shop_candidate::router_with(candidate.config), &rollout)
        .around(shop_candidate::router_with(stable.config));
    let before = releases.active();
    println!(
        "active release: {} with {:?}",
        before.version, before.config
    );
    let phase = drive(app, &rollout).await?;
    let after = releases.active();
    println!("active release: {} with {:?}", after.version, after.config);
    println!("scenario two-configurations: {}", outcome(phase));
    Ok(())
}

/// Serves the two versions on 127.0.0.1 for `seconds`, for a client of your own.
async fn serve(seconds: u64, port: u16) -> Result<(), BoxError> {
    let stable = Version::new("shop", shop_stable::VERSION);
    let candidate = Version::new("shop", shop_candidate::VERSION);
    let rollout = rollout_of(stable, candidate, RolloutPolicy::default())?.build()?;
    let app = ShadowLayer::new(shop_candidate::router(), &rollout).around(shop_stable::router());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!(
        "serving {} (candidate {}) on http://{addr}/items/{{id}} for {seconds}s",
        shop_stable::VERSION,
        shop_candidate::VERSION
    );
    let printer = print_transitions(&rollout.handle());
    // The time is up when the timeout fires; the server itself never ends on its own.
    let _ = tokio::time::timeout(Duration::from_secs(seconds), axum::serve(listener, app)).await;
    printer.abort();
    let status = rollout.status();
    let counts = rollout.shadow_counts();
    println!(
        "after {seconds}s: {} (candidate share {}), {} looks; shadow: {} reads mirrored, {} compared, {} mismatched",
        status.phase,
        status.share,
        status.looks,
        counts.mirrored,
        counts.compared,
        counts.mismatched
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(Mode::Demo) => match two_versions().await {
            Ok(()) => two_configurations().await,
            Err(e) => Err(e),
        },
        Ok(Mode::Serve { seconds, port }) => serve(seconds, port).await,
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("shop-service: {e}");
        std::process::exit(1);
    }
}
