//! Which build: its identity, and the arm of a comparison.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of one build of the application: a human name and a build id.
///
/// ```
/// use shadowlib::Version;
///
/// let v = Version::new("checkout", "2024.11.3+g1a2b3c");
/// assert_eq!(v.to_string(), "checkout@2024.11.3+g1a2b3c");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    /// What the build is called, usually the service name.
    pub name: String,
    /// What distinguishes this build from others of the same name (tag, commit, build number).
    pub build: String,
}

impl Version {
    /// A version from its name and build id.
    pub fn new(name: impl Into<String>, build: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            build: build.into(),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.build)
    }
}

/// Which of the two builds a request, a statistic or a decision is about.
///
/// ```
/// use shadowlib::Arm;
///
/// assert_eq!(Arm::Candidate.to_string(), "candidate");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The build that serves production today.
    Stable,
    /// The build being evaluated.
    Candidate,
}

impl fmt::Display for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arm::Stable => "stable",
            Arm::Candidate => "candidate",
        })
    }
}
