//! Middleware that runs a candidate build beside the stable one: it mirrors reads to the
//! candidate as a shadow, steers a share of live traffic to it, and rolls it back.
//!
//! # What it does with each request
//!
//! 1. **Routing.** The [`TrafficSteerer`](shadowlib::TrafficSteerer) the rollout
//!    controller drives picks the build, by share, stickily per key when a
//!    [`StickyKey`](shadowlib::mirror::StickyKey) header or cookie is configured. An
//!    [override header](shadowlib::RolloutBuilder::override_header), signed, can pin a
//!    request to a build for testing (never a write while the candidate only shadows;
//!    ignored after a rollback).
//! 2. **Mirroring.** A request served by stable, while the rollout is shadowing, in canary
//!    or paused, that the classifier calls a read (deny by default: `GET`, `HEAD`,
//!    `OPTIONS`, plus routes the application declares), is copied to the candidate.
//!    The live path copies method, target, the forwarded headers and the body as bytes
//!    into a buffer that is used again and again (hop-by-hop headers stripped and a
//!    configurable list of headers redacted as they are copied); the worker builds the
//!    request the candidate takes from that copy, on its side, so no memory moves from
//!    one thread to the other to be freed there.
//!    The copy goes to a bounded lock-free queue served by the shadow's worker, on the
//!    rollout's shadow thread, which takes copies on a 1 ms tick rather than being woken
//!    per copy; the live request never waits for it, and when the queue is
//!    at its limit (which follows what the shadow can start in time) the copy is dropped
//!    before it is made, and counted. Each copy has a timeout, after which it is
//!    cancelled and recorded as a timeout; a panic in the candidate is caught and
//!    recorded as a candidate panic.
//! 3. **Comparison.** For each mirrored read, status, the configured headers and the body
//!    (up to the limit) of the live and shadow responses are compared, and mismatches
//!    counted per route and in the evidence.
//! 4. **KPIs.** Latency (to the response head), outcome class and bytes of every request
//!    are recorded per build in the rollout's recorder, which the controller reads.
//!
//! # Bodies
//!
//! A copy needs the request body, and a body can only be copied by reading it. The
//! middleware never reads a body on the live request's behalf: it copies each data frame
//! *as the live handler reads it*, and hands the copy to the shadow once the handler has
//! read the body to its end. So the live request is not delayed by a single poll, and only
//! bodies the live handler reads whole are mirrored (others are counted as
//! `skipped_unread_body`). The copy is bounded by the body limit (64 KiB by default): a
//! body announced larger (`Content-Length`) is not copied at all, and a streamed body that
//! grows past the limit is abandoned there; both are counted as `skipped_oversize`. Reads
//! without a body, the common case, are handed off at once. Trailers are not copied.
//!
//! # Canary and rollback
//!
//! While the candidate serves live requests, its responses, errors included, go to the
//! client as they are, and are counted. A panic in the candidate (in `call` or in its
//! future) is caught and answered with an empty `500 Internal Server Error`, recorded as
//! a candidate panic: one bad build must not take down connections. Panics of the stable
//! build are left alone, as they would be without the middleware. A rollback takes effect
//! from the next request on (the steerer's share is one atomic); requests already on the
//! candidate run to completion.
//!
//! # What it costs
//!
//! Measured on a shared 2-vCPU machine (`examples/examples/live_cost.rs` and
//! `live_cost_http.rs`, which print the machine's load beside every figure). With a
//! trivial axum handler called in-process, the layer with nothing mirrored adds about
//! 0.6 µs per request (about 1,860 instructions, counted with callgrind: two clock reads
//! for the latency, steering, recording the request, the body wrappers and the moves of
//! the request between them), and a mirrored read about 0.8 µs more on the live thread
//! (about 1,140 instructions: copying the read, capturing the live response to compare,
//! and the cache lines the copy shares with the shadow's thread, which cost more than
//! their instructions). Beside an endpoint with real work (JSON rendering and a wait on a
//! blocking thread, about 160 µs end to end over loopback), mirroring every read left
//! live p50 and p99 within the noise of bare.
//!
//! The shadow runs on CPU live does not want: its thread is in the lowest scheduling
//! class (`SCHED_IDLE` on Linux, see [`SchedulingClass`](shadowlib::shadow::SchedulingClass)),
//! so a candidate ten times as CPU-hungry as stable (1 ms a read against 100 µs), with
//! `wrk` saturating the server, cost live throughput about 3% and live p99 within the
//! noise of the layer with nothing mirrored: the shadow got the idle moments, shed the
//! copies it had no CPU for, and still reached a verdict (roll back, on CPU and latency,
//! after about ten seconds and 250 pairs). The shadow spends, per copy, each build's run
//! plus a few microseconds of its own on this machine (the thread CPU clock is a system
//! call of 0.7 µs here, so a trivial copy's CPU is measured on a sample).
//!
//! Where the copies are too much, mirror a share of the reads
//! ([`ShadowConfig::with_mirror_share`](shadowlib::shadow::ShadowConfig::with_mirror_share)):
//! a read left out costs one random draw. Or let the share adapt to live's headroom, and
//! schedule it off-peak within a CPU budget
//! ([`ShadowResources`](shadowlib::shadow::ShadowResources)).
//!
//! # Where to put it
//!
//! Around the whole stable app is where it belongs: each build then routes every request
//! itself. With axum, [`ShadowLayer::around`] does that and gives back a `Router` to serve
//! and layer further:
//!
//! ```
//! use axum::{Router, routing::get};
//! use http_body_util::BodyExt;
//! use shadowlib::{Rollout, Version};
//! use shadowlib_tower::ShadowLayer;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2")).build()?;
//! let v1: Router = Router::new().route("/", get(|| async { "v1" }));
//! let v2: Router = Router::new().route("/", get(|| async { "v2" }));
//! let app = ShadowLayer::new(v2, &rollout).around(v1);
//!
//! // Serve it with `axum::serve(listener, app)`; here, one request in-process.
//! let response = app.oneshot(http::Request::new(axum::body::Body::empty())).await?;
//! // Reading the live body to its end makes the live response complete, and comparable.
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "v1");
//! // The shadow compares in the background: wait for it, generously for a loaded machine.
//! for _ in 0..10_000 {
//!     if rollout.shadow_counts().compared == 1 {
//!         break;
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//! }
//! assert_eq!(rollout.shadow_counts().mismatched, 1); // "v1" != "v2"
//! # Ok(()) }
//! ```
//!
//! It also works as `Router::layer` or `route_layer`, the way most axum middleware is
//! added, where it runs after the stable router has routed the request. The stable build's
//! route is then what serves and twins the request, and the candidate, a whole `Router`,
//! routes it again: the stable router's routing state (matched path, path parameters) is
//! taken off the request first, so the candidate's handlers see their own. With any other
//! tower service, `ShadowLayer::new(candidate, &rollout).layer(stable)`.

mod body;
mod future;
mod layer;
mod routing;
mod service;
mod target;

pub use body::{ShadowBody, ShadowResponseBody};
pub use future::ResponseFuture;
pub use layer::ShadowLayer;
pub use service::ShadowService;
