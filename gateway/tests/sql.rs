//! SQL from the binary: `POST /api/v1/sql` (JSON, CSV, Arrow) and the PostgreSQL wire protocol
//! through tokio-postgres (extended and simple protocols, SCRAM, cluster tokens as passwords,
//! scope, writes refused, Grafana's macro-expanded queries and health check), and Debian's psql
//! (`\dt`, `\d`).

use std::process::Command;

use crate::harness::*;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("fleetgate.yaml");
    std::fs::write(
        &p,
        "sql:
  memory_limit: 16777216
  max_connections: 6
clusters:
  - name: alpha
    token: tok-a
  - name: beta
    token: tok-b
users:
  - name: fleet
    password: fleet-pw
    clusters: [\"*\"]
  - name: team-a
    password: team-a-pw
    clusters: [\"al*\"]
",
    )
    .unwrap();
    p
}

/// Two clusters with `m{job="api"}` and `m{job="db"}`, four samples each, 10 s apart.
fn start(dir: &std::path::Path) -> (Gateway, i64) {
    let cfg = config(dir);
    let gw = Gateway::start(&dir.join("data"), Some(&cfg), &[]);
    let t0 = (now_ms() / 1000 - 600) * 1000;
    for token in ["tok-a", "tok-b"] {
        let samples: Vec<(i64, f64)> = (0..4).map(|i| (t0 + i * 10_000, i as f64)).collect();
        let body = encode(&[
            (vec![("__name__", "m"), ("job", "api")], samples.clone()),
            (vec![("__name__", "m"), ("job", "db")], samples),
        ]);
        let (code, text) = gw.write(Some(token), body);
        assert_eq!(code, 204, "{text}");
    }
    (gw, t0)
}

fn sql_http(
    gw: &Gateway,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(a) = auth {
        h.push(("Authorization".into(), a.into()));
    }
    http_exchange(&gw.addr, "POST", "/api/v1/sql", &h, body.as_bytes()).unwrap()
}

const FLEET: &str = "Basic ZmxlZXQ6ZmxlZXQtcHc="; // fleet:fleet-pw
const TEAM_A: &str = "Basic dGVhbS1hOnRlYW0tYS1wdw=="; // team-a:team-a-pw

#[test]
fn http_sql_formats_errors_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = start(dir.path());
    let q = "SELECT cluster, count(*) AS n, sum(value) AS total FROM samples GROUP BY cluster ORDER BY cluster";
    let (code, head, body) = sql_http(&gw, Some(FLEET), &[], q);
    assert_eq!(code, 200, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("application/json"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["columns"][0]["name"], "cluster");
    assert_eq!(v["columns"][1]["type"], "int8");
    assert_eq!(
        v["rows"],
        serde_json::json!([
            {"cluster": "alpha", "n": 8, "total": 12.0},
            {"cluster": "beta", "n": 8, "total": 12.0}
        ])
    );
    // form field and format=csv
    let form = format!("format=csv&query={}", q.replace(' ', "+"));
    let (code, head, body) = sql_http(
        &gw,
        Some(FLEET),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form,
    );
    assert_eq!(code, 200, "{body}");
    assert!(head.contains("text/csv"), "{head}");
    assert_eq!(body, "cluster,n,total\nalpha,8,12.0\nbeta,8,12.0\n");
    // CSV by Accept, with the labels map as JSON text
    let (code, _, body) = sql_http(
        &gw,
        Some(FLEET),
        &[("Accept", "text/csv")],
        "SELECT labels FROM samples WHERE cluster = 'alpha' AND labels['job'] = 'db' LIMIT 1",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "labels\n\"{\"\"job\"\":\"\"db\"\"}\"\n");
    // an empty result still has its header
    let (_, _, body) = sql_http(
        &gw,
        Some(FLEET),
        &[("Accept", "text/csv")],
        "SELECT cluster FROM samples WHERE cluster = 'nowhere'",
    );
    assert_eq!(body, "cluster\n");
    // Arrow IPC stream: starts with a continuation marker and a schema message
    let (code, head, body) = sql_http(
        &gw,
        Some(FLEET),
        &[("Accept", "application/vnd.apache.arrow.stream")],
        q,
    );
    assert_eq!(code, 200);
    assert!(
        head.contains("application/vnd.apache.arrow.stream"),
        "{head}"
    );
    assert!(body.as_bytes().starts_with(&[0xff, 0xff, 0xff, 0xff]) || body.starts_with('\u{fffd}'));
    // the scoped reader sees its cluster only, whatever the SQL says
    let (code, _, body) = sql_http(&gw, Some(TEAM_A), &[], q);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["rows"],
        serde_json::json!([{"cluster": "alpha", "n": 8, "total": 12.0}])
    );
    let (_, _, body) = sql_http(
        &gw,
        Some(TEAM_A),
        &[],
        "SELECT count(*) AS n FROM metrics.m WHERE cluster = 'beta' OR cluster <> 'beta'",
    );
    assert!(body.contains("\"n\":8"), "{body}");
    // errors: status before the body, Prometheus-shaped
    for (sql, status, needle) in [
        ("SELEC 1", 400, "parser error"),
        ("SELECT nope FROM samples", 400, "nope"),
        ("SELECT * FROM no_such_table", 400, "no_such_table"),
        ("INSERT INTO samples VALUES ('a')", 400, "read-only"),
        ("DROP TABLE samples", 400, "read-only"),
        ("COPY samples TO '/tmp/x.csv'", 400, "read-only"),
        (
            "SET datafusion.execution.target_partitions = 64",
            400,
            "SET",
        ),
        ("SELECT 1; SELECT 2", 400, "exactly one statement"),
        ("", 400, "no SQL given"),
    ] {
        let (code, _, body) = sql_http(&gw, Some(FLEET), &[], sql);
        assert_eq!(code, status, "{sql}: {body}");
        assert!(
            body.to_lowercase().contains(&needle.to_lowercase()),
            "{sql}: {body}"
        );
        assert!(body.contains("\"status\":\"error\""), "{sql}: {body}");
    }
    let (code, _, body) = sql_http(&gw, Some(FLEET), &[], "SELECT 1/0");
    assert!(code == 422 || code == 200, "{code} {body}");
    let (code, _, _) = sql_http(&gw, None, &[], q);
    assert_eq!(code, 401);
    let (code, _, _) = sql_http(&gw, Some("Basic ZmxlZXQ6d3Jvbmc="), &[], q);
    assert_eq!(code, 401);
    // nothing was written by the refused statements
    let (_, _, body) = sql_http(&gw, Some(FLEET), &[], "SELECT count(*) AS n FROM samples");
    assert!(body.contains("\"n\":16"), "{body}");
}

