//! A stateful key-value service shadowed honestly: writes go only to live, the shadow's
//! state follows by deltas, and mirrored reads are compared only when both builds answered
//! from the same state.
//!
//! ```text
//! cargo run -p examples --example kv_shadow
//! ```
//!
//! v1 (stable) serves `GET /kv/{key}` and `PUT /kv/{key}` from the live store. Every
//! committed write is published on a `DeltaBus`; the shadow's copy of the store advances
//! only by applying those deltas. v2 (the candidate) serves mirrored reads from the
//! shadow's copy — writes are never mirrored, so the shadow never changes data.
//!
//! The rollout is told about both stores (`RolloutBuilder::state_delta`): each mirrored
//! read carries where the live store stood when it arrived, the shadow's store is brought
//! there before v2 serves the copy, and the pair is compared only if neither store moved
//! while its build served the read. Both builds read the shadow's copy in the shadow (the
//! stable twin runs there too), through `in_shadow()`. A pair where some key was written
//! meanwhile is *not comparable* (counted, never a false mismatch): with one write in five
//! and every copy run twice, most of them (about 19 in 20 on two cores), as the shadow's
//! store moves on while a copy waits its turn. The default bound is exact; a shadow that
//! held its store at the oldest waiting copy's position would compare more, and does not
//! yet. Each value
//! carries the version of its last write, sent back as `x-kv-version` and compared with
//! the body, so a shadow that answered from another version would show as a mismatch.
//! Two scenarios run against the same load:
//!
//! * `healthy`: v2 is v1 — zero mismatches.
//! * `buggy`: v2 truncates values longer than 24 bytes — its mismatches are reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use shadowlib::delta::{DeltaBus, KeyValueMap, KvDelta, LiveState, ShadowState, StalenessBound};
use shadowlib::shadow::{ShadowConfig, in_shadow};
use shadowlib::{Rollout, Version};
use shadowlib_tower::ShadowLayer;
use tokio::net::TcpListener;

const VERSION_HEADER: &str = "x-kv-version";
const KEYS: u64 = 200;
const REQUESTS: u64 = 20_000;
const CLIENTS: u64 = 8;

/// A value and the version of its last write (1 for the first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Versioned {
    value: String,
    version: u64,
}

type Store = KeyValueMap<String, Versioned>;

/// What both builds share: the live store (with its publisher) and the shadow's copy.
#[derive(Clone)]
struct Stores {
    live: LiveState<Store>,
    shadow: ShadowState<Store>,
}

/// The answer to a read: the value and its version (0 for a missing key).
fn answer(found: Option<Versioned>, transform: fn(&str) -> String) -> Response {
    let (status, body, version) = match found {
        Some(v) => (StatusCode::OK, transform(&v.value), v.version),
        None => (StatusCode::NOT_FOUND, String::new(), 0),
    };
    let mut headers = HeaderMap::new();
    headers.insert(VERSION_HEADER, HeaderValue::from(version));
    (status, headers, body).into_response()
}

