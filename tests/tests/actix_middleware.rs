//! What the actix-web adapter does beyond the shared suite, driven in-process through
//! `actix_web::test`: what the shadow's copies carry, comparison, the override header,
//! timeouts, error values, and a candidate that cannot start.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, test as actix_test, web};
use shadowlib::mirror::{ArmOverride, HeaderPolicy, HttpMirror};
use shadowlib::shadow::{ShadowBudget, ShadowConfig, ShadowCounts, in_shadow};
use shadowlib::{
    Arm, ArmEvidence, Phase, Rollout, RolloutBuilder, RolloutPolicy, Share, TrafficSteerer,
    Version, WeightedSteerer,
};
use shadowlib_actix::Shadow;

/// A rollout that only shadows, built with `configure` applied to its builder.
fn rollout(configure: impl FnOnce(RolloutBuilder) -> RolloutBuilder) -> Rollout {
    let builder = Rollout::builder(Version::new("actix", "1"), Version::new("actix", "2"))
        .policy(RolloutPolicy::default())
        .without_process_sampling()
        .shadow_only();
    configure(builder)
        .build()
        .expect("a valid configuration, inside a runtime")
}

/// What the shadow measured of the candidate so far.
fn shadowed_candidate(rollout: &Rollout) -> ArmEvidence {
    rollout.evidence().shadow.candidate
}

/// The stable build: `v1` logging into a log of its own.
fn stable() -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    app("v1", log())
}

/// A request as the candidate received it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    shadow: bool,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An app answering `<tag> <path>`, logging what it receives. On `/upload` it answers
/// without reading the body; the candidate (`v2`) never answers `/hang`.
fn app(
    tag: &'static str,
    log: Log,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new().default_service(web::to(move |request: HttpRequest, body: web::Payload| {
        let log = Arc::clone(&log);
        async move {
            let path = request.path().to_owned();
            log.lock().expect("log lock").push(Seen {
                path: path.clone(),
                headers: request
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                    .collect(),
                shadow: in_shadow(),
            });
            match path.as_str() {
                "/hang" if tag == "v2" => std::future::pending::<()>().await,
                "/upload" => drop(body),
                _ => {
                    body.to_bytes().await?;
                }
            }
            Ok::<_, actix_web::Error>(
                HttpResponse::Ok()
                    .insert_header(("x-build", tag))
                    .body(format!("{tag} {path}")),
            )
        }
    }))
}

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().expect("log lock").clone()
}

