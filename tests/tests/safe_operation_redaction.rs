//! No credential in any output: a rollout run with secrets in every place a request or a
//! response can carry one, then every output grepped for them — every log line at every
//! level, the events, the status, the evidence, the comparison report, the admin API's
//! answers, the rollout's store on disk and its `Debug`. The shadow's copy still carries
//! them (the candidate needs them to answer as stable does).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use shadowlib::admin::{AdminApi, AdminRequest};
use shadowlib::compare::ComparisonReport;
use shadowlib::redact::Redaction;
use shadowlib::shadow::{ShadowConfig, in_shadow};
use shadowlib::{Rollout, RolloutPolicy, Share, TrafficSteerer, Version, WeightedSteerer};
use shadowlib_tower::ShadowLayer;
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const AUTHORIZATION: &str = "Bearer SECRET-authorization-1111";
const COOKIE: &str = "SECRET-cookie-2222";
const API_KEY: &str = "SECRET-api-key-3333";
const SET_COOKIE: &str = "SECRET-set-cookie-4444";
const BODY_TOKEN: &str = "SECRET-body-token-5555";
const SESSION_KEY: &str = "SECRET-session-key-6666";
const READ_TOKEN: &str = "SECRET-admin-read-7777";
const OPERATE_TOKEN: &str = "SECRET-admin-operate-8888";

const SECRETS: [&str; 8] = [
    "SECRET-authorization-1111",
    COOKIE,
    API_KEY,
    SET_COOKIE,
    BODY_TOKEN,
    SESSION_KEY,
    READ_TOKEN,
    OPERATE_TOKEN,
];

