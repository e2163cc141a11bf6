//! Faults, each broken the way an operator or an attacker broke it: queries that outlive
//! their run, a statement timeout SQLite does not keep by itself, a source that goes away
//! mid-run, a store under a big write.

use std::time::{Duration, Instant};

use invariantd::config::SourceKind;
use sqlx::{Connection, Row};

use crate::harness::{TestDb, Workdir, http, terminate_within};

/// How many of invariantd's queries containing `marker` the server is running now.
async fn running(db: &TestDb, marker: &str) -> i64 {
    match db.kind {
        SourceKind::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND application_name = 'invariantd' AND strpos(query, $1) > 0",
            )
            .bind(marker)
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get(0)
        }
        SourceKind::MySql => {
            let mut c = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
            sqlx::query(
                "SELECT count(*) FROM information_schema.processlist WHERE command IN ('Query', 'Execute') \
                 AND id <> CONNECTION_ID() AND db = DATABASE() AND LOCATE(?, info) > 0",
            )
            .bind(marker)
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get(0)
        }
        SourceKind::Sqlite => unreachable!(),
    }
}

/// A daemon stopped in the middle of a minute-long query leaves nothing running on the
/// server: the query is cancelled there before the daemon exits.
async fn abandoned_query_is_stopped_on_the_server(kind: SourceKind, sleep: &str, marker: &str) {
    let db = TestDb::new(kind, "abandon").await;
    let config = format!(
        "sources:\n  db: {{ url: \"{}\", statement_timeout: 90s }}\nrules: [rules/]\n",
        db.url
    );
    let rules = format!(
        "name: slow\nevery: 1h\nkey: id\ndatasets:\n  t: {{ source: db, query: \"SELECT 1 AS id FROM (SELECT {sleep}) AS s\" }}\nassert: t != null\n"
    );
    let workdir = Workdir::raw(&config, &rules);
    let (mut child, _) = workdir.spawn_daemon("", std::process::Stdio::null()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while running(&db, marker).await == 0 {
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let status = terminate_within(&mut child, Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    // By the time the daemon has exited, the server has stopped the query (a moment for the
    // server's own bookkeeping to catch up).
    let exited = Instant::now();
    while running(&db, marker).await > 0 {
        assert!(
            exited.elapsed() < Duration::from_secs(1),
            "the query kept running on the server after the daemon exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn postgres_query_of_a_stopped_daemon_is_cancelled_on_the_server() {
    abandoned_query_is_stopped_on_the_server(SourceKind::Postgres, "pg_sleep(61)", "pg_sleep(61)")
        .await;
}

#[tokio::test]
async fn mariadb_query_of_a_stopped_daemon_is_killed_on_the_server() {
    abandoned_query_is_stopped_on_the_server(SourceKind::MySql, "SLEEP(61)", "SLEEP(61)").await;
}

/// CPU seconds a process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test]
async fn sqlite_statement_timeout_interrupts_the_query_on_time() {
    let db = TestDb::new(SourceKind::Sqlite, "spin").await;
    let config = format!(
        "sources:\n  db: {{ url: \"{}\", statement_timeout: 2s }}\nrules: [rules/]\n",
        db.url
    );
    // Counts to a billion before it returns its one row: over a minute of CPU.
    let rules = "name: spin\nevery: 1h\nkey: id\ndatasets:\n  t: { source: db, query: \"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT max(x) AS id FROM c\" }\nassert: t != null\n";
    let workdir = Workdir::raw(&config, rules);
    let (mut child, port) = workdir.spawn_daemon("", std::process::Stdio::null()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let (_, body) = http(port, "GET", "/api/v1/runs?rule=spin");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(run) = body["items"].as_array().and_then(|a| a.first()) {
            break run.clone();
        }
        assert!(Instant::now() < deadline, "the run never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["outcome"], "unknown", "{run}");
    assert_eq!(run["error"]["kind"], "timeout", "{run}");
    let at =
        |field: &str| chrono::DateTime::parse_from_rfc3339(run[field].as_str().unwrap()).unwrap();
    let took = (at("finished_at") - at("started_at")).num_milliseconds();
    assert!(
        (2000..3000).contains(&took),
        "the run took {took} ms with a 2 s statement timeout: {run}"
    );
    // And the query no longer runs: the daemon is idle.
    let before = cpu_seconds(child.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_seconds(child.id()) - before;
    assert!(
        used < 0.3,
        "the daemon used {used} s of CPU in 2 s after the timeout"
    );
    terminate_within(&mut child, Duration::from_secs(15)).await;
}
