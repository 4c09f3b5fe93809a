//! The shop's request handling, v1.5.0: `GET /items/{id}` answers an item of the catalogue
//! as JSON, as v1.4.0 did, computed without the scan, and with a cache of rendered items
//! in front of the database that the configuration sizes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;

/// This build's version, as its package says.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Items in the catalogue: ids `0..ITEMS`.
const ITEMS: u32 = 500;

/// What a read costs the database.
const DATABASE_ROUND_TRIP: Duration = Duration::from_millis(2);

/// How the shop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Rendered items kept in memory; 0 turns the cache off, as in v1.4.0.
    pub cache_entries: usize,
}

/// The shop's routes, with the default configuration (no cache).
pub fn router() -> Router {
    router_with(Config::default())
}

/// The shop's routes, configured. Each call has a cache of its own.
pub fn router_with(config: Config) -> Router {
    let shop = Shop {
        config,
        cache: Arc::default(),
    };
    Router::new()
        .route("/items/{id}", get(item))
        .with_state(shop)
}

#[derive(Clone)]
struct Shop {
    config: Config,
    cache: Arc<Mutex<HashMap<u32, String>>>,
}

impl Shop {
    fn cached(&self, id: u32) -> Option<String> {
        // The cache holds only finished strings: one left by a panicking thread is whole.
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&id).cloned()
    }

    fn keep(&self, id: u32, rendered: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() < self.config.cache_entries {
            cache.insert(id, rendered.to_owned());
        }
    }
}

async fn item(State(shop): State<Shop>, Path(id): Path<u32>) -> Result<String, StatusCode> {
    if let Some(rendered) = shop.cached(id) {
        return Ok(rendered);
    }
    tokio::time::sleep(DATABASE_ROUND_TRIP).await;
    if id >= ITEMS {
        return Err(StatusCode::NOT_FOUND);
    }
    let price_cents = 100 + id * 37 % 4_900;
    let rendered = format!(r#"{{"id":{id},"name":"item {id}","price_cents":{price_cents}}}"#);
    shop.keep(id, &rendered);
    Ok(rendered)
}
