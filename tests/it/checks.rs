//! Built-in checks (`check:`): each kind run against real PostgreSQL, MariaDB and SQLite
//! through the engine, prepared by `validate --connect`, and tested with `tests:` fixtures.

use invariantd::config::SourceKind;

use crate::harness::{TestDb, Workdir, keys, run_of};

const BACKENDS: [SourceKind; 3] = [SourceKind::Postgres, SourceKind::MySql, SourceKind::Sqlite];

fn create(kind: SourceKind) -> [&'static str; 3] {
    match kind {
        SourceKind::Postgres => [
            "CREATE TABLE orders (id BIGINT, total_cents BIGINT, updated_at TIMESTAMP)",
            "CREATE TABLE payments (order_id BIGINT, total_cents NUMERIC(12,2), updated_at TIMESTAMP)",
            "CREATE TABLE lines (id BIGINT, sku TEXT, qty INTEGER)",
        ],
        SourceKind::MySql => [
            "CREATE TABLE orders (id BIGINT, total_cents BIGINT, updated_at DATETIME(6))",
            "CREATE TABLE payments (order_id BIGINT, total_cents DECIMAL(12,2), updated_at DATETIME(6))",
            "CREATE TABLE `lines` (id BIGINT, sku VARCHAR(20), qty INTEGER)",
        ],
        SourceKind::Sqlite => [
            "CREATE TABLE orders (id INTEGER, total_cents INTEGER, updated_at TIMESTAMP)",
            "CREATE TABLE payments (order_id INTEGER, total_cents NUMERIC(12,2), updated_at TIMESTAMP)",
            "CREATE TABLE lines (id INTEGER, sku TEXT, qty INTEGER)",
        ],
    }
}

/// Every kind, each with something to find. `lines` is a reserved word in MariaDB, so the
/// checks on it read through a query that quotes it as the database needs.
fn rules(lines_from: &str) -> String {
    format!(
        r#"
name: orders_fresh
check:
  freshness: {{ source: shop, table: orders, max_age: 1h }}
---
name: orders_fresh_enough
check:
  freshness: {{ source: shop, table: orders, max_age: 36500d }}
---
name: big_orders_fresh
check:
  freshness:
    source: shop
    query: SELECT updated_at FROM orders WHERE total_cents > 100000
    dataset: big_orders
    max_age: 1h
---
name: orders_counted
check:
  row_count: {{ source: shop, table: orders, min: 1, max: 3 }}
---
name: payments_counted
check:
  row_count: {{ source: pay, query: "SELECT order_id FROM payments", min: 1 }}
---
name: line_ids_unique
check:
  unique: {{ source: shop, query: "SELECT id FROM {lines_from}", dataset: lines, column: id }}
---
name: lines_complete
check:
  not_null: {{ source: shop, query: "SELECT id, sku, qty FROM {lines_from}", dataset: lines, key: id, columns: [sku, qty] }}
---
name: totals_match
check:
  matches:
    key: order_id
    datasets:
      ordered: {{ source: shop, query: "SELECT id AS order_id, total_cents FROM orders" }}
      paid: {{ source: pay, table: payments }}
    fields: [total_cents]
"#
    )
}

