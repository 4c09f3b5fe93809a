//! The request and response bodies the middleware hands on.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use shadowlib::mirror::{BodyCapture, LiveResponse};

/// Called once when the live handler has read the request body to its end, with the copy
/// (`None` when the body turned out longer than the limit). Dropping it uncalled means the
/// body was never read to the end.
pub(crate) type OnCopied = Box<dyn FnOnce(Option<Bytes>) + Send>;

/// The copy of a request body being made while the live handler reads it.
struct Tee {
    capture: BodyCapture,
    on_copied: OnCopied,
}

impl Tee {
    fn complete(self) {
        let Tee { capture, on_copied } = self;
        if capture.overflowed() {
            on_copied(None);
        } else {
            on_copied(Some(Bytes::from(capture.into_bytes())));
        }
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
        tee: Option<Tee>,
    }
}

impl<B> ShadowBody<B> {
    pub(crate) fn live(body: B) -> Self {
        Self {
            kind: RequestKind::Live { body },
            tee: None,
        }
    }

    pub(crate) fn teed(body: B, limit: usize, on_copied: OnCopied) -> Self {
        Self {
            kind: RequestKind::Live { body },
            tee: Some(Tee {
                capture: BodyCapture::new(limit),
                on_copied,
            }),
        }
    }

    pub(crate) fn copied(data: Bytes) -> Self {
        Self {
            kind: RequestKind::Copied {
                data: (!data.is_empty()).then_some(data),
            },
            tee: None,
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
            .field("copying", &self.tee.is_some())
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
                let ended = match &frame {
                    Some(Ok(frame)) => {
                        if let (Some(tee), Some(data)) = (this.tee.as_mut(), frame.data_ref())
                            && !tee.capture.push(data)
                            && let Some(tee) = this.tee.take()
                        {
                            // Over the limit: stop copying now rather than at the end.
                            tee.complete();
                        }
                        body.is_end_stream()
                    }
                    // An error ends the copy unfinished: dropping the tee counts it.
                    Some(Err(_)) => {
                        this.tee.take();
                        false
                    }
                    None => true,
                };
                if ended && let Some(tee) = this.tee.take() {
                    tee.complete();
                }
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
        completion: Option<LiveResponse>,
    }
}

impl<B> ShadowResponseBody<B> {
    pub(crate) fn new(body: B, completion: Option<LiveResponse>) -> Self {
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
        let ended = match &frame {
            Some(Ok(frame)) => {
                if let (Some(completion), Some(data)) = (this.completion.as_mut(), frame.data_ref())
                {
                    completion.chunk(data);
                }
                body.is_end_stream()
            }
            Some(Err(_)) => {
                // Sent in part: recorded as it is, not compared.
                this.completion.take();
                false
            }
            None => true,
        };
        if ended && let Some(completion) = this.completion.take() {
            completion.finish();
        }
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
