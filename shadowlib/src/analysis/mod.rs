//! Judging the evidence: sequential tests, anomaly detection and response comparison.
