//! Parser of Prometheus's promqltest script format: load/clear/eval commands and series descriptions.

use fleetgate_query::promql::stale_nan;
use fleetgate_store::Labels;

/// One value item of a series description: a sample or a gap.
pub(super) type Point = Option<f64>;

/// A series line: labels and its expanded values (`None` = `_`).
#[derive(Debug, Clone)]
pub(super) struct SeriesLine {
    pub(super) labels: Labels,
    pub(super) values: Vec<Point>,
    /// The line holds native-histogram values (`{{…}}`).
    pub(super) histogram: bool,
}

/// What an eval expects.
#[derive(Debug, Clone, Default)]
pub(super) struct Expect {
    pub(super) fail: bool,
    /// `expect fail msg: …` / `regex: …` (or the older `expected_fail_message` /
    /// `expected_fail_regexp`): the error text the failure must have.
    pub(super) fail_text: Option<AnnoText>,
    pub(super) ordered: bool,
    pub(super) string: Option<String>,
    /// `expect range vector from … to … step …` on an instant eval.
    pub(super) range_vector: Option<(i64, i64, i64)>,
    pub(super) scalar: Option<f64>,
    pub(super) series: Vec<SeriesLine>,
    /// Expected output mentions native histograms.
    pub(super) histogram: bool,
    /// `expect warn|info [msg: …|regex: …]` lines.
    pub(super) annos: Vec<AnnoExpect>,
    /// `expect no_warn`.
    pub(super) no_warn: bool,
    /// `expect no_info`.
    pub(super) no_info: bool,
}

/// Whether an annotation is a warning or an info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AnnoKind {
    Warn,
    Info,
}

/// How an expected annotation's text is matched.
#[derive(Debug, Clone)]
pub(super) enum AnnoText {
    /// Any annotation of the kind.
    Any,
    /// Exactly this text (Prometheus's `(line:col)` suffix removed).
    Msg(String),
    /// Matches this regex (unanchored; a trailing position pattern removed).
    Regex(regex::Regex),
}

/// One `expect warn|info` line.
#[derive(Debug, Clone)]
pub(super) struct AnnoExpect {
    pub(super) kind: AnnoKind,
    pub(super) text: AnnoText,
}

impl AnnoExpect {
    /// Whether `msg` (an engine annotation, without position) satisfies this expectation.
    pub(super) fn matches(&self, msg: &str) -> bool {
        match &self.text {
            AnnoText::Any => true,
            AnnoText::Msg(m) => m == msg,
            AnnoText::Regex(r) => r.is_match(msg),
        }
    }
}

/// Parses the rest of an `expect warn|info` line: nothing, `msg: <text>` or `regex: <re>`.
fn parse_anno(kind: AnnoKind, rest: &str) -> Result<AnnoExpect, String> {
    let rest = rest.trim();
    let text = if let Some(m) = rest.strip_prefix("msg:") {
        let m = m.trim();
        let pos = regex::Regex::new(r"\s*\(\d+:\d+\)$").map_err(|e| e.to_string())?;
        AnnoText::Msg(pos.replace(m, "").into_owned())
    } else if let Some(r) = rest.strip_prefix("regex:") {
        let r = r.trim();
        // drop a trailing position pattern such as ` \(1:21\)` or ` \([0-9]+:[0-9]+\)`
        let r = match r.rfind("\\(") {
            Some(i) if r.ends_with("\\)") => r[..i].trim_end(),
            _ => r,
        };
        AnnoText::Regex(regex::Regex::new(r).map_err(|e| format!("bad regex {r:?}: {e}"))?)
    } else {
        AnnoText::Any
    };
    Ok(AnnoExpect { kind, text })
}

