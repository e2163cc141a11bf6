//! `invariantd test`: rule unit tests run in memory through the engine, with no database; and
//! the validation of their fixtures.

use crate::harness::Workdir;

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Sources nothing listens on: `test` and `validate` must not try them.
const UNREACHABLE: [(&str, &str); 4] = [
    ("orders", "postgres://postgres@127.0.0.1:1/orders"),
    ("payments", "mysql://root@127.0.0.1:1/payments"),
    ("inventory", "sqlite:///nonexistent/inventory.db"),
    ("shipping", "postgres://postgres@127.0.0.1:1/shipping"),
];

#[test]
fn every_shipped_rule_passes_its_cases_without_a_database() {
    let workdir = Workdir::new(&UNREACHABLE, None);
    let out = workdir.cli(&["test"]);
    let stdout = text(&out.stdout);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // Each rule carries a violation, a near miss and a grace (or boundary) case.
    for rule in invariantd::demo::shop::RULES {
        let cases = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("ok    {rule} / ")))
            .count();
        assert!(cases >= 3, "{rule} has {cases} cases:\n{stdout}");
    }
    assert!(
        stdout.ends_with("21 cases: 21 passed, 0 failed\n"),
        "{stdout}"
    );
}

const CHARGE_RULE: &str = r#"
name: charge_held
grace: 5m
key: order_id
datasets:
  charge:
    source: payments
    query: SELECT order_id, amount, modified_at FROM charges
    updated_at: modified_at
  hold:
    source: inventory
    query: SELECT order_id, modified_at FROM holds
    updated_at: modified_at
assert: charge == null || hold != null
message: "order {{key}}: {{charge.amount}} charged, nothing held"
tests:
  - name: charged, nothing held
    now: "2026-01-01T12:00:00Z"
    given:
      charge: [{ order_id: 7, amount: 10.00, modified_at: "2026-01-01T11:00:00Z" }]
      hold: []                      # a dataset left out is empty too
    expect: { violations: [7] }
  - name: held in time
    given:
      charge: [{ order_id: 8, amount: 5.50, modified_at: "2026-01-01T11:00:00Z" }]
      hold:   [{ order_id: 8, modified_at: "2026-01-01T11:01:00Z" }]
    expect: pass
  - name: the message keeps the amount exactly
    now: "2026-01-01T12:00:00Z"
    given:
      charge: [{ order_id: 9, amount: 10.10, modified_at: "2026-01-01T11:00:00Z" }]
    expect:
      violations: [{ key: 9, message: "order 9: 10.10 charged, nothing held" }]
  - name: wrongly expected to pass
    now: "2026-01-01T12:00:00Z"
    given:
      charge:
        - { order_id: 10, amount: 1.5, modified_at: "2026-01-01T11:00:00Z" }
        - { order_id: 11, amount: 2, modified_at: "2026-01-01T11:00:00Z" }
      hold: [{ order_id: 11, modified_at: "2026-01-01T11:00:00Z" }]
    expect: pass
  - name: expects the wrong keys and message
    now: "2026-01-01T12:00:00Z"
    given:
      charge: [{ order_id: 12, amount: 3.00, modified_at: "2026-01-01T11:00:00Z" }]
    expect:
      violations: [{ key: 12, message: "order 12: 3 charged" }, 13]
  - name: inside grace, so nothing to see
    now: "2026-01-01T12:00:00Z"
    given:
      charge: [{ order_id: 14, amount: 3.00, modified_at: "2026-01-01T11:58:00Z" }]
    expect: { violations: [14] }
"#;

#[test]
fn failing_cases_name_their_file_and_line_what_was_expected_and_what_came_out() {
    let config = "sources:\n  payments: { url: \"postgres://postgres@127.0.0.1:1/p\" }\n  inventory: { url: \"sqlite:///nonexistent/i.db\" }\nrules: [rules/]\n";
    let workdir = Workdir::raw(config, CHARGE_RULE);
    let out = workdir.cli(&["test"]);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.status.code(), Some(1));
    insta::with_settings!({filters => vec![(r"\S*rules/rules\.yaml", "rules/rules.yaml")]}, {
        insta::assert_snapshot!("rule_test_failures", text(&out.stdout));
    });

    // Only the named rule's cases run; an unknown name is an error.
    let out = workdir.cli(&["test", "no_such_rule"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no rule named `no_such_rule`; rules: charge_held"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn fixtures_naming_what_the_rule_does_not_have_fail_validation_with_positions() {
    let config = "sources:\n  payments: { url: \"sqlite:///nonexistent/p.db\" }\nrules: [rules/]\n";
    let rules = r#"
name: charge_positive
key: order_id
datasets:
  charge:
    source: payments
    query: SELECT order_id, amount FROM charges
assert: charge.amount > 0
tests:
  - name: bad fixtures
    now: yesterday
    given:
      charges: [{ order_id: 1 }]
      charge: [{ order_id: 1, amout: 2.5, total: [1, 2] }]
    expect: fail
  - name: bad fixtures
    expect: { violations: [1], keys: [2] }
"#;
    let workdir = Workdir::raw(config, rules);
    for (command, status) in [("validate", 1), ("test", 2)] {
        let out = workdir.cli(&[command]);
        assert_eq!(out.status.code(), Some(status), "{command}");
        insta::with_settings!({filters => vec![(r"\S*rules/rules\.yaml", "rules/rules.yaml")]}, {
            insta::assert_snapshot!("rule_test_fixture_errors", text(&out.stderr));
        });
    }
}
