//! The engine's contract at its edges, each on the databases where it matters.

use invariantd::config::SourceKind::{MySql, Postgres, Sqlite};
use invariantd::verdict::Outcome;

use crate::harness::{TestDb, Workdir, error_of, keys, run_of};

#[tokio::test]
async fn keys_changed_within_grace_are_not_judged_yet() {
    let db = TestDb::new(Postgres, "grace").await;
    db.exec_str(&[
        "CREATE TABLE a (id INT, v INT, updated_at TIMESTAMPTZ)",
        "CREATE TABLE b (id INT, updated_at TIMESTAMP)",
        // 1: old and broken; 2: broken a minute ago; 3: old and fine;
        // 4: old in `a`, but its row in `b` changed a minute ago (the newest change counts).
        "INSERT INTO a VALUES (1, 0, now() - interval '1 hour'), (2, 0, now() - interval '1 minute'), (3, 5, now() - interval '1 hour'), (4, 0, now() - interval '1 hour')",
        "INSERT INTO b VALUES (4, (now() AT TIME ZONE 'UTC') - interval '1 minute')",
    ])
    .await;
    let rules = r#"
name: positive
grace: 5m
key: id
datasets:
  a: { source: db, query: "SELECT id, v, updated_at FROM a", updated_at: updated_at }
  b: { source: db, query: "SELECT id, updated_at FROM b", updated_at: updated_at }
assert: a == null || a.v > 0
"#;
    let runs = Workdir::new(&[("db", &db.url)], Some(rules)).run().await;
    let run = run_of(&runs, "positive");
    assert_eq!(run.error, None);
    assert_eq!(keys(run), ["1"]);
    assert_eq!(run.keys_in_grace, 2);
    assert_eq!(run.keys_judged, 2);
}

#[tokio::test]
async fn many_binds_a_list_of_rows_that_is_empty_when_the_key_is_absent() {
    let db = TestDb::new(Sqlite, "many").await;
    db.exec_str(&[
        "CREATE TABLE orders (id INTEGER PRIMARY KEY)",
        "CREATE TABLE items (order_id INTEGER, sku TEXT, qty INTEGER)",
        "INSERT INTO orders VALUES (1), (2), (3)",
        "INSERT INTO items VALUES (1, 'a', 1), (1, 'b', 2), (2, 'c', 0)",
    ])
    .await;
    let rules = r#"
name: orders_have_items
key: order_id
datasets:
  order: { source: db, query: "SELECT id AS order_id FROM orders" }
  item: { source: db, query: "SELECT order_id, sku, qty FROM items", many: true }
assert: size(item) > 0 && item.all(i, i.qty > 0)
message: "order {{key}}: {{size(item)}} items, skus {{item.map(i, i.sku)}}"
"#;
    let runs = Workdir::new(&[("db", &db.url)], Some(rules)).run().await;
    let run = run_of(&runs, "orders_have_items");
    assert_eq!(run.error, None);
    assert_eq!(keys(run), ["2", "3"]);
    assert_eq!(&*run.violations[0].message, "order 2: 1 items, skus [c]");
    assert_eq!(&*run.violations[1].message, "order 3: 0 items, skus []");
    assert_eq!(
        run.violations[1].datasets.to_value(),
        serde_json::json!({ "order": { "order_id": 3 }, "item": [] })
    );
    assert_eq!(run.rows_scanned, [3, 3]);
}

#[tokio::test]
async fn two_rows_for_one_key_without_many_are_an_error_for_that_key_not_a_pick() {
    let db = TestDb::new(MySql, "dups").await;
    db.exec_str(&[
        "CREATE TABLE a (id INT, v INT)",
        "CREATE TABLE b (id INT)",
        "INSERT INTO a VALUES (1, 1), (2, 1), (2, 2), (3, 1)",
        "INSERT INTO b VALUES (1), (2), (3), (4)",
    ])
    .await;
    let rules = r#"
name: b_has_a
key: id
datasets:
  a: { source: db, query: "SELECT id, v FROM a" }
  b: { source: db, query: "SELECT id FROM b" }
assert: a != null
"#;
    let runs = Workdir::new(&[("db", &db.url)], Some(rules)).run().await;
    let run = run_of(&runs, "b_has_a");
    assert_eq!(keys(run), ["4"]);
    assert_eq!(run.outcome, Outcome::Fail);
    assert_eq!(run.key_errors.len(), 1);
    assert_eq!(run.key_errors[0].key.to_string(), "2");
    assert_eq!(
        error_of(run),
        Some((
            "duplicate_rows",
            "1 key could not be judged: key 2: dataset `a` returned 2 rows for this key; without `many: true` a dataset must return at most one row per key"
        ))
    );
}