/// The time(s) of an eval.
#[derive(Debug, Clone, Copy)]
pub(super) enum EvalAt {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

/// One command of a script.
#[derive(Debug, Clone)]
pub(super) enum Command {
    Load {
        step: i64,
        nhcb: bool,
        series: Vec<SeriesLine>,
        /// Metric names given start timestamps (`@st` lines), which the store does not keep.
        st_names: Vec<String>,
    },
    Clear,
    Eval {
        line: usize,
        expr: String,
        at: EvalAt,
        expect: Expect,
    },
}

/// Parses a Prometheus duration (`1h30m`, `10s`, `0`, `-5m`) into milliseconds.
pub(super) fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    if s == "0" {
        return Some(0);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    if bytes.is_empty() {
        return None;
    }
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: i64 = s[start..i].parse().ok()?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total += n * unit;
    }
    Some(if neg { -total } else { total })
}

fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        b if b.starts_with("0x") => i64::from_str_radix(&b[2..], 16).ok()? as f64,
        _ => body.parse::<f64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// Expands one value item (`1`, `_`, `stale`, `a+bxn`, `a-bxn`, `axn`, `_xn`).
fn expand_item(item: &str, out: &mut Vec<Point>) -> Option<()> {
    if item == "_" {
        out.push(None);
        return Some(());
    }
    if item == "stale" {
        out.push(Some(stale_nan()));
        return Some(());
    }
    // the repetition count: an `x` followed only by digits (not the `x` of a leading `0x`)
    // `0x59` is 0 repeated (as in Prometheus's series lexer); only `0x1F`-style with hex letters is hex
    let skip = 0;
    let x_pos = item[skip..]
        .rfind('x')
        .map(|p| p + skip)
        .filter(|p| item[p + 1..].chars().all(|c| c.is_ascii_digit()) && *p + 1 < item.len());
    let Some(xp) = x_pos else {
        out.push(Some(parse_float(item)?));
        return Some(());
    };
    let times: usize = item[xp + 1..].parse().ok()?;
    let base = &item[..xp];
    if base == "_" {
        out.extend(std::iter::repeat_n(None, times));
        return Some(());
    }
    if base == "stale" {
        out.extend(std::iter::repeat_n(Some(stale_nan()), times + 1));
        return Some(());
    }
    // split `a+b` / `a-b` at an operator that is not a leading sign or an exponent sign
    let b = base.as_bytes();
    let mut op = None;
    for i in 1..b.len() {
        if (b[i] == b'+' || b[i] == b'-') && !matches!(b[i - 1], b'e' | b'E') {
            op = Some(i);
            break;
        }
    }
    match op {
        None => {
            let v = parse_float(base)?;
            out.extend(std::iter::repeat_n(Some(v), times + 1));
        }
        Some(i) => {
            let start = parse_float(&base[..i])?;
            let delta = parse_float(&base[i..])?;
            let mut v = start;
            out.push(Some(v));
            for _ in 0..times {
                v += delta;
                out.push(Some(v));
            }
        }
    }
    Some(())
}

fn unquote(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next()?;
    if q != '"' && q != '\'' && q != '`' {
        return None;
    }
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Some((out, &s[1 + i + 1..]));
        }
        if c == '\\' && q != '`' {
            let (_, e) = chars.next()?;
            out.push(match e {
                'n' => '\n',
                't' => '\t',
                '\\' => '\\',
                '"' => '"',
                '\'' => '\'',
                other => other,
            });
        } else {
            out.push(c);
        }
    }
    None
}

/// Parses `metric{a="b", …}` or `{…}` at the start of `s`; returns labels and the rest.
pub(super) fn parse_labels(s: &str) -> Option<(Labels, &str)> {
    let s = s.trim_start();
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let mut pairs: Vec<(String, String)> = Vec::new();
    if name_end > 0 {
        pairs.push(("__name__".into(), s[..name_end].to_string()));
    }
    let mut rest = &s[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
                continue;
            }
            let (name, r) = if let Some((n, r)) = unquote(rest) {
                (n, r)
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (rest[..end].to_string(), &rest[end..])
            };
            let r = r.trim_start();
            if let Some(r2) = r.strip_prefix('=') {
                let (v, r3) = unquote(r2.trim_start())?;
                pairs.push((name, v));
                rest = r3;
            } else {
                // a bare quoted string is the metric name
                pairs.push(("__name__".into(), name));
                rest = r;
            }
        }
    }
    Some((Labels::from_pairs(pairs), rest))
}

