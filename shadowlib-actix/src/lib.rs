//! # shadowlib-actix
//!
//! [actix-web](https://docs.rs/actix-web) middleware for [shadowlib]: give the middleware
//! both builds as `App` factories — the same kind of closure `HttpServer::new` takes —
//! wrap the stable `App` with it, and let the rollout mirror reads to the candidate (and
//! to a twin of stable, to measure both alike), steer a growing share of traffic to it, or
//! roll it back.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use shadowlib::{Rollout, Version};
//! use shadowlib_actix::Shadow;
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2")).build()?;
//!     let v1 = || App::new().route("/", web::get().to(|| async { "v1" }));
//!     let v2 = || App::new().route("/", web::get().to(|| async { "v2" }));
//!     let shadow = Shadow::new(v1, v2, &rollout);
//!     HttpServer::new(move || v1().wrap(shadow.clone()))
//!         .bind(("127.0.0.1", 8080))?
//!         .run()
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! The middleware only translates actix-web's types (which are `http` 0.2's) into the
//! core's vocabulary through [`shadowlib::adapter`]; routing, classification, the shadow's
//! queue and worker, comparison and recording are the core's, shared with the tower
//! adapter. See [`shadow`]; [`admin`] mounts the rollout's authenticated admin API as a
//! `Scope`.

#![warn(missing_docs)]

pub mod admin;
pub mod shadow;

pub use shadow::{Shadow, ShadowMiddleware};
