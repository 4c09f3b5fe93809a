//! Middleware that runs a candidate build beside the stable one: it mirrors reads to the
//! candidate as a shadow, steers a share of live traffic to it, and rolls it back.
//!
//! The behaviour is the tower adapter's, request for request; only the plumbing differs,
//! because actix-web's services are not `Send` and live on one worker thread each.
//!
//! # The two builds
//!
//! The stable build is the `App` the middleware wraps; the middleware is given both builds
//! as `App` *factories*, the same kind of closure `HttpServer::new` takes, because an actix
//! `App` can neither be cloned nor move between threads: each thread that may serve a
//! build makes its own instance from the factory, with its own app data, routes and
//! default service. The candidate's factory is called on every worker (for canary
//! traffic); both are called on the shadow thread, where every mirrored read runs on the
//! stable *twin* and on the candidate alike.
//! Instances are built with actix-web's default `AppConfig` (host `localhost:8080`, not
//! secure), which shows only where the candidate builds URLs or reads connection info for
//! a request without a `Host` header. Connection data (`HttpServer::on_connect`) is not
//! handed to the candidate: actix-web offers no way to move it to another app.
//!
//! # Where the shadow runs, and why
//!
//! Copies of reads run on the rollout's **shadow thread**, not on actix-web's workers. It
//! runs a single-threaded tokio runtime with a `LocalSet`, as an actix worker does, so
//! candidate handlers that use `actix_web::rt::spawn` behave as they do live; it holds its
//! own instance of the candidate `App`, and the core's shadow worker there polls as many
//! copies at once as live has requests in flight (for each of the two builds a copy runs
//! on), within the budget's concurrency.
//!
//! * The live path copies each read as plain bytes (method, target, the headers the
//!   header policy forwards, peer address, body) into the core's reused
//!   [`RequestCopy`](shadowlib::mirror::RequestCopy) buffers and hands it over through the
//!   core's bounded queue, with a non-blocking push: no actix type crosses a thread, the
//!   live request never waits, it does not wake the shadow thread (which takes copies on
//!   a 1 ms tick), and nothing allocated on one thread is freed on the other. When the
//!   queue is at its limit (which follows what the shadow can start in time) the copy is
//!   dropped before it is made, and counted.
//! * The shadow thread builds each build's request from the copy, and the core's worker
//!   runs it on the thread's own stable instance (the twin) and candidate instance, in a
//!   random order, each under the timeout with panics caught and its CPU measured, marked
//!   as the shadow ([`in_shadow`](shadowlib::shadow::in_shadow)).
//! * The shadow's CPU stays off the workers that serve live traffic, and within the
//!   threads given to it: a slow or spinning candidate costs at most those threads. The
//!   thread runs in the lowest scheduling class the OS offers (`SCHED_IDLE` on Linux, see
//!   [`SchedulingClass`](shadowlib::shadow::SchedulingClass)), so it gets only CPU the
//!   workers do not want, and gives way the moment they do.
//!
//! Running copies on the live workers (`spawn_local`) would be simpler, but a busy or
//! hung candidate would then compete with live requests for the very threads that serve
//! them; a multi-threaded tokio runtime could not hold the candidate `App` at all.
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
//!    `OPTIONS`, plus routes the rollout's mirror declares reads), is copied to the shadow.
//!    Hop-by-hop headers are stripped from the copy and a configurable list of headers
//!    redacted. Each copy has a timeout, after which it is cancelled and recorded as a
//!    timeout; a panic in the candidate is caught and recorded as a candidate panic.
//! 3. **Comparison.** For each mirrored read, status, the configured headers and the body
//!    (up to the limit) of the live response are compared field by field with the twin's
//!    and with the candidate's: what differs for the twin too is noise, what differs for
//!    the candidate alone is a mismatch, counted per route and field in the evidence.
//! 4. **KPIs.** The shadow records each mirrored read as a pair (latency, CPU, outcome of
//!    both builds); while the candidate serves live traffic, latency (to the response
//!    head), outcome class and bytes of every live request are recorded per build and
//!    route for the canary's tests. An error value from a build is recorded with the
//!    status actix-web answers it with.
//!
//! # Bodies
//!
//! The middleware never reads a body on the live request's behalf: it copies each chunk
//! *as the live handler reads it*, and hands the copy to the shadow once the handler has
//! read the payload to its end. So only bodies the live handler reads whole are mirrored
//! (others are counted as `skipped_unread_body`). The copy is bounded by the body limit
//! (64 KiB by default): a body announced larger (`Content-Length`) is not copied at all,
//! and a chunked body that grows past the limit is abandoned there; both are counted as
//! `skipped_oversize`. Reads without a body, the common case, are handed off at once.
//!
//! # Canary and rollback
//!
//! While the candidate serves live requests, the request stable's `App` received is given
//! to this worker's candidate instance (same head, payload and request extensions) and its
//! responses, errors included, go to the client as they are, and are counted. A panic in
//! the candidate is caught and answered with an empty `500 Internal Server Error`,
//! recorded as a candidate panic. Panics of the stable build are left alone, as they
//! would be without the middleware. A rollback takes effect from the next request on (the
//! steerer's share is one atomic); requests already on the candidate run to completion.
//!
//! A candidate `App` that fails to start (an async data factory failing, say) rolls the
//! rollout back and is never routed to; the live build keeps serving.
//!
//! # What it costs
//!
//! Measured on a 2-vCPU machine with a trivial (~1.3 µs) handler called through
//! actix-web's test service (`benches/`). The middleware alone adds about 0.3 µs per
//! request, and a mirrored read about 0.45 µs more on the live worker, mostly the cost
//! of handing the copy's cache lines to the shadow thread's core. With a candidate ten
//! times as CPU-hungry as stable (1 ms a read against 100 µs) and `wrk` saturating the
//! server (`examples/examples/live_cost_http.rs`), mirroring every read cost live
//! throughput about 3% and live p99 about 3% against the middleware with nothing
//! mirrored, and the rollout still reached a verdict: the shadow ran on the idle moments
//! and shed the copies it had no CPU for.
//!
//! Where that is too much, mirror a share of the reads
//! ([`ShadowConfig::with_mirror_share`](shadowlib::shadow::ShadowConfig::with_mirror_share)):
//! a read left out costs one random draw. Or let the share adapt to live's headroom, and
//! schedule it off-peak within a CPU budget
//! ([`ShadowResources`](shadowlib::shadow::ShadowResources)).
//!
//! # Example
//!
//! ```
//! use actix_web::{App, test, web};
//! use shadowlib::{Rollout, Version};
//! use shadowlib_actix::Shadow;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # actix_web::rt::System::new().block_on(async {
//! let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2")).build()?;
//! let v1 = || App::new().route("/", web::get().to(|| async { "v1" }));
//! let v2 = || App::new().route("/", web::get().to(|| async { "v2" }));
//! let shadow = Shadow::new(v1, v2, &rollout);
//!
//! // Serve it with `HttpServer::new(move || v1().wrap(shadow.clone()))`.
//! let app = test::init_service(v1().wrap(shadow.clone())).await;
//! let body = test::call_and_read_body(&app, test::TestRequest::get().uri("/").to_request()).await;
//! assert_eq!(body, "v1");
//! // The shadow compares in the background: wait for it, generously for a loaded machine.
//! for _ in 0..10_000 {
//!     if rollout.shadow_counts().compared == 1 {
//!         break;
//!     }
//!     actix_web::rt::time::sleep(std::time::Duration::from_millis(1)).await;
//! }
//! // The candidate alone answered differently from live ("v2" where the twin said "v1").
//! assert_eq!(rollout.shadow_counts().mismatched, 1);
//! # Ok(()) })
//! # }
//! ```

mod body;
mod future;
mod middleware;
mod target;
mod transform;

pub use body::ShadowResponseBody;
pub use future::ResponseFuture;
pub use middleware::ShadowMiddleware;
pub use transform::Shadow;
