//! The receive hot path: snappy block decompression with a size cap, then a streaming protobuf
//! decoder over the decompressed bytes that yields one [`RawSeries`] at a time.
//!
//! Written by hand rather than decoding into the prost structs of [`super::proto`] because those
//! build an owned `String` per label name and value and a `Vec` per series; on a live-shaped request
//! (2,000 series × ~10 labels) that allocation is most of the decode cost. Here nothing is copied:
//! a series is the byte ranges of its `Label` fields (hashed as they are for the series cache, and
//! parsed into `&str` slices only on a cache miss) plus its decoded samples. Exemplars, native
//! histograms and metadata are skipped but counted; unknown fields are skipped by wire type.
//! Every field the decoder reads is a singular scalar or a repeated message, so packed encoding
//! does not arise; a repeated singular scalar follows proto3's "last one wins". Groups (wire types
//! 3 and 4, which proto3 never emits) are rejected.

use std::str;

use xxhash_rust::xxh3::{Xxh3, xxh3_128_with_seed};

use crate::error::{Error, Result};

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_I32: u8 = 5;

/// Decompresses a snappy block-format body, refusing before allocation when the declared
/// decompressed size is above `max_len`. An empty body is an empty request.
pub fn decompress(body: &[u8], max_len: usize) -> Result<Vec<u8>> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let len = snap::raw::decompress_len(body)?;
    if len > max_len {
        return Err(Error::TooLarge {
            limit: max_len,
            actual: len,
        });
    }
    let mut out = vec![0; len];
    let n = snap::raw::Decoder::new().decompress(body, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// One float sample as decoded: the pipeline's sample type.
pub use crate::pipeline::Sample as RawSample;

/// Streams the `TimeSeries` of a decompressed `WriteRequest`.
#[derive(Debug)]
pub struct WriteRequestDecoder<'a> {
    buf: &'a [u8],
    pos: usize,
    metadata: u64,
}

impl<'a> WriteRequestDecoder<'a> {
    /// A decoder over a decompressed `WriteRequest`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            metadata: 0,
        }
    }

    /// Decodes the next `TimeSeries` into `series` (reusing its buffers); false at the end.
    pub fn next_series(&mut self, series: &mut RawSeries<'a>) -> Result<bool> {
        let buf = self.buf;
        let end = buf.len();
        while self.pos < end {
            let at = self.pos;
            let (field, wt) = read_tag(buf, &mut self.pos, end, "WriteRequest")?;
            match (field, wt) {
                (1, WT_LEN) => {
                    let (s, e) = read_len(buf, &mut self.pos, end, "WriteRequest.timeseries")?;
                    series.parse(buf, s, e)?;
                    return Ok(true);
                }
                (3, WT_LEN) => {
                    read_len(buf, &mut self.pos, end, "WriteRequest.metadata")?;
                    self.metadata += 1;
                }
                (1 | 3, _) => return Err(wrong_wire_type(at, "WriteRequest", field, wt)),
                _ => skip_field(buf, &mut self.pos, end, field, wt, "WriteRequest")?,
            }
        }
        Ok(false)
    }

    /// `MetricMetadata` entries seen so far (all of them once [`Self::next_series`] returned false).
    pub fn metadata_count(&self) -> u64 {
        self.metadata
    }
}

/// One decoded `TimeSeries`, borrowing the decompressed buffer. Reused across series so that its
/// vectors are allocated once per request.
#[derive(Debug, Default)]
pub struct RawSeries<'a> {
    buf: &'a [u8],
    /// Byte ranges `[start, end)` of the encoded `labels` fields (tag, length and body), adjacent
    /// fields merged; one range for any sender that writes its labels together.
    label_spans: Vec<(usize, usize)>,
    label_fields: usize,
    samples: Vec<RawSample>,
    exemplars: u64,
    histograms: u64,
}

impl<'a> RawSeries<'a> {
    fn parse(&mut self, buf: &'a [u8], start: usize, end: usize) -> Result<()> {
        self.buf = buf;
        self.label_spans.clear();
        self.label_fields = 0;
        self.samples.clear();
        self.exemplars = 0;
        self.histograms = 0;
        let mut pos = start;
        while pos < end {
            let field_at = pos;
            let (field, wt) = read_tag(buf, &mut pos, end, "TimeSeries")?;
            match (field, wt) {
                (1, WT_LEN) => {
                    read_len(buf, &mut pos, end, "TimeSeries.labels")?;
                    self.label_fields += 1;
                    match self.label_spans.last_mut() {
                        Some(last) if last.1 == field_at => last.1 = pos,
                        _ => self.label_spans.push((field_at, pos)),
                    }
                }
                (2, WT_LEN) => {
                    let (s, e) = read_len(buf, &mut pos, end, "TimeSeries.samples")?;
                    self.samples.push(parse_sample(buf, s, e)?);
                }
                (3, WT_LEN) => {
                    read_len(buf, &mut pos, end, "TimeSeries.exemplars")?;
                    self.exemplars += 1;
                }
                (4, WT_LEN) => {
                    read_len(buf, &mut pos, end, "TimeSeries.histograms")?;
                    self.histograms += 1;
                }
                (1..=4, _) => return Err(wrong_wire_type(field_at, "TimeSeries", field, wt)),
                _ => skip_field(buf, &mut pos, end, field, wt, "TimeSeries")?,
            }
        }
        Ok(())
    }

