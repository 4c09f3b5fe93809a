//! The request and response bodies the middleware hands on.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use shadowlib::mirror::{LiveResponse, MirrorTicket};

/// Copies a data frame of a mirrored read's body into its ticket; gives the copy up
/// (counted) when the body outgrows the limit.
fn copy_frame(copy: &mut Option<MirrorTicket>, data: &[u8]) {
    if let Some(ticket) = copy
        && !ticket.copy_body(data)
        && let Some(ticket) = copy.take()
    {
        // Over the limit: stop copying now rather than at the end.
        ticket.skip_oversize();
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
        copy: Option<MirrorTicket>,
    }
}

impl<B> ShadowBody<B> {
    pub(crate) fn live(body: B) -> Self {
        Self {
            kind: RequestKind::Live { body },
            copy: None,
        }
    }

    /// The live body, each data frame also copied into `ticket`, which is submitted
    /// when the body ends.
    pub(crate) fn teed(body: B, ticket: MirrorTicket) -> Self {
        Self {
            kind: RequestKind::Live { body },
            copy: Some(ticket),
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
                let ended = match &frame {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            copy_frame(this.copy, data);
                        }
                        body.is_end_stream()
                    }
                    // An error ends the copy unfinished: dropping the ticket counts it.
                    Some(Err(_)) => {
                        this.copy.take();
                        false
                    }
                    None => true,
                };
                if ended && let Some(ticket) = this.copy.take() {
                    ticket.submit();
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
