//! What the actix-web adapter does beyond the shared suite, driven in-process through
//! `actix_web::test`: what the shadow's copies carry, comparison, the override header,
//! timeouts, error values, and a candidate that cannot start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, test as actix_test, web};
use shadowlib::budget::ShadowBudget;
use shadowlib::mirror::{HeaderPolicy, ReadRules, Rollout, ShadowConfig, ShadowCounts, in_shadow};
use shadowlib::{Arm, KpiRecorder, Phase, RolloutHandle, Version};
use shadowlib_actix::Shadow;

/// A started rollout (shadowing) and its recorder.
struct Fixture {
    handle: RolloutHandle,
    recorder: Arc<KpiRecorder>,
    rollout: Rollout,
}

impl Fixture {
    fn new() -> Self {
        let rollout = Rollout::shadow_only(Version::new("actix", "1"), Version::new("actix", "2"));
        Self {
            handle: rollout.handle.clone(),
            recorder: Arc::clone(&rollout.recorder),
            rollout,
        }
    }
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
        if done(&shadow.runtime().stats().counts()) {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "timed out waiting until {what}: {:?}",
        shadow.runtime().stats().counts()
    );
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
    let fixture = Fixture::new();
    let candidate = log();
    let config = ShadowConfig::new().with_header_policy(
        HeaderPolicy::new()
            .redact("authorization")
            .and_then(|p| p.redact("cookie"))
            .expect("valid names")
            .replace_with("redacted"),
    );
    let candidate_log = Arc::clone(&candidate);
    let shadow = Shadow::new(
        move || app("v2", Arc::clone(&candidate_log)),
        fixture.rollout,
        config,
    )
    .expect("valid configuration");
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
    let fixture = Fixture::new();
    let config = ShadowConfig::new()
        .with_compare_headers(["content-type"])
        .expect("valid");
    // The candidate answers `v1 <path>` like stable on every path but `/changed`.
    let shadow = Shadow::new(
        || {
            App::new()
                .route("/changed", web::get().to(|| async { "v2 /changed" }))
                .default_service(web::to(|r: HttpRequest| async move {
                    HttpResponse::Ok()
                        .insert_header(("x-build", "v2"))
                        .body(format!("v1 {}", r.path()))
                }))
        },
        fixture.rollout,
        config,
    )
    .expect("valid configuration");
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    for path in ["/same", "/same", "/changed"] {
        get(&live, actix_test::TestRequest::get().uri(path)).await;
    }
    eventually(&shadow, "three comparisons", |c| c.compared == 3).await;
    let routes = shadow.runtime().stats().route_comparisons();
    assert_eq!(
        (routes["GET /same"].compared, routes["GET /same"].mismatched),
        (2, 0)
    );
    assert_eq!(routes["GET /changed"].mismatched, 1);
    let candidate = fixture.recorder.snapshot(Arm::Candidate);
    assert_eq!(
        (
            candidate.comparisons.compared,
            candidate.comparisons.mismatched
        ),
        (3, 1)
    );
}

#[actix_web::test]
async fn the_override_header_pins_a_request_to_the_candidate() {
    let fixture = Fixture::new();
    let config = ShadowConfig::new()
        .with_override_header("x-arm")
        .expect("valid name");
    let candidate = log();
    let candidate_log = Arc::clone(&candidate);
    let shadow = Shadow::new(
        move || app("v2", Arc::clone(&candidate_log)),
        fixture.rollout,
        config,
    )
    .expect("valid configuration");
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    let forced = actix_test::TestRequest::get()
        .uri("/items")
        .insert_header(("x-arm", "candidate"));
    assert_eq!(
        get(&live, forced).await,
        (StatusCode::OK, "v2 /items".to_owned())
    );
    let counts = shadow.runtime().stats().counts();
    assert_eq!((counts.overridden, counts.mirrored), (1, 0));
    let copies = seen(&candidate);
    assert_eq!(copies.len(), 1);
    assert!(!copies[0].shadow, "served live, not as a shadow copy");
    assert_eq!(
        fixture.recorder.snapshot(Arm::Candidate).outcomes.success,
        1
    );
}

