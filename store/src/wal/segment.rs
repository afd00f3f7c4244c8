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
    f.write_all(&header).map_err(io_err("write", &path))?;
    f.sync_all().map_err(io_err("fsync", &path))?;
    sync_dir(dir)?;
    Ok(f)
}

/// What reading one segment found.
#[derive(Debug, Default)]
pub(crate) struct SegmentReplay {
    /// Records decoded.
    pub(crate) records: u64,
    /// Set when the segment ended in a torn or corrupt record at this byte offset.
    pub(crate) bad_tail_at: Option<(u64, DecodeError)>,
}

/// Reads segment `path`, calling `f` for each good record. Stops at the first short or corrupt
/// record and reports where. A file shorter than the header counts as torn at offset 0.
pub(crate) fn read_segment(path: &Path, f: &mut dyn FnMut(Record)) -> Result<SegmentReplay> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut buf))
        .map_err(io_err("read", path))?;
    let mut out = SegmentReplay::default();
    if buf.len() < HEADER_LEN as usize {
        out.bad_tail_at = Some((0, DecodeError::Short));
        return Ok(out);
    }
    if &buf[..4] != MAGIC {
        return Err(Error::Corrupt {
            path: path.display().to_string(),
            reason: "bad WAL magic".into(),
        });
    }
    let version = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if version != VERSION {
        return Err(Error::Corrupt {
            path: path.display().to_string(),
            reason: format!("unsupported WAL version {version}"),
        });
    }
    let mut pos = HEADER_LEN as usize;
    while pos < buf.len() {
        match record::decode(&buf[pos..]) {
            Ok((rec, n)) => {
                f(rec);
                out.records += 1;
                pos += n;
            }
            Err(e) => {
                out.bad_tail_at = Some((pos as u64, e));
                break;
            }
        }
    }
    Ok(out)
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
