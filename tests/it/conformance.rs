//! One suite every backend runs, through the seam the engine reads by (`Sources`,
//! `spawn_reader`): key order, NULL keys, decimals, timestamps, text collations, statement
//! timeouts, stopping a query on the server, the incremental filters and key ranges. A new kind of
//! database passes this suite by adding itself to `BACKENDS` and its few words of SQL to
//! `Dialect`.

use std::time::{Duration, Instant};

use invariantd::config::SourceKind;
use invariantd::sources::{
    ChangedSince, Description, KeyKind, KeyMode, KeyRange, ReadRequest, ReaderMsg, Sources,
    spawn_reader,
};
use invariantd::value::{Key, Row, Value, timestamp_from_naive};
use invariantd::verdict::{ErrorKind, RunError};

use crate::harness::{TestDb, Workdir, running};

const BACKENDS: [SourceKind; 3] = [SourceKind::Postgres, SourceKind::MySql, SourceKind::Sqlite];

/// What differs between the databases in this suite: column types and a query that takes
/// long (with the text that finds it among the server's running queries).
struct Dialect {
    create: &'static str,
    slow: &'static str,
    marker: &'static str,
}

fn dialect(kind: SourceKind) -> Dialect {
    match kind {
        SourceKind::Postgres => Dialect {
            create: "CREATE TABLE items (id BIGINT, name TEXT, amount NUMERIC(10,2), \
                     at TIMESTAMP, updated_at TIMESTAMP)",
            slow: "SELECT 1 AS id FROM (SELECT pg_sleep(30)) AS s",
            marker: "pg_sleep(30)",
        },
        SourceKind::MySql => Dialect {
            create: "CREATE TABLE items (id BIGINT, name VARCHAR(20), amount DECIMAL(10,2), \
                     at DATETIME(6), updated_at DATETIME(6))",
            slow: "SELECT 1 AS id FROM (SELECT SLEEP(30)) AS s",
            marker: "SLEEP(30)",
        },
        SourceKind::Sqlite => Dialect {
            create: "CREATE TABLE items (id INTEGER, name TEXT, amount NUMERIC(10,2), \
                     at TIMESTAMP, updated_at TIMESTAMP)",
            slow: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                   WHERE x < 1000000000) SELECT max(x) AS id FROM c",
            marker: "",
        },
    }
}

/// A database of `kind` holding `items`, and the sources of a config reading it with
/// `statement_timeout`.
async fn items(kind: SourceKind, statement_timeout: &str) -> (TestDb, Sources) {
    let db = TestDb::new(kind, "conform").await;
    db.exec_str(&[
        dialect(kind).create,
        "INSERT INTO items VALUES \
         (10, 'b', 49.90, '2026-11-28 10:11:12', '2026-01-01 00:00:00'), \
         (2, 'B', 0.10, '2026-11-28 10:11:12.5', '2026-06-01 00:00:00'), \
         (NULL, 'é', 1.00, NULL, '2026-06-01 00:00:00'), \
         (7, 'a', 12345678.99, '1999-12-31 23:59:59', '2026-06-01 00:00:00'), \
         (3, NULL, NULL, NULL, NULL)",
    ])
    .await;
    let config = format!(
        "sources:\n  db: {{ url: \"{}\", connect_timeout: 2s, statement_timeout: {statement_timeout} }}\nrules: [rules/]\n",
        db.url
    );
    let work = Workdir::raw(
        &config,
        "name: noop\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT 1 AS id\" }\nassert: true\n",
    );
    let (config, _) = work.load();
    (db, Sources::new(&config.sources, config.secrets.clone()))
}

/// What one read found.
#[derive(Debug)]
struct Read {
    description: Description,
    rows: Vec<Row>,
    null_keys: u64,
}

impl Read {
    fn keys(&self) -> Vec<String> {
        self.rows.iter().map(|r| r.key.to_string()).collect()
    }

    fn value(&self, key: &Key, column: &str) -> &Value {
        let i = self
            .description
            .columns
            .iter()
            .position(|c| c == column)
            .unwrap();
        &self.rows.iter().find(|r| r.key == *key).unwrap().values[i]
    }
}

fn request(query: &str, key: &str, timeout: Duration) -> ReadRequest {
    ReadRequest {
        query: query.to_string(),
        key: key.to_string(),
        deadline: tokio::time::Instant::now() + timeout,
        keys: None,
        changed_since: None,
        snapshot: None,
        range: None,
    }
}

