//! The admin API, framework-neutral: authentication, routes and answers. The adapters
//! mount it (`shadowlib_tower::admin::router`, `shadowlib_actix::admin::scope`); this
//! module has no HTTP types, so both behave exactly alike.
//!
//! Every route needs a bearer token (`Authorization: Bearer <token>`), compared in
//! constant time with every configured one. There are two kinds: a **read** token sees
//! the status, the evidence and the events; an **operate** token can also pause, resume,
//! promote and abort. A missing or unknown token, or a read token on a write route, is
//! `401` and is logged without the token. Each command's event records the name of the
//! token that gave it. There is no default token: [`AdminApiBuilder::build`] without one
//! is [`AdminError::NoToken`].
//!
//! | method | path | access | answer |
//! |---|---|---|---|
//! | `GET` | `/status` | read | [`RolloutStatus`](crate::RolloutStatus), shadow and override counts |
//! | `GET` | `/evidence` | read | the [`Evidence`](crate::Evidence) so far |
//! | `GET` | `/events?since=N` | read | the events after sequence `N` (all by default) |
//! | `POST` | `/pause`, `/resume`, `/promote`, `/abort` | operate | the transition, or `409` |
//! | `GET` | what [`AdminApiBuilder::read_route`] adds | read | its JSON |
//!
//! Commands take a JSON body `{"reason": "..."}` (required, at most 1,000 characters).
//! Every answer is JSON, passed through the rollout's [`Redaction`] with every admin
//! token added as a secret, so no credential is ever in one.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use thiserror::Error;

use crate::mirror::redact::Redaction;
use crate::rollout::{Command, Rollout};

/// The largest request body the API reads, in bytes: a command's reason needs far less.
pub const ADMIN_BODY_LIMIT: usize = 8 * 1024;

/// The shortest token accepted: 16 bytes (128 bits) is the least that is not guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The longest reason a command may give, in characters.
pub const MAX_REASON_LEN: usize = 1000;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// See the status, the evidence, the events, and every other read route.
    Read,
    /// Read, and give commands.
    Operate,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Operate => "operate",
        })
    }
}

/// An admin API that cannot be built, naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No token was configured: the API has no default one, and would let nobody in.
    #[error(
        "the admin API needs at least one token (read_token or operate_token); it has no default"
    )]
    NoToken,
    /// A token is shorter than [`MIN_TOKEN_LEN`] bytes.
    #[error("admin token `{name}` has {len} bytes; at least {MIN_TOKEN_LEN} are needed")]
    ShortToken {
        /// The token's name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// A token's name is empty, longer than 64, or not letters, digits, `.`, `_`, `-`.
    #[error("admin token name `{name}` must be 1 to 64 letters, digits, `.`, `_` or `-`")]
    BadName {
        /// The name given.
        name: String,
    },
    /// Two tokens have one name, so the events could not tell who gave a command.
    #[error("two admin tokens are named `{name}`")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// Two tokens have one value, so one of them would not be what it says.
    #[error("admin tokens `{first}` and `{second}` have the same value")]
    DuplicateToken {
        /// The first token's name.
        first: String,
        /// The second's.
        second: String,
    },
    /// A read route's path is not `/` and letters, digits, `-`, `_`, `/`, or is taken.
    #[error("read route `{path}`: {why}")]
    BadRoute {
        /// The path given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// One request to the API, as an adapter sees it: everything borrowed.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AdminRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The path below where the API is mounted (`/status`).
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<&'a [u8]>,
    /// The body (adapters read at most [`ADMIN_BODY_LIMIT`] bytes of it).
    pub body: &'a [u8],
}

impl<'a> AdminRequest<'a> {
    /// A request without query, credentials or body.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            query: None,
            authorization: None,
            body: &[],
        }
    }

    /// With this query string.
    pub fn with_query(mut self, query: Option<&'a str>) -> Self {
        self.query = query;
        self
    }

    /// With this `Authorization` header value.
    pub fn with_authorization(mut self, value: Option<&'a [u8]>) -> Self {
        self.authorization = value;
        self
    }

    /// With this body.
    pub fn with_body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }
}

/// The API's answer: a status code, headers, and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Headers besides `content-type`.
    pub headers: Vec<(&'static str, String)>,
    /// The body, JSON.
    pub body: Vec<u8>,
}

impl AdminResponse {
    /// The content type of every answer.
    pub const CONTENT_TYPE: &'static str = "application/json";

    fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            // Status and evidence change from one look to the next, and no cache should
            // keep what a token was needed to see.
            headers: vec![("cache-control", "no-store".to_owned())],
            // A `Value` always serializes.
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    fn error(status: u16, message: impl fmt::Display) -> Self {
        Self::json(status, &json!({ "error": message.to_string() }))
    }

