//! The rollout's [admin API](shadowlib::admin) as an actix-web [`Scope`], ready to mount.
//!
//! ```
//! use actix_web::App;
//! use shadowlib::admin::AdminApi;
//! use shadowlib::{Rollout, Version};
//!
//! # #[actix_web::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2")).build()?;
//! let api = AdminApi::builder(&rollout)
//!     .read_token("dashboard", std::env::var("ADMIN_READ_TOKEN").unwrap_or("read-0123456789abcdef".into()))
//!     .operate_token("ops", std::env::var("ADMIN_OPERATE_TOKEN").unwrap_or("operate-0123456789abcdef".into()))
//!     .build()?;
//! let app = App::new().service(shadowlib_actix::admin::scope("/admin", api));
//! # let _ = app;
//! # Ok(()) }
//! ```

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, Scope, web};
use futures_util::StreamExt;
use shadowlib::admin::{ADMIN_BODY_LIMIT, AdminApi, AdminRequest, AdminResponse};

/// A scope at `path` that answers every path below it with `api`. Request bodies over
/// [`ADMIN_BODY_LIMIT`] are refused with `413` before the API sees them.
pub fn scope(path: &str, api: AdminApi) -> Scope {
    web::scope(path).default_service(web::to(move |request, payload| {
        answer(api.clone(), request, payload)
    }))
}

async fn answer(api: AdminApi, request: HttpRequest, mut payload: web::Payload) -> HttpResponse {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() <= ADMIN_BODY_LIMIT => {
                body.extend_from_slice(&chunk)
            }
            Ok(_) => return respond(AdminResponse::body_too_large()),
            Err(_) => return respond(AdminResponse::body_too_large()),
        }
    }
    // The part of the path below the scope.
    let path = request.match_info().unprocessed();
    let path = if path.is_empty() { "/" } else { path };
    let query = Some(request.query_string()).filter(|q| !q.is_empty());
    let admin_request = AdminRequest::new(request.method().as_str(), path)
        .with_query(query)
        .with_authorization(request.headers().get(AUTHORIZATION).map(|v| v.as_bytes()))
        .with_body(&body);
    respond(api.handle(&admin_request))
}

fn respond(answer: AdminResponse) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.insert_header((CONTENT_TYPE, AdminResponse::CONTENT_TYPE));
    for (name, value) in answer.headers {
        response.append_header((name, value));
    }
    response.body(answer.body)
}
