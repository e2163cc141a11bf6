use std::path::Path;

use super::*;
use crate::config;
use crate::value::Value;

fn env(name: &str) -> Option<String> {
    match name {
        "PAID" => Some("captured".to_string()),
        "TOKEN" => Some("t0ken".to_string()),
        _ => None,
    }
}

pub(super) fn config() -> Config {
    let text = r#"
sources:
  orders: { url: "postgres://127.0.0.1/orders" }
  payments: { url: "mysql://root@127.0.0.1/payments" }
  inventory: { url: "sqlite://inventory.db" }
rules: [rules/]
"#;
    config::parse(Path::new("invariantd.yaml"), text, &env).unwrap()
}

pub(super) fn load(text: &str) -> (Vec<Rule>, Vec<String>) {
    let mut diags = Diagnostics::default();
    let rules = parse_file(
        Path::new("rules/shop.yaml"),
        text,
        &config(),
        &env,
        &mut diags,
    );
    (rules, diags.0.iter().map(ToString::to_string).collect())
}

const GOOD: &str = r#"
name: paid_implies_reserved
description: Every captured payment has its stock reserved.
severity: critical
labels: { team: inventory }
schedule: "0 * * * * *"
grace: 5m
key: order_id
datasets:
  payment:
    source: payments
    query: SELECT order_id, id, amount, updated_at FROM payments WHERE status = '${PAID}';
    updated_at: updated_at
  reservation:
    source: inventory
    query: SELECT * FROM reservations
    many: true
assert: payment == null || size(reservation) > 0
message: "order {{key}}: {{payment.amount}} captured, nothing reserved"
---
name: order_not_stuck_processing
every: 30s
key: id
datasets:
  order:
    source: orders
    query: |
      SELECT id, status, updated_at
      FROM orders
assert: order.status != 'processing' || now - order.updated_at < duration('15m')
"#;

#[test]
fn a_rule_file_with_two_documents_loads() {
    let (rules, errors) = load(GOOD);
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(rules.len(), 2);
    let r = &rules[0];
    assert_eq!(r.severity, Severity::Critical);
    assert_eq!(r.grace, Duration::from_secs(300));
    assert_eq!(r.labels, [("team".to_string(), "inventory".to_string())]);
    assert_eq!(
        r.datasets[0].query,
        "SELECT order_id, id, amount, updated_at FROM payments WHERE status = 'captured'"
    );
    assert_eq!(r.datasets[1].static_columns, None);
    assert!(r.datasets[1].many);
    assert_eq!(r.origin.pos, Pos { line: 2, column: 7 });
    assert_eq!(
        rules[1].origin.pos,
        Pos {
            line: 21,
            column: 7
        }
    );
    assert!(matches!(rules[1].schedule, Schedule::Every(d) if d == Duration::from_secs(30)));
    assert_eq!(rules[1].severity, Severity::Warning);
}

#[test]
fn every_error_in_every_document_is_reported_with_its_position() {
    let text = r#"
name: Bad-Name
severity: urgent
schedule: "* * *"
grace: soon
key: order_id
datasets:
  payment:
    source: payments
    query: SELECT order_id, amount FROM payments
  now:
    source: ordrs
    query: SELECT id FROM orders
    updated_at: changed
assert: payment.amout > 0 && reservaton == null
message: "{{payment.amount}} and {{ payment.nope }}"
---
name: second
key: id
datasets:
  order: { source: orders, query: "SELECT id FROM orders" }
assert: order.id = 1
---
name: third
key: id
unknown_field: 1
datasets: {}
assert: "true"
"#;
    let (rules, errors) = load(text);
    assert!(rules.is_empty());
    insta::assert_snapshot!(errors.join("\n"));
}

