//! The request payload a mirrored read's handler reads, and the response body the
//! middleware returns.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures::Stream;
use pin_project_lite::pin_project;
use shadowlib::mirror::{BodyCapture, LiveResponse, MirrorTicket};

use super::executor::{ShadowJob, ShadowRequest};
use super::headers::HeadCopy;

/// Hands a copy to the shadow without waiting.
pub(crate) fn submit(ticket: MirrorTicket<ShadowJob>, head: HeadCopy, body: Bytes) {
    let request_bytes = body.len() as u64;
    let capture = ticket.capture();
    ticket.submit(
        request_bytes,
        ShadowJob::new(ShadowRequest {
            head,
            body,
            capture,
        }),
    );
}

/// The copy of a request body being made while the live handler reads it.
struct BodyCopy {
    ticket: MirrorTicket<ShadowJob>,
    head: HeadCopy,
    capture: BodyCapture,
}

pin_project! {
    /// The live request's payload, passed through chunk by chunk as the handler reads it,
    /// each chunk also copied (up to the body limit). Once the handler has read the body
    /// to its end the copy goes to the shadow; if the body grows past the limit the copy
    /// is abandoned there; if the handler stops early, or the payload fails, dropping
    /// the ticket counts the read as never read whole. The handler never waits for it.
    pub(crate) struct TeePayload {
        #[pin]
        payload: Payload,
        copy: Option<BodyCopy>,
    }
}

impl TeePayload {
    /// The live payload, copied for `ticket` into a request with `head`.
    pub(crate) fn new(payload: Payload, ticket: MirrorTicket<ShadowJob>, head: HeadCopy) -> Self {
        let capture = BodyCapture::new(ticket.body_limit());
        Self {
            payload,
            copy: Some(BodyCopy {
                ticket,
                head,
                capture,
            }),
        }
    }
}

impl Stream for TeePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let item = ready!(this.payload.poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                if let Some(copy) = this.copy
                    && !copy.capture.push(chunk)
                {
                    // Over the limit: give up the copy now rather than at the end.
                    if let Some(copy) = this.copy.take() {
                        copy.ticket.skip_oversize();
                    }
                }
            }
            Some(Err(_)) => {
                this.copy.take();
            }
            None => {
                if let Some(BodyCopy {
                    ticket,
                    head,
                    capture,
                }) = this.copy.take()
                {
                    submit(ticket, head, Bytes::from(capture.into_bytes()));
                }
            }
        }
        Poll::Ready(item)
    }
}

pin_project! {
    /// The response body the middleware returns: the serving build's body, passed through
    /// unchanged, counting its bytes for the KPIs and, for a mirrored read, keeping its
    /// first bytes (up to the limit) to compare with the shadow's. The request's KPIs are
    /// recorded when the body ends or is dropped.
    ///
    /// Stable's body is on the left; the candidate's (boxed) and the `500` answering a
    /// candidate panic are on the right.
    pub struct ShadowResponseBody<B> {
        #[pin]
        body: EitherBody<B>,
        // Boxed: a response body is moved several times on its way out, and this keeps it
        // small.
        live: Option<Box<LiveResponse>>,
    }
}

impl<B: MessageBody + 'static> ShadowResponseBody<B> {
    pub(crate) fn new(body: EitherBody<B>, live: Option<LiveResponse>) -> Self {
        // actix-web never polls a body it knows is empty: it is complete now.
        let live = match body.size() {
            BodySize::None | BodySize::Sized(0) => {
                if let Some(live) = live {
                    live.finish();
                }
                None
            }
            BodySize::Sized(_) | BodySize::Stream => live.map(Box::new),
        };
        Self { body, live }
    }
}

impl<B> fmt::Debug for ShadowResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowResponseBody")
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl<B: MessageBody + 'static> MessageBody for ShadowResponseBody<B> {
    type Error = <EitherBody<B> as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let item = ready!(this.body.poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                if let Some(live) = this.live {
                    live.chunk(chunk);
                }
            }
            // Sent in part: recorded as it is, not compared.
            Some(Err(_)) => {
                this.live.take();
            }
            None => {
                if let Some(live) = this.live.take() {
                    (*live).finish();
                }
            }
        }
        Poll::Ready(item)
    }

    fn try_into_bytes(self) -> Result<Bytes, Self> {
        let Self { body, live } = self;
        match body.try_into_bytes() {
            Ok(bytes) => {
                if let Some(mut live) = live {
                    live.chunk(&bytes);
                    (*live).finish();
                }
                Ok(bytes)
            }
            Err(body) => Err(Self { body, live }),
        }
    }
}
