//! A rollout's state and events kept on disk, so that a restart comes back paused with
//! its history (feature `persist`).
//!
//! # Why redb
//!
//! What has to survive is small and rare — a record per change of phase, a few dozen in a
//! rollout — but it must survive a kill at any instant, and a torn file must be told from
//! a good one rather than half read. [redb](https://docs.rs/redb) gives that in a kept,
//! pure-Rust crate with no C toolchain and no background threads: every commit is an
//! atomic, checksummed copy-on-write transaction, flushed (`fsync`) before it returns, so
//! after a kill the file holds exactly the last committed transaction, and damage shows up
//! as an error on open, not as a wrong state. An append-only log with `fsync` would do the
//! same job but needs its own framing, checksums and recovery of a torn tail — hand
//! written code on the one path that must not fail — and SQLite would bring a C library
//! for two tables. redb also locks the file, so two processes cannot write one rollout.
//!
//! # What is kept
//!
//! Two tables: `rollout`, one record (the builds, the phase, the share, how many events,
//! the time elapsed), and `events`, every [`RolloutEvent`](crate::RolloutEvent) by sequence number, both JSON.
//! Each change of phase writes both in one transaction. A store whose file cannot be
//! opened or read as a rollout (torn, truncated, not redb, records that do not decode) is
//! renamed `<path>.corrupt-<unix seconds>` and a new one started; a store left by a
//! rollout of other builds is renamed `<path>.ended-<unix seconds>`. Nothing is deleted.

use std::fs;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{Phase, Share, Version};

/// The one record of the rollout: under this key in [`ROLLOUT`].
const ROLLOUT_KEY: &str = "rollout";
const ROLLOUT: TableDefinition<&str, &[u8]> = TableDefinition::new("rollout");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// The layout of the records; a store of another layout is set aside, not misread.
const FORMAT: u32 = 1;

/// A rollout store that cannot be used at all (one that is only damaged is set aside and
/// replaced instead: see the [module docs](self)).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another rollout in this one) has the store open.
    #[error("the rollout store {path} is open in another process or rollout")]
    InUse {
        /// The store's path.
        path: PathBuf,
    },
    /// The file could not be opened, created or renamed: permissions, a missing
    /// directory, a full disk.
    #[error("the rollout store {path} could not be {action}: {source}")]
    Io {
        /// The store's path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: io::Error,
    },
}

/// What became of the store when the rollout was built: see
/// [`Rollout::recovery`](crate::Rollout::recovery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Recovery {
    /// The store's path.
    pub path: PathBuf,
    /// Where the rollout was when the process stopped, when the store said.
    pub restarted_from: Option<Phase>,
    /// How many earlier events were read back.
    pub restored_events: usize,
    /// What was wrong with the store, when it could not be read.
    pub problem: Option<String>,
    /// Where an unreadable store, or one of another rollout, was moved.
    pub set_aside: Option<PathBuf>,
}

/// The rollout record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedRollout {
    pub(crate) format: u32,
    pub(crate) stable: Version,
    pub(crate) candidate: Version,
    pub(crate) phase: Phase,
    pub(crate) share: Share,
    pub(crate) events: u64,
    #[serde(with = "crate::duration")]
    pub(crate) elapsed: Duration,
}

impl SavedRollout {
    pub(crate) fn new(
        stable: &Version,
        candidate: &Version,
        phase: Phase,
        share: Share,
        events: u64,
        elapsed: Duration,
    ) -> Self {
        Self {
            format: FORMAT,
            stable: stable.clone(),
            candidate: candidate.clone(),
            phase,
            share,
            events,
            elapsed,
        }
    }
}

/// What the store held when it was opened. `E` is the event type (the rollout's
/// [`RolloutEvent`](crate::RolloutEvent)): the store only keeps them, so it needs nothing
/// of the rollout module, which sits above it.
#[derive(Debug)]
pub(crate) enum Found<E> {
    /// Nothing: a new rollout.
    Nothing,
    /// A rollout of the same builds, with its events, oldest first.
    Rollout(SavedRollout, Vec<E>),
    /// A store that could not be read, now set aside; the rollout's state is unknown.
    Unreadable { problem: String, set_aside: PathBuf },
    /// A rollout of other builds, now set aside.
    OtherRollout {
        stable: Version,
        candidate: Version,
        set_aside: PathBuf,
    },
}

