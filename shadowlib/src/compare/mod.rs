//! Response comparison with noise filtering: do the builds answer the same?
//!
//! Adapters capture each side of a mirrored read into a [`ResponseSummary`] (status, the
//! configured headers, the body up to the limit); a [`CompareResponses`] judges the pair.
//! [`ExactComparison`] is plain equality; the [`Comparator`] understands fields.
//!
//! For a mirrored read both builds produce a response; the [`Comparator`] compares them
//! field by field — status, each header, and the body: JSON bodies key by key and element
//! by element, other bodies as bytes. Ignore rules leave out what differs by design
//! (`Date`, request ids, paths like `/**/updated_at`). What still differs is split into
//! noise and mismatches by re-running the *stable* build on a fraction of reads: a field
//! that two stable runs disagree on is noise, not a candidate regression.
//!
//! The API has no HTTP types: a [`ResponseParts`] is a status code, header name/value byte
//! pairs and body bytes, so every adapter (tower, actix-web, …) feeds it the same way:
//!
//! 1. for each mirrored read, ask [`Comparator::should_rerun_stable`];
//! 2. when both responses (and the re-run, if asked) are in, call [`Comparator::compare`];
//! 3. give the comparator to the controller as a metric source: the mismatch rate per
//!    route, with the differing fields, flows into the candidate's evidence;
//!    [`Comparator::report`] renders it with the top differing fields.

mod comparator;
mod diff;
mod report;
mod response;
mod rules;
mod summary;

pub use comparator::{
    Comparator, CompareConfig, CompareConfigError, ComparisonVerdict, FieldVerdict, OVERFLOW_FIELD,
};
pub use diff::Change;
pub use report::{ComparisonReport, FieldReport, RouteComparison, is_noise};
pub use response::ResponseParts;
pub use summary::{
    BodyCapture, CompareResponses, Comparison, Difference, ExactComparison, ResponseSummary,
};
