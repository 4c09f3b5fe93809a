//! The adapter suite over a real socket, run against the tower adapter with axum.

mod adapter_suite;

use std::sync::Arc;

use adapter_suite::{AdapterUnderTest, App, Fixture, RunningServer, Setup, TestClient};
use axum::Router;
use axum::extract::{Path, Request};
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;
use shadowlib::Share;
use shadowlib::TrafficSteerer;
use shadowlib_tower::ShadowLayer;
use tokio::net::TcpListener;

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

/// Where the layer sits.
#[derive(Clone, Copy)]
enum Tower {
    /// Around the whole stable router (`ShadowLayer::around`).
    Around,
    /// As `Router::layer`, after the stable router has routed.
    RouterLayer,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl AdapterUnderTest for Tower {
    async fn start(&self, setup: Setup) -> RunningServer {
        let layer = ShadowLayer::new(router(setup.candidate), &setup.rollout);
        let app = match self {
            Tower::Around => layer.around(router(setup.stable)),
            Tower::RouterLayer => router(setup.stable).layer(layer),
        };
        serve(app).await
    }
}

async fn serve(app: Router) -> RunningServer {
    {
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
            guard: Box::new(AbortOnDrop(server)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_writes_never_reach_the_shadow_and_reads_do() {
    adapter_suite::writes_never_reach_the_shadow_and_reads_do(&Tower::Around).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_router_layer_writes_never_reach_the_shadow_and_reads_do() {
    adapter_suite::writes_never_reach_the_shadow_and_reads_do(&Tower::RouterLayer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_a_zero_mirror_share_copies_no_read() {
    adapter_suite::a_zero_mirror_share_copies_no_read(&Tower::Around).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_router_layer_a_zero_mirror_share_copies_no_read() {
    adapter_suite::a_zero_mirror_share_copies_no_read(&Tower::RouterLayer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_shadow_panic_leaves_live_untouched() {
    adapter_suite::shadow_panic_leaves_live_untouched(&Tower::Around).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_router_layer_shadow_panic_leaves_live_untouched() {
    adapter_suite::shadow_panic_leaves_live_untouched(&Tower::RouterLayer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_shadow_hang_is_bounded_and_dropped() {
    adapter_suite::shadow_hang_is_bounded_and_dropped(&Tower::Around).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_router_layer_shadow_hang_is_bounded_and_dropped() {
    adapter_suite::shadow_hang_is_bounded_and_dropped(&Tower::RouterLayer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_oversize_body_is_served_and_not_mirrored() {
    adapter_suite::oversize_body_is_served_and_not_mirrored(&Tower::Around).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_router_layer_oversize_body_is_served_and_not_mirrored() {
    adapter_suite::oversize_body_is_served_and_not_mirrored(&Tower::RouterLayer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_rollback_under_load_fails_no_request() {
    adapter_suite::rollback_under_load_fails_no_request(&Tower::Around).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_router_layer_rollback_under_load_fails_no_request() {
    adapter_suite::rollback_under_load_fails_no_request(&Tower::RouterLayer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_canary_panic_is_a_500() {
    adapter_suite::canary_panic_is_a_500(&Tower::Around).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_router_layer_canary_panic_is_a_500() {
    adapter_suite::canary_panic_is_a_500(&Tower::RouterLayer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_shadow_copy_strips_hop_by_hop_and_redacts() {
    adapter_suite::shadow_copy_strips_hop_by_hop_and_redacts(&Tower::Around).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_router_layer_shadow_copy_strips_hop_by_hop_and_redacts() {
    adapter_suite::shadow_copy_strips_hop_by_hop_and_redacts(&Tower::RouterLayer).await;
}

/// An item service with a path parameter, tagged with its build.
fn items(tag: &'static str) -> Router {
    Router::new().route(
        "/items/{id}",
        get(move |Path(id): Path<u64>| async move { format!("{tag} item {id}") }),
    )
}

/// Under `Router::layer` the layer runs after the stable router has routed, and still each
/// build extracts its own path parameters: the candidate's live answers and its shadow
/// copies see one `id`, not the stable router's added to its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_router_layer_gives_each_build_its_own_path_parameters() {
    let fixture = Fixture::new();
    let app = items("v1").layer(ShadowLayer::new(items("v2"), &fixture.rollout));
    let server = serve(app).await;
    let client = TestClient::new(server.addr);

    // Shadowing: the live answer is stable's, and the candidate's copy matches it but for
    // the tag.
    let answer = client
        .send("GET", "/items/7", b"")
        .await
        .expect("live request");
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "v1 item 7")
    );
    adapter_suite::eventually("the copy was compared", || fixture.counts().compared == 1).await;
    assert_eq!(fixture.counts().completed, 1);
    assert_eq!(
        fixture.shadowed(shadowlib::Arm::Candidate).outcomes.success,
        1,
        "the candidate's copy found its path parameter"
    );
    assert_eq!(
        fixture.shadowed(shadowlib::Arm::Stable).outcomes.success,
        1,
        "the stable twin's copy kept the router's: it is the route's own handler"
    );
    assert_eq!(fixture.counts().mismatched, 1, "v2 where the twin said v1");

    // Canary: the candidate serves the request live, with its own path parameter.
    fixture.steerer.set_share(Share::FULL);
    let answer = client
        .send("GET", "/items/8", b"")
        .await
        .expect("live request");
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "v2 item 8")
    );
}
