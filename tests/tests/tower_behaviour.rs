//! The adapter suite over a real socket, run against the tower adapter with axum.

mod adapter_suite;

use std::sync::Arc;

use adapter_suite::{AdapterUnderTest, App, RunningServer, Setup};
use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use shadowlib_tower::shadow::{Rollout, ShadowLayer};
use tokio::net::TcpListener;
use tower::Layer;

/// The suite's app as an axum router: one catch-all handler.
fn router(app: Arc<App>) -> Router {
    Router::new().fallback(move |request: Request| {
        let app = Arc::clone(&app);
        async move {
            let (parts, body) = request.into_parts();
            let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
                return http::StatusCode::BAD_REQUEST.into_response();
            };
            let headers = parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let (status, text) = app
                .respond(parts.method.as_str(), parts.uri.path(), headers, body)
                .await;
            (status, [("x-build", app.build.tag())], text).into_response()
        }
    })
}

struct Tower;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl AdapterUnderTest for Tower {
    async fn start(&self, setup: Setup) -> RunningServer {
        let rollout = Rollout {
            handle: setup.handle,
            steerer: setup.steerer,
            recorder: setup.recorder,
        };
        let layer = ShadowLayer::new(router(setup.candidate), rollout, setup.config)
            .expect("valid configuration");
        let runtime = layer.runtime().clone();
        let app = Router::new().fallback_service(layer.layer(router(setup.stable)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on loopback");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the server runs until aborted");
        });
        RunningServer {
            addr,
            stats: Arc::clone(runtime.stats()),
            queued: Box::new(move || runtime.queued()),
            guard: Box::new(AbortOnDrop(server)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_writes_never_reach_the_shadow_and_reads_do() {
    adapter_suite::writes_never_reach_the_shadow_and_reads_do(&Tower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_a_zero_mirror_share_copies_no_read() {
    adapter_suite::a_zero_mirror_share_copies_no_read(&Tower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_shadow_panic_leaves_live_untouched() {
    adapter_suite::shadow_panic_leaves_live_untouched(&Tower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_shadow_hang_is_bounded_and_dropped() {
    adapter_suite::shadow_hang_is_bounded_and_dropped(&Tower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_oversize_body_is_served_and_not_mirrored() {
    adapter_suite::oversize_body_is_served_and_not_mirrored(&Tower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_rollback_under_load_fails_no_request() {
    adapter_suite::rollback_under_load_fails_no_request(&Tower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_canary_panic_is_a_500() {
    adapter_suite::canary_panic_is_a_500(&Tower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_shadow_copy_strips_hop_by_hop_and_redacts() {
    adapter_suite::shadow_copy_strips_hop_by_hop_and_redacts(&Tower).await;
}
