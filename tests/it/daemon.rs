//! The daemon's commands as operators use them: `run --once`, `violations list`, and a clean
//! stop on SIGTERM in the middle of a run.

use std::time::{Duration, Instant};

use invariantd::config::SourceKind;
use sqlx::{Connection, Row};

use crate::harness::{TOKEN, TestDb, Workdir, http, http_as, kill, terminate_within, tokens_file};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn run_once_records_violations_that_violations_list_shows_and_counts_again() {
    let (workdir, shop) = Workdir::sqlite_shop(3).await;

    let out = workdir.cli(&["run", "--once"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: usize = shop.expected.values().map(|keys| keys.len()).sum();

    let list = json(&workdir.cli(&["violations", "list", "--format", "json"]));
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), expected);
    assert!(
        items
            .iter()
            .all(|v| v["state"] == "open" && v["occurrences"] == 1)
    );
    assert_eq!(list["next"], serde_json::Value::Null);
    let keys: Vec<&str> = items
        .iter()
        .filter(|v| v["rule"] == "single_capture_per_order")
        .map(|v| v["key"].as_str().unwrap())
        .collect();
    let want: Vec<String> = shop.expected["single_capture_per_order"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(keys, want);

    // Again: the same violations, seen twice, nothing new.
    assert_eq!(workdir.cli(&["run", "--once"]).status.code(), Some(1));
    let list = json(&workdir.cli(&["violations", "list", "--format", "json", "--limit", "3"]));
    let page = list["items"].as_array().unwrap();
    assert_eq!(page.len(), 3);
    assert!(page.iter().all(|v| v["occurrences"] == 2));
    let next = list["next"].as_str().unwrap().to_string();
    let rest = json(&workdir.cli(&["violations", "list", "--format", "json", "--after", &next]));
    assert_eq!(rest["items"].as_array().unwrap().len(), expected - 3);

    let table = workdir.cli(&["violations", "list", "--rule", "paid_implies_reserved"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("paid_implies_reserved") && text.ends_with("1 violation\n"),
        "{text}"
    );
}

#[tokio::test]
async fn sigterm_during_a_run_stops_the_daemon_and_records_the_run_as_unknown() {
    let db = TestDb::new(SourceKind::Postgres, "sigterm").await;
    let rules = r#"
name: slow
every: 1h
key: id
datasets:
  t: { source: db, query: "SELECT 1 AS id FROM pg_sleep(60)" }
assert: t != null
"#;
    let workdir = Workdir::new(&[("db", &db.url)], Some(rules));
    let mut child = crate::harness::Daemon::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .args(["run", "--log-level", "info"])
            .current_dir(workdir.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // Wait until the query is running in PostgreSQL.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running: i64 = sqlx::query("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND application_name = 'invariantd'")
            .fetch_one(&mut admin)
            .await
            .unwrap()
            .get(0);
        if running > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let status = terminate_within(&mut child, Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");

    let state = workdir.path().join("invariantd.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", state.display()))
        .await
        .unwrap();
    let runs: Vec<(String, String, String)> =
        sqlx::query("SELECT outcome, error_kind, error FROM runs")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    assert_eq!(
        runs,
        [(
            "unknown".to_string(),
            "cancelled".to_string(),
            "cancelled: invariantd is shutting down".to_string()
        )]
    );
    // That the query itself stops on the server is `faults.rs`'s to show.
}

#[tokio::test]
async fn reload_refuses_a_broken_rule_set_and_keeps_the_old_one_then_takes_a_valid_one() {
    let db = TestDb::new(SourceKind::Sqlite, "reload").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, ok INTEGER)",
        "INSERT INTO t VALUES (1, 0), (2, 1)",
    ])
    .await;
    let two = "name: first\nevery: 1h\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id, ok FROM t\" }\nassert: t.ok == 1\n---\nname: second\nevery: 1h\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id, ok FROM t\" }\nassert: t.ok >= 0\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(two));
    let auth = tokens_file(workdir.path());
    let (mut child, port) = workdir
        .spawn_daemon(&auth, std::process::Stdio::inherit())
        .await;
    let rules = |port| {
        let (_, body) = http(port, "GET", "/api/v1/rules");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(rules(port), ["first", "second"]);
    // Wait for both first runs, so the metrics have series for both rules.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http(port, "GET", "/metrics")
        .1
        .contains(r#"invariantd_rule_runs_total{rule="second",outcome="pass"} 1"#)
    {
        assert!(Instant::now() < deadline, "the rules never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken set is refused with its errors; the old set keeps running.
    std::fs::write(
        workdir.path().join("rules/rules.yaml"),
        "name: first\nkey: id\ndatasets: {}\nassert: t.ok ==\n",
    )
    .unwrap();
    // Changes need a token.
    let (status, body) = http(port, "POST", "/api/v1/reload");
    assert_eq!(status, 401, "{body}");
    let (status, body) = http_as(port, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(status, 422, "{body}");
    let refused: serde_json::Value = serde_json::from_str(&body).unwrap();
    let diagnostics = refused["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics.iter().any(
            |d| d["file"].as_str().unwrap().ends_with("rules/rules.yaml")
                && d["line"] == 4
                && d["column"].as_u64().unwrap() > 0
                && d["message"].as_str().unwrap().contains("assert")
        ),
        "{body}"
    );
    kill(&child, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rules(port), ["first", "second"]);

    // A valid set replaces it; the deleted rule's series disappear, the kept rule's stay.
    std::fs::write(
        workdir.path().join("rules/rules.yaml"),
        two.split("---\n").next().unwrap(),
    )
    .unwrap();
    let (status, body) = http_as(port, "POST", "/api/v1/reload", Some(TOKEN));
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"reloaded":true,"rules":1}"#)
    );
    assert_eq!(rules(port), ["first"]);
    let metrics = http(port, "GET", "/metrics").1;
    assert!(!metrics.contains(r#"rule="second""#), "{metrics}");
    assert!(
        metrics.contains(r#"invariantd_violations_open{rule="first",severity="warning"} 1"#),
        "{metrics}"
    );

    kill(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn rule_runs_are_exported_as_spans_to_an_otlp_receiver() {
    let spans = tempfile::NamedTempFile::new().unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_receiver.py");
    let mut receiver = std::process::Command::new("python3")
        .arg(&script)
        .arg(spans.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with opentelemetry-proto (pip install opentelemetry-proto; .ci/run installs it)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(receiver.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let otlp_port: u16 = line.trim().parse().expect("the receiver prints its port");

    let db = TestDb::new(SourceKind::Sqlite, "otlp").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, ok INTEGER)",
        "INSERT INTO t VALUES (1, 0), (2, 1)",
    ])
    .await;
    let rules = "name: traced\nevery: 10s\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id, ok FROM t\" }\nassert: t.ok == 1\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(rules));
    let telemetry = format!(
        "telemetry: {{ log_format: json, otlp_endpoint: \"http://127.0.0.1:{otlp_port}\" }}\n"
    );
    let (child, port) = workdir
        .spawn_daemon(&telemetry, std::process::Stdio::piped())
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ran = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", "/metrics")
                .1
                .contains(r#"invariantd_rule_runs_total{rule="traced",outcome="fail"} 1"#);
        if ran {
            break;
        }
        assert!(Instant::now() < deadline, "the rule never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill(&child, "TERM"); // shutdown flushes the spans not yet exported
    let out = child.into_child().wait_with_output().unwrap();
    assert!(out.status.success());
    receiver.kill().unwrap();
    let _ = receiver.wait();

    let exported = std::fs::read_to_string(spans.path()).unwrap();
    let span: serde_json::Value = exported
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|s| s["name"] == "rule_run")
        .unwrap_or_else(|| panic!("no rule_run span in: {exported}"));
    assert_eq!(span["service"], "invariantd");
    assert_eq!(span["attributes"]["rule"], "traced");
    assert_eq!(span["attributes"]["outcome"], "fail");
    assert_eq!(span["attributes"]["rows"], 2);
    assert_eq!(span["attributes"]["violations"], 1);

    // Logs were JSON lines, with their fields.
    let logs = String::from_utf8(out.stderr).unwrap();
    let started = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("invariantd is running"))
        })
        .unwrap_or_else(|| panic!("no JSON start-up line in: {logs}"));
    assert_eq!(started["rules"], 1);
    assert_eq!(started["level"], "INFO");
}

#[test]
fn the_demo_finds_exactly_the_orders_its_outage_broke() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::harness::free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
        .args(["demo", "--speed", "100", "--approve-after", "0", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--dir")
        .arg(dir.path().join("shop"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("orders the outage broke (captured, never reserved, stuck in processing), and nothing else."), "{stdout}");
    assert!(stdout.contains("inventory service DOWN"), "{stdout}");
    assert!(stdout.contains("its database stays up"), "{stdout}");
    assert!(
        stdout.contains("broken orders still inside the 5-minute grace"),
        "{stdout}"
    );
    assert!(stdout.contains("[minute "), "{stdout}");
    // The story ends with a violation resolved.
    assert!(stdout.contains("An operator fixes order "), "{stdout}");
    assert!(
        stdout.contains("invariantd resolved both of its violations "),
        "{stdout}"
    );
    assert!(stdout.contains("is resolved; the other "), "{stdout}");
    // The rest are repaired: planned, approved through the API, applied.
    assert!(stdout.contains("repairs for the other "), "{stdout}");
    assert!(
        stdout.contains("(the page on-call approves repairs on; token: "),
        "{stdout}"
    );
    assert!(stdout.contains("Approved by oncall: "), "{stdout}");
    assert!(stdout.contains("Every invariant holds again."), "{stdout}");
    assert!(stdout.contains("/api/v1/violations"), "{stdout}");
    // On-call heard of each broken rule once, with the money at risk, and of its healing.
    for line in [
        "alert to on-call: [FIRING critical] paid_implies_reserved: ",
        "alert to on-call: [FIRING warning] order_not_stuck_processing: ",
        "alert to on-call: [RESOLVED] paid_implies_reserved: every violation cleared",
        "alert to on-call: [RESOLVED] order_not_stuck_processing: every violation cleared",
    ] {
        assert_eq!(stdout.matches(line).count(), 1, "{line}: {stdout}");
    }
    assert!(stdout.contains(" EUR at risk"), "{stdout}");
    let alerts = std::fs::read_to_string(dir.path().join("shop/alerts.jsonl")).unwrap();
    assert_eq!(alerts.lines().count(), 4, "{alerts}");
    // The page was where --listen put it.
    assert!(
        stdout.contains(&format!(
            "  http://127.0.0.1:{port}/   (the page on-call approves repairs on"
        )),
        "{stdout}"
    );
    // Every repair it reports fixed what it was for.
    assert!(
        stdout.contains("violations resolved by their repair at once"),
        "{stdout}"
    );
    // The commands to look further run as printed: the binary as it was invoked.
    let further: Vec<&str> = stdout
        .split("Look further:\n")
        .nth(1)
        .unwrap()
        .lines()
        .map(|l| l.split("   (").next().unwrap().trim())
        .filter(|l| !l.is_empty() && !l.contains(" run --config"))
        .collect();
    assert_eq!(further.len(), 4, "{stdout}");
    for line in further {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], env!("CARGO_BIN_EXE_invariantd"), "{line}");
        let ran = std::process::Command::new(words[0])
            .args(&words[1..])
            .output()
            .unwrap();
        // `explain` says 2 while the repaired key is within its grace: judged, not failed.
        assert!(
            ran.status.success()
                || (line.contains(" explain ") && ran.stdout.starts_with(b"rule ")),
            "{line}: {}",
            String::from_utf8_lossy(&ran.stderr)
        );
    }
}

#[tokio::test]
async fn a_service_that_stops_takes_the_daemon_down_with_an_error_naming_it() {
    let (workdir, _) = Workdir::sqlite_shop(1).await;
    let (mut config, rules) = workdir.load();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    let ctx = invariantd::context::Context::start(config, rules)
        .await
        .unwrap();
    let flaky = invariantd::daemon::Service::new("flaky", async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Err("lost its connection".to_string())
    });
    let running = invariantd::daemon::start(ctx, vec![flaky]).await.unwrap();
    let handle = running.handle.clone();
    assert!(handle.health.is_ready());
    let result = tokio::time::timeout(Duration::from_secs(20), running.wait())
        .await
        .expect("the daemon stops by itself");
    assert_eq!(
        result.unwrap_err().to_string(),
        "the flaky service stopped: lost its connection"
    );
    assert!(!handle.health.is_ready(), "a half-daemon is never ready");
}

#[tokio::test]
async fn a_shutdown_that_runs_out_of_grace_names_the_runs_still_going() {
    let db = TestDb::new(SourceKind::Sqlite, "grace").await;
    db.exec_str(&["CREATE TABLE t (id INTEGER)", "INSERT INTO t VALUES (1)"])
        .await;
    let rule = "name: blocked\nevery: 1s\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id FROM t\" }\nassert: t != null\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(rule));
    let (mut child, port) = workdir
        .spawn_daemon("shutdown_grace: 1s\n", std::process::Stdio::piped())
        .await;
    let runs = |port| {
        http(port, "GET", "/metrics")
            .1
            .contains(r#"invariantd_rule_runs_total{rule="blocked",outcome="pass"} 1"#)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !runs(port) {
        assert!(Instant::now() < deadline, "the rule never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Hold the state store's write lock: the next run cannot record itself.
    let state = workdir.path().join("invariantd.db");
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", state.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A grace of 1 s: well within 8 s, even though the blocked run never ends by itself.
    let status = terminate_within(&mut child, Duration::from_secs(8)).await;
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let line = stderr
        .lines()
        .find(|l| l.contains("shutdown grace"))
        .unwrap_or_else(|| panic!("no grace warning in:\n{stderr}"));
    // (Colour codes may sit between a field's name and its value.)
    assert!(
        line.contains("runs") && line.contains("blocked ("),
        "{line}"
    );
    drop(lock);
}

#[tokio::test]
async fn the_log_says_what_started_and_what_changed_once_without_colours() {
    let db = TestDb::new(SourceKind::Sqlite, "logs").await;
    db.exec_str(&["CREATE TABLE t (id INTEGER)", "INSERT INTO t VALUES (1)"])
        .await;
    let rules = "name: fine\nevery: 1s\nkey: id\ndatasets:\n  t: { source: up, query: \"SELECT id FROM t\" }\nassert: t != null\n---\nname: stranded\nevery: 1s\nkey: id\ndatasets:\n  t: { source: down, query: \"SELECT id FROM t\" }\nassert: t != null\n";
    let down = "postgres://postgres@127.0.0.1:1/nothing";
    let workdir = Workdir::new(&[("up", &db.url), ("down", down)], Some(rules));
    // The default level of `run`, not the harness's explicit one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        format!("{config}http: {{ listen: \"127.0.0.1:{port}\" }}\n"),
    )
    .unwrap();
    let mut child = crate::harness::Daemon::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .arg("run")
            .current_dir(workdir.path())
            .env_remove("INVARIANTD_LOG")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let unknown_runs = |port| {
        http(port, "GET", "/metrics")
            .1
            .lines()
            .find(|l| {
                l.starts_with(r#"invariantd_rule_runs_total{rule="stranded",outcome="unknown"}"#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || unknown_runs(port) < 3.0 {
        assert!(
            Instant::now() < deadline,
            "the rules did not run three times"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a pipe:\n{stderr}"
    );
    let count = |text: &str| stderr.lines().filter(|l| l.contains(text)).count();
    let started = stderr
        .lines()
        .find(|l| l.contains("invariantd is running"))
        .unwrap_or_else(|| panic!("no start-up line:\n{stderr}"));
    for field in [
        "version=0.1.0",
        "rules=2",
        "sources=2",
        &format!("address=127.0.0.1:{port}"),
        "invariantd.yaml",
    ] {
        assert!(started.contains(field), "{field} missing: {started}");
    }
    assert_eq!(count("Source is down"), 1, "{stderr}");
    assert_eq!(count("Rule is unknown"), 1, "{stderr}");
    assert_eq!(
        count("Rule run finished"),
        0,
        "runs are logged at debug:\n{stderr}"
    );
    assert!(
        count("Source is down") == 1 && stderr.contains("source=down"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_state_store_that_cannot_be_written_makes_the_daemon_not_ready_until_it_can() {
    let db = TestDb::new(SourceKind::Sqlite, "unwritable").await;
    db.exec_str(&["CREATE TABLE t (id INTEGER)", "INSERT INTO t VALUES (1)"])
        .await;
    let rule = "name: every_second\nevery: 1s\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id FROM t\" }\nassert: t == null\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(rule));
    let (mut child, port) = workdir.spawn_daemon("", std::process::Stdio::null()).await;
    // Another writer holds the store: runs cannot be recorded (after SQLite's busy timeout).
    let state = workdir.path().join("invariantd.db");
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", state.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let body = loop {
        let (status, body) = http(port, "GET", "/readyz");
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still ready with an unwritable store"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        body.starts_with("not ready: the state store cannot be written: "),
        "{body}"
    );
    // The writer goes away: the next run is recorded and the daemon is ready again by itself.
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    drop(lock);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kill(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn colours_are_for_terminals_and_no_color_turns_them_off() {
    // `script` runs the command on a pseudo-terminal, as a person's shell would.
    let down = "postgres://postgres@127.0.0.1:1/nothing";
    let rule = "name: stranded\nkey: id\ndatasets:\n  t: { source: down, query: \"SELECT id FROM t\" }\nassert: t != null\n";
    let workdir = Workdir::new(&[("down", down)], Some(rule));
    let on_terminal = |no_color: Option<&str>| {
        let binary = env!("CARGO_BIN_EXE_invariantd");
        let mut command = std::process::Command::new("script");
        command
            .args(["-qec", &format!("{binary} run --once"), "/dev/null"])
            .current_dir(workdir.path())
            .env_remove("RUST_LOG")
            .env_remove("INVARIANTD_LOG")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            command.env("NO_COLOR", v);
        }
        let out = command.output().expect("script(1) from util-linux");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let coloured = on_terminal(None);
    assert!(coloured.contains("Source is down"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "no colours on a terminal:\n{coloured}"
    );
    let plain = on_terminal(Some("1"));
    assert!(plain.contains("Source is down"), "{plain}");
    assert!(
        !plain.contains("\u{1b}["),
        "colours despite NO_COLOR:\n{plain}"
    );
}

/// A SQLite state store has one writer: a second daemon on it is refused with an error that
/// says why and what to do, and a daemon killed with SIGKILL does not leave the store locked.
#[tokio::test]
async fn a_second_daemon_on_a_sqlite_state_store_is_refused() {
    let (workdir, _shop) = Workdir::sqlite_shop(1).await;
    let (first, port) = workdir.spawn_daemon("", std::process::Stdio::null()).await;
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
        .args(["run"])
        .current_dir(workdir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert_ne!(second.status.code(), Some(0), "{said}");
    assert!(
        said.contains("another invariantd is already running on the SQLite state store")
            && said.contains("several replicas need a PostgreSQL state store"),
        "{said}"
    );
    // The first one is untouched.
    assert_eq!(http(port, "GET", "/readyz").0, 200);
    let mut first = first.into_child();
    kill(&first, "KILL");
    first.wait().unwrap();
    let again = workdir.respawn(port).await;
    drop(again);
}
