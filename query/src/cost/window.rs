//! OpenCost's window grammar (`today`, `lastweek`, `7d`, `45m offset 15m`, RFC 3339 and Unix pairs)
//! and the step and accumulate periods a window is cut into; UTC throughout.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::error::{Error, Result};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;

/// A half-open interval `[start, end)` in Unix milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Window {
    /// Inclusive start.
    pub start_ms: i64,
    /// Exclusive end.
    pub end_ms: i64,
}

impl Window {
    /// `[start, end)`; `end` before `start` is refused.
    pub fn new(start_ms: i64, end_ms: i64) -> Result<Self> {
        if end_ms < start_ms {
            return Err(bad("window", "end is before start".into()));
        }
        Ok(Self { start_ms, end_ms })
    }

    /// Length in milliseconds.
    pub fn len_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }

    /// Length in hours.
    pub fn hours(&self) -> f64 {
        self.len_ms() as f64 / HOUR as f64
    }

    /// The part of `self` that is also in `other`, if any.
    pub fn intersect(&self, other: &Window) -> Option<Window> {
        let s = self.start_ms.max(other.start_ms);
        let e = self.end_ms.min(other.end_ms);
        (s < e).then_some(Window {
            start_ms: s,
            end_ms: e,
        })
    }

    /// RFC 3339 text of the start, seconds precision (`2026-11-01T00:00:00Z`).
    pub fn start_rfc3339(&self) -> String {
        rfc3339(self.start_ms)
    }

    /// RFC 3339 text of the end.
    pub fn end_rfc3339(&self) -> String {
        rfc3339(self.end_ms)
    }

    /// The whole hours `[h, h+1h)` that overlap the window, clipped to it.
    pub fn hours_within(&self) -> Vec<Window> {
        let mut out = Vec::new();
        let mut h = self.start_ms.div_euclid(HOUR) * HOUR;
        while h < self.end_ms {
            let w = Window {
                start_ms: h,
                end_ms: h + HOUR,
            };
            if let Some(part) = w.intersect(self) {
                out.push(part);
            }
            h += HOUR;
        }
        out
    }
}

/// `ms` as RFC 3339 UTC with seconds precision.
pub fn rfc3339(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => String::new(),
    }
}

fn bad(param: &'static str, reason: String) -> Error {
    Error::BadParam { param, reason }
}

fn day_start(ms: i64) -> i64 {
    ms.div_euclid(DAY) * DAY
}

