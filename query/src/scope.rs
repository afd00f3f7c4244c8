//! Cluster scope of a reader: which clusters' series a principal may see, as one `cluster` matcher.
//!
//! A scope is written as cluster names or globs (`eu-*`, `us-east-?`, `*`); it becomes one anchored
//! regex matcher on the `cluster` label that [`crate::read::ReadView`] joins to every selection, so
//! no query path can see a series (or a label name or value) outside it.

use fleetgate_store::{MatchOp, Matcher};

use crate::error::{Error, Result};

/// The label that names a series' cluster (set by the gateway on every stored series).
pub const CLUSTER_LABEL: &str = "cluster";

/// The clusters a reader may see.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `None`: the whole fleet.
    matcher: Option<Matcher>,
    /// The patterns as configured, for logs and errors.
    patterns: Vec<String>,
}

impl Scope {
    /// Every cluster.
    pub fn fleet() -> Self {
        Self {
            matcher: None,
            patterns: vec!["*".into()],
        }
    }

    /// Exactly one cluster (a cluster's write token reads its own cluster).
    pub fn cluster(name: &str) -> Self {
        Self {
            matcher: Some(Matcher::equal(CLUSTER_LABEL, name)),
            patterns: vec![name.to_string()],
        }
    }

    /// The clusters matching any of `patterns` (names, or globs with `*` and `?`). A pattern of
    /// `*` alone is the whole fleet; an empty list sees nothing.
    pub fn from_patterns(patterns: &[String]) -> Result<Self> {
        if patterns.iter().any(|p| p == "*") {
            return Ok(Self::fleet());
        }
        let mut alts = Vec::with_capacity(patterns.len());
        for p in patterns {
            if p.is_empty() {
                return Err(Error::BadParam {
                    param: "clusters",
                    reason: "a cluster pattern must not be empty".into(),
                });
            }
            alts.push(glob_to_regex(p));
        }
        // An empty alternation would match the empty string, i.e. series without a cluster; a
        // regex that matches nothing keeps an empty scope empty.
        let re = if alts.is_empty() {
            "[^\\s\\S]".to_string()
        } else {
            alts.join("|")
        };
        let matcher = Matcher::new(MatchOp::RegexMatch, CLUSTER_LABEL, re)?;
        Ok(Self {
            matcher: Some(matcher),
            patterns: patterns.to_vec(),
        })
    }

    /// True when the scope is the whole fleet.
    pub fn is_fleet(&self) -> bool {
        self.matcher.is_none()
    }

    /// The matcher to join to every selection (`None` for the whole fleet).
    pub fn matcher(&self) -> Option<&Matcher> {
        self.matcher.as_ref()
    }

    /// Whether a series of cluster `name` is visible.
    pub fn allows(&self, name: &str) -> bool {
        self.matcher.as_ref().is_none_or(|m| m.matches_value(name))
    }

    /// The patterns as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// `matchers` with the scope joined (a copy only when the scope narrows anything).
    pub fn join(&self, matchers: &[Matcher]) -> Vec<Matcher> {
        let mut v = matchers.to_vec();
        if let Some(m) = &self.matcher {
            v.push(m.clone());
        }
        v
    }
}

/// `eu-*` → `eu\-.*`: every regex metacharacter escaped, `*` any run, `?` one character.
fn glob_to_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 8);
    let mut lit = String::new();
    let flush = |lit: &mut String, out: &mut String| {
        if !lit.is_empty() {
            out.push_str(&regex::escape(lit));
            lit.clear();
        }
    };
    for c in glob.chars() {
        match c {
            '*' => {
                flush(&mut lit, &mut out);
                out.push_str(".*");
            }
            '?' => {
                flush(&mut lit, &mut out);
                out.push('.');
            }
            c => lit.push(c),
        }
    }
    flush(&mut lit, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs_names_and_fleet() {
        let s = Scope::from_patterns(&p(&["eu-*", "us-east-1"])).unwrap();
        assert!(s.allows("eu-west-1") && s.allows("eu-") && s.allows("us-east-1"));
        assert!(!s.allows("us-east-10") && !s.allows("xeu-west") && !s.allows(""));
        assert!(Scope::from_patterns(&p(&["a", "*"])).unwrap().is_fleet());
        let q = Scope::from_patterns(&p(&["a.b", "c?"])).unwrap();
        assert!(q.allows("a.b") && !q.allows("axb") && q.allows("c1") && !q.allows("c12"));
        let none = Scope::from_patterns(&[]).unwrap();
        assert!(!none.allows("") && !none.allows("a"));
        assert!(Scope::cluster("x").allows("x") && !Scope::cluster("x").allows("y"));
        assert!(Scope::from_patterns(&p(&[""])).is_err());
    }
}
