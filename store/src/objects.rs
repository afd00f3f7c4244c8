//! The object store the Parquet files go to, with a durable `put` for the local filesystem
//! (`LocalFileSystem` renames a temp file but does not fsync; the WAL may only be truncated once
//! the files it covers are on stable storage).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};
use crate::wal::segment::{create_dir_durable, io_err, sync_dir};

/// Bytes buffered per part of a streamed upload (one put below that, multipart above).
const UPLOAD_PART_BYTES: usize = 8 << 20;
/// Parts of one streamed upload in flight at once.
const UPLOAD_CONCURRENCY: usize = 2;

/// Object store plus, when it is the default local one, its root for fsync.
#[derive(Debug, Clone)]
pub(crate) struct Objects {
    pub(crate) store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

impl Objects {
    /// The configured store, or a `LocalFileSystem` rooted at `data_dir`.
    pub(crate) fn new(
        data_dir: &std::path::Path,
        store: Option<Arc<dyn ObjectStore>>,
    ) -> Result<Self> {
        if let Some(store) = store {
            return Ok(Self {
                store,
                local_root: None,
            });
        }
        create_dir_durable(data_dir)?;
        let root = data_dir
            .canonicalize()
            .map_err(io_err("canonicalize", data_dir))?;
        let fs = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(fs),
            local_root: Some(root),
        })
    }

    /// A writer that streams an object to the store: buffered up to [`UPLOAD_PART_BYTES`] and
    /// written with one put, or uploaded in parts of that size beyond it; the object appears
    /// whole when the writer is shut down (or not at all). Follow with [`Objects::sync_blocking`].
    pub(crate) fn streaming_writer(&self, path: &Path) -> BufWriter {
        BufWriter::with_capacity(Arc::clone(&self.store), path.clone(), UPLOAD_PART_BYTES)
            .with_max_concurrency(UPLOAD_CONCURRENCY)
    }

    /// On the local filesystem, fsyncs a written object and its directory (blocking; from a
    /// blocking thread); a no-op elsewhere.
    pub(crate) fn sync_blocking(&self, path: &Path) -> Result<()> {
        match &self.local_root {
            Some(root) => sync_file_and_dirs(root, &root.join(path.as_ref())),
            None => Ok(()),
        }
    }

    /// Writes an object; on the local filesystem also fsyncs the file and its directory.
    pub(crate) async fn put_durable(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.store.put(path, PutPayload::from_bytes(bytes)).await?;
        if let Some(root) = &self.local_root {
            let (root, file): (PathBuf, PathBuf) = (root.clone(), root.join(path.as_ref()));
            tokio::task::spawn_blocking(move || sync_file_and_dirs(&root, &file))
                .await
                .map_err(|e| Error::Io {
                    op: "fsync task",
                    path: path.to_string(),
                    source: std::io::Error::other(e.to_string()),
                })??;
        }
        Ok(())
    }

    /// Every object under `prefix`.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = Path::from(prefix);
        Ok(self.store.list(Some(&prefix)).try_collect().await?)
    }

    /// The whole object.
    pub(crate) async fn get(&self, path: &Path) -> Result<Bytes> {
        Ok(self.store.get(path).await?.bytes().await?)
    }

    /// Deletes an object; a missing one is not an error.
    pub(crate) async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// fsyncs a local file and every directory from its own up to `root`: the `date=`/`hour=`
/// directories a write may just have created are entries of their parents, which must reach
/// stable storage too or a power loss could lose the whole partition directory.
fn sync_file_and_dirs(root: &std::path::Path, file: &std::path::Path) -> Result<()> {
    std::fs::File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync", file))?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        sync_dir(d)?;
        if d == root || !d.starts_with(root) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}