    /// A `413` for a body over [`ADMIN_BODY_LIMIT`]: what adapters answer without asking
    /// the API, since they stop reading at the limit.
    pub fn body_too_large() -> Self {
        Self::error(
            413,
            format!("the body is over the admin API's limit of {ADMIN_BODY_LIMIT} bytes"),
        )
    }
}

/// A read route of your own: what it answers, from the rollout.
type ReadHandler = Arc<dyn Fn(&Rollout) -> Value + Send + Sync>;

struct Token {
    name: String,
    digest: [u8; 32],
    access: Access,
}

/// Builds an [`AdminApi`]: see [`AdminApi::builder`].
#[must_use = "a builder does nothing until it is built"]
pub struct AdminApiBuilder {
    rollout: Rollout,
    tokens: Vec<(String, Vec<u8>, Access)>,
    routes: Vec<(String, ReadHandler)>,
}

impl fmt::Debug for AdminApiBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<(&str, Access)> = self.tokens.iter().map(|t| (t.0.as_str(), t.2)).collect();
        f.debug_struct("AdminApiBuilder")
            .field("tokens", &names)
            .finish_non_exhaustive()
    }
}

impl AdminApiBuilder {
    /// A token named `name` (recorded in logs and events; never the value) that may read.
    pub fn read_token(self, name: &str, token: impl AsRef<[u8]>) -> Self {
        self.token(name, token, Access::Read)
    }

    /// A token named `name` that may read and give commands.
    pub fn operate_token(self, name: &str, token: impl AsRef<[u8]>) -> Self {
        self.token(name, token, Access::Operate)
    }

    fn token(mut self, name: &str, token: impl AsRef<[u8]>, access: Access) -> Self {
        self.tokens
            .push((name.to_owned(), token.as_ref().to_vec(), access));
        self
    }

    /// A further `GET` route at `path` (`/decisions`), behind the same read tokens, that
    /// answers `handler`'s JSON for the rollout (redacted like every answer).
    pub fn read_route(
        mut self,
        path: &str,
        handler: impl Fn(&Rollout) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.routes.push((path.to_owned(), Arc::new(handler)));
        self
    }

    /// The API, or what is wrong with its tokens and routes.
    pub fn build(self) -> Result<AdminApi, AdminError> {
        if self.tokens.is_empty() {
            return Err(AdminError::NoToken);
        }
        let mut tokens: Vec<Token> = Vec::with_capacity(self.tokens.len());
        let mut redaction = self.rollout.redaction().clone();
        for (name, value, access) in self.tokens {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid_name {
                return Err(AdminError::BadName { name });
            }
            if value.len() < MIN_TOKEN_LEN {
                return Err(AdminError::ShortToken {
                    name,
                    len: value.len(),
                });
            }
            let digest: [u8; 32] = Sha256::digest(&value).into();
            for other in &tokens {
                if other.name == name {
                    return Err(AdminError::DuplicateName { name });
                }
                if other.digest == digest {
                    return Err(AdminError::DuplicateToken {
                        first: other.name.clone(),
                        second: name,
                    });
                }
            }
            redaction = redaction.secret(value);
            tokens.push(Token {
                name,
                digest,
                access,
            });
        }
        let mut routes: Vec<(String, ReadHandler)> = Vec::new();
        for (path, handler) in self.routes {
            let why = if !path.starts_with('/') || path.len() < 2 {
                Some("a path starts with `/` and names something")
            } else if !path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c))
            {
                Some("only letters, digits, `-`, `_` and `/`")
            } else if BUILT_IN.contains(&path.as_str()) || routes.iter().any(|(p, _)| *p == path) {
                Some("the path is taken")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(AdminError::BadRoute { path, why });
            }
            routes.push((path, handler));
        }
        Ok(AdminApi {
            inner: Arc::new(Inner {
                rollout: self.rollout,
                tokens,
                routes,
                redaction,
            }),
        })
    }
}

/// The paths the API answers itself.
const BUILT_IN: [&str; 7] = [
    "/status",
    "/evidence",
    "/events",
    "/pause",
    "/resume",
    "/promote",
    "/abort",
];

