//! Field-by-field differences between two responses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ResponseParts;
use super::rules::{IgnoreRules, Step, escape};

/// How a field differs between the first response (stable) and the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Present in both, with different values (or types).
    Changed,
    /// Present only in the first response.
    Removed,
    /// Present only in the second response.
    Added,
}

/// The fields that differ between two responses, each with how it differs.
///
/// Field names are `status`, `header:<lower-case name>`, `body` (the whole body, when it
/// is not JSON on both sides or its root differs), or a JSON path like `/items/*/price`.
/// Array positions are written `*`, so the same field of every element counts as one field
/// (a timestamp in each of fifty items is one noisy field, not fifty).
pub(crate) type Differences = BTreeMap<String, Change>;

/// The field name of the whole body.
pub(crate) const BODY: &str = "body";

pub(crate) fn diff(
    first: &ResponseParts<'_>,
    second: &ResponseParts<'_>,
    rules: &IgnoreRules,
) -> Differences {
    let mut out = Differences::new();
    if first.status != second.status {
        out.insert("status".to_owned(), Change::Changed);
    }
    diff_headers(first, second, rules, &mut out);
    diff_bodies(first.body, second.body, rules, &mut out);
    out
}

fn header_values<'a>(
    response: &ResponseParts<'a>,
    rules: &IgnoreRules,
) -> BTreeMap<Vec<u8>, Vec<&'a [u8]>> {
    let mut values: BTreeMap<Vec<u8>, Vec<&'a [u8]>> = BTreeMap::new();
    for (name, value) in &response.headers {
        let name = name.to_ascii_lowercase();
        if !rules.ignores_header(&name) {
            values.entry(name).or_default().push(value);
        }
    }
    values
}

fn diff_headers(
    first: &ResponseParts<'_>,
    second: &ResponseParts<'_>,
    rules: &IgnoreRules,
    out: &mut Differences,
) {
    let first = header_values(first, rules);
    let mut second = header_values(second, rules);
    let field = |name: &[u8]| format!("header:{}", String::from_utf8_lossy(name));
    for (name, values) in first {
        match second.remove(&name) {
            None => {
                out.insert(field(&name), Change::Removed);
            }
            Some(other) if other != values => {
                out.insert(field(&name), Change::Changed);
            }
            Some(_) => {}
        }
    }
    for name in second.keys() {
        out.insert(field(name), Change::Added);
    }
}

fn diff_bodies(first: &[u8], second: &[u8], rules: &IgnoreRules, out: &mut Differences) {
    if first == second {
        return;
    }
    let parsed = (
        serde_json::from_slice::<Value>(first),
        serde_json::from_slice::<Value>(second),
    );
    match parsed {
        (Ok(first), Ok(second)) => {
            let mut path = Vec::new();
            diff_json(&first, &second, &mut path, rules, out);
        }
        // Not JSON on both sides: the bytes differ, and that is all there is to say.
        _ => {
            out.insert(BODY.to_owned(), Change::Changed);
        }
    }
}

