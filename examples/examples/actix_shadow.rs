//! An actix-web service rolling out its next build with shadowlib, end to end over HTTP.
//!
//! The service has two builds of the same `App`: v1 (stable) and v2 (the candidate), the
//! latter with a regression chosen on the command line. The rollout is built once, which
//! starts it and the loop that drives it; the `Shadow` middleware, made from v2's factory
//! and the rollout, wraps v1. Reads served by v1 are mirrored to v2 on the rollout's
//! shadow thread, and the rollout looks at both builds' KPIs every 250 ms to step the
//! candidate's share up, hold, or roll it back. A load generator inside the example sends reads and writes from simulated
//! users to the server on 127.0.0.1, until the rollout ends (at most 60,000 requests or
//! 30 seconds; a rollout still undecided then is rolled back).
//!
//! ```text
//! cargo run -p examples --example actix_shadow -- --regression latency   # rolled back
//! cargo run -p examples --example actix_shadow -- --regression errors    # rolled back
//! cargo run -p examples --example actix_shadow -- --regression none      # promoted
//! ```
//!
//! The last line printed is `outcome: rolled_back` or `outcome: promoted`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use shadowlib::mirror::StickyKey;
use shadowlib::shadow::ShadowConfig;
use shadowlib::{DecisionSource, Phase, Rollout, RolloutHandle, RolloutPolicy, Version};
use shadowlib_actix::Shadow;
use thiserror::Error;

/// At most this many requests are sent.
const MAX_REQUESTS: u64 = 60_000;
/// The load stops after this long, whatever the rollout's phase.
const MAX_DURATION: Duration = Duration::from_secs(30);
/// Concurrent simulated clients.
const CLIENTS: usize = 16;
/// Simulated users, each sticky to one build as the share grows.
const USERS: u32 = 5_000;

/// The regression injected into the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regression {
    /// Every request takes 4 ms longer.
    Latency,
    /// One request in ten fails with a 500.
    Errors,
    /// The candidate behaves exactly as stable.
    None,
}

/// The command line could not be understood.
#[derive(Debug, Error)]
enum ArgsError {
    #[error("--regression must be one of latency, errors, none; got `{0}`")]
    UnknownRegression(String),
    #[error("--regression needs a value: latency, errors or none")]
    MissingValue,
    #[error("unexpected argument `{0}`; usage: actix_shadow [--regression latency|errors|none]")]
    Unexpected(String),
}

impl FromStr for Regression {
    type Err = ArgsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latency" => Ok(Regression::Latency),
            "errors" => Ok(Regression::Errors),
            "none" => Ok(Regression::None),
            other => Err(ArgsError::UnknownRegression(other.to_owned())),
        }
    }
}

fn parse_args() -> Result<Regression, ArgsError> {
    let mut regression = Regression::None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--regression=") {
            regression = value.parse()?;
        } else if arg == "--regression" {
            regression = args.next().ok_or(ArgsError::MissingValue)?.parse()?;
        } else {
            return Err(ArgsError::Unexpected(arg));
        }
    }
    Ok(regression)
}

/// How one build behaves.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    extra_latency: Duration,
    failure_rate: f64,
}

impl Behaviour {
    const STABLE: Behaviour = Behaviour {
        extra_latency: Duration::ZERO,
        failure_rate: 0.0,
    };

    fn candidate(regression: Regression) -> Self {
        match regression {
            Regression::Latency => Behaviour {
                extra_latency: Duration::from_millis(4),
                ..Self::STABLE
            },
            Regression::Errors => Behaviour {
                failure_rate: 0.1,
                ..Self::STABLE
            },
            Regression::None => Self::STABLE,
        }
    }

    /// Does the work of one request: about 2 ms, plus the regression.
    async fn work(&self) -> bool {
        let jitter = rand::rng().random_range(0..1_000);
        actix_web::rt::time::sleep(Duration::from_micros(1_500 + jitter) + self.extra_latency)
            .await;
        !rand::rng().random_bool(self.failure_rate)
    }
}

async fn get_item(id: web::Path<u64>, behaviour: web::Data<Behaviour>) -> HttpResponse {
    if !behaviour.work().await {
        return HttpResponse::InternalServerError().finish();
    }
    let id = id.into_inner();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!(
            r#"{{"id":{id},"name":"item {id}","price_cents":{}}}"#,
            id * 7 % 10_000
        ))
}

