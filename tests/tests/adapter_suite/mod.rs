//! The behaviour every shadowlib HTTP adapter must have, written once, run per adapter.
//!
//! An adapter's test file implements [`AdapterUnderTest`]: start a server on
//! `127.0.0.1:0` whose stable and candidate builds are two instances of the framework's
//! version of [`App`] (a catch-all handler calling [`App::respond`]). The scenarios below
//! then drive it with a hyper client over a real socket and judge it through the core's
//! counters and the apps' logs, which are the same for every framework.

#![allow(dead_code)] // each adapter's test file uses the scenarios it runs

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shadowlib::mirror::{HeaderPolicy, HttpMirror};
use shadowlib::shadow::{ShadowBudget, ShadowConfig, ShadowCounts, in_shadow};
use shadowlib::{
    Arm, ArmEvidence, Rollout, RolloutBuilder, RolloutPolicy, Share, TrafficSteerer, Version,
    WeightedSteerer,
};
use tokio::sync::watch;
use tokio::time::Instant;

/// Which build an [`App`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The stable build: behaves on every path.
    Stable,
    /// The candidate: panics on `/panic`, never answers `/hang`.
    Candidate,
}

impl Build {
    /// The value of the `x-build` response header.
    pub fn tag(self) -> &'static str {
        match self {
            Build::Stable => "v1",
            Build::Candidate => "v2",
        }
    }
}

/// One request an app received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Method as received.
    pub method: String,
    /// Path as received.
    pub path: String,
    /// Body as received.
    pub body: Vec<u8>,
    /// Headers as received, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Whether it ran as a shadow copy.
    pub shadow: bool,
}

/// The application both builds run, framework-neutral. Paths:
/// `/slow` takes 300 ms, and live (not shadow) `/slow` requests also wait while the
/// app's slow gate is held; on the candidate `/panic` panics and `/hang` never answers;
/// everything else answers `200` with `"<tag> <body length>"`.
#[derive(Debug)]
pub struct App {
    /// Which build this is.
    pub build: Build,
    hits: Mutex<Vec<Hit>>,
    in_flight_slow: AtomicUsize,
    slow_gate_open: watch::Sender<bool>,
}

impl App {
    /// A fresh app with an empty log.
    pub fn new(build: Build) -> Arc<Self> {
        Arc::new(Self {
            build,
            hits: Mutex::new(Vec::new()),
            in_flight_slow: AtomicUsize::new(0),
            slow_gate_open: watch::Sender::new(true),
        })
    }

    /// Handles one request; returns the status and body text. Adapters pass the headers
    /// as `(lowercase name, value)` and add the response header `x-build: <tag>`.
    pub async fn respond(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> (StatusCode, String) {
        let shadow = in_shadow();
        self.hits.lock().expect("log lock").push(Hit {
            method: method.to_owned(),
            path: path.to_owned(),
            body: body.to_vec(),
            headers,
            shadow,
        });
        match (self.build, path) {
            (Build::Candidate, "/panic") => panic!("candidate bug on /panic"),
            (Build::Candidate, "/hang") => std::future::pending::<()>().await,
            (_, "/slow") if shadow => tokio::time::sleep(Duration::from_millis(300)).await,
            (_, "/slow") => {
                self.in_flight_slow.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut gate = self.slow_gate_open.subscribe();
                // The sender lives in `self`, so the channel cannot close while we wait.
                let _ = gate.wait_for(|open| *open).await;
                self.in_flight_slow.fetch_sub(1, Ordering::SeqCst);
            }
            _ => {}
        }
        (
            StatusCode::OK,
            format!("{} {}", self.build.tag(), body.len()),
        )
    }

    /// Everything received so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("log lock").clone()
    }