async fn put(State(stores): State<Stores>, Path(key): Path<String>, body: String) -> StatusCode {
    // The live store produces the delta from its current state, so versions never race.
    let committed = stores.live.commit_with(|store| {
        let version = store.get(&key).map_or(1, |v| v.version + 1);
        KvDelta::put(
            key.clone(),
            Versioned {
                value: body,
                version,
            },
        )
    });
    match committed {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn unchanged(value: &str) -> String {
    value.to_owned()
}

fn truncated(value: &str) -> String {
    value.chars().take(24).collect()
}

/// A build of the service: the same routes, with `transform` applied to every value read.
fn build(stores: Stores, transform: fn(&str) -> String) -> Router {
    // The store is read inside the handler's future: the shadow runs that future only once
    // it has brought the shadow's store to where live's stood when the read arrived.
    let read = move |State(stores): State<Stores>, Path(key): Path<String>| async move {
        let found = if in_shadow() {
            stores.shadow.read(|store| store.get(&key).cloned())
        } else {
            stores.live.read(|store| store.get(&key).cloned())
        };
        answer(found, transform)
    };
    Router::new()
        .route("/kv/{key}", get(read).put(put))
        .with_state(stores)
}

struct Outcome {
    compared: u64,
    mismatched: u64,
    not_comparable: u64,
    mirrored: u64,
    writes: u64,
}

async fn scenario(
    name: &str,
    candidate_transform: fn(&str) -> String,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let bus = DeltaBus::<Store>::in_process(65_536)?;
    let stores = Stores {
        live: bus.live(Store::new()).start()?,
        shadow: bus.follow(Store::new())?,
    };
    // Shadowing only: this example is about the comparison, so nothing ever steps up. The
    // strict default bound compares a read only when the shadow answered from exactly
    // live's state, waiting up to 5 ms for it to catch up.
    let rollout = Rollout::builder(Version::new("kv", "v1"), Version::new("kv", "v2"))
        .state_delta(&stores.live, &stores.shadow, StalenessBound::default())
        .shadow(ShadowConfig::new().with_compare_headers([VERSION_HEADER])?)
        .shadow_only()
        .build()?;
    let app = ShadowLayer::new(build(stores.clone(), candidate_transform), &rollout)
        .around(build(stores.clone(), unchanged));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let sent = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (sent, writes) = (sent.clone(), writes.clone());
            tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                let mut n = id + 1;
                while sent.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                    n = n
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let key = (n >> 33) % KEYS;
                    let write = (n >> 20).is_multiple_of(5);
                    let value = format!("value {n:x} of key {key}");
                    let request = http::Request::builder()
                        .method(if write { "PUT" } else { "GET" })
                        .uri(format!("http://{addr}/kv/key-{key}"))
                        .body(Full::new(if write {
                            Bytes::from(value)
                        } else {
                            Bytes::new()
                        }));
                    let Ok(request) = request else { continue };
                    if let Ok(response) = client.request(request).await {
                        let _ = response.into_body().collect().await;
                        writes.fetch_add(u64::from(write), Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await?;
    }
    // Let the shadow finish the copies still queued.
    for _ in 0..200 {
        let c = rollout.shadow_counts();
        if c.completed + c.timed_out + c.panicked + c.failed + c.dropped_queue_full >= c.mirrored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.abort();

    let counts = rollout.shadow_counts();
    let live = stores.live.stats();
    let follower = stores.shadow.stats();
    println!("scenario {name}:");
    println!(
        "  reads mirrored {}, compared {}, mismatched {}, not comparable (the state moved) {}",
        counts.mirrored, counts.compared, counts.mismatched, counts.not_comparable
    );
    println!(
        "  deltas: {} writes published in {} frames, {} bytes; shadow lag p50 {} µs, p99 {} µs; resyncs {}",
        live.deltas_published,
        live.frames_published,
        live.delta_bytes,
        follower.lag_us.quantile(0.5),
        follower.lag_us.quantile(0.99),
        follower.resyncs.recoveries()
    );
    let caught_up = stores
        .shadow
        .reach(stores.live.position(), Duration::from_secs(1))
        .await;
    let live_store = stores.live.read(Store::clone);
    let same = caught_up
        && stores
            .shadow
            .read(|shadow_store| *shadow_store == live_store);
    println!(
        "  shadow store equals live store ({} keys) after the load: {same}",
        live_store.len()
    );
    Ok(Outcome {
        compared: counts.compared,
        mismatched: counts.mismatched,
        not_comparable: counts.not_comparable,
        mirrored: counts.mirrored,
        writes: writes.load(Ordering::Relaxed),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (name, transform) in [
        ("healthy", unchanged as fn(&str) -> String),
        ("buggy", truncated),
    ] {
        let outcome = scenario(name, transform).await?;
        println!(
            "scenario {name}: {} mismatches in {} compared reads ({} mirrored, {} not comparable, {} writes kept off the shadow)\n",
            outcome.mismatched,
            outcome.compared,
            outcome.mirrored,
            outcome.not_comparable,
            outcome.writes
        );
    }
    Ok(())
}