    /// The float samples, in wire order.
    pub fn samples(&self) -> &[RawSample] {
        &self.samples
    }

    /// Number of exemplars (skipped).
    pub fn exemplars(&self) -> u64 {
        self.exemplars
    }

    /// Number of native histogram samples (skipped).
    pub fn histograms(&self) -> u64 {
        self.histograms
    }

    /// Number of `labels` fields.
    pub fn label_count(&self) -> usize {
        self.label_fields
    }

    /// A 128-bit seeded xxh3 of the encoded label fields exactly as they appear on the wire; the
    /// key of the series cache. Equal for equal bytes however the fields were split by other fields.
    pub fn label_key(&self, seed: u64) -> u128 {
        match self.label_spans.as_slice() {
            [] => xxh3_128_with_seed(&[], seed),
            [(s, e)] => xxh3_128_with_seed(self.buf.get(*s..*e).unwrap_or_default(), seed),
            spans => {
                let mut h = Xxh3::with_seed(seed);
                for (s, e) in spans {
                    h.update(self.buf.get(*s..*e).unwrap_or_default());
                }
                h.digest128()
            }
        }
    }

    /// Parses the labels as `(name, value)` string slices, in wire order. Fails on malformed
    /// `Label` messages and on names or values that are not UTF-8.
    pub fn labels(&self) -> LabelIter<'_, 'a> {
        LabelIter {
            buf: self.buf,
            spans: self.label_spans.iter(),
            pos: 0,
            end: 0,
        }
    }

    /// `metric{a="b", …}` from the labels as sent, for messages; stops at a malformed label.
    pub fn describe(&self) -> String {
        crate::validate::render_series(self.labels().map_while(|l| l.ok()))
    }
}

/// Iterator over the labels of a [`RawSeries`]; see [`RawSeries::labels`].
#[derive(Debug)]
pub struct LabelIter<'s, 'a> {
    buf: &'a [u8],
    spans: std::slice::Iter<'s, (usize, usize)>,
    pos: usize,
    end: usize,
}

impl<'a> Iterator for LabelIter<'_, 'a> {
    type Item = Result<(&'a str, &'a str)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            let (s, e) = self.spans.next()?;
            self.pos = *s;
            self.end = *e;
        }
        Some(self.next_label())
    }
}

impl<'a> LabelIter<'_, 'a> {
    fn next_label(&mut self) -> Result<(&'a str, &'a str)> {
        let buf = self.buf;
        let result = (|| {
            // The span holds only `labels` fields: tag 1, wire type 2 (checked when the span was built).
            read_tag(buf, &mut self.pos, self.end, "TimeSeries")?;
            let (s, e) = read_len(buf, &mut self.pos, self.end, "TimeSeries.labels")?;
            parse_label(buf, s, e)
        })();
        if result.is_err() {
            // Stop iterating after an error.
            self.pos = self.end;
            self.spans = [].iter();
        }
        result
    }
}

fn parse_label(buf: &[u8], mut pos: usize, end: usize) -> Result<(&str, &str)> {
    let (mut name, mut value) = ((pos, pos), (pos, pos));
    while pos < end {
        let at = pos;
        let (field, wt) = read_tag(buf, &mut pos, end, "Label")?;
        match (field, wt) {
            (1, WT_LEN) => name = read_len(buf, &mut pos, end, "Label.name")?,
            (2, WT_LEN) => value = read_len(buf, &mut pos, end, "Label.value")?,
            (1 | 2, _) => return Err(wrong_wire_type(at, "Label", field, wt)),
            _ => skip_field(buf, &mut pos, end, field, wt, "Label")?,
        }
    }
    Ok((
        utf8(buf, name, "Label.name")?,
        utf8(buf, value, "Label.value")?,
    ))
}

fn utf8<'a>(buf: &'a [u8], (s, e): (usize, usize), what: &str) -> Result<&'a str> {
    let bytes = buf.get(s..e).unwrap_or_default();
    str::from_utf8(bytes)
        .map_err(|err| Error::protobuf(s + err.valid_up_to(), format!("invalid UTF-8 in {what}")))
}

