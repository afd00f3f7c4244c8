//! OpenCost's filter language v2 over allocations: `namespace:"a","b"+label[team]!:"x"`,
//! `+` for AND, `|` for OR, parentheses, operators `:` `!:` `~:` `!~:` `<~:` `!<~:` `~>:` `!~>:`.

use super::allocation::Properties;
use crate::error::{Error, Result};

/// The longest filter text accepted, and the deepest nesting.
const MAX_LEN: usize = 16 << 10;
const MAX_DEPTH: usize = 32;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Both sides.
    And(Vec<Filter>),
    /// Either side.
    Or(Vec<Filter>),
    /// Not this.
    Not(Box<Filter>),
    /// One comparison.
    Cmp {
        /// What is compared.
        field: Field,
        /// How.
        op: Op,
        /// Against any of these (all of these, for a negated operator).
        values: Vec<String>,
    },
}

/// A field of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `cluster`.
    Cluster,
    /// `node`.
    Node,
    /// `namespace`.
    Namespace,
    /// `controllerKind`.
    ControllerKind,
    /// `controllerName`.
    ControllerName,
    /// `pod`.
    Pod,
    /// `container`.
    Container,
    /// `provider` / `providerID`.
    ProviderId,
    /// `services` (a list: `:` means contains).
    Services,
    /// `label[key]`, or an alias (`team`, `department`, `environment`, `owner`, `product`).
    Label(String),
    /// `annotation[key]`.
    Annotation(String),
    /// `label` / `annotation` without a key: the map has the key given as value.
    HasLabel,
    /// `annotation` without a key.
    HasAnnotation,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `:`.
    Eq,
    /// `~:`.
    Contains,
    /// `<~:`.
    StartsWith,
    /// `~>:`.
    EndsWith,
}

/// A parsed comparison: the operator and whether it is negated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpN(Op, bool);

fn bad(reason: String) -> Error {
    Error::BadParam {
        param: "filter",
        reason,
    }
}

/// OpenCost's label aliases.
pub fn alias_label(name: &str) -> Option<&'static str> {
    Some(match name {
        "department" => "department",
        "environment" => "env",
        "owner" => "owner",
        "product" => "app",
        "team" => "team",
        _ => return None,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(t.as_bytes()) {
            self.i += t.len();
            true
        } else {
            false
        }
    }
    fn err(&self, what: &str) -> Error {
        bad(format!("{what} at offset {}", self.i))
    }

    fn expr(&mut self) -> Result<Filter> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let mut ors = vec![self.and()?];
        while self.eat("|") {
            ors.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if ors.len() == 1 {
            ors.remove(0)
        } else {
            Filter::Or(ors)
        })
    }

    fn and(&mut self) -> Result<Filter> {
        let mut ands = vec![self.unary()?];
        while self.eat("+") {
            ands.push(self.unary()?);
        }
        Ok(if ands.len() == 1 {
            ands.remove(0)
        } else {
            Filter::And(ands)
        })
    }

    fn unary(&mut self) -> Result<Filter> {
        if self.eat("(") {
            let e = self.expr()?;
            if !self.eat(")") {
                return Err(self.err("expected ')'"));
            }
            return Ok(e);
        }
        self.cmp()
    }

    fn ident(&mut self) -> String {
        self.ws();
        let st = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'_'))
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[st..self.i]).into_owned()
    }

    fn string(&mut self) -> Result<String> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a quoted value"));
        }
        self.i += 1;
        let mut out = Vec::new();
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'"' => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|_| self.err("value is not UTF-8"));
                }
                b'\\' if self.i + 1 < self.s.len() => {
                    out.push(self.s[self.i + 1]);
                    self.i += 2;
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        Err(self.err("unterminated value"))
    }

    fn cmp(&mut self) -> Result<Filter> {
        let name = self.ident();
        let key = if self.eat("[") {
            self.ws();
            let st = self.i;
            while self.i < self.s.len() && self.s[self.i] != b']' {
                self.i += 1;
            }
            let k = String::from_utf8_lossy(&self.s[st..self.i])
                .trim()
                .to_string();
            if !self.eat("]") {
                return Err(self.err("expected ']'"));
            }
            Some(k)
        } else {
            None
        };
        let field = match (name.as_str(), key) {
            ("cluster", None) => Field::Cluster,
            ("node", None) => Field::Node,
            ("namespace", None) => Field::Namespace,
            ("controllerKind", None) => Field::ControllerKind,
            ("controllerName" | "controller", None) => Field::ControllerName,
            ("pod", None) => Field::Pod,
            ("container", None) => Field::Container,
            ("provider" | "providerID", None) => Field::ProviderId,
            ("services", None) => Field::Services,
            ("label", Some(k)) => Field::Label(super::pricing::sanitize_label(&k)),
            ("annotation", Some(k)) => Field::Annotation(super::pricing::sanitize_label(&k)),
            ("label", None) => Field::HasLabel,
            ("annotation", None) => Field::HasAnnotation,
            (a, None) if alias_label(a).is_some() => {
                Field::Label(alias_label(a).unwrap_or_default().to_string())
            }
            ("", _) => return Err(self.err("expected a field name")),
            (other, _) => return Err(bad(format!("unknown field {other:?}"))),
        };
        let op = [
            ("!<~:", OpN(Op::StartsWith, true)),
            ("!~>:", OpN(Op::EndsWith, true)),
            ("<~:", OpN(Op::StartsWith, false)),
            ("~>:", OpN(Op::EndsWith, false)),
            ("!~:", OpN(Op::Contains, true)),
            ("~:", OpN(Op::Contains, false)),
            ("!:", OpN(Op::Eq, true)),
            (":", OpN(Op::Eq, false)),
        ]
        .into_iter()
        .find(|(t, _)| self.eat(t))
        .map(|(_, o)| o)
        .ok_or_else(|| self.err("expected an operator (: !: ~: !~: <~: !<~: ~>: !~>:)"))?;
        let mut values = vec![self.string()?];
        while self.eat(",") {
            values.push(self.string()?);
        }
        let cmp = Filter::Cmp {
            field,
            op: op.0,
            values,
        };
        Ok(if op.1 { negate(cmp) } else { cmp })
    }
}