    /// What was received as shadow copies.
    pub fn shadow_hits(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.shadow).collect()
    }

    /// Live (not shadow) `/slow` requests being served now.
    pub fn in_flight_slow(&self) -> usize {
        self.in_flight_slow.load(Ordering::SeqCst)
    }

    /// Holds live `/slow` requests after their 300 ms until [`App::open_slow_gate`], so a
    /// test can act while they are certainly in flight, however slow the machine.
    pub fn hold_slow_gate(&self) {
        self.slow_gate_open.send_replace(false);
    }

    /// Lets held live `/slow` requests finish.
    pub fn open_slow_gate(&self) {
        self.slow_gate_open.send_replace(true);
    }
}

/// What an adapter is started with: the rollout it serves, and the two builds.
pub struct Setup {
    /// The rollout, shadowing.
    pub rollout: Rollout,
    /// The stable app.
    pub stable: Arc<App>,
    /// The candidate app.
    pub candidate: Arc<App>,
}

/// A server the adapter started; stops when dropped.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops the server when dropped.
    pub guard: Box<dyn Send>,
}

/// An HTTP adapter the scenarios can run against.
pub trait AdapterUnderTest {
    /// Serves `setup` on `127.0.0.1:0`.
    fn start(&self, setup: Setup) -> impl Future<Output = RunningServer>;
}

/// The rollout and apps of one scenario. The rollout only shadows (its controller never
/// moves traffic), and the scenario sets the candidate's share through the steerer.
pub struct Fixture {
    pub rollout: Rollout,
    pub steerer: Arc<WeightedSteerer>,
    pub stable: Arc<App>,
    pub candidate: Arc<App>,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with(|builder| builder)
    }

    /// A fixture whose rollout is built with `configure` applied to the builder.
    pub fn with(configure: impl FnOnce(RolloutBuilder) -> RolloutBuilder) -> Self {
        let steerer = Arc::new(WeightedSteerer::new());
        let builder = Rollout::builder(Version::new("suite", "v1"), Version::new("suite", "v2"))
            .policy(RolloutPolicy::default())
            .steerer(Arc::clone(&steerer))
            .without_process_sampling()
            .shadow_only();
        let rollout = configure(builder)
            .build()
            .expect("a valid configuration, inside a tokio runtime");
        Self {
            rollout,
            steerer,
            stable: App::new(Build::Stable),
            candidate: App::new(Build::Candidate),
        }
    }

    pub fn setup(&self) -> Setup {
        Setup {
            rollout: self.rollout.clone(),
            stable: Arc::clone(&self.stable),
            candidate: Arc::clone(&self.candidate),
        }
    }

    pub fn counts(&self) -> ShadowCounts {
        self.rollout.shadow_counts()
    }

    /// What the shadow measured of `arm` so far (the stable twin, or the candidate).
    pub fn shadowed(&self, arm: Arm) -> ArmEvidence {
        let shadow = self.rollout.evidence().shadow;
        match arm {
            Arm::Stable => shadow.twin,
            Arm::Candidate => shadow.candidate,
        }
    }

    /// The shadow's pairs so far.
    pub fn pairs(&self) -> shadowlib::PairStats {
        self.rollout.evidence().shadow.pairs.total
    }

    /// One build's live requests at canary steps so far.
    pub fn canary(&self, arm: Arm) -> ArmEvidence {
        self.rollout.evidence().canary.total(arm)
    }

    /// Live requests recorded so far.
    pub fn live_requests(&self) -> u64 {
        self.rollout.evidence().live_requests
    }
}

type ClientBody = BoxBody<Bytes, Infallible>;

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub build: String,
    pub text: String,
}

pub struct TestClient {
    client: Client<HttpConnector, ClientBody>,
    addr: SocketAddr,
}

