//! The shadow's thread: a one-thread tokio runtime with a `LocalSet`, so that targets whose
//! builds cannot move between threads (actix-web's) live and run there.

use std::io;
use std::thread;

use tokio::task::LocalSet;

use super::worker::Worker;

/// Starts the shadow's thread, which runs `worker` until every live-side handle is gone
/// and the copies in flight are done, then ends.
pub(crate) fn spawn(worker: Worker) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    thread::Builder::new()
        .name("shadowlib-shadow".to_owned())
        .spawn(move || {
            LocalSet::new().block_on(&runtime, worker.run());
        })?;
    Ok(())
}
