//! The middleware layer.

use std::fmt;

use shadowlib::Rollout;
use shadowlib::adapter::{Runtime, ShadowCounts};
use tower::Layer;

use super::ShadowService;

/// Wraps the stable build in a [`ShadowService`] that also holds the candidate build.
/// See the [module docs](super).
///
/// ```
/// use axum::{Router, routing::get};
/// use shadowlib::{Rollout, Version};
/// use shadowlib_tower::ShadowLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2")).build()?;
/// let v2 = Router::new().route("/", get(|| async { "v2" }));
/// let app: Router = Router::new()
///     .route("/", get(|| async { "v1" }))
///     .layer(ShadowLayer::new(v2, &rollout));
/// # let _ = app;
/// # Ok(()) }
/// ```
pub struct ShadowLayer<C> {
    candidate: C,
    runtime: Runtime,
}

impl<C: Clone> Clone for ShadowLayer<C> {
    fn clone(&self) -> Self {
        Self {
            candidate: self.candidate.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

impl<C> ShadowLayer<C> {
    /// A layer serving `rollout`, with `candidate` as the new build: an axum `Router`, or
    /// any `tower::Service` of `http::Request`s that answers with the stable build's
    /// response type.
    pub fn new(candidate: C, rollout: &Rollout) -> Self {
        Self {
            candidate,
            runtime: Runtime::new(rollout),
        }
    }

    /// What happened to every read the shadow could have seen.
    pub fn counts(&self) -> ShadowCounts {
        self.runtime.rollout().shadow_counts()
    }
}

impl<C> fmt::Debug for ShadowLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowLayer")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for ShadowLayer<C> {
    type Service = ShadowService<S, C>;

    /// Wraps `stable`. Call it once per service you build, not per connection: each
    /// service it returns (and every clone of that) is one pair of builds to the shadow.
    fn layer(&self, stable: S) -> Self::Service {
        ShadowService::new(stable, self.candidate.clone(), self.runtime.clone())
    }
}

#[cfg(feature = "axum")]
impl ShadowLayer<axum::Router> {
    /// The whole stable `Router` with this layer around it, as a `Router` you serve and
    /// layer further like any other: both builds route each request themselves, and
    /// middleware you add to the result runs before either sees it.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use shadowlib::{Rollout, Version};
    /// use shadowlib_tower::ShadowLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2")).build()?;
    /// let v1 = Router::new().route("/", get(|| async { "v1" }));
    /// let v2 = Router::new().route("/", get(|| async { "v2" }));
    /// let app: Router = ShadowLayer::new(v2, &rollout).around(v1);
    /// // axum::serve(listener, app).await?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn around(self, stable: axum::Router) -> axum::Router {
        axum::Router::new().fallback_service(self.layer(stable))
    }
}
