//! # shadowlib-actix
//!
//! [actix-web](https://docs.rs/actix-web) middleware for [shadowlib]: give the stable
//! `App` a candidate build — a second `App` factory, the same kind of closure
//! `HttpServer::new` takes — and let the rollout controller mirror reads to it, steer a
//! growing share of traffic to it, or roll it back.
//!
//! The middleware only translates actix-web's types (which are `http` 0.2's) into the
//! core's vocabulary; routing, classification, the shadow's queue and workers, comparison
//! and recording are [`shadowlib::mirror`]'s, shared with the tower adapter. See
//! [`shadow`].

#![warn(missing_docs)]

pub mod shadow;

pub use shadow::{Shadow, ShadowMiddleware};
