//! Judging the evidence: sequential tests, anomaly detection and response comparison.

pub mod compare;

pub use compare::{
    Change, CompareConfig, CompareConfigError, Comparator, ComparisonReport, FieldReport,
    FieldVerdict, ResponseParts, RouteComparison, Verdict, is_noise,
};
