//! The Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text, parsed line by line
//! without copying: a sample is its metric name, its label pairs (values unescaped only when they
//! hold an escape), its value and its optional timestamp. `# HELP`, `# TYPE`, `# UNIT` and other
//! comments are skipped; OpenMetrics exemplars (`# {…} v [t]` after a sample) are dropped; `# EOF`
//! ends an OpenMetrics body. Timestamps are milliseconds in the text format and seconds (possibly
//! fractional) in OpenMetrics.

use std::borrow::Cow;

/// Which text format a body is in (from the response's `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (and anything that is not OpenMetrics).
    Text,
    /// `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` names.
    pub fn from_content_type(ct: &str) -> Self {
        if ct.split(';').next().is_some_and(|e| {
            e.trim()
                .eq_ignore_ascii_case("application/openmetrics-text")
        }) {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }
}

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample<'a> {
    /// The metric name.
    pub name: &'a str,
    /// The labels, in line order.
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    /// The value (exact bits of `NaN` are not kept: any NaN is the standard NaN).
    pub value: f64,
    /// The sample's own timestamp in milliseconds, if it has one.
    pub timestamp_ms: Option<i64>,
}

/// A line that is not valid exposition text: its 1-based number and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Longest label value or name accepted (a hostile line cannot make one unbounded copy).
const MAX_TOKEN: usize = 1 << 16;

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// Parses `body`, calling `each` for every sample in order. Stops at the first malformed line.
pub fn parse<'a>(
    body: &'a str,
    format: Format,
    mut each: impl FnMut(ParsedSample<'a>),
) -> Result<(), ParseError> {
    for (i, raw) in body.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let err = |reason: String| ParseError {
            line: i + 1,
            reason,
        };
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if format == Format::OpenMetrics && comment.trim() == "EOF" {
                return Ok(());
            }
            continue;
        }
        each(sample(trimmed, format).map_err(err)?);
    }
    Ok(())
}

fn sample(line: &str, format: Format) -> Result<ParsedSample<'_>, String> {
    let b = line.as_bytes();
    let mut pos = 0;
    if !b.first().copied().is_some_and(is_name_start) {
        return Err(format!("expected a metric name, found {:?}", snippet(line)));
    }
    while pos < b.len() && is_name_char(b[pos]) {
        pos += 1;
    }
    let name = &line[..pos];
    let mut labels = Vec::new();
    let brace = skip_spaces(b, pos);
    if b.get(brace) == Some(&b'{') {
        pos = brace;
        pos += 1;
        loop {
            pos = skip_spaces(b, pos);
            match b.get(pos) {
                Some(b'}') => {
                    pos += 1;
                    break;
                }
                Some(c) if is_name_start(*c) && *c != b':' => {}
                _ => return Err(format!("{name}: expected a label name or '}}'")),
            }
            let start = pos;
            while pos < b.len() && (b[pos].is_ascii_alphanumeric() || b[pos] == b'_') {
                pos += 1;
            }
            let lname = &line[start..pos];
            pos = skip_spaces(b, pos);
            if b.get(pos) != Some(&b'=') {
                return Err(format!("{name}: expected '=' after label {lname:?}"));
            }
            pos = skip_spaces(b, pos + 1);
            if b.get(pos) != Some(&b'"') {
                return Err(format!("{name}: label {lname:?}: expected a quoted value"));
            }
            let (value, next) = quoted(line, pos + 1)
                .ok_or_else(|| format!("{name}: label {lname:?}: unterminated or invalid value"))?;
            labels.push((lname, value));
            pos = skip_spaces(b, next);
            match b.get(pos) {
                Some(b',') => pos += 1,
                Some(b'}') => {
                    pos += 1;
                    break;
                }
                _ => {
                    return Err(format!(
                        "{name}: expected ',' or '}}' after label {lname:?}"
                    ));
                }
            }
        }
    }
    let rest = &line[pos..];
    if !rest.starts_with([' ', '\t']) {
        return Err(format!("{name}: expected a space before the value"));
    }
    // an OpenMetrics exemplar follows " # "
    let rest = match (format, rest.find(" # ")) {
        (Format::OpenMetrics, Some(i)) => &rest[..i],
        _ => rest,
    };
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value_s = fields
        .next()
        .ok_or_else(|| format!("{name}: missing value"))?;
    let value = parse_value(value_s).ok_or_else(|| format!("{name}: invalid value {value_s:?}"))?;
    let timestamp_ms = match fields.next() {
        None => None,
        Some(t) => Some(
            parse_timestamp(t, format).ok_or_else(|| format!("{name}: invalid timestamp {t:?}"))?,
        ),
    };
    if let Some(extra) = fields.next() {
        return Err(format!(
            "{name}: unexpected {:?} after the timestamp",
            snippet(extra)
        ));
    }
    Ok(ParsedSample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

fn skip_spaces(b: &[u8], mut pos: usize) -> usize {
    while matches!(b.get(pos), Some(b' ' | b'\t')) {
        pos += 1;
    }
    pos
}

/// A quoted label value starting after the opening quote: the value and the position after the
/// closing quote. Escapes: `\\`, `\"`, `\n`.
fn quoted(line: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let b = line.as_bytes();
    let mut pos = start;
    let mut owned: Option<String> = None;
    let mut run = start;
    while pos < b.len() {
        match b[pos] {
            b'"' => {
                let value = match owned {
                    None => Cow::Borrowed(line.get(start..pos)?),
                    Some(mut s) => {
                        s.push_str(line.get(run..pos)?);
                        Cow::Owned(s)
                    }
                };
                return (value.len() <= MAX_TOKEN).then_some((value, pos + 1));
            }
            b'\\' => {
                let s = owned.get_or_insert_with(String::new);
                s.push_str(line.get(run..pos)?);
                match b.get(pos + 1)? {
                    b'\\' => s.push('\\'),
                    b'"' => s.push('"'),
                    b'n' => s.push('\n'),
                    _ => return None,
                }
                pos += 2;
                run = pos;
            }
            _ => pos += 1,
        }
    }
    None
}

/// A sample value: a float as Go's `strconv.ParseFloat` reads it, `NaN`, `+Inf`, `-Inf`, `Inf`.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => return Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust's parser also takes "infinity" and "nan" spellings; the checks above cover the ones
    // exposition uses, the rest is digits
    if s.bytes()
        .any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E')
    {
        return None;
    }
    s.parse().ok()
}

