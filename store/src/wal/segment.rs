//! WAL segment files: naming, the 8-byte header, creation, listing and reading one segment back.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::wal::record::{self, DecodeError, Record};

/// First bytes of every segment.
pub(crate) const MAGIC: &[u8; 4] = b"FGWL";
/// Segment format version.
pub(crate) const VERSION: u32 = 1;
/// Size of the segment header (magic + version).
pub(crate) const HEADER_LEN: u64 = 8;
/// Subdirectory of the WAL directory where copies of damaged segments are kept.
pub(crate) const DAMAGED_DIR: &str = "damaged";

pub(crate) fn io_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.display().to_string();
    move |source| Error::Io { op, path, source }
}

/// Path of segment `seq` in `dir`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// Segments in `dir` as `(seq, path, len)`, in sequence order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(io_err("read dir", dir))?;
    for entry in rd {
        let entry = entry.map_err(io_err("read dir", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".wal") else {
            continue;
        };
        let Ok(seq) = stem.parse::<u64>() else {
            continue;
        };
        let path = entry.path();
        let len = entry.metadata().map_err(io_err("stat", &path))?.len();
        out.push((seq, path, len));
    }
    out.sort_by_key(|s| s.0);
    Ok(out)
}

/// Fsyncs a directory so that created/removed entries are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync dir", dir))
}

/// Creates `dir` and any missing ancestors so that they survive a power loss: every directory
/// created here is fsync'd together with its parent, and `dir` and its parent are fsync'd even
/// when they already existed (an earlier run may have crashed before doing so).
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
    let mut to_sync: Vec<&Path> = vec![dir];
    to_sync.extend(missing.iter().copied());
    for d in to_sync.clone() {
        if let Some(p) = d.parent() {
            to_sync.push(if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            });
        }
    }
    to_sync.sort();
    to_sync.dedup();
    for d in to_sync {
        sync_dir(d)?;
    }
    Ok(())
}

/// Creates segment `seq` with its header, durably (file and directory entry).
pub(crate) fn create_segment(dir: &Path, seq: u64) -> Result<File> {
    let path = segment_path(dir, seq);
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    let mut header = [0u8; HEADER_LEN as usize];
    header[..4].copy_from_slice(MAGIC);
    header[4..].copy_from_slice(&VERSION.to_le_bytes());
    let written = f
        .write_all(&header)
        .map_err(io_err("write", &path))
        .and_then(|()| f.sync_all().map_err(io_err("fsync", &path)))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        // A segment without a durable header is not a segment: do not leave it for replay.
        drop(f);
        if std::fs::remove_file(&path).is_ok() {
            let _ = sync_dir(dir);
        }
        return Err(e);
    }
    Ok(f)
}

/// A stretch of a segment that held no decodable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRegion {
    /// Byte offset where decoding failed.
    pub(crate) at: u64,
    /// Bytes skipped until the next good record (or the end of the file).
    pub(crate) len: u64,
    /// Why the record at `at` did not decode.
    pub(crate) why: DecodeError,
}

/// What reading one segment found.
#[derive(Debug, Default)]
pub(crate) struct SegmentReplay {
    /// Records decoded.
    pub(crate) records: u64,
    /// Stretches that held no good record, in file order. Replay resynchronises after each: it
    /// looks for the next offset where a whole record with a matching checksum starts.
    pub(crate) bad: Vec<BadRegion>,
}

impl SegmentReplay {
    /// The offset of a bad stretch that runs to the end of the file (a torn tail when this is the
    /// newest segment), if the segment ends in one.
    pub(crate) fn bad_tail(&self, len: u64) -> Option<&BadRegion> {
        self.bad.last().filter(|b| b.at + b.len >= len)
    }
}

/// Reads segment `path`, calling `f` for each good record. After a short or corrupt record it
/// resynchronises at the next offset where a whole, checksummed record starts, so one damaged
/// record costs only itself; every bad stretch is reported. A header that is not ours counts as a
/// bad stretch too (records after it are still read); a version from the future is an error,
/// since this build cannot know its framing.
pub(crate) fn read_segment(path: &Path, f: &mut dyn FnMut(Record)) -> Result<SegmentReplay> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut buf))
        .map_err(io_err("read", path))?;
    read_segment_bytes(&buf, f).map_err(|reason| Error::Corrupt {
        path: path.display().to_string(),
        reason,
    })
}

/// [`read_segment`] on a segment's bytes; `Err` only for a format version this build cannot read.
pub(crate) fn read_segment_bytes(
    buf: &[u8],
    f: &mut dyn FnMut(Record),
) -> std::result::Result<SegmentReplay, String> {
    let mut out = SegmentReplay::default();
    if buf.len() < HEADER_LEN as usize {
        out.bad.push(BadRegion {
            at: 0,
            len: buf.len() as u64,
            why: DecodeError::Short,
        });
        return Ok(out);
    }
    let version = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let mut pos = HEADER_LEN as usize;
    if &buf[..4] != MAGIC {
        out.bad.push(BadRegion {
            at: 0,
            len: HEADER_LEN,
            why: DecodeError::Malformed("bad segment magic"),
        });
        pos = resync(buf, HEADER_LEN as usize);
        out.bad[0].len = pos as u64;
    } else if version != VERSION {
        return Err(format!(
            "unsupported WAL version {version} (this build reads {VERSION})"
        ));
    }
    while pos < buf.len() {
        match record::decode(&buf[pos..]) {
            Ok((rec, n)) => {
                f(rec);
                out.records += 1;
                pos += n;
            }
            Err(why) => {
                let next = resync(buf, pos + 1);
                out.bad.push(BadRegion {
                    at: pos as u64,
                    len: (next - pos) as u64,
                    why,
                });
                pos = next;
            }
        }
    }
    Ok(out)
}

/// The first offset at or after `from` where a whole record decodes, or `buf.len()`.
fn resync(buf: &[u8], from: usize) -> usize {
    (from..buf.len())
        .find(|&p| record::plausible(&buf[p..]) && record::decode(&buf[p..]).is_ok())
        .unwrap_or(buf.len())
}

/// Copies a damaged segment into `dir/damaged/` (kept for inspection, never read back); returns
/// the copy's path.
pub(crate) fn keep_damaged(dir: &Path, path: &Path) -> Result<PathBuf> {
    let damaged = dir.join(DAMAGED_DIR);
    std::fs::create_dir_all(&damaged).map_err(io_err("create dir", &damaged))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "segment.wal".into());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let copy = damaged.join(format!("{name}.{stamp}"));
    std::fs::copy(path, &copy).map_err(io_err("copy damaged segment", &copy))?;
    File::open(&copy)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync", &copy))?;
    sync_dir(&damaged)?;
    sync_dir(dir)?;
    Ok(copy)
}

/// Cuts a segment whose write failed back to its last fsync'd length (best effort: the caller
/// retries; replay resynchronises past anything left).
pub(crate) fn cut_back(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    f.set_len(len.max(HEADER_LEN))
        .map_err(io_err("truncate", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}

/// Truncates a torn segment at `len` bytes (keeping at least a header) and fsyncs it; a segment
/// too short to hold its header is removed.
pub(crate) fn truncate_segment(dir: &Path, path: &Path, len: u64) -> Result<()> {
    if len < HEADER_LEN {
        std::fs::remove_file(path).map_err(io_err("remove", path))?;
        return sync_dir(dir);
    }
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    f.set_len(len).map_err(io_err("truncate", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}
