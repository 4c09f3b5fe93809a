//! The adapter suite over a real socket, run against the actix-web adapter: an
//! `HttpServer` on 127.0.0.1:0 whose stable and candidate builds are two actix `App`s.

mod adapter_suite;

use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpServer, web};
use adapter_suite::{AdapterUnderTest, App as SuiteApp, RunningServer, Setup};
use shadowlib_actix::Shadow;
use tokio::sync::oneshot;

/// The suite's app as an actix `App`: one catch-all handler.
pub fn app(
    build: Arc<SuiteApp>,
) -> actix_web::App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .app_data(web::Data::from(build))
        .default_service(web::to(respond))
}

async fn respond(app: web::Data<SuiteApp>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let (status, text) = app
        .respond(request.method().as_str(), request.path(), headers, body)
        .await;
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .insert_header(("x-build", app.build.tag()))
        .body(text)
}

struct Actix;

/// Stops the server (without waiting for in-flight requests) when dropped.
struct StopOnDrop(ServerHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // The stop command is sent at once; waiting for its completion is optional.
        drop(self.0.stop(false));
    }
}

impl AdapterUnderTest for Actix {
    async fn start(&self, setup: Setup) -> RunningServer {
        let (stable, candidate) = (setup.stable, setup.candidate);
        let twin = Arc::clone(&stable);
        let shadow = Shadow::new(
            move || app(Arc::clone(&twin)),
            move || app(Arc::clone(&candidate)),
            &setup.rollout,
        );
        let (started, ready) = oneshot::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || app(Arc::clone(&stable)).wrap(shadow.clone()))
                    .workers(2)
                    .disable_signals()
                    .bind(("127.0.0.1", 0))
                    .expect("a free port on loopback");
                let addr = server.addrs()[0];
                let server = server.run();
                let _ = started.send((addr, server.handle()));
                server.await.expect("the server runs until stopped");
            });
        });
        let (addr, handle) = ready.await.expect("the server thread started");
        RunningServer {
            addr,
            guard: Box::new(StopOnDrop(handle)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_writes_never_reach_the_shadow_and_reads_do() {
    adapter_suite::writes_never_reach_the_shadow_and_reads_do(&Actix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_a_zero_mirror_share_copies_no_read() {
    adapter_suite::a_zero_mirror_share_copies_no_read(&Actix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_shadow_panic_leaves_live_untouched() {
    adapter_suite::shadow_panic_leaves_live_untouched(&Actix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_shadow_hang_is_bounded_and_dropped() {
    adapter_suite::shadow_hang_is_bounded_and_dropped(&Actix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_oversize_body_is_served_and_not_mirrored() {
    adapter_suite::oversize_body_is_served_and_not_mirrored(&Actix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_rollback_under_load_fails_no_request() {
    adapter_suite::rollback_under_load_fails_no_request(&Actix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_canary_panic_is_a_500() {
    adapter_suite::canary_panic_is_a_500(&Actix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_shadow_copy_strips_hop_by_hop_and_redacts() {
    adapter_suite::shadow_copy_strips_hop_by_hop_and_redacts(&Actix).await;
}