/// The open store.
pub(crate) struct Store {
    db: Database,
    path: PathBuf,
    failed_writes: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("failed_writes", &self.failed_writes())
            .finish_non_exhaustive()
    }
}

/// Why a store could not be read as a rollout.
enum OpenError {
    /// Unusable whatever its content: returned to the caller.
    Fatal(StoreError),
    /// Damaged or not a rollout store: set aside.
    Unreadable(String),
}

impl Store {
    /// Opens the store at `path` (creating it, and not its directory, when missing) for a
    /// rollout of `stable` and `candidate`, and says what it held.
    pub(crate) fn open<E: DeserializeOwned>(
        path: &Path,
        stable: &Version,
        candidate: &Version,
    ) -> Result<(Self, Found<E>), StoreError> {
        // The bytes as found, kept before redb opens (and might repair) the file, so that
        // an unreadable store is set aside exactly as it was.
        let original = match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_owned(),
                    action: "read",
                    source,
                });
            }
        };
        let found = match original.as_ref().map(|_| read(path)) {
            None => Found::Nothing,
            Some(Ok((db, saved, events))) => {
                if saved.stable == *stable && saved.candidate == *candidate {
                    return Ok((Self::new(db, path), Found::Rollout(saved, events)));
                }
                drop(db);
                let set_aside = set_aside(path, "ended")?;
                Found::OtherRollout {
                    stable: saved.stable,
                    candidate: saved.candidate,
                    set_aside,
                }
            }
            Some(Err(OpenError::Fatal(error))) => return Err(error),
            Some(Err(OpenError::Unreadable(problem))) => {
                tracing::error!(path = %path.display(), %problem, "the rollout store is unreadable; setting it aside");
                let set_aside = set_aside_copy(path, original.as_deref().unwrap_or_default())?;
                Found::Unreadable { problem, set_aside }
            }
        };
        let db = match create(path) {
            Ok(db) => db,
            Err(OpenError::Fatal(error)) => return Err(error),
            // A file made a moment ago that cannot be opened: the directory is the trouble.
            Err(OpenError::Unreadable(problem)) => {
                return Err(StoreError::Io {
                    path: path.to_owned(),
                    action: "created",
                    source: io::Error::other(problem),
                });
            }
        };
        Ok((Self::new(db, path), found))
    }

    fn new(db: Database, path: &Path) -> Self {
        Self {
            db,
            path: path.to_owned(),
            failed_writes: AtomicU64::new(0),
        }
    }

    /// Writes that failed (each logged): the rollout goes on, in memory.
    pub(crate) fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }

    /// Records a change of phase: the event and the rollout record, in one transaction
    /// flushed before it returns. A failure is logged and counted, never a panic: the
    /// rollout's traffic must not depend on its disk.
    pub(crate) fn record<E: Serialize>(&self, saved: &SavedRollout, sequence: u64, event: &E) {
        let written = catch_unwind(AssertUnwindSafe(|| self.write(saved, sequence, event)))
            .unwrap_or_else(|_| Err("the store panicked".to_owned()));
        if let Err(error) = written {
            self.failed_writes.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), sequence, %error, "rollout event not persisted");
        }
    }

    fn write<E: Serialize>(
        &self,
        saved: &SavedRollout,
        sequence: u64,
        event: &E,
    ) -> Result<(), String> {
        let rollout = serde_json::to_vec(saved).map_err(|e| e.to_string())?;
        let event_bytes = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(ROLLOUT).map_err(|e| e.to_string())?;
            table
                .insert(ROLLOUT_KEY, rollout.as_slice())
                .map_err(|e| e.to_string())?;
            let mut events = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
            events
                .insert(sequence, event_bytes.as_slice())
                .map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

/// Opens an existing store file and reads the rollout from it.
///
/// A file that holds no rollout record is unreadable too: the first record is written
/// when the rollout starts, so a file without one is torn (or was never a store), and the
/// rollout's state is not known — the caller must not start as if it were new.
fn read<E: DeserializeOwned>(path: &Path) -> Result<(Database, SavedRollout, Vec<E>), OpenError> {
    // redb reports damage as errors; a panic on a file it never expected is caught too,
    // since nothing a file holds may panic the rollout.
    catch_unwind(AssertUnwindSafe(|| {
        let db = open(path)?;
        match read_records(&db).map_err(OpenError::Unreadable)? {
            Some((saved, events)) => Ok((db, saved, events)),
            None => Err(OpenError::Unreadable(
                "the file holds no rollout record".to_owned(),
            )),
        }
    }))
    .unwrap_or_else(|_| Err(OpenError::Unreadable("reading it panicked".to_owned())))
}

fn read_records<E: DeserializeOwned>(
    db: &Database,
) -> Result<Option<(SavedRollout, Vec<E>)>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let rollout = match txn.open_table(ROLLOUT) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.to_string()),
    };
    let Some(record) = rollout.get(ROLLOUT_KEY).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let saved: SavedRollout = serde_json::from_slice(record.value())
        .map_err(|e| format!("the rollout record does not decode: {e}"))?;
    if saved.format != FORMAT {
        return Err(format!(
            "the rollout record is of format {}, this build reads {FORMAT}",
            saved.format
        ));
    }
    let mut events = Vec::new();
    let table = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
    for entry in table.iter().map_err(|e| e.to_string())? {
        let (sequence, bytes) = entry.map_err(|e| e.to_string())?;
        let event: E = serde_json::from_slice(bytes.value())
            .map_err(|e| format!("event {} does not decode: {e}", sequence.value()))?;
        events.push(event);
    }
    Ok(Some((saved, events)))
}