/// Parses a series line (`labels values…`), expanding the values.
pub(super) fn parse_series(line: &str) -> Option<SeriesLine> {
    let (labels, rest) = parse_labels(line)?;
    let histogram = rest.contains("{{");
    let mut values = Vec::new();
    if !histogram {
        for item in rest.split_whitespace() {
            expand_item(item, &mut values)?;
        }
    }
    Some(SeriesLine {
        labels,
        values,
        histogram,
    })
}

fn strip_word<'a>(s: &'a str, w: &str) -> Option<&'a str> {
    let s = s.trim_start();
    let r = s.strip_prefix(w)?;
    if r.is_empty() || r.starts_with(char::is_whitespace) {
        Some(r.trim_start())
    } else {
        None
    }
}

/// Parses `from A to B step C` into `(start, end, step)` and the rest.
fn parse_range_spec(s: &str) -> Option<((i64, i64, i64), &str)> {
    let r = strip_word(s, "from")?;
    let (a, r) = r.split_once(char::is_whitespace)?;
    let r = strip_word(r, "to")?;
    let (b, r) = r.split_once(char::is_whitespace)?;
    let r = strip_word(r, "step")?;
    let (c, r) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
    Some((
        (parse_duration(a)?, parse_duration(b)?, parse_duration(c)?),
        r.trim(),
    ))
}

