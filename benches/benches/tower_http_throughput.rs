//! HTTP throughput on 127.0.0.1 of a trivial axum handler, bare and behind the shadow
//! middleware mirroring 100% of reads to an identical shadow. Goal: ≥ 0.90 of bare.
//!
//! The server runs on its own two-thread runtime; a hyper client with 32 connections on
//! a one-thread runtime sends `GET /ping` for 3 s per round, rounds alternating between
//! the servers: bare, mirroring every read, and mirroring 10% of reads
//! (`ShadowConfig::with_mirror_share`). The shadow runs on its rollout's own thread. (A
//! round with the shadow on the server's runtime, `ShadowLayer::new_on`, was measured here
//! until the adapters moved every shadow onto the rollout's thread; it is gone.) For an
//! external client, see the `axum_shadow` example's `--serve` mode and `wrk`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shadowlib::shadow::ShadowConfig;
use shadowlib::{Rollout, Share};
use shadowlib_tower::ShadowLayer;
use tokio::time::Instant;

const CONNECTIONS: usize = 32;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

fn app() -> Router {
    Router::new().route("/ping", get(|| async { "pong" }))
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port on loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The middleware around `app()` mirroring `share` of the reads to an identical
/// candidate, and the rollout it serves (built on the server's runtime, where its loop
/// runs).
async fn mirrored_app(share: Share) -> (Router, Rollout) {
    let rollout = benches::shadowing_rollout(ShadowConfig::new().with_mirror_share(share));
    (ShadowLayer::new(app(), &rollout).around(app()), rollout)
}

/// Requests per second `CONNECTIONS` concurrent clients get from `addr` in one round.
async fn round(addr: SocketAddr) -> f64 {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONNECTIONS)
        .build_http::<Empty<Bytes>>();
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, done) = (client.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let uri: http::Uri = format!("http://{addr}/ping").parse().expect("valid uri");
                while started.elapsed() < ROUND {
                    let Ok(response) = client.get(uri.clone()).await else {
                        continue;
                    };
                    if response.into_body().collect().await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let bare_addr = server_rt.block_on(serve(app()));
    let (mirrored, mirrored_rollout) = server_rt.block_on(mirrored_app(Share::FULL));
    let mirrored_addr = server_rt.block_on(serve(mirrored));
    let tenth = Share::from_percent(10.0).expect("valid share");
    let (sampled, sampled_rollout) = server_rt.block_on(mirrored_app(tenth));
    let sampled_addr = server_rt.block_on(serve(sampled));

    let (mut bare, mut with_layer, mut with_sampled) = (Vec::new(), Vec::new(), Vec::new());
    client_rt.block_on(async {
        round(bare_addr).await; // warm-up
        for _ in 0..ROUNDS {
            bare.push(round(bare_addr).await);
            with_layer.push(round(mirrored_addr).await);
            with_sampled.push(round(sampled_addr).await);
        }
    });
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (bare, with_layer, with_sampled) = (mean(&bare), mean(&with_layer), mean(&with_sampled));
    println!(
        "tower_http_throughput: bare {bare:.0} req/s, mirroring 100% of reads {with_layer:.0} req/s"
    );
    println!(
        "tower_http_throughput: ratio {:.3} (goal >= 0.90); {}",
        with_layer / bare,
        benches::copies(&mirrored_rollout.shadow_counts()),
    );
    println!(
        "tower_http_throughput: mirroring 10% of reads: {with_sampled:.0} req/s, ratio {:.3}; {}",
        with_sampled / bare,
        benches::copies(&sampled_rollout.shadow_counts()),
    );
}