fn field_name(path: &[Step<'_>]) -> String {
    if path.is_empty() {
        return BODY.to_owned();
    }
    let mut name = String::new();
    for step in path {
        name.push('/');
        match step {
            Step::Key(key) => name.push_str(&escape(key)),
            Step::Index(_) => name.push('*'),
        }
    }
    name
}

fn note(out: &mut Differences, path: &[Step<'_>], change: Change) {
    // The first way a field was seen to differ is kept; the others are the same field.
    out.entry(field_name(path)).or_insert(change);
}

fn diff_json<'a>(
    first: &'a Value,
    second: &'a Value,
    path: &mut Vec<Step<'a>>,
    rules: &IgnoreRules,
    out: &mut Differences,
) {
    if rules.ignores_path(path) {
        return;
    }
    match (first, second) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                path.push(Step::Key(key));
                match b.get(key) {
                    Some(other) => diff_json(value, other, path, rules, out),
                    None if !rules.ignores_path(path) => note(out, path, Change::Removed),
                    None => {}
                }
                path.pop();
            }
            for key in b.keys().filter(|key| !a.contains_key(*key)) {
                path.push(Step::Key(key));
                if !rules.ignores_path(path) {
                    note(out, path, Change::Added);
                }
                path.pop();
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for index in 0..a.len().max(b.len()) {
                path.push(Step::Index(index));
                match (a.get(index), b.get(index)) {
                    (Some(x), Some(y)) => diff_json(x, y, path, rules, out),
                    (Some(_), None) if !rules.ignores_path(path) => {
                        note(out, path, Change::Removed)
                    }
                    (None, Some(_)) if !rules.ignores_path(path) => note(out, path, Change::Added),
                    _ => {}
                }
                path.pop();
            }
        }
        (a, b) if a != b => note(out, path, Change::Changed),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(headers: &[&str], paths: &[&str]) -> IgnoreRules {
        let headers: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        let paths: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
        IgnoreRules::new(&headers, &paths).expect("valid rules")
    }

    fn fields(d: &Differences) -> Vec<(&str, Change)> {
        d.iter().map(|(k, v)| (k.as_str(), *v)).collect()
    }

    #[test]
    fn json_bodies_differ_field_by_field_whatever_the_key_order() {
        let a = ResponseParts::new(
            200,
            br#"{"id": 1, "price": 10, "tags": ["a"], "old": true}"#,
        );
        let b = ResponseParts::new(
            200,
            br#"{"tags": ["a", "b"], "price": 12, "id": 1, "new": 0}"#,
        );
        let d = diff(&a, &b, &rules(&[], &[]));
        assert_eq!(
            fields(&d),
            [
                ("/new", Change::Added),
                ("/old", Change::Removed),
                ("/price", Change::Changed),
                ("/tags/*", Change::Added),
            ]
        );
    }

    #[test]
    fn array_positions_collapse_into_one_field() {
        let a = ResponseParts::new(200, br#"{"items": [{"ts": 1}, {"ts": 2}]}"#);
        let b = ResponseParts::new(200, br#"{"items": [{"ts": 3}, {"ts": 4}]}"#);
        let d = diff(&a, &b, &rules(&[], &[]));
        assert_eq!(fields(&d), [("/items/*/ts", Change::Changed)]);
    }

    #[test]
    fn ignored_paths_and_headers_are_not_compared() {
        let a = ResponseParts::new(
            200,
            br#"{"meta": {"at": 1}, "items": [{"etag": "x", "v": 1}]}"#,
        )
        .header(b"Date", b"Mon")
        .header(b"X-Version", b"41");
        let b = ResponseParts::new(
            200,
            br#"{"meta": {"at": 2}, "items": [{"etag": "y", "v": 1}]}"#,
        )
        .header(b"date", b"Tue")
        .header(b"x-version", b"42");
        let d = diff(&a, &b, &rules(&["date"], &["/meta/at", "/items/*/etag"]));
        assert_eq!(fields(&d), [("header:x-version", Change::Changed)]);
    }

    #[test]
    fn status_and_non_json_bodies_compare_as_wholes() {
        let a = ResponseParts::new(200, b"hello");
        let b = ResponseParts::new(500, b"hellO");
        let d = diff(&a, &b, &rules(&[], &[]));
        assert_eq!(
            fields(&d),
            [("body", Change::Changed), ("status", Change::Changed)]
        );
        let same = diff(&a, &a, &rules(&[], &[]));
        assert!(same.is_empty());
    }

    #[test]
    fn headers_compare_case_insensitively_with_repeated_values_in_order() {
        let a = ResponseParts::new(200, b"")
            .header(b"Vary", b"a")
            .header(b"vary", b"b");
        let b = ResponseParts::new(200, b"")
            .header(b"vary", b"b")
            .header(b"VARY", b"a");
        let d = diff(&a, &b, &rules(&[], &[]));
        assert_eq!(fields(&d), [("header:vary", Change::Changed)]);
        let c = ResponseParts::new(200, b"")
            .header(b"VARY", b"a")
            .header(b"Vary", b"b");
        assert!(diff(&a, &c, &rules(&[], &[])).is_empty());
    }
}
