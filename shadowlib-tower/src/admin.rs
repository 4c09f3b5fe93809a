//! The rollout's [admin API](shadowlib::admin) as an axum [`Router`], ready to mount.
//!
//! ```
//! use axum::Router;
//! use shadowlib::admin::AdminApi;
//! use shadowlib::{Rollout, Version};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2")).build()?;
//! let api = AdminApi::builder(&rollout)
//!     .read_token("dashboard", std::env::var("ADMIN_READ_TOKEN").unwrap_or("read-0123456789abcdef".into()))
//!     .operate_token("ops", std::env::var("ADMIN_OPERATE_TOKEN").unwrap_or("operate-0123456789abcdef".into()))
//!     .build()?;
//! // Beside the application, on a port only operators reach, or nested in it.
//! let app: Router = Router::new().nest("/admin", shadowlib_tower::admin::router(api));
//! # let _ = app;
//! # Ok(()) }
//! ```

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use shadowlib::admin::{ADMIN_BODY_LIMIT, AdminApi, AdminRequest, AdminResponse};

/// A router that answers every path below where it is mounted with `api`: nest it
/// (`Router::nest("/admin", router(api))`) or serve it on a port of its own. Request
/// bodies over [`ADMIN_BODY_LIMIT`] are refused with `413` before the API sees them.
pub fn router(api: AdminApi) -> Router {
    Router::new().fallback(answer).with_state(api)
}

async fn answer(State(api): State<AdminApi>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, ADMIN_BODY_LIMIT).await else {
        return respond(AdminResponse::body_too_large());
    };
    let request = AdminRequest::new(parts.method.as_str(), parts.uri.path())
        .with_query(parts.uri.query())
        .with_authorization(parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes))
        .with_body(&body);
    respond(api.handle(&request))
}

fn respond(answer: AdminResponse) -> Response<Body> {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(AdminResponse::CONTENT_TYPE),
    );
    for (name, value) in answer.headers {
        // The core writes only valid names and values; one that is not is left out.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    response
}