#[test]
fn fixture_values_keep_their_yaml_types_and_fractions_stay_exact() {
    let (rules, errors) = load(
        r#"
name: typed
key: order_id
datasets:
  order:
    source: orders
    query: SELECT order_id, amount, big, note, paid, gone, at FROM orders
assert: order.paid
tests:
  - name: every type
    given:
      order:
        - { order_id: 7, amount: 10.10, big: 1.5e3, note: "7", paid: true, gone: null, at: "2026-01-01T11:00:00Z" }
        - { order_id: "A-1", amount: -0.000001 }
    expect: pass
"#,
    );
    assert_eq!(errors, Vec::<String>::new());
    let fixture = &rules[0].tests[0].given[0];
    assert_eq!(
        fixture.columns,
        ["order_id", "amount", "big", "note", "paid", "gone", "at"]
    );
    let decimal = |s: &str| Value::Decimal(s.parse().unwrap());
    assert_eq!(
        fixture.rows[0],
        [
            Value::Int(7),
            decimal("10.10"),
            decimal("1500"),
            Value::Text("7".into()),
            Value::Bool(true),
            Value::Null,
            Value::Text("2026-01-01T11:00:00Z".into()),
        ]
    );
    // The scale is kept, as NUMERIC columns keep it: 10.10 prints as 10.10, not 10.1.
    assert_eq!(fixture.rows[0][1].to_string(), "10.10");
    assert_eq!(fixture.rows[1][0], Value::Text("A-1".into()));
    assert_eq!(fixture.rows[1][1], decimal("-0.000001"));
    assert_eq!(
        fixture.rows[1][2],
        Value::Null,
        "a column a row leaves out is null"
    );
    assert_eq!(
        rules[0].tests[0].now.to_rfc3339(),
        "2026-01-01T00:00:00+00:00",
        "the default now is fixed"
    );
}

#[test]
fn an_impact_is_a_number_in_a_unit_and_reads_as_money() {
    let rule = |impact: &str| {
        format!(
            "name: r\nkey: id\ndatasets:\n  p: {{ source: orders, query: \"SELECT id, amount_cents FROM p\" }}\nassert: p == null\nimpact: {impact}\n"
        )
    };
    let (rules, errors) = load(&rule(
        "{ value: p.amount_cents, unit: cents, scale: 0.01, display_unit: EUR }",
    ));
    assert_eq!(errors, Vec::<String>::new());
    let impact = rules[0].impact.as_ref().unwrap();
    assert_eq!(
        impact.describe(rust_decimal::Decimal::from(1_234_567)),
        "12,345.67 EUR"
    );
    let plain = Impact {
        scale: None,
        display_unit: None,
        ..impact.clone()
    };
    assert_eq!(
        plain.describe(rust_decimal::Decimal::from(1_234_567)),
        "1,234,567 cents"
    );
    assert_eq!(
        plain.describe("-1500.5".parse().unwrap()),
        "-1,500.50 cents"
    );

    // Not a number, not an expression, not a unit a label can carry: each said where.
    let (_, errors) = load(&rule("{ value: \"'a lot'\", unit: cents }"));
    assert_eq!(
        errors,
        ["rules/shop.yaml:6:19: rule `r`: impact: the value gives string, not a number"]
    );
    let (_, errors) = load(&rule("{ value: \"p.amount_cents +\", unit: cents }"));
    assert!(errors[0].starts_with("rules/shop.yaml:6:"), "{errors:?}");
    assert!(errors[0].contains("impact:"), "{errors:?}");
    let (_, errors) = load(&rule(
        "{ value: p.amount_cents, unit: Euro Cents, scale: -1 }",
    ));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("impact.unit `Euro Cents` must match"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("impact.scale must be a positive number"),
        "{errors:?}"
    );
}

#[test]
fn a_repair_section_offers_named_actions_with_guardrails() {
    let text = r#"
name: paid
key: order_id
datasets:
  payment: { source: payments, query: "SELECT order_id, id, amount FROM payments" }
assert: payment == null
repair:
  mode: auto
  max_auto_per_run: 3
  max_per_hour: 50
  actions:
    refund:
      http:
        url: "http://127.0.0.1:1/payments/{{payment.id}}/refunds"
        headers: { Authorization: "Bearer ${TOKEN}" }
        json: { amount: "{{payment.amount}}", reason: "stock not reserved for {{key}}" }
        on_409: applied
      idempotent: true
    reserve:
      sql:
        source: orders
        statement: "UPDATE orders SET state = 'reserved' WHERE id = $1"
        params: [key]
"#;
    let (rules, errors) = load(text);
    assert_eq!(errors, Vec::<String>::new());
    let repair = rules[0].repair.as_ref().expect("a repair section");
    assert_eq!(repair.mode, crate::rules::RepairMode::Auto);
    assert_eq!(
        (repair.max_auto_per_run, repair.max_per_hour),
        (3, Some(50))
    );
    let names: Vec<&str> = repair.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["refund", "reserve"]);
    assert!(repair.actions[0].idempotent && !repair.actions[1].idempotent);
    let kind = &repair.actions[0].kind;
    match kind.as_any().downcast_ref::<crate::actions::Http>() {
        Some(http) => {
            assert_eq!(http.method, "POST");
            assert_eq!(http.headers[0].1, "Bearer t0ken");
            assert_eq!(http.on_409, crate::actions::StatusMeaning::Applied);
        }
        None => panic!("not http: {kind:?}"),
    }
    let kind = &repair.actions[1].kind;
    match kind.as_any().downcast_ref::<crate::actions::Sql>() {
        Some(sql) => assert_eq!(sql.expect_rows, 1),
        None => panic!("not sql: {kind:?}"),
    }
    // Any change to the repair makes another rule version, which must be enabled again.
    let (changed, _) = load(&text.replace("max_per_hour: 50", "max_per_hour: 51"));
    assert_ne!(changed[0].fingerprint, rules[0].fingerprint);
    let (same, _) = load(text);
    assert_eq!(same[0].fingerprint, rules[0].fingerprint);
}

