//! The request payload a mirrored read's handler reads, and the response body the
//! middleware returns.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;
use pin_project_lite::pin_project;
use shadowlib::adapter::{BodyTee, Tracker};

pin_project! {
    /// The live request's payload, passed through chunk by chunk as the handler reads it,
    /// each chunk also copied (up to the body limit). Once the handler has read the body
    /// to its end the copy goes to the shadow; if the body grows past the limit the copy
    /// is abandoned there; if the handler stops early, or the payload fails, dropping
    /// the tee counts the read as never read whole. The handler never waits for it.
    pub(crate) struct TeePayload {
        #[pin]
        payload: Payload,
        copy: Option<BodyTee>,
    }
}

impl TeePayload {
    /// The live payload, copied through `tee`.
    pub(crate) fn new(payload: Payload, tee: BodyTee) -> Self {
        Self {
            payload,
            copy: Some(tee),
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
                if let Some(tee) = this.copy
                    && !tee.chunk(chunk)
                {
                    // Over the limit: the copy was given up (and counted) there.
                    this.copy.take();
                }
            }
            Some(Err(_)) => {
                this.copy.take();
            }
            None => {
                if let Some(tee) = this.copy.take() {
                    tee.end();
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
        live: Option<Box<Tracker>>,
    }
}

impl<B: MessageBody + 'static> ShadowResponseBody<B> {
    pub(crate) fn new(body: EitherBody<B>, live: Option<Tracker>) -> Self {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::body::BoxBody;
    use futures_util::StreamExt;
    use shadowlib::adapter::{BodySize, Runtime, ShadowTarget, TargetId};
    use shadowlib::mirror::{HeaderList, RequestHead};
    use shadowlib::{Rollout, RolloutPolicy, Version};

    use super::*;

    /// A runtime whose rollout is shadowing, and a target whose factory never finishes,
    /// so that copies stay in the queue while the test holds them.
    fn runtime(body_limit: usize) -> (Rollout, Runtime, TargetId) {
        let rollout = Rollout::builder(Version::new("t", "1"), Version::new("t", "2"))
            .policy(RolloutPolicy::default())
            .shadow(shadowlib::shadow::ShadowConfig::new().with_body_limit(body_limit))
            .shadow_only()
            .build()
            .expect("a valid configuration, in a runtime");
        let runtime = Runtime::new(&rollout);
        let target = runtime.register(Box::new(|| {
            Box::pin(async {
                std::future::pending::<()>().await;
                Err::<Box<dyn ShadowTarget>, _>("never built".to_owned())
            })
        }));
        (rollout, runtime, target)
    }

    fn tracked(runtime: &Runtime, target: TargetId, size: BodySize) -> (Tracker, Option<BodyTee>) {
        let headers = HeaderList::default();
        Tracker::start(
            runtime,
            target,
            &RequestHead::new("GET", "/r", &headers),
            size,
        )
    }

    fn teed(runtime: &Runtime, target: TargetId, chunks: &[&'static str]) -> TeePayload {
        let (_tracker, tee) = tracked(runtime, target, BodySize::AtLeast(0));
        let stream = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, PayloadError>(Bytes::from_static(c.as_bytes())))
                .collect::<Vec<_>>(),
        );
        let payload = Payload::from(Box::pin(stream) as actix_http::BoxedPayloadStream);
        TeePayload::new(payload, tee.expect("a read while shadowing"))
    }

    async fn read_all(payload: TeePayload) -> Vec<u8> {
        payload
            .map(|chunk| chunk.expect("an in-memory payload").to_vec())
            .concat()
            .await
    }

    #[actix_web::test]
    async fn a_payload_read_to_its_end_is_handed_over_whole() {
        let (rollout, runtime, target) = runtime(1024);
        let payload = teed(&runtime, target, &["ab", "cd"]);
        assert_eq!(read_all(payload).await, b"abcd");
        let counts = rollout.shadow_counts();
        assert_eq!((counts.mirrored, counts.skipped_oversize), (1, 0));
    }

    #[actix_web::test]
    async fn a_payload_over_the_limit_is_abandoned_as_it_passes_it() {
        let (rollout, runtime, target) = runtime(3);
        let mut payload = teed(&runtime, target, &["ab", "cd", "ef"]);
        assert!(payload.next().await.is_some());
        assert_eq!(rollout.shadow_counts().skipped_oversize, 0);
        assert!(payload.next().await.is_some());
        assert_eq!(
            rollout.shadow_counts().skipped_oversize,
            1,
            "given up at the chunk that crossed the limit"
        );
        assert_eq!(read_all(payload).await, b"ef", "the live handler reads on");
        assert_eq!(rollout.shadow_counts().mirrored, 0);
    }

    #[actix_web::test]
    async fn a_payload_left_unread_is_not_mirrored() {
        let (rollout, runtime, target) = runtime(1024);
        let mut payload = teed(&runtime, target, &["ab", "cd"]);
        assert!(payload.next().await.is_some());
        drop(payload);
        let counts = rollout.shadow_counts();
        assert_eq!((counts.skipped_unread_body, counts.mirrored), (1, 0));
    }

    #[actix_web::test]
    async fn an_empty_response_is_complete_at_once_and_a_full_one_as_it_ends() {
        let (rollout, runtime, target) = runtime(1024);
        let headers = HeaderList::default();
        let (mut tracker, _) = tracked(&runtime, target, BodySize::Empty);
        tracker.respond(204, &headers);
        let empty =
            ShadowResponseBody::<BoxBody>::new(EitherBody::right(BoxBody::new(())), Some(tracker));
        assert!(empty.live.is_none(), "finished without being polled");
        drop(empty);

        let (mut tracker, _) = tracked(&runtime, target, BodySize::Empty);
        tracker.respond(200, &headers);
        let body = ShadowResponseBody::new(
            EitherBody::left(Bytes::from_static(b"hello")),
            Some(tracker),
        );
        let bytes = actix_web::body::to_bytes(body)
            .await
            .expect("in-memory body");
        assert_eq!(bytes, "hello");
        // Both reads were mirrored and wait in the queue: neither was lost.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(rollout.shadow_counts().mirrored, 2);
    }
}
