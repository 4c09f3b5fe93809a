//! Member crate for the workspace's tests; the code lives in `tests/`.
