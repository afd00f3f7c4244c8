//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus semantics: regexes are fully anchored and a
//! missing label matches as the empty string.

use regex::Regex;

use crate::error::{Error, Result};
use crate::labels::Labels;

/// The four matcher operators of PromQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    RegexMatch,
    /// `!~` (fully anchored)
    RegexNoMatch,
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The operator.
    pub op: MatchOp,
    /// The value or regex source.
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher; a regex is compiled anchored (`^(?:value)$`).
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let value = value.into();
        let re = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => {
                Some(Regex::new(&format!("^(?s:{value})$")).map_err(|source| {
                    Error::InvalidRegex {
                        label: name.clone(),
                        source,
                    }
                })?)
            }
            _ => None,
        };
        Ok(Self {
            name,
            op,
            value,
            re,
        })
    }

    /// Shorthand for an `=` matcher.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
        }
    }

    /// Whether `value` (the empty string for a missing label) satisfies this matcher.
    pub fn matches_value(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::RegexMatch => self.re.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::RegexNoMatch => !self.re.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Whether a label set satisfies this matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).unwrap_or(""))
    }

    /// True when the matcher also matches series that lack the label (it matches "").
    pub fn matches_empty(&self) -> bool {
        self.matches_value("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored_and_missing_is_empty() {
        let m = Matcher::new(MatchOp::RegexMatch, "job", "api|web").unwrap();
        assert!(m.matches_value("api"));
        assert!(!m.matches_value("xapi"));
        let l = Labels::from_pairs([("__name__", "up")]);
        assert!(
            Matcher::new(MatchOp::NotEqual, "job", "x")
                .unwrap()
                .matches(&l)
        );
        assert!(!Matcher::equal("job", "x").matches(&l));
    }
}