/// Reads `request` from source `db` in `mode` to the end, as the engine does.
async fn read(sources: &Sources, request: ReadRequest, mode: KeyMode) -> Result<Read, RunError> {
    let source = sources.get("db").unwrap().clone();
    let permit = source.reserve(1).await?;
    let mut reader = spawn_reader(source, request, permit);
    let description = match reader.messages.recv().await {
        Some(ReaderMsg::Described(d)) => d,
        Some(ReaderMsg::Failed(e)) => return Err(e),
        other => panic!("expected a description, got {other:?}"),
    };
    reader.mode.send(mode).unwrap();
    let mut rows = Vec::new();
    loop {
        match reader.messages.recv().await {
            Some(ReaderMsg::Rows(batch)) => rows.extend(batch),
            Some(ReaderMsg::Done { null_keys }) => {
                return Ok(Read {
                    description,
                    rows,
                    null_keys,
                });
            }
            Some(ReaderMsg::Failed(e)) => return Err(e),
            other => panic!("expected rows, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn keys_come_in_the_order_asked_byte_wise_for_text_and_null_keys_are_counted() {
    for kind in BACKENDS {
        let (_db, sources) = items(kind, "10s").await;
        let all = "SELECT id, name FROM items";
        let by_id = read(
            &sources,
            request(all, "id", Duration::from_secs(10)),
            KeyMode::Int,
        )
        .await
        .unwrap();
        assert_eq!(by_id.description.key_kind, KeyKind::Int, "{kind:?}");
        assert_eq!(by_id.keys(), ["2", "3", "7", "10"], "{kind:?}");
        assert_eq!(by_id.null_keys, 1, "{kind:?}");

        // Integers read in text order sort as text: "10" before "2".
        let as_text = read(
            &sources,
            request(all, "id", Duration::from_secs(10)),
            KeyMode::Text,
        )
        .await
        .unwrap();
        assert_eq!(as_text.keys(), ["10", "2", "3", "7"], "{kind:?}");

        // Byte-wise, whatever the column's collation: upper case before lower, UTF-8 last.
        let by_name = read(
            &sources,
            request(all, "name", Duration::from_secs(10)),
            KeyMode::Text,
        )
        .await
        .unwrap();
        assert_eq!(by_name.description.key_kind, KeyKind::Text, "{kind:?}");
        assert_eq!(by_name.keys(), ["B", "a", "b", "é"], "{kind:?}");
        assert_eq!(by_name.null_keys, 1, "{kind:?}");
    }
}

#[tokio::test]
async fn decimals_and_timestamps_read_exactly() {
    let instant = |text: &str| {
        Value::Timestamp(timestamp_from_naive(
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap(),
        ))
    };
    for kind in BACKENDS {
        let (_db, sources) = items(kind, "10s").await;
        let read = read(
            &sources,
            request(
                "SELECT id, amount, at FROM items",
                "id",
                Duration::from_secs(10),
            ),
            KeyMode::Int,
        )
        .await
        .unwrap();
        let decimal = |text: &str| Value::Decimal(text.parse().unwrap());
        assert_eq!(
            read.value(&Key::Int(10), "amount"),
            &decimal("49.9"),
            "{kind:?}"
        );
        assert_eq!(
            read.value(&Key::Int(2), "amount"),
            &decimal("0.1"),
            "{kind:?}"
        );
        assert_eq!(
            read.value(&Key::Int(7), "amount"),
            &decimal("12345678.99"),
            "{kind:?}"
        );
        assert_eq!(read.value(&Key::Int(3), "amount"), &Value::Null, "{kind:?}");
        assert_eq!(
            read.value(&Key::Int(10), "at"),
            &instant("2026-11-28 10:11:12.0"),
            "{kind:?}"
        );
        assert_eq!(
            read.value(&Key::Int(2), "at"),
            &instant("2026-11-28 10:11:12.5"),
            "{kind:?}"
        );
        assert_eq!(
            read.value(&Key::Int(7), "at"),
            &instant("1999-12-31 23:59:59.0"),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn incremental_filters_read_only_the_rows_changed_since_and_the_keys_asked() {
    for kind in BACKENDS {
        let (_db, sources) = items(kind, "10s").await;
        let query = "SELECT id, updated_at FROM items";
        let mut changed = request(query, "id", Duration::from_secs(10));
        changed.changed_since = Some(ChangedSince {
            column: "updated_at".into(),
            since: "2026-03-01T00:00:00Z".parse().unwrap(),
        });
        let read_changed = read(&sources, changed, KeyMode::Int).await.unwrap();
        assert_eq!(read_changed.keys(), ["2", "7"], "{kind:?}");
        assert_eq!(read_changed.null_keys, 1, "{kind:?}");

        let mut some = request(query, "id", Duration::from_secs(10));
        some.keys = Some(vec![
            "10".into(),
            "3".into(),
            "99".into(),
            "not a number".into(),
        ]);
        let read_some = read(&sources, some, KeyMode::Int).await.unwrap();
        assert_eq!(read_some.keys(), ["3", "10"], "{kind:?}");

        // A number cannot say what changed (text can: applications keep times as text).
        let mut wrong = request(
            "SELECT id, amount FROM items",
            "id",
            Duration::from_secs(10),
        );
        wrong.changed_since = Some(ChangedSince {
            column: "amount".into(),
            since: "2026-03-01T00:00:00Z".parse().unwrap(),
        });
        if kind != SourceKind::Sqlite {
            // (SQLite keeps times as text: any column may hold one.)
            let e = read(&sources, wrong, KeyMode::Int).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::SchemaMismatch, "{kind:?}: {}", e.message);
        }
    }
}

#[tokio::test]
async fn a_query_over_the_statement_timeout_is_a_timeout_and_is_stopped_on_the_server() {
    for kind in BACKENDS {
        let (db, sources) = items(kind, "1s").await;
        let slow = dialect(kind);
        let started = Instant::now();
        let e = read(
            &sources,
            request(slow.slow, "id", Duration::from_secs(1)),
            KeyMode::Int,
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{kind:?}: {}", e.message);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{kind:?}: {:?}",
            started.elapsed()
        );
        assert!(sources.settle(Duration::from_secs(5)).await, "{kind:?}");
        if kind != SourceKind::Sqlite {
            assert_eq!(running(&db, slow.marker).await, 0, "{kind:?}");
        }
    }
}

#[tokio::test]
async fn an_abandoned_read_stops_its_query_on_the_server() {
    for kind in BACKENDS {
        let (db, sources) = items(kind, "60s").await;
        let slow = dialect(kind);
        let source = sources.get("db").unwrap().clone();
        let permit = source.reserve(1).await.unwrap();
        let mut reader = spawn_reader(
            source,
            request(slow.slow, "id", Duration::from_secs(60)),
            permit,
        );
        match reader.messages.recv().await {
            Some(ReaderMsg::Described(_)) => {}
            other => panic!("{kind:?}: expected a description, got {other:?}"),
        }
        reader.mode.send(KeyMode::Int).unwrap();
        if kind != SourceKind::Sqlite {
            let deadline = Instant::now() + Duration::from_secs(10);
            while running(&db, slow.marker).await == 0 {
                assert!(
                    Instant::now() < deadline,
                    "{kind:?}: the query never started"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // The run goes away: the reader stops the query and ends.
        drop(reader.messages);
        let abandoned = Instant::now();
        assert!(sources.settle(Duration::from_secs(5)).await, "{kind:?}");
        assert!(abandoned.elapsed() < Duration::from_secs(5), "{kind:?}");
        if kind != SourceKind::Sqlite {
            let deadline = Instant::now() + Duration::from_secs(2);
            while running(&db, slow.marker).await > 0 {
                assert!(
                    Instant::now() < deadline,
                    "{kind:?}: the query kept running on the server"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A range between keys written as text: those that read as integers are integer keys.
fn range(from: Option<&str>, until: Option<&str>) -> Option<KeyRange> {
    let key = |b: &str| match b.parse() {
        Ok(i) => Key::Int(i),
        Err(_) => Key::Text(b.into()),
    };
    Some(KeyRange {
        from: from.map(key),
        until: until.map(key),
    })
}

#[tokio::test]
async fn key_ranges_split_a_sweep_into_disjoint_parts_in_the_key_order() {
    for kind in BACKENDS {
        let (_db, sources) = items(kind, "10s").await;
        let all = "SELECT id, name FROM items";
        // Integer keys, numerically: the parts of a full sweep, and of a read of some keys
        // (which takes the other path on PostgreSQL and MariaDB).
        for keys in [None, Some(vec!["2".to_string(), "3".into(), "10".into()])] {
            let mut parts = Vec::new();
            for r in [
                range(None, Some("3")),
                range(Some("3"), Some("10")),
                range(Some("10"), None),
            ] {
                let mut req = request(all, "id", Duration::from_secs(10));
                req.range = r;
                req.keys = keys.clone();
                parts.push(read(&sources, req, KeyMode::Int).await.unwrap().keys());
            }
            let expected: [&[&str]; 3] = match keys {
                None => [&["2"], &["3", "7"], &["10"]],
                Some(_) => [&["2"], &["3"], &["10"]],
            };
            assert_eq!(parts, expected, "{kind:?}");
        }
        // Text keys, byte-wise; a bound with quotes and backslashes is a value, not SQL.
        let mut parts = Vec::new();
        for r in [
            range(None, Some("a")),
            range(Some("a"), Some("b")),
            range(Some("b"), Some("e\\' OR '1'='1")),
            range(Some("e\\' OR '1'='1"), None),
        ] {
            let mut req = request(all, "name", Duration::from_secs(10));
            req.range = r;
            parts.push(read(&sources, req, KeyMode::Text).await.unwrap().keys());
        }
        let expected: [&[&str]; 4] = [&["B"], &["a"], &["b"], &["é"]];
        assert_eq!(parts, expected, "{kind:?}");
        // A bound that is not an integer cannot split integer keys, nor an integer text keys.
        for (bound, key, mode) in [("x", "id", KeyMode::Int), ("7", "name", KeyMode::Text)] {
            let mut wrong = request(all, key, Duration::from_secs(10));
            wrong.range = range(Some(bound), None);
            let e = read(&sources, wrong, mode).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::SchemaMismatch, "{kind:?}: {}", e.message);
        }
    }
}
