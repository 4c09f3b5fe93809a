//! Member crate for the workspace's benches; the code lives in `benches/`.
