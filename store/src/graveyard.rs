//! Deferred deletion of sample files: compaction and retention take a file out of the partition
//! set and retire it here; it is deleted only once no read holds it any more.
//!
//! A read takes its snapshot of the files as `Arc<FileMeta>` clones under the partition set's lock,
//! so after a file leaves the set its strong count is exactly the reads still holding it (plus
//! this list): a count of one means no read can ever open it again, and it is deleted then.
//! A crash before the deletion leaves the file on disk, which is the same state as a crash between
//! writing a compacted file and deleting its inputs: open reads it again and last write wins.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::partition::FileMeta;

/// Retired files waiting for their last reader.
#[derive(Debug, Default)]
pub(crate) struct Graveyard {
    files: Mutex<Vec<Arc<FileMeta>>>,
}

impl Graveyard {
    /// Retires a file already taken out of the partition set.
    pub(crate) fn retire(&self, f: Arc<FileMeta>) {
        self.files.lock().push(f);
    }

    /// Takes out the retired files no read holds any more.
    pub(crate) fn take_unheld(&self) -> Vec<Arc<FileMeta>> {
        let mut files = self.files.lock();
        let (free, held): (Vec<_>, Vec<_>) =
            files.drain(..).partition(|f| Arc::strong_count(f) == 1);
        *files = held;
        free
    }

    /// Retired files still held by reads.
    pub(crate) fn len(&self) -> usize {
        self.files.lock().len()
    }
}
