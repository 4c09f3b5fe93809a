//! How a request ended.

use serde::{Deserialize, Serialize};

/// The class of a request's outcome, as the recorder counts it.
///
/// ```
/// use shadowlib::Outcome;
///
/// assert!(Outcome::ServerError.is_failure());
/// assert!(!Outcome::ClientError.is_failure());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The request was served (HTTP 1xx–3xx).
    Success,
    /// The request was refused as the client's fault (HTTP 4xx). Not the build's failure.
    ClientError,
    /// The build failed to serve the request (HTTP 5xx or an error value).
    ServerError,
    /// The request did not finish within its deadline.
    Timeout,
    /// The handler panicked.
    Panic,
    /// The request was not run because the build was over budget (shadow work shed first).
    Shed,
}

impl Outcome {
    /// All outcome classes, in a fixed order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::Timeout,
        Outcome::Panic,
        Outcome::Shed,
    ];

    /// Whether this outcome counts against the build (server error, timeout or panic).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::ServerError | Outcome::Timeout | Outcome::Panic
        )
    }

    /// The outcome class of an HTTP status code.
    ///
    /// ```
    /// use shadowlib::Outcome;
    ///
    /// assert_eq!(Outcome::from_http_status(503), Outcome::ServerError);
    /// assert_eq!(Outcome::from_http_status(404), Outcome::ClientError);
    /// ```
    pub fn from_http_status(status: u16) -> Outcome {
        match status {
            500..=599 => Outcome::ServerError,
            400..=499 => Outcome::ClientError,
            _ => Outcome::Success,
        }
    }
}