fn pg_connect(
    rt: &tokio::runtime::Runtime,
    gw: &Gateway,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (host, port) = gw.pg_addr.rsplit_once(':').unwrap();
    let conn_str = format!(
        "host={host} port={port} user={user} password={password} dbname=fleetgate connect_timeout=10"
    );
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    })
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no db error: {e}"))
}

#[test]
fn postgres_wire_with_tokio_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, t0) = start(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = pg_connect(&rt, &gw, "fleet", "fleet-pw").expect("SCRAM login");
    rt.block_on(async {
        // extended protocol with a parameter
        let rows = c
            .query(
                "SELECT cluster, count(*) AS n FROM samples WHERE cluster = $1 GROUP BY cluster",
                &[&"beta"],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, String>(0), "beta");
        assert_eq!(rows[0].get::<_, i64>(1), 8);
        // the metric's table: labels as columns, timestamptz, float8
        let rows = c
            .query(
                "SELECT job, timestamp, value FROM metrics.m WHERE cluster = 'alpha' ORDER BY job, timestamp",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 8);
        assert_eq!(rows[0].get::<_, String>(0), "api");
        let ts: std::time::SystemTime = rows[1].get(1);
        let ms = ts.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(ms, t0 + 10_000);
        assert_eq!(rows[3].get::<_, f64>(2), 3.0);
        // Grafana: the health check, then a macro-expanded time-series query (simple protocol)
        c.simple_query("-- ping").await.unwrap();
        let from = rfc3339(t0 - 1000);
        let to = rfc3339(t0 + 25_000);
        let grafana = format!(
            "SELECT floor(extract(epoch from timestamp)/10)*10 AS \"time\", job AS metric, avg(value) AS value \
             FROM metrics.m WHERE timestamp BETWEEN '{from}' AND '{to}' GROUP BY 1, 2 ORDER BY 1"
        );
        let msgs = c.simple_query(&grafana).await.unwrap();
        let rows: Vec<_> = msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(rows.len(), 6, "3 steps × 2 jobs");
        assert_eq!(rows[0].columns()[0].name(), "time");
        // Grafana's schema lookups
        let v = c
            .simple_query("SELECT current_setting('server_version_num')::int/100 AS version")
            .await
            .unwrap();
        match &v[1] {
            tokio_postgres::SimpleQueryMessage::Row(r) => assert_eq!(r.get(0), Some("1600")),
            other => panic!("{other:?}"),
        }
        let tables = c
            .query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
                &[&"public"],
            )
            .await
            .unwrap();
        let names: Vec<String> = tables.iter().map(|r| r.get(0)).collect();
        assert!(names.contains(&"samples".to_string()), "{names:?}");
        // session verbs
        c.batch_execute("SET application_name = 'grafana'; SET extra_float_digits = 3; BEGIN; COMMIT")
            .await
            .unwrap();
        let r = c.query_one("SHOW application_name", &[]).await.unwrap();
        assert_eq!(r.get::<_, String>(0), "grafana");
        let r = c.query_one("SELECT version()", &[]).await.unwrap();
        assert!(r.get::<_, String>(0).starts_with("PostgreSQL 16"));
        // writes are refused and change nothing
        for w in [
            "INSERT INTO samples VALUES ('x')",
            "CREATE TABLE t (a int)",
            "DELETE FROM samples",
            "COPY samples TO '/tmp/out.csv'",
            "SET datafusion.execution.target_partitions = 1",
        ] {
            let e = c.batch_execute(w).await.unwrap_err();
            assert_eq!(sqlstate(&e), "25006", "{w}: {e:?}");
        }
        let e = c.query("SELEC 1", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42601");
        // statement_timeout shortens a query; the connection stays usable
        let n = c.query_one("SELECT count(*) FROM samples", &[]).await.unwrap();
        assert_eq!(n.get::<_, i64>(0), 16);
    });
    // a scoped user and a cluster token as the password see one cluster only
    for (user, pw, cluster) in [("team-a", "team-a-pw", "alpha"), ("beta", "tok-b", "beta")] {
        let c = pg_connect(&rt, &gw, user, pw).unwrap_or_else(|e| panic!("{user}: {e}"));
        rt.block_on(async {
            let rows = c
                .query("SELECT DISTINCT cluster FROM samples", &[])
                .await
                .unwrap();
            let seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(seen, vec![cluster.to_string()], "{user}");
            let other = if cluster == "alpha" { "beta" } else { "alpha" };
            let n = c
                .query_one("SELECT count(*) FROM samples WHERE cluster = $1", &[&other])
                .await
                .unwrap();
            assert_eq!(n.get::<_, i64>(0), 0, "{user} reads {other}");
        });
    }
    // wrong password, unknown user, no password
    for (user, pw) in [("fleet", "wrong"), ("nobody", "x"), ("alpha", "tok-b")] {
        let e = pg_connect(&rt, &gw, user, pw).expect_err("login refused");
        assert_eq!(sqlstate(&e), "28P01", "{user}: {e:?}");
    }
    let (host, port) = gw.pg_addr.rsplit_once(':').unwrap();
    let e = rt
        .block_on(tokio_postgres::connect(
            &format!("host={host} port={port} user=fleet dbname=fleetgate"),
            tokio_postgres::NoTls,
        ))
        .err()
        .expect("no password");
    assert!(format!("{e:?}").contains("password"), "{e:?}");
}