fn open(path: &Path) -> Result<Database, OpenError> {
    Database::create(path).map_err(|error| classify(path, error, "opened"))
}

fn create(path: &Path) -> Result<Database, OpenError> {
    catch_unwind(AssertUnwindSafe(|| open(path)))
        .unwrap_or_else(|_| Err(OpenError::Unreadable("creating it panicked".to_owned())))
}

/// Whether an open error means the file is unusable where it is (fatal) or damaged.
fn classify(path: &Path, error: DatabaseError, action: &'static str) -> OpenError {
    let fatal = |source| {
        OpenError::Fatal(StoreError::Io {
            path: path.to_owned(),
            action,
            source,
        })
    };
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            OpenError::Fatal(StoreError::InUse {
                path: path.to_owned(),
            })
        }
        DatabaseError::Storage(redb::StorageError::Io(source))
            if matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied
                    | io::ErrorKind::NotFound
                    | io::ErrorKind::ReadOnlyFilesystem
                    | io::ErrorKind::StorageFull
                    | io::ErrorKind::IsADirectory
            ) =>
        {
            fatal(source)
        }
        other => OpenError::Unreadable(other.to_string()),
    }
}

/// Moves an unreadable store out of the way as the bytes it held before it was opened:
/// written to `<path>.corrupt-<unix seconds>`, then the file removed.
fn set_aside_copy(path: &Path, original: &[u8]) -> Result<PathBuf, StoreError> {
    let target = aside_path(path, "corrupt");
    let io = |action| {
        move |source| StoreError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    };
    fs::write(&target, original).map_err(io("set aside"))?;
    fs::remove_file(path).map_err(io("removed once set aside"))?;
    tracing::warn!(from = %path.display(), to = %target.display(), "rollout store set aside");
    Ok(target)
}

/// Renames the store out of the way, to `<path>.<why>-<unix seconds>`, and returns the new
/// path.
fn set_aside(path: &Path, why: &str) -> Result<PathBuf, StoreError> {
    let target = aside_path(path, why);
    fs::rename(path, &target).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        action: "set aside",
        source,
    })?;
    tracing::warn!(from = %path.display(), to = %target.display(), "rollout store set aside");
    Ok(target)
}