#[inline]
fn parse_sample(buf: &[u8], mut pos: usize, end: usize) -> Result<RawSample> {
    let mut sample = RawSample {
        timestamp_ms: 0,
        value: 0.0,
    };
    while pos < end {
        let at = pos;
        let (field, wt) = read_tag(buf, &mut pos, end, "Sample")?;
        match (field, wt) {
            (1, WT_I64) => sample.value = f64::from_bits(read_fixed64(buf, &mut pos, end)?),
            (2, WT_VARINT) => {
                sample.timestamp_ms = read_varint(buf, &mut pos, end, "Sample")? as i64
            }
            (1 | 2, _) => return Err(wrong_wire_type(at, "Sample", field, wt)),
            _ => skip_field(buf, &mut pos, end, field, wt, "Sample")?,
        }
    }
    Ok(sample)
}

#[inline(always)]
fn read_varint(buf: &[u8], pos: &mut usize, end: usize, msg: &str) -> Result<u64> {
    if *pos < end
        && let Some(&b) = buf.get(*pos)
        && b < 0x80
    {
        *pos += 1;
        return Ok(u64::from(b));
    }
    read_varint_slow(buf, pos, end, msg)
}

#[inline(never)]
fn read_varint_slow(buf: &[u8], pos: &mut usize, end: usize, msg: &str) -> Result<u64> {
    let start = *pos;
    let mut value = 0u64;
    for i in 0..10 {
        let b = match buf.get(*pos) {
            Some(b) if *pos < end => *b,
            _ => return Err(Error::protobuf(start, format!("truncated varint in {msg}"))),
        };
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(Error::protobuf(
                start,
                format!("varint overflows 64 bits in {msg}"),
            ));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(Error::protobuf(
        start,
        format!("varint longer than 10 bytes in {msg}"),
    ))
}

#[inline(always)]
fn read_tag(buf: &[u8], pos: &mut usize, end: usize, msg: &str) -> Result<(u32, u8)> {
    let at = *pos;
    let tag = read_varint(buf, pos, end, msg)?;
    let field = tag >> 3;
    if field == 0 || field > (1 << 29) - 1 {
        return Err(Error::protobuf(
            at,
            format!("invalid field number {field} in {msg}"),
        ));
    }
    Ok((field as u32, (tag & 7) as u8))
}

/// Reads a length prefix and skips the body; returns the body's `[start, end)`.
#[inline(always)]
fn read_len(buf: &[u8], pos: &mut usize, end: usize, what: &str) -> Result<(usize, usize)> {
    let at = *pos;
    let len = read_varint(buf, pos, end, what)?;
    let left = end - *pos;
    if len > left as u64 {
        return Err(Error::protobuf(
            at,
            format!("length {len} of {what} runs past the end of its message ({left} bytes left)"),
        ));
    }
    let start = *pos;
    *pos += len as usize;
    Ok((start, *pos))
}

#[inline(always)]
fn read_fixed64(buf: &[u8], pos: &mut usize, end: usize) -> Result<u64> {
    let bytes = if end - *pos >= 8 {
        buf.get(*pos..*pos + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
    } else {
        None
    };
    match bytes {
        Some(b) => {
            *pos += 8;
            Ok(u64::from_le_bytes(b))
        }
        None => Err(Error::protobuf(
            *pos,
            "truncated 64-bit field in Sample.value",
        )),
    }
}

fn skip_field(
    buf: &[u8],
    pos: &mut usize,
    end: usize,
    field: u32,
    wt: u8,
    msg: &str,
) -> Result<()> {
    let fixed = |pos: &mut usize, n: usize| {
        if end - *pos < n {
            return Err(Error::protobuf(
                *pos,
                format!("truncated {}-bit field {field} in {msg}", n * 8),
            ));
        }
        *pos += n;
        Ok(())
    };
    match wt {
        WT_VARINT => read_varint(buf, pos, end, msg).map(|_| ()),
        WT_I64 => fixed(pos, 8),
        WT_LEN => read_len(buf, pos, end, msg).map(|_| ()),
        WT_I32 => fixed(pos, 4),
        3 | 4 => Err(Error::protobuf(
            *pos,
            format!("group wire type {wt} for field {field} in {msg} (not used by proto3)"),
        )),
        _ => Err(Error::protobuf(
            *pos,
            format!("invalid wire type {wt} for field {field} in {msg}"),
        )),
    }
}

#[cold]
fn wrong_wire_type(pos: usize, msg: &str, field: u32, wt: u8) -> Error {
    Error::protobuf(
        pos,
        format!("wrong wire type {wt} for field {field} of {msg}"),
    )
}

#[cfg(test)]
mod tests;
