//! `invariantd init`: reads real PostgreSQL, MariaDB and SQLite catalogs as the read-only
//! checker role, writes a starter configuration and rules that `validate --connect`, `test`
//! and `check` take as written, and never overwrites a file.

use invariantd::config::SourceKind;

use crate::harness::TestDb;

fn run(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
        .args(args)
        .current_dir(dir)
        .env_remove("INVARIANTD_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn init_writes_a_starter_that_validate_test_and_check_take_as_written() {
    let orders = TestDb::new(SourceKind::Postgres, "init").await;
    orders
        .exec_str(&[
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, status TEXT)",
            "INSERT INTO orders VALUES (1, 'paid'), (2, 'paid')",
        ])
        .await;
    let payments = TestDb::new(SourceKind::MySql, "init").await;
    payments
        .exec_str(&[
            "CREATE TABLE payments (id BIGINT PRIMARY KEY, order_id BIGINT, amount_cents BIGINT)",
            "INSERT INTO payments VALUES (10, 1, 100), (11, 2, 200), (12, 99, 300)",
        ])
        .await;
    let shipping = TestDb::new(SourceKind::Sqlite, "init").await;
    shipping
        .exec_str(&[
            "CREATE TABLE parcels (id INTEGER PRIMARY KEY, order_id INTEGER)",
            "INSERT INTO parcels VALUES (100, 1)",
        ])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "init",
        "--source",
        &format!("orders={}", orders.url),
        "--source",
        &format!("payments={}", payments.url),
        "--source",
        &format!("shipping={}", shipping.url),
    ];
    let (code, stdout, stderr) = run(dir.path(), &args);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("(3 example rules)"), "{stdout}");
    assert!(
        stdout
            .contains("source payments: 1 table; key-like columns: payments.id, payments.order_id"),
        "{stdout}"
    );
    let config = std::fs::read_to_string(dir.path().join("invariantd.yaml")).unwrap();
    let rules = std::fs::read_to_string(dir.path().join("rules/starter.yaml")).unwrap();
    for name in [
        "name: payments_has_orders",
        "name: parcels_has_orders",
        "name: payments_has_parcels",
    ] {
        assert!(rules.contains(name), "{name} in\n{rules}");
    }

    // As written: every query prepares on its source, every case passes.
    let (code, stdout, stderr) = run(dir.path(), &["validate", "--connect"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}\n{config}\n{rules}");
    let (code, stdout, stderr) = run(dir.path(), &["test"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.ends_with("6 cases: 6 passed, 0 failed\n"),
        "{stdout}"
    );
    // And it finds the payment whose order does not exist.
    let (code, stdout, stderr) = run(
        dir.path(),
        &["check", "payments_has_orders", "--format", "json"],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("\"99\""), "{stdout}");

    // Never overwrites: a second init leaves both files as they are.
    let (code, _, stderr) = run(dir.path(), &args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invariantd.yaml exists; init never overwrites a file"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("invariantd.yaml")).unwrap(),
        config
    );
    // Nor the rule file, even where the configuration is new.
    let other = dir.path().join("other.yaml");
    let (code, _, stderr) = run(
        dir.path(),
        &[
            "--config",
            other.to_str().unwrap(),
            "init",
            args[1],
            args[2],
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("starter.yaml exists"), "{stderr}");
    assert!(!other.exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rules/starter.yaml")).unwrap(),
        rules
    );
}

#[test]
fn init_writes_nothing_when_a_source_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        dir.path(),
        &[
            "init",
            "--source",
            "orders=postgres://invariantd_checker@127.0.0.1:1/orders",
        ],
    );
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("source `orders`: cannot read its tables"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A malformed --source is refused before anything is read.
    let (code, _, stderr) = run(dir.path(), &["init", "--source", "orders"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("write it as NAME=URL"), "{stderr}");
}