/// Parses a whole script into commands; errors name the line.
pub(super) fn parse_script(text: &str) -> Result<Vec<Command>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    let block_end = |mut j: usize| {
        while j < lines.len() {
            let t = lines[j].trim();
            let w = t
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if t.is_empty()
                || t.starts_with('#')
                || w == "clear"
                || w.starts_with("load")
                || w.starts_with("eval")
            {
                break;
            }
            j += 1;
        }
        j
    };
    while i < lines.len() {
        let line = lines[i].trim();
        let lineno = i + 1;
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let first = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let end = block_end(i + 1);
        let body: Vec<&str> = lines[i + 1..end].iter().map(|l| l.trim()).collect();
        match first.as_str() {
            "load" | "load_with_nhcb" => {
                let step = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(parse_duration)
                    .ok_or(format!("line {lineno}: bad load step"))?;
                let mut series = Vec::new();
                let mut st_names = Vec::new();
                for l in &body {
                    let (sel, _) =
                        parse_labels(l).ok_or(format!("line {lineno}: bad series {l}"))?;
                    if l.contains("}@st")
                        || l.split_whitespace()
                            .next()
                            .is_some_and(|w| w.ends_with("@st"))
                    {
                        st_names.push(sel.metric_name().trim_end_matches("@st").to_string());
                        continue;
                    }
                    series.push(parse_series(l).ok_or(format!("line {lineno}: bad series {l}"))?);
                }
                cmds.push(Command::Load {
                    step,
                    nhcb: first == "load_with_nhcb",
                    series,
                    st_names,
                });
            }
            "clear" => cmds.push(Command::Clear),
            w if w.starts_with("eval") => {
                let mut expect = Expect::default();
                let modifier = w.strip_prefix("eval_").unwrap_or("");
                match modifier {
                    "fail" => expect.fail = true,
                    "ordered" => expect.ordered = true,
                    "warn" => expect.annos.push(AnnoExpect {
                        kind: AnnoKind::Warn,
                        text: AnnoText::Any,
                    }),
                    "info" => expect.annos.push(AnnoExpect {
                        kind: AnnoKind::Info,
                        text: AnnoText::Any,
                    }),
                    _ => {}
                }
                let rest = line[w.len()..].trim_start();
                let (at, expr) = if let Some(r) = strip_word(rest, "instant") {
                    let r = strip_word(r, "at").unwrap_or(r);
                    let (t, e) = r
                        .split_once(char::is_whitespace)
                        .ok_or(format!("line {lineno}: bad eval"))?;
                    (
                        EvalAt::Instant(
                            parse_duration(t).ok_or(format!("line {lineno}: bad time {t}"))?,
                        ),
                        e.trim().to_string(),
                    )
                } else if let Some(r) = strip_word(rest, "range") {
                    let ((start, end, step), e) =
                        parse_range_spec(r).ok_or(format!("line {lineno}: bad range eval"))?;
                    (EvalAt::Range { start, end, step }, e.to_string())
                } else {
                    return Err(format!("line {lineno}: unknown eval {line}"));
                };
                for l in &body {
                    if let Some(r) = strip_word(l, "expect") {
                        let kind = r.split_whitespace().next().unwrap_or("");
                        match kind {
                            "fail" => {
                                expect.fail = true;
                                let a = parse_anno(AnnoKind::Warn, &r[kind.len()..])
                                    .map_err(|e| format!("line {lineno}: {e}"))?;
                                if !matches!(a.text, AnnoText::Any) {
                                    expect.fail_text = Some(a.text);
                                }
                            }
                            "ordered" => expect.ordered = true,
                            "warn" | "info" => {
                                let k = if kind == "warn" {
                                    AnnoKind::Warn
                                } else {
                                    AnnoKind::Info
                                };
                                expect.annos.push(
                                    parse_anno(k, &r[kind.len()..])
                                        .map_err(|e| format!("line {lineno}: {e}"))?,
                                );
                            }
                            "no_warn" => expect.no_warn = true,
                            "no_info" => expect.no_info = true,
                            "string" => {
                                let s = r["string".len()..].trim();
                                expect.string =
                                    Some(unquote(s).map(|(v, _)| v).unwrap_or_default());
                            }
                            "range" => {
                                let r =
                                    strip_word(r, "range").and_then(|r| strip_word(r, "vector"));
                                expect.range_vector = r.and_then(parse_range_spec).map(|(s, _)| s);
                            }
                            _ => {}
                        }
                        continue;
                    }
                    if l.starts_with("expected_fail") {
                        expect.fail = true;
                        if let Some(m) = l.strip_prefix("expected_fail_message") {
                            expect.fail_text = Some(AnnoText::Msg(m.trim().to_string()));
                        } else if let Some(r) = l.strip_prefix("expected_fail_regexp") {
                            let r = r.trim();
                            expect.fail_text =
                                Some(AnnoText::Regex(regex::Regex::new(r).map_err(|e| {
                                    format!("line {lineno}: bad regex {r:?}: {e}")
                                })?));
                        }
                        continue;
                    }
                    if l.contains("{{") {
                        expect.histogram = true;
                        continue;
                    }
                    if let Some(v) = parse_float(l) {
                        expect.scalar = Some(v);
                        continue;
                    }
                    expect.series.push(
                        parse_series(l)
                            .ok_or(format!("line {}: bad expected series {l}", lineno))?,
                    );
                }
                cmds.push(Command::Eval {
                    line: lineno,
                    expr,
                    at,
                    expect,
                });
            }
            other => return Err(format!("line {lineno}: unknown command {other:?}")),
        }
        i = end;
    }
    Ok(cmds)
}

#[test]
fn expands_series_notation() {
    let s = parse_series(r#"m{a="b"} 0+10x2 _x2 stale 1x1 0x1 -1-1x1"#).unwrap();
    assert_eq!(s.labels.get("a"), Some("b"));
    let v: Vec<String> = s.values.iter().map(|v| format!("{v:?}")).collect();
    assert_eq!(
        v.join(" "),
        "Some(0.0) Some(10.0) Some(20.0) None None Some(NaN) Some(1.0) Some(1.0) Some(0.0) Some(0.0) Some(-1.0) Some(-2.0)"
    );
    assert_eq!(parse_duration("1h30m"), Some(5_400_000));
    assert_eq!(parse_duration("-10s"), Some(-10_000));
}
