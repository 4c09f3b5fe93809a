//! What an adapter gives the shadow: a way to run a build on a copy.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use futures_core::Stream;
use thiserror::Error;

use crate::compare::{BodyCapture, ResponseSummary};
use crate::mirror::{HeaderView, RequestCopy};
use crate::model::Arm;

/// What a build answered to a shadow copy: the response as far as comparison goes, and
/// the time until its head was ready (the same measure as a live request's latency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowReply {
    /// The response.
    pub response: ResponseSummary,
    /// Time from the call to the response head.
    pub latency: Duration,
}

/// A build's service returned an error value for a shadow copy, or the copy could not be
/// made into a request for it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the shadow request failed: {0}")]
pub struct ShadowError(pub String);

impl ShadowError {
    /// The copy could not be made into a request: `part` (method, target, header) is not
    /// valid to the adapter's HTTP library, for the reason given.
    ///
    /// ```
    /// use shadowlib::adapter::ShadowError;
    ///
    /// let error = ShadowError::invalid_copy("target", "spaces are not allowed");
    /// assert_eq!(error.0, "the copy's target is not valid HTTP: spaces are not allowed");
    /// ```
    pub fn invalid_copy(part: &str, reason: impl fmt::Display) -> Self {
        Self(format!("the copy's {part} is not valid HTTP: {reason}"))
    }
}

/// What a shadow call resolves to.
pub type ShadowResult = Result<ShadowReply, ShadowError>;

/// A shadow call in progress, on the shadow's thread (it need not be `Send`).
pub type ShadowCall = Pin<Box<dyn Future<Output = ShadowResult>>>;

/// How an adapter runs one of the builds on a copy, on the shadow's thread: it builds its
/// framework's request from the [`RequestCopy`], calls the build's own instance, and
/// summarizes the response with the [`ResponseCapture`] it is given.
///
/// The shadow applies the timeout, catches panics and marks the task as
/// [in the shadow](crate::shadow::in_shadow) around each call; the adapter only translates.
///
/// ```
/// use std::time::Duration;
/// use shadowlib::Arm;
/// use shadowlib::adapter::{ResponseCapture, ShadowCall, ShadowReply, ShadowTarget};
/// use shadowlib::mirror::{HeaderList, RequestCopy};
///
/// /// Both builds answer 200 to everything, each naming itself in two body chunks.
/// struct Echo;
///
/// impl ShadowTarget for Echo {
///     fn call(&self, arm: Arm, copy: &RequestCopy, capture: ResponseCapture) -> ShadowCall {
///         let chunks = [format!("{arm} saw "), copy.target().to_owned()];
///         Box::pin(async move {
///             let mut summary = capture.head(200, &HeaderList::default());
///             let body = futures_util::stream::iter(chunks.map(Ok::<_, std::io::Error>));
///             capture.read_body(&mut summary, body).await?;
///             Ok(ShadowReply { response: summary, latency: Duration::from_micros(50) })
///         })
///     }
/// }
/// ```
pub trait ShadowTarget {
    /// Calls `arm`'s build with the request `copy` describes.
    fn call(&self, arm: Arm, copy: &RequestCopy, capture: ResponseCapture) -> ShadowCall;
}

/// Builds a [`ShadowTarget`] on the shadow's thread, where it then lives (the builds of
/// some frameworks cannot move between threads): see
/// [`Runtime::register`](crate::adapter::Runtime::register).
pub type TargetFactory = Box<
    dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<Box<dyn ShadowTarget>, String>>>> + Send,
>;

/// Which registered target a copy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetId(pub(crate) usize);

/// Shadow response summaries kept for reuse at most; more are freed.
pub(crate) const RECYCLED_SUMMARIES: usize = 256;

/// Summaries the worker has compared, kept for the next responses (only the shadow's
/// thread makes and frees them).
pub(crate) type Recycled = Arc<ArrayQueue<ResponseSummary>>;

/// How a response is captured for comparison: the compared headers and the body limit.
#[derive(Clone)]
pub struct ResponseCapture {
    headers: Arc<[String]>,
    limit: usize,
    recycled: Recycled,
}

impl fmt::Debug for ResponseCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCapture")
            .field("headers", &self.headers)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl ResponseCapture {
    pub(crate) fn new(headers: Arc<[String]>, limit: usize, recycled: Recycled) -> Self {
        Self {
            headers,
            limit,
            recycled,
        }
    }

    /// The summary of a response head: status and compared headers, no body yet.
    pub fn head(&self, status: u16, headers: &dyn HeaderView) -> ResponseSummary {
        let mut summary = self.recycled.pop().unwrap_or_default();
        summary.refill(status, |push| {
            for name in self.headers.iter() {
                headers.each_value(name, &mut |value| push(name, value));
            }
        });
        summary
    }

    /// An empty body capture with the limit.
    pub fn body(&self) -> BodyCapture {
        BodyCapture::new(self.limit)
    }

    /// Reads a response body into `summary`, up to the limit (past it nothing more would
    /// be compared, so reading stops), from a stream of its data chunks. See
    /// [`ShadowTarget`] for an example.
    pub async fn read_body<S, B, E>(
        &self,
        summary: &mut ResponseSummary,
        chunks: S,
    ) -> Result<(), ShadowError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: fmt::Display,
    {
        let mut chunks = pin!(chunks);
        let mut body = BodyCapture::reusing(self.limit, std::mem::take(&mut summary.body));
        while let Some(chunk) = poll_fn(|cx| chunks.as_mut().poll_next(cx)).await {
            let chunk = chunk.map_err(|e| ShadowError(format!("response body: {e}")))?;
            if !body.push(chunk.as_ref()) {
                break;
            }
        }
        summary.set_body(body);
        Ok(())
    }
}
