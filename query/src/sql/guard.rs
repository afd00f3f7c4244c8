//! The read-only guard: which statements a SQL session may run at all.
//!
//! Two checks, so that neither alone has to be perfect: this statement check (queries, EXPLAIN of
//! a query, SHOW/DESCRIBE; the session cosmetics and transaction verbs PostgreSQL clients send;
//! everything else refused by name), and after planning DataFusion's own plan check with DDL, DML
//! and statements disallowed ([`super::session`]), which also catches a write nested anywhere in
//! a plan.

use datafusion::sql::sqlparser::ast::{Query, Set, SetExpr, Statement};

/// What a statement is allowed to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementClass {
    /// A query (SELECT, VALUES, WITH …, EXPLAIN of one, SHOW, DESCRIBE): planned and run.
    Read,
    /// `SET <name> …` of a session cosmetic (`DateStyle`, `TimeZone`, `application_name`,
    /// `extra_float_digits`, `search_path`, `statement_timeout`, …): acknowledged, changes no data.
    SessionSetting(String),
    /// BEGIN / START TRANSACTION / COMMIT / ROLLBACK / DISCARD, and cursor verbs: acknowledged
    /// (every statement reads a consistent snapshot of its own).
    Transaction,
    /// Anything else: refused with this reason.
    Refused(String),
}

/// Settings a client may SET (what psql, JDBC drivers, DBeaver, Metabase and Grafana send).
const COSMETIC_SETTINGS: [&str; 16] = [
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "timezone",
    "idle_in_transaction_session_timeout",
    "lock_timeout",
];

/// The class of `stmt`.
pub fn classify(stmt: &Statement) -> StatementClass {
    match stmt {
        Statement::Query(q) if writes(q) => refused(stmt),
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ExplainTable { .. } => StatementClass::Read,
        Statement::Explain { statement, .. } => match classify(statement) {
            StatementClass::Read => StatementClass::Read,
            _ => refused(stmt),
        },
        Statement::Set(set) => match set {
            Set::SingleAssignment { variable, .. } => {
                let name = variable.to_string().to_ascii_lowercase();
                if COSMETIC_SETTINGS.contains(&name.as_str()) {
                    StatementClass::SessionSetting(name)
                } else {
                    StatementClass::Refused(format!(
                        "SET {name} is not allowed: this server is read-only and only session \
                         settings ({}) may be set",
                        COSMETIC_SETTINGS.join(", ")
                    ))
                }
            }
            Set::SetTimeZone { .. } => StatementClass::SessionSetting("timezone".into()),
            Set::SetNames { .. } => StatementClass::SessionSetting("client_encoding".into()),
            Set::SetTransaction { .. } => StatementClass::Transaction,
            _ => refused(stmt),
        },
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Discard { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => StatementClass::Transaction,
        _ => refused(stmt),
    }
}

/// Whether a query's body or one of its CTEs is an INSERT, UPDATE, DELETE or MERGE.
fn writes(q: &Query) -> bool {
    fn body(e: &SetExpr) -> bool {
        match e {
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                true
            }
            SetExpr::Query(q) => writes(q),
            SetExpr::SetOperation { left, right, .. } => body(left) || body(right),
            _ => false,
        }
    }
    body(&q.body)
        || q.with
            .as_ref()
            .is_some_and(|w| w.cte_tables.iter().any(|c| writes(&c.query)))
}

fn refused(stmt: &Statement) -> StatementClass {
    let text = stmt.to_string();
    let verb: String = text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    StatementClass::Refused(format!(
        "cannot execute {verb}: this server is read-only (only queries are allowed)"
    ))
}

#[cfg(test)]
mod tests {
    use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    use super::*;

    fn class(sql: &str) -> StatementClass {
        let p = PostgresCompatibilityParser::new();
        let s = p.parse(sql).unwrap();
        classify(&s[0])
    }

    #[test]
    fn reads_pass_writes_are_refused() {
        for q in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "VALUES (1)",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "SHOW timezone",
        ] {
            assert_eq!(class(q), StatementClass::Read, "{q}");
        }
        for q in [
            "INSERT INTO samples VALUES (1)",
            "CREATE TABLE t (a int)",
            "DROP TABLE samples",
            "COPY samples TO '/tmp/x'",
            "DELETE FROM samples",
            "UPDATE samples SET value = 1",
            "EXPLAIN INSERT INTO samples VALUES (1)",
            "WITH x AS (SELECT 1) INSERT INTO samples SELECT 1",
            "WITH x AS (DELETE FROM samples RETURNING *) SELECT * FROM x",
            "SET datafusion.execution.target_partitions = 64",
        ] {
            assert!(
                matches!(class(q), StatementClass::Refused(_)),
                "{q}: {:?}",
                class(q)
            );
        }
        assert_eq!(
            class("SET DateStyle = 'ISO'"),
            StatementClass::SessionSetting("datestyle".into())
        );
        assert_eq!(class("BEGIN"), StatementClass::Transaction);
        let StatementClass::Refused(why) = class("DELETE FROM samples") else {
            unreachable!()
        };
        assert!(why.contains("read-only"), "{why}");
    }
}
