//! The request and response bodies the middleware hands on.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use shadowlib::adapter::{BodyTee, Tracker};

/// What a body wrapper feeds with the frames it passes on: the copy of a mirrored read's
/// request body, or the tracker of a live response.
trait FrameWatcher: Sized {
    /// A data frame passed; `watching` is left `None` if the watch ends here.
    fn data(watching: &mut Option<Self>, data: &[u8]);
    /// The body ended.
    fn end(self);
}

impl FrameWatcher for BodyTee {
    fn data(watching: &mut Option<Self>, data: &[u8]) {
        if let Some(tee) = watching
            && !tee.chunk(data)
        {
            // Over the limit: the copy was given up (and counted) there.
            watching.take();
        }
    }

    fn end(self) {
        self.end();
    }
}

impl FrameWatcher for Tracker {
    fn data(watching: &mut Option<Self>, data: &[u8]) {
        if let Some(tracker) = watching {
            tracker.chunk(data);
        }
    }

    fn end(self) {
        self.finish();
    }
}

/// Feeds `watcher` with a frame being passed on: its data, and the end of the body when
/// `ended` says it came. An error ends the watch unfinished: the watcher is dropped,
/// which records that (a copy never made, a live response sent in part).
fn watch_frame<W: FrameWatcher, E>(
    watcher: &mut Option<W>,
    frame: &Option<Result<Frame<Bytes>, E>>,
    ended: impl FnOnce() -> bool,
) {
    let ended = match frame {
        Some(Ok(frame)) => {
            if let Some(data) = frame.data_ref() {
                W::data(watcher, data);
            }
            ended()
        }
        Some(Err(_)) => {
            watcher.take();
            false
        }
        None => true,
    };
    if ended && let Some(watcher) = watcher.take() {
        watcher.end();
    }
}

pin_project! {
    #[project = RequestKindProj]
    enum RequestKind<B> {
        Live { #[pin] body: B },
        Copied { data: Option<Bytes> },
    }
}

pin_project! {
    /// The request body the stable and candidate services receive.
    ///
    /// For a live request it is the client's body, passed through frame by frame as the
    /// handler reads it; when the request is mirrored, each data frame is also copied (up
    /// to the body limit) as it passes, and the copy goes to the shadow once the handler
    /// has read the body to its end. The live handler never waits for the copy. For a
    /// shadow request it is that copy.
    pub struct ShadowBody<B> {
        #[pin]
        kind: RequestKind<B>,
        copy: Option<BodyTee>,
    }
}

impl<B> ShadowBody<B> {
    pub(crate) fn live(body: B) -> Self {
        Self {
            kind: RequestKind::Live { body },
            copy: None,
        }
    }

    /// The live body, each data frame also copied through `tee`, which hands the copy
    /// to the shadow when the body ends.
    pub(crate) fn teed(body: B, tee: BodyTee) -> Self {
        Self {
            kind: RequestKind::Live { body },
            copy: Some(tee),
        }
    }

    pub(crate) fn copied(data: Bytes) -> Self {
        Self {
            kind: RequestKind::Copied {
                data: (!data.is_empty()).then_some(data),
            },
            copy: None,
        }
    }
}

impl<B> fmt::Debug for ShadowBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RequestKind::Live { .. } => "live",
            RequestKind::Copied { .. } => "copied",
        };
        f.debug_struct("ShadowBody")
            .field("kind", &kind)
            .field("copying", &self.copy.is_some())
            .finish()
    }
}

impl<B> Body for ShadowBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.kind.project() {
            RequestKindProj::Copied { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
            RequestKindProj::Live { mut body } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                watch_frame(this.copy, &frame, || body.is_end_stream());
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Live { body } => body.is_end_stream(),
            RequestKind::Copied { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Live { body } => body.size_hint(),
            RequestKind::Copied { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

pin_project! {
    #[project = ResponseKindProj]
    enum ResponseKind<B> {
        Inner { #[pin] body: B },
        Empty,
    }
}

pin_project! {
    /// The response body the middleware returns: the serving build's body, passed through
    /// unchanged, counting its bytes for the KPIs and, for a mirrored read, keeping its
    /// first bytes (up to the limit) to compare with the shadow's. The request's KPIs are
    /// recorded when the body ends or is dropped.
    pub struct ShadowResponseBody<B> {
        #[pin]
        kind: ResponseKind<B>,
        completion: Option<Tracker>,
    }
}

impl<B> ShadowResponseBody<B> {
    pub(crate) fn new(body: B, completion: Option<Tracker>) -> Self {
        Self {
            kind: ResponseKind::Inner { body },
            completion,
        }
    }

    pub(crate) fn empty() -> Self {
        Self {
            kind: ResponseKind::Empty,
            completion: None,
        }
    }
}

impl<B> fmt::Debug for ShadowResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowResponseBody")
            .field("empty", &matches!(self.kind, ResponseKind::Empty))
            .finish_non_exhaustive()
    }
}

impl<B> Body for ShadowResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut body = match this.kind.project() {
            ResponseKindProj::Empty => return Poll::Ready(None),
            ResponseKindProj::Inner { body } => body,
        };
        let frame = ready!(body.as_mut().poll_frame(cx));
        watch_frame(this.completion, &frame, || body.is_end_stream());
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Inner { body } => body.is_end_stream(),
            ResponseKind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Inner { body } => body.size_hint(),
            ResponseKind::Empty => SizeHint::with_exact(0),
        }
    }
}