async fn create_order(body: web::Bytes, behaviour: web::Data<Behaviour>) -> HttpResponse {
    if !behaviour.work().await {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Created()
        .content_type("application/json")
        .body(format!(r#"{{"accepted_bytes":{}}}"#, body.len()))
}

/// One build of the service.
fn service(
    behaviour: Behaviour,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(behaviour))
        .route("/items/{id}", web::get().to(get_item))
        .route("/orders", web::post().to(create_order))
}

/// Prints every transition of the rollout from now on, with the reasons behind it.
fn print_transitions(handle: &RolloutHandle) {
    let mut events = handle.subscribe();
    actix_web::rt::spawn(async move {
        while let Ok(event) = events.recv().await {
            println!(
                "[{:>5.2}s] {} -> {} (candidate share {}), {} decided to {}:",
                event.elapsed.as_secs_f64(),
                event.transition.from,
                event.transition.to,
                event.transition.share_after,
                match event.decision.source {
                    DecisionSource::Controller => "the controller",
                    DecisionSource::Operator => "an operator",
                },
                event.decision.action,
            );
            for reason in &event.decision.reasons {
                println!("          - {reason}");
            }
        }
    });
}

/// Sends reads (nine in ten) and writes from random users until the rollout ends, the
/// request budget is spent or the time is up. Returns the requests sent and those that
/// failed at the HTTP level (connection errors, not 5xx answers).
async fn generate_load(addr: SocketAddr, handle: &RolloutHandle) -> (u64, u64) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + MAX_DURATION;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, handle) = (client.clone(), handle.clone());
        let (sent, failed) = (Arc::clone(&sent), Arc::clone(&failed));
        clients.push(actix_web::rt::spawn(async move {
            while !handle.phase().is_terminal()
                && Instant::now() < deadline
                && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
            {
                let (user, item, write) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..USERS),
                        rng.random_range(0..1_000u64),
                        rng.random_bool(0.1),
                    )
                };
                let builder = http::Request::builder().header("x-user", user.to_string());
                let request = if write {
                    builder
                        .method("POST")
                        .uri(format!("http://{addr}/orders"))
                        .body(Full::new(Bytes::from(format!(r#"{{"item":{item}}}"#))))
                } else {
                    builder
                        .uri(format!("http://{addr}/items/{item}"))
                        .body(Full::new(Bytes::new()))
                };
                let Ok(request) = request else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let answered = match client.request(request).await {
                    Ok(response) => response.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if !answered {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for client in clients {
        // A load task only ends by leaving its loop.
        let _ = client.await;
    }
    (
        sent.load(Ordering::Relaxed).min(MAX_REQUESTS),
        failed.load(Ordering::Relaxed),
    )
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let regression = match parse_args() {
        Ok(regression) => regression,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    let (stable, candidate) = (Version::new("shop", "1.0.0"), Version::new("shop", "1.1.0"));
    println!("rolling out {candidate} over {stable}, injected regression: {regression:?}");

    let policy = RolloutPolicy::from_toml(
        r#"
        interval = "250ms"
        steps = [5, 25, 50, 100]
        min_samples = 300
        min_samples_per_step = 100
        no_data_deadline = "10s"
        "#,
    )?;
    let config = ShadowConfig::new().with_sticky_key(StickyKey::header("x-user")?);
    // Building starts the rollout (shadowing) and spawns its loop on this runtime.
    let rollout = Rollout::builder(stable, candidate)
        .policy(policy)
        .shadow(config)
        .build()?;
    let handle = rollout.handle();
    // The loop looks first one interval from now, so no decision is missed; the start
    // itself went out when the rollout was built, and is told from the status.
    print_transitions(&handle);
    let status = handle.status();
    println!(
        "[ 0.00s] {} -> {} (candidate share {}): the rollout started when it was built",
        Phase::Idle,
        status.phase,
        status.share
    );

    let candidate_behaviour = Behaviour::candidate(regression);
    let shadow = Shadow::new(
        || service(Behaviour::STABLE),
        move || service(candidate_behaviour),
        &rollout,
    );
    let server = HttpServer::new(move || service(Behaviour::STABLE).wrap(shadow.clone()))
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
    let addr = server.addrs()[0];
    let server = server.run();
    let server_handle = server.handle();
    actix_web::rt::spawn(server);
    println!("serving on http://{addr}");

    let (sent, failed) = generate_load(addr, &handle).await;

    if !handle.status().phase.is_terminal() {
        println!("the rollout is still undecided after the load: rolling back");
        // Refused only if the rollout decided in the meantime.
        if let Err(refused) = handle.abort("the demo's load ended before a decision") {
            println!("({refused})");
        }
    }
    let status = handle.status();
    // Let the printer show the last transition.
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    server_handle.stop(true).await;

    let counts = rollout.shadow_counts();
    println!(
        "load: {sent} requests sent, {failed} failed at the HTTP level; shadow: {} reads mirrored, {} compared ({} mismatched), {} writes never mirrored, {} copies dropped",
        counts.mirrored,
        counts.compared,
        counts.mismatched,
        counts.not_read,
        counts.dropped_queue_full
    );
    let outcome = match status.phase {
        Phase::Promoted => "promoted",
        Phase::RolledBack => "rolled_back",
        // The load ends only once the rollout is promoted or rolled back, or aborts it.
        other => return Err(format!("the rollout ended while {other}").into()),
    };
    println!("outcome: {outcome}");
    Ok(())
}
