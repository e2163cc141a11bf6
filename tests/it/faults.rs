//! Faults, each broken the way an operator or an attacker broke it: queries that outlive
//! their run, a statement timeout SQLite does not keep by itself, a source that goes away
//! mid-run, a store under a big write.

use std::time::{Duration, Instant};

use invariantd::config::SourceKind;
use sqlx::Connection;

use crate::harness::{TestDb, Workdir, eventually, http, running, terminate_within};

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

#[tokio::test]
async fn a_run_recording_ten_thousand_violations_holds_up_no_other_rule() {
    let db = TestDb::new(SourceKind::Sqlite, "bigwrite").await;
    db.exec_str(&[
        "CREATE TABLE big (id INTEGER PRIMARY KEY, note TEXT)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
         INSERT INTO big SELECT i, printf('%.400c', 'x') FROM n",
        "CREATE TABLE small (id INTEGER PRIMARY KEY)",
        "INSERT INTO small VALUES (1)",
    ])
    .await;
    let config = format!(
        "sources:\n  db: {{ url: \"{}\" }}\nrules: [rules/]\n",
        db.url
    );
    let mut rules = vec![
        "name: big\nevery: 1h\nkey: id\ndatasets:\n  b: { source: db, query: \"SELECT id, note FROM big\" }\nassert: b.note == ''\n".to_string(),
    ];
    const SMALL: usize = 40;
    for n in 0..SMALL {
        rules.push(format!(
            "name: small_{n}\nevery: 1s\nkey: id\ndatasets:\n  s: {{ source: db, query: \"SELECT id FROM small\" }}\nassert: s != null\n"
        ));
    }
    let workdir = Workdir::raw(&config, &rules.join("---\n"));
    let (mut child, port) = workdir.spawn_daemon("", std::process::Stdio::null()).await;
    let store = format!(
        "sqlite://{}",
        workdir.path().join("invariantd.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&store).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let big_recorded: i64 = loop {
        let recorded: Option<i64> = sqlx::query_scalar("SELECT 1 FROM runs WHERE rule = 'big'")
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        if recorded.is_some() {
            break chrono::Utc::now().timestamp_micros();
        }
        assert!(Instant::now() < deadline, "the big run never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Two more seconds of small runs after the big one was recorded.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM violations WHERE state = 'open'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(open, 10_000);

    // Each small rule ran about every second throughout, the big recording included.
    let runs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT rule, started_us FROM runs WHERE rule <> 'big' ORDER BY rule, started_us",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut worst = (0, 0);
    for pair in runs.windows(2) {
        if pair[0].0 == pair[1].0 && pair[1].1 - pair[0].1 > worst.0 {
            worst = (pair[1].1 - pair[0].1, pair[1].1);
        }
    }
    let big_started: i64 = sqlx::query_scalar("SELECT started_us FROM runs WHERE rule = 'big'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let at = |us: i64| (us - big_started) / 1000;
    let timing = format!(
        "the big run was recorded by {} ms; the longest wait between two runs of a small rule was {} ms, ending {} ms after the big run started",
        at(big_recorded),
        worst.0 / 1000,
        at(worst.1)
    );
    let (_, metrics) = http(port, "GET", "/metrics");
    let skipped: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("invariantd_rule_runs_skipped_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(
        skipped.is_empty(),
        "{timing}; runs were skipped: {skipped:?}"
    );
    assert!(worst.0 <= 2_000_000, "{timing}");
    terminate_within(&mut child, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn a_postgres_source_that_goes_away_mid_run_is_unknown_and_recovers_without_resolving() {
    let db = TestDb::new(SourceKind::Postgres, "goesaway").await;
    db.exec_str(&[
        "CREATE TABLE orders (id INT PRIMARY KEY, ok BOOLEAN)",
        "INSERT INTO orders VALUES (1, true), (2, false), (3, false)",
    ])
    .await;
    let (proxy, url) = crate::harness::Proxy::in_front_of(&db).await;
    let config = format!(
        "sources:\n  db: {{ url: \"{url}\", connect_timeout: 2s, statement_timeout: 10s }}\nrules: [rules/]\n"
    );
    // Each run takes about half a second, so the cut lands in the middle of one.
    let rules = "name: ok\nevery: 1s\nkey: id\ndatasets:\n  o: { source: db, query: \"SELECT id, ok FROM orders, pg_sleep(0.5)\" }\nassert: o.ok\n";
    let workdir = Workdir::raw(&config, rules);
    let (mut child, port) = workdir.spawn_daemon("", std::process::Stdio::null()).await;
    let store = format!(
        "sqlite://{}",
        workdir.path().join("invariantd.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&store).await.unwrap();
    let open_ids = async |conn: &mut sqlx::SqliteConnection| -> Vec<i64> {
        sqlx::query_scalar("SELECT id FROM violations WHERE state = 'open' ORDER BY id")
            .fetch_all(conn)
            .await
            .unwrap()
    };
    // First run after `since`, with its outcome, waiting at most `limit` for it to finish.
    let first_run_after = async |conn: &mut sqlx::SqliteConnection,
                                 since: i64,
                                 outcome: &str,
                                 limit: Duration|
           -> i64 {
        let deadline = Instant::now() + limit;
        loop {
            let at: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(finished_us) FROM runs WHERE started_us >= $1 AND outcome = $2",
            )
            .bind(since)
            .bind(outcome)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            if let Some(at) = at {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "no {outcome} run within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let now_us = || chrono::Utc::now().timestamp_micros();
    first_run_after(&mut conn, 0, "fail", Duration::from_secs(20)).await;
    let before = open_ids(&mut conn).await;
    assert_eq!(before.len(), 2);

    // The database goes away, mid-run.
    while running(&db, "pg_sleep(0.5)").await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut = now_us();
    proxy.cut();
    let unknown = first_run_after(
        &mut conn,
        cut - 1_000_000,
        "unknown",
        Duration::from_secs(5),
    )
    .await;
    let took = (unknown - cut) / 1000;
    assert!(took < 2000, "unknown {took} ms after the cut");
    // The run it cut is `query_failed` (the connection was lost); the next cannot connect, and
    // the source is down.
    let down = loop {
        let (_, metrics) = http(port, "GET", "/metrics");
        if metrics.contains("invariantd_source_up{source=\"db\"} 0") {
            break (now_us() - cut) / 1000;
        }
        assert!(now_us() - cut < 5_000_000, "the source never looked down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(down < 2500, "source_up was 0 only {down} ms after the cut");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        open_ids(&mut conn).await,
        before,
        "a violation changed while the source was away"
    );

    // It comes back.
    let back = now_us();
    proxy.restore();
    let judged = first_run_after(&mut conn, back, "fail", Duration::from_secs(5)).await;
    let took = (judged - back) / 1000;
    assert!(
        took < 2500,
        "judged again {took} ms after the source came back"
    );
    // The metrics follow the run's row in the store by a moment: wait for them.
    eventually(Duration::from_secs(5), "source_up back to 1", || {
        http(port, "GET", "/metrics")
            .1
            .contains("invariantd_source_up{source=\"db\"} 1")
    })
    .await;
    assert_eq!(
        open_ids(&mut conn).await,
        before,
        "violations were resolved and opened again"
    );
    terminate_within(&mut child, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn sigkill_at_random_points_leaves_a_store_a_fresh_sweep_agrees_with() {
    let db = TestDb::new(SourceKind::Sqlite, "sigkill").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER PRIMARY KEY, ok INTEGER)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
         INSERT INTO t SELECT i, 1 FROM n",
    ])
    .await;
    let config = format!(
        "sources:\n  db: {{ url: \"{}\" }}\nhttp: {{ listen: \"127.0.0.1:0\" }}\nrules: [rules/]\n",
        db.url
    );
    let rules = "name: ok\nevery: 1s\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id, ok FROM t\" }\nassert: t.ok == 1\n";
    let workdir = Workdir::raw(&config, rules);
    // A fixed seed: the same kill points at every run of the test.
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut random = |below: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % below
    };
    for _ in 0..20 {
        // About half the keys change their verdict before each start: big recordings.
        let flip = random(1_000_000);
        db.exec(&[format!(
            "UPDATE t SET ok = CASE WHEN ((id * 2654435761 + {flip}) % 7) < 3 THEN 0 ELSE 1 END"
        )])
        .await;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .args(["run"])
            .current_dir(workdir.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(random(2500))).await;
        crate::harness::kill(&child, "KILL");
        let mut child = child;
        child.wait().unwrap();
    }

    let store = format!(
        "sqlite://{}",
        workdir.path().join("invariantd.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&store).await.unwrap();
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT key FROM violations WHERE state = 'open' GROUP BY rule, key HAVING count(*) > 1)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(duplicates, 0, "a key has two open violations");
    // The counters agree with the rows, whatever was cut half-way.
    let counters = async |conn: &mut sqlx::SqliteConnection| -> (i64, i64, i64) {
        let counter = |name: &'static str| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(SUM(value), 0) FROM rule_counters WHERE name = $1",
            )
            .bind(name)
        };
        let detected = counter("violations_detected")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let resolved = counter("violations_resolved")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let open = sqlx::query_scalar("SELECT count(*) FROM violations WHERE state = 'open'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        (detected, resolved, open)
    };
    let (detected, resolved, open) = counters(&mut conn).await;
    assert_eq!(detected - resolved, open, "counters disagree with the rows");

    // One clean run later, the store holds exactly what a fresh sweep finds.
    let out = workdir.cli(&["run", "--once"]);
    assert!(
        out.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stored: Vec<String> =
        sqlx::query_scalar("SELECT key FROM violations WHERE state = 'open'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    stored.sort();
    let runs = workdir.run().await;
    let mut fresh = crate::harness::keys(&runs[0]);
    fresh.sort();
    assert!(!fresh.is_empty());
    assert_eq!(stored, fresh);
    let (detected, resolved, open) = counters(&mut conn).await;
    assert_eq!(detected - resolved, open);
}

/// Rules whose assertion over 50 rows a key takes 50⁴ steps: over the budget of one key.
fn costly_rules(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "name: costly_{i}\nevery: 1s\nkey: k\ndatasets:\n  items: {{ source: db, query: \"SELECT k, n FROM items\", many: true }}\n\
                 assert: items.all(a, items.all(b, items.all(c, items.all(d, a.n + b.n + c.n + d.n >= 0))))\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test]
async fn an_assertion_over_its_budget_is_unknown_and_never_starves_the_daemon() {
    let db = TestDb::new(SourceKind::Sqlite, "costly").await;
    let mut setup = vec!["CREATE TABLE items (k INTEGER, n INTEGER)".to_string()];
    for k in 1..=3 {
        for n in 0..50 {
            setup.push(format!("INSERT INTO items VALUES ({k}, {n})"));
        }
    }
    db.exec(&setup).await;
    let config = format!(
        "sources:\n  db: {{ url: \"{}\" }}\nrules: [rules/]\nshutdown_grace: 3s\n",
        db.url
    );
    let workdir = Workdir::raw(&config, &costly_rules(3));

    // `check` ends, with the run unknown for its budget.
    let started = Instant::now();
    let out = workdir.cli(&["check", "costly_0", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["rules"][0];
    assert_eq!(run["outcome"], "unknown", "{run}");
    assert_eq!(run["error"]["kind"], "timeout", "{run}");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("evaluation budget of 1000000 steps for key 1")
            && message.contains("rules.yaml:6:9"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "check took {:?}",
        started.elapsed()
    );

    // Three such rules every second on a daemon: the probes and /metrics still answer at
    // once, every run is unknown (timeout), and a SIGTERM ends the process.
    let (mut child, port) = workdir.spawn_daemon("", std::process::Stdio::null()).await;
    for _ in 0..20 {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let asked = Instant::now();
            let (status, _) = http(port, "GET", path);
            assert_eq!(status, 200, "{path}");
            assert!(
                asked.elapsed() < Duration::from_millis(500),
                "{path} took {:?}",
                asked.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = http(port, "GET", "/metrics");
    for i in 0..3 {
        let line =
            format!("invariantd_rule_run_errors_total{{rule=\"costly_{i}\",kind=\"timeout\"}}");
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    let status = terminate_within(&mut child, Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
}

#[test]
fn nested_comprehensions_over_the_budget_are_refused_at_load_with_their_position() {
    let mut assertion = String::from("key != null");
    for depth in 0..9 {
        assertion = format!("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9].all(x{depth}, {assertion})");
    }
    let rules = format!(
        "name: nested\nkey: k\ndatasets:\n  t: {{ source: db, query: \"SELECT k FROM t\" }}\nassert: \"{assertion}\"\n"
    );
    let workdir = Workdir::raw(
        "sources:\n  db: { url: \"sqlite://db.db\" }\nrules: [rules/]\n",
        &rules,
    );
    let out = workdir.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rules.yaml:5:10")
            && stderr.contains("steps or more for one key")
            && stderr.contains("over the evaluation budget of 1000000"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_interrupted_stops_its_postgres_query_on_the_server() {
    let db = TestDb::new(SourceKind::Postgres, "check_int").await;
    let config = format!(
        "sources:\n  db: {{ url: \"{}\", statement_timeout: 90s }}\nrules: [rules/]\n",
        db.url
    );
    let rules = "name: slow\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT 1 AS id FROM (SELECT pg_sleep(60)) AS s\" }\nassert: t != null\n";
    let workdir = Workdir::raw(&config, rules);
    let mut child = crate::harness::Daemon::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .arg("check")
            .current_dir(workdir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
    .into_child();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running(&db, "pg_sleep(60)").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the check never started its query"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::harness::kill(&child, "INT");
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "check did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
    let exited = Instant::now();
    while running(&db, "pg_sleep(60)").await > 0 {
        assert!(
            exited.elapsed() < Duration::from_secs(1),
            "the query kept running on the server after check exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn check_warns_about_a_source_that_can_do_more_than_read_as_run_does() {
    let db = TestDb::new(SourceKind::Postgres, "check_super").await;
    db.exec_str(&["CREATE TABLE t (id INT)", "INSERT INTO t VALUES (1)"])
        .await;
    let rules = "name: r\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id FROM t\" }\nassert: t != null\n";
    for (url, warned) in [(&db.admin_url, true), (&db.url, false)] {
        let workdir = Workdir::new(&[("db", url)], Some(rules));
        let out = workdir.cli(&["check"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(
            stderr.contains(
                "warning: source `db` connects with more than read rights (its role is a PostgreSQL superuser)"
            ),
            warned,
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_postgres_state_store_that_goes_away_turns_readiness_and_the_api_answers_503_at_once() {
    let source = TestDb::new(SourceKind::Sqlite, "store_away_src").await;
    source
        .exec_str(&["CREATE TABLE t (id INTEGER)", "INSERT INTO t VALUES (1)"])
        .await;
    let state = TestDb::new(SourceKind::Postgres, "store_away").await;
    let (proxy, _) = crate::harness::Proxy::in_front_of(&state).await;
    let address = crate::harness::pg_server()
        .rsplit_once('@')
        .map(|(_, a)| a.to_string())
        .unwrap();
    let state_url = state
        .admin_url
        .replacen(&address, &format!("127.0.0.1:{}", proxy.port), 1);
    let config = format!(
        "sources:\n  db: {{ url: \"{}\" }}\nstate: {{ url: \"{state_url}\" }}\nrules: [rules/]\n",
        source.url
    );
    let rules = "name: r\nevery: 1s\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id FROM t\" }\nassert: t != null\n";
    let workdir = Workdir::raw(&config, rules);
    let (mut child, port) = workdir.spawn_daemon("", std::process::Stdio::null()).await;
    let asked = |path: &'static str| {
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let (status, body) = http(port, "GET", path);
            (status, body, started.elapsed())
        })
    };
    assert_eq!(asked("/api/v1/violations").await.unwrap().0, 200);

    proxy.cut();
    let cut = Instant::now();
    loop {
        let (status, body, _) = asked("/readyz").await.unwrap();
        if status == 503 {
            // Whichever notices first — the watch's ping, or a run's write that the cut
            // reset — readiness names the state store.
            assert!(
                body.contains("the state store does not answer")
                    || body.contains("the state store cannot be written"),
                "{body}"
            );
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(5),
            "still ready {:?} after the cut",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in ["/api/v1/violations", "/api/v1/repairs", "/api/v1/runs"] {
        let (status, body, took) = asked(path).await.unwrap();
        assert_eq!(status, 503, "{path}: {body}");
        assert!(took < Duration::from_millis(500), "{path} took {took:?}");
        assert_eq!(body, r#"{"error":"the state store is unavailable"}"#);
    }
    // /metrics and /healthz are served from memory all the while.
    assert_eq!(asked("/metrics").await.unwrap().0, 200);
    assert_eq!(asked("/healthz").await.unwrap().0, 200);

    proxy.restore();
    eventually(Duration::from_secs(10), "ready again", || {
        http(port, "GET", "/readyz").0 == 200
    })
    .await;
    assert_eq!(asked("/api/v1/violations").await.unwrap().0, 200);
    terminate_within(&mut child, Duration::from_secs(15)).await;
}
