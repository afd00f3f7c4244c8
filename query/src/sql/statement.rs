//! One statement made ready to run: a read's plan with its parameter and result types, or one of
//! the session verbs PostgreSQL clients send (SET of a cosmetic, SHOW, BEGIN/COMMIT/ROLLBACK),
//! and the per-session settings those verbs read and write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement, Value};
use parking_lot::Mutex;

use super::guard::{StatementClass, classify};
use crate::error::Error;

/// A read, planned: placeholders `$1…` still in it.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub(crate) plan: LogicalPlan,
    params: Vec<Option<DataType>>,
    schema: SchemaRef,
}

impl ReadPlan {
    pub(crate) fn new(plan: LogicalPlan) -> Result<Self, Error> {
        let found = plan
            .get_parameter_types()
            .map_err(super::session::from_datafusion)?;
        // `$1`, `$2`, … in order; a gap is a parameter of unknown type
        let mut params = Vec::new();
        for (name, ty) in found {
            let Some(n) = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
                return Err(Error::SqlPlan(format!(
                    "parameter {name}: only positional parameters ($1, $2, …) are supported"
                )));
            };
            if n == 0 || n > 65_535 {
                return Err(Error::SqlPlan(format!("parameter {name} is out of range")));
            }
            if params.len() < n {
                params.resize(n, None);
            }
            params[n - 1] = ty;
        }
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Ok(Self {
            plan,
            params,
            schema,
        })
    }

    /// The types of `$1…$n` as DataFusion inferred them (`None`: unknown).
    pub fn param_types(&self) -> &[Option<DataType>] {
        &self.params
    }

    /// The result's columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

/// A transaction verb: acknowledged, changes nothing (every statement reads its own snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionVerb {
    /// BEGIN / START TRANSACTION.
    Begin,
    /// COMMIT / END.
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
    /// DISCARD …, SET TRANSACTION …: acknowledged with their own command tag.
    Other(&'static str),
}

/// A statement ready to run.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A query.
    Read(ReadPlan),
    /// `SET <name> = <value>` of a session cosmetic ([`guard`](super::guard)'s list).
    Set {
        /// Lower-case setting name.
        name: String,
        /// The value as text.
        value: String,
    },
    /// A transaction verb.
    Transaction(TransactionVerb),
}

/// The session's settings: what SET changed (SHOW and `current_setting()` read them, falling
/// back to the server's defaults).
#[derive(Debug, Default)]
pub struct Settings {
    values: Mutex<BTreeMap<String, String>>,
}

/// Settings a session may hold.
const MAX_SETTINGS: usize = 64;
/// Longest setting value kept.
const MAX_SETTING_BYTES: usize = 1024;

impl Settings {
    /// The value of `name` (lower case): what the session set, else the server's default.
    pub fn get(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        if let Some(v) = self.values.lock().get(&name) {
            return Some(v.clone());
        }
        super::functions::setting(&name).map(str::to_string)
    }

    /// Sets `name` (a cosmetic the guard let through); bounded in count and size.
    pub fn set(&self, name: &str, value: &str) -> Result<(), Error> {
        if value.len() > MAX_SETTING_BYTES {
            return Err(Error::SqlPlan(format!(
                "SET {name}: value longer than {MAX_SETTING_BYTES} bytes"
            )));
        }
        if name == "statement_timeout" && parse_timeout(value).is_none() {
            return Err(Error::SqlPlan(format!(
                "SET statement_timeout: invalid value {value:?} (milliseconds, or with a unit: \
                 ms, s, min, h)"
            )));
        }
        let mut m = self.values.lock();
        if m.len() >= MAX_SETTINGS && !m.contains_key(name) {
            return Err(Error::SqlPlan(format!(
                "SET {name}: a session holds at most {MAX_SETTINGS} settings"
            )));
        }
        m.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// `statement_timeout` as set by the session (`None`: not set, or 0 = no timeout of its own).
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.values
            .lock()
            .get("statement_timeout")
            .and_then(|v| parse_timeout(v))
            .filter(|d| !d.is_zero())
    }
}

/// PostgreSQL's `statement_timeout` value: milliseconds, or a number with ms, s, min, h, d.
fn parse_timeout(v: &str) -> Option<Duration> {
    let v = v.trim().trim_matches('\'').trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "s" => n * 1e3,
        "min" => n * 60e3,
        "h" => n * 3600e3,
        "d" => n * 86400e3,
        _ => return None,
    };
    (ms.is_finite() && (0.0..=i32::MAX as f64).contains(&ms))
        .then(|| Duration::from_millis(ms as u64))
}

/// The text of a SET value: a string literal's contents, else the expression as written.
fn value_text(values: &[Expr]) -> String {
    values
        .iter()
        .map(|e| match e {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a session verb is, if `stmt` is one; `Ok(None)` for a read (planned by the caller).
pub(crate) fn session_verb(stmt: &Statement) -> Result<Option<Prepared>, Error> {
    match classify(stmt) {
        StatementClass::Read => Ok(None),
        StatementClass::Refused(why) => Err(Error::ReadOnly(why)),
        StatementClass::SessionSetting(name) => {
            let value = match stmt {
                Statement::Set(Set::SingleAssignment { values, .. }) => value_text(values),
                Statement::Set(Set::SetTimeZone { value, .. }) => {
                    value_text(std::slice::from_ref(value))
                }
                Statement::Set(Set::SetNames { charset_name, .. }) => charset_name.to_string(),
                _ => String::new(),
            };
            Ok(Some(Prepared::Set { name, value }))
        }
        StatementClass::Transaction => Ok(Some(Prepared::Transaction(match stmt {
            Statement::StartTransaction { .. } => TransactionVerb::Begin,
            Statement::Commit { .. } => TransactionVerb::Commit,
            Statement::Rollback { .. } => TransactionVerb::Rollback,
            Statement::Discard { .. } => TransactionVerb::Other("DISCARD ALL"),
            Statement::Set(Set::SetTransaction { .. }) => TransactionVerb::Other("SET"),
            Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
                return Err(Error::SqlPlan(
                    "cursors (DECLARE, FETCH, CLOSE) are not supported; run the query itself \
                     (results are streamed)"
                        .into(),
                ));
            }
            _ => TransactionVerb::Other("SET"),
        }))),
    }
}

/// The name of the setting `SHOW <name>` asks for, if `stmt` is one.
pub(crate) fn show_variable(stmt: &Statement) -> Option<String> {
    match stmt {
        Statement::ShowVariable { variable } => Some(
            variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts() {
        assert_eq!(parse_timeout("5000"), Some(Duration::from_millis(5000)));
        assert_eq!(parse_timeout("'5s'"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("0"), Some(Duration::ZERO));
        assert_eq!(parse_timeout("-1"), None);
        assert_eq!(parse_timeout("soon"), None);
        let s = Settings::default();
        assert_eq!(s.statement_timeout(), None);
        s.set("statement_timeout", "250ms").unwrap();
        assert_eq!(s.statement_timeout(), Some(Duration::from_millis(250)));
        assert!(s.set("statement_timeout", "later").is_err());
        assert_eq!(s.get("TimeZone").as_deref(), Some("UTC"));
        s.set("application_name", "psql").unwrap();
        assert_eq!(s.get("application_name").as_deref(), Some("psql"));
    }
}
