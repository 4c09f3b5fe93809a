//! Deciding which requests may reach the shadow, and copying them.
//!
//! Classification is deny-by-default: a request reaches the shadow only when a [`Mirror`]
//! calls it a read. Writes never do, so the shadow can never change data the live build
//! owns.

use std::fmt;

/// Whether a request may be copied to the shadow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadClass {
    /// A read: safe to run on the shadow.
    Read,
    /// Not a read (or not known to be one): never mirrored. The reason is counted.
    NotRead(&'static str),
}

impl ReadClass {
    /// Whether the request may be mirrored.
    pub fn is_read(&self) -> bool {
        matches!(self, ReadClass::Read)
    }
}

impl fmt::Display for ReadClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadClass::Read => f.write_str("read"),
            ReadClass::NotRead(why) => write!(f, "not a read: {why}"),
        }
    }
}

/// Decides whether a request may reach the shadow and produces the copy it gets.
///
/// Implementations must be deny-by-default: anything they cannot positively identify as
/// a read is [`ReadClass::NotRead`]. `copy` is called only for reads, on the live path, so
/// it must be cheap and must not block; returning `None` skips mirroring this request.
///
/// ```
/// use shadowlib::{Mirror, ReadClass};
///
/// #[derive(Clone)]
/// enum Command {
///     Get(String),
///     Put(String, String),
/// }
///
/// struct Commands;
///
/// impl Mirror<Command> for Commands {
///     fn classify(&self, request: &Command) -> ReadClass {
///         match request {
///             Command::Get(_) => ReadClass::Read,
///             Command::Put(..) => ReadClass::NotRead("writes are never mirrored"),
///         }
///     }
///
///     fn copy(&self, request: &Command) -> Option<Command> {
///         Some(request.clone())
///     }
/// }
///
/// assert!(Commands.classify(&Command::Get("k".into())).is_read());
/// assert!(!Commands.classify(&Command::Put("k".into(), "v".into())).is_read());
/// ```
pub trait Mirror<Req>: Send + Sync {
    /// Whether `request` may be mirrored.
    fn classify(&self, request: &Req) -> ReadClass;

    /// The copy handed to the shadow, or `None` to skip this one.
    fn copy(&self, request: &Req) -> Option<Req>;
}
