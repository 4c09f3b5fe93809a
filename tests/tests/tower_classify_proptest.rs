//! Property: through the tower adapter, a request the read rules do not call a read never
//! reaches the shadow, whatever the method, path and rules.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use shadowlib::mirror::{HttpMirror, ReadRules, RouteRule};
use shadowlib::shadow::{ShadowBudget, ShadowConfig};
use shadowlib::{Rollout, RolloutPolicy, Version};
use shadowlib_tower::ShadowLayer;
use tower::{Layer, ServiceExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

#[derive(Debug, Clone)]
struct Rule {
    allow: bool,
    method: String,
    segments: Vec<String>,
}

impl Rule {
    fn pattern(&self) -> String {
        format!("/{}", self.segments.join("/"))
    }
}

/// The oracle's own matcher, written apart from the library's: `{…}` takes one segment,
/// a final `{*…}` one or more.
fn oracle_matches(segments: &[String], path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let catch_all = segments.last().is_some_and(|s| s.starts_with("{*"));
    let fixed = if catch_all {
        &segments[..segments.len() - 1]
    } else {
        segments
    };
    let length_ok = if catch_all {
        parts.len() > fixed.len()
    } else {
        parts.len() == fixed.len()
    };
    length_ok
        && fixed
            .iter()
            .zip(&parts)
            .all(|(segment, part)| segment.starts_with('{') || segment == part)
}

fn oracle_is_read(rules: &[Rule], method: &str, path: &str) -> bool {
    let matching = |allow: bool| {
        rules
            .iter()
            .any(|r| r.allow == allow && r.method == method && oracle_matches(&r.segments, path))
    };
    !matching(false) && (["GET", "HEAD", "OPTIONS"].contains(&method) || matching(true))
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "PURGE", "get",
            "post", "Get",
        ])
        .prop_map(str::to_owned),
        "[A-Za-z]{1,8}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "1", "", "xyz"]), 1..5)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

fn rule() -> impl Strategy<Value = Rule> {
    let segment = prop::sample::select(vec!["a", "b", "1", "xyz", "{p}"]).prop_map(str::to_owned);
    (
        any::<bool>(),
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PURGE"]),
        prop::collection::vec(segment, 1..4),
        any::<bool>(),
    )
        .prop_map(|(allow, method, mut segments, catch_all)| {
            if catch_all {
                segments.push("{*rest}".to_owned());
            }
            Rule {
                allow,
                method: method.to_owned(),
                segments,
            }
        })
}

type Log = Arc<Mutex<Vec<(String, String)>>>;

fn recording_router(log: Log) -> Router {
    Router::new().fallback(move |request: Request| {
        let log = Arc::clone(&log);
        async move {
            let entry = (
                request.method().to_string(),
                request.uri().path().to_owned(),
            );
            log.lock().expect("log lock").push(entry);
            "ok"
        }
    })
}

async fn mirrored_requests(
    rules: &[Rule],
    method: &str,
    path: &str,
) -> (u64, Vec<(String, String)>) {
    let mut read_rules = ReadRules::new();
    for rule in rules {
        let parsed =
            RouteRule::new(&rule.method, &rule.pattern()).expect("generated rules are valid");
        read_rules = if rule.allow {
            read_rules.allow_rule(parsed)
        } else {
            read_rules.deny_rule(parsed)
        };
    }
    let config = ShadowConfig::new().with_budget(ShadowBudget {
        concurrency: 1,
        ..ShadowBudget::default()
    });
    // Built, not driven: a rollout that only shadows, with no loop looking at it.
    let (rollout, _driver) = Rollout::builder(Version::new("p", "1"), Version::new("p", "2"))
        .policy(RolloutPolicy::default())
        .mirror(HttpMirror::new().with_rules(read_rules))
        .shadow(config)
        .without_process_sampling()
        .build_driven()
        .expect("a valid configuration");
    let shadow_log = Log::default();
    let layer = ShadowLayer::new(recording_router(Arc::clone(&shadow_log)), &rollout);
    let service = layer.layer(recording_router(Log::default()));
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(axum::body::Body::empty())
        .expect("generated methods and paths are valid");
    let response = service.clone().oneshot(request).await.expect("infallible");
    response
        .into_body()
        .collect()
        .await
        .expect("the stable body");

    let mirrored = rollout.shadow_counts().mirrored;
    // A liveness wait only: generous for a loaded machine, and a copy that never
    // completes fails here by name rather than as a missing entry in the log.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rollout.shadow_counts().completed != mirrored {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {mirrored} copies to complete: {:?}",
            rollout.shadow_counts()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seen = shadow_log.lock().expect("log lock").clone();
    (mirrored, seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn only_reads_ever_reach_the_shadow(
        rules in prop::collection::vec(rule(), 0..5),
        method in method(),
        path in path(),
    ) {
        let (mirrored, seen) = runtime().block_on(mirrored_requests(&rules, &method, &path));
        let is_read = oracle_is_read(&rules, &method, &path);
        prop_assert!(mirrored <= u64::from(is_read), "{method} {path} mirrored but not a read under {rules:?}");
        prop_assert_eq!(mirrored, u64::from(is_read), "every read during shadowing is mirrored");
        let expected = if is_read { vec![(method.clone(), path.clone())] } else { Vec::new() };
        prop_assert_eq!(seen, expected);
    }
}
