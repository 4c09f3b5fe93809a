//! The five traits are the seams the code goes through: a custom `Mirror`,
//! `MetricSource`, `Predictor`, `TrafficSteerer` and `StateDelta`, each plugged into the
//! rollout through its builder, is called by the real adapter and controller.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use http_body_util::BodyExt;
use shadowlib::analysis::Verdict;
use shadowlib::delta::{DeltaBus, LiveState, ShadowState, StalenessBound, StateDelta};
use shadowlib::mirror::{HttpMirror, Mirror, RequestCopy, RequestHead};
use shadowlib::{
    Action, Arm, Evidence, MetricError, MetricSource, Phase, Prediction, Predictor, ReadClass,
    Rollout, RolloutPolicy, Share, TrafficSteerer, Version,
};
use shadowlib_tower::ShadowLayer;
use tower::ServiceExt;

fn versions() -> (Version, Version) {
    (Version::new("seams", "1"), Version::new("seams", "2"))
}

/// Sends `method path` with `headers` through `app` and reads the answer.
async fn send(app: &Router, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut request = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(axum::body::Body::empty())
        .expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let body = response.into_body().collect().await.expect("a body");
    String::from_utf8_lossy(&body.to_bytes()).into_owned()
}

/// Waits, generously for a loaded machine, until `done`.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..20_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}

/// GraphQL over POST: a query is a read, a mutation is not.
struct GraphQl {
    http: HttpMirror,
    asked: AtomicU64,
}

impl<'a> Mirror<RequestHead<'a>> for GraphQl {
    type Copy = RequestCopy;

    fn classify(&self, head: &RequestHead<'a>) -> ReadClass {
        self.asked.fetch_add(1, Ordering::Relaxed);
        if head.method == "POST" && head.path == "/graphql" {
            match head.headers.first("x-graphql-operation") {
                Some(b"query") => ReadClass::Read,
                _ => ReadClass::NotRead("graphql operation is not a query"),
            }
        } else {
            self.http.classify(head)
        }
    }

