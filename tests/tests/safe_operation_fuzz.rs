//! The fuzz targets' entry points (`fuzz/src/lib.rs`) run on stable by `cargo test`: a
//! bounded number of generated inputs each, arbitrary bytes and inputs built from the
//! tokens each format is made of (random bytes alone seldom get past a parser's first
//! character), and every input a fuzz run ever crashed on, kept as a regression.
//!
//! `scripts/fuzz.sh` runs the same entry points under cargo-fuzz (libFuzzer, nightly)
//! for a bounded time each. Set `SHADOWLIB_FUZZ_CASES` for a longer run here.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code, unreachable_pub)]
mod entry;

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("SHADOWLIB_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// Bytes, or text built of `tokens`.
fn input(tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(prop::sample::select(tokens), 0..24)
            .prop_map(|parts| parts.concat().into_bytes()),
    ]
}

const TOML: &[&str] = &[
    "steps = [",
    "]",
    ", ",
    "1",
    "0",
    "100",
    "101",
    "-1",
    "1e308",
    "nan",
    "inf",
    "0.5",
    "\n",
    "interval = ",
    "\"10s\"",
    "\"0s\"",
    "\"1h\"",
    "\"-1s\"",
    "\"99999999999999d\"",
    "min_samples = ",
    "min_samples_per_step = ",
    "no_data_deadline = ",
    "decision_deadline = ",
    "[mismatch]\n",
    "tolerance = ",
    "rollback_above = ",
    "alpha = ",
    "queue_capacity = ",
    "concurrency = ",
    "timeout = ",
    "18446744073709551615",
    "\"",
    "=",
    "[",
    "x = 1",
];

const RULES: &[&str] = &[
    "GET ",
    "POST ",
    "get ",
    "/",
    "/users",
    "/{id}",
    "/{",
    "}",
    "/*",
    "/**",
    "*",
    "\n",
    "/a/{b}/c",
    " ",
    "//",
    "%2F",
    "?",
    "{}",
    "/{id}/{id}",
    "/\u{e9}",
];

const JSON: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"a\"",
    "\"b\"",
    ":",
    ",",
    "1",
    "1e999",
    "-0",
    "null",
    "true",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "/**/a",
    "/a/*",
    "\n",
    "\u{ff}",
    "[[[[[[[[",
    "]]]]]]]]",
];

const HTTP: &[&str] = &[
    "GET ",
    "POST ",
    "/orders",
    "?q=1",
    " HTTP/1.1",
    "\n",
    "connection: x-a, keep-alive",
    "x-a: 1",
    "cookie: a=1; session=",
    "authorization: Bearer abcdefgh12345678",
    "x-shadowlib-arm: ",
    "candidate.",
    "stable.",
    "99999999999",
    "0",
    "deadbeef",
    ":",
    "transfer-encoding: chunked",
    "\u{0}",
];

const ADMIN: &[&str] = &[
    "GET",
    "POST",
    "\n",
    "/status",
    "/events?since=",
    "/pause",
    "/abort",
    "/x",
    "1",
    "Bearer ",
    "bearer ",
    "operate-token-0123456789",
    "{\"reason\": \"",
    "\"}",
    "\\u0000",
];

const DELTA: &[&str] = &[
    "\u{0}",
    "\u{1}",
    "\u{7f}",
    "\u{ff}",
    "\u{80}\u{80}\u{80}",
    "a",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn policy_files(data in input(TOML)) { entry::policy_file(&data) }

    #[test]
    fn budget_files(data in input(TOML)) { entry::budget_file(&data) }

    #[test]
    fn read_rules_and_path_patterns(data in input(RULES)) { entry::read_rules(&data) }

    #[test]
    fn the_json_comparator(data in input(JSON)) { entry::json_comparator(&data) }

    #[test]
    fn the_http_copy_path(data in input(HTTP)) { entry::http_copy(&data) }

    #[test]
    fn admin_requests(data in input(ADMIN)) { entry::admin_request(&data) }

    #[test]
    fn delta_frames_and_snapshots(data in input(DELTA)) { entry::delta_frame(&data) }
}

/// A fuzz target's entry point.
type Target = fn(&[u8]);

/// Inputs kept as regressions, by target: hostile shapes (deep nesting, numbers past
/// every integer type, lone surrogates, a `u64` overflow in an override's expiry, frames
/// that claim more deltas than they carry). A crash a fuzz run finds is added here.
#[test]
fn inputs_kept_as_regressions() {
    let deep_json = format!("{}\u{ff}{}", "[".repeat(100_000), "{\"a\":".repeat(50_000));
    let regressions: Vec<(Target, Vec<u8>)> = vec![
        (entry::json_comparator, deep_json.into_bytes()),
        (entry::json_comparator, b"1e999999\xff-1e999999".to_vec()),
        (
            entry::json_comparator,
            b"\"\\ud800\"\xff\"\\udc00\"".to_vec(),
        ),
        (
            entry::policy_file,
            b"steps = [18446744073709551615, 1e308, nan]".to_vec(),
        ),
        (
            entry::policy_file,
            b"interval = \"99999999999999999999d\"".to_vec(),
        ),
        (
            entry::budget_file,
            b"queue_capacity = 18446744073709551615\nconcurrency = 18446744073709551615".to_vec(),
        ),
        (
            entry::read_rules,
            b"GET /{\nGET /{}/{}\nGET /**/**\nGET /a/**/b".to_vec(),
        ),
        // Found by cargo-fuzz: a rule and a request with the same words split by a tab.
        (entry::read_rules, b"GET /a\n&\t/\n&\t/".to_vec()),
        (
            entry::http_copy,
            b"GET /\nx-shadowlib-arm: candidate.99999999999999999999.00\nconnection: , ,,".to_vec(),
        ),
        (
            entry::admin_request,
            b"POST\n/pause\nBearer operate-token-0123456789\n{\"reason\": \"\\u0000\"}".to_vec(),
        ),
        (entry::delta_frame, [0xff_u8; 64].to_vec()),
        (
            entry::delta_frame,
            vec![0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2],
        ),
    ];
    for (target, data) in regressions {
        target(&data);
    }
}
