//! Write-ahead log with group commit: appenders copy encoded records into a shared buffer and get
//! an LSN; one commit thread writes the buffer, `fdatasync`s once for everyone who arrived meanwhile,
//! and publishes the durable LSN.
//!
//! Hand-written rather than a library because it is the hot path of every acknowledgement: one
//! memcpy under a mutex per request, one `fdatasync` per batch of requests.
//!
//! After a write or fsync error the WAL is poisoned: the waiters of that batch and every later
//! append fail with [`Error::Io`] until the process restarts, because the page cache can no longer
//! be trusted to hold what was written (the PostgreSQL lesson).

pub(crate) mod record;
pub(crate) mod segment;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::stats::Histogram;
use record::Record;
use segment::io_err;

/// What the commit thread has made durable, or why it stopped.
#[derive(Debug, Clone, Default)]
struct Progress {
    durable: u64,
    /// Sequence of the segment currently written.
    segment: u64,
    failed: Option<Arc<str>>,
}

#[derive(Debug)]
struct State {
    buf: Vec<u8>,
    /// LSN of `buf[0]`; an LSN is the count of record bytes ever appended since open.
    buf_start: u64,
    /// Pending rotations: `(lsn, new segment seq)`; bytes before `lsn` go to the old segment.
    rotations: Vec<(u64, u64)>,
    next_seq: u64,
    closing: bool,
    failed: Option<Arc<str>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    durable_tx: watch::Sender<Progress>,
    disk_bytes: AtomicU64,
    segment_bytes: u64,
    hist: Arc<Histogram>,
}

/// What replay found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReplayStats {
    /// Segments read.
    pub(crate) segments: u64,
    /// Records applied.
    pub(crate) records: u64,
    /// Highest segment sequence seen (0 when none).
    pub(crate) max_seq: u64,
    /// Bytes of WAL on disk after replay.
    pub(crate) bytes: u64,
}

/// Replays every segment in `dir` in sequence order. A short or corrupt record at the tail of the
/// last segment is a torn write: the file is truncated there. In an older segment the rest of that
/// segment is skipped with an error log.
pub(crate) fn replay(dir: &Path, f: &mut dyn FnMut(Record)) -> Result<ReplayStats> {
    std::fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
    let segs = segment::list_segments(dir)?;
    let mut stats = ReplayStats::default();
    let n = segs.len();
    for (i, (seq, path, len)) in segs.into_iter().enumerate() {
        stats.segments += 1;
        stats.max_seq = stats.max_seq.max(seq);
        let r = segment::read_segment(&path, f)?;
        stats.records += r.records;
        let mut kept = len;
        if let Some((at, why)) = r.bad_tail_at {
            if i + 1 == n {
                tracing::warn!(segment = %path.display(), offset = at, reason = ?why, "truncating torn WAL tail");
                segment::truncate_segment(dir, &path, at)?;
                kept = if at < segment::HEADER_LEN { 0 } else { at };
            } else {
                tracing::error!(segment = %path.display(), offset = at, reason = ?why,
                    "corrupt record in older WAL segment; skipping the rest of the segment");
            }
        }
        stats.bytes += kept;
    }
    Ok(stats)
}

