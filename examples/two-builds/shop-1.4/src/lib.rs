//! The shop's request handling, v1.4.0: `GET /items/{id}` answers an item of the catalogue
//! as JSON, looked up by a scan of the catalogue after a database round trip.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;

/// This build's version, as its package says.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Items in the catalogue: ids `0..ITEMS`.
const ITEMS: u32 = 500;

/// What a read costs the database.
const DATABASE_ROUND_TRIP: Duration = Duration::from_millis(2);

/// The shop's routes.
pub fn router() -> Router {
    Router::new().route("/items/{id}", get(item))
}

async fn item(Path(id): Path<u32>) -> Result<String, StatusCode> {
    tokio::time::sleep(DATABASE_ROUND_TRIP).await;
    let price_cents = (0..ITEMS)
        .find(|&candidate| candidate == id)
        .map(|found| 100 + found * 37 % 4_900)
        .ok_or(StatusCode::NOT_FOUND)?;
    Ok(format!(
        r#"{{"id":{id},"name":"item {id}","price_cents":{price_cents}}}"#
    ))
}
