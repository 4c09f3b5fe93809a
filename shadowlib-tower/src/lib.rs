//! # shadowlib-tower
//!
//! [tower](https://docs.rs/tower) middleware for [shadowlib]: put the candidate build of
//! an HTTP service beside the stable one — two axum `Router`s, or any two
//! `tower::Service<http::Request<_>>` — and let the rollout controller mirror reads to it,
//! steer a growing share of traffic to it, or roll it back.
//!
//! The middleware only translates `http` types into the core's vocabulary; routing,
//! classification, the shadow's queue and worker, comparison and recording are
//! [`shadowlib::mirror`]'s, shared with the actix-web adapter. See [`shadow`].

#![warn(missing_docs)]

pub mod shadow;

pub use shadow::{Rollout, ShadowLayer, ShadowService};
