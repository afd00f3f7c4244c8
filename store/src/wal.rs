//! Write-ahead log with group commit: appenders copy encoded records into a shared buffer and get
//! an LSN; one commit thread writes the buffer, `fdatasync`s once for everyone who arrived meanwhile,
//! and publishes the durable LSN.
//!
//! Hand-written rather than a library because it is the hot path of every acknowledgement: one
//! memcpy under a mutex per request, one `fdatasync` per batch of requests.
//!
//! After a write or fsync error (a full disk, an I/O error) the segment being written is never
//! trusted again (the page cache may no longer hold what was written: the PostgreSQL lesson): the
//! waiters of everything not yet durable fail, appends fail with [`Error::Unavailable`], and the
//! commit thread retries, with backoff, to start a fresh segment whose header and the re-logged
//! unpersisted series definitions are written and fsync'd; once that succeeds, appends resume.

pub(crate) mod record;
pub(crate) mod segment;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::stats::Histogram;
use record::Record;
use segment::io_err;

/// What the commit thread has made durable, or why it cannot write now.
#[derive(Debug, Clone, Default)]
struct Progress {
    durable: u64,
    /// Sequence of the segment currently written.
    segment: u64,
    /// Set while the WAL cannot be written (cleared when a fresh segment is durable).
    failed: Option<Arc<str>>,
    /// LSN ranges `(after, upto]` appended but lost to a write failure: never acknowledged,
    /// even though later LSNs become durable. Oldest first; merged beyond [`MAX_LOST_RANGES`]
    /// (a merged range may also refuse some durable LSNs: a retry, never a false ack).
    lost: Vec<(u64, u64)>,
    /// Write failures since open, and recoveries.
    failures: u64,
    recoveries: u64,
}

/// Lost ranges kept before the oldest two are merged.
const MAX_LOST_RANGES: usize = 16;
/// First and longest wait between attempts to start a fresh segment after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

impl Progress {
    fn lost(&self, lsn: u64) -> bool {
        self.lost.iter().any(|&(a, b)| lsn > a && lsn <= b)
    }
}

/// Encodes, into a fresh segment after a failure, the series definitions that exist only in the
/// WAL (created since the catalog was last persisted): their records may have been in the lost
/// part, and samples written later refer to them.
pub(crate) type Relog = Box<dyn Fn(&mut Vec<u8>) + Send + Sync>;

/// The WAL's health, for readiness and metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    /// Why the WAL cannot be written now; `None` when it can.
    pub(crate) failed: Option<Arc<str>>,
    /// Write failures since open.
    pub(crate) failures: u64,
    /// Recoveries (fresh segment started) since open.
    pub(crate) recoveries: u64,
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

struct Shared {
    dir: PathBuf,
    relog: Relog,
    state: Mutex<State>,
    wake: Condvar,
    durable_tx: watch::Sender<Progress>,
    disk_bytes: AtomicU64,
    segment_bytes: u64,
    hist: Arc<Histogram>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("dir", &self.dir)
            .field("segment_bytes", &self.segment_bytes)
            .finish_non_exhaustive()
    }
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
    /// Damaged stretches skipped (each lost at least one record); a torn tail of the newest
    /// segment is not counted.
    pub(crate) corrupt_records: u64,
    /// Bytes in those stretches.
    pub(crate) corrupt_bytes: u64,
    /// Segments copied aside into `damaged/`.
    pub(crate) damaged_segments: u64,
}

/// Replays every segment in `dir` in sequence order, keeping every intact record of every
/// segment: after a damaged record it resynchronises at the next good one. A bad stretch at the
/// end of the newest segment is a torn write (the crash cut an append): the file is truncated
/// there. Any other damage is counted, logged with segment and offset, and the segment is copied
/// into `damaged/` before replay goes on (the original is removed by the next flush, as usual).
pub(crate) fn replay(dir: &Path, f: &mut dyn FnMut(Record)) -> Result<ReplayStats> {
    segment::create_dir_durable(dir)?;
    let segs = segment::list_segments(dir)?;
    let mut stats = ReplayStats::default();
    let n = segs.len();
    for (i, (seq, path, len)) in segs.into_iter().enumerate() {
        stats.segments += 1;
        stats.max_seq = stats.max_seq.max(seq);
        let r = segment::read_segment(&path, f)?;
        stats.records += r.records;
        let newest = i + 1 == n;
        let torn = if newest {
            r.bad_tail(len).cloned()
        } else {
            None
        };
        let damage: Vec<_> = r.bad.iter().filter(|b| torn.as_ref() != Some(*b)).collect();
        if !damage.is_empty() {
            for b in &damage {
                stats.corrupt_records += 1;
                stats.corrupt_bytes += b.len;
                tracing::error!(segment = %path.display(), offset = b.at, bytes = b.len, reason = ?b.why,
                    "corrupt WAL record skipped; replay resumed at the next good record");
            }
            match segment::keep_damaged(dir, &path) {
                Ok(copy) => {
                    stats.damaged_segments += 1;
                    tracing::error!(segment = %path.display(), copy = %copy.display(),
                        "damaged WAL segment copied aside for inspection");
                }
                Err(e) => {
                    tracing::error!(segment = %path.display(), error = %e, "cannot copy a damaged WAL segment aside");
                }
            }
        }
        let mut kept = len;
        if let Some(t) = torn {
            tracing::warn!(segment = %path.display(), offset = t.at, reason = ?t.why, "truncating torn WAL tail");
            segment::truncate_segment(dir, &path, t.at)?;
            kept = if t.at < segment::HEADER_LEN { 0 } else { t.at };
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
        relog: Relog,
    ) -> Result<Self> {
        let file = segment::create_segment(dir, first_seq)?;
        let (durable_tx, durable_rx) = watch::channel(Progress {
            segment: first_seq,
            ..Progress::default()
        });
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            relog,
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
        Error::Unavailable(format!("WAL {msg}"))
    }

    /// Resolves once everything up to `lsn` is on disk and fsync'd; fails when a write failure
    /// lost it.
    pub(crate) async fn wait_durable(&self, lsn: u64) -> Result<()> {
        let mut rx = self.durable_rx.clone();
        let p = rx
            .wait_for(|p| p.durable >= lsn || p.failed.is_some() || p.lost(lsn))
            .await
            .map_err(|_| Error::Closed)?;
        if p.lost(lsn) || p.durable < lsn {
            let msg = p
                .failed
                .clone()
                .unwrap_or_else(|| Arc::from("a write failed before this batch was durable"));
            drop(p);
            return Err(self.poisoned(&msg));
        }
        Ok(())
    }

    /// Whether the WAL can be written now, and its failure counts.
    pub(crate) fn health(&self) -> Health {
        let p = self.durable_rx.borrow();
        Health {
            failed: p.failed.clone(),
            failures: p.failures,
            recoveries: p.recoveries,
        }
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
        Err(self.poisoned(p.failed.as_deref().unwrap_or("WAL write failed")))
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
                fail(sh, &e);
                // Never trust the failed segment past its last fsync: cut it back there.
                let bad = (seq, seg_len);
                match recover(sh, bad) {
                    Some((f, s, len)) => (file, seq, seg_len) = (f, s, len),
                    None => return,
                }
                continue;
            }
        }
        if closing && sh.state.lock().buf.is_empty() {
            return;
        }
    }
}

