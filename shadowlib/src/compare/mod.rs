//! Response comparison: do the builds answer the same?
//!
//! Adapters capture each side of a mirrored read into a [`ResponseSummary`] (status, the
//! configured headers, the body up to the limit); a [`CompareResponses`] names what
//! differs in a pair. The [`Comparator`] (the default) understands fields — status, each
//! header, and the body: JSON bodies key by key and element by element, other bodies as
//! bytes — and leaves out what differs by design (`Date`, request ids, paths like
//! `/**/updated_at`); [`ExactComparison`] is plain equality.
//!
//! Each mirrored read is compared twice: the live response with the stable *twin*'s (two
//! runs of the same build: what differs there is noise) and with the candidate's. A field
//! only the candidate gets wrong is a mismatch; the rate of such reads, net of the twin's,
//! is tested like any other KPI (see [`PairedMismatches`](crate::PairedMismatches)), and
//! [`ComparisonReport`] renders it per route with the top differing fields.
//!
//! The API has no HTTP types: a [`ResponseParts`] is a status code, header name/value byte
//! pairs and body bytes, so every adapter (tower, actix-web, …) feeds it the same way.

mod comparator;
mod diff;
mod report;
mod response;
mod rules;
mod summary;

pub use comparator::{Comparator, CompareConfig, CompareConfigError, FieldChange};
pub use diff::Change;
pub use report::{ComparisonReport, FieldReport, RouteComparison};
pub use response::ResponseParts;
pub use summary::{
    BodyCapture, CompareResponses, Comparison, Difference, ExactComparison, ResponseSummary,
};
