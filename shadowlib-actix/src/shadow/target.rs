//! The shadow's side: the stable and candidate `App`s' own instances on the rollout's
//! shadow thread, and the request each gets for a copy.

use std::future::poll_fn;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_http::Request;
use actix_service::boxed::{self, BoxService};
use actix_service::{IntoServiceFactory, ServiceExt, ServiceFactory};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{AppConfig, Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, Uri, Version};
use actix_web::{App, Error};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use shadowlib::Arm;
use shadowlib::adapter::{
    HeaderPairs, RequestCopy, ResponseCapture, ShadowCall, ShadowError, ShadowReply, ShadowResult,
    ShadowTarget,
};
use tokio::time::Instant;

/// One running instance of an `App`, its response body boxed so that every build shares
/// one type.
pub(crate) type AppService = BoxService<Request, ServiceResponse<BoxBody>, Error>;

/// Builds an instance of an `App` on the calling thread: the candidate once per actix
/// worker (for canary traffic), and both builds once on the shadow thread.
pub(crate) type BuildApp =
    Arc<dyn Fn() -> LocalBoxFuture<'static, Result<AppService, ()>> + Send + Sync>;

/// Turns the user's `App` factory into a [`BuildApp`].
pub(crate) fn app_builder<F, T, B>(factory: F) -> BuildApp
where
    F: Fn() -> App<T> + Send + Sync + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    Arc::new(move || {
        let app = factory().into_factory();
        // The middleware builds the app itself, outside the server's own app setup, so it
        // gets actix-web's default connection config (host `localhost:8080`, not secure).
        // It shows only where a build makes URLs or reads connection info for a request
        // without a `Host` header.
        let service = app.new_service(AppConfig::default());
        Box::pin(async move {
            let service = service.await?;
            Ok(boxed::service(
                service.map(ServiceResponse::map_into_boxed_body),
            ))
        })
    })
}

/// Both builds as the shadow runs them: the shadow thread's own instance of each `App`
/// (the stable one is the *twin*).
pub(crate) struct ActixTarget {
    stable: Rc<AppService>,
    candidate: Rc<AppService>,
}

impl ActixTarget {
    pub(crate) fn new(stable: AppService, candidate: AppService) -> Self {
        Self {
            stable: Rc::new(stable),
            candidate: Rc::new(candidate),
        }
    }
}

impl ShadowTarget for ActixTarget {
    fn call(&self, arm: Arm, copy: &RequestCopy, capture: ResponseCapture) -> ShadowCall {
        let request = shadow_request(copy);
        let build = Rc::clone(match arm {
            Arm::Stable => &self.stable,
            Arm::Candidate => &self.candidate,
        });
        Box::pin(async move { call_build(&build, request?, capture).await })
    }
}

/// The request a build gets for a copy: same method, target, version, peer address, the
/// headers the mirror forwarded, the body. Connection flags and extensions were never
/// copied: they belong to the live connection. A copy that actix-web would not accept
/// back fails the copy, with the reason.
fn shadow_request(copy: &RequestCopy) -> Result<Request, ShadowError> {
    let invalid = |part: &str, reason: String| ShadowError::invalid_copy(part, reason);
    let mut request = Request::with_payload(Payload::from(Bytes::copy_from_slice(copy.body())));
    let head = request.head_mut();
    head.method = Method::from_bytes(copy.method().as_bytes())
        .map_err(|e| invalid("method", e.to_string()))?;
    head.uri = Uri::try_from(copy.target()).map_err(|e| invalid("target", e.to_string()))?;
    head.version = copy.version().in_table(&VERSIONS);
    head.peer_addr = copy.peer_addr();
    for (name, value) in copy.headers() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| invalid("header", e.to_string()))?;
        let value = HeaderValue::from_bytes(value).map_err(|e| invalid("header", e.to_string()))?;
        head.headers.append(name, value);
    }
    Ok(request)
}