impl TestClient {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            addr,
        }
    }

    /// Sends a request whose body has a known length (`Content-Length`).
    pub async fn send(&self, method: &str, path: &str, body: &[u8]) -> Result<Answer, String> {
        self.send_with_headers(method, path, &[], body).await
    }

    /// Sends a request with extra headers.
    pub async fn send_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, String> {
        let body = Full::new(Bytes::copy_from_slice(body)).boxed();
        self.request(method, path, headers, body).await
    }

    /// Sends a request whose body is streamed in `chunks` without a length (chunked).
    pub async fn send_streamed(
        &self,
        method: &str,
        path: &str,
        chunks: Vec<Vec<u8>>,
    ) -> Result<Answer, String> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
        let body = StreamBody::new(futures::stream::iter(frames)).boxed();
        self.request(method, path, &[], body).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: ClientBody,
    ) -> Result<Answer, String> {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?)
            .uri(format!("http://{}{}", self.addr, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body).map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let build = response
            .headers()
            .get("x-build")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            build,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// Waits (up to 20 s, generous for a loaded machine) until `done` holds.
pub async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn settled(counts: &ShadowCounts) -> bool {
    counts.completed + counts.timed_out + counts.panicked + counts.failed == counts.mirrored
}

/// GET, HEAD and OPTIONS reach the shadow; POST, PUT, PATCH and DELETE never do, unless a
/// route is declared a safe read — and then the copy carries the same body.
pub async fn writes_never_reach_the_shadow_and_reads_do(adapter: &impl AdapterUnderTest) {
    let mirror = HttpMirror::new().allow("POST /search").expect("valid rule");
    let fixture = Fixture::with(|builder| builder.mirror(mirror));
    let server = adapter.start(fixture.setup()).await;
    let client = TestClient::new(server.addr);

    for method in ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"] {
        let answer = client
            .send(method, "/items", b"payload")
            .await
            .expect("live request");
        assert_eq!(answer.status, StatusCode::OK, "{method}");
        if method != "HEAD" {
            assert_eq!(answer.build, "v1", "{method} is served by stable");
        }
    }
    let answer = client
        .send("POST", "/search", b"q=shoes")
        .await
        .expect("live request");
    assert_eq!(answer.text, "v1 7");

    eventually("the shadow ran every copy", || {
        let counts = fixture.counts();
        counts.mirrored == 4 && settled(&counts)
    })
    .await;
    let mut shadowed: Vec<(String, String)> = fixture
        .candidate
        .shadow_hits()
        .into_iter()
        .map(|h| (h.method, h.path))
        .collect();
    shadowed.sort();
    let expected = [
        ("GET", "/items"),
        ("HEAD", "/items"),
        ("OPTIONS", "/items"),
        ("POST", "/search"),
    ];
    assert_eq!(
        shadowed,
        expected.map(|(m, p)| (m.to_owned(), p.to_owned())).to_vec(),
        "exactly the reads reached the shadow"
    );
    let search = fixture
        .candidate
        .shadow_hits()
        .into_iter()
        .find(|h| h.path == "/search")
        .expect("the declared read was mirrored");
    assert_eq!(search.body, b"q=shoes", "the copy carries the live body");
    assert_eq!(
        fixture.candidate.hits().len(),
        4,
        "the candidate served nothing live"
    );
    let live = |app: &App| app.hits().iter().filter(|h| !h.shadow).count();
    assert_eq!(live(&fixture.stable), 8, "stable served every request");
    let copies = |app: &App| {
        let mut copies: Vec<(String, String, Vec<u8>)> = app
            .shadow_hits()
            .into_iter()
            .map(|h| (h.method, h.path, h.body))
            .collect();
        copies.sort();
        copies
    };
    assert_eq!(
        copies(&fixture.stable),
        copies(&fixture.candidate),
        "the stable twin ran exactly the copies the candidate did"
    );
    assert_eq!(fixture.counts().not_read, 4);
    // HEAD too: its live response has no body to send, and is still seen whole.
    eventually("every mirrored read was compared", || {
        let counts = fixture.counts();
        counts.compared + counts.comparison_missed == 4
    })
    .await;
    assert_eq!(fixture.counts().comparison_missed, 0);
}

