//! SQL behaviour on a fixed data set in a real store (half in Parquet, half in the memtable):
//! the sqllogictest files in `tests/sql/` (`scope_<cluster>_*.slt` run as a reader of that one
//! cluster, the rest as the whole fleet), and what is not a query result: EXPLAIN's pushdown, the
//! memory pool, the read-only guard, and `promql()` against the engine itself.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use fleetgate_query::Error;
use fleetgate_query::promql::{Engine, EngineOptions, Value};
use fleetgate_query::read::ReadView;
use fleetgate_query::scope::Scope;
use fleetgate_query::sql::{SqlEngine, SqlOptions, SqlSession};
use fleetgate_store::{Labels, SampleRef, Store, StoreOptions};
use futures::TryStreamExt;
use sqllogictest::{DBOutput, DefaultColumnType};

/// 2026-01-01T00:00:00Z.
pub(crate) const T0: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;
const GIB: f64 = 1_073_741_824.0;

fn lbl(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())))
}

async fn write(store: &Store, labels: &Labels, pts: impl Iterator<Item = (i64, f64)>) {
    let (id, _) = store.series_id(labels).unwrap();
    let samples: Vec<SampleRef> = pts
        .map(|(t, v)| SampleRef {
            series: id,
            timestamp_ms: t,
            value: v,
        })
        .collect();
    store.append(&samples).await.unwrap();
}

/// A series' value at minute `k`.
type ValueAt = Box<dyn Fn(i64) -> f64>;

/// The fixed data set: one sample a minute over `[T0, T0 + 59m]`; minutes 0–29 flushed to
/// Parquet, 30–59 in the memtable.
async fn fixture(dir: &Path) -> Arc<Store> {
    let store = Store::open(StoreOptions {
        data_dir: dir.to_path_buf(),
        ..StoreOptions::default()
    })
    .await
    .unwrap();
    let mem = "container_memory_working_set_bytes";
    let series: Vec<(Labels, ValueAt)> = vec![
        (
            lbl(&[
                ("__name__", mem),
                ("cluster", "a"),
                ("namespace", "web"),
                ("pod", "web-1"),
            ]),
            Box::new(|_| GIB),
        ),
        (
            lbl(&[
                ("__name__", mem),
                ("cluster", "a"),
                ("namespace", "db"),
                ("pod", "db-1"),
            ]),
            Box::new(|k| 2.0 * GIB + k as f64),
        ),
        (
            lbl(&[
                ("__name__", mem),
                ("cluster", "b"),
                ("namespace", "web"),
                ("pod", "web-2"),
            ]),
            Box::new(|_| 3.0 * GIB),
        ),
        (
            lbl(&[
                ("__name__", "up"),
                ("cluster", "a"),
                ("instance", "n1"),
                ("job", "node"),
            ]),
            Box::new(|_| 1.0),
        ),
        (
            lbl(&[
                ("__name__", "up"),
                ("cluster", "b"),
                ("instance", "n2"),
                ("job", "node"),
            ]),
            Box::new(|k| if k < 30 { 1.0 } else { 0.0 }),
        ),
        (
            lbl(&[
                ("__name__", "http_requests_total"),
                ("cluster", "a"),
                ("code", "200"),
            ]),
            Box::new(|k| 60.0 * k as f64),
        ),
        (
            lbl(&[
                ("__name__", "odd_labels"),
                ("cluster", "b"),
                ("value", "v"),
                ("timestamp", "t"),
            ]),
            Box::new(|_| 7.0),
        ),
    ];
    for half in [0..30i64, 30..60] {
        for (labels, f) in &series {
            write(&store, labels, half.clone().map(|k| (T0 + k * MIN, f(k)))).await;
        }
        if half.start == 0 {
            store.flush().await.unwrap();
        }
    }
    store
}

fn engine(memory_limit: usize) -> SqlEngine {
    SqlEngine::new(SqlOptions {
        memory_limit,
        target_partitions: 2,
        ..SqlOptions::default()
    })
    .unwrap()
}

