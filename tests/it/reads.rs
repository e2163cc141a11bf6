//! How a run reads: one snapshot for a rule's datasets on one PostgreSQL source, the
//! consistent cut, the limits that keep a sweep gentle on a production database, and the
//! full-sweep paths of their own (PostgreSQL's binary COPY, MySQL's protocol) against the
//! driver's row path.

use std::collections::BTreeMap;

use invariantd::config::SourceKind::{MySql, Postgres};
use invariantd::verdict::Outcome;
use sqlx::Connection as _;

use crate::harness::{CHECKER, TestDb, TlsMariaDb, TlsPostgres, Workdir, private_ca, run_of};

#[tokio::test]
async fn datasets_on_one_postgres_source_read_from_one_snapshot() {
    let db = TestDb::new(Postgres, "snapshot").await;
    db.exec_str(&["CREATE TABLE ticks (n BIGINT)"]).await;
    // Each dataset says which transactions its snapshot sees. Another connection commits
    // transactions as fast as it can meanwhile, so two snapshots taken apart would differ.
    let rules = r#"
name: one_snapshot
key: id
datasets:
  a: { source: db, query: "SELECT 1 AS id, CAST(pg_current_snapshot() AS text) AS snap" }
  b: { source: db, query: "SELECT 1 AS id, CAST(pg_current_snapshot() AS text) AS snap" }
  c: { source: db, query: "SELECT 1 AS id, CAST(pg_current_snapshot() AS text) AS snap" }
assert: a.snap == b.snap && b.snap == c.snap
message: "{{a.snap}} {{b.snap}} {{c.snap}}"
"#;
    let work = Workdir::new(&[("db", &db.url)], Some(rules));
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let url = db.admin_url.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("SET synchronous_commit = off")
                .execute(&mut c)
                .await
                .unwrap();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                sqlx::query("INSERT INTO ticks VALUES (1)")
                    .execute(&mut c)
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    for _ in 0..10 {
        let runs = work.run().await;
        let run = run_of(&runs, "one_snapshot");
        assert_eq!(run.error, None);
        assert_eq!(
            run.outcome,
            Outcome::Pass,
            "{:?}",
            run.violations.first().map(|v| &v.message)
        );
    }
    stop.cancel();
    assert!(writer.await.unwrap() > 10, "the writer kept committing");
}

#[tokio::test]
async fn a_consistent_cut_leaves_keys_changed_after_it_for_a_later_run() {
    let db = TestDb::new(invariantd::config::SourceKind::Sqlite, "cut").await;
    db.exec_str(&[
        "CREATE TABLE payments (id INTEGER, updated_at TEXT)",
        "CREATE TABLE reservations (id INTEGER, updated_at TEXT)",
        // 1: paid an hour ago, nothing reserved; 2: paid 10 s ago, its reservation not yet
        // replicated or written; 3: fine, both sides old.
        "INSERT INTO payments VALUES (1, datetime('now', '-1 hour')), (2, datetime('now', '-10 seconds')), (3, datetime('now', '-1 hour'))",
        "INSERT INTO reservations VALUES (3, datetime('now', '-1 hour'))",
    ])
    .await;
    let rules = r#"
name: cut
key: id
consistent_cut: { lag: 30s }
datasets:
  p: { source: db, query: "SELECT id, updated_at FROM payments", updated_at: updated_at }
  r: { source: db, query: "SELECT id, updated_at FROM reservations", updated_at: updated_at }
assert: p == null || r != null
"#;
    let runs = Workdir::new(&[("db", &db.url)], Some(rules)).run().await;
    let run = run_of(&runs, "cut");
    assert_eq!(run.error, None);
    assert_eq!(crate::harness::keys(run), ["1"]);
    assert_eq!(run.keys_in_grace, 1, "key 2 changed after the cut");
    assert_eq!(run.keys_judged, 2);
}

#[tokio::test]
async fn max_rows_per_second_paces_every_read_of_a_source() {
    let db = TestDb::new(invariantd::config::SourceKind::Sqlite, "paced").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) INSERT INTO t SELECT i FROM n",
    ])
    .await;
    let rules = r#"
name: paced
key: id
datasets:
  a: { source: db, query: "SELECT id FROM t" }