/// Marks the WAL failed: appends are refused from now on and everything appended but not durable
/// is lost (its waiters fail).
fn fail(sh: &Shared, e: &Error) {
    tracing::error!(error = %e, "WAL write failed; refusing writes until a fresh segment can be written");
    // What callers and /-/ready are told: the operation and the OS error, not the paths.
    let msg: Arc<str> = match e {
        Error::Io { op, source, .. } => format!("{op}: {source}"),
        other => other.to_string(),
    }
    .into();
    let appended = {
        let mut st = sh.state.lock();
        st.failed = Some(Arc::clone(&msg));
        st.buf_start + st.buf.len() as u64
    };
    sh.durable_tx.send_modify(|p| {
        p.failed = Some(msg);
        p.failures += 1;
        if appended > p.durable {
            p.lost.push((p.durable, appended));
        }
        if p.lost.len() > MAX_LOST_RANGES {
            let (a, _) = p.lost[0];
            let (_, b) = p.lost[1];
            p.lost.splice(0..2, [(a, b)]);
        }
    });
}

/// Retries, with backoff, until a fresh segment holds its header and the re-logged series,
/// fsync'd; then drops what was buffered during the failure and lets appends resume. Returns
/// `None` when the WAL is closed meanwhile.
fn recover(sh: &Shared, (bad_seq, bad_len): (u64, u64)) -> Option<(File, u64, u64)> {
    let mut wait = RETRY_FIRST;
    let mut cut = false;
    loop {
        {
            let mut st = sh.state.lock();
            if !st.closing {
                sh.wake.wait_for(&mut st, wait);
            }
            if st.closing {
                return None;
            }
        }
        wait = (wait * 2).min(RETRY_MAX);
        if !cut {
            let path = segment::segment_path(&sh.dir, bad_seq);
            cut = segment::cut_back(&path, bad_len).is_ok();
        }
        let new_seq = {
            let mut st = sh.state.lock();
            let s = st.next_seq;
            st.next_seq += 1;
            s
        };
        let mut relog = Vec::new();
        (sh.relog)(&mut relog);
        let started = segment::create_segment(&sh.dir, new_seq).and_then(|mut f| {
            let path = segment::segment_path(&sh.dir, new_seq);
            if !relog.is_empty() {
                f.write_all(&relog).map_err(io_err("write", &path))?;
                f.sync_data().map_err(io_err("fdatasync", &path))?;
            }
            Ok(f)
        });
        match started {
            Ok(f) => {
                let len = segment::HEADER_LEN + relog.len() as u64;
                sh.disk_bytes.fetch_add(len, Ordering::Relaxed);
                let dropped = {
                    let mut st = sh.state.lock();
                    let n = st.buf.len() as u64;
                    st.buf_start += n;
                    st.buf.clear();
                    st.rotations.clear();
                    st.failed = None;
                    n
                };
                sh.durable_tx.send_modify(|p| {
                    p.failed = None;
                    p.segment = new_seq;
                    p.recoveries += 1;
                });
                tracing::warn!(
                    segment = new_seq,
                    relogged_bytes = relog.len(),
                    dropped_bytes = dropped,
                    "WAL writable again: started a fresh segment; accepting writes"
                );
                return Some((f, new_seq, len));
            }
            Err(e) => {
                tracing::debug!(error = %e, "WAL still cannot start a fresh segment");
                let path = segment::segment_path(&sh.dir, new_seq);
                if std::fs::remove_file(&path).is_ok() {
                    let _ = segment::sync_dir(&sh.dir);
                }
            }
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
