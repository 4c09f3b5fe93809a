//! Judging the evidence: sequential tests, anomaly detection and response comparison.

pub mod compare;

pub use compare::{
    Change, Comparator, CompareConfig, CompareConfigError, ComparisonReport, FieldReport,
    FieldVerdict, ResponseParts, RouteComparison, Verdict, is_noise,
};
