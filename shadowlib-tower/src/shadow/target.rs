//! The shadow's side: the request each build gets for a copy, and its call.

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{HeaderName, HeaderValue};
use http::{Extensions, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use shadowlib::Arm;
use shadowlib::adapter::{
    HeaderPairs, RequestCopy, ResponseCapture, ShadowCall, ShadowError, ShadowReply, ShadowResult,
    ShadowTarget,
};
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::body::ShadowBody;
use super::routing;
use super::service::VERSIONS;

/// A pair of builds as the shadow runs them: the stable one (the twin) and the candidate,
/// each cloned per call as `tower::util::Oneshot` does.
pub(crate) struct TowerTarget<S, C, B> {
    stable: S,
    candidate: C,
    body: PhantomData<fn() -> B>,
}

impl<S, C, B> TowerTarget<S, C, B> {
    pub(crate) fn new(stable: S, candidate: C) -> Self {
        Self {
            stable,
            candidate,
            body: PhantomData,
        }
    }
}

impl<S, C, B, R> ShadowTarget for TowerTarget<S, C, B>
where
    S: Service<Request<ShadowBody<B>>, Response = Response<R>> + Clone + 'static,
    C: Service<Request<ShadowBody<B>>, Response = Response<R>, Error = S::Error> + Clone + 'static,
    S::Error: fmt::Display,
    B: 'static,
    R: Body<Data = Bytes> + 'static,
    R::Error: Into<BoxError>,
{
    fn call(&self, arm: Arm, copy: &RequestCopy, capture: ResponseCapture) -> ShadowCall {
        let request = shadow_request(copy, arm);
        match arm {
            Arm::Stable => Box::pin(call_build(self.stable.clone(), request, capture)),
            Arm::Candidate => Box::pin(call_build(self.candidate.clone(), request, capture)),
        }
    }
}

/// Sends the request to a build and summarizes its response.
async fn call_build<T, B, R>(
    mut build: T,
    request: Result<Request<ShadowBody<B>>, ShadowError>,
    capture: ResponseCapture,
) -> ShadowResult
where
    T: Service<Request<ShadowBody<B>>, Response = Response<R>>,
    T::Error: fmt::Display,
    R: Body<Data = Bytes>,
    R::Error: Into<BoxError>,
{
    let request = request?;
    let started = Instant::now();
    poll_fn(|cx| build.poll_ready(cx))
        .await
        .map_err(|e| ShadowError(e.to_string()))?;
    let response = build
        .call(request)
        .await
        .map_err(|e| ShadowError(e.to_string()))?;
    let latency = started.elapsed();
    let (parts, body) = response.into_parts();
    let mut summary = capture.head(parts.status.as_u16(), &HeaderPairs(&parts.headers));
    let chunks = body.into_data_stream().map_err(Into::<BoxError>::into);
    capture.read_body(&mut summary, chunks).await?;
    Ok(ShadowReply {
        response: summary,
        latency,
    })
}

/// The request a build gets for a copy: same method, target, version, the headers the
/// mirror forwarded, the body, and the live request's extensions (for the candidate,
/// without the stable router's routing state). A copy that `http` would not accept back
/// fails the call, with the reason.
fn shadow_request<B>(copy: &RequestCopy, arm: Arm) -> Result<Request<ShadowBody<B>>, ShadowError> {
    let invalid = |part: &str, reason: String| ShadowError::invalid_copy(part, reason);
    let body = ShadowBody::copied(Bytes::copy_from_slice(copy.body()));
    let mut request = Request::new(body);
    *request.method_mut() = Method::from_bytes(copy.method().as_bytes())
        .map_err(|e| invalid("method", e.to_string()))?;
    *request.uri_mut() =
        Uri::try_from(copy.target()).map_err(|e| invalid("target", e.to_string()))?;
    *request.version_mut() = copy.version().in_table(&VERSIONS);
    let headers = request.headers_mut();
    for (name, value) in copy.headers() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| invalid("header", e.to_string()))?;
        let value = HeaderValue::from_bytes(value).map_err(|e| invalid("header", e.to_string()))?;
        headers.append(name, value);
    }
    if let Some(live) = copy
        .attachment()
        .and_then(|a| a.downcast_ref::<Extensions>())
    {
        let mut extensions = live.clone();
        if arm == Arm::Candidate {
            routing::prepare_for_candidate(&mut extensions);
        }
        *request.extensions_mut() = extensions;
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use http::Version;
    use shadowlib::adapter::HttpVersion;
    use shadowlib::mirror::{HeaderList, HttpMirror, Mirror, RequestHead};

    use super::*;

    fn version_of(version: Version) -> HttpVersion {
        HttpVersion::from_table(&VERSIONS, &version)
    }

    fn copy_of(head: &RequestHead<'_>) -> RequestCopy {
        let mut copy = RequestCopy::default();
        HttpMirror::new().copy(head, &mut copy);
        copy
    }

    #[test]
    fn a_copy_becomes_the_same_request_without_hop_by_hop_headers() {
        let headers = HeaderList(vec![
            ("accept", b"application/json".as_slice()),
            ("te", b"trailers".as_slice()),
            ("x-tenant", b"a".as_slice()),
            ("x-tenant", b"b".as_slice()),
        ]);
        let head = RequestHead::new("GET", "/items", &headers)
            .with_query(Some("page=2"))
            .with_version(version_of(Version::HTTP_2));
        let request = shadow_request::<()>(&copy_of(&head), Arm::Candidate).expect("valid");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/items?page=2");
        assert_eq!(request.version(), Version::HTTP_2);
        assert!(request.headers().get("te").is_none());
        let tenants: Vec<_> = request.headers().get_all("x-tenant").iter().collect();
        assert_eq!(tenants, ["a", "b"]);
    }

    #[test]
    fn a_copy_http_would_not_accept_fails_with_the_reason() {
        let headers = HeaderList::default();
        let head = RequestHead::new("GET", "/not a target", &headers);
        let error = shadow_request::<()>(&copy_of(&head), Arm::Candidate)
            .expect_err("spaces are not allowed");
        assert!(error.0.contains("target"), "{error}");
    }

    #[test]
    fn every_version_maps_there_and_back() {
        for version in VERSIONS {
            assert_eq!(version_of(version).in_table(&VERSIONS), version);
        }
    }
}
