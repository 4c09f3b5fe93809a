//! Each of the five seams replaced by code of the application's own, plugged through
//! `Rollout::builder`: a shop's GraphQL checkout rolled out under a business rule.
//!
//! * `Predictor` — [`NoCheckoutDifferences`]: the candidate must quote exactly what stable
//!   quotes for every checkout it is shown. No statistic overrules that rule: one
//!   differing checkout rolls back, and a pass needs 3,000 compared checkouts.
//! * `MetricSource` — [`CheckoutTotals`]: the totals each build quoted, a business KPI the
//!   library cannot measure, added to the evidence as `checkout_total_cents` (the
//!   predictor reports it, and never thresholds a point estimate look after look).
//! * `Mirror` — [`GraphQlMirror`]: every operation is a `POST /graphql`, so the method says
//!   nothing; the client's `x-graphql-operation` header tells queries (reads, mirrored)
//!   from mutations (never mirrored). Anything else is left to `HttpMirror`, which also
//!   makes the copies.
//! * `TrafficSteerer` — [`StaffFirst`]: staff (`x-user: staff-…`) get the candidate from
//!   the first canary step on; customers follow by share, stickily.
//! * `StateDelta` — [`PriceList`]: the prices, changed by live's mutations and followed by
//!   the shadow through deltas (`RolloutBuilder::state_delta`), so the shadow quotes from
//!   the prices live quoted from.
//!
//! The service runs in-process (the load calls the axum `Router` directly, no socket). Two
//! rollouts: a candidate that forgets the last line of one cart in 1,000 (rolled back
//! while a shadow) and a correct one (promoted through every step).
//!
//! Run with `cargo run -p examples --example custom_predictor`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use shadowlib::delta::{DeltaBus, LiveState, ShadowState, StalenessBound, StateDelta};
use shadowlib::mirror::{HttpMirror, Mirror, RequestCopy, RequestHead, StickyKey};
use shadowlib::shadow::{ShadowConfig, in_shadow};
use shadowlib::{
    Arm, Evidence, MetricError, MetricSource, Moments, Phase, Prediction, Predictor, ReadClass,
    Rollout, RolloutPolicy, Share, TrafficSteerer, Version, WeightedSteerer,
};
use shadowlib_tower::ShadowLayer;
use tower::ServiceExt;

/// The header the shop's GraphQL clients name their operation in.
const OPERATION: &str = "x-graphql-operation";
/// The header each build names itself in, so the load can tell who served it.
const SERVED_BY: &str = "x-served-by";
/// The custom KPI [`CheckoutTotals`] adds to the evidence.
const CHECKOUT_TOTAL: &str = "checkout_total_cents";

// ---------------------------------------------------------------------------------------
// StateDelta: the price list.

/// Prices in cents by SKU: the state the live build changes and the shadow follows.
#[derive(Debug, Clone, PartialEq)]
struct PriceList(BTreeMap<u32, u64>);

/// One change: a new price for a SKU.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct Reprice {
    sku: u32,
    cents: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("SKU {0} cannot be given away: a price must be above zero")]
struct FreeItem(u32);

impl StateDelta for PriceList {
    type Delta = Reprice;
    type Snapshot = BTreeMap<u32, u64>;
    type Error = FreeItem;

    fn apply(&mut self, change: &Reprice) -> Result<(), FreeItem> {
        if change.cents == 0 {
            return Err(FreeItem(change.sku));
        }
        self.0.insert(change.sku, change.cents);
        Ok(())
    }

    fn snapshot(&self) -> Self::Snapshot {
        self.0.clone()
    }

    fn restore(&mut self, snapshot: Self::Snapshot) {
        self.0 = snapshot;
    }
}

const SKUS: u32 = 50;

fn opening_prices() -> PriceList {
    PriceList(
        (0..SKUS)
            .map(|sku| (sku, 100 + u64::from(sku) * 37))
            .collect(),
    )
}

/// The lines of a cart, made up from its id: `(sku, quantity)`.
fn cart_lines(cart: u32) -> impl Iterator<Item = (u32, u64)> {
    (0..1 + cart % 3).map(move |line| {
        (
            (cart * 31 + line * 17) % SKUS,
            u64::from(1 + (cart + line) % 2),
        )
    })
}

// ---------------------------------------------------------------------------------------
// MetricSource: the totals each build quoted.

/// The checkout totals each build quoted, for the evidence.
#[derive(Default)]
struct CheckoutTotals {
    stable: Mutex<Moments>,
    candidate: Mutex<Moments>,
}