/// The admin API of one rollout, ready for an adapter to mount. Cheap to clone.
///
/// ```
/// use shadowlib::{Rollout, Version};
/// use shadowlib::admin::{AdminApi, AdminRequest};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2")).build()?;
/// let api = AdminApi::builder(&rollout)
///     .read_token("dashboard", "read-token-0123456789")
///     .operate_token("ops-alice", "operate-token-0123456789")
///     .build()?;
///
/// let status = api.handle(&AdminRequest::new("GET", "/status"));
/// assert_eq!(status.status, 401, "no token");
///
/// let pause = AdminRequest::new("POST", "/pause")
///     .with_authorization(Some(b"Bearer read-token-0123456789"))
///     .with_body(br#"{"reason": "a page"}"#);
/// assert_eq!(api.handle(&pause).status, 401, "a read token cannot pause");
///
/// let pause = pause.with_authorization(Some(b"Bearer operate-token-0123456789"));
/// assert_eq!(api.handle(&pause).status, 200);
/// let event = rollout.handle().history().pop().expect("the pause");
/// assert_eq!(event.decision.by.as_deref(), Some("ops-alice"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AdminApi {
    inner: Arc<Inner>,
}

struct Inner {
    rollout: Rollout,
    tokens: Vec<Token>,
    routes: Vec<(String, ReadHandler)>,
    /// The rollout's, with every token's value added as a secret.
    redaction: Redaction,
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<(&str, Access)> = self
            .inner
            .tokens
            .iter()
            .map(|t| (t.name.as_str(), t.access))
            .collect();
        f.debug_struct("AdminApi")
            .field("tokens", &names)
            .finish_non_exhaustive()
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Missing,
    Malformed,
    Unknown,
    ReadOnly,
}

impl Refused {
    fn message(self) -> &'static str {
        match self {
            Refused::Missing => "no bearer token",
            Refused::Malformed => "the Authorization header is not `Bearer <token>`",
            Refused::Unknown => "the token is not one of this API's",
            Refused::ReadOnly => "the token may read, not give commands",
        }
    }
}

/// The body of a command.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    reason: String,
}

