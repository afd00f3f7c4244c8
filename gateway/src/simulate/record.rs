//! Recorded request directories: each request's exact snappy body as
//! `DIR/NNNNNNNN.snappy`, listed in `DIR/index.tsv`, written while simulating and read
//! back for `--replay-dir` so the same bytes can be sent to any remote-write receiver.
//!
//! `index.tsv` has a header line and the columns `seq cluster series samples bytes epoch`
//! (tab-separated). `epoch` is optional on read; requests of one cluster with the same
//! epoch may be sent in parallel, later epochs wait for earlier ones.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::encode::Payload;

const INDEX: &str = "index.tsv";
const HEADER: &str = "seq\tcluster\tseries\tsamples\tbytes\tepoch";

fn body_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:08}.snappy"))
}

/// Writes request bodies and the index.
#[derive(Debug)]
pub(crate) struct Recorder {
    dir: PathBuf,
    index: BufWriter<File>,
}

impl Recorder {
    /// Creates `dir` (if needed) and a fresh `index.tsv` in it.
    pub(crate) fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(INDEX);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut index = BufWriter::new(file);
        writeln!(index, "{HEADER}").with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
        })
    }

    /// Writes one request's body and its index line.
    pub(crate) fn write(&mut self, p: &Payload, cluster: &str) -> anyhow::Result<()> {
        let path = body_path(&self.dir, p.seq);
        std::fs::write(&path, &p.body).with_context(|| format!("writing {}", path.display()))?;
        writeln!(
            self.index,
            "{}\t{}\t{}\t{}\t{}\t{}",
            p.seq,
            cluster,
            p.series,
            p.samples,
            p.body.len(),
            p.epoch
        )
        .context("writing index.tsv")
    }

    /// Flushes the index to disk.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        self.index.flush().context("flushing index.tsv")?;
        self.index.get_ref().sync_all().context("syncing index.tsv")
    }
}

/// One line of `index.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) seq: u64,
    pub(crate) cluster: String,
    pub(crate) series: u32,
    pub(crate) samples: u32,
    pub(crate) bytes: u64,
    pub(crate) epoch: u64,
}

/// Reads `dir/index.tsv`.
pub(crate) fn read_index(dir: &Path) -> anyhow::Result<Vec<IndexEntry>> {
    let path = dir.join(INDEX);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (no, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.is_empty() || line.starts_with("seq\t") {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || {
            format!(
                "{}:{}: expected seq, cluster, series, samples, bytes[, epoch]",
                path.display(),
                no + 1
            )
        };
        anyhow::ensure!(f.len() >= 5, bad());
        out.push(IndexEntry {
            seq: f[0].parse().with_context(bad)?,
            cluster: f[1].to_string(),
            series: f[2].parse().with_context(bad)?,
            samples: f[3].parse().with_context(bad)?,
            bytes: f[4].parse().with_context(bad)?,
            epoch: match f.get(5) {
                Some(e) => e.parse().with_context(bad)?,
                None => 0,
            },
        });
    }
    Ok(out)
}

/// Reads one recorded body, as a payload for cluster index `cluster`.
pub(crate) fn load(dir: &Path, e: &IndexEntry, cluster: u32) -> anyhow::Result<Payload> {
    let path = body_path(dir, e.seq);
    let body = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        body.len() as u64 == e.bytes,
        "{}: {} bytes, index says {}",
        path.display(),
        body.len(),
        e.bytes
    );
    Ok(Payload {
        seq: e.seq,
        cluster,
        epoch: e.epoch,
        series: e.series,
        samples: e.samples,
        not_before_ms: None,
        body: body.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::create(dir.path()).unwrap();
        let p = Payload {
            seq: 7,
            cluster: 1,
            epoch: 3,
            series: 2,
            samples: 4,
            not_before_ms: None,
            body: bytes::Bytes::from_static(b"abc"),
        };
        r.write(&p, "sim-01").unwrap();
        r.finish().unwrap();
        let idx = read_index(dir.path()).unwrap();
        assert_eq!(
            idx,
            vec![IndexEntry {
                seq: 7,
                cluster: "sim-01".into(),
                series: 2,
                samples: 4,
                bytes: 3,
                epoch: 3
            }]
        );
        let back = load(dir.path(), &idx[0], 1).unwrap();
        assert_eq!(back.body, p.body);
        assert_eq!(back.epoch, 3);
    }
}
