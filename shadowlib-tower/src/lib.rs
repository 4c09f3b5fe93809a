//! # shadowlib-tower
//!
//! [tower](https://docs.rs/tower) middleware for [shadowlib]: put the candidate build of
//! an HTTP service beside the stable one — two axum `Router`s, or any two
//! `tower::Service<http::Request<_>>` — and let the rollout mirror reads to it, steer a
//! growing share of traffic to it, or roll it back.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use shadowlib::{Rollout, Version};
//! use shadowlib_tower::ShadowLayer;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let v1 = Router::new().route("/", get(|| async { "v1" }));
//!     let v2 = Router::new().route("/", get(|| async { "v2" }));
//!     let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2")).build()?;
//!     let app = ShadowLayer::new(v2, &rollout).around(v1);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! The middleware only translates `http` types into the core's vocabulary through
//! [`shadowlib::adapter`]; routing, classification, the shadow's queue and worker,
//! comparison and recording are the core's, shared with the actix-web adapter. See
//! [`shadow`].
//!
//! Features: `axum` (on by default) adds [`ShadowLayer::around`] and makes the layer
//! right under `Router::layer`, and the rollout's authenticated admin API as a `Router`
//! (`admin::router`); without it the crate needs only `http` and `tower`.

#![warn(missing_docs)]

#[cfg(feature = "axum")]
pub mod admin;
pub mod shadow;

pub use shadow::{ShadowLayer, ShadowService};