/// Waits (up to 20 s, generous for a loaded machine) until the counts satisfy `done`.
async fn eventually(shadow: &Shadow, what: &str, done: impl Fn(&ShadowCounts) -> bool) {
    for _ in 0..4_000 {
        if done(&shadow.counts()) {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}: {:?}", shadow.counts());
}

async fn get(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    request: actix_test::TestRequest,
) -> (StatusCode, String) {
    let response = actix_test::call_service(app, request.to_request()).await;
    let status = response.status();
    let body = actix_test::read_body(response).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[actix_web::test]
async fn copies_lose_hop_by_hop_and_redacted_headers_and_run_as_the_shadow() {
    let candidate = log();
    let policy = HeaderPolicy::new()
        .redact("authorization")
        .and_then(|p| p.redact("cookie"))
        .expect("valid names")
        .replace_with("redacted");
    let rollout = rollout(|builder| builder.mirror(HttpMirror::new().with_headers(policy)));
    let candidate_log = Arc::clone(&candidate);
    let shadow = Shadow::new(
        stable,
        move || app("v2", Arc::clone(&candidate_log)),
        &rollout,
    );
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;

    let request = actix_test::TestRequest::get()
        .uri("/profile")
        .insert_header(("authorization", "Bearer secret"))
        .insert_header(("cookie", "session=s3cr3t"))
        .insert_header(("connection", "x-trace"))
        .insert_header(("x-trace", "abc"))
        .insert_header(("accept", "application/json"));
    assert_eq!(
        get(&live, request).await,
        (StatusCode::OK, "v1 /profile".to_owned())
    );
    eventually(&shadow, "the copy was answered", |c| c.completed == 1).await;

    let copies = seen(&candidate);
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    assert!(copy.shadow, "the candidate ran the copy as the shadow");
    let header = |name: &str| {
        copy.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("authorization"), Some("redacted"));
    assert_eq!(header("cookie"), Some("redacted"));
    assert_eq!(header("accept"), Some("application/json"));
    assert_eq!(header("connection"), None, "hop-by-hop");
    assert_eq!(header("x-trace"), None, "listed in Connection");
}

#[actix_web::test]
async fn responses_are_compared_per_route() {
    let config = ShadowConfig::new()
        .with_compare_headers(["content-type"])
        .expect("valid");
    let rollout = rollout(|builder| builder.shadow(config));
    // The candidate answers `v1 <path>` like stable on every path but `/changed`.
    let shadow = Shadow::new(
        stable,
        || {
            App::new()
                .route("/changed", web::get().to(|| async { "v2 /changed" }))
                .default_service(web::to(|r: HttpRequest| async move {
                    HttpResponse::Ok()
                        .insert_header(("x-build", "v2"))
                        .body(format!("v1 {}", r.path()))
                }))
        },
        &rollout,
    );
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    for path in ["/same", "/same", "/changed"] {
        get(&live, actix_test::TestRequest::get().uri(path)).await;
    }
    eventually(&shadow, "three comparisons", |c| c.compared == 3).await;
    let pairs = rollout.evidence().shadow.pairs;
    let same = pairs.routes["GET /same"].mismatches;
    assert_eq!((same.compared, same.candidate_only), (2, 0));
    let changed = &pairs.routes["GET /changed"];
    assert_eq!(changed.mismatches.candidate_only, 1);
    assert_eq!(
        changed.fields["body"].candidate_only, 1,
        "the body is not JSON"
    );
    let total = pairs.total.mismatches;
    assert_eq!(
        (total.compared, total.candidate_only, total.twin_only),
        (3, 1, 0)
    );
}

#[actix_web::test]
async fn a_signed_override_header_pins_a_read_to_the_candidate() {
    let header = ArmOverride::signed("x-arm", [9u8; 32]).expect("a long secret");
    let pin = header
        .sign(
            Arm::Candidate,
            &Version::new("actix", "2"),
            SystemTime::now() + Duration::from_secs(60),
        )
        .expect("signs");
    let rollout = rollout(|builder| builder.override_header(header));
    let candidate = log();
    let candidate_log = Arc::clone(&candidate);
    let shadow = Shadow::new(
        stable,
        move || app("v2", Arc::clone(&candidate_log)),
        &rollout,
    );
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    let forced = actix_test::TestRequest::get()
        .uri("/items")
        .insert_header(("x-arm", pin));
    assert_eq!(
        get(&live, forced).await,
        (StatusCode::OK, "v2 /items".to_owned())
    );
    let counts = shadow.counts();
    assert_eq!((counts.overridden, counts.mirrored), (1, 0));
    let copies = seen(&candidate);
    assert_eq!(copies.len(), 1);
    assert!(!copies[0].shadow, "served live, not as a shadow copy");
    // Pinned requests are not the steerer's: counted, and kept out of the canary's tests.
    assert_eq!(rollout.evidence().live_requests, 1);
    // Anyone's bare "candidate" is not a signature: the read is served by stable (and
    // mirrored like any other), and the value is counted.
    let unsigned = actix_test::TestRequest::get()
        .uri("/items")
        .insert_header(("x-arm", "candidate"));
    assert_eq!(
        get(&live, unsigned).await,
        (StatusCode::OK, "v1 /items".to_owned())
    );
    assert_eq!(rollout.override_counts().unsigned, 1);
    assert_eq!(shadow.counts().overridden, 1);
}

#[actix_web::test]
async fn hung_copies_time_out_and_the_shadow_goes_on() {
    let config = ShadowConfig::new().with_budget(ShadowBudget {
        queue_capacity: 8,
        concurrency: 2,
        timeout: Duration::from_millis(200),
    });
    let rollout = rollout(|builder| builder.shadow(config));
    let shadow = Shadow::new(stable, || app("v2", log()), &rollout);
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    for _ in 0..3 {
        assert_eq!(
            get(&live, actix_test::TestRequest::get().uri("/hang"))
                .await
                .0,
            StatusCode::OK
        );
    }
    eventually(&shadow, "three copies timed out", |c| c.timed_out == 3).await;
    get(&live, actix_test::TestRequest::get().uri("/fine")).await;
    eventually(&shadow, "the next copy was answered", |c| c.completed == 1).await;
    assert_eq!(shadowed_candidate(&rollout).outcomes.timeout, 3);
}

#[actix_web::test]
async fn bodies_the_handler_does_not_read_are_not_mirrored() {
    let mirror = HttpMirror::new()
        .allow("POST /upload")
        .and_then(|m| m.allow("POST /search"))
        .expect("valid rules");
    let rollout = rollout(|builder| builder.mirror(mirror));
    let candidate = log();
    let candidate_log = Arc::clone(&candidate);
    let shadow = Shadow::new(
        stable,
        move || app("v2", Arc::clone(&candidate_log)),
        &rollout,
    );
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    let upload = actix_test::TestRequest::post()
        .uri("/upload")
        .set_payload("abc");
    assert_eq!(get(&live, upload).await.0, StatusCode::OK);
    assert_eq!(shadow.counts().skipped_unread_body, 1);
    let search = actix_test::TestRequest::post()
        .uri("/search")
        .set_payload("q=1");
    assert_eq!(get(&live, search).await.0, StatusCode::OK);
    eventually(&shadow, "the read body was mirrored", |c| c.completed == 1).await;
    let paths: Vec<String> = seen(&candidate).into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/search"]);
}

/// An app that refuses `/private` with an error value from a check in front of it, as an
/// auth middleware would, fails `/forbidden` in its handler, and answers `v1` otherwise.
fn guarded() -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .route(
            "/forbidden",
            web::get()
                .to(|| async { Err::<HttpResponse, _>(actix_web::error::ErrorForbidden("no")) }),
        )
        .default_service(web::to(|| async { "v1" }))
        .wrap_fn(|request, service| {
            let refused = request.path() == "/private";
            let response = service.call(request);
            async move {
                if refused {
                    return Err(actix_web::error::ErrorUnauthorized("no"));
                }
                response.await
            }
        })
}

/// Sends `/private` (refused with an error value, which goes through unchanged) and
/// `/forbidden` (a handler's error) to `live`.
async fn send_refused_and_forbidden(
    live: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
) {
    let refused = actix_test::try_call_service(
        live,
        actix_test::TestRequest::get().uri("/private").to_request(),
    )
    .await;
    assert_eq!(
        refused
            .map(|r| r.status())
            .map_err(|e| e.as_response_error().status_code()),
        Err(StatusCode::UNAUTHORIZED),
        "the error value goes through unchanged"
    );
    let (status, _) = get(live, actix_test::TestRequest::get().uri("/forbidden")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn errors_are_recorded_with_the_status_actix_answers_them_with() {
    // At a canary step (live requests are recorded per build there), all traffic on stable
    // and nothing mirrored, so that every request is the canary's.
    let steerer = Arc::new(WeightedSteerer::new());
    let config = ShadowConfig::new().with_mirror_share(Share::ZERO);
    let rollout = rollout(|builder| builder.steerer(Arc::clone(&steerer)).shadow(config));
    rollout
        .handle()
        .step_up("the test records live requests")
        .expect("shadowing steps up");
    steerer.set_share(Share::ZERO);
    let shadow = Shadow::new(guarded, || app("v2", log()), &rollout);
    let live = actix_test::init_service(guarded().wrap(shadow.clone())).await;
    send_refused_and_forbidden(&live).await;
    let stable = rollout.evidence().canary.total(Arm::Stable);
    assert_eq!(
        (stable.outcomes.client_error, stable.outcomes.server_error),
        (2, 0)
    );
}

#[actix_web::test]
async fn a_read_whose_live_response_is_an_error_value_is_not_compared() {
    let rollout = rollout(|builder| builder);
    let shadow = Shadow::new(guarded, || app("v2", log()), &rollout);
    let live = actix_test::init_service(guarded().wrap(shadow.clone())).await;
    send_refused_and_forbidden(&live).await;
    // The refused read's live response was never seen, so it is not compared.
    eventually(&shadow, "both copies settled", |c| {
        c.completed == 2 && c.compared + c.comparison_missed == 2
    })
    .await;
    assert_eq!(shadow.counts().comparison_missed, 1);
}

#[actix_web::test]
async fn a_candidate_that_cannot_start_is_rolled_back_and_stable_serves() {
    let rollout = rollout(|builder| builder);
    let shadow = Shadow::new(
        stable,
        || {
            App::new()
                .data_factory(|| async { Err::<u32, _>("no database") })
                .route("/", web::get().to(|| async { "v2" }))
        },
        &rollout,
    );
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    assert_eq!(rollout.status().phase, Phase::RolledBack);
    assert_eq!(
        get(&live, actix_test::TestRequest::get().uri("/items")).await,
        (StatusCode::OK, "v1 /items".to_owned())
    );
    assert_eq!(shadow.counts().mirrored, 0);
}

/// A candidate whose service is never ready holds back only the requests steered to it:
/// stable's readiness alone gates the middleware.
#[actix_web::test]
async fn a_candidate_that_is_never_ready_does_not_hold_back_stable() {
    use std::future::Ready;
    use std::task::{Context, Poll};

    use actix_web::dev::Transform;
    use futures::future::LocalBoxFuture;

    /// Middleware whose service is never ready: the candidate's app, wrapped in it, is
    /// never ready either.
    struct NeverReady;

    struct NeverReadyService<S>(S);

    impl<S, B> Transform<S, ServiceRequest> for NeverReady
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>
            + 'static,
    {
        type Response = ServiceResponse<B>;
        type Error = actix_web::Error;
        type Transform = NeverReadyService<S>;
        type InitError = ();
        type Future = Ready<Result<Self::Transform, ()>>;

        fn new_transform(&self, service: S) -> Self::Future {
            std::future::ready(Ok(NeverReadyService(service)))
        }
    }

    impl<S, B> Service<ServiceRequest> for NeverReadyService<S>
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>
            + 'static,
    {
        type Response = ServiceResponse<B>;
        type Error = actix_web::Error;
        type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

        fn poll_ready(&self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }

        fn call(&self, request: ServiceRequest) -> Self::Future {
            Box::pin(self.0.call(request))
        }
    }

    let rollout = rollout(|builder| builder);
    let shadow = Shadow::new(stable, || app("v2", log()).wrap(NeverReady), &rollout);
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    // actix-web's dispatcher asks for readiness before every call; the test client does not.
    tokio::time::timeout(
        Duration::from_secs(5),
        std::future::poll_fn(|cx| live.poll_ready(cx)),
    )
    .await
    .expect("ready without waiting for the candidate")
    .expect("ready");
    let answer = get(&live, actix_test::TestRequest::get().uri("/items")).await;
    assert_eq!(answer, (StatusCode::OK, "v1 /items".to_owned()));
}