/// With a mirror share of zero, reads are served as ever and none reaches the shadow;
/// each is counted as not sampled.
pub async fn a_zero_mirror_share_copies_no_read(adapter: &impl AdapterUnderTest) {
    let config = ShadowConfig::new().with_mirror_share(Share::ZERO);
    let fixture = Fixture::with(|builder| builder.shadow(config));
    let server = adapter.start(fixture.setup()).await;
    let client = TestClient::new(server.addr);
    for _ in 0..5 {
        let answer = client
            .send("GET", "/items", b"")
            .await
            .expect("live request");
        assert_eq!(
            (answer.status, answer.build.as_str()),
            (StatusCode::OK, "v1")
        );
    }
    let counts = fixture.counts();
    assert_eq!((counts.not_sampled, counts.mirrored), (5, 0), "{counts:?}");
    assert!(
        fixture.candidate.hits().is_empty(),
        "no read reached the shadow"
    );
}

/// A panic in the shadow changes nothing for the client and is recorded.
pub async fn shadow_panic_leaves_live_untouched(adapter: &impl AdapterUnderTest) {
    let fixture = Fixture::new();
    let server = adapter.start(fixture.setup()).await;
    let client = TestClient::new(server.addr);
    for _ in 0..3 {
        let answer = client
            .send("GET", "/panic", b"")
            .await
            .expect("live request");
        assert_eq!(
            (answer.status, answer.build.as_str()),
            (StatusCode::OK, "v1")
        );
    }
    eventually("three shadow panics were recorded", || {
        fixture.counts().panicked == 3 && fixture.pairs().pairs() == 3
    })
    .await;
    assert_eq!(fixture.shadowed(Arm::Candidate).outcomes.panic, 3);
    // Each pair survived its candidate's panic: counted as failed on the candidate
    // alone, and not paired for latency.
    let pairs = fixture.pairs();
    assert_eq!(
        (pairs.outcomes.candidate_only, pairs.latency.count()),
        (3, 0)
    );
    assert_eq!(fixture.shadowed(Arm::Stable).outcomes.success, 3);
    // The worker survived the panics.
    client
        .send("GET", "/fine", b"")
        .await
        .expect("live request");
    eventually("the shadow still serves", || {
        fixture.counts().completed == 1
    })
    .await;
}

/// A shadow that never answers fills a bounded queue; further copies are dropped and
/// counted, and the live requests do not wait for any of it.
pub async fn shadow_hang_is_bounded_and_dropped(adapter: &impl AdapterUnderTest) {
    const QUEUE: usize = 4;
    const WORKERS: usize = 2;
    const REQUESTS: u64 = 40;
    let budget = ShadowBudget {
        queue_capacity: QUEUE,
        concurrency: WORKERS,
        // Far longer than the scenario: every copy is still hung when the live requests end.
        timeout: Duration::from_secs(60),
    };
    let fixture = Fixture::with(|builder| builder.shadow(ShadowConfig::new().with_budget(budget)));
    let server = adapter.start(fixture.setup()).await;
    let client = TestClient::new(server.addr);
    for _ in 0..REQUESTS {
        let answer = client
            .send("GET", "/hang", b"")
            .await
            .expect("live request");
        assert_eq!(
            (answer.status, answer.build.as_str()),
            (StatusCode::OK, "v1")
        );
    }
    let counts = fixture.counts();
    assert_eq!(
        counts.completed + counts.timed_out,
        0,
        "every live request was answered while all copies still hung"
    );
    assert!(counts.mirrored <= (QUEUE + WORKERS) as u64, "{counts:?}");
    assert!(
        counts.dropped_queue_full >= REQUESTS - (QUEUE + WORKERS) as u64,
        "{counts:?}"
    );
    assert_eq!(counts.mirrored + counts.dropped_queue_full, REQUESTS);
    assert_eq!(
        fixture.shadowed(Arm::Candidate).outcomes.shed,
        counts.dropped_queue_full
    );
    eventually("every live request was counted", || {
        fixture.live_requests() == REQUESTS
    })
    .await;
}