    fn copy(&self, head: &RequestHead<'a>, copy: &mut RequestCopy) {
        self.http.copy(head, copy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_mirror_decides_what_both_adapters_copy() {
    let mirror = Arc::new(GraphQl {
        http: HttpMirror::new(),
        asked: AtomicU64::new(0),
    });
    let rollout = Rollout::builder(versions().0, versions().1)
        .mirror(Arc::clone(&mirror))
        .without_process_sampling()
        .shadow_only()
        .build()
        .expect("a valid rollout");
    let build =
        |tag: &'static str| Router::new().route("/graphql", post(move || async move { tag }));
    let app = ShadowLayer::new(build("v2"), &rollout).around(build("v1"));

    assert_eq!(
        send(
            &app,
            "POST",
            "/graphql",
            &[("x-graphql-operation", "query")]
        )
        .await,
        "v1"
    );
    assert_eq!(
        send(
            &app,
            "POST",
            "/graphql",
            &[("x-graphql-operation", "mutation")]
        )
        .await,
        "v1"
    );
    eventually("the query was compared", || {
        rollout.shadow_counts().compared == 1
    })
    .await;
    let counts = rollout.shadow_counts();
    assert_eq!((counts.mirrored, counts.not_read), (1, 1), "{counts:?}");
    assert_eq!(
        mirror.asked.load(Ordering::Relaxed),
        2,
        "asked once per request"
    );
}

/// Reports each build's database queries per request, as a source of its own would.
struct QueriesPerRequest;

#[async_trait]
impl MetricSource for QueriesPerRequest {
    fn name(&self) -> &str {
        "db-queries"
    }

    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
        let kpi = into.custom_mut("db_queries_per_request");
        kpi.arm_mut(Arm::Stable).add(2.0);
        kpi.arm_mut(Arm::Candidate).add(9.0);
        Ok(())
    }
}

/// Reports one read run on both builds, as a shadow of the service's own would.
struct OnePair;

#[async_trait]
impl MetricSource for OnePair {
    fn name(&self) -> &str {
        "one-pair"
    }

    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
        into.shadow.pairs.total.outcomes.record(false, false);
        Ok(())
    }
}

/// Rolls back when the candidate issues more than twice stable's queries; promotes
/// otherwise. What it saw is kept to check.
#[derive(Default)]
struct QueryBudget {
    seen: Mutex<Vec<(f64, f64)>>,
}

impl Predictor for QueryBudget {
    fn name(&self) -> &str {
        "query-budget"
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let kpi = evidence
            .custom
            .get("db_queries_per_request")
            .copied()
            .unwrap_or_default();
        let (stable, candidate) = (kpi.stable.mean(), kpi.candidate.mean());
        self.seen
            .lock()
            .expect("not poisoned")
            .push((stable, candidate));
        // A rule of the service's own, taken as it is: the budget is a contract, not an
        // estimate with noise.
        let verdict = if candidate > 2.0 * stable {
            Verdict::Worse
        } else {
            Verdict::NotWorse
        };
        Prediction::ruling(self.name(), verdict, evidence).with_reason(format!(
            "queries per request: stable {stable}, candidate {candidate}"
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_metric_source_reaches_a_custom_predictor() {
    let predictor = Arc::new(QueryBudget::default());
    let (rollout, mut driver) = Rollout::builder(versions().0, versions().1)
        .policy(RolloutPolicy {
            min_samples: 1,
            ..RolloutPolicy::default()
        })
        .predictor(Arc::clone(&predictor))
        .metric_source(QueriesPerRequest)
        // The look has a sample to judge on.
        .metric_source(OnePair)
        .without_process_sampling()
        .build_driven()
        .expect("a valid rollout");
    let decision = driver.look().await;
    assert_eq!(
        predictor.seen.lock().expect("not poisoned").as_slice(),
        [(2.0, 9.0)],
        "the predictor saw the source's KPI on both builds"
    );
    assert_eq!(decision.action, Action::RollBack, "{decision}");
    assert!(
        decision.to_string().contains("stable 2, candidate 9"),
        "{decision}"
    );
    assert_eq!(rollout.phase(), Phase::RolledBack);
}

/// A steerer of its own: every request to the candidate once it has any share, and the
/// shares it was told kept to check.
#[derive(Default)]
struct AllOrNothing {
    share_ppm: AtomicU32,
    told: Mutex<Vec<Share>>,
    picks: AtomicU64,
}

impl TrafficSteerer for AllOrNothing {
    fn set_share(&self, share: Share) {
        self.told.lock().expect("not poisoned").push(share);
        self.share_ppm.store(share.ppm(), Ordering::Release);
    }

    fn share(&self) -> Share {
        Share::from_ppm(self.share_ppm.load(Ordering::Acquire)).unwrap_or(Share::ZERO)
    }

    fn pick(&self, _key: Option<&[u8]>) -> Arm {
        self.picks.fetch_add(1, Ordering::Relaxed);
        if self.share_ppm.load(Ordering::Acquire) > 0 {
            Arm::Candidate
        } else {
            Arm::Stable
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_steerer_is_told_the_share_and_picks_every_request() {
    let steerer = Arc::new(AllOrNothing::default());
    let rollout = Rollout::builder(versions().0, versions().1)
        .steerer(Arc::clone(&steerer))
        .without_process_sampling()
        .build()
        .expect("a valid rollout");
    let build = |tag: &'static str| Router::new().route("/", get(move || async move { tag }));
    let app = ShadowLayer::new(build("v2"), &rollout).around(build("v1"));
    assert_eq!(send(&app, "GET", "/", &[]).await, "v1");
    let handle = rollout.handle();
    handle
        .promote_now("operator: all in")
        .expect("a live rollout promotes");
    assert_eq!(send(&app, "GET", "/", &[]).await, "v2");
    assert_eq!(steerer.picks.load(Ordering::Relaxed), 2);
    assert_eq!(
        steerer.told.lock().expect("not poisoned").as_slice(),
        [Share::ZERO, Share::FULL],
        "set to none at the start, to all at the promotion"
    );
}

/// The stock of one item, changed only by deltas.
#[derive(Debug, Default)]
struct Stock(i64);

#[derive(Debug, thiserror::Error)]
#[error("stock would overflow")]
struct Overflow;

impl StateDelta for Stock {
    type Delta = i64;
    type Snapshot = i64;
    type Error = Overflow;

    fn apply(&mut self, change: &i64) -> Result<(), Overflow> {
        self.0 = self.0.checked_add(*change).ok_or(Overflow)?;
        Ok(())
    }

    fn snapshot(&self) -> i64 {
        self.0
    }

    fn restore(&mut self, snapshot: i64) {
        self.0 = snapshot;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_state_is_kept_current_in_the_shadow_and_compared_like_for_like() {
    let bus = DeltaBus::<Stock>::in_process(64).expect("a valid buffer");
    let live = bus.live(Stock::default()).start().expect("starts");
    let shadow = bus.follow(Stock::default()).expect("follows");
    let rollout = Rollout::builder(versions().0, versions().1)
        .state_delta(&live, &shadow, StalenessBound::default())
        .without_process_sampling()
        .shadow_only()
        .build()
        .expect("a valid rollout");
    // Stable serves from live's state, the candidate from the shadow's.
    let stable = Router::new()
        .route(
            "/stock",
            get(|State(live): State<LiveState<Stock>>| async move {
                live.read(|stock| stock.0).to_string()
            }),
        )
        .with_state(live.clone());
    let candidate = Router::new()
        .route(
            "/stock",
            get(|State(shadow): State<ShadowState<Stock>>| async move {
                shadow.read(|stock| stock.0).to_string()
            }),
        )
        .with_state(shadow.clone());
    let app = ShadowLayer::new(candidate, &rollout).around(stable);

    for (round, change) in [5_i64, -2, 10].into_iter().enumerate() {
        live.commit(change).expect("no overflow");
        send(&app, "GET", "/stock", &[]).await;
        eventually("the read was compared", || {
            rollout.shadow_counts().compared == round as u64 + 1
        })
        .await;
    }
    let counts = rollout.shadow_counts();
    assert_eq!((counts.compared, counts.mismatched), (3, 0), "{counts:?}");
}