assert: a != null
"#;
    let work = Workdir::new(&[("db", &db.url)], Some(rules));
    let started = std::time::Instant::now();
    let runs = work.run().await;
    assert_eq!(run_of(&runs, "paced").rows_scanned, [3000]);
    let unpaced = started.elapsed();

    let config = std::fs::read_to_string(work.config()).unwrap();
    std::fs::write(
        work.config(),
        config.replace(
            "statement_timeout: 10s",
            "statement_timeout: 10s, max_rows_per_second: 1000",
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let runs = work.run().await;
    let run = run_of(&runs, "paced");
    assert_eq!(run.outcome, Outcome::Pass);
    assert_eq!(run.rows_scanned, [3000]);
    // Three batches of up to 1,024 rows at 1,000 rows a second: the first at once (the budget
    // of an idle second), the others a second or so apart.
    let paced = started.elapsed();
    assert!(
        paced >= std::time::Duration::from_millis(1900),
        "3,000 rows at 1,000 a second took {paced:?} (unpaced {unpaced:?})"
    );
}

#[tokio::test]
async fn a_full_sweep_through_binary_copy_reads_every_type_as_the_row_path_does() {
    let db = TestDb::new(Postgres, "copy_types").await;
    db.exec_str(&[
        "CREATE TYPE mood AS ENUM ('ok', 'sad')",
        "CREATE DOMAIN cents AS BIGINT",
        "CREATE TABLE t (id INT, b BOOL, s SMALLINT, i INT, l BIGINT, o OID, f REAL, d DOUBLE PRECISION, \
         n NUMERIC, n2 NUMERIC(12,2), tx TEXT, vc VARCHAR(10), u UUID, tz TIMESTAMPTZ, ts TIMESTAMP, dt DATE, \
         by BYTEA, j JSONB, js JSON, m mood, c cents)",
        "INSERT INTO t VALUES \
         (1, true, -3, 7, 9000000000, 42, 1.5, -2.25, 0, 49.90, 'héllo', 'v', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
          '2026-11-28 10:11:12.345678+00', '1999-12-31 23:59:59', '1970-01-01', '\\x00ff', '{\"a\": [1, 2]}', '{\"b\":1}', 'sad', 1234), \
         (2, false, 0, 0, -1, 0, 0, 0, -12345678901234567.000123, -0.01, '', '', NULL, '1900-01-01 00:00:00+00', '2100-06-30 12:00:00', '2000-01-01', '\\x', '[]', 'null', 'ok', -5), \
         (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
         (4, true, 1, 1, 1, 1, 'NaN', 'Infinity', 0.00120, 1e9, 'x', 'y', '00000000-0000-0000-0000-000000000000', \
          '2026-01-01 00:00:00.000001+00', '2026-01-01 00:00:00.000001', '2026-02-28', '\\x01', '{}', '1', 'ok', 0)",
        // Rows far larger than a read from the socket (64 KiB), between small ones.
        "INSERT INTO t (id, tx, by) SELECT 5, repeat('é', 200000), decode(repeat('ab', 100000), 'hex')",
        "INSERT INTO t (id, tx) VALUES (6, 'small')",
    ])
    .await;
    let rules = r#"
name: every_type
key: id
datasets:
  t: { source: db, query: "SELECT * FROM t" }
assert: t == null
"#;
    let work = Workdir::new(&[("db", &db.url)], Some(rules));
    // A full sweep reads through COPY; a read of some keys binds them, through the prepared
    // statement's rows.
    let keys: Vec<String> = (1..=6).map(|k| k.to_string()).collect();
    let (copy, rows) = sweep_and_keys(&work, &keys).await;
    assert_same_violations(&copy, &rows, 6);
    let first = copy.violations[0].datasets.to_value();
    assert_eq!(first["t"]["n2"], "49.90");
    assert_eq!(first["t"]["m"], "sad");
    // (Evidence keeps the start of a long value.)
    let large = copy.violations[4].datasets.to_value();
    assert!(
        large["t"]["tx"].as_str().unwrap().starts_with("éééé"),
        "{large}"
    );
    assert_eq!(copy.violations[5].datasets.to_value()["t"]["tx"], "small");
    // That sweep read the COPY itself, not through the driver.
    let check = work.cli(&["--log-level", "invariantd=debug", "check"]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("Full sweep over the PostgreSQL protocol")
            && !stderr.contains("driver's COPY stream"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_mariadb_full_sweep_over_the_wire_reads_every_type_as_the_driver_does() {
    let db = TestDb::new(MySql, "wire_types").await;
    // A user of its own with a password that needs escaping in a URL: the wire reader
    // authenticates itself (mysql_native_password) with what it reads from the URL.
    // One name, dropped first: a failed run leaves at most this one user behind.
    let user = "invariantd_wire";
    db.exec(&[
        format!("DROP USER IF EXISTS '{user}'@'%'"),
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'p@ss:w/rd%é'"),
        format!("GRANT SELECT ON {}.* TO '{user}'@'%'", db.name),
    ])
    .await;
    db.exec_str(&[
        "CREATE TABLE t (id INT, b BOOLEAN, ti TINYINT, si SMALLINT, mi MEDIUMINT, i INT, l BIGINT, \
         tu TINYINT UNSIGNED, su SMALLINT UNSIGNED, mu MEDIUMINT UNSIGNED, iu INT UNSIGNED, lu BIGINT UNSIGNED, \
         y YEAR, f FLOAT, d DOUBLE, n DECIMAL(30,10), n2 DECIMAL(12,2), c CHAR(3), vc VARCHAR(10), tx TEXT, \
         vb VARCHAR(10) COLLATE utf8mb4_bin, bn BINARY(2), vbn VARBINARY(10), bl BLOB, e ENUM('ok','sad'), \
         st SET('a','b'), j JSON, ts TIMESTAMP(6) NULL, dtm DATETIME(6), dt DATE, tm TIME(6))",
        "INSERT INTO t VALUES \
         (1, true, -128, -32768, -8388608, -2147483648, -9223372036854775808, \
          255, 65535, 16777215, 4294967295, 18446744073709551615, \
          2155, 1.1, -2.25, 123456789012345678.0123456789, 49.90, 'abc', 'héllo', 'long text', \
          'Bin', 'x', 'héllo', X'00FF', 'sad', 'a,b', '{\"a\": [1, 2]}', '2026-11-28 10:11:12.345678', \
          '1000-01-01 00:00:00', '9999-12-31', '-838:59:59'), \
         (2, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1901, 0, 0, -0.0000000001, -0.01, '', '', '', '', '', '', '', \
          'ok', '', '[]', '1970-01-02 00:00:00', '2026-01-01 00:00:00.000001', '1970-01-01', '-00:00:01.5'), \
         (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
         (4, true, 1, 1, 1, 1, 9223372036854775807, 1, 1, 1, 1, 9223372036854775808, 2026, -3.25e38, 1e308, \
          0, 1e9, 'a', 'b', 'c', 'd', 'e', 'f', X'C3A9', 'ok', 'b', 'null', '2038-01-19 03:14:07.999999', \
          '2026-11-28 23:59:59.999999', '2000-02-29', '838:59:59')",
    ])
    .await;
    let password = "p%40ss%3Aw%2Frd%25%C3%A9";
    let url = db
        .url
        .replacen(&format!("{CHECKER}@"), &format!("{user}:{password}@"), 1);
    let rules = r#"
name: every_type
key: id
datasets:
  t: { source: db, query: "SELECT * FROM t" }
assert: t == null
"#;
    let work = Workdir::new(&[("db", &url)], Some(rules));
    // A full sweep reads over the wire; a read of some keys binds them, through the driver.
    let keys: Vec<String> = (1..=4).map(|k| k.to_string()).collect();
    let (wire, driver) = sweep_and_keys(&work, &keys).await;
    assert_same_violations(&wire, &driver, 4);
    let first = wire.violations[0].datasets.to_value();
    assert_eq!(first["t"]["lu"], "18446744073709551615");
    assert_eq!(first["t"]["n"], "123456789012345678.0123456789");
    assert_eq!(first["t"]["tm"], "-838:59:59");
    assert_eq!(first["t"]["vc"], "héllo");
    let second = wire.violations[1].datasets.to_value();
    assert_eq!(second["t"]["tm"], "-00:00:01.500");

    // The sweep went over the wire, not through the driver.
    let check = work.cli(&["--log-level", "invariantd=debug", "check"]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("Full sweep over the MySQL protocol"),
        "{stderr}"
    );
    assert!(!stderr.contains("driver's row stream"), "{stderr}");
    db.exec(&[format!("DROP USER '{user}'@'%'")]).await;
}

#[tokio::test]
async fn a_mariadb_full_sweep_over_the_wire_takes_tls_as_the_driver_would() {
    let server = TlsMariaDb::start().await;
    server.sql(
        "CREATE DATABASE shop; CREATE USER 'checker'@'%' IDENTIFIED BY 'secret'; \
         GRANT SELECT ON shop.* TO 'checker'@'%'; CREATE TABLE shop.t (id INT); \
         INSERT INTO shop.t VALUES (1), (2), (3)",
    );
    // Each row carries the cipher of the session that read it (empty without TLS).
    let rules = r#"
name: ciphers
key: id
datasets:
  t:
    source: db
    query: >-
      SELECT id, (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS
      WHERE VARIABLE_NAME = 'Ssl_cipher') AS cipher FROM t
assert: t == null
"#;
    let ca = server.dir.path().join("ca.pem");
    let other = tempfile::tempdir().unwrap();
    private_ca(other.path());
    let base = format!("mysql://checker:secret@127.0.0.1:{}/shop", server.port);
    let ca_param = format!("ssl-ca={}", ca.display());
    for (params, encrypted) in [
        (String::new(), true),
        ("?ssl-mode=disabled".to_string(), false),
        ("?ssl-mode=required".to_string(), true),
        (format!("?ssl-mode=verify_ca&{ca_param}"), true),
        (format!("?ssl-mode=verify_identity&{ca_param}"), true),
    ] {
        let url = format!("{base}{params}");
        let work = Workdir::new(&[("db", &url)], Some(rules));
        let (wire, driver) = sweep_and_keys(&work, &["1".into()]).await;
        assert_eq!(wire.error, None, "{params}");
        assert_eq!(driver.error, None, "{params}");
        assert_eq!(wire.violations.len(), 3, "{params}");
        for (path, run) in [("wire", &wire), ("driver", &driver)] {
            let evidence = run.violations[0].datasets.to_value();
            let cipher = evidence["t"]["cipher"].as_str().unwrap();
            assert_eq!(!cipher.is_empty(), encrypted, "{path} {params}: `{cipher}`");
        }
        let check = work.cli(&["--log-level", "invariantd=debug", "check"]);
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(
            stderr.contains("Full sweep over the MySQL protocol")
                && !stderr.contains("driver's row stream"),
            "{params}: {stderr}"
        );
    }
    // A certificate the given CA did not sign is refused, as the driver refuses it.
    let url = format!(
        "{base}?ssl-mode=verify_ca&ssl-ca={}",
        other.path().join("ca.pem").display()
    );
    let work = Workdir::new(&[("db", &url)], Some(rules));
    let (run, _) = sweep_and_keys(&work, &[]).await;
    let error = run.error.expect("an untrusted certificate is refused");
    assert_eq!(
        error.kind,
        invariantd::verdict::ErrorKind::SourceUnreachable
    );
    assert!(error.message.contains("certificate"), "{}", error.message);
}

#[tokio::test]
async fn a_postgres_full_sweep_over_the_wire_logs_in_and_takes_tls_as_the_driver_would() {
    let server = TlsPostgres::start().await;
    // Each row carries who read it and whether the session was encrypted.
    let rules = r#"
name: logins
key: id
datasets:
  t:
    source: db
    query: >-
      SELECT id, current_user::text AS who,
      (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls FROM t
assert: t == null
"#;
    let ca = format!("sslrootcert={}", server.dir.path().join("ca.pem").display());
    let port = server.port;
    for (user, params, encrypted) in [
        ("scram", String::new(), true),
        ("scram", "?sslmode=disable".to_string(), false),
        ("scram", "?sslmode=require".to_string(), true),
        ("scram", format!("?sslmode=verify-ca&{ca}"), true),
        ("scram", format!("?sslmode=verify-full&{ca}"), true),
        ("md5", String::new(), true),
        ("plain", "?sslmode=disable".to_string(), false),
        ("postgres", String::new(), true),
    ] {
        let url = format!("postgres://{user}:secret@127.0.0.1:{port}/postgres{params}");
        let work = Workdir::new(&[("db", &url)], Some(rules));
        let (wire, driver) = sweep_and_keys(&work, &["1".into()]).await;
        assert_eq!(wire.error, None, "{user} {params}");
        assert_eq!(driver.error, None, "{user} {params}");
        assert_eq!(wire.violations.len(), 3, "{user} {params}");
        for (path, run) in [("wire", &wire), ("driver", &driver)] {
            let evidence = run.violations[0].datasets.to_value();
            assert_eq!(evidence["t"]["who"], user, "{path} {user} {params}");
            assert_eq!(evidence["t"]["tls"], encrypted, "{path} {user} {params}");
        }
        let check = work.cli(&["--log-level", "invariantd=debug", "check"]);
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(
            stderr.contains("Full sweep over the PostgreSQL protocol")
                && !stderr.contains("driver's COPY stream"),
            "{user} {params}: {stderr}"
        );
    }
    // A password the driver finds in ~/.pgpass is one the COPY reader does not look for: the
    // sweep reads through the driver, and says so once.
    let passfile = server.dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!("127.0.0.1:{port}:postgres:scram:secret\n"),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&passfile).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&passfile, permissions).unwrap();
    let url = format!("postgres://scram@127.0.0.1:{port}/postgres");
    let work = Workdir::new(&[("db", &url)], Some(rules));
    let check = work.cli_env(
        &[
            "--log-level",
            "invariantd=debug",
            "check",
            "--format",
            "json",
        ],
        &[("PGPASSFILE", passfile.to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("read through the driver's COPY stream")
            && stderr.contains("a password that the URL and PGPASSWORD do not give")
            && !stderr.contains("Full sweep over the PostgreSQL protocol"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(
        report["rules"][0]["violations"].as_array().unwrap().len(),
        3,
        "{report}"
    );
}

/// The rule of `work` run twice: a full sweep (a reader's own path, where it has one) and a
/// read of `keys`, which binds them and goes through the driver's prepared statement.
async fn sweep_and_keys(
    work: &Workdir,
    keys: &[String],
) -> (invariantd::verdict::RuleRun, invariantd::verdict::RuleRun) {
    let (config, rules) = work.load();
    let sources = invariantd::sources::Sources::new(&config.sources, config.secrets.clone());
    let now = chrono::Utc::now();
    let sweep = invariantd::engine::run_rule(&rules[0], &sources, now).await;
    let some = invariantd::engine::run_rule_for_keys(
        &rules[0],
        &sources,
        now,
        keys,
        invariantd::engine::Grace::Apply,
    )
    .await;
    (sweep, some)
}

/// Both runs read every key without error and found the same rows for each.
fn assert_same_violations(
    sweep: &invariantd::verdict::RuleRun,
    some: &invariantd::verdict::RuleRun,
    n: usize,
) {
    assert_eq!(sweep.error, None);
    assert_eq!(some.error, None);
    assert_eq!(sweep.violations.len(), n);
    for (a, b) in sweep.violations.iter().zip(&some.violations) {
        assert_eq!(a.key, b.key);
        assert_eq!(
            a.datasets.to_value(),
            b.datasets.to_value(),
            "key {}",
            a.key
        );
    }
}

/// A full sweep split into key ranges, each part run apart and the parts merged, is the run a
/// single sweep makes: on PostgreSQL (through COPY), MariaDB (over the wire) and SQLite, with
/// integer and text keys; and a part that fails makes the whole run unknown.
#[tokio::test]
async fn a_sweep_split_into_key_ranges_and_merged_is_the_single_sweep() {
    use invariantd::sources::KeyRange;
    for kind in [Postgres, MySql, invariantd::config::SourceKind::Sqlite] {
        let db = TestDb::new(kind, "ranges").await;
        let mut inserts = vec![
            "CREATE TABLE orders (id INT, code VARCHAR(20), paid INT)".to_string(),
            "CREATE TABLE stock (id INT, code VARCHAR(20), reserved INT)".to_string(),
        ];
        // 600 orders, every 7th unpaid-but-reserved, every 11th reserved nowhere; codes that
        // sort byte-wise otherwise than numerically.
        let orders: Vec<String> = (1..=600)
            .map(|i| format!("({i}, 'c{i}', {})", i32::from(i % 7 != 0)))
            .collect();
        let stock: Vec<String> = (1..=600)
            .filter(|i| i % 11 != 0)
            .map(|i| format!("({i}, 'c{i}', 1)"))
            .collect();
        inserts.push(format!("INSERT INTO orders VALUES {}", orders.join(", ")));
        inserts.push(format!("INSERT INTO stock VALUES {}", stock.join(", ")));
        let inserts: Vec<&str> = inserts.iter().map(String::as_str).collect();
        db.exec_str(&inserts).await;
        use invariantd::value::Key;
        for (key, bounds) in [
            ("id", vec![Key::Int(150), Key::Int(151), Key::Int(400)]),
            (
                "code",
                vec![
                    Key::Text("c2".into()),
                    Key::Text("c450".into()),
                    Key::Text("c5".into()),
                ],
            ),
        ] {
            let rule = format!(
                "name: paid_reserved\nkey: {key}\ndatasets:\n  o: {{ source: db, query: \"SELECT {key}, paid FROM orders\" }}\n  s: {{ source: db, query: \"SELECT {key}, reserved FROM stock\" }}\nassert: o != null && o.paid == 1 && s != null\n"
            );
            let work = Workdir::new(&[("db", &db.url)], Some(&rule));
            let (config, rules) = work.load();
            let sources =
                invariantd::sources::Sources::new(&config.sources, config.secrets.clone());
            let now = chrono::Utc::now();
            let single = invariantd::engine::run_rule(&rules[0], &sources, now).await;
            let mut edges: Vec<Option<Key>> = vec![None];
            edges.extend(bounds.iter().map(|b| Some(b.clone())));
            edges.push(None);
            let sweep = |snapshots: BTreeMap<String, String>| {
                let (rule, sources, edges) = (&rules[0], &sources, &edges);
                async move {
                    let mut parts = Vec::new();
                    for pair in edges.windows(2) {
                        let range = KeyRange {
                            from: pair[0].clone(),
                            until: pair[1].clone(),
                        };
                        let open = std::collections::HashSet::new();
                        let part = invariantd::engine::run_rule_range(
                            rule, sources, now, &open, &range, &snapshots,
                        );
                        parts.push(part.await);
                    }
                    invariantd::engine::merge_parts(parts).unwrap()
                }
            };
            let merged = sweep(BTreeMap::new()).await;
            let what = format!("{kind:?}, key {key}");
            assert_eq!(single.outcome, Outcome::Fail, "{what}");
            assert_eq!(merged.outcome, single.outcome, "{what}");
            assert_eq!(merged.rows_scanned, single.rows_scanned, "{what}");
            assert_eq!(merged.keys_judged, single.keys_judged, "{what}");
            let keys = |r: &invariantd::verdict::RuleRun| -> Vec<(String, String)> {
                r.violations
                    .iter()
                    .map(|v| (v.key.to_string(), v.message.to_string()))
                    .collect()
            };
            assert_eq!(keys(&merged), keys(&single), "{what}");
            assert_eq!(
                single.violations.len(),
                600 / 7 + 600 / 11 - 600 / 77,
                "{what}"
            );
            // On PostgreSQL the ranges can read one snapshot exported for the whole sweep:
            // a key broken after the export is not seen by it, but is by ranges that read
            // their own snapshots.
            if kind == Postgres {
                let held = sources.get("db").unwrap().export_snapshot().await.unwrap();
                let held = held.expect("PostgreSQL exports a snapshot");
                db.exec_str(&["DELETE FROM stock WHERE id = 1"]).await;
                let shared = sweep(BTreeMap::from([("db".to_string(), held.id.clone())])).await;
                let own = sweep(BTreeMap::new()).await;
                db.exec_str(&["INSERT INTO stock VALUES (1, 'c1', 1)"])
                    .await;
                assert_eq!(keys(&shared), keys(&single), "{what}");
                assert_eq!(own.violations.len(), single.violations.len() + 1, "{what}");
                // Once the exporter lets go, the snapshot can no longer be read: a range
                // that needed it is unknown, never judged on other data.
                drop(held);
                let gone = sweep(BTreeMap::from([(
                    "db".to_string(),
                    "00000003-1".to_string(),
                )]))
                .await;
                assert_eq!(gone.outcome, Outcome::Unknown, "{what}");
            }
        }
        // One part that cannot run makes the run unknown, as one failing dataset would.
        let broken = "name: broken\nkey: id\ndatasets:\n  o: { source: db, query: \"SELECT id, paid FROM orders\" }\nassert: o.paid == 1\n";
        let work = Workdir::new(&[("db", &db.url)], Some(broken));
        let (config, rules) = work.load();
        let sources = invariantd::sources::Sources::new(&config.sources, config.secrets.clone());
        let now = chrono::Utc::now();
        let open = std::collections::HashSet::new();
        let good = KeyRange {
            from: None,
            until: Some(invariantd::value::Key::Int(300)),
        };
        let none = BTreeMap::new();
        let bad = KeyRange {
            from: Some(invariantd::value::Key::Text("not a number".into())),
            until: None,
        };
        let parts = vec![
            invariantd::engine::run_rule_range(&rules[0], &sources, now, &open, &good, &none).await,
            invariantd::engine::run_rule_range(&rules[0], &sources, now, &open, &bad, &none).await,
        ];
        let merged = invariantd::engine::merge_parts(parts).unwrap();
        assert_eq!(merged.outcome, Outcome::Unknown, "{kind:?}");
        assert!(merged.violations.is_empty(), "{kind:?}");
        assert!(!merged.finished, "{kind:?}");
    }
}