/// Every log event and span field, as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Capture {
    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn with(&self, write: impl FnOnce(&mut String)) {
        write(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.with(|text| span.record(&mut Fields(text)));
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        self.with(|text| values.record(&mut Fields(text)));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        self.with(|text| {
            text.push_str(event.metadata().target());
            text.push(' ');
            event.record(&mut Fields(text));
            text.push('\n');
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// A build that answers with a secret in a header and in its JSON, the candidate's
/// different from stable's so that the comparator names the fields; `seen` gets the
/// candidate's copies' `Authorization`.
fn build(candidate: bool, seen: Arc<Mutex<Vec<String>>>) -> Router {
    Router::new().fallback(move |request: Request| {
        let seen = Arc::clone(&seen);
        async move {
            if in_shadow() {
                let auth = request.headers().get("authorization");
                let auth = auth.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                seen.lock().unwrap_or_else(|e| e.into_inner()).extend(auth);
            }
            let suffix = if candidate { "-v2" } else { "" };
            let body = format!(
                r#"{{"token": "{BODY_TOKEN}{suffix}", "sessions": {{"{SESSION_KEY}{suffix}": 1}}, "n": 1}}"#
            );
            (
                [
                    ("content-type", "application/json".to_owned()),
                    ("set-cookie", format!("sid={SET_COOKIE}{suffix}")),
                ],
                body,
            )
                .into_response()
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_any_output() {
    let logs = Capture::default();
    tracing::subscriber::set_global_default(logs.clone()).expect("the only subscriber");
    let store =
        std::env::temp_dir().join(format!("shadowlib-redaction-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&store);
    let redaction = Redaction::new()
        .header("x-api-key")
        .expect("a header name")
        .json_field("token")
        .json_field("sessions");
    let (rollout, mut driver) =
        Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2"))
            .policy(RolloutPolicy::from_toml("min_samples = 10").expect("valid"))
            .shadow(
                ShadowConfig::new()
                    .with_compare_headers(["content-type", "set-cookie", "x-api-key"])
                    .expect("names"),
            )
            .redaction(redaction)
            .persist(&store)
            // Compares and decides, never moves traffic: the operator's pause below is legal.
            .shadow_only()
            .build_driven()
            .expect("valid");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = ShadowLayer::new(build(true, Arc::clone(&seen)), &rollout)
        .around(build(false, Arc::default()));
    for i in 0..60 {
        let request = http::Request::builder()
            .uri(format!("/items/{i}"))
            .header("authorization", AUTHORIZATION)
            .header("cookie", format!("theme=dark; session={COOKIE}"))
            .header("x-api-key", API_KEY)
            .body(axum::body::Body::empty())
            .expect("valid");
        let response = service.clone().oneshot(request).await.expect("infallible");
        let _ = response.into_body().collect().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rollout.shadow_counts().compared < 60 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        rollout.shadow_counts().compared,
        60,
        "{:?}",
        rollout.shadow_counts()
    );
    assert!(
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|a| a == AUTHORIZATION),
        "the shadow's copy carries the credential"
    );
    let decision = driver.look().await;

    let api = AdminApi::builder(&rollout)
        .read_token("dashboard", READ_TOKEN)
        .operate_token("ops", OPERATE_TOKEN)
        .build()
        .expect("valid");
    let mut answers = String::new();
    let read = format!("Bearer {READ_TOKEN}");
    for path in ["/status", "/evidence", "/events"] {
        let answer =
            api.handle(&AdminRequest::new("GET", path).with_authorization(Some(read.as_bytes())));
        assert_eq!(answer.status, 200, "{path}");
        answers.push_str(&String::from_utf8_lossy(&answer.body));
    }
    let wrong = format!("Bearer {OPERATE_TOKEN}x");
    assert_eq!(
        api.handle(&AdminRequest::new("GET", "/status").with_authorization(Some(wrong.as_bytes())))
            .status,
        401
    );
    let operate = format!("Bearer {OPERATE_TOKEN}");
    let reason = format!(r#"{{"reason": "pasted {OPERATE_TOKEN} and {READ_TOKEN} by mistake"}}"#);
    let paused = api.handle(
        &AdminRequest::new("POST", "/pause")
            .with_authorization(Some(operate.as_bytes()))
            .with_body(reason.as_bytes()),
    );
    assert_eq!(paused.status, 200);
    answers.push_str(&String::from_utf8_lossy(&paused.body));

    let evidence = rollout.evidence();
    let fields: Vec<String> = evidence
        .shadow
        .pairs
        .total
        .top_fields(10)
        .iter()
        .map(|(f, _)| f.to_string())
        .collect();
    assert!(
        fields.iter().any(|f| f == "/token"),
        "the field is named, not its value: {fields:?}"
    );
    let outputs = [
        ("logs", logs.text()),
        ("admin answers", answers),
        (
            "history",
            serde_json::to_string(&rollout.handle().history()).expect("serializes"),
        ),
        (
            "status",
            serde_json::to_string(&rollout.status()).expect("serializes"),
        ),
        (
            "evidence",
            serde_json::to_string(&evidence).expect("serializes"),
        ),
        (
            "report",
            ComparisonReport::from_pairs(&evidence.shadow.pairs, 10).to_string(),
        ),
        ("decision", decision.to_string()),
        (
            "debug",
            format!("{rollout:?} {api:?} {:?}", rollout.shadow_counts()),
        ),
        ("plan", rollout.plan().to_string()),
        (
            "store",
            String::from_utf8_lossy(&std::fs::read(&store).expect("the store")).into_owned(),
        ),
    ];
    for (output, text) in &outputs {
        assert!(!text.is_empty() || *output == "logs", "{output} is empty");
        for secret in SECRETS {
            assert!(!text.contains(secret), "{output} holds {secret}:\n{text}");
        }
        // Every secret's distinctive tail, in case a prefix was cut off.
        assert!(
            !text.contains("-v2\""),
            "{output} holds a candidate's secret value"
        );
    }
    assert!(
        outputs[0].1.contains("admin API refused"),
        "the refusal was logged"
    );
    let _ = std::fs::remove_file(&store);
}

/// A candidate that panics on a live request with a message quoting the request's
/// credentials: the adapter logs the panic, with the credentials scrubbed.
#[tokio::test(flavor = "current_thread")]
async fn a_candidates_panic_is_logged_without_the_credentials_it_quotes() {
    let logs = Capture::default();
    // This thread's subscriber: the runtime is this thread, and the other test owns the
    // global one.
    let _scope = tracing::subscriber::set_default(logs.clone());
    let steerer = Arc::new(WeightedSteerer::new());
    let (rollout, _driver) = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2"))
        .steerer(Arc::clone(&steerer))
        .redaction(Redaction::new().header("x-api-key").expect("a header name"))
        .without_process_sampling()
        .build_driven()
        .expect("valid");
    steerer.set_share(Share::FULL);
    let candidate = Router::new().fallback(|request: Request| async move {
        let quoted: Vec<String> = ["authorization", "cookie", "x-api-key"]
            .iter()
            .filter_map(|name| request.headers().get(*name))
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        panic!("refused the credentials {quoted:?}");
        #[allow(unreachable_code)]
        ""
    });
    let service = ShadowLayer::new(candidate, &rollout).around(build(false, Arc::default()));
    let request = http::Request::builder()
        .uri("/items/1")
        .header("authorization", AUTHORIZATION)
        .header("cookie", format!("theme=dark; session={COOKIE}"))
        .header("x-api-key", API_KEY)
        .body(axum::body::Body::empty())
        .expect("valid");
    let response = service.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 500);
    let text = logs.text();
    assert!(text.contains("refused the credentials"), "logged: {text}");
    for secret in [AUTHORIZATION, COOKIE, API_KEY] {
        assert!(!text.contains(secret), "the log holds {secret}:\n{text}");
    }
    assert!(text.contains("[redacted]"), "{text}");
}
