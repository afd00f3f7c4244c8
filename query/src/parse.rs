//! The one way PromQL text is parsed: refuse, with a clear error, texts nested too deep to parse,
//! evaluate and drop safely, then hand the rest to `promql-parser`.
//!
//! Parsing, evaluating, printing and dropping an expression all recurse once per level of its
//! tree, so a query like `((((…m…))))` 5,000 levels deep would overflow any thread's stack and abort
//! the process. Before the parser sees a text, one linear scan bounds the depth of the tree it can
//! produce: every level of the tree is either a bracket (call, aggregation, parentheses, matrix or
//! subquery brackets, braces) or an operator (binary or unary), so the tree is at most
//! `MAX_NESTING + MAX_OPERATORS` levels deep. Queries are evaluated on threads with
//! [`EVAL_STACK_BYTES`] of stack, measured to hold a tree of that depth in a debug build.

use promql_parser::parser::{self, Expr};

use crate::error::{Error, Result};

/// Most nested brackets (`(`, `[`, `{`) in one query.
pub const MAX_NESTING: usize = 500;
/// Most operators (`+ - * / % ^ == != < > <= >= and or unless atan2`) in one query.
pub const MAX_OPERATORS: usize = 500;
/// Stack size of the threads that parse and evaluate queries (virtual memory: only touched pages
/// are ever resident). A 1,000-level tree needs well under this in a debug build.
pub const EVAL_STACK_BYTES: usize = 64 << 20;

/// Parses a PromQL expression after checking its nesting and operator count.
pub fn parse_expr(text: &str) -> Result<Expr> {
    check_shape(text)?;
    parser::parse(text).map_err(|reason| Error::BadQuery {
        query: text.to_string(),
        reason,
    })
}

/// The nesting depth and operator count of a query text (strings and comments skipped).
fn shape(text: &str) -> (usize, usize) {
    let b = text.as_bytes();
    let (mut depth, mut max_depth, mut ops) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // a string: skip to its closing quote (backslash escapes in "…" and '…')
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => ops += 1,
            // `==`, `!=`, `<=`, `>=`, `<`, `>` count once; `=~`/`!~` and `=` in matchers sit in
            // braces, which are counted as nesting already, so counting them too only errs low
            b'=' | b'!' | b'<' | b'>' => {
                ops += 1;
                if b.get(i + 1) == Some(&b'=') || b.get(i + 1) == Some(&b'~') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &text[start..i];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    ops += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (max_depth, ops)
}

fn check_shape(text: &str) -> Result<()> {
    let (depth, ops) = shape(text);
    let reason = if depth > MAX_NESTING {
        format!("query is nested {depth} levels deep; at most {MAX_NESTING} are allowed")
    } else if ops > MAX_OPERATORS {
        format!("query has {ops} operators; at most {MAX_OPERATORS} are allowed")
    } else {
        return Ok(());
    };
    // the text itself may be huge: name it by its start
    let shown: String = text.chars().take(64).collect();
    Err(Error::BadQuery {
        query: if shown.len() < text.len() {
            format!("{shown}…")
        } else {
            shown
        },
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nesting_and_operators_outside_strings() {
        assert_eq!(shape("sum(rate(x[5m]))"), (3, 0));
        assert_eq!(shape(r#"a{b=~"((((+"} + c"#), (1, 2));
        assert_eq!(shape("a and b or c unless d"), (0, 3));
        assert_eq!(shape("a >= b != c # ((((( +++"), (0, 2));
        assert_eq!(shape("-(-(-x))"), (2, 3));
        assert_eq!(shape(r#"x{a="\"(("}"#), (1, 1));
    }

    #[test]
    fn refuses_too_deep_or_too_long_queries() {
        let deep = format!(
            "{}x{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        let e = parse_expr(&deep).unwrap_err().to_string();
        assert!(e.contains("nested 501 levels"), "{e}");
        assert!(e.len() < 400, "the error names the query by its start");
        let long = vec!["x"; MAX_OPERATORS + 2].join("+");
        assert!(
            parse_expr(&long)
                .unwrap_err()
                .to_string()
                .contains("operators")
        );
        let ok = format!("{}x{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        let h = std::thread::Builder::new()
            .stack_size(EVAL_STACK_BYTES)
            .spawn(move || parse_expr(&ok).is_ok())
            .unwrap();
        assert!(h.join().unwrap());
    }
}
