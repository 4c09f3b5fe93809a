//! Live never pays for the candidate, over a real socket with both adapters: a candidate
//! that is never ready holds back only the requests steered to it, never stable's; and the
//! shadow's worker thread runs in the lowest scheduling class, as the kernel reports it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use axum::Router;
use axum::routing::get;
use futures::future::LocalBoxFuture;
use shadowlib::mirror::StickyKey;
use shadowlib::shadow::{SchedulingClass, ShadowConfig};
use shadowlib::{Arm, Rollout, Share, TrafficSteerer, Version, WeightedSteerer};
use shadowlib_tower::ShadowLayer;
use shadowlib_tower::shadow::ShadowBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The header the steerer keys on.
const USER: &str = "x-user";

/// A rollout whose steerer sends half the users to the candidate, by `x-user`; the loop
/// never moves it (shadow only), so the split stays where the test put it.
fn half_to_the_candidate() -> (Rollout, Arc<WeightedSteerer>) {
    let steerer = Arc::new(WeightedSteerer::new());
    let config =
        ShadowConfig::new().with_sticky_key(StickyKey::header(USER).expect("a valid name"));
    let rollout = Rollout::builder(Version::new("live", "1"), Version::new("live", "2"))
        .steerer(Arc::clone(&steerer))
        .shadow(config)
        .shadow_only()
        .without_process_sampling()
        .build()
        .expect("a valid configuration, inside a runtime");
    steerer.set_share(Share::from_percent(50.0).expect("a valid share"));
    (rollout, steerer)
}

/// A user the steerer sends to `arm`.
fn user_on(steerer: &WeightedSteerer, arm: Arm) -> String {
    (0..10_000)
        .map(|i| format!("user-{i}"))
        .find(|user| steerer.pick(Some(user.as_bytes())) == arm)
        .expect("half the users go to each build")
}

/// One `GET /` as `user` on a connection of its own: the status line and the body.
async fn get_as(addr: SocketAddr, user: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request =
        format!("GET / HTTP/1.1\r\nhost: test\r\n{USER}: {user}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A user steered to the candidate waits (the candidate is never ready) while users on
/// stable are answered, each at once, over connections of their own.
async fn stable_is_served_while_the_candidate_waits(addr: SocketAddr, steerer: &WeightedSteerer) {
    let candidate_user = user_on(steerer, Arm::Candidate);
    let stable_user = user_on(steerer, Arm::Stable);
    let waiting = tokio::spawn(async move { get_as(addr, &candidate_user).await });
    // Give the candidate's request time to reach the middleware and wait there.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..10 {
        let (status, body) =
            tokio::time::timeout(Duration::from_secs(10), get_as(addr, &stable_user))
                .await
                .expect("stable answers without waiting for the candidate")
                .expect("a live request");
        assert!(status.contains("200"), "{status}");
        assert!(body.ends_with("v1"), "{body}");
    }
    assert!(!waiting.is_finished(), "the candidate is never ready");
    waiting.abort();
}

/// A tower build that is never ready.
#[derive(Clone)]
struct NeverReady;

impl<B> tower::Service<http::Request<ShadowBody<B>>> for NeverReady {
    type Response = http::Response<axum::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Pending
    }

    fn call(&mut self, _: http::Request<ShadowBody<B>>) -> Self::Future {
        unreachable!("never called: never ready")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_a_never_ready_candidate_holds_back_only_its_own_requests() {
    let (rollout, steerer) = half_to_the_candidate();
    let stable = Router::new().route("/", get(|| async { "v1" }));
    let app = Router::new().fallback_service(tower::Layer::layer(
        &ShadowLayer::new(NeverReady, &rollout),
        stable,
    ));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port on loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    stable_is_served_while_the_candidate_waits(addr, &steerer).await;
    server.abort();
}

/// actix-web middleware that makes the app it wraps never ready.
struct NeverReadyApp;

impl<S: Service<ServiceRequest>> Transform<S, ServiceRequest> for NeverReadyApp
where
    S::Future: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Transform = NeverReadyService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(NeverReadyService(service)))
    }
}

struct NeverReadyService<S>(S);

impl<S: Service<ServiceRequest>> Service<ServiceRequest> for NeverReadyService<S>
where
    S::Future: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LocalBoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }

    fn call(&self, request: ServiceRequest) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

fn actix_app(
    build: &'static str,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new().default_service(actix_web::web::to(move || async move { build }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_a_never_ready_candidate_holds_back_only_its_own_requests() {
    let (rollout, steerer) = half_to_the_candidate();
    let shadow = shadowlib_actix::Shadow::new(
        || actix_app("v1"),
        || actix_app("v2").wrap(NeverReadyApp),
        &rollout,
    );
    let (started, ready) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            // One worker: every connection is served by the same middleware instance.
            let server = actix_web::HttpServer::new(move || actix_app("v1").wrap(shadow.clone()))
                .workers(1)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .expect("a free port on loopback");
            let addr = server.addrs()[0];
            let server = server.run();
            let _ = started.send((addr, server.handle()));
            let _ = server.await;
        });
    });
    let (addr, handle) = ready.await.expect("the server thread started");
    stable_is_served_while_the_candidate_waits(addr, &steerer).await;
    handle.stop(false).await;
}

/// The scheduling policies of this process's threads named `name`, as the kernel reports
/// them (field 41 of `/proc/self/task/<tid>/stat`; 5 is `SCHED_IDLE`, 0 the default).
#[cfg(target_os = "linux")]
fn policies_of_threads_named(name: &str) -> Vec<u32> {
    // The kernel keeps the first 15 bytes of a thread's name.
    let name = &name[..name.len().min(15)];
    let tasks = std::fs::read_dir("/proc/self/task").expect("procfs");
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            (comm.trim() == name).then_some(())?;
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            after_name.split_whitespace().nth(41 - 3)?.parse().ok()
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadows_thread_is_sched_idle_and_its_governor_is_not() {
    let (rollout, _steerer) = half_to_the_candidate();
    let stable = Router::new().route("/", get(|| async { "v1" }));
    let candidate = Router::new().route("/", get(|| async { "v2" }));
    // The first request registers the builds, which starts the shadow's threads.
    let app = ShadowLayer::new(candidate, &rollout).around(stable);
    let response = tower::ServiceExt::oneshot(app, http::Request::new(axum::body::Body::empty()))
        .await
        .expect("infallible");
    assert_eq!(response.status(), http::StatusCode::OK);
    for _ in 0..2_000 {
        if rollout.shadow_counts().scheduling != SchedulingClass::NotStarted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rollout.shadow_counts().scheduling, SchedulingClass::Idle);
    // Other tests in this binary run shadows too: every one of their threads is idle.
    let shadows = policies_of_threads_named("shadowlib-shadow");
    assert!(!shadows.is_empty());
    assert!(shadows.iter().all(|&policy| policy == 5), "{shadows:?}");
    let governors = policies_of_threads_named("shadowlib-governor");
    assert!(!governors.is_empty(), "the governor runs");
    assert!(governors.iter().all(|&policy| policy == 0), "{governors:?}");
}