fn parse_timestamp(s: &str, format: Format) -> Option<i64> {
    match format {
        Format::Text => s.parse().ok(),
        Format::OpenMetrics => {
            let secs: f64 = parse_value(s)?;
            let ms = (secs * 1000.0).round();
            (ms.is_finite() && ms.abs() < 9.2e18).then_some(ms as i64)
        }
    }
}

fn snippet(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &str, format: Format) -> Result<Vec<ParsedSample<'_>>, ParseError> {
        let mut v = Vec::new();
        parse(body, format, |s| v.push(s))?;
        Ok(v)
    }

    #[test]
    fn text_format_cases() {
        let body = "# HELP up The scrape.\n# TYPE up gauge\nup 1\n\
            node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 12345.5 1700000000000\n\
            esc{path=\"a\\\\b\",q=\"say \\\"hi\\\"\",nl=\"x\\ny\",} 2\n\
            spaced { a = \"1\" , b=\"2\" }   -Inf\n\
            nan_metric NaN\n\
            sci 1.5e-3\n\r\n";
        let s = all(body, Format::Text).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(
            (s[0].name, s[0].value, s[0].timestamp_ms),
            ("up", 1.0, None)
        );
        assert_eq!(s[1].labels[1], ("mode", Cow::Borrowed("idle")));
        assert_eq!(s[1].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(s[2].labels[0].1, "a\\b");
        assert_eq!(s[2].labels[1].1, "say \"hi\"");
        assert_eq!(s[2].labels[2].1, "x\ny");
        assert_eq!(s[3].labels.len(), 2);
        assert_eq!(s[3].value, f64::NEG_INFINITY);
        assert!(s[4].value.is_nan());
        assert_eq!(s[5].value, 0.0015);
    }

    #[test]
    fn openmetrics_cases() {
        let body = "# TYPE c counter\nc_total{a=\"b\"} 3 1700000000.5 # {trace_id=\"x\"} 1 1700000000\nc_created 1.7e9\n# EOF\nignored 1\n";
        let s = all(body, Format::OpenMetrics).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].timestamp_ms, Some(1_700_000_000_500));
        assert_eq!(s[0].value, 3.0);
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (body, line) in [
            ("up 1\n{a=\"b\"} 1\n", 2),
            ("x{a=\"b} 1\n", 1),
            ("x{a=b} 1\n", 1),
            ("x 1 2 3\n", 1),
            ("x one\n", 1),
            ("x\n", 1),
            ("x{a=\"\\q\"} 1\n", 1),
            ("ok 1\nx 1 1.5\n", 2),
            ("x infinity\n", 1),
        ] {
            let e = all(body, Format::Text).unwrap_err();
            assert_eq!(e.line, line, "{body:?}: {e}");
        }
    }
}