impl CheckoutTotals {
    fn of(&self, arm: Arm) -> &Mutex<Moments> {
        match arm {
            Arm::Stable => &self.stable,
            Arm::Candidate => &self.candidate,
        }
    }

    fn record(&self, arm: Arm, cents: u64) {
        // A panic while adding one number leaves the moments as they were.
        let mut moments = self.of(arm).lock().unwrap_or_else(|e| e.into_inner());
        moments.add(cents as f64);
    }

    fn snapshot(&self, arm: Arm) -> Moments {
        *self.of(arm).lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl MetricSource for CheckoutTotals {
    fn name(&self) -> &str {
        "checkout-totals"
    }

    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
        let kpi = into.custom_mut(CHECKOUT_TOTAL);
        for arm in [Arm::Stable, Arm::Candidate] {
            kpi.arm_mut(arm).merge(&self.snapshot(arm));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Mirror: GraphQL queries are reads, mutations are not.

/// Classifies GraphQL operations by the header the client names them in, and leaves every
/// other request, and every copy, to the `HttpMirror` it wraps.
struct GraphQlMirror(HttpMirror);

impl<'a> Mirror<RequestHead<'a>> for GraphQlMirror {
    type Copy = RequestCopy;

    fn classify(&self, head: &RequestHead<'a>) -> ReadClass {
        if head.path != "/graphql" {
            return self.0.classify(head);
        }
        // Deny by default: only an operation the client says is a query is a read.
        match head.headers.first(OPERATION) {
            Some(b"query") => ReadClass::Read,
            _ => ReadClass::NotRead("a GraphQL operation that is not a query"),
        }
    }

    fn copy(&self, head: &RequestHead<'a>, copy: &mut RequestCopy) {
        self.0.copy(head, copy);
    }
}

// ---------------------------------------------------------------------------------------
// TrafficSteerer: staff first.

/// Staff see the candidate from the first canary step on; customers go by share, through
/// the weighted steerer it wraps (sticky per user). A rollback sets the share to zero, and
/// with it sends staff back to stable too.
#[derive(Default)]
struct StaffFirst {
    customers: WeightedSteerer,
}

impl TrafficSteerer for StaffFirst {
    fn set_share(&self, share: Share) {
        self.customers.set_share(share);
    }

    fn share(&self) -> Share {
        self.customers.share()
    }

    fn pick(&self, key: Option<&[u8]>) -> Arm {
        match key {
            Some(user) if user.starts_with(b"staff-") && !self.share().is_zero() => Arm::Candidate,
            _ => self.customers.pick(key),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Predictor: no checkout may differ.

/// Checkouts that must be compared before the rule lets the candidate step up.
const MIN_CHECKOUTS: u64 = 3_000;

/// The rule: any checkout the candidate quotes differently from stable means it must not
/// ship.
struct NoCheckoutDifferences;

impl Predictor for NoCheckoutDifferences {
    fn name(&self) -> &str {
        "no-checkout-differences"
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        // Only queries are mirrored, so every comparison is of a checkout: live's quote
        // against the stable twin's and the candidate's, on the same prices.
        let checkouts = evidence.shadow.pairs.total.mismatches;
        let totals = evidence
            .custom
            .get(CHECKOUT_TOTAL)
            .copied()
            .unwrap_or_default();
        let (stable, candidate) = (totals.stable, totals.candidate);
        let quoted = format!(
            "mean total quoted: stable {:.0} cents over {} checkouts, candidate {:.0} cents over {}",
            stable.mean(),
            stable.count(),
            candidate.mean(),
            candidate.count()
        );
        // A difference is decisive at once; a pass needs enough checkouts to have seen a
        // one-in-a-thousand bug with high probability (1 - 0.999^3000 ≈ 95%).
        if checkouts.candidate_only == 0 && checkouts.compared < MIN_CHECKOUTS {
            return Prediction::inconclusive(
                self.name(),
                format!(
                    "{} of {MIN_CHECKOUTS} checkouts compared, none differed yet",
                    checkouts.compared
                ),
                evidence,
            )
            .with_reason(quoted);
        }
        let probability = if checkouts.candidate_only > 0 {
            1.0
        } else {
            0.0
        };
        Prediction::new(self.name(), probability, evidence)
            .with_reason(format!(
                "{} of {} checkouts quoted differently from stable",
                checkouts.candidate_only, checkouts.compared
            ))
            .with_reason(quoted)
    }
}

// ---------------------------------------------------------------------------------------
// The shop: one build of it.

/// One build: which arm it is, what it reads prices from, and where it records totals.
#[derive(Clone)]
struct Shop {
    arm: Arm,
    name: &'static str,
    /// The build forgets the last line of every cart whose id is `n - 1` modulo `n`.
    forgets_last_line_every: Option<u32>,
    live: LiveState<PriceList>,
    shadow: ShadowState<PriceList>,
    totals: Arc<CheckoutTotals>,
}

#[derive(Deserialize)]
struct Checkout {
    cart: u32,
}

fn shop(build: Shop) -> Router {
    Router::new()
        .route("/graphql", post(graphql))
        .with_state(build)
}

async fn graphql(State(shop): State<Shop>, headers: HeaderMap, body: Bytes) -> Response {
    let served_by = [(SERVED_BY, shop.name)];
    let answer = match headers.get(OPERATION).map(|v| v.as_bytes()) {
        Some(b"query") => checkout(&shop, &body),
        Some(b"mutation") => reprice(&shop, &body),
        _ => (
            StatusCode::BAD_REQUEST,
            "x-graphql-operation must be query or mutation",
        )
            .into_response(),
    };
    (served_by, answer).into_response()
}

fn checkout(shop: &Shop, body: &[u8]) -> Response {
    let Ok(Checkout { cart }) = serde_json::from_slice(body) else {
        return (StatusCode::BAD_REQUEST, "expected {\"cart\": ID}").into_response();
    };
    let mut lines: Vec<_> = cart_lines(cart).collect();
    if shop
        .forgets_last_line_every
        .is_some_and(|n| cart % n == n - 1)
    {
        lines.pop();
    }
    let total_of = |prices: &PriceList| -> u64 {
        lines
            .iter()
            .map(|(sku, quantity)| prices.0.get(sku).copied().unwrap_or_default() * quantity)
            .sum()
    };
    // A copy is served from the shadow's prices, which the rollout has brought to where
    // live's stood when the read arrived; live traffic, on either build, from live's.
    let total = if in_shadow() {
        shop.shadow.read(total_of)
    } else {
        shop.live.read(total_of)
    };
    shop.totals.record(shop.arm, total);
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"cart":{cart},"total_cents":{total}}}"#),
    )
        .into_response()
}

fn reprice(shop: &Shop, body: &[u8]) -> Response {
    let Ok(change) = serde_json::from_slice::<Reprice>(body) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected {\"sku\": ID, \"cents\": N}",
        )
            .into_response();
    };
    match shop.live.commit(change) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => (StatusCode::UNPROCESSABLE_ENTITY, refused.to_string()).into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// One rollout under load.

/// The load is bounded: at most this many rounds, and this long.
const MAX_ROUNDS: u32 = 2_000;
const MAX_DURATION: Duration = Duration::from_secs(20);
/// Checkouts per round, after the round's one price change.
const CHECKOUTS_PER_ROUND: u32 = 50;
const USERS: u32 = 100;
/// Users `0..STAFF` are staff.
const STAFF: u32 = 5;

/// Who served the checkouts of staff and of customers during the canary: `[stable,
/// candidate]` each.
#[derive(Default)]
struct ServedBy {
    staff: [u64; 2],
    customers: [u64; 2],
}

/// Sends one GraphQL operation as `user` and reads the response whole (which makes it
/// comparable); returns whether the candidate served it.
async fn send(
    app: &Router,
    user: u32,
    operation: &str,
    body: String,
) -> Result<bool, Box<dyn std::error::Error>> {
    let user = if user < STAFF {
        format!("staff-{user}")
    } else {
        format!("customer-{user}")
    };
    let request = http::Request::post("/graphql")
        .header("x-user", user)
        .header(OPERATION, operation)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))?;
    let response = app.clone().oneshot(request).await?;
    let by_candidate = response.headers().get(SERVED_BY).map(|v| v.as_bytes()) == Some(b"v8");
    response.into_body().collect().await?;
    Ok(by_candidate)
}

/// Rolls out v8 over v7, v8 forgetting the last line of one cart in `forgets_every`
/// (`None`: a correct v8), and prints what each seam contributed.
async fn rollout(forgets_every: Option<u32>) -> Result<Phase, Box<dyn std::error::Error>> {
    let bus = DeltaBus::<PriceList>::in_process(4_096)?;
    let live = bus.live(opening_prices()).start()?;
    let shadow = bus.follow(opening_prices())?;
    let totals = Arc::new(CheckoutTotals::default());
    let steerer = Arc::new(StaffFirst::default());
    let policy = RolloutPolicy::from_toml(
        r#"
        interval = "100ms"
        steps = [10, 50, 100]
        min_samples = 200
        min_samples_per_step = 50
        "#,
    )?;
    let (stable, candidate) = (Version::new("shop", "7"), Version::new("shop", "8"));
    let rollout = Rollout::builder(stable, candidate)
        .policy(policy)
        .predictor(NoCheckoutDifferences)
        .metric_source(totals.clone())
        .mirror(GraphQlMirror(HttpMirror::new()))
        .steerer(steerer.clone())
        .state_delta(&live, &shadow, StalenessBound::default())
        .shadow(ShadowConfig::new().with_sticky_key(StickyKey::header("x-user")?))
        .build()?;
    let build = |arm, name, forgets_last_line_every| Shop {
        arm,
        name,
        forgets_last_line_every,
        live: live.clone(),
        shadow: shadow.clone(),
        totals: totals.clone(),
    };
    let app = ShadowLayer::new(shop(build(Arm::Candidate, "v8", forgets_every)), &rollout)
        .around(shop(build(Arm::Stable, "v7", None)));

    let started = Instant::now();
    let mut served = ServedBy::default();
    let mut request = 0u32;
    for round in 0..MAX_ROUNDS {
        if rollout.phase().is_terminal() || started.elapsed() > MAX_DURATION {
            break;
        }
        // One price change, then checkouts: the shadow follows the change before the next
        // round, so the round's checkouts are quoted from the same prices on both builds.
        let change = format!(
            r#"{{"sku":{},"cents":{}}}"#,
            round % SKUS,
            100 + round * 7_919 % 5_000
        );
        send(&app, round % USERS, "mutation", change).await?;
        for _ in 0..CHECKOUTS_PER_ROUND {
            request += 1;
            let user = request % USERS;
            let cart = request % 1_000;
            let canary = matches!(rollout.phase(), Phase::Canary { .. });
            let by_candidate = send(&app, user, "query", format!(r#"{{"cart":{cart}}}"#)).await?;
            if canary {
                let tally = if user < STAFF {
                    &mut served.staff
                } else {
                    &mut served.customers
                };
                tally[usize::from(by_candidate)] += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !rollout.phase().is_terminal() {
        // Refused only if the rollout ended in the meantime, and then it has its verdict.
        let _ = rollout
            .handle()
            .abort("no verdict within the example's time bound");
    }
    let status = rollout.status();

    if let Some(decision) = &status.last_decision {
        println!("  predictor: {decision}");
    }
    let (stable_totals, candidate_totals) = (
        totals.snapshot(Arm::Stable),
        totals.snapshot(Arm::Candidate),
    );
    println!(
        "  metric source: mean checkout total stable {:.0} cents ({} quoted), candidate {:.0} cents ({} quoted)",
        stable_totals.mean(),
        stable_totals.count(),
        candidate_totals.mean(),
        candidate_totals.count()
    );
    let counts = rollout.shadow_counts();
    println!(
        "  mirror: {} GraphQL queries mirrored, {} operations never mirrored (mutations)",
        counts.mirrored, counts.not_read
    );
    let canary_checkouts = served.staff.iter().chain(&served.customers).sum::<u64>();
    if canary_checkouts == 0 {
        println!("  steerer: no canary, so every live checkout went to v7");
    } else {
        println!(
            "  steerer: during the canary, staff on v8 for {} of {} checkouts, customers for {} of {}",
            served.staff[1],
            served.staff.iter().sum::<u64>(),
            served.customers[1],
            served.customers.iter().sum::<u64>()
        );
    }
    let caught_up = shadow.reach(live.position(), Duration::from_secs(1)).await;
    let live_prices = live.read(PriceList::clone);
    let same = caught_up && shadow.read(|prices| *prices == live_prices);
    println!(
        "  state: {} price changes followed by deltas, shadow prices equal live's: {same}; {} checkouts compared, {} not comparable (prices moved)",
        live.stats().deltas_published,
        counts.compared,
        counts.not_comparable
    );
    Ok(status.phase)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (name, forgets_every) in [
        ("forgets the last line of one cart in 1,000", Some(1_000)),
        ("quotes every cart right", None),
    ] {
        println!("candidate v8 that {name}:");
        let phase = rollout(forgets_every).await?;
        println!("  outcome: {phase}\n");
    }
    Ok(())
}
