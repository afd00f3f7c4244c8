//! WAL record encoding and decoding: `u32 len | u32 crc32(type + payload) | u8 type | payload`.

use crate::labels::{Labels, SeriesId};

/// Bytes before the payload: length, crc, type.
pub(crate) const RECORD_HEADER: usize = 9;
/// Record type of a new series.
pub(crate) const TYPE_SERIES: u8 = 1;
/// Record type of a batch of samples.
pub(crate) const TYPE_SAMPLES: u8 = 2;
/// Bytes of one encoded sample in a samples record.
pub(crate) const SAMPLE_BYTES: usize = 24;

/// A decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// A series was created with this id.
    Series { id: SeriesId, labels: Labels },
    /// Samples `(series, timestamp ms, value)`.
    Samples(Vec<(SeriesId, i64, f64)>),
}

/// Why a record could not be decoded at some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Fewer bytes than the header or the announced payload: a torn write.
    Short,
    /// The checksum does not match.
    Crc,
    /// The checksum matches but the content is malformed.
    Malformed(&'static str),
}

fn frame(out: &mut Vec<u8>, ty: u8, payload_len: usize, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(ty);
    write(out);
    debug_assert_eq!(out.len() - start - RECORD_HEADER, payload_len);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a Series record to `out`.
pub(crate) fn encode_series(out: &mut Vec<u8>, id: SeriesId, labels: &Labels) {
    let len = 8
        + 2
        + labels
            .iter()
            .map(|l| 2 + l.name.len() + 4 + l.value.len())
            .sum::<usize>();
    frame(out, TYPE_SERIES, len, |o| {
        o.extend_from_slice(&id.to_le_bytes());
        o.extend_from_slice(&(labels.len() as u16).to_le_bytes());
        for l in labels {
            o.extend_from_slice(&(l.name.len() as u16).to_le_bytes());
            o.extend_from_slice(l.name.as_bytes());
            o.extend_from_slice(&(l.value.len() as u32).to_le_bytes());
            o.extend_from_slice(l.value.as_bytes());
        }
    });
}

/// Appends a Samples record to `out`.
pub(crate) fn encode_samples(
    out: &mut Vec<u8>,
    samples: impl ExactSizeIterator<Item = (SeriesId, i64, f64)>,
) {
    let n = samples.len();
    frame(out, TYPE_SAMPLES, 4 + n * SAMPLE_BYTES, |o| {
        o.extend_from_slice(&(n as u32).to_le_bytes());
        for (s, t, v) in samples {
            o.extend_from_slice(&s.to_le_bytes());
            o.extend_from_slice(&t.to_le_bytes());
            o.extend_from_slice(&v.to_bits().to_le_bytes());
        }
    });
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed("payload ends early"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Malformed("label is not utf-8"))
    }
}

/// A cheap test that a record could start at `buf[0]` (known type, a length that type allows, a
/// sample count that matches), run before the checksum when resynchronising after damage.
pub(crate) fn plausible(buf: &[u8]) -> bool {
    if buf.len() < RECORD_HEADER {
        return false;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if buf.len() - RECORD_HEADER < len {
        return false;
    }
    match buf[8] {
        TYPE_SERIES => len >= 10,
        TYPE_SAMPLES => {
            len >= 4
                && (len - 4).is_multiple_of(SAMPLE_BYTES)
                && u32::from_le_bytes([buf[9], buf[10], buf[11], buf[12]]) as usize
                    == (len - 4) / SAMPLE_BYTES
        }
        _ => false,
    }
}

/// Decodes the record at the start of `buf`; returns it and its encoded length.
pub(crate) fn decode(buf: &[u8]) -> Result<(Record, usize), DecodeError> {
    if buf.len() < RECORD_HEADER {
        return Err(DecodeError::Short);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let total = RECORD_HEADER + len;
    if buf.len() < total {
        return Err(DecodeError::Short);
    }
    if crc32fast::hash(&buf[8..total]) != crc {
        return Err(DecodeError::Crc);
    }
    let mut c = Cursor(&buf[RECORD_HEADER..total]);
    let rec = match buf[8] {
        TYPE_SERIES => {
            let id = c.u64()?;
            let n = c.u16()? as usize;
            let mut labels = Vec::with_capacity(n);
            for _ in 0..n {
                let nl = c.u16()? as usize;
                let name = c.str(nl)?;
                let vl = c.u32()? as usize;
                let value = c.str(vl)?;
                labels.push((name, value));
            }
            let labels = Labels::from_pairs(labels);
            Record::Series { id, labels }
        }
        TYPE_SAMPLES => {
            let n = c.u32()? as usize;
            if c.0.len() != n * SAMPLE_BYTES {
                return Err(DecodeError::Malformed("sample count does not match length"));
            }
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let s = c.u64()?;
                let t = c.u64()? as i64;
                let val = f64::from_bits(c.u64()?);
                v.push((s, t, val));
            }
            Record::Samples(v)
        }
        _ => return Err(DecodeError::Malformed("unknown record type")),
    };
    if !c.0.is_empty() && matches!(rec, Record::Series { .. }) {
        return Err(DecodeError::Malformed("trailing bytes in series record"));
    }
    Ok((rec, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
        let mut buf = Vec::new();
        encode_series(&mut buf, 7, &labels);
        encode_samples(
            &mut buf,
            [(7u64, 1000i64, 1.5f64), (7, 2000, f64::NAN)].into_iter(),
        );
        let (r1, n1) = decode(&buf).unwrap();
        assert_eq!(r1, Record::Series { id: 7, labels });
        let (r2, n2) = decode(&buf[n1..]).unwrap();
        match r2 {
            Record::Samples(s) => {
                assert_eq!(s.len(), 2);
                assert_eq!(s[0], (7, 1000, 1.5));
                assert!(s[1].2.is_nan());
            }
            _ => panic!("wrong type"),
        }
        assert_eq!(n1 + n2, buf.len());
        assert_eq!(decode(&buf[n1..buf.len() - 1]), Err(DecodeError::Short));
        let mut bad = buf.clone();
        bad[n1 + 20] ^= 0xff;
        assert_eq!(decode(&bad[n1..]), Err(DecodeError::Crc));
    }
}