#[actix_web::test]
async fn hung_copies_time_out_and_the_shadow_goes_on() {
    let fixture = Fixture::new();
    let config = ShadowConfig::new().with_budget(ShadowBudget {
        queue_capacity: 8,
        concurrency: 2,
        timeout: Duration::from_millis(200),
    });
    let shadow = Shadow::new(|| app("v2", log()), fixture.rollout, config).expect("valid");
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
    assert_eq!(
        fixture.recorder.snapshot(Arm::Candidate).outcomes.timeout,
        3
    );
}

#[actix_web::test]
async fn bodies_the_handler_does_not_read_are_not_mirrored() {
    let fixture = Fixture::new();
    let rules = ReadRules::new()
        .allow("POST /upload")
        .and_then(|r| r.allow("POST /search"))
        .expect("valid rules");
    let candidate = log();
    let candidate_log = Arc::clone(&candidate);
    let shadow = Shadow::new(
        move || app("v2", Arc::clone(&candidate_log)),
        fixture.rollout,
        ShadowConfig::new().with_classifier(rules),
    )
    .expect("valid configuration");
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    let upload = actix_test::TestRequest::post()
        .uri("/upload")
        .set_payload("abc");
    assert_eq!(get(&live, upload).await.0, StatusCode::OK);
    assert_eq!(shadow.runtime().stats().counts().skipped_unread_body, 1);
    let search = actix_test::TestRequest::post()
        .uri("/search")
        .set_payload("q=1");
    assert_eq!(get(&live, search).await.0, StatusCode::OK);
    eventually(&shadow, "the read body was mirrored", |c| c.completed == 1).await;
    let paths: Vec<String> = seen(&candidate).into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/search"]);
}

#[actix_web::test]
async fn errors_are_recorded_with_the_status_actix_answers_them_with() {
    let fixture = Fixture::new();
    let shadow = Shadow::new(|| app("v2", log()), fixture.rollout, ShadowConfig::new())
        .expect("valid configuration");
    // Inside the shadow middleware: a check that refuses `/private` with an error value,
    // as an auth middleware would, and a handler that fails on `/forbidden`.
    let live = actix_test::init_service(
        App::new()
            .route(
                "/forbidden",
                web::get().to(|| async {
                    Err::<HttpResponse, _>(actix_web::error::ErrorForbidden("no"))
                }),
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
            .wrap(shadow.clone()),
    )
    .await;
    let refused = actix_test::try_call_service(
        &live,
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
    let (status, _) = get(&live, actix_test::TestRequest::get().uri("/forbidden")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let stable = fixture.recorder.snapshot(Arm::Stable);
    assert_eq!(
        (stable.outcomes.client_error, stable.outcomes.server_error),
        (2, 0)
    );
    // The refused read's live response was never seen, so it is not compared.
    eventually(&shadow, "both copies settled", |c| {
        c.completed == 2 && c.compared + c.comparison_missed == 2
    })
    .await;
    assert_eq!(shadow.runtime().stats().counts().comparison_missed, 1);
}

#[actix_web::test]
async fn a_candidate_that_cannot_start_is_rolled_back_and_stable_serves() {
    let fixture = Fixture::new();
    let shadow = Shadow::new(
        || {
            App::new()
                .data_factory(|| async { Err::<u32, _>("no database") })
                .route("/", web::get().to(|| async { "v2" }))
        },
        fixture.rollout,
        ShadowConfig::new(),
    )
    .expect("the factory itself is valid");
    let live = actix_test::init_service(app("v1", log()).wrap(shadow.clone())).await;
    assert_eq!(fixture.handle.status().phase, Phase::RolledBack);
    assert_eq!(
        get(&live, actix_test::TestRequest::get().uri("/items")).await,
        (StatusCode::OK, "v1 /items".to_owned())
    );
    assert_eq!(shadow.runtime().stats().counts().mirrored, 0);
}
