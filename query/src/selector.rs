//! Series selectors (`metric{label="v", other=~"re"}`) parsed with promql-parser into store matchers.

use fleetgate_store::{MatchOp, Matcher};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, Expr};

use crate::error::{Error, Result};

/// Parses one series selector into alternative matcher sets (more than one with `or` inside braces).
/// Like Prometheus, a selector must have at least one matcher that does not match the empty string.
pub fn parse_selector(text: &str) -> Result<Vec<Vec<Matcher>>> {
    let bad = |reason: String| Error::BadQuery {
        query: text.to_string(),
        reason,
    };
    let expr = crate::parse::parse_expr(text)?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(bad(
            "not a series selector (expected e.g. `up{job=\"x\"}`)".into()
        ));
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(bad(
            "offset and @ are not allowed in a series selector".into()
        ));
    }
    selector_matchers(&vs).map_err(|e| match e {
        Error::BadQuery { reason, .. } => bad(reason),
        other => other,
    })
}

/// The store matcher sets (alternatives, more than one with `or` inside braces) of a parsed selector.
pub(crate) fn selector_matchers(vs: &parser::VectorSelector) -> Result<Vec<Vec<Matcher>>> {
    let bad = |reason: String| Error::BadQuery {
        query: vs.to_string(),
        reason,
    };
    let groups: Vec<Vec<promql_parser::label::Matcher>> = if vs.matchers.or_matchers.is_empty() {
        vec![vs.matchers.matchers.clone()]
    } else {
        vs.matchers.or_matchers.clone()
    };
    let mut out = Vec::with_capacity(groups.len());
    for group in &groups {
        let mut ms = Vec::with_capacity(group.len() + 1);
        if let Some(name) = &vs.name {
            ms.push(Matcher::equal("__name__", name.clone()));
        }
        for m in group {
            let op = match m.op {
                PMatchOp::Equal => MatchOp::Equal,
                PMatchOp::NotEqual => MatchOp::NotEqual,
                PMatchOp::Re(_) => MatchOp::RegexMatch,
                PMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
            };
            ms.push(Matcher::new(op, m.name.clone(), m.value.clone())?);
        }
        if ms.iter().all(Matcher::matches_empty) {
            return Err(bad(
                "vector selector must contain at least one non-empty matcher".into(),
            ));
        }
        out.push(ms);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_matchers() {
        let g = parse_selector(r#"up{job=~"api|web", cluster!="x"}"#).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].len(), 3);
        assert_eq!(g[0][0].name, "__name__");
        assert!(parse_selector(r#"{job=""}"#).is_err());
        assert!(parse_selector("sum(up)").is_err());
        assert!(parse_selector("up{").is_err());
    }
}