#[tokio::test]
async fn a_dataset_without_the_key_column_fails_the_rule_naming_the_columns_it_returned() {
    let db = TestDb::new(Postgres, "nokey").await;
    db.exec_str(&[
        "CREATE TABLE t (id INT, v INT)",
        "INSERT INTO t VALUES (1, 1)",
    ])
    .await;
    // `SELECT *` cannot be read without the database: the check happens at run time.
    let rules = r#"
name: needs_order_id
key: order_id
datasets:
  t: { source: db, query: "SELECT * FROM t" }
assert: t.v > 0
"#;
    let runs = Workdir::new(&[("db", &db.url)], Some(rules)).run().await;
    let run = run_of(&runs, "needs_order_id");
    assert_eq!(run.outcome, Outcome::Unknown);
    assert!(run.violations.is_empty());
    let (kind, error) = error_of(run).unwrap();
    assert_eq!(kind, "schema_mismatch");
    assert!(
        error.starts_with("dataset `t` (source `db`, query at ")
            && error.ends_with(
                "rules/rules.yaml:5:27) returns no column `order_id` (the rule's key); it returns: id, v"
            ),
        "{error}"
    );
}

#[tokio::test]
async fn a_source_that_is_down_makes_its_rules_unknown_at_once_and_the_others_still_run() {
    let db = TestDb::new(Sqlite, "up").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, v INTEGER)",
        "INSERT INTO t VALUES (1, 1)",
    ])
    .await;
    let rules = r#"
name: on_the_down_source
key: id
datasets:
  t: { source: down, query: "SELECT id, v FROM t" }
assert: t.v > 0
---
name: on_the_down_mariadb
key: id
datasets:
  t: { source: down_mariadb, query: "SELECT id, v FROM t" }
assert: t.v > 0
---
name: on_the_live_source
key: id
datasets:
  t: { source: up, query: "SELECT id, v FROM t" }
assert: t.v > 0
"#;
    // Nothing listens on port 1: connections are refused. A long connect_timeout shows that
    // a refusal is reported at once rather than after the timeout.
    let config = format!(
        "sources:\n  up: {{ url: \"{}\" }}\n  down: {{ url: \"postgres://postgres@127.0.0.1:1/nothing\", connect_timeout: 20s }}\n  down_mariadb: {{ url: \"mysql://root@127.0.0.1:1/nothing\", connect_timeout: 20s }}\nrules: [rules/]\n",
        db.url
    );
    let started = std::time::Instant::now();
    let runs = Workdir::raw(&config, rules).run().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "a refused connection waited {:?}",
        started.elapsed()
    );
    for (rule, source) in [
        ("on_the_down_source", "down"),
        ("on_the_down_mariadb", "down_mariadb"),
    ] {
        let dead = run_of(&runs, rule);
        assert_eq!(dead.outcome, Outcome::Unknown);
        let (kind, error) = error_of(dead).unwrap();
        assert_eq!(kind, "source_unreachable");
        assert_eq!(dead.sources_down, [source]);
        assert!(
            error.starts_with(&format!(
                "dataset `t` (source `{source}`): cannot connect: "
            )),
            "{error}"
        );
        assert!(error.contains("onnection refused"), "{error}");
    }
    assert_eq!(run_of(&runs, "on_the_live_source").outcome, Outcome::Pass);
}

#[tokio::test]
async fn numeric_and_decimal_values_compare_exactly_across_databases() {
    let pg = TestDb::new(Postgres, "dec").await;
    let my = TestDb::new(MySql, "dec").await;
    let lite = TestDb::new(Sqlite, "dec").await;
    pg.exec_str(&[
        "CREATE TABLE lines (k INT, amount NUMERIC(10,2))",
        "INSERT INTO lines VALUES (1, 0.10), (1, 0.10), (1, 0.10), (2, 1.00), (3, 100.50), (4, 0.30)",
    ])
    .await;
    my.exec_str(&[
        "CREATE TABLE totals (k INT, amount DECIMAL(10,3))",
        "INSERT INTO totals VALUES (1, 0.300), (2, 1.000), (3, 100.500), (4, 0.301)",
    ])
    .await;
    lite.exec_str(&[
        "CREATE TABLE totals (k INTEGER, amount NUMERIC(10,2))",
        "INSERT INTO totals VALUES (1, 0.3), (2, 1), (3, 100.5), (4, 0.3)",
    ])
    .await;
    let rules = r#"
name: sums_match
key: k
datasets:
  pg: { source: pg, query: "SELECT k, SUM(amount) AS total FROM lines GROUP BY k" }
  my: { source: my, query: "SELECT k, amount FROM totals" }
  lite: { source: lite, query: "SELECT k, amount FROM totals" }
assert: pg.total == my.amount && lite.amount == pg.total && lite.amount * 3 == pg.total + pg.total + pg.total
message: "{{pg.total}} {{my.amount}} {{lite.amount}}"
"#;
    let runs = Workdir::new(
        &[("pg", &pg.url), ("my", &my.url), ("lite", &lite.url)],
        Some(rules),
    )
    .run()
    .await;
    let run = run_of(&runs, "sums_match");
    assert_eq!(run.error, None);
    assert_eq!(keys(run), ["4"]);
    assert_eq!(&*run.violations[0].message, "0.30 0.301 0.30");
}