fn session(engine: &SqlEngine, store: &Arc<Store>, scope: Scope) -> SqlSession {
    let view = Arc::new(ReadView::new(Arc::clone(store), scope));
    engine.session(view, EngineOptions::default()).unwrap()
}

async fn collect(s: &SqlSession, sql: &str) -> Result<Vec<RecordBatch>, Error> {
    s.execute(sql)
        .await?
        .try_collect()
        .await
        .map_err(fleetgate_query::sql::from_datafusion)
}

/// Every value as text (NULL for null), rows in order.
fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<ArrayFormatter<'_>> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .zip(b.columns())
                    .map(|(f, c)| {
                        if c.is_null(r) {
                            "NULL".to_string()
                        } else {
                            let mut s = f.value(r).to_string();
                            // integral floats as integers, as sqllogictest files write them
                            if c.data_type() == &arrow::datatypes::DataType::Float64
                                && let Some(t) = s.strip_suffix(".0")
                            {
                                s = t.to_string();
                            }
                            if s.is_empty() { "(empty)".into() } else { s }
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

/// The store as sqllogictest sees it.
struct Db {
    session: SqlSession,
}

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let batches = collect(&self.session, sql)
            .await
            .map_err(|e| DbError(e.to_string()))?;
        let rows = rows(&batches);
        let width = batches.first().map_or(0, RecordBatch::num_columns);
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no .slt files in {}", dir.display());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path()).await;
    let engine = Arc::new(engine(256 << 20));
    for file in slt_files() {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let scope = match name.strip_prefix("scope_") {
            Some(rest) => Scope::cluster(rest.split('_').next().unwrap()),
            None => Scope::fleet(),
        };
        let (engine, store) = (Arc::clone(&engine), Arc::clone(&store));
        let mut runner = sqllogictest::Runner::new(move || {
            let db = Db {
                session: session(&engine, &store, scope.clone()),
            };
            async move { Ok::<_, DbError>(db) }
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_pushdown_and_the_scope() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path()).await;
    let engine = engine(256 << 20);
    let s = session(&engine, &store, Scope::cluster("a"));
    let plan = rows(
        &collect(
            &s,
            "EXPLAIN SELECT namespace, avg(value) FROM metrics.container_memory_working_set_bytes \
             WHERE namespace = 'web' AND timestamp >= TIMESTAMP '2026-01-01T00:10:00Z' GROUP BY 1",
        )
        .await
        .unwrap(),
    );
    let text: String = plan
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains(
            "StoreScanExec: table=metrics.container_memory_working_set_bytes, \
             matchers={__name__=\"container_memory_working_set_bytes\", namespace=\"web\"}, \
             time_ms=[1767226200000, ∞], scope=a, projection=[namespace, timestamp, value]"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_ddl_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path()).await;
    let engine = engine(256 << 20);
    let s = session(&engine, &store, Scope::fleet());
    for sql in [
        "INSERT INTO samples (cluster, metric, value) VALUES ('x', 'y', 1)",
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE samples",
        "COPY (SELECT * FROM samples) TO '/tmp/fleetgate-copy.csv'",
        "SET datafusion.execution.target_partitions = 64",
        "DELETE FROM samples",
        "EXPLAIN ANALYZE INSERT INTO samples (value) VALUES (1)",
        "WITH x AS (SELECT 1) INSERT INTO samples (value) SELECT 1",
    ] {
        match collect(&s, sql).await {
            Err(Error::ReadOnly(why)) => assert!(
                why.contains("read-only")
                    || why.contains("not supported")
                    || why.contains("not allowed"),
                "{sql}: {why}"
            ),
            other => panic!("{sql}: expected a read-only refusal, got {other:?}"),
        }
    }
    assert!(!Path::new("/tmp/fleetgate-copy.csv").exists());
    // DataFusion's own DDL is not even PostgreSQL syntax
    assert!(matches!(
        collect(
            &s,
            "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'"
        )
        .await,
        Err(Error::SqlParse(_))
    ));
    // reading files through a URL table is off
    assert!(matches!(
        collect(&s, "SELECT * FROM '/etc/passwd'").await,
        Err(Error::SqlPlan(_))
    ));
    let n = rows(&collect(&s, "SELECT count(*) FROM samples").await.unwrap());
    assert_eq!(n, [["420"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_pool_fails_clearly_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path()).await;
    // a pool too small for a sort of every sample with its labels map
    let small = engine(1 << 20);
    let s = session(&small, &store, Scope::fleet());
    let big = "SELECT s1.value, s2.value, s1.labels FROM samples s1 JOIN samples s2 \
               ON s1.metric = s2.metric ORDER BY s1.labels, s2.value";
    match collect(&s, big).await {
        Err(Error::ResourcesExhausted(msg)) => {
            assert!(msg.contains("Resources exhausted"), "{msg}")
        }
        other => panic!(
            "expected resources exhausted, got {:?}",
            other.map(|b| b.len())
        ),
    }
    // the failed query's other partitions stop (and free their memory) as their tasks end
    for _ in 0..200 {
        if small.memory_reserved() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        small.memory_reserved(),
        0,
        "the failed query released its memory"
    );
    let n = rows(&collect(&s, "SELECT count(*) FROM series").await.unwrap());
    assert_eq!(n, [["7"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_table_function_answers_as_the_engine_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path()).await;
    let engine = engine(256 << 20);
    let s = session(&engine, &store, Scope::fleet());
    let q = "sum by (cluster) (rate(http_requests_total[5m]))";
    let (start, end, step) = (T0 + 10 * MIN, T0 + 50 * MIN, 5 * MIN);
    let got = rows(
        &collect(
            &s,
            &format!(
                "SELECT cluster, CAST(timestamp AS BIGINT) AS t, value FROM promql('{q}', \
                 TIMESTAMP '2026-01-01T00:10:00Z', TIMESTAMP '2026-01-01T00:10:00Z' + INTERVAL '40 minutes', \
                 INTERVAL '5 minutes') ORDER BY cluster, t"
            ),
        )
        .await
        .unwrap(),
    );
    let view = ReadView::new(Arc::clone(&store), Scope::fleet());
    let Value::Matrix(m) = Engine::new(EngineOptions::default())
        .range(&view, q, start, end, step)
        .await
        .unwrap()
    else {
        panic!("not a matrix")
    };
    let mut want: Vec<Vec<String>> = Vec::new();
    for series in &m {
        for (t, v) in &series.points {
            want.push(vec![
                series.labels.get("cluster").unwrap().to_string(),
                // CAST(timestamptz AS BIGINT) is in the column's unit, milliseconds
                t.to_string(),
                v.to_string(),
            ]);
        }
    }
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // the scope applies to promql() too
    let scoped = session(&engine, &store, Scope::cluster("b"));
    let got = rows(
        &collect(
            &scoped,
            "SELECT DISTINCT cluster FROM promql('up', TIMESTAMP '2026-01-01T00:10:00Z')",
        )
        .await
        .unwrap(),
    );
    assert_eq!(got, [["b"]]);
}

/// Staleness markers are not rows (as in the Prometheus API): aggregates see the values only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staleness_markers_are_not_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions {
        data_dir: dir.path().to_path_buf(),
        ..StoreOptions::default()
    })
    .await
    .unwrap();
    let stale = fleetgate_query::promql::stale_nan();
    let l = lbl(&[("__name__", "gone"), ("cluster", "a")]);
    write(
        &store,
        &l,
        [(1_000, 3.0), (2_000, stale), (3_000, 1.0), (4_000, stale)].into_iter(),
    )
    .await;
    let engine = engine(256 << 20);
    let s = session(&engine, &store, Scope::fleet());
    let got = rows(
        &collect(
            &s,
            "SELECT count(*), min(value), max(value), sum(value) FROM samples",
        )
        .await
        .unwrap(),
    );
    assert_eq!(got, vec![vec!["2", "1", "3", "4"]]);
    let got = rows(
        &collect(&s, "SELECT count(*) FROM metrics.gone")
            .await
            .unwrap(),
    );
    assert_eq!(got, vec![vec!["2"]]);
}