impl AdminApi {
    /// A builder for the admin API of `rollout`, with no token yet.
    pub fn builder(rollout: &Rollout) -> AdminApiBuilder {
        AdminApiBuilder {
            rollout: rollout.clone(),
            tokens: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Answers one request.
    pub fn handle(&self, request: &AdminRequest<'_>) -> AdminResponse {
        let route = Route::of(request.method, request.path, &self.inner.routes);
        let needs = match route {
            Route::Command(_) => Access::Operate,
            _ => Access::Read,
        };
        let name = match self.authenticate(request.authorization, needs) {
            Ok(name) => name,
            Err((refused, known)) => {
                // The token's name when it is a known one; never its value.
                tracing::warn!(
                    method = request.method,
                    path = request.path,
                    token = known.unwrap_or("-"),
                    why = refused.message(),
                    "admin API refused a request"
                );
                let error = if refused == Refused::ReadOnly {
                    "insufficient_scope"
                } else {
                    "invalid_token"
                };
                let mut response = AdminResponse::error(401, refused.message());
                response.headers.push((
                    "www-authenticate",
                    format!("Bearer realm=\"shadowlib-admin\", error=\"{error}\""),
                ));
                return response;
            }
        };
        let rollout = &self.inner.rollout;
        let mut response = match route {
            Route::Status => AdminResponse::json(200, &status(rollout)),
            Route::Evidence => AdminResponse::json(200, &to_value(&rollout.evidence())),
            Route::Events => match since(request.query) {
                Ok(since) => {
                    let events: Vec<_> = rollout
                        .handle()
                        .history()
                        .into_iter()
                        .filter(|e| e.sequence > since)
                        .collect();
                    AdminResponse::json(200, &to_value(&events))
                }
                Err(why) => AdminResponse::error(400, why),
            },
            Route::Custom(handler) => AdminResponse::json(200, &handler(rollout)),
            Route::Command(command) => self.command(command, name, request.body),
            Route::WrongMethod(allowed) => {
                let mut response = AdminResponse::error(405, "method not allowed");
                response.headers.push(("allow", allowed.to_owned()));
                response
            }
            Route::NotFound => AdminResponse::error(404, "no such admin route"),
        };
        self.redact(&mut response);
        response
    }

    /// The name of the token presented, if it is one of ours with `needs`. Every token is
    /// compared, in constant time, whatever matched before.
    fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        needs: Access,
    ) -> Result<&str, (Refused, Option<&str>)> {
        let value = authorization.ok_or((Refused::Missing, None))?;
        let value = value.trim_ascii();
        let token = match value.iter().position(|b| *b == b' ') {
            Some(space) if value[..space].eq_ignore_ascii_case(b"bearer") => {
                value[space..].trim_ascii()
            }
            _ => return Err((Refused::Malformed, None)),
        };
        let presented: [u8; 32] = Sha256::digest(token).into();
        // Index + 1 of the match, 0 for none, chosen without a branch on the comparison.
        let mut found = 0u32;
        for (i, known) in self.inner.tokens.iter().enumerate() {
            let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let equal = known.digest.ct_eq(&presented);
            found = u32::conditional_select(&found, &index, equal);
        }
        let token = found
            .checked_sub(1)
            .and_then(|i| self.inner.tokens.get(i as usize))
            .ok_or((Refused::Unknown, None))?;
        if token.access < needs {
            return Err((Refused::ReadOnly, Some(&token.name)));
        }
        Ok(&token.name)
    }

    fn command(&self, command: Command, by: &str, body: &[u8]) -> AdminResponse {
        let body: CommandBody = match serde_json::from_slice(body) {
            Ok(body) => body,
            Err(_) => {
                return AdminResponse::error(
                    400,
                    "a command's body is JSON: {\"reason\": \"why\"}",
                );
            }
        };
        let reason = body.reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_LEN {
            return AdminResponse::error(
                400,
                format!("a command needs a reason of 1 to {MAX_REASON_LEN} characters"),
            );
        }
        // A token pasted into a reason must not become part of the record.
        let reason = self.inner.redaction.redact_text(reason);
        match self.inner.rollout.handle().command(command, by, &reason) {
            Ok(transition) => {
                tracing::info!(%command, token = by, "admin API command carried out");
                AdminResponse::json(
                    200,
                    &json!({ "command": command, "transition": transition }),
                )
            }
            Err(refused) => AdminResponse::error(409, refused),
        }
    }

    fn redact(&self, response: &mut AdminResponse) {
        let Ok(mut value) = serde_json::from_slice::<Value>(&response.body) else {
            return;
        };
        self.inner.redaction.redact_json(&mut value);
        response.body = serde_json::to_vec(&value).unwrap_or_default();
    }
}

/// Which route a request is for.
enum Route<'r> {
    Status,
    Evidence,
    Events,
    Command(Command),
    Custom(&'r ReadHandler),
    WrongMethod(&'static str),
    NotFound,
}

impl<'r> Route<'r> {
    fn of(method: &str, path: &str, routes: &'r [(String, ReadHandler)]) -> Self {
        let path = match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => path,
        };
        let read = |route| {
            if method == "GET" || method == "HEAD" {
                route
            } else {
                Route::WrongMethod("GET")
            }
        };
        match path {
            "/status" => read(Route::Status),
            "/evidence" => read(Route::Evidence),
            "/events" => read(Route::Events),
            _ => {
                if let Some(command) = path
                    .strip_prefix('/')
                    .and_then(|name| name.parse::<Command>().ok())
                {
                    return if method == "POST" {
                        Route::Command(command)
                    } else {
                        Route::WrongMethod("POST")
                    };
                }
                match routes.iter().find(|(p, _)| p == path) {
                    Some((_, handler)) => read(Route::Custom(handler)),
                    None => Route::NotFound,
                }
            }
        }
    }
}

fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

fn status(rollout: &Rollout) -> Value {
    #[cfg_attr(not(feature = "persist"), expect(unused_mut))]
    let mut status = json!({
        "status": to_value(&rollout.status()),
        "shadow": to_value(&rollout.shadow_counts()),
        "override": to_value(&rollout.override_counts()),
    });
    #[cfg(feature = "persist")]
    if let Some(map) = status.as_object_mut() {
        map.insert("store".to_owned(), to_value(&rollout.recovery()));
        map.insert(
            "store_failures".to_owned(),
            Value::from(rollout.store_failures()),
        );
    }
    status
}

/// `since=N` from the query, 0 without one.
fn since(query: Option<&str>) -> Result<u64, &'static str> {
    let Some(query) = query else { return Ok(0) };
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("since=") {
            return value
                .parse()
                .map_err(|_| "`since` is an event sequence number");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Phase, Version};

    const READ: &str = "read-token-0123456789";
    const OPERATE: &str = "operate-token-0123456789";

    fn api() -> (Rollout, AdminApi) {
        let (rollout, _driver) = Rollout::builder(Version::new("s", "1"), Version::new("s", "2"))
            .without_process_sampling()
            .build_driven()
            .expect("valid");
        let api = AdminApi::builder(&rollout)
            .read_token("dash", READ)
            .operate_token("ops", OPERATE)
            .read_route("/phase", |rollout| json!(rollout.phase().to_string()))
            .build()
            .expect("valid");
        (rollout, api)
    }

