//! What the candidate must not inherit from the stable build's routing.
//!
//! With axum's `Router::layer` or `route_layer`, this middleware runs *after* the stable
//! `Router` has routed the request, so the request carries the stable router's routing
//! state: its `MatchedPath` and its path parameters. The candidate is a whole `Router`
//! that routes the request again, and axum's router adds to what it finds there (it
//! appends its matched path to the previous one, as for a nested router, and its path
//! parameters to the previous ones), so a candidate handed the stable router's state
//! would extract `Path<u64>` from two `id`s and fail. Before the candidate sees a
//! request (live, or as a shadow copy), that state is taken off again: everything else
//! the request carries, such as what middleware outside this one put there, stays.
//!
//! axum keeps its path parameters in a private type, so they are reset the only way its
//! public API allows: with the (empty) parameters a router leaves on a request it routed
//! to a route without any, which replace them.

use http::Extensions;

/// Takes the stable router's routing state off a request bound for the candidate.
#[cfg(feature = "axum")]
pub(crate) fn prepare_for_candidate(extensions: &mut Extensions) {
    use axum::extract::MatchedPath;

    if extensions.remove::<MatchedPath>().is_none() {
        // Not routed by an axum router before reaching this layer: nothing to undo.
        return;
    }
    if let Some(unrouted) = unrouted_state() {
        extensions.extend(unrouted.clone());
    }
}

/// Without axum there is no routing state to undo.
#[cfg(not(feature = "axum"))]
pub(crate) fn prepare_for_candidate(_extensions: &mut Extensions) {}

/// The routing state axum leaves on a request routed to a route without parameters,
/// `MatchedPath` and `OriginalUri` taken off: its empty path parameters.
#[cfg(feature = "axum")]
fn unrouted_state() -> Option<&'static Extensions> {
    use std::future::Future;
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};
    use std::task::{Context, Waker};

    use axum::extract::{MatchedPath, OriginalUri, Request};
    use axum::routing::get;
    use tower::Service;

    static UNROUTED: OnceLock<Option<Extensions>> = OnceLock::new();
    UNROUTED
        .get_or_init(|| {
            let seen = Arc::new(Mutex::new(None));
            let mut router = axum::Router::new().route(
                "/",
                get({
                    let seen = Arc::clone(&seen);
                    move |request: Request| {
                        *seen.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(request.extensions().clone());
                        std::future::ready(())
                    }
                }),
            );
            let request = Request::new(axum::body::Body::empty());
            // The handler is ready at once, so one poll routes the request through it.
            let mut routed = std::pin::pin!(router.call(request));
            let answered = routed
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
            if answered.is_pending() {
                tracing::warn!("axum's router did not answer at once; path parameters kept");
                return None;
            }
            let mut state = seen.lock().unwrap_or_else(PoisonError::into_inner).take()?;
            state.remove::<MatchedPath>();
            state.remove::<OriginalUri>();
            Some(state)
        })
        .as_ref()
}

#[cfg(all(test, feature = "axum"))]
mod tests {
    use axum::extract::{Path, Request};
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// The extensions a request has once the stable router has routed it to `route`.
    async fn routed_by_stable(route: &str, uri: &str) -> Extensions {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let router = axum::Router::new().route(
            route,
            get({
                let seen = seen.clone();
                move |request: Request| async move {
                    *seen.lock().expect("not poisoned") = Some(request.extensions().clone());
                }
            }),
        );
        let request = Request::get(uri)
            .body(axum::body::Body::empty())
            .expect("valid");
        router.oneshot(request).await.expect("infallible");
        let extensions = seen.lock().expect("not poisoned").take();
        extensions.expect("the handler ran")
    }

    /// What the candidate answers to `GET /items/7` carrying `extensions`.
    async fn candidate_answer(extensions: Extensions) -> (u16, String) {
        let candidate = axum::Router::new().route(
            "/items/{id}",
            get(|Path(id): Path<u64>, request: Request| async move {
                let kept = request.extensions().get::<&str>().copied();
                format!("{id} {kept:?}")
            }),
        );
        let mut request = Request::get("/items/7")
            .body(axum::body::Body::empty())
            .expect("valid");
        *request.extensions_mut() = extensions;
        let response = candidate.oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_candidate_router_sees_its_own_path_parameters_only() {
        let mut extensions = routed_by_stable("/items/{id}", "/items/7").await;
        extensions.insert("set by middleware outside");
        let as_stable_left_them = extensions.clone();
        prepare_for_candidate(&mut extensions);
        assert_eq!(
            candidate_answer(extensions).await,
            (200, r#"7 Some("set by middleware outside")"#.to_owned())
        );
        // What this guards against: the stable router's parameters added to the
        // candidate's own, two `id`s for one `Path<u64>`.
        let (status, body) = candidate_answer(as_stable_left_them).await;
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("Wrong number of path arguments"), "{body}");
    }
}