/// `ms` as RFC 3339 UTC (what Grafana's `$__timeFilter` writes).
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Debian's psql: `\dt`, `\d metrics.m`, a query, and a refused write (simple protocol).
#[test]
#[ignore = "interop: needs Debian's postgresql-client (psql); run by .ci/run"]
fn interop_psql_describe_and_query() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = start(dir.path());
    let (host, port) = gw.pg_addr.rsplit_once(':').unwrap();
    let psql = |args: &[&str]| {
        let out = Command::new("psql")
            .args([
                "-h",
                host,
                "-p",
                port,
                "-U",
                "fleet",
                "-d",
                "fleetgate",
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(args)
            .env("PGPASSWORD", "fleet-pw")
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql is installed (apt-get install postgresql-client)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = psql(&["-c", "\\dt"]);
    assert!(ok, "{err}");
    assert!(out.contains("samples") && out.contains("series"), "{out}");
    let (ok, out, err) = psql(&["-c", "\\d metrics.m"]);
    assert!(ok, "{out} {err}");
    assert!(
        out.contains("job") && out.contains("timestamp") && out.contains("value"),
        "{out}"
    );
    let (ok, out, err) = psql(&[
        "-A",
        "-t",
        "-c",
        "SELECT count(*) FROM samples WHERE cluster = 'beta'",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "8");
    let (ok, _, err) = psql(&["-c", "DELETE FROM samples"]);
    assert!(!ok);
    assert!(err.contains("read-only"), "{err}");
    let out = Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            "fleet",
            "-d",
            "fleetgate",
            "-c",
            "SELECT 1",
        ])
        .env("PGPASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("password authentication failed for user \"fleet\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// DuckDB reading the Parquet files directly gives the same aggregates as our SQL.
#[test]
#[ignore = "interop: needs python3 with duckdb; run by .ci/run"]
fn interop_duckdb_agrees_with_sql() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = dir.path().join("data");
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let t0 = (now_ms() / 3_600_000 - 3) * 3_600_000;
    let pods: Vec<String> = (0..12).map(|i| format!("pod-{i}")).collect();
    for (token, scale) in [("tok-a", 1.0), ("tok-b", 2.5)] {
        let series: Vec<TestSeries<'_>> = pods
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                let ns = if i % 3 == 0 { "payments" } else { "web" };
                [
                    (
                        vec![
                            ("__name__", "container_memory_working_set_bytes"),
                            ("namespace", ns),
                            ("pod", p.as_str()),
                        ],
                        (0..480)
                            .map(|k| (t0 + k * 15_000, scale * (1e6 + (k * (i as i64 + 1)) as f64)))
                            .collect(),
                    ),
                    (
                        vec![
                            ("__name__", "container_cpu_usage_seconds_total"),
                            ("namespace", ns),
                            ("pod", p.as_str()),
                        ],
                        (0..480)
                            .map(|k| (t0 + k * 15_000, scale * 0.25 * k as f64))
                            .collect(),
                    ),
                ]
            })
            .collect();
        assert_eq!(gw.write(Some(token), encode(&series)).0, 204);
    }
    gw.stop(); // flushes to Parquet
    let gw = Gateway::start(&data, Some(&cfg), &[]);
    let ours = |sql: &str| -> serde_json::Value {
        let (code, _, body) = sql_http(&gw, Some(FLEET), &[], sql);
        assert_eq!(code, 200, "{sql}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["rows"].clone()
    };
    let by_cluster = ours(
        "SELECT cluster, metric, count(*) AS n, sum(value) AS s, min(value) AS lo, max(value) AS hi \
         FROM samples GROUP BY cluster, metric ORDER BY cluster, metric",
    );
    let by_namespace = ours(
        "SELECT cluster, namespace, avg(value) AS a FROM metrics.container_memory_working_set_bytes \
         GROUP BY cluster, namespace ORDER BY cluster, namespace",
    );
    let by_hour = ours(
        "SELECT date_trunc('hour', timestamp) AS h, count(*) AS n FROM samples \
         WHERE metric = 'container_cpu_usage_seconds_total' GROUP BY 1 ORDER BY 1",
    );
    let script = format!(
        r#"
import duckdb, json, math
d = {data:?}
ours = json.loads({ours:?})
con = duckdb.connect()
S = f"read_parquet('{{d}}/samples/**/*.parquet', hive_partitioning=true)"
C = f"read_parquet('{{d}}/catalog/*.parquet')"
def close(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b
def check(name, got, want):
    assert len(got) == len(want), (name, got, want)
    for g, w in zip(got, want):
        assert all(close(x, y) for x, y in zip(g, w)), (name, g, w)
    print(name, "agrees on", len(got), "rows")
rows = con.execute(f"SELECT cluster, metric, count(*), sum(value), min(value), max(value) FROM {{S}} GROUP BY ALL ORDER BY 1, 2").fetchall()
check("by cluster", rows, [[r["cluster"], r["metric"], r["n"], r["s"], r["lo"], r["hi"]] for r in ours["by_cluster"]])
rows = con.execute(f"SELECT c.cluster, c.labels['namespace'], avg(s.value) FROM {{S}} s JOIN {{C}} c USING (series_id) WHERE s.metric = 'container_memory_working_set_bytes' GROUP BY ALL ORDER BY 1, 2").fetchall()
rows = [[r[0], r[1][0] if isinstance(r[1], list) else r[1], r[2]] for r in rows]
check("by namespace", rows, [[r["cluster"], r["namespace"], r["a"]] for r in ours["by_namespace"]])
rows = con.execute(f"SELECT count(*) FROM {{S}} WHERE metric = 'container_cpu_usage_seconds_total' GROUP BY CAST(epoch(timestamp) AS BIGINT) // 3600 ORDER BY CAST(epoch(timestamp) AS BIGINT) // 3600").fetchall()
check("by hour", rows, [[r["n"]] for r in ours["by_hour"]])
"#,
        data = data.display().to_string(),
        ours = serde_json::json!({
            "by_cluster": by_cluster,
            "by_namespace": by_namespace,
            "by_hour": by_hour,
        })
        .to_string()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 is required");
    assert!(
        out.status.success(),
        "DuckDB disagrees (pip install duckdb):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A group-by far over `sql.memory_limit` fails with a clear error (HTTP 503 + Retry-After,
/// SQLSTATE 53200) while writes go on; `statement_timeout` and cancel requests stop a query and
/// the connection stays usable; connections past `sql.max_connections` are refused (53300).
#[test]
fn sql_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, t0) = start(dir.path());
    let huge = "SELECT (x * 7919) % 20000000 AS k, count(*) FROM generate_series(1, 20000000) t(x) GROUP BY 1 ORDER BY 2 DESC LIMIT 1";
    let (code, head, body) = sql_http(&gw, Some(FLEET), &[], huge);
    assert_eq!(code, 503, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );
    assert!(body.contains("Resources exhausted"), "{body}");
    // curl -d sends SQL as a form without fields: still the SQL
    let (code, _, body) = sql_http(
        &gw,
        Some(FLEET),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "SELECT count(*) AS n FROM samples",
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"n\":16"), "{body}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = pg_connect(&rt, &gw, "fleet", "fleet-pw").unwrap();
    rt.block_on(async {
        let e = c.simple_query(huge).await.unwrap_err();
        assert_eq!(sqlstate(&e), "53200", "{e:?}");
        // ingest is not held up by SQL
        let body = encode(&[(
            vec![("__name__", "m"), ("job", "late")],
            vec![(t0 + 60_000, 1.0)],
        )]);
        assert_eq!(gw.write(Some("tok-a"), body).0, 204);
        // statement_timeout
        c.batch_execute("SET statement_timeout = '300ms'")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let e = c
            .simple_query("SELECT count(*) FROM generate_series(1, 100000000000) t(x)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "57014", "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        c.batch_execute("SET statement_timeout = 0").await.unwrap();
        // a cancel request from another connection
        let token = c.cancel_token();
        let canceler = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            token.cancel_query(tokio_postgres::NoTls).await
        });
        let e = c
            .simple_query("SELECT count(*) FROM generate_series(1, 100000000000) t(x)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "57014", "{e:?}");
        canceler.await.unwrap().unwrap();
        let n = c
            .query_one("SELECT count(*) FROM samples", &[])
            .await
            .unwrap();
        assert_eq!(n.get::<_, i64>(0), 17);
    });
    // sql.max_connections = 6: five more fit, the seventh is refused
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(pg_connect(&rt, &gw, "fleet", "fleet-pw").unwrap());
    }
    let e = pg_connect(&rt, &gw, "fleet", "fleet-pw").expect_err("refused");
    assert_eq!(sqlstate(&e), "53300", "{e:?}");
    drop(held);
    drop(c);
    // the slots come back
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match pg_connect(&rt, &gw, "fleet", "fleet-pw") {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                assert_eq!(sqlstate(&e), "53300", "{e:?}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// With TLS configured, psql connects with `sslmode=require` (SCRAM, and a token known only by its
/// digest as a cleartext password over TLS) and a plaintext connection is refused.
#[test]
#[ignore = "interop: needs Debian's postgresql-client (psql); run by .ci/run"]
fn interop_psql_over_tls() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let cfg = dir.path().join("fleetgate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "http:\n  tls_cert_file: {}\n  tls_key_file: {}\nclusters:\n  - name: alpha\n    token: tok-a\n  - name: beta\n    token_sha256: {}\nusers:\n  - name: fleet\n    password: fleet-pw\n    clusters: [\"*\"]\n",
            cert.display(),
            key.display(),
            sha256_hex("tok-b")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--otlp-grpc-addr",
            "off",
            "--pg-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let _guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(i) = line.find(" pg_addr=") {
                let a: String = line[i + 9..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(a);
            }
        }
    });
    let addr = rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let psql = |user: &str, pw: &str, sslmode: &str| {
        let out = Command::new("psql")
            .arg(format!(
                "host={host} port={port} user={user} dbname=fleetgate sslmode={sslmode}"
            ))
            .args(["-X", "-A", "-t", "-c", "SELECT count(*) FROM samples"])
            .env("PGPASSWORD", pw)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql is installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // the store opens shortly after the listener
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (ok, err) = psql("fleet", "fleet-pw", "require");
        if ok {
            break;
        }
        assert!(
            err.contains("starting up") && std::time::Instant::now() < deadline,
            "{err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (ok, err) = psql("beta", "tok-b", "require");
    assert!(ok, "digest token over TLS: {err}");
    let (ok, err) = psql("beta", "tok-a", "require");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    let (ok, err) = psql("fleet", "fleet-pw", "disable");
    assert!(!ok && err.contains("TLS connections only"), "{err}");
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}