/// `field !op v1, v2` = neither matches.
fn negate(f: Filter) -> Filter {
    match f {
        Filter::Cmp { field, op, values } => Filter::And(
            values
                .into_iter()
                .map(|v| {
                    Filter::Not(Box::new(Filter::Cmp {
                        field: field.clone(),
                        op,
                        values: vec![v],
                    }))
                })
                .collect(),
        ),
        other => Filter::Not(Box::new(other)),
    }
}

impl Filter {
    /// Parses a filter; the error names the `filter` parameter and the offset.
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() > MAX_LEN {
            return Err(bad(format!("longer than {MAX_LEN} bytes")));
        }
        let mut p = Parser {
            s: s.as_bytes(),
            i: 0,
            depth: 0,
        };
        let f = p.expr()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("unexpected text"));
        }
        Ok(f)
    }

    /// Whether an allocation with these properties passes.
    pub fn matches(&self, p: &Properties) -> bool {
        match self {
            Filter::Not(f) => !f.matches(p),
            Filter::And(v) => v.iter().all(|f| f.matches(p)),
            Filter::Or(v) => v.iter().any(|f| f.matches(p)),
            Filter::Cmp { field, op, values } => {
                let test = |x: &str| {
                    values.iter().any(|v| match op {
                        Op::Eq => x == v,
                        Op::Contains => x.contains(v.as_str()),
                        Op::StartsWith => x.starts_with(v.as_str()),
                        Op::EndsWith => x.ends_with(v.as_str()),
                    })
                };
                match field {
                    Field::Cluster => test(&p.cluster),
                    Field::Node => test(&p.node),
                    Field::Namespace => test(&p.namespace),
                    Field::ControllerKind => test(&p.controller_kind),
                    Field::ControllerName => test(&p.controller),
                    Field::Pod => test(&p.pod),
                    Field::Container => test(&p.container),
                    Field::ProviderId => test(&p.provider_id),
                    Field::Services => p.services.iter().any(|s| test(s)),
                    Field::Label(k) => test(p.labels.get(k).map_or("", String::as_str)),
                    Field::Annotation(k) => test(p.annotations.get(k).map_or("", String::as_str)),
                    Field::HasLabel => p.labels.keys().any(|k| test(k)),
                    Field::HasAnnotation => p.annotations.keys().any(|k| test(k)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> Properties {
        Properties {
            cluster: "c1".into(),
            namespace: "kubecost".into(),
            container: "cost-model".into(),
            labels: [("team".to_string(), "finance".to_string())].into(),
            services: vec!["api".into()],
            ..Properties::default()
        }
    }

    #[test]
    fn opencost_examples() {
        let p = props();
        let m = |s: &str| Filter::parse(s).unwrap().matches(&p);
        assert!(m(r#"namespace:"kubecost"+container:"cost-model""#));
        assert!(!m(r#"cluster!:"c1""#));
        assert!(!m(r#"namespace!:"kubecost","kube-system""#));
        assert!(m(r#"namespace!:"a","b""#));
        assert!(m(r#"label[team]:"finance""#));
        assert!(m(r#"team:"finance""#));
        assert!(m(r#"services:"api""#));
        assert!(m(r#"namespace<~:"kube"+container~>:"model""#));
        assert!(m(r#"(namespace:"x"|cluster:"c1")+pod!~:"zz""#));
        assert!(!m(r#"label[app]:"x""#));
        assert!(m(r#"label[app]!:"x""#));
    }

    #[test]
    fn errors_name_the_parameter() {
        for s in [
            "",
            "namespace",
            "namespace:",
            "nope:\"x\"",
            "namespace:\"x",
            "(namespace:\"x\"",
            "namespace:\"x\" junk",
        ] {
            let e = Filter::parse(s).unwrap_err().to_string();
            assert!(e.contains("\"filter\""), "{s}: {e}");
        }
        let deep = "(".repeat(100) + "pod:\"x\"" + &")".repeat(100);
        assert!(Filter::parse(&deep).is_err());
    }
}