/// Midnight UTC of the first day of the month `ms` falls in, and of the months `delta` away.
fn month_start(ms: i64, delta: i32) -> Option<i64> {
    let t = DateTime::<Utc>::from_timestamp_millis(ms)?;
    let months = t.year() * 12 + t.month0() as i32 + delta;
    let d = NaiveDate::from_ymd_opt(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1)?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// Midnight UTC of the Sunday that starts the week `ms` falls in.
fn week_start(ms: i64) -> Option<i64> {
    let t = DateTime::<Utc>::from_timestamp_millis(ms)?;
    let back = i64::from(t.weekday().num_days_from_sunday());
    Some(day_start(ms) - back * DAY)
}

/// `N` and the unit's length of `Nm|Nh|Nd|Nw`.
fn duration(s: &str) -> Option<(i64, i64)> {
    let unit = match s.chars().last()? {
        'm' => MINUTE,
        'h' => HOUR,
        'd' => DAY,
        'w' => WEEK,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 7 {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some((n, unit))
}

/// A step or accumulation length (`1h`, `1d`, `1w`, `30m`); at least one minute.
pub fn parse_step(param: &'static str, s: &str) -> Result<i64> {
    match duration(s.trim()) {
        Some((n, unit)) if n > 0 => n
            .checked_mul(unit)
            .ok_or_else(|| bad(param, format!("{s:?} is too long"))),
        _ => Err(bad(
            param,
            format!("{s:?} is not a duration such as 1h, 1d or 1w"),
        )),
    }
}

/// The end of a duration window: the end of the current unit (OpenCost: `7d` is today and the
/// six days before it, so its end is the coming midnight).
fn aligned_end(now_ms: i64, unit: i64) -> i64 {
    let u = if unit == WEEK { DAY } else { unit };
    now_ms.div_euclid(u) * u + u
}

/// Parses `window` as OpenCost does, relative to `now_ms`.
pub fn parse_window(s: &str, now_ms: i64) -> Result<Window> {
    let s = s.trim();
    let fail = |why: &str| bad("window", format!("{s:?}: {why}"));
    let today = day_start(now_ms);
    let named = match s {
        "today" => Some((today, today + DAY)),
        "yesterday" => Some((today - DAY, today)),
        "week" => week_start(now_ms).map(|w| (w, now_ms)),
        "lastweek" => week_start(now_ms).map(|w| (w - WEEK, w)),
        "month" => month_start(now_ms, 0).map(|m| (m, now_ms)),
        "lastmonth" => month_start(now_ms, -1).zip(month_start(now_ms, 0)),
        _ => None,
    };
    if let Some((a, b)) = named {
        return Window::new(a, b);
    }
    if let Some((dur, off)) = s.split_once(" offset ") {
        let (n, unit) = duration(dur.trim()).ok_or_else(|| fail("bad duration before offset"))?;
        let (on, ounit) = duration(off.trim()).ok_or_else(|| fail("bad offset"))?;
        let end = aligned_end(now_ms, unit) - on.saturating_mul(ounit);
        return Window::new(end.saturating_sub(n.saturating_mul(unit)), end);
    }
    if let Some((n, unit)) = duration(s) {
        if n == 0 {
            return Err(fail("the duration is zero"));
        }
        let end = aligned_end(now_ms, unit);
        return Window::new(end.saturating_sub(n.saturating_mul(unit)), end);
    }
    // pairs: "a,b" (RFC 3339 or Unix seconds) or "a-b" (Unix seconds)
    let pair = s.split_once(',').or_else(|| {
        s.split_once('-').filter(|(a, b)| {
            a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
        })
    });
    let Some((a, b)) = pair else {
        return Err(fail(
            "expected today, yesterday, week, lastweek, month, lastmonth, a duration (24h, 7d), \"45m offset 15m\", or a pair of RFC 3339 or Unix times",
        ));
    };
    let parse = |t: &str| -> Result<i64> {
        let t = t.trim();
        if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
            return t
                .parse::<i64>()
                .ok()
                .and_then(|v| v.checked_mul(1000))
                .ok_or_else(|| fail("Unix time out of range"));
        }
        DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis())
            .map_err(|e| fail(&format!("cannot parse {t:?} as RFC 3339: {e}")))
    };
    let (start, end) = (parse(a)?, parse(b)?);
    if end < start {
        return Err(fail("end is before start"));
    }
    Window::new(start, end)
}

/// How the sets of one answer are cut: by a fixed length, or by calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The whole window in one set.
    All,
    /// Fixed lengths from the window's start (`step=2h`).
    Fixed(i64),
    /// Calendar weeks from Sunday.
    Week,
    /// Calendar months.
    Month,
    /// Calendar quarters.
    Quarter,
}

impl Period {
    /// `accumulateBy` / `accumulate` values: `all|hour|day|week|month|quarter`, `true|false`.
    pub fn parse_accumulate(s: &str) -> Result<Option<Self>> {
        Ok(Some(match s.trim() {
            "" | "false" | "none" => return Ok(None),
            "true" | "all" => Self::All,
            "hour" => Self::Fixed(HOUR),
            "day" => Self::Fixed(DAY),
            "week" => Self::Week,
            "month" => Self::Month,
            "quarter" => Self::Quarter,
            other => {
                return Err(bad(
                    "accumulate",
                    format!(
                        "{other:?}: expected true, false, all, hour, day, week, month or quarter"
                    ),
                ));
            }
        }))
    }