#[test]
fn every_repair_error_is_reported_where_it_is_written() {
    let text = r#"
name: paid
key: order_id
datasets:
  payment: { source: payments, query: "SELECT order_id, id FROM payments" }
assert: payment == null
repair:
  mode: sometimes
  max_auto_per_run: 0
  actions:
    both:
      sql: { source: orders, statement: "DELETE FROM x", params: [key] }
      http: { url: "http://127.0.0.1:1/" }
    splice:
      sql: { source: nowhere, statement: "DELETE FROM x WHERE id = '{{key}}'", params: ["payment.idd"] }
    web:
      http: { url: "ftp://x/{{payment.nope}}", method: FETCH, headers: { Idempotency-Key: "x" }, on_422: maybe }
    event:
      publish: { url: "http://127.0.0.1:4222", subject: "orders.{{payment.id}}" }
"#;
    let (rules, errors) = load(text);
    assert!(rules.is_empty());
    insta::assert_snapshot!(errors.join("\n"));
}

#[test]
fn incremental_and_consistent_cut_settings_are_checked_where_written() {
    let rule = |settings: &str| {
        format!(
            "name: r\nkey: order_id\n{settings}\ndatasets:\n  o: {{ source: orders, query: \"SELECT order_id, updated_at FROM o\", updated_at: updated_at }}\nassert: o != null\n"
        )
    };
    let (rules, errors) = load(&rule("incremental: {}\nconsistent_cut: { lag: 30s }"));
    assert_eq!(errors, Vec::<String>::new());
    let inc = rules[0].incremental.as_ref().unwrap();
    assert_eq!(inc.overlap, DEFAULT_OVERLAP);
    assert!(matches!(inc.full_sweep, Schedule::Every(d) if d == DEFAULT_FULL_SWEEP));
    assert_eq!(rules[0].consistent_cut, Some(Duration::from_secs(30)));
    let (rules, errors) = load(&rule("incremental: { full_sweep: \"0 3 * * *\" }"));
    assert_eq!(errors, Vec::<String>::new());
    assert!(matches!(
        rules[0].incremental.as_ref().unwrap().full_sweep,
        Schedule::Cron { .. }
    ));

    let (_, errors) = load(&rule(
        "incremental: { overlap: soon, full_sweep: \"61 * * * *\" }\nconsistent_cut: { lag: 8d }",
    ));
    assert_eq!(
        errors,
        [
            "rules/shop.yaml:3:25: rule `r`: incremental.overlap: invalid duration `soon`; write it like 1m or 30s",
            "rules/shop.yaml:3:43: rule `r`: incremental.full_sweep: invalid cron `61 * * * *`: Component error: Number out of bounds.",
            "rules/shop.yaml:4:24: rule `r`: consistent_cut.lag: `8d` is longer than the maximum of 7d",
        ]
    );
}

#[test]
fn a_partition_is_checked_where_written_and_leaves_the_version_alone() {
    let rule = |settings: &str| {
        format!(
            "name: r\nkey: order_id\n{settings}\ndatasets:\n  o: {{ source: orders, query: \"SELECT order_id FROM o\" }}\nassert: o != null\n"
        )
    };
    let (plain, errors) = load(&rule(""));
    assert_eq!(errors, Vec::<String>::new());
    let (rules, errors) = load(&rule("partition: { keys: 250000 }"));
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(rules[0].partition.map(|p| p.keys), Some(250_000));
    assert_eq!(rules[0].fingerprint, plain[0].fingerprint);
    let (_, errors) = load(&rule("partition: { keys: 0 }"));
    assert_eq!(
        errors,
        ["rules/shop.yaml:3:20: rule `r`: partition.keys: 0 is not between 1 and 1000000000"]
    );
}