#[tokio::test]
async fn each_check_finds_what_it_checks_on_every_database() {
    for kind in BACKENDS {
        let db = TestDb::new(kind, "checks").await;
        let mut statements: Vec<&str> = create(kind).to_vec();
        statements.extend([
            "INSERT INTO orders VALUES (1, 100, '2020-01-01 10:00:00'), \
             (2, 200, '2020-01-01 11:00:00'), (3, 300, '2020-01-01 12:00:00'), \
             (4, 400, '2020-01-01 09:00:00')",
            "INSERT INTO payments VALUES (1, 100.00, '2020-01-01 10:00:00'), \
             (2, 250, '2020-01-01 10:00:00'), (3, 300, '2020-01-01 10:00:00'), \
             (5, 500, '2020-01-01 10:00:00')",
        ]);
        let lines = if kind == SourceKind::MySql {
            "`lines`"
        } else {
            "lines"
        };
        let insert = format!(
            "INSERT INTO {lines} VALUES (10, 'a', 1), (11, NULL, 2), (12, 'c', NULL), (12, 'c', 1)"
        );
        statements.push(&insert);
        db.exec_str(&statements).await;
        let wd = Workdir::new(
            &[("shop", db.url.as_str()), ("pay", db.url.as_str())],
            Some(&rules(lines)),
        );

        let out = wd.cli(&["validate", "--connect"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{kind:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let runs = wd.run().await;
        for run in &runs {
            assert!(
                run.error.is_none(),
                "{kind:?} {}: {:?}",
                run.rule,
                run.error
            );
        }
        let messages = |rule: &str| -> Vec<String> {
            run_of(&runs, rule)
                .violations
                .iter()
                .map(|v| v.message.to_string())
                .collect()
        };
        let stale = messages("orders_fresh");
        assert_eq!(stale.len(), 1, "{kind:?}: {stale:?}");
        assert!(
            stale[0].starts_with("orders: the newest updated_at is 2020-01-01")
                && stale[0].contains("12:00:00")
                && stale[0].ends_with(", older than 1h"),
            "{kind:?}: {stale:?}"
        );
        assert_eq!(
            keys(run_of(&runs, "orders_fresh_enough")),
            Vec::<String>::new()
        );
        assert_eq!(
            messages("big_orders_fresh"),
            ["big_orders: no rows, older than 1h"],
            "{kind:?}"
        );
        assert_eq!(
            messages("orders_counted"),
            ["orders: 4 rows, expected between 1 and 3"],
            "{kind:?}"
        );
        assert_eq!(
            keys(run_of(&runs, "payments_counted")),
            Vec::<String>::new()
        );
        assert_eq!(
            messages("line_ids_unique"),
            ["12: id appears 2 times in lines"],
            "{kind:?}"
        );
        assert_eq!(
            messages("lines_complete"),
            ["11: NULL in sku", "12: NULL in qty"],
            "{kind:?}"
        );
        assert_eq!(
            messages("totals_match"),
            [
                "2: total_cents differs (ordered: 200, paid: 250.00)",
                "4: not in paid",
                "5: not in ordered"
            ],
            "{kind:?}"
        );
    }
}

const FIXTURES: &str = r#"
name: orders_fresh
check:
  freshness: { source: shop, table: orders, max_age: 1h }
tests:
  - name: half an hour old
    now: 2026-01-01T12:00:00Z
    given: { orders: [{ dataset: orders, newest: "2026-01-01T11:30:00Z" }] }
    expect: pass
  - name: two hours old
    now: 2026-01-01T12:00:00Z
    given: { orders: [{ dataset: orders, newest: "2026-01-01T10:00:00Z" }] }
    expect:
      violations:
        - { key: orders, message: "orders: the newest updated_at is 2026-01-01T10:00:00Z, older than 1h" }
---
name: orders_counted
check:
  row_count: { source: shop, table: orders, max: 2 }
tests:
  - name: three is too many
    given: { orders: [{ dataset: orders, row_count: 3 }] }
    expect: { violations: [{ key: orders, message: "orders: 3 rows, expected at most 2" }] }
---
name: orders_not_dropping
check:
  row_count: { source: shop, table: orders, max_drop: 20% }
tests:
  - name: down a fifth is as far as it may go
    previous: 100
    given: { orders: [{ dataset: orders, row_count: 80 }] }
    expect: pass
  - name: down more than a fifth
    previous: 100
    given: { orders: [{ dataset: orders, row_count: 79 }] }
    expect:
      violations:
        - { key: orders, message: "orders: 79 rows, down more than 20% from 100 at the previous run" }
  - name: the first run has nothing to compare with
    given: { orders: [{ dataset: orders, row_count: 0 }] }
    expect: pass
---
name: ids_unique
check:
  unique: { source: shop, table: orders, column: id }
tests:
  - name: a repeated id
    given: { orders: [{ id: 1 }, { id: 2 }, { id: 2 }] }
    expect: { violations: [2] }
---
name: orders_complete
check:
  not_null: { source: shop, table: orders, key: id, columns: [total_cents] }
tests:
  - name: one total missing
    given: { orders: [{ id: 1, total_cents: 5 }, { id: 2, total_cents: null }] }
    expect: { violations: [{ key: 2, message: "2: NULL in total_cents" }] }
---
name: totals_match
check:
  matches:
    key: id
    datasets:
      ordered: { source: shop, table: orders }
      paid: { source: pay, table: payments }
    fields: [total_cents]
tests:
  - name: one differs, one unpaid
    given:
      ordered: [{ id: 1, total_cents: 5 }, { id: 2, total_cents: 7 }, { id: 3, total_cents: 1 }]
      paid: [{ id: 1, total_cents: 5.00 }, { id: 2, total_cents: 8 }]
    expect: { violations: [2, 3] }
"#;

#[test]
fn checks_take_fixtures_of_the_rows_their_queries_return() {
    let wd = Workdir::new(
        &[
            ("shop", "postgres://postgres@127.0.0.1:1/shop"),
            ("pay", "mysql://root@127.0.0.1:1/pay"),
        ],
        Some(FIXTURES),
    );
    let out = wd.cli(&["test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.ends_with("9 cases: 9 passed, 0 failed\n"),
        "{stdout}"
    );

    // A fixture that gives a column the check's query does not return is refused at load.
    let wrong = FIXTURES.replace("row_count: 3", "rows: 3");
    let wd = Workdir::new(
        &[("shop", "sqlite://x.db"), ("pay", "sqlite://y.db")],
        Some(&wrong),
    );
    let out = wd.cli(&["test"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "dataset `orders` has no column `rows`; its query returns: dataset, row_count"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn row_count_compares_with_the_count_of_the_previous_run() {
    for kind in BACKENDS {
        let db = TestDb::new(kind, "drop").await;
        db.exec_str(&[
            create(kind)[0],
            "INSERT INTO orders VALUES (1, 1, NULL), (2, 1, NULL), (3, 1, NULL), (4, 1, NULL), \
             (5, 1, NULL), (6, 1, NULL), (7, 1, NULL), (8, 1, NULL), (9, 1, NULL), (10, 1, NULL)",
        ])
        .await;
        let wd = Workdir::new(
            &[("shop", db.url.as_str())],
            Some(
                "name: orders_not_dropping\ncheck:\n  row_count: { source: shop, table: orders, min: 1, max_drop: 20% }\n",
            ),
        );
        let once = || {
            let out = wd.cli(&["run", "--once"]);
            (
                out.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        };
        // The first run has nothing to compare with.
        let (code, out) = once();
        assert_eq!(code, Some(0), "{kind:?}: {out}");
        db.exec_str(&["DELETE FROM orders WHERE id > 7"]).await;
        let (code, out) = once();
        assert_eq!(code, Some(1), "{kind:?}: {out}");
        assert!(
            out.contains("orders: 7 rows, down more than 20% from 10 at the previous run"),
            "{kind:?}: {out}"
        );
        // `check` keeps no history: it judges the bounds only.
        let out = wd.cli(&["check"]);
        assert_eq!(out.status.code(), Some(0), "{kind:?}");
        // The next run compares with 7, the count of the run before it.
        db.exec_str(&["DELETE FROM orders WHERE id = 7"]).await;
        let (code, out) = once();
        assert_eq!(code, Some(0), "{kind:?}: {out}");
    }
}