/// actix-web's `http` versions in the order [`HttpVersion::from_table`] maps them.
pub(crate) const VERSIONS: [Version; 5] = [
    Version::HTTP_09,
    Version::HTTP_10,
    Version::HTTP_11,
    Version::HTTP_2,
    Version::HTTP_3,
];

/// Sends the copy to a build and summarizes the response. Runs inside the shadow worker,
/// which applies the timeout, catches panics and marks the task as the shadow.
///
/// An error value from the build is summarized as the response actix-web would have sent
/// for it, as the live side records it: in actix-web an error is a response.
async fn call_build(
    build: &AppService,
    request: Request,
    capture: ResponseCapture,
) -> ShadowResult {
    let started = Instant::now();
    poll_fn(|cx| build.poll_ready(cx))
        .await
        .map_err(|e| ShadowError(e.to_string()))?;
    let response = match build.call(request).await {
        Ok(response) => response.into_parts().1,
        Err(error) => error.error_response(),
    };
    let latency = started.elapsed();
    let mut summary = capture.head(response.status().as_u16(), &HeaderPairs(response.headers()));
    let body = response.into_body();
    // actix-web never polls a body it knows is empty; neither does the shadow.
    if !matches!(body.size(), BodySize::None | BodySize::Sized(0)) {
        let mut body = pin!(body);
        let chunks = futures_util::stream::poll_fn(|cx| body.as_mut().poll_next(cx));
        capture.read_body(&mut summary, chunks).await?;
    }
    Ok(ShadowReply {
        response: summary,
        latency,
    })
}

#[cfg(test)]
mod tests {
    use shadowlib::adapter::HttpVersion;
    use shadowlib::mirror::{HeaderList, HeaderPolicy, HttpMirror, Mirror, RequestHead};

    use super::*;

    #[test]
    fn a_copy_becomes_the_live_request_without_hop_by_hop_or_redacted_headers() {
        let headers = HeaderList(vec![
            ("connection", b"keep-alive, x-trace".as_slice()),
            ("x-trace", b"abc".as_slice()),
            ("transfer-encoding", b"chunked".as_slice()),
            ("authorization", b"Bearer secret".as_slice()),
            ("cookie", b"session=s3cr3t".as_slice()),
            ("accept", b"application/json".as_slice()),
        ]);
        let policy = HeaderPolicy::new()
            .redact("authorization")
            .and_then(|p| p.redact("cookie"))
            .expect("valid names")
            .replace_with("redacted");
        let mut copy = RequestCopy::default();
        let head = RequestHead::new("GET", "/items", &headers)
            .with_query(Some("page=2"))
            .with_peer(Some(([10, 0, 0, 1], 4242).into()));
        HttpMirror::new()
            .with_headers(policy)
            .copy(&head, &mut copy);
        let request = shadow_request(&copy).expect("a valid copy");
        let head = request.head();
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/items?page=2");
        assert_eq!(head.peer_addr, Some(([10, 0, 0, 1], 4242).into()));
        let mut names: Vec<&str> = head.headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "authorization", "cookie"]);
        assert_eq!(
            head.headers.get("authorization").map(HeaderValue::as_bytes),
            Some(b"redacted".as_slice())
        );
    }

    #[test]
    fn every_version_maps_there_and_back() {
        for version in VERSIONS {
            assert_eq!(
                HttpVersion::from_table(&VERSIONS, &version).in_table(&VERSIONS),
                version
            );
        }
    }

    #[test]
    fn a_copy_actix_would_not_accept_fails_with_the_reason() {
        let headers = HeaderList::default();
        let mut copy = RequestCopy::default();
        HttpMirror::new().copy(
            &RequestHead::new("GET", "/not a target", &headers),
            &mut copy,
        );
        let error = shadow_request(&copy).expect_err("spaces are not allowed");
        assert!(error.0.contains("target"), "{error}");
    }
}