/// A body over the limit is served live as usual and not mirrored, whether its length is
/// announced or streamed; one within the limit is mirrored whole.
pub async fn oversize_body_is_served_and_not_mirrored(adapter: &impl AdapterUnderTest) {
    let mirror = HttpMirror::new().allow("POST /search").expect("valid rule");
    let config = ShadowConfig::new().with_body_limit(1024);
    let fixture = Fixture::with(|builder| builder.mirror(mirror).shadow(config));
    let server = adapter.start(fixture.setup()).await;
    let client = TestClient::new(server.addr);

    let big = vec![b'x'; 4096];
    let answer = client
        .send("POST", "/search", &big)
        .await
        .expect("live request");
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "v1 4096")
    );
    assert_eq!(
        fixture.counts().skipped_oversize,
        1,
        "announced length over the limit"
    );

    let chunks = vec![vec![b'y'; 700]; 3];
    let answer = client
        .send_streamed("POST", "/search", chunks)
        .await
        .expect("live request");
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "v1 2100")
    );
    eventually("the streamed body was skipped", || {
        fixture.counts().skipped_oversize == 2
    })
    .await;

    let chunks = vec![vec![b'z'; 300]; 3];
    let answer = client
        .send_streamed("POST", "/search", chunks)
        .await
        .expect("live request");
    assert_eq!(answer.text, "v1 900");
    eventually("the small streamed body was mirrored", || {
        let counts = fixture.counts();
        counts.mirrored == 1 && settled(&counts)
    })
    .await;
    let shadowed = fixture.candidate.shadow_hits();
    assert_eq!(
        shadowed.len(),
        1,
        "only the body within the limit was mirrored"
    );
    assert_eq!(shadowed[0].body, vec![b'z'; 900]);
}

/// Rolling back while the candidate serves half of a concurrent load fails no request:
/// requests already on the candidate complete, and every request sent after the rollback
/// is served by stable.
pub async fn rollback_under_load_fails_no_request(adapter: &impl AdapterUnderTest) {
    const CLIENTS: usize = 8;
    const REQUESTS_PER_CLIENT: usize = 12;
    let fixture = Fixture::new();
    let server = adapter.start(fixture.setup()).await;
    fixture
        .steerer
        .set_share(Share::from_percent(50.0).expect("valid share"));
    // Requests on the candidate stay in flight until after the rollback, whatever the
    // machine's speed; without the gate a descheduled test thread could roll back after
    // they had all finished.
    fixture.candidate.hold_slow_gate();

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = TestClient::new(server.addr);
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..REQUESTS_PER_CLIENT {
                let sent = Instant::now();
                let answer = client.send("GET", "/slow", b"").await;
                answers.push((sent, Instant::now(), answer));
            }
            answers
        }));
    }
    eventually("the candidate serves live requests", || {
        fixture.candidate.in_flight_slow() >= 2
    })
    .await;
    let in_flight_on_candidate = fixture.candidate.in_flight_slow();
    fixture
        .rollout
        .handle()
        .abort("suite: rollback under load")
        .expect("a live rollout rolls back");
    // Taken once the rollback is done: anything sent later must be served by stable.
    let rolled_back = Instant::now();
    fixture.candidate.open_slow_gate();

    let mut finished_on_candidate_after_rollback = 0;
    let mut total = 0;
    for client in clients {
        for (sent, received, answer) in client.await.expect("client task") {
            total += 1;
            let answer = answer.unwrap_or_else(|e| panic!("request failed during rollback: {e}"));
            assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
            if sent > rolled_back {
                assert_eq!(
                    answer.build, "v1",
                    "a request sent after the rollback reached the candidate"
                );
            }
            if answer.build == "v2" && received > rolled_back {
                finished_on_candidate_after_rollback += 1;
            }
        }
    }
    assert_eq!(total, CLIENTS * REQUESTS_PER_CLIENT);
    assert!(in_flight_on_candidate >= 2);
    assert!(
        finished_on_candidate_after_rollback >= 1,
        "requests in flight on the candidate at the rollback completed normally"
    );
    assert_eq!(fixture.counts().canary_panics, 0);
}