/// `<path>.<why>-<unix seconds>`, with a counter after it when that is taken.
fn aside_path(path: &Path, why: &str) -> PathBuf {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{why}-{now}"));
    let mut target = PathBuf::from(&name);
    let mut n = 1;
    while target.exists() {
        let mut numbered = name.clone();
        numbered.push(format!(".{n}"));
        target = PathBuf::from(numbered);
        n += 1;
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builds() -> (Version, Version) {
        (Version::new("svc", "1"), Version::new("svc", "2"))
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "shadowlib-store-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// The store keeps any serde type as an event; the rollout's are tested with it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Event {
        sequence: u64,
        to: Phase,
    }

    fn event(sequence: u64, to: Phase) -> Event {
        Event { sequence, to }
    }

    #[test]
    fn what_is_recorded_is_read_back() {
        let (stable, candidate) = builds();
        let path = dir("roundtrip").join("rollout.redb");
        {
            let (store, found) = Store::open::<Event>(&path, &stable, &candidate).expect("opens");
            assert!(matches!(found, Found::Nothing));
            for sequence in 1..=3 {
                let saved = SavedRollout::new(
                    &stable,
                    &candidate,
                    Phase::Shadowing,
                    Share::ZERO,
                    sequence,
                    Duration::from_secs(sequence),
                );
                store.record(&saved, sequence, &event(sequence, Phase::Shadowing));
            }
            assert_eq!(store.failed_writes(), 0);
        }
        let (_store, found) = Store::open::<Event>(&path, &stable, &candidate).expect("reopens");
        let Found::Rollout(saved, events) = found else {
            panic!("expected the rollout back, got {found:?}");
        };
        assert_eq!(saved.events, 3);
        assert_eq!(
            events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn a_store_open_twice_is_in_use_not_corrupt() {
        let (stable, candidate) = builds();
        let path = dir("in-use").join("rollout.redb");
        let (_first, _) = Store::open::<Event>(&path, &stable, &candidate).expect("opens");
        let second = Store::open::<Event>(&path, &stable, &candidate);
        assert!(
            matches!(second, Err(StoreError::InUse { .. })),
            "{second:?}"
        );
        assert!(path.exists(), "not set aside");
    }

    #[test]
    fn garbage_and_truncated_files_are_set_aside_never_a_panic() {
        let (stable, candidate) = builds();
        let dir = dir("garbage");
        let path = dir.join("rollout.redb");
        // A real store, then the same bytes cut at several lengths, and plain garbage.
        {
            let (store, _) = Store::open::<Event>(&path, &stable, &candidate).expect("opens");
            let saved = SavedRollout::new(
                &stable,
                &candidate,
                Phase::Shadowing,
                Share::ZERO,
                1,
                Duration::ZERO,
            );
            store.record(&saved, 1, &event(1, Phase::Shadowing));
        }
        let whole = fs::read(&path).expect("written");
        let mut cuts: Vec<Vec<u8>> = [0, 1, 100, 512, 4096, whole.len() / 2, whole.len() - 1]
            .into_iter()
            .filter(|&n| n < whole.len())
            .map(|n| whole[..n].to_vec())
            .collect();
        cuts.push(b"not a database at all".repeat(300));
        let mut flipped = whole.clone();
        for byte in flipped.iter_mut().skip(64).step_by(97) {
            *byte ^= 0x5a;
        }
        cuts.push(flipped);
        for bytes in cuts {
            fs::write(&path, &bytes).expect("overwrite");
            let (store, found) =
                Store::open::<Event>(&path, &stable, &candidate).expect("recovers");
            match found {
                Found::Unreadable { set_aside, .. } => {
                    assert_eq!(
                        fs::read(&set_aside).expect("kept"),
                        bytes,
                        "set aside whole"
                    );
                }
                // redb may repair a torn tail back to the last commit: then what is read
                // is what was committed.
                Found::Rollout(saved, _) => assert_eq!(saved.phase, Phase::Shadowing),
                other => panic!("a file was there: {other:?}"),
            }
            drop(store);
        }
    }
}
