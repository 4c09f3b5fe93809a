//! Member crate for the workspace's examples; the code lives in `examples/`.
