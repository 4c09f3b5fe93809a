//! Safe to operate: the admin API's authentication over real sockets (axum) and in
//! actix-web, the signed override header through the tower layer, and a rollout that
//! survives a killed process and a truncated store.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use shadowlib::admin::AdminApi;
use shadowlib::mirror::ArmOverride;
use shadowlib::{Arm, LivePhase, Phase, Rollout, Version};
use shadowlib_tower::ShadowLayer;
use tower::ServiceExt;

const READ: &str = "read-token-for-tests-0001";
const OPERATE: &str = "operate-token-for-tests-0001";
const SECRET: &[u8; 32] = b"override-secret-for-tests-000001";

fn builds() -> (Version, Version) {
    (Version::new("shop", "1"), Version::new("shop", "2"))
}

fn api(rollout: &Rollout) -> AdminApi {
    AdminApi::builder(rollout)
        .read_token("dashboard", READ)
        .operate_token("ops-alice", OPERATE)
        .build()
        .expect("valid tokens")
}

/// The admin router served on a loopback port; the address, and the task to abort.
async fn serve_admin(api: AdminApi) -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new().nest("/admin", shadowlib_tower::admin::router(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), server)
}

async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .expect("a valid request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("answered in time")
        .expect("answered");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_admin_router_refuses_missing_wrong_and_read_only_tokens() {
    let (rollout, _driver) = Rollout::builder(builds().0, builds().1)
        .without_process_sampling()
        .build_driven()
        .expect("valid");
    let (base, server) = serve_admin(api(&rollout)).await;
    let reason = r#"{"reason": "checking the api"}"#;
    for path in ["/admin/status", "/admin/evidence", "/admin/events"] {
        assert_eq!(
            call(&base, "GET", path, None, "").await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let wrong = call(&base, "GET", path, Some("not-a-token-of-ours-0001"), "").await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            !wrong.1.contains("not-a-token"),
            "the token is not echoed: {}",
            wrong.1
        );
        assert_eq!(
            call(&base, "GET", path, Some(READ), "").await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    for command in ["pause", "resume", "promote", "abort"] {
        let path = format!("/admin/{command}");
        assert_eq!(
            call(&base, "POST", &path, None, reason).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&base, "POST", &path, Some(READ), reason).await.0,
            StatusCode::UNAUTHORIZED,
            "a read token on {path}"
        );
    }
    assert_eq!(
        rollout.phase(),
        Phase::Shadowing,
        "no refused command was carried out"
    );

    let (status, body) = call(&base, "POST", "/admin/pause", Some(OPERATE), reason).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        rollout.phase(),
        Phase::Paused {
            from: LivePhase::Shadowing
        }
    );
    let (_, events) = call(&base, "GET", "/admin/events", Some(READ), "").await;
    assert!(events.contains(r#""by":"ops-alice""#), "{events}");
    let (status, text) = call(&base, "GET", "/admin/status", Some(READ), "").await;
    assert_eq!(status, StatusCode::OK);
    let status: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(status["status"]["phase"]["phase"], "paused", "{status}");
    let big = "x".repeat(shadowlib::admin::ADMIN_BODY_LIMIT + 1);
    assert_eq!(
        call(&base, "POST", "/admin/abort", Some(OPERATE), &big)
            .await
            .0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    server.abort();
}

#[actix_web::test]
async fn the_admin_scope_refuses_alike_in_actix() {
    use actix_web::test as actix_test;
    let (rollout, _driver) = Rollout::builder(builds().0, builds().1)
        .without_process_sampling()
        .build_driven()
        .expect("valid");
    let app = actix_test::init_service(
        actix_web::App::new().service(shadowlib_actix::admin::scope("/admin", api(&rollout))),
    )
    .await;
    let send = |method: actix_web::http::Method, path: &str, token: Option<&str>| {
        let mut request = actix_test::TestRequest::default()
            .method(method)
            .uri(path)
            .set_payload(r#"{"reason": "actix"}"#);
        if let Some(token) = token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        request.to_request()
    };
    use actix_web::http::Method;
    let status = |response: actix_web::dev::ServiceResponse| response.status().as_u16();
    assert_eq!(
        status(actix_test::call_service(&app, send(Method::GET, "/admin/status", None)).await),
        401
    );
    assert_eq!(
        status(
            actix_test::call_service(
                &app,
                send(Method::GET, "/admin/status", Some("wrong-token-0123456789"))
            )
            .await
        ),
        401
    );
    assert_eq!(
        status(
            actix_test::call_service(&app, send(Method::GET, "/admin/status", Some(READ))).await
        ),
        200
    );
    assert_eq!(
        status(
            actix_test::call_service(&app, send(Method::POST, "/admin/abort", Some(READ))).await
        ),
        401
    );
    assert_eq!(rollout.phase(), Phase::Shadowing);
    assert_eq!(
        status(
            actix_test::call_service(&app, send(Method::POST, "/admin/abort", Some(OPERATE))).await
        ),
        200
    );
    assert_eq!(rollout.phase(), Phase::RolledBack);
    let last = rollout.handle().history().pop().expect("the abort");
    assert_eq!(last.decision.by.as_deref(), Some("ops-alice"));
}

/// What reached a build live (not as a shadow copy): `METHOD path` in order.
type Seen = Arc<Mutex<Vec<String>>>;

fn app(build: &'static str, seen: Seen) -> Router {
    let record = move |request: axum::extract::Request| {
        let seen = Arc::clone(&seen);
        async move {
            if !shadowlib::shadow::in_shadow() {
                let line = format!("{} {}", request.method(), request.uri().path());
                seen.lock().expect("not poisoned").push(line);
            }
            build
        }
    };
    Router::new().route("/orders", get(record.clone()).post(record))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_override_never_sends_a_write_to_a_shadowing_candidate() {
    let (stable, candidate) = builds();
    let header = ArmOverride::signed("x-shadowlib-arm", SECRET).expect("long enough");
    let value = header
        .clone()
        .for_builds(&stable, &candidate)
        .sign(
            Arm::Candidate,
            &candidate,
            SystemTime::now() + Duration::from_secs(300),
        )
        .expect("signed");
    let (rollout, _driver) = Rollout::builder(stable, candidate)
        .override_header(header)
        .without_process_sampling()
        .build_driven()
        .expect("valid");
    let candidate_seen = Seen::default();
    let service = ShadowLayer::new(app("v2", Arc::clone(&candidate_seen)), &rollout)
        .around(app("v1", Seen::default()));
    let send = |method: &str, value: &str| {
        let request = Request::builder()
            .method(method)
            .uri("/orders")
            .header("x-shadowlib-arm", value)
            .body(axum::body::Body::empty())
            .expect("valid");
        let service = service.clone();
        async move {
            let response = service.oneshot(request).await.expect("infallible");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            String::from_utf8_lossy(&body).into_owned()
        }
    };
    // Shadowing: the signed value pins a read, never a write; a forged one pins nothing.
    assert_eq!(send("GET", &value).await, "v2");
    for _ in 0..25 {
        assert_eq!(send("POST", &value).await, "v1", "a write stays on stable");
    }
    assert_eq!(send("POST", "candidate").await, "v1");
    assert_eq!(send("GET", "candidate").await, "v1", "unsigned is ignored");
    let counts = rollout.override_counts();
    assert_eq!(
        (counts.refused_write, counts.unsigned),
        (25, 2),
        "{counts:?}"
    );
    assert_eq!(
        *candidate_seen.lock().expect("not poisoned"),
        ["GET /orders"]
    );

    // Once the candidate serves live traffic, a signed write may be pinned to it.
    rollout.handle().step_up("canary").expect("legal");
    assert_eq!(send("POST", &value).await, "v2");
}

/// A unique path for a store in the temp directory.
fn store_path(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("shadowlib-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir.join("rollout.redb")
}

/// The child's side of `a_killed_process_comes_back_paused_with_its_history`: with
/// `SHADOWLIB_TEST_STORE` set, runs a rollout to its second canary step, says so, and
/// waits to be killed. Without it (a plain `cargo test`), does nothing.
#[tokio::test]
async fn child_process_mid_rollout() {
    let Ok(path) = std::env::var("SHADOWLIB_TEST_STORE") else {
        return;
    };
    let (rollout, _driver) = Rollout::builder(builds().0, builds().1)
        .persist(&path)
        .without_process_sampling()
        .build_driven()
        .expect("builds on the store");
    let handle = rollout.handle();
    handle.step_up("to the first step").expect("legal");
    handle.step_up("to the second step").expect("legal");
    println!("READY {}", rollout.status().share);
    assert!(
        !rollout.status().share.is_zero(),
        "the child is in the canary"
    );
    // Killed here; the bound only keeps a forgotten child from living on.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_killed_process_comes_back_paused_with_its_history() {
    let path = store_path("killed");
    let mut child = Process::new(std::env::current_exe().expect("the test binary"))
        .args([
            "child_process_mid_rollout",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHADOWLIB_TEST_STORE", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("piped");
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest writes its own words before the child's on that line.
            .find_map(|line| line.split_once("READY ").map(|(_, share)| share.to_owned()))
    });
    let ready = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .expect("the child got ready in time")
        .expect("the reader ended");
    let share = ready.expect("the child said where it was");
    child.kill().expect("killed");
    child.wait().expect("reaped");

    let (rollout, mut driver) = Rollout::builder(builds().0, builds().1)
        .persist(&path)
        .without_process_sampling()
        .build_driven()
        .expect("builds on the store");
    let status = rollout.status();
    assert_eq!(
        status.phase,
        Phase::Paused {
            from: LivePhase::Shadowing
        }
    );
    assert_eq!(status.share.percent(), 0.0);
    let history = rollout.handle().history();
    let phases: Vec<Phase> = history.iter().map(|e| e.transition.to).collect();
    assert_eq!(
        phases,
        [
            Phase::Shadowing,
            Phase::Canary { step: 0 },
            Phase::Canary { step: 1 },
            Phase::Paused {
                from: LivePhase::Shadowing
            }
        ]
    );
    let restart = &history[3];
    assert_eq!(restart.sequence, 4);
    assert!(
        restart
            .decision
            .to_string()
            .contains(&format!("restarted during canary step 2 at share {share}")),
        "{}",
        restart.decision
    );
    assert!(
        history[1]
            .decision
            .to_string()
            .contains("to the first step")
    );
    let recovery = rollout.recovery().expect("a store");
    assert_eq!(recovery.restarted_from, Some(Phase::Canary { step: 1 }));
    // It waits for an operator: looks do not resume it.
    driver.look().await;
    assert_eq!(
        rollout.phase(),
        Phase::Paused {
            from: LivePhase::Shadowing
        }
    );
}

fn truncate(path: &Path, len: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("the store");
    file.set_len(len).expect("truncated");
}

#[tokio::test]
async fn a_truncated_store_is_set_aside_and_the_rollout_comes_back_paused() {
    let path = store_path("truncated");
    {
        let (rollout, _driver) = Rollout::builder(builds().0, builds().1)
            .persist(&path)
            .without_process_sampling()
            .build_driven()
            .expect("builds");
        rollout.handle().step_up("canary").expect("legal");
    }
    let whole = std::fs::metadata(&path).expect("written").len();
    truncate(&path, whole / 3);
    let (rollout, _driver) = Rollout::builder(builds().0, builds().1)
        .persist(&path)
        .without_process_sampling()
        .build_driven()
        .expect("a damaged store is no build error");
    assert_eq!(
        rollout.phase(),
        Phase::Paused {
            from: LivePhase::Shadowing
        }
    );
    assert_eq!(rollout.status().share.percent(), 0.0);
    let recovery = rollout.recovery().expect("a store");
    let aside = recovery.set_aside.as_ref().expect("set aside");
    assert_eq!(std::fs::metadata(aside).expect("kept").len(), whole / 3);
    assert!(recovery.problem.is_some());
    let last = rollout.handle().history().pop().expect("the restart");
    assert!(
        last.decision
            .to_string()
            .contains("unreadable rollout store"),
        "{}",
        last.decision
    );
}
