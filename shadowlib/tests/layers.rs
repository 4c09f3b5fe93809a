//! The core's modules form a DAG: each imports only modules below it in [`LAYERS`], so
//! no two concerns depend on each other and the vocabulary at the bottom depends on
//! nothing. This reads the sources and checks every `crate::` path outside tests and
//! doc comments.

use std::collections::BTreeSet;
use std::path::Path;

/// Bottom first. A module may name modules before it, never after.
const LAYERS: &[&str] = &[
    "model", "duration", "rng", "evidence", "metrics", "analysis", "compare", "predict", "steer",
    "mirror", "shadow", "delta", "rollout", "adapter", "simulate",
];

/// Items the crate root re-exports, with the module each lives in.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Action", "model"),
    ("Arm", "model"),
    ("Degradation", "model"),
    ("Kpi", "model"),
    ("LivePhase", "model"),
    ("OTHER_ROUTES", "model"),
    ("Outcome", "model"),
    ("Phase", "model"),
    ("SampleCount", "model"),
    ("Share", "model"),
    ("ShareError", "model"),
    ("Version", "model"),
    ("ArmEvidence", "evidence"),
    ("Comparisons", "evidence"),
    ("Distribution", "evidence"),
    ("DistributionError", "evidence"),
    ("Evidence", "evidence"),
    ("FieldDifferences", "evidence"),
    ("Moments", "evidence"),
    ("OutcomeCounts", "evidence"),
    ("ProcessEvidence", "evidence"),
    ("RouteEvidence", "evidence"),
    ("MetricError", "metrics"),
    ("MetricSource", "metrics"),
    ("Mirror", "mirror"),
    ("ReadClass", "mirror"),
    ("StateDelta", "delta"),
];

/// The module a `crate::NAME` path is in, for a module or a re-exported item.
fn module_of(name: &str) -> Option<&'static str> {
    LAYERS
        .iter()
        .find(|layer| **layer == name)
        .copied()
        .or_else(|| {
            ROOT_ITEMS
                .iter()
                .find(|(item, _)| *item == name)
                .map(|(_, module)| *module)
        })
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| *layer == module)
}

/// The code of a file with its test module and doc comments left out.
fn code(text: &str) -> String {
    let without_tests = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    without_tests
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            !(line.starts_with("///") || line.starts_with("//!") || line.starts_with("//"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module `code` names through `crate::`, directly or in a `use crate::{...}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let head = part.trim().split("::").next().unwrap_or_default();
                named.insert(head.trim().to_owned());
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            named.insert(head);
        }
    }
    named.retain(|name| !name.is_empty());
    named
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the sources are readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        if first == "lib" || relative.ends_with("tests.rs") {
            continue;
        }
        let own = rank(&first).unwrap_or_else(|| panic!("{first} is not in LAYERS"));
        let text = std::fs::read_to_string(&file).expect("a readable source");
        for name in named_modules(&code(&text)) {
            let Some(module) = module_of(&name) else {
                violations.push(format!(
                    "{}: `crate::{name}` is not a known module",
                    relative.display()
                ));
                continue;
            };
            checked += 1;
            let theirs = rank(module).unwrap_or(usize::MAX);
            if theirs > own {
                violations.push(format!(
                    "{}: {first} imports {module}, which is above it",
                    relative.display()
                ));
            }
        }
    }
    assert!(checked > 100, "the checker read the imports ({checked})");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_vocabulary_imports_nothing_of_the_crate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model");
    let mut files = Vec::new();
    visit(&dir, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source");
        let named = named_modules(&code(&text));
        assert!(named.is_empty(), "{}: {named:?}", file.display());
    }
}