/// The running WAL: a buffer, a commit thread and the durable LSN.
#[derive(Debug)]
pub(crate) struct Wal {
    shared: Arc<Shared>,
    durable_rx: watch::Receiver<Progress>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    /// Starts a fresh segment `first_seq` in `dir` and the commit thread. `existing_bytes` counts
    /// older segments already on disk.
    pub(crate) fn start(
        dir: &Path,
        first_seq: u64,
        segment_bytes: u64,
        existing_bytes: u64,
        hist: Arc<Histogram>,
    ) -> Result<Self> {
        let file = segment::create_segment(dir, first_seq)?;
        let (durable_tx, durable_rx) = watch::channel(Progress {
            durable: 0,
            segment: first_seq,
            failed: None,
        });
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                buf: Vec::with_capacity(1 << 20),
                buf_start: 0,
                rotations: Vec::new(),
                next_seq: first_seq + 1,
                closing: false,
                failed: None,
            }),
            wake: Condvar::new(),
            durable_tx,
            disk_bytes: AtomicU64::new(existing_bytes + segment::HEADER_LEN),
            segment_bytes: segment_bytes.max(4096),
            hist,
        });
        let s2 = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fleetgate-wal".into())
            .spawn(move || commit_loop(&s2, file, first_seq))
            .map_err(io_err("spawn WAL thread", dir))?;
        Ok(Self {
            shared,
            durable_rx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Encodes records into the shared buffer; returns the LSN to wait for.
    pub(crate) fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<u64> {
        let mut st = self.shared.state.lock();
        if let Some(msg) = &st.failed {
            return Err(self.poisoned(msg));
        }
        if st.closing {
            return Err(Error::Closed);
        }
        encode(&mut st.buf);
        let lsn = st.buf_start + st.buf.len() as u64;
        drop(st);
        self.shared.wake.notify_one();
        Ok(lsn)
    }

    fn poisoned(&self, msg: &str) -> Error {
        Error::Io {
            op: "WAL commit",
            path: self.shared.dir.display().to_string(),
            source: std::io::Error::other(msg.to_string()),
        }
    }

    /// Resolves once everything up to `lsn` is on disk and fsync'd.
    pub(crate) async fn wait_durable(&self, lsn: u64) -> Result<()> {
        let mut rx = self.durable_rx.clone();
        let p = rx
            .wait_for(|p| p.durable >= lsn || p.failed.is_some())
            .await
            .map_err(|_| Error::Closed)?
            .clone();
        if p.durable >= lsn {
            return Ok(());
        }
        Err(self.poisoned(p.failed.as_deref().unwrap_or("WAL commit failed")))
    }

    /// Asks the commit thread to start a new segment after everything appended so far. Returns
    /// the LSN at the cut and the new segment's sequence: every older segment holds only records
    /// before the cut.
    pub(crate) fn rotate(&self) -> (u64, u64) {
        let mut st = self.shared.state.lock();
        let lsn = st.buf_start + st.buf.len() as u64;
        let seq = st.next_seq;
        st.next_seq += 1;
        st.rotations.push((lsn, seq));
        drop(st);
        self.shared.wake.notify_one();
        (lsn, seq)
    }

    /// Resolves once the commit thread writes to segment `seq` or a later one, i.e. a rotation
    /// requested by [`Wal::rotate`] happened on disk.
    pub(crate) async fn wait_rotated(&self, seq: u64) -> Result<()> {
        let mut rx = self.durable_rx.clone();
        let p = rx
            .wait_for(|p| p.segment >= seq || p.failed.is_some())
            .await
            .map_err(|_| Error::Closed)?
            .clone();
        if p.segment >= seq {
            return Ok(());
        }
        Err(self.poisoned(p.failed.as_deref().unwrap_or("WAL commit failed")))
    }

    /// Removes every segment whose sequence is below `seq`; returns how many.
    pub(crate) fn remove_segments_before(&self, seq: u64) -> Result<usize> {
        let dir = &self.shared.dir;
        let mut n = 0;
        for (s, path, len) in segment::list_segments(dir)? {
            if s >= seq {
                break;
            }
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
            self.shared
                .disk_bytes
                .fetch_sub(len.min(self.bytes_on_disk()), Ordering::Relaxed);
            n += 1;
        }
        if n > 0 {
            segment::sync_dir(dir)?;
        }
        Ok(n)
    }

    fn bytes_on_disk(&self) -> u64 {
        self.shared.disk_bytes.load(Ordering::Relaxed)
    }

    /// Bytes on disk plus bytes buffered and not yet written.
    pub(crate) fn bytes(&self) -> u64 {
        let buffered = self.shared.state.lock().buf.len() as u64;
        self.bytes_on_disk() + buffered
    }

    /// Writes and fsyncs what is buffered, then stops the commit thread.
    pub(crate) async fn close(&self) -> Result<()> {
        {
            let mut st = self.shared.state.lock();
            st.closing = true;
        }
        self.shared.wake.notify_one();
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            tokio::task::spawn_blocking(move || {
                let _ = h.join();
            })
            .await
            .map_err(|e| Error::Io {
                op: "join WAL thread",
                path: String::new(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        match &self.shared.state.lock().failed {
            Some(msg) => Err(self.poisoned(msg)),
            None => Ok(()),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shared.state.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

fn commit_loop(sh: &Shared, mut file: File, mut seq: u64) {
    let mut batch: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut seg_len = segment::HEADER_LEN;
    loop {
        let (start, rotations, closing) = {
            let mut st = sh.state.lock();
            while st.buf.is_empty() && st.rotations.is_empty() && !st.closing {
                sh.wake.wait(&mut st);
            }
            std::mem::swap(&mut st.buf, &mut batch);
            let start = st.buf_start;
            st.buf_start += batch.len() as u64;
            (start, std::mem::take(&mut st.rotations), st.closing)
        };
        let res = write_batch(
            sh,
            &mut file,
            &mut seq,
            &mut seg_len,
            &batch,
            start,
            &rotations,
        );
        let end = start + batch.len() as u64;
        batch.clear();
        match res {
            Ok(()) => {
                sh.durable_tx.send_modify(|p| {
                    p.durable = end;
                    p.segment = seq;
                });
            }
            Err(e) => {
                let msg: Arc<str> = e.to_string().into();
                tracing::error!(error = %msg, "WAL write failed; refusing further writes");
                sh.state.lock().failed = Some(Arc::clone(&msg));
                sh.durable_tx.send_modify(|p| p.failed = Some(msg));
                return;
            }
        }
        if closing && sh.state.lock().buf.is_empty() {
            return;
        }
    }
}

fn write_batch(
    sh: &Shared,
    file: &mut File,
    seq: &mut u64,
    seg_len: &mut u64,
    batch: &[u8],
    start: u64,
    rotations: &[(u64, u64)],
) -> Result<()> {
    let mut pos = 0usize;
    for &(lsn, new_seq) in rotations {
        let cut = (lsn.saturating_sub(start) as usize).min(batch.len());
        write_sync(sh, file, *seq, &batch[pos..cut])?;
        *seg_len += (cut - pos) as u64;
        pos = cut;
        *file = segment::create_segment(&sh.dir, new_seq)?;
        sh.disk_bytes
            .fetch_add(segment::HEADER_LEN, Ordering::Relaxed);
        *seq = new_seq;
        *seg_len = segment::HEADER_LEN;
    }
    write_sync(sh, file, *seq, &batch[pos..])?;
    *seg_len += (batch.len() - pos) as u64;
    if *seg_len >= sh.segment_bytes {
        let new_seq = {
            let mut st = sh.state.lock();
            let s = st.next_seq;
            st.next_seq += 1;
            s
        };
        *file = segment::create_segment(&sh.dir, new_seq)?;
        sh.disk_bytes
            .fetch_add(segment::HEADER_LEN, Ordering::Relaxed);
        *seq = new_seq;
        *seg_len = segment::HEADER_LEN;
    }
    Ok(())
}

fn write_sync(sh: &Shared, file: &mut File, seq: u64, bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let path = segment::segment_path(&sh.dir, seq);
    file.write_all(bytes).map_err(io_err("write", &path))?;
    sh.disk_bytes
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let t = Instant::now();
    file.sync_data().map_err(io_err("fdatasync", &path))?;
    sh.hist.observe(t.elapsed().as_secs_f64());
    Ok(())
}