    /// Cuts `w` into consecutive windows (the last may be shorter).
    pub fn split(self, w: Window) -> Vec<Window> {
        let mut out = Vec::new();
        let mut s = w.start_ms;
        while s < w.end_ms {
            let next = match self {
                Period::All => w.end_ms,
                Period::Fixed(len) => s.saturating_add(len.max(MINUTE)),
                Period::Week => week_start(s).map_or(w.end_ms, |x| x + WEEK),
                Period::Month => month_start(s, 1).unwrap_or(w.end_ms),
                Period::Quarter => {
                    let m =
                        DateTime::<Utc>::from_timestamp_millis(s).map_or(0, |t| t.month0() as i32);
                    month_start(s, 3 - m % 3).unwrap_or(w.end_ms)
                }
            };
            let e = next.min(w.end_ms).max(s + 1);
            out.push(Window {
                start_ms: s,
                end_ms: e,
            });
            s = e;
            if out.len() > 100_000 {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn named_and_durations() {
        // Thursday 2026-12-03 17:20 UTC
        let now = t("2026-12-03T17:20:00Z");
        let w = |s| parse_window(s, now).unwrap();
        assert_eq!(
            w("today"),
            Window::new(t("2026-12-03T00:00:00Z"), t("2026-12-04T00:00:00Z")).unwrap()
        );
        assert_eq!(w("yesterday").start_ms, t("2026-12-02T00:00:00Z"));
        assert_eq!(w("week").start_ms, t("2026-11-29T00:00:00Z"));
        assert_eq!(w("week").end_ms, now);
        assert_eq!(
            w("lastweek"),
            Window::new(t("2026-11-22T00:00:00Z"), t("2026-11-29T00:00:00Z")).unwrap()
        );
        assert_eq!(w("month").start_ms, t("2026-12-01T00:00:00Z"));
        assert_eq!(
            w("lastmonth"),
            Window::new(t("2026-11-01T00:00:00Z"), t("2026-12-01T00:00:00Z")).unwrap()
        );
        assert_eq!(
            w("7d"),
            Window::new(t("2026-11-27T00:00:00Z"), t("2026-12-04T00:00:00Z")).unwrap()
        );
        assert_eq!(
            w("2h"),
            Window::new(t("2026-12-03T16:00:00Z"), t("2026-12-03T18:00:00Z")).unwrap()
        );
        assert_eq!(w("1w").end_ms, t("2026-12-04T00:00:00Z"));
        assert_eq!(
            w("45m offset 15m"),
            Window::new(t("2026-12-03T16:21:00Z"), t("2026-12-03T17:06:00Z")).unwrap()
        );
        assert_eq!(w("2026-11-01T00:00:00Z,2026-11-02T00:00:00Z").hours(), 24.0);
        assert_eq!(w("1586822400,1586908800").start_ms, 1_586_822_400_000);
        assert_eq!(w("1586822400-1586908800").end_ms, 1_586_908_800_000);
        // January from December: the year rolls
        let jan = t("2027-01-15T00:00:00Z");
        assert_eq!(
            parse_window("lastmonth", jan).unwrap().start_ms,
            t("2026-12-01T00:00:00Z")
        );
    }

    #[test]
    fn bad_windows_name_the_parameter() {
        for s in [
            "",
            "soon",
            "0d",
            "2026-11-02T00:00:00Z,2026-11-01T00:00:00Z",
            "5,4",
            "12x",
            "a,b",
        ] {
            let e = parse_window(s, 0).unwrap_err().to_string();
            assert!(e.contains("\"window\""), "{s}: {e}");
        }
    }

    #[test]
    fn periods() {
        let w = Window::new(t("2026-10-30T00:00:00Z"), t("2026-12-03T00:00:00Z")).unwrap();
        let months = Period::Month.split(w);
        assert_eq!(months.len(), 3);
        assert_eq!(months[1].start_ms, t("2026-11-01T00:00:00Z"));
        let days = Period::Fixed(DAY).split(w);
        assert_eq!(days.len(), 34);
        let weeks = Period::Week.split(w);
        assert_eq!(weeks[0].end_ms, t("2026-11-01T00:00:00Z"));
        let q = Period::Quarter.split(w);
        assert_eq!(q.len(), 1);
        let hours = Window::new(t("2026-12-03T00:30:00Z"), t("2026-12-03T02:15:00Z"))
            .unwrap()
            .hours_within();
        assert_eq!(hours.len(), 3);
        assert_eq!(hours[0].len_ms(), 30 * MINUTE);
        assert_eq!(hours[2].len_ms(), 15 * MINUTE);
    }
}