#[tokio::test]
async fn text_keys_in_mixed_case_and_non_ascii_join_between_postgres_and_mariadb() {
    let pg = TestDb::new(Postgres, "text").await;
    let my = TestDb::new(MySql, "text").await;
    let all = [
        "apple", "Apple", "Banana", "banana", "éclair", "eclair", "Zebra", "zebra", "Ähre", "ähre",
        "日本", "10", "9", "a b", "a_b",
    ];
    let values = |skip: &str| {
        all.iter()
            .filter(|k| **k != skip)
            .map(|k| format!("('{k}', 1)"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Locale-aware collations on both sides: their orders differ from each other and from
    // byte order, which is what the engine must impose.
    pg.exec(&[
        "CREATE TABLE t (k TEXT COLLATE \"und-x-icu\", v INT)".into(),
        format!("INSERT INTO t VALUES {}", values("zebra")),
    ])
    .await;
    my.exec(&[
        "CREATE TABLE t (k VARCHAR(32) COLLATE utf8mb4_general_ci, v INT)".into(),
        format!("INSERT INTO t VALUES {}", values("Ähre")),
    ])
    .await;
    let rules = r#"
name: both_sides
key: k
datasets:
  pg: { source: pg, query: "SELECT k, v FROM t" }
  my: { source: my, query: "SELECT k, v FROM t" }
assert: pg != null && my != null
"#;
    let runs = Workdir::new(&[("pg", &pg.url), ("my", &my.url)], Some(rules))
        .run()
        .await;
    let run = run_of(&runs, "both_sides");
    assert_eq!(run.error, None);
    assert_eq!(keys(run), ["zebra", "Ähre"]);
    assert_eq!(run.rows_scanned, [14, 14]);
}

#[tokio::test]
async fn integer_keys_on_one_side_and_text_keys_on_the_other_join_as_text() {
    let pg = TestDb::new(Postgres, "mixed").await;
    let lite = TestDb::new(Sqlite, "mixed").await;
    pg.exec_str(&[
        "CREATE TABLE t (id BIGINT)",
        "INSERT INTO t SELECT generate_series(1, 12)",
    ])
    .await;
    let mut inserts = vec!["CREATE TABLE t (id TEXT)".to_string()];
    inserts.extend((1..=13).map(|i| format!("INSERT INTO t VALUES ('{i}')")));
    lite.exec(&inserts).await;
    let rules = r#"
name: same_ids
key: id
datasets:
  pg: { source: pg, query: "SELECT id FROM t" }
  lite: { source: lite, query: "SELECT id FROM t" }
assert: pg != null && lite != null
"#;
    let runs = Workdir::new(&[("pg", &pg.url), ("lite", &lite.url)], Some(rules))
        .run()
        .await;
    let run = run_of(&runs, "same_ids");
    assert_eq!(run.error, None);
    assert_eq!(keys(run), ["13"]);
}

#[tokio::test]
async fn timestamps_with_and_without_zone_and_as_text_are_the_same_instants() {
    let pg = TestDb::new(Postgres, "ts").await;
    let my = TestDb::new(MySql, "ts").await;
    let lite = TestDb::new(Sqlite, "ts").await;
    pg.exec_str(&[
        "CREATE TABLE t (id INT, tz TIMESTAMPTZ, naive TIMESTAMP, day DATE)",
        "INSERT INTO t VALUES (1, '2026-11-26 10:30:00+01', '2026-11-26 09:30:00', '2026-11-26'), (2, '2026-11-26 09:30:00.5+00', '2026-11-26 09:30:00', '2026-11-26')",
    ])
    .await;
    my.exec_str(&[
        "SET time_zone = '+00:00'",
        "CREATE TABLE t (id INT, dt DATETIME(6), ts TIMESTAMP(6) NULL)",
        "INSERT INTO t VALUES (1, '2026-11-26 09:30:00', '2026-11-26 09:30:00'), (2, '2026-11-26 09:30:00', '2026-11-26 09:30:00')",
    ])
    .await;
    lite.exec_str(&[
        "CREATE TABLE t (id INTEGER, at TEXT, created DATETIME)",
        "INSERT INTO t VALUES (1, '2026-11-26T09:30:00Z', '2026-11-26 09:30:00'), (2, '2026-11-26T10:30:00+01:00', '2026-11-26 09:30:00')",
    ])
    .await;
    let rules = r#"
name: same_instant
key: id
datasets:
  pg: { source: pg, query: "SELECT id, tz, naive, day FROM t" }
  my: { source: my, query: "SELECT id, dt, ts FROM t" }
  lite: { source: lite, query: "SELECT id, at, created FROM t" }
assert: >-
  pg.tz == pg.naive && pg.naive == my.dt && my.dt == my.ts && my.ts == lite.created
  && lite.at == pg.tz && pg.day < pg.tz && pg.tz - pg.day == duration('9h30m')
message: "{{pg.tz}} {{my.dt}} {{lite.at}}"
"#;
    let runs = Workdir::new(
        &[("pg", &pg.url), ("my", &my.url), ("lite", &lite.url)],
        Some(rules),
    )
    .run()
    .await;
    let run = run_of(&runs, "same_instant");
    assert_eq!(run.error, None);
    // Key 2's zoned value is half a second later.
    assert_eq!(keys(run), ["2"]);
    assert_eq!(
        &*run.violations[0].message,
        "2026-11-26T09:30:00.500Z 2026-11-26T09:30:00Z 2026-11-26T10:30:00+01:00"
    );
}

#[tokio::test]
async fn an_evaluation_error_for_one_key_is_reported_for_that_key_and_is_not_a_pass() {
    let db = TestDb::new(Sqlite, "evalerr").await;
    // SQLite lets a column hold any type: one row has a number where text was expected.
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, status)",
        "INSERT INTO t VALUES (1, 'ok'), (2, 5), (3, 'bad')",
    ])
    .await;
    let rules = r#"
name: status_ok
key: id
datasets:
  t: { source: db, query: "SELECT id, status FROM t" }
assert: t.status == 'ok'
"#;
    let runs = Workdir::new(&[("db", &db.url)], Some(rules)).run().await;
    let run = run_of(&runs, "status_ok");
    assert_eq!(keys(run), ["3"]);
    assert_eq!(run.outcome, Outcome::Fail);
    assert_eq!(
        error_of(run),
        Some((
            "evaluation",
            "1 key could not be judged: key 2: assert: no such overload: int == string"
        ))
    );
}

