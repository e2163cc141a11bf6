use crate::rules::tests::load;

const CHECKS: &str = r#"
name: orders_fresh
check:
  freshness: { source: orders, table: public.orders, max_age: 2h }
---
name: payments_fresh
check:
  freshness:
    source: payments
    query: SELECT captured_at FROM payments WHERE status = 'captured'
    dataset: captured
    column: captured_at
    max_age: 1d
---
name: orders_counted
check:
  row_count: { source: orders, table: orders, min: 1, max: 1000 }
---
name: orders_not_dropping
check:
  row_count: { source: orders, table: orders, min: 1, max_drop: 12.5% }
---
name: order_ids_unique
check:
  unique: { source: orders, table: orders, column: id, updated_at: updated_at }
---
name: orders_complete
check:
  not_null: { source: orders, table: orders, key: id, columns: [total_cents, currency] }
---
name: totals_match
severity: critical
check:
  matches:
    key: order_id
    datasets:
      ordered: { source: orders, query: "SELECT id AS order_id, total_cents FROM orders" }
      paid: { source: payments, table: payments, updated_at: updated_at }
    fields: [total_cents]
"#;

/// Each check's expansion: key, datasets (name, source, query, many) and assertion.
fn expansion(rule: &crate::rules::Rule) -> String {
    let mut out = format!("key: {}\n", rule.key);
    for d in &rule.datasets {
        out.push_str(&format!(
            "{} ({}{}{}): {}\n",
            d.name,
            d.source,
            if d.many { ", many" } else { "" },
            d.updated_at
                .as_deref()
                .map(|u| format!(", updated_at {u}"))
                .unwrap_or_default(),
            d.query
        ));
    }
    out.push_str(&format!("assert: {}\n", rule.assertion));
    out.push_str(&format!("message: {}\n", rule.message_template()));
    out
}

#[test]
fn each_check_expands_to_the_rule_a_person_would_write() {
    let (rules, errors) = load(CHECKS);
    assert_eq!(errors, Vec::<String>::new());
    let warnings: Vec<_> = rules.iter().flat_map(|r| &r.warnings).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let text: Vec<String> = rules
        .iter()
        .map(|r| format!("# {}\n{}", r.name, expansion(r)))
        .collect();
    insta::assert_snapshot!(text.join("\n"));
    // A check is a rule like any other: the severity and schedule stay the rule's.
    assert_eq!(rules[6].severity, crate::rules::Severity::Critical);
    // Only a row_count with max_drop measures from run to run.
    let measures: Vec<bool> = rules.iter().map(|r| r.measure.is_some()).collect();
    assert_eq!(measures, [false, false, false, true, false, false, false]);
}

#[test]
fn a_check_has_no_key_datasets_or_assert_of_its_own() {
    let (_, errors) = load(
        r#"
name: twice
key: id
check:
  unique: { source: orders, table: orders, column: id }
assert: "true"
"#,
    );
    assert_eq!(
        errors,
        [
            "rules/shop.yaml:3:6: rule `twice`: `key` comes from `check:`; a rule has one or the other",
            "rules/shop.yaml:6:9: rule `twice`: `assert` comes from `check:`; a rule has one or the other",
        ]
    );
    // A percentage may be written without its sign.
    let (rules, errors) =
        load("name: n\ncheck:\n  row_count: { source: orders, table: orders, max_drop: 20 }\n");
    assert_eq!(errors, Vec::<String>::new());
    assert!(
        rules[0].assertion.ends_with("previous * 8000)"),
        "{}",
        rules[0].assertion
    );
    let (_, errors) = load("name: bare\ndatasets: {}\n");
    assert_eq!(
        errors,
        ["rules/shop.yaml:1:1: missing field `key` (or a built-in `check:`)"]
    );
}

#[test]
fn every_check_error_is_reported_where_it_is_written() {
    let (rules, errors) = load(
        r#"
name: two_kinds
check:
  unique: { source: orders, table: orders, column: id }
  not_null: { source: orders, table: orders, key: id, columns: [a] }
---
name: no_kind
check: {}
---
name: table_and_query
check:
  unique: { source: orders, table: orders, query: SELECT id FROM orders, column: id }
---
name: odd_names
check:
  not_null: { source: orders, table: "orders; DROP TABLE x", key: "id)", columns: [in, id] }
---
name: no_bounds
check:
  row_count: { source: orders, table: orders }
---
name: upside_down
check:
  row_count: { source: orders, table: orders, min: 10, max: 1 }
---
name: ageless
check:
  freshness: { source: orders, table: orders, max_age: soon }
---
name: one_side
check:
  matches: { key: id, datasets: { a: { source: orders, table: a } }, fields: [] }
---
name: not_returned
check:
  not_null: { source: orders, query: "SELECT id, a FROM orders", key: id, columns: [a, b] }
---
name: drops
check:
  row_count: { source: orders, table: orders, max_drop: lots }
---
name: drops_too_far
check:
  row_count: { source: orders, table: orders, max_drop: 120% }
---
name: previous_without_a_measure
check:
  unique: { source: orders, table: orders, column: id }
tests:
  - name: a case
    previous: 3
    expect: pass
---
name: key_in_columns
check:
  not_null: { source: orders, table: orders, key: id, columns: [id, total] }
---
name: quoted_dataset
check:
  row_count: { source: orders, table: orders, dataset: "o'rders", min: 1 }
---
name: unknown_field
check:
  unique: { source: orders, table: orders, column: id, colour: blue }
"#,
    );
    assert!(rules.is_empty());
    insta::assert_snapshot!(errors.join("\n"));
}