    fn call(
        api: &AdminApi,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let header = token.map(|t| format!("Bearer {t}"));
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let request = AdminRequest::new(method, path)
            .with_query(query)
            .with_authorization(header.as_deref().map(str::as_bytes))
            .with_body(body.as_bytes());
        let response = api.handle(&request);
        (
            response.status,
            String::from_utf8_lossy(&response.body).into_owned(),
        )
    }

    #[test]
    fn no_token_is_a_typed_error_and_bad_tokens_are_refused() {
        let (rollout, _driver) = Rollout::builder(Version::new("s", "1"), Version::new("s", "2"))
            .build_driven()
            .expect("valid");
        assert_eq!(
            AdminApi::builder(&rollout).build().err(),
            Some(AdminError::NoToken)
        );
        let short = AdminApi::builder(&rollout).read_token("a", "short").build();
        assert!(matches!(short, Err(AdminError::ShortToken { len: 5, .. })));
        let same = AdminApi::builder(&rollout)
            .read_token("a", READ)
            .operate_token("b", READ)
            .build();
        assert!(matches!(same, Err(AdminError::DuplicateToken { .. })));
        let named = AdminApi::builder(&rollout).read_token("a b", READ).build();
        assert!(matches!(named, Err(AdminError::BadName { .. })));
        let taken = AdminApi::builder(&rollout)
            .read_token("a", READ)
            .read_route("/status", |_| Value::Null)
            .build();
        assert!(matches!(taken, Err(AdminError::BadRoute { .. })));
    }

    #[test]
    fn every_route_needs_a_token_and_commands_an_operate_one() {
        let (rollout, api) = api();
        for path in ["/status", "/evidence", "/events", "/phase", "/nowhere"] {
            assert_eq!(call(&api, "GET", path, None, "").0, 401, "{path}");
            assert_eq!(
                call(&api, "GET", path, Some("wrong-token-0123456789"), "").0,
                401
            );
        }
        assert_eq!(call(&api, "GET", "/status", Some(READ), "").0, 200);
        assert_eq!(call(&api, "GET", "/status", Some(OPERATE), "").0, 200);
        assert_eq!(call(&api, "GET", "/nowhere", Some(READ), "").0, 404);
        let (code, body) = call(&api, "GET", "/phase", Some(READ), "");
        assert_eq!((code, body.as_str()), (200, "\"shadowing\""));
        let reason = r#"{"reason": "test"}"#;
        for command in Command::ALL {
            let path = format!("/{command}");
            assert_eq!(
                call(&api, "POST", &path, Some(READ), reason).0,
                401,
                "{path}"
            );
            assert_eq!(
                call(&api, "GET", &path, Some(OPERATE), reason).0,
                405,
                "{path}"
            );
        }
        assert_eq!(rollout.phase(), Phase::Shadowing, "nothing was carried out");
        let mut scheme = AdminRequest::new("GET", "/status");
        scheme.authorization = Some(b"Basic cmVhZA==");
        assert_eq!(api.handle(&scheme).status, 401);
    }

    #[test]
    fn commands_record_the_token_name_and_scrub_tokens_from_reasons() {
        let (rollout, api) = api();
        assert_eq!(call(&api, "POST", "/pause", Some(OPERATE), "{}").0, 400);
        assert_eq!(
            call(&api, "POST", "/pause", Some(OPERATE), r#"{"reason": " "}"#).0,
            400
        );
        let leaky = format!(r#"{{"reason": "paused with {OPERATE}"}}"#);
        let (code, body) = call(&api, "POST", "/pause", Some(OPERATE), &leaky);
        assert_eq!(code, 200, "{body}");
        let event = rollout.handle().history().pop().expect("the pause");
        assert_eq!(event.decision.by.as_deref(), Some("ops"));
        let text = event.decision.to_string();
        assert!(!text.contains(OPERATE), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
        // Refused by the state machine: a conflict, not a success.
        assert_eq!(
            call(
                &api,
                "POST",
                "/pause",
                Some(OPERATE),
                r#"{"reason": "again"}"#
            )
            .0,
            409
        );
        let (code, events) = call(&api, "GET", "/events", Some(READ), "");
        assert_eq!(code, 200);
        assert!(events.contains("\"by\":\"ops\""), "{events}");
        let (_, later) = call(&api, "GET", "/events?since=1", Some(READ), "");
        assert!(
            !later.contains("\"sequence\":1,"),
            "the start is left out: {later}"
        );
        assert!(later.contains("\"sequence\":2,"), "{later}");
        assert_eq!(call(&api, "GET", "/events?since=x", Some(READ), "").0, 400);
    }
}