/// During canary a candidate panic on a live request becomes a 500 for that request only.
pub async fn canary_panic_is_a_500(adapter: &impl AdapterUnderTest) {
    let fixture = Fixture::new();
    let server = adapter.start(fixture.setup()).await;
    fixture
        .rollout
        .handle()
        .step_up("the test serves the canary")
        .expect("shadowing steps up");
    fixture.steerer.set_share(Share::FULL);
    let client = TestClient::new(server.addr);
    let answer = client
        .send("GET", "/panic", b"")
        .await
        .expect("the connection survives");
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    let answer = client
        .send("GET", "/fine", b"")
        .await
        .expect("live request");
    assert_eq!(
        (answer.status, answer.build.as_str()),
        (StatusCode::OK, "v2")
    );
    assert_eq!(fixture.counts().canary_panics, 1);
    // KPIs are recorded as the response body ends on the server, which may trail the
    // client's reading of it by a moment.
    eventually("both live requests were recorded", || {
        fixture.canary(Arm::Candidate).requests() == 2
    })
    .await;
    let candidate = fixture.canary(Arm::Candidate);
    assert_eq!(
        (candidate.outcomes.panic, candidate.outcomes.success),
        (1, 1)
    );
    assert_eq!(
        candidate.routes.keys().collect::<Vec<_>>(),
        ["GET /fine", "GET /panic"],
        "live requests are recorded per route at a canary step"
    );
    assert_eq!(
        fixture.counts().mirrored,
        0,
        "nothing served by the candidate is mirrored"
    );
}

/// The shadow's copy carries no hop-by-hop header (nor one the `Connection` header lists)
/// and no redacted header; the live request keeps them all.
pub async fn shadow_copy_strips_hop_by_hop_and_redacts(adapter: &impl AdapterUnderTest) {
    let policy = HeaderPolicy::new()
        .redact("authorization")
        .and_then(|p| p.redact("x-api-key"))
        .expect("valid names")
        .replace_with("redacted");
    let fixture = Fixture::with(|builder| builder.mirror(HttpMirror::new().with_headers(policy)));
    let server = adapter.start(fixture.setup()).await;
    let client = TestClient::new(server.addr);
    let headers = [
        ("authorization", "Bearer secret"),
        ("x-api-key", "k-123"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "per-connection"),
        ("accept", "application/json"),
    ];
    let answer = client
        .send_with_headers("GET", "/items", &headers, b"")
        .await
        .expect("live request");
    assert_eq!(answer.status, StatusCode::OK);
    eventually("the copy ran", || fixture.counts().completed == 1).await;

    let value = |hit: &Hit, name: &str| {
        hit.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let live = fixture
        .stable
        .hits()
        .into_iter()
        .rfind(|h| !h.shadow)
        .expect("stable served the request");
    assert_eq!(
        value(&live, "authorization").as_deref(),
        Some("Bearer secret")
    );
    assert_eq!(value(&live, "x-hop").as_deref(), Some("per-connection"));
    let copy = fixture
        .candidate
        .shadow_hits()
        .pop()
        .expect("the read was mirrored");
    assert_eq!(value(&copy, "authorization").as_deref(), Some("redacted"));
    assert_eq!(value(&copy, "x-api-key").as_deref(), Some("redacted"));
    assert_eq!(
        value(&copy, "x-hop"),
        None,
        "listed in Connection: hop-by-hop"
    );
    assert_eq!(value(&copy, "connection"), None);
    assert_eq!(value(&copy, "accept").as_deref(), Some("application/json"));
}
