use super::*;

fn col(table: &str, name: &str, pk: bool, ty: &str) -> Column {
    Column {
        schema: "public".to_string(),
        table: table.to_string(),
        name: name.to_string(),
        position: 0,
        data_type: ty.to_string(),
        primary_key: pk,
    }
}

fn found(name: &str, kind: SourceKind, columns: Vec<Column>) -> Found {
    Found {
        name: name.to_string(),
        kind,
        columns,
    }
}

#[test]
fn a_primary_key_relates_to_a_column_named_after_its_table() {
    let orders = found(
        "orders",
        SourceKind::Postgres,
        vec![
            col("orders", "id", true, "bigint"),
            col("orders", "customer_id", false, "bigint"),
        ],
    );
    let payments = found(
        "payments",
        SourceKind::MySql,
        vec![
            col("payments", "id", true, "bigint"),
            col("payments", "order_id", false, "bigint(20)"),
            col("payments", "customer_id", false, "bigint(20)"),
        ],
    );
    let r = relate(&orders, &payments).unwrap();
    assert_eq!(r.key, "order_id");
    assert_eq!(
        (r.child.table.as_str(), r.child.column.as_str()),
        ("payments", "order_id")
    );
    assert_eq!(
        (r.parent.table.as_str(), r.parent.column.as_str()),
        ("orders", "id")
    );
    // The same either way round.
    assert_eq!(relate(&payments, &orders).unwrap(), r);
    insta::assert_snapshot!(rules_text(&[r], &[orders, payments]));
}

#[test]
fn a_shared_key_column_relates_two_tables_and_bare_ids_do_not() {
    let a = found(
        "shipping",
        SourceKind::Sqlite,
        vec![
            col("parcels", "id", true, "INTEGER"),
            col("parcels", "order_ref_key", false, "TEXT"),
        ],
    );
    let b = found(
        "billing",
        SourceKind::Sqlite,
        vec![
            col("invoices", "id", true, "INTEGER"),
            col("invoices", "order_ref_key", true, "TEXT"),
        ],
    );
    let r = relate(&a, &b).unwrap();
    assert_eq!(r.key, "order_ref_key");
    // The side where it is the primary key is the parent.
    assert_eq!(r.parent.table, "invoices");
    assert!(!r.child.integer);
    let text = rules_text(&[r], &[a, b]);
    assert!(text.contains("[{ order_ref_key: 'b' }]"), "{text}");
    // Only `id` in common: nothing to relate.
    let c = found(
        "c",
        SourceKind::Sqlite,
        vec![col("t", "id", true, "INTEGER")],
    );
    let d = found(
        "d",
        SourceKind::Sqlite,
        vec![col("u", "id", true, "INTEGER")],
    );
    assert_eq!(relate(&c, &d), None);
    let text = rules_text(&[], &[c, d]);
    assert!(text.contains("No two of the sources (c, d)"), "{text}");
}

#[test]
fn names_are_quoted_for_their_database_and_for_yaml() {
    let a = found(
        "a",
        SourceKind::MySql,
        vec![col("lines", "order_id", false, "int")],
    );
    let b = found(
        "b",
        SourceKind::Postgres,
        vec![Column {
            schema: "sales".to_string(),
            ..col("Order's", "order_id", true, "integer")
        }],
    );
    let r = relate(&a, &b).unwrap();
    let text = rules_text(&[r], &[a, b]);
    assert!(
        text.contains("query: 'SELECT `order_id` AS order_id FROM `lines`'"),
        "{text}"
    );
    assert!(
        text.contains(r#"query: 'SELECT "order_id" AS order_id FROM "sales"."Order''s"'"#),
        "{text}"
    );
    assert!(text.contains("  order_s:\n"), "{text}");
}