#[tokio::test]
async fn a_query_over_the_statement_timeout_makes_the_rule_unknown() {
    let db = TestDb::new(Postgres, "slow").await;
    let config = format!(
        "sources:\n  db: {{ url: \"{}\", statement_timeout: 500ms }}\nrules: [rules/]\n",
        db.url
    );
    let rules = r#"
name: slow
key: id
datasets:
  t: { source: db, query: "SELECT id FROM (SELECT 1 AS id, pg_sleep(5)) AS s" }
assert: t != null
"#;
    let started = std::time::Instant::now();
    let runs = Workdir::raw(&config, rules).run().await;
    let run = run_of(&runs, "slow");
    assert_eq!(run.outcome, Outcome::Unknown);
    let (kind, error) = error_of(run).unwrap();
    assert_eq!(kind, "timeout", "{error}");
    assert!(error.contains("statement timeout"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[tokio::test]
async fn rules_waiting_for_a_busy_source_wait_their_turn_instead_of_failing() {
    let db = TestDb::new(Postgres, "busy").await;
    // Two connections, a one-second connect timeout, and four rules that each hold both
    // connections for 0.8 s: the last rule waits about 2.4 s for its turn.
    let config = format!(
        "sources:\n  db: {{ url: \"{}\", max_connections: 2, connect_timeout: 1s }}\nrules: [rules/]\n",
        db.url
    );
    let rule = |n: usize| {
        format!(
            "name: slow_{n}\nkey: id\ndatasets:\n  a: {{ source: db, query: \"SELECT 1 AS id FROM pg_sleep(0.8)\" }}\n  b: {{ source: db, query: \"SELECT 1 AS id\" }}\nassert: a != null && b != null\n"
        )
    };
    let mut rules: Vec<String> = (1..=4).map(rule).collect();
    rules.push(
        "name: too_wide\nkey: id\ndatasets:\n  a: { source: db, query: \"SELECT 1 AS id\" }\n  b: { source: db, query: \"SELECT 1 AS id\" }\n  c: { source: db, query: \"SELECT 1 AS id\" }\nassert: a != null\n".into(),
    );
    let runs = Workdir::raw(&config, &rules.join("---\n")).run().await;
    for n in 1..=4 {
        let run = run_of(&runs, &format!("slow_{n}"));
        assert_eq!(
            (run.outcome, &run.error),
            (Outcome::Pass, &None),
            "slow_{n}"
        );
    }
    assert_eq!(
        error_of(run_of(&runs, "too_wide")),
        Some((
            "schema_mismatch",
            "the rule reads 3 datasets from source `db` at once, but its max_connections is 2"
        ))
    );
}

#[tokio::test]
async fn a_query_error_names_where_the_query_is_and_quotes_the_database() {
    let pg = TestDb::new(Postgres, "misspelt").await;
    let my = TestDb::new(MySql, "misspelt").await;
    for db in [&pg, &my] {
        db.exec_str(&["CREATE TABLE orders (id INT, total DECIMAL(10, 2))"])
            .await;
    }
    let rules = r#"
name: pg_rule
key: id
datasets:
  o:
    source: pg
    query: >-
      SELECT id, total FROM orders
      WHERE totl > 0
assert: o != null
---
name: my_rule
key: id
datasets:
  o:
    source: my
    query: SELECT id, total FROM orders WHERE totl > 0
assert: o != null
"#;
    let runs = Workdir::new(&[("pg", &pg.url), ("my", &my.url)], Some(rules))
        .run()
        .await;
    let (kind, error) = error_of(run_of(&runs, "pg_rule")).unwrap();
    assert_eq!(kind, "query_failed");
    assert!(
        error.starts_with("dataset `o` (source `pg`, query at ")
            && error.contains("rules/rules.yaml:8:7): the query is not valid: column \"totl\" does not exist (line 1, column 36 of the query)"),
        "{error}"
    );
    assert!(!error.contains("error returned from database"), "{error}");
    let (kind, error) = error_of(run_of(&runs, "my_rule")).unwrap();
    assert_eq!(kind, "query_failed");
    assert!(
        error.contains("rules/rules.yaml:17:12): the query is not valid: Unknown column 'totl'"),
        "{error}"
    );
}

#[tokio::test]
async fn validate_connect_prepares_every_query_and_reports_each_problem_where_it_is_written() {
    let pg = TestDb::new(Postgres, "prepare").await;
    let my = TestDb::new(MySql, "prepare").await;
    pg.exec_str(&[
        "CREATE TABLE orders (id INT, total NUMERIC(10, 2))",
        "CREATE TABLE t2 (id FLOAT8, v INT)",
    ])
    .await;
    my.exec_str(&["CREATE TABLE orders (id INT, total DECIMAL(10, 2))"])
        .await;
    let rules = r#"name: misspelt
key: id
datasets:
  o: { source: pg, query: "SELECT * FROM orders WHERE totl > 0" }
assert: o != null
---
name: float_key
key: id
datasets:
  t: { source: pg, query: "SELECT * FROM t2", updated_at: changed_at }
assert: t.nope > 0
---
name: no_key
key: order_id
datasets:
  o: { source: my, query: "SELECT * FROM orders" }
assert: o != null
---
name: on_dead
key: id
datasets:
  o: { source: dead, query: "SELECT id FROM t" }
assert: o != null
---
name: no_table
key: id
datasets:
  o: { source: my, query: "SELECT id FROM ordrs" }
assert: o != null
---
name: never_run
key: id
datasets:
  o: { source: pg, query: "SELECT id FROM orders WHERE pg_sleep(20) IS NOT NULL" }
assert: o != null
"#;
    let workdir = Workdir::new(
        &[
            ("pg", &pg.url),
            ("my", &my.url),
            ("dead", "postgres://postgres@127.0.0.1:1/nothing"),
        ],
        Some(rules),
    );
    // Without --connect, nothing here can be known.
    assert_eq!(workdir.cli(&["validate"]).status.code(), Some(0));
    let started = std::time::Instant::now();
    let out = workdir.cli(&["validate", "--connect"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a query was run, not prepared"
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        "rules/rules.yaml:4:27: rule `misspelt`: dataset `o` (source `pg`, query at ",
        "rules/rules.yaml:10:27: rule `float_key`: dataset `t` (source `pg`, query at ",
        "rules/rules.yaml:10:27: rule `float_key`: dataset `t` (source `pg`, query at ",
        "rules/rules.yaml:11:9: rule `float_key`: assert (",
        "rules/rules.yaml:16:27: rule `no_key`: dataset `o` (source `my`, query at ",
        "rules/rules.yaml:28:27: rule `no_table`: dataset `o` (source `my`, query at ",
        "invariantd.yaml: source `dead` cannot be reached: cannot connect: ",
    ];
    assert_eq!(lines.len(), expected.len() + 1, "{stderr}");
    for (line, start) in lines.iter().zip(expected) {
        assert!(
            line.starts_with("error: ") && line.contains(start),
            "{line}\nwanted {start}"
        );
    }
    for part in [
        "column \"totl\" does not exist (line 1, column 28 of the query)",
        "the key column `id` has type FLOAT8; keys must be integers or text",
        "updated_at names `changed_at`, which the query does not return; it returns: id, v",
        "dataset `t` has no column `nope`; its query returns: id, v",
        "returns no column `order_id` (the rule's key); it returns: id, total",
        "the query is not valid: Table ",
        "ordrs' doesn't exist (42S02)",
        "(needed by on_dead)",
    ] {
        assert!(stderr.contains(part), "{part} missing:\n{stderr}");
    }
    assert_eq!(lines.last(), Some(&"7 errors"));
}

#[tokio::test]
async fn type_errors_are_found_before_any_key_is_judged() {
    // Literal types are known at load: `'30m'` is text, not a duration.
    let config = "sources:\n  db: { url: \"sqlite://x.db\" }\nrules: [rules/]\n";
    let rules = "name: stuck\nkey: id\ndatasets:\n  order: { source: db, query: \"SELECT id, placed_at FROM orders\" }\nassert: now - order.placed_at < '30m'\n";
    let out = Workdir::raw(config, rules).cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: rules/rules.yaml:5:9: rule `stuck`: assert: no such overload: duration < string; did you mean duration('30m')?\n1 error\n"
    );

    // Column types are known once the query is described: one schema error for the run, not
    // one error per key.
    let db = TestDb::new(Postgres, "types").await;
    db.exec_str(&[
        "CREATE TABLE orders (id INT, total NUMERIC(10, 2))",
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 50) AS g",
    ])
    .await;
    let rules = "name: priced\nkey: id\ndatasets:\n  order: { source: db, query: \"SELECT id, total FROM orders\" }\nassert: order.total > 'high'\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(rules));
    assert_eq!(workdir.cli(&["validate"]).status.code(), Some(0));
    let runs = workdir.run().await;
    let run = run_of(&runs, "priced");
    assert_eq!(run.outcome, Outcome::Unknown);
    assert_eq!(run.key_errors_total, 0, "not once per key");
    let (kind, error) = error_of(run).unwrap();
    assert_eq!(kind, "schema_mismatch");
    assert!(
        error.contains(
            "no such overload: decimal > string (with the column types the queries return)"
        ),
        "{error}"
    );
    let out = workdir.cli(&["validate", "--connect"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("rules/rules.yaml:5:9: rule `priced`: assert ("),
    );
}

#[tokio::test]
async fn hostile_text_reaches_terminals_escaped_and_huge_values_are_stored_cut() {
    let db = TestDb::new(Sqlite, "hostile").await;
    db.exec(&[
        "CREATE TABLE t (id INTEGER, note TEXT)".to_string(),
        "INSERT INTO t VALUES (1, 'pwned' || char(27) || '[2J' || char(27) || ']0;title' || char(7) || char(13) || char(8238) || char(8294) || char(8297) || char(8207) || char(155))".to_string(),
        "INSERT INTO t VALUES (2, printf('%.*c', 2000000, 'x'))".to_string(),
    ])
    .await;
    let rules = "name: hostile\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id, note FROM t\" }\nassert: t == null\nmessage: \"{{t.note}}\"\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(rules));
    let out = workdir.cli(&["check"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(!table.contains('\u{1b}') && !table.contains('\u{7}') && !table.contains('\r'));
    assert!(!table.contains('\u{202e}'), "bidi override printed raw");
    assert!(
        table.contains(r"pwned\u{1b}[2J\u{1b}]0;title\u{7}\u{d}\u{202e}"),
        "{table}"
    );
    // In JSON too, bidi and C1 controls are escaped, and read back as they were.
    workdir.cli(&["run", "--once"]);
    for args in [
        &["check", "--format", "json"][..],
        &["violations", "list", "--format", "json"][..],
    ] {
        let out = workdir.cli(args);
        let json = String::from_utf8(out.stdout).unwrap();
        for c in ['\u{202e}', '\u{2066}', '\u{2069}', '\u{200f}', '\u{9b}'] {
            assert!(!json.contains(c), "{args:?} printed U+{:04X} raw", c as u32);
        }
        assert!(
            json.contains(r"\u202e\u2066\u2069\u200f\u009b"),
            "{args:?}: {json}"
        );
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(doc.to_string().contains("\u{202e}\u{2066}"), "{args:?}");
    }
    // Stored and printed, a 2 MB value is cut with a marker.
    let out = workdir.cli(&["check", "--format", "json"]);
    assert!(
        out.stdout.len() < 20_000,
        "{} bytes of JSON",
        out.stdout.len()
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let huge = &doc["rules"][0]["violations"][1];
    assert!(
        huge["message"]
            .as_str()
            .unwrap()
            .ends_with("…[truncated: 2000000 bytes]")
    );
    assert!(
        huge["datasets"]["t"]["note"]
            .as_str()
            .unwrap()
            .ends_with("…[truncated: 2000000 bytes]")
    );
}

/// Every leaf command of the CLI, as clap knows it (`repairs approve`, `check`…).
fn every_command() -> Vec<String> {
    use clap::CommandFactory;
    fn leaves(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        let subs: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        if subs.is_empty() {
            out.push(prefix.trim().to_string());
        }
        for sub in subs {
            leaves(sub, &format!("{prefix} {}", sub.get_name()), out);
        }
    }
    let mut out = Vec::new();
    leaves(&invariantd::cli::Cli::command(), "", &mut out);
    out
}

#[tokio::test]
async fn a_password_selected_by_a_query_is_published_by_no_endpoint_or_command() {
    use crate::harness::{TOKEN, eventually, http_as, terminate_within, tokens_file};
    const CANARY: &str = "canary-Pa55word";
    let db = TestDb::new(Postgres, "canary").await;
    // PostgreSQL trusts loopback here: any password is accepted, so the URL can carry one.
    let checker = crate::harness::CHECKER;
    let url = db
        .url
        .replacen(&format!("{checker}@"), &format!("{checker}:{CANARY}@"), 1);
    assert!(url.contains(CANARY), "{url}");
    // The password reaches a row, the message, the assertion's parts, a repair's parameters
    // and its error.
    let rules = format!(
        "name: leaky\nevery: 1s\nkey: id\ndatasets:\n  t: {{ source: db, query: \"SELECT 1 AS id, '{url}' AS dsn\" }}\nassert: t == null || t.dsn == ''\nmessage: \"connects with {{{{t.dsn}}}}\"\nrepair:\n  action:\n    sql: {{ source: db, statement: \"SELECT no_such_column WHERE $1 = ''\", params: [t.dsn] }}\n"
    );
    let workdir = Workdir::new(&[("db", &url)], Some(&rules));
    let auth = tokens_file(workdir.path());
    let mut seen = String::new();
    let cli = |args: &[&str]| -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .args(args)
            .current_dir(workdir.path())
            .env("INVARIANTD_TOKEN", TOKEN)
            .env_remove("INVARIANTD_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        format!(
            "$ invariantd {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // Commands that work on the files, the sources and the store.
    let mut covered: Vec<&str> = vec![
        "run",
        "migrate",
        "validate",
        "test",
        "check",
        "violations list",
        "audit verify",
        "audit list",
        "explain",
    ];
    seen.push_str(&cli(&["run", "--once", "--log-level", "debug"]));
    seen.push_str(&cli(&["migrate"]));
    seen.push_str(&cli(&["validate"]));
    seen.push_str(&cli(&["test"]));
    seen.push_str(&cli(&["check", "--format", "json"]));
    seen.push_str(&cli(&["check"]));
    // The files CI systems read.
    seen.push_str(&cli(&[
        "check",
        "--junit",
        "check.xml",
        "--output",
        "check.json",
    ]));
    seen.push_str(&cli(&[
        "test",
        "--junit",
        "test.xml",
        "--output",
        "test.json",
    ]));
    for file in ["check.xml", "check.json", "test.xml", "test.json"] {
        seen.push_str(&std::fs::read_to_string(workdir.path().join(file)).unwrap());
    }
    seen.push_str(&cli(&["violations", "list", "--format", "json"]));
    seen.push_str(&cli(&["violations", "list"]));
    seen.push_str(&cli(&["audit", "verify"]));
    seen.push_str(&cli(&["audit", "list", "--format", "json"]));
    seen.push_str(&cli(&["explain", "leaky", "1"]));
    seen.push_str(&cli(&["explain", "leaky", "1", "--format", "json"]));
    assert!(
        seen.contains(&format!("connects with postgres://{checker}:***@")),
        "{seen}"
    );

    // The daemon, and every endpoint it serves.
    let log = workdir.path().join("daemon.log");
    let (mut daemon, port) = workdir
        .spawn_daemon(
            &format!(
                "{}repairs: {{ max_attempts: 1 }}\n",
                auth.replace('}', ", read: token }")
            ),
            std::process::Stdio::from(std::fs::File::create(&log).unwrap()),
        )
        .await;
    eventually(
        std::time::Duration::from_secs(20),
        "a repair planned",
        || {
            http_as(port, "GET", "/api/v1/repairs", Some(TOKEN))
                .1
                .contains("\"pending\"")
        },
    )
    .await;
    let silence = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let body = r#"{"matchers":{"rule":"leaky"},"duration":"1h","comment":"canary"}"#;
        write!(s, "POST /api/v1/silences HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        seen.push_str(&r);
        r
    };
    let silence_id: serde_json::Value =
        serde_json::from_str(silence.split_once("\r\n\r\n").unwrap().1).unwrap();
    let silence_id = silence_id["id"].as_str().unwrap().to_string();
    let mut endpoints = invariantd::http::endpoints();
    // Reads first, then what changes things, the reload last.
    endpoints.sort_by_key(|e| (e.method != "GET", e.path == "/api/v1/reload"));
    for e in &endpoints {
        let id = if e.path.contains("silences") {
            silence_id.as_str()
        } else {
            "1"
        };
        let uri = e.path.replace("{id}", id).replace("{name}", "leaky");
        let (status, body) = http_as(port, e.method, &uri, Some(TOKEN));
        assert!(
            status != 401 && status != 403 && status != 404,
            "{} {uri}: {status} {body}",
            e.method
        );
        seen.push_str(&format!("{} {uri}\n{body}\n", e.method));
    }
    // Every command that talks to the daemon.
    covered.extend([
        "repairs list",
        "repairs show",
        "repairs approve",
        "repairs reject",
        "repairs enable",
        "silence add",
        "silence list",
        "silence expire",
    ]);
    seen.push_str(&cli(&["repairs", "list"]));
    seen.push_str(&cli(&["repairs", "list", "--format", "json"]));
    seen.push_str(&cli(&["repairs", "show", "1"]));
    seen.push_str(&cli(&["repairs", "show", "1", "--format", "json"]));
    seen.push_str(&cli(&["repairs", "approve", "1"]));
    seen.push_str(&cli(&["repairs", "approve", "--rule", "leaky"]));
    seen.push_str(&cli(&["repairs", "reject", "1"]));
    seen.push_str(&cli(&["repairs", "enable", "leaky"]));
    seen.push_str(&cli(&[
        "silence",
        "add",
        "--rule",
        "leaky",
        "--for",
        "1h",
        "--comment",
        "canary",
    ]));
    seen.push_str(&cli(&["silence", "list", "--all"]));
    seen.push_str(&cli(&["silence", "expire", &silence_id]));
    eventually(
        std::time::Duration::from_secs(20),
        "the repair attempted",
        || {
            http_as(port, "GET", "/api/v1/repairs/1", Some(TOKEN))
                .1
                .contains("\"failed\"")
        },
    )
    .await;
    seen.push_str(&http_as(port, "GET", "/api/v1/repairs/1", Some(TOKEN)).1);
    seen.push_str(&cli(&["repairs", "show", "1", "--format", "json"]));
    seen.push_str(&cli(&["explain", "leaky", "1", "--format", "json"]));
    seen.push_str(&cli(&["cluster"]));
    seen.push_str(&cli(&["cluster", "--format", "json"]));
    covered.push("cluster");
    // `init` reads the source as given on the command line and writes no password.
    let started = tempfile::tempdir().unwrap();
    let config = started.path().join("invariantd.yaml");
    // (The command line holds the password: what is checked is what init prints and writes.)
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
        .args(["--config", config.to_str().unwrap(), "init", "--source"])
        .arg(format!("db={url}"))
        .env_remove("INVARIANTD_CONFIG")
        .output()
        .unwrap();
    let written = format!(
        "{}{}",
        String::from_utf8_lossy(&init.stdout),
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(written.contains("DB_PASSWORD"), "{written}");
    seen.push_str(&written);
    seen.push_str(&std::fs::read_to_string(&config).unwrap());
    seen.push_str(&std::fs::read_to_string(started.path().join("rules/starter.yaml")).unwrap());
    covered.push("init");
    terminate_within(&mut daemon, std::time::Duration::from_secs(20)).await;

    // No command was forgotten ("demo" makes its own databases, with no secret of yours).
    covered.push("demo");
    let missing: Vec<String> = every_command()
        .into_iter()
        .filter(|c| !covered.contains(&c.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "commands the canary does not try: {missing:?}"
    );

    let logged = std::fs::read(&log).unwrap();
    let state = std::fs::read(workdir.path().join("invariantd.db")).unwrap();
    let wal = std::fs::read(workdir.path().join("invariantd.db-wal")).unwrap_or_default();
    for (what, bytes) in [
        ("output", seen.as_bytes()),
        ("daemon's log", &logged[..]),
        ("state", &state[..]),
        ("wal", &wal[..]),
    ] {
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "the password is in the {what}: {}",
            String::from_utf8_lossy(bytes)
                .lines()
                .filter(|l| l.contains(CANARY))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test]
async fn a_sqlite_source_replaced_or_deleted_under_the_daemon_is_seen_as_it_is_now() {
    let db = TestDb::new(Sqlite, "replaced").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, ok INTEGER)",
        "INSERT INTO t VALUES (1, 0), (2, 0), (3, 1)",
    ])
    .await;
    let file = std::path::PathBuf::from(db.url.trim_start_matches("sqlite://"));
    let rules = "name: ok\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id, ok FROM t\" }\nassert: t.ok == 1\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(rules));
    let (config, rules) = workdir.load();
    // One set of pools for every run, as in the daemon.
    let sources = invariantd::sources::Sources::new(&config.sources, config.secrets.clone());
    let run = || invariantd::engine::run_rules(&rules, &sources, 1);
    assert_eq!(keys(&run().await[0]), ["1", "2"]);

    // A new file moved over the old one, as a restore or a deploy does.
    let fresh = file.with_extension("new");
    {
        use sqlx::{ConnectOptions, Executor};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&fresh)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        conn.execute(
            "CREATE TABLE t (id INTEGER, ok INTEGER); INSERT INTO t VALUES (1, 1), (2, 1), (3, 1);",
        )
        .await
        .unwrap();
    }
    std::fs::rename(&fresh, &file).unwrap();
    let after = run().await;
    assert_eq!(after[0].outcome, Outcome::Pass, "{:?}", after[0].error);

    // Deleted: unknown, and the source is down.
    std::fs::remove_file(&file).unwrap();
    let gone = run().await;
    assert_eq!(gone[0].outcome, Outcome::Unknown);
    assert_eq!(error_of(&gone[0]).unwrap().0, "source_unreachable");
    assert_eq!(gone[0].sources_down, ["db"]);
}
