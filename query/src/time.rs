//! Timestamps in API parameters, as Prometheus accepts them: Unix seconds (with fraction) or RFC 3339.

use crate::error::{Error, Result};

/// Parses a Prometheus API timestamp into Unix milliseconds.
pub fn parse_time_ms(param: &'static str, s: &str) -> Result<i64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 9.2e15 {
            return Err(Error::BadParam {
                param,
                reason: format!("{s:?} is out of range"),
            });
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| Error::BadParam {
        param,
        reason: format!("cannot parse {s:?} as Unix seconds or RFC 3339: {e}"),
    })?;
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Ok(d.as_millis() as i64),
        Err(e) => Ok(-(e.duration().as_millis() as i64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_and_rfc3339() {
        assert_eq!(parse_time_ms("t", "1.5").unwrap(), 1500);
        assert_eq!(
            parse_time_ms("t", "2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert!(parse_time_ms("t", "yesterday").is_err());
    }
}