/// A rule's version is what its enablement is recorded against: an upgrade that changes how
/// the same text is fingerprinted would make every rule with repairs "changed", to be enabled
/// again by a person. The value is pinned for one rule offering every kind of action.
#[test]
fn the_same_rule_text_keeps_its_version_across_releases() {
    let text = r#"
name: paid
key: order_id
datasets:
  payment: { source: payments, query: "SELECT order_id, id, amount FROM payments" }
assert: payment == null
repair:
  actions:
    refund:
      http:
        method: put
        url: "http://127.0.0.1:1/payments/{{payment.id}}/refunds?order={{key}}"
        headers: { Authorization: "Bearer ${TOKEN}" }
        json: { amount: "{{payment.amount}}", tags: ["a", "{{key}}"], n: 1 }
        on_409: applied
        on_422: failed
      idempotent: true
    reserve:
      sql:
        source: orders
        statement: "UPDATE orders SET state = 'reserved' WHERE id = $1 AND amount = $2"
        params: [key, "payment.amount * 2"]
        expect_rows: 2
    tell:
      publish:
        url: nats://127.0.0.1:4222
        subject: "shop.repairs.{{key}}"
        json: { order: "{{key}}" }
"#;
    let (rules, errors) = load(text);
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(rules[0].fingerprint, "385debc56d8fa351");
}

/// An action's kind is its one key among `sql`, `http` and `publish`: two kinds, or none (a
/// kind invariantd does not have), are refused where the action is written, and an unknown
/// key is reported as unknown — never silently dropped.
#[test]
fn an_action_is_exactly_one_kind_by_its_key() {
    let rule = |action: &str| {
        format!(
            r#"
name: paid
key: order_id
datasets:
  payment: {{ source: payments, query: "SELECT order_id FROM payments" }}
assert: payment == null
repair:
  actions:
    fix:
{action}"#
        )
    };
    let (rules, errors) = load(&rule(
        "      sql: { source: orders, statement: \"DELETE FROM orders WHERE id = $1\", params: [key] }\n      publish: { url: \"nats://127.0.0.1:4222\", subject: s }\n",
    ));
    assert!(rules.is_empty());
    assert_eq!(
        errors,
        [
            "rules/shop.yaml:9:5: rule `paid`: repair action `fix`: give exactly one of `sql`, `http` or `publish`"
        ]
    );
    let (_, errors) = load(&rule("      kafka: { topic: t }\n      idempotent: true\n"));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("rules/shop.yaml:10:7: ") && errors[0].contains("`kafka`"),
        "{errors:?}"
    );
    assert!(
        errors[1].ends_with("give exactly one of `sql`, `http` or `publish`"),
        "{errors:?}"
    );
    // A kind's own fields keep their positions through the kind key.
    let (_, errors) = load(&rule(
        "      publish: { url: \"nats://127.0.0.1:4222\", subject: \"s.{{ nope }}\" }\n",
    ));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("rules/shop.yaml:10:"), "{errors:?}");
    assert!(errors[0].contains("subject"), "{errors:?}");
}

/// `validate` reports a rule's errors in one pass, each at its own position: a misspelt
/// `datasets` does not hide a misspelt severity, and a missing field is placed on its rule; an
/// unknown source does not hide the same rule's missing key column or message errors.
#[test]
fn one_pass_reports_every_error_of_a_rule_where_it_is() {
    let (_, errors) = load(
        "name: a\nseverity: critcal\nkey: order_id\ndatsets:\n  order: { source: orders, query: \"SELECT order_id FROM orders\" }\nassert: \"true\"\nmessage: \"order {{key}}\"\n",
    );
    assert!(
        errors[0].starts_with("rules/shop.yaml:4:1: unknown field `datsets`"),
        "{errors:#?}"
    );
    assert_eq!(
        errors[1..],
        [
            "rules/shop.yaml:2:11: rule `a`: severity `critcal` is not one of critical, warning, info",
            "rules/shop.yaml:1:1: rule `a`: at least one dataset is needed",
        ]
    );
    let (_, errors) = load("name: a\nkey: id\nmessage: \"x\"\n");
    assert_eq!(
        errors,
        ["rules/shop.yaml:1:1: missing field `assert` (or a built-in `check:`)"]
    );
    let (_, errors) = load(
        "name: b\nkey: id\ndatasets:\n  order: { source: ordrs, query: \"SELECT order_id, total FROM orders\" }\nassert: order.total > 0\nmessage: \"{{ order.nope }}\"\n",
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("unknown source `ordrs`"), "{errors:#?}");
    assert!(
        errors[1].contains("does not select the key column `id`"),
        "{errors:#?}"
    );
    assert!(errors[2].starts_with("rules/shop.yaml:6:"), "{errors:#?}");
    assert!(errors[2].contains("no column `nope`"), "{errors:#?}");
}
