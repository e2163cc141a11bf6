//! Repairs end to end, against real targets on loopback: SQL statements on PostgreSQL, MariaDB
//! and SQLite, HTTP requests to a server that records them, events on NATS. Planned once per
//! violation, approved through the API (four eyes too), applied exactly once across a kill -9,
//! skipped when the violation healed first, held for a person when a rule suddenly flags many
//! keys or its data looks wrong — and every transition in the audit log.

use std::time::Duration;

use invariantd::config::SourceKind;

use crate::harness::{
    Helper, LEAD_TOKEN, TOKEN, TestDb, Workdir, eventually, http, http_as, http_post as post,
    json_lines, kill, terminate_within, tokens_file,
};

/// Approves a repair as `ops`, with `body` (`{}`, an action, a comment): (status, answer).
fn approve(port: u16, id: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    post(
        port,
        &format!("/api/v1/repairs/{id}/approve"),
        Some(TOKEN),
        &body,
    )
}

/// The repairs the API lists for a query (`state=pending&rule=…`).
fn repairs(port: u16, query: &str) -> Vec<serde_json::Value> {
    let (status, body) = http(port, "GET", &format!("/api/v1/repairs?limit=1000&{query}"));
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    page["items"].as_array().unwrap().clone()
}

fn by_key<'a>(items: &'a [serde_json::Value], key: &str) -> &'a serde_json::Value {
    items
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no repair for key {key} in {items:?}"))
}

/// Waits until two repairs are pending, for keys 2 and 3; their ids.
async fn pending_two_and_three(port: u16) -> (String, String) {
    eventually(Duration::from_secs(20), "two repairs pending", || {
        repairs(port, "state=pending").len() == 2
    })
    .await;
    let pending = repairs(port, "state=pending");
    let id = |key| by_key(&pending, key)["id"].as_str().unwrap().to_string();
    (id("2"), id("3"))
}

/// The value of one series in a scrape.
fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, text) = http(port, "GET", "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Payments on one database, reservations on another: `orders` captured payments, and a
/// reservation for each order in `reserved`.
async fn shop(
    payments: SourceKind,
    inventory: SourceKind,
    orders: i64,
    reserved: &[i64],
) -> (TestDb, TestDb) {
    let p = TestDb::new(payments, "repair_payments").await;
    let i = TestDb::new(inventory, "repair_inventory").await;
    let mut statements = vec![
        "CREATE TABLE payments (order_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL, reference VARCHAR(40) NOT NULL, status VARCHAR(20) NOT NULL)".to_string(),
    ];
    for chunk in (1..=orders).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|o| format!("({o}, {}, 'ref/{o} x', 'captured')", 1000 + o))
            .collect();
        statements.push(format!("INSERT INTO payments VALUES {}", rows.join(", ")));
    }
    p.exec(&statements).await;
    let mut statements = vec![
        "CREATE TABLE reservations (order_id BIGINT NOT NULL, state VARCHAR(20) NOT NULL)"
            .to_string(),
    ];
    for chunk in reserved.chunks(500) {
        let rows: Vec<String> = chunk.iter().map(|o| format!("({o}, 'reserved')")).collect();
        statements.push(format!(
            "INSERT INTO reservations VALUES {}",
            rows.join(", ")
        ));
    }
    i.exec(&statements).await;
    (p, i)
}

/// The rule "every captured payment has a reservation", with `repair` as its repair section.
fn rule(repair: &str) -> String {
    format!(
        r#"
name: paid_implies_reserved
every: 1s
key: order_id
datasets:
  payment:
    source: payments
    query: "SELECT order_id, amount_cents, reference FROM payments WHERE status = 'captured'"
  reservation:
    source: inventory
    query: "SELECT order_id, state FROM reservations"
    many: true
assert: payment == null || size(reservation) > 0
repair:
{repair}
"#
    )
}

/// A `sql` action reserving the order on the inventory database, through a source that may
/// write (the checks read through one that may not).
fn reserve_action(kind: SourceKind, idempotent: bool) -> String {
    let placeholder = if kind == SourceKind::MySql { "?" } else { "$1" };
    format!(
        "    reserve:\n      sql:\n        source: inventory_writer\n        statement: \"INSERT INTO reservations (order_id, state) VALUES ({placeholder}, 'reserved')\"\n        params: [key]\n      idempotent: {idempotent}\n"
    )
}

fn workdir(payments: &TestDb, inventory: &TestDb, rules: &str) -> Workdir {
    let w = Workdir::new(
        &[
            ("payments", &payments.url),
            ("inventory", &inventory.url),
            ("inventory_writer", &inventory.admin_url),
        ],
        Some(rules),
    );
    tokens_file(w.path());
    // The HTTP targets and NATS of these tests are on loopback.
    let config = std::fs::read_to_string(w.config()).unwrap();
    std::fs::write(
        w.config(),
        format!("{config}outbound: {{ allow: [127.0.0.1] }}\n"),
    )
    .unwrap();
    w
}

/// Reservations per order on the inventory database: (orders with none, orders with more
/// than one).
async fn reservation_counts(inventory: &TestDb, orders: i64) -> (i64, i64) {
    let reserved = inventory
        .count("SELECT COUNT(DISTINCT order_id) FROM reservations")
        .await;
    let doubled = inventory
        .count("SELECT COUNT(*) FROM (SELECT order_id FROM reservations GROUP BY order_id HAVING COUNT(*) > 1) d")
        .await;
    (orders - reserved, doubled)
}

async fn approved_sql_repairs_apply_once_and_are_audited(
    payments: SourceKind,
    inventory: SourceKind,
) {
    let (p, i) = shop(payments, inventory, 3, &[1]).await;
    let w = workdir(
        &p,
        &i,
        &rule(&format!(
            "  mode: approve\n  actions:\n{}",
            reserve_action(inventory, false)
        )),
    );
    let (mut daemon, port) = w
        .spawn_daemon(
            &format!("{}repairs: {{ workers: 2 }}\n", tokens_file(w.path())),
            std::process::Stdio::null(),
        )
        .await;
    let (two, three) = pending_two_and_three(port).await;
    assert_eq!(
        by_key(&repairs(port, "state=pending"), "2")["actions"][0]["params"][0],
        serde_json::json!({"type": "int", "value": 2})
    );

    // Nothing happens without a person with a token.
    let (status, _) = post(
        port,
        &format!("/api/v1/repairs/{two}/approve"),
        None,
        &serde_json::json!({}),
    );
    assert_eq!(status, 401);
    let (status, _) = http_as(
        port,
        "POST",
        &format!("/api/v1/repairs/{two}/approve"),
        Some("wrong"),
    );
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(i.count("SELECT COUNT(*) FROM reservations").await, 1);

    let (status, answer) = approve(
        port,
        &two,
        serde_json::json!({ "comment": "stock is there, INC-42" }),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["approved_by"], "ops");
    let (status, answer) = post(
        port,
        &format!("/api/v1/repairs/{three}/reject"),
        Some(TOKEN),
        &serde_json::json!({ "comment": "refund instead" }),
    );
    assert_eq!((status, answer["state"].as_str()), (200, Some("rejected")));
    // A decided repair cannot be decided again.
    let (status, _) = approve(port, &three, serde_json::json!({}));
    assert_eq!(status, 409);

    eventually(
        Duration::from_secs(20),
        "the approved repair is applied",
        || repairs(port, "state=applied").len() == 1,
    )
    .await;
    let applied = &repairs(port, "state=applied")[0];
    assert_eq!(applied["key"], "2");
    let result = applied["result"].as_str().unwrap();
    assert!(
        result.contains("1 row changed") && result.contains("the invariant holds now"),
        "{result}"
    );
    assert_eq!(
        reservation_counts(&i, 3).await,
        (1, 0),
        "order 3 stays unreserved, nothing doubled"
    );
    eventually(
        Duration::from_secs(20),
        "the violation of order 2 resolves",
        || {
            let (_, body) = http(port, "GET", "/api/v1/violations?state=resolved");
            body.contains("\"key\":\"2\"")
        },
    )
    .await;
    eventually(Duration::from_secs(10), "the repair metrics", || {
        metric(
            port,
            "invariantd_repairs_total{rule=\"paid_implies_reserved\",outcome=\"applied\"}",
        ) == Some(1.0)
            && metric(
                port,
                "invariantd_repairs_total{rule=\"paid_implies_reserved\",outcome=\"rejected\"}",
            ) == Some(1.0)
            && metric(
                port,
                "invariantd_repairs_pending{rule=\"paid_implies_reserved\"}",
            ) == Some(0.0)
    })
    .await;
    terminate_within(&mut daemon, Duration::from_secs(20)).await;

    // Every transition, with who, in the chain.
    let out = w.cli(&["audit", "list", "--format", "json", "--limit", "100"]);
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries: Vec<(String, String, String)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"].as_str().unwrap().starts_with("repair/"))
        .map(|e| {
            (
                e["subject"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .rev()
        .collect();
    let of = |id: &str| -> Vec<(String, String)> {
        entries
            .iter()
            .filter(|(s, _, _)| *s == format!("repair/{id}"))
            .map(|(_, a, who)| (a.clone(), who.clone()))
            .collect()
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        of(&two),
        [
            pair("repair.planned", "invariantd"),
            pair("repair.approved", "ops"),
            pair("repair.applied", "invariantd")
        ]
    );
    assert_eq!(
        of(&three),
        [
            pair("repair.planned", "invariantd"),
            pair("repair.rejected", "ops")
        ]
    );
    let verify = w.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // The head as JSON, kept, and given back: only what came after it is checked.
    let verify = w.cli(&["audit", "verify", "--format", "json"]);
    let found: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(found["intact"], true, "{found}");
    let entries = found["entries"].as_i64().unwrap();
    assert_eq!(found["checked"].as_i64(), Some(entries), "{found}");
    let since = format!("{entries}:{}", found["head"].as_str().unwrap());
    let verify = w.cli(&["audit", "verify", "--since", &since]);
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "(0 checked, after entry {entries}, the head you kept)"
        )),
        "{out}"
    );
    let verify = w.cli(&[
        "audit",
        "verify",
        "--since",
        &format!("{}:{}", entries + 1, &since[since.len() - 20..]),
    ]);
    let out = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{out}");
    assert!(
        out.contains("the head you kept, is not in the chain"),
        "{out}"
    );
    let verify = w.cli(&["audit", "verify", "--since", "abc"]);
    let err = String::from_utf8_lossy(&verify.stderr);
    assert_eq!(verify.status.code(), Some(2), "{err}");
    assert!(err.contains("give ENTRIES:HASH"), "{err}");
}

#[tokio::test]
async fn approved_sql_repairs_apply_once_on_mariadb_and_are_audited() {
    approved_sql_repairs_apply_once_and_are_audited(SourceKind::Postgres, SourceKind::MySql).await;
}

#[tokio::test]
async fn approved_sql_repairs_apply_once_on_postgres_and_are_audited() {
    approved_sql_repairs_apply_once_and_are_audited(SourceKind::MySql, SourceKind::Postgres).await;
}

#[tokio::test]
async fn a_violation_that_heals_before_its_repair_runs_is_skipped() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 2, &[1]).await;
    let w = workdir(
        &p,
        &i,
        &rule(&format!(
            "  mode: approve\n  actions:\n{}",
            reserve_action(SourceKind::Sqlite, false)
        )),
    );
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(20), "a repair pending", || {
        repairs(port, "state=pending").len() == 1
    })
    .await;
    let id = repairs(port, "state=pending")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Someone reserves order 2 by hand before the repair is approved.
    i.exec_str(&["INSERT INTO reservations VALUES (2, 'reserved')"])
        .await;
    let (status, _) = approve(port, &id, serde_json::json!({}));
    assert_eq!(status, 200);
    eventually(Duration::from_secs(20), "the repair is skipped", || {
        repairs(port, "state=skipped").len() == 1
    })
    .await;
    assert_eq!(
        reservation_counts(&i, 2).await,
        (0, 0),
        "nothing was reserved twice"
    );
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

/// A repair changes the key it fixes, which puts the key within the rule's grace: the check
/// after acting judges it without grace, so a fixed key's violation is resolved at once, by
/// the repair, and one the action did not fix stays open with when it is judged again.
#[tokio::test]
async fn a_repaired_key_is_resolved_at_once_despite_its_grace() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 3, &[1]).await;
    i.exec_str(&[
        "ALTER TABLE reservations ADD COLUMN updated_at TEXT",
        "UPDATE reservations SET updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 hour')",
        "CREATE TABLE notes (order_id BIGINT NOT NULL)",
    ])
    .await;
    let rules = r#"
name: paid_implies_reserved
severity: critical
every: 1s
grace: 5m
key: order_id
datasets:
  payment:
    source: payments
    query: "SELECT order_id FROM payments WHERE status = 'captured'"
  reservation:
    source: inventory
    query: "SELECT order_id, state, updated_at FROM reservations"
    many: true
    updated_at: updated_at
assert: payment == null || size(reservation) > 0
repair:
  mode: approve
  actions:
    reserve:
      sql:
        source: inventory_writer
        statement: "INSERT INTO reservations (order_id, state, updated_at) VALUES ($1, 'reserved', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))"
        params: [key]
    note:
      sql:
        source: inventory_writer
        statement: "INSERT INTO notes (order_id) VALUES ($1)"
        params: [key]
"#;
    let w = workdir(&p, &i, rules);
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    let (two, three) = pending_two_and_three(port).await;
    let open = "invariantd_violations_open{rule=\"paid_implies_reserved\",severity=\"critical\"}";
    assert_eq!(metric(port, open), Some(2.0));
    assert_eq!(approve(port, &two, serde_json::json!({})).0, 200);
    assert_eq!(
        approve(port, &three, serde_json::json!({ "action": "note" })).0,
        200
    );
    eventually(Duration::from_secs(20), "both repairs applied", || {
        repairs(port, "state=applied").len() == 2
    })
    .await;
    // Well within the five minutes of grace: resolved by the repair, and counted.
    let (_, body) = http(port, "GET", "/api/v1/violations?state=resolved");
    let resolved: serde_json::Value = serde_json::from_str(&body).unwrap();
    let items = resolved["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["key"], "2");
    assert_eq!(items[0]["resolved_by"], format!("repair #{two}"));
    let applied = repairs(port, "state=applied");
    let result = by_key(&applied, "2")["result"].as_str().unwrap();
    assert!(
        result.contains("the invariant holds now: the violation is resolved by this repair"),
        "{result}"
    );
    // The note fixed nothing: still open, and the result says when it is judged next.
    let result = by_key(&applied, "3")["result"].as_str().unwrap();
    assert!(
        result.contains("the key still violates the rule after the action: the violation stays open, and the rule judges it again at its first run after")
            && result.contains("(it runs every 1s)"),
        "{result}"
    );
    eventually(Duration::from_secs(10), "the open count follows", || {
        metric(port, open) == Some(1.0)
    })
    .await;
    let (_, body) = http(port, "GET", "/api/v1/violations?state=open");
    assert!(
        body.contains("\"key\":\"3\"") && !body.contains("\"key\":\"2\""),
        "{body}"
    );
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_waiting_repair_whose_violation_resolves_is_closed_without_anyone() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 2, &[1]).await;
    let rules = rule(&format!(
        "  mode: approve\n  actions:\n{}",
        reserve_action(SourceKind::Sqlite, false)
    ));
    let w = workdir(&p, &i, &rules);
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(20), "a repair pending", || {
        repairs(port, "state=pending").len() == 1
    })
    .await;
    i.exec_str(&["INSERT INTO reservations VALUES (2, 'reserved')"])
        .await;
    eventually(Duration::from_secs(20), "the repair is closed", || {
        repairs(port, "state=skipped").len() == 1
    })
    .await;
    let closed = &repairs(port, "state=skipped")[0];
    assert!(
        closed["result"]
            .as_str()
            .unwrap()
            .contains("resolved before anyone approved"),
        "{closed}"
    );
    eventually(Duration::from_secs(10), "counted as skipped", || {
        metric(
            port,
            "invariantd_repairs_total{rule=\"paid_implies_reserved\",outcome=\"skipped\"}",
        ) == Some(1.0)
    })
    .await;
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn four_eyes_needs_a_second_person_and_a_picked_action_changes_the_key() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 2, &[1]).await;
    let recorder_out = tempfile::tempdir().unwrap();
    let requests = recorder_out.path().join("requests.jsonl");
    let target = Helper::start("http_recorder.py", &[requests.to_str().unwrap()]);
    let actions = format!(
        "{}    refund:\n      http:\n        url: \"http://127.0.0.1:{}/refunds/{{{{payment.reference}}}}\"\n        json: {{ amount_cents: \"{{{{payment.amount_cents}}}}\", order: \"order {{{{key}}}}\" }}\n",
        reserve_action(SourceKind::Sqlite, false),
        target.port
    );
    let w = workdir(
        &p,
        &i,
        &rule(&format!("  mode: approve\n  actions:\n{actions}")),
    );
    let (mut daemon, port) = w
        .spawn_daemon(
            &format!("{}repairs: {{ four_eyes: true }}\n", tokens_file(w.path())),
            std::process::Stdio::null(),
        )
        .await;
    eventually(Duration::from_secs(20), "a repair pending", || {
        repairs(port, "state=pending").len() == 1
    })
    .await;
    let planned = repairs(port, "state=pending")[0].clone();
    let id = planned["id"].as_str().unwrap().to_string();
    assert_eq!(planned["action"], "reserve", "the first action is planned");

    // ops picks the refund: the first of two approvals.
    let approve = |token, action: Option<&str>| {
        let body = match action {
            Some(a) => serde_json::json!({ "action": a }),
            None => serde_json::json!({}),
        };
        post(
            port,
            &format!("/api/v1/repairs/{id}/approve"),
            Some(token),
            &body,
        )
    };
    let (status, first) = approve(TOKEN, Some("refund"));
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["state"], "pending");
    assert_eq!(first["action"], "refund");
    assert_ne!(first["idempotency_key"], planned["idempotency_key"]);
    let (status, answer) = approve(TOKEN, None);
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = approve(LEAD_TOKEN, Some("nothing"));
    assert_eq!(status, 400, "{answer}");
    // lead approving another action is not a second approval of the refund: it starts over,
    // and what lead picked waits for a second person in turn.
    let (status, switched) = approve(LEAD_TOKEN, Some("reserve"));
    assert_eq!(status, 200, "{switched}");
    assert_eq!(
        (
            switched["state"].as_str(),
            switched["action"].as_str(),
            switched["approved_by"].as_str(),
            switched["held_by"].as_str()
        ),
        (
            Some("pending"),
            Some("reserve"),
            Some("lead"),
            Some("four_eyes")
        ),
        "{switched}"
    );
    let (status, back) = approve(TOKEN, Some("refund"));
    assert_eq!(status, 200, "{back}");
    assert_eq!(
        (back["state"].as_str(), back["approved_by"].as_str()),
        (Some("pending"), Some("ops"))
    );
    let (status, second) = approve(LEAD_TOKEN, None);
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        (second["state"].as_str(), second["approved_by"].as_str()),
        (Some("approved"), Some("ops, lead"))
    );
    // The audit log says which action each person approved.
    let out = w.cli(&["audit", "list", "--format", "json", "--limit", "100"]);
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let approved = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "repair.approved" && e["subject"] == format!("repair/{id}"))
        .unwrap_or_else(|| panic!("no approval in {log}"));
    assert_eq!(
        approved["details"]["approvals"],
        serde_json::json!([{ "by": "ops", "action": "refund" }, { "by": "lead", "action": "refund" }]),
        "{approved}"
    );
    let resets = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "repair.approved_once" && !e["details"]["reset"].is_null())
        .count();
    assert_eq!(resets, 2, "{log}");

    eventually(Duration::from_secs(20), "the refund is sent", || {
        !json_lines(&requests).is_empty()
    })
    .await;
    eventually(Duration::from_secs(20), "the repair is applied", || {
        repairs(port, "state=applied").len() == 1
    })
    .await;
    let sent = json_lines(&requests);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["path"], "/refunds/ref%2F2%20x",
        "values are encoded into one path segment"
    );
    assert_eq!(
        sent[0]["headers"]["idempotency-key"],
        first["idempotency_key"]
    );
    assert_eq!(
        sent[0]["body"],
        serde_json::json!({ "amount_cents": 1002, "order": "order 2" })
    );
    // The refund does not reserve: the key still violates, and the result says so. What the
    // target answered is shown to a caller with a token only.
    let applied = &repairs(port, "state=applied")[0];
    let result = applied["result"].as_str().unwrap();
    assert!(result.contains("still violates"), "{applied}");
    assert!(
        result.contains("answered 200 OK — answer: «(shown with a token)»"),
        "{applied}"
    );
    let (_, with_token) = http_as(port, "GET", "/api/v1/repairs?state=applied", Some(TOKEN));
    assert!(
        with_token.contains("answered 200 OK — answer: «ok»"),
        "{with_token}"
    );
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn repair_actions_reach_no_address_outbound_allow_does_not_list() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 3, &[1]).await;
    let out = tempfile::tempdir().unwrap();
    let requests = out.path().join("requests.jsonl");
    let target = Helper::start("http_recorder.py", &[requests.to_str().unwrap()]);
    // A name that resolves to loopback, checked after resolution; NATS on loopback.
    let actions = format!(
        "    refund:\n      http:\n        url: \"http://localhost:{}/refunds/{{{{key}}}}\"\n    announce:\n      publish:\n        url: \"nats://127.0.0.1:4222\"\n        subject: \"outbound.{{{{key}}}}\"\n",
        target.port
    );
    let w = workdir(
        &p,
        &i,
        &rule(&format!("  mode: approve\n  actions:\n{actions}")),
    );
    let config = std::fs::read_to_string(w.config()).unwrap();
    std::fs::write(
        w.config(),
        config.replace("allow: [127.0.0.1]", "allow: [\"*.example.internal\"]"),
    )
    .unwrap();
    // The literal address is warned about at once; the name is judged when it is resolved.
    let validated = w.cli(&["validate"]);
    let said = String::from_utf8_lossy(&validated.stderr);
    assert!(
        said.contains("repair action `announce`: its requests will be refused: 127.0.0.1 is a loopback address")
            && !said.contains("repair action `refund`"),
        "{said}"
    );
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    let (two, three) = pending_two_and_three(port).await;
    approve(port, &two, serde_json::json!({}));
    approve(port, &three, serde_json::json!({ "action": "announce" }));
    eventually(Duration::from_secs(20), "both refused, not retried", || {
        repairs(port, "state=failed").len() == 2
    })
    .await;
    let failed = repairs(port, "state=failed");
    let refund = by_key(&failed, "2")["result"].as_str().unwrap().to_string();
    assert!(
        refund.contains("refused: localhost resolves to") && refund.contains("a loopback address"),
        "{refund}"
    );
    assert_eq!(by_key(&failed, "2")["attempts"], 1, "{refund}");
    let announce = by_key(&failed, "3")["result"].as_str().unwrap().to_string();
    assert!(
        announce.contains("refused: 127.0.0.1 is a loopback address"),
        "{announce}"
    );
    assert!(json_lines(&requests).is_empty(), "the target was reached");
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn http_repairs_retry_with_the_same_idempotency_key_and_ambiguous_ones_need_a_person() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 3, &[1]).await;
    let out = tempfile::tempdir().unwrap();
    let requests = out.path().join("requests.jsonl");
    // Refuses the first two requests with 503.
    let target = Helper::start("http_recorder.py", &[requests.to_str().unwrap(), "2"]);
    // Accepts connections and reads, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for s in silent.incoming().take(10) {
            open.push(s);
        }
    });
    let actions = format!(
        "    refund:\n      http:\n        url: \"http://127.0.0.1:{}/refunds/{{{{key}}}}\"\n        json: {{ amount_cents: \"{{{{payment.amount_cents}}}}\" }}\n    ask:\n      http:\n        url: \"http://127.0.0.1:{silent_port}/ask/{{{{key}}}}\"\n",
        target.port
    );
    let w = workdir(
        &p,
        &i,
        &rule(&format!("  mode: approve\n  actions:\n{actions}")),
    );
    let (mut daemon, port) = w
        .spawn_daemon(
            &format!("{}repairs: {{ timeout: 1s }}\n", tokens_file(w.path())),
            std::process::Stdio::null(),
        )
        .await;
    let (two, three) = pending_two_and_three(port).await;
    approve(port, &two, serde_json::json!({}));
    approve(port, &three, serde_json::json!({ "action": "ask" }));

    eventually(
        Duration::from_secs(30),
        "the refund goes through on its third attempt",
        || repairs(port, "state=applied").len() == 1,
    )
    .await;
    let sent = json_lines(&requests);
    assert_eq!(
        sent.iter()
            .map(|r| r["status"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [503, 503, 200]
    );
    let keys: std::collections::HashSet<&str> = sent
        .iter()
        .map(|r| r["headers"]["idempotency-key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "every attempt carries the same key: {sent:?}"
    );
    assert_eq!(repairs(port, "state=applied")[0]["attempts"], 3);

    eventually(
        Duration::from_secs(20),
        "the unanswered request needs a person",
        || repairs(port, "state=needs_manual").len() == 1,
    )
    .await;
    let manual = &repairs(port, "state=needs_manual")[0];
    assert_eq!(manual["key"], "3");
    assert!(
        manual["result"]
            .as_str()
            .unwrap()
            .contains("not marked idempotent"),
        "{manual}"
    );
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn automatic_repairs_wait_until_enabled_and_a_rule_flagging_many_keys_applies_nothing() {
    let reserved: Vec<i64> = (1..=150).collect();
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 152, &reserved).await;
    let w = workdir(
        &p,
        &i,
        &rule(&format!(
            "  mode: auto\n  max_auto_per_run: 5\n  max_per_hour: 4\n  actions:\n{}",
            reserve_action(SourceKind::Sqlite, false)
        )),
    );
    // On-call hears when a guardrail holds repairs, and when they are all decided.
    let out = tempfile::tempdir().unwrap();
    let alerts = out.path().join("alerts.jsonl");
    let hook = Helper::start("http_recorder.py", &[alerts.to_str().unwrap()]);
    let alerting = format!(
        "alerting:\n  for: 0s\n  evaluation_interval: 1s\n  receivers:\n    hook: {{ webhook: {{ url: \"http://127.0.0.1:{}/\" }} }}\n  routes:\n    - {{ match: {{ kind: repairs_held }}, receivers: [hook] }}\n",
        hook.port
    );
    let (mut daemon, port) = w
        .spawn_daemon(
            &format!("{}{alerting}", tokens_file(w.path())),
            std::process::Stdio::null(),
        )
        .await;
    // A new rule: its automatic repairs are shown, not applied.
    eventually(Duration::from_secs(20), "two repairs in dry run", || {
        repairs(port, "state=dry_run").len() == 2
    })
    .await;
    assert!(
        repairs(port, "state=dry_run")[0]["hold_reason"]
            .as_str()
            .unwrap()
            .contains("enables them")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reservation_counts(&i, 152).await, (2, 0));

    let (status, answer) = post(
        port,
        "/api/v1/rules/paid_implies_reserved/repairs/enable",
        Some(TOKEN),
        &serde_json::json!({}),
    );
    assert_eq!(
        (status, answer["approved"].as_i64()),
        (200, Some(2)),
        "{answer}"
    );
    eventually(Duration::from_secs(20), "both applied", || {
        repairs(port, "state=applied").len() == 2
    })
    .await;
    assert_eq!(reservation_counts(&i, 152).await, (0, 0));

    // A new order unreserved: repaired by itself, now that the rule is enabled.
    p.exec_str(&["INSERT INTO payments VALUES (153, 1153, 'ref/153', 'captured')"])
        .await;
    eventually(
        Duration::from_secs(20),
        "the new one applied by itself",
        || repairs(port, "state=applied").len() == 3,
    )
    .await;

    // Then the rule suddenly flags 10 orders, more than max_auto_per_run: none is applied.
    p.exec_str(&["INSERT INTO payments SELECT order_id + 1000, amount_cents, reference, status FROM payments WHERE order_id <= 10"]).await;
    eventually(
        Duration::from_secs(20),
        "ten repairs held for a person",
        || repairs(port, "state=pending").len() == 10,
    )
    .await;
    let held = repairs(port, "state=pending");
    assert!(
        held[0]["hold_reason"]
            .as_str()
            .unwrap()
            .contains("more than max_auto_per_run (5)"),
        "{held:?}"
    );
    eventually(Duration::from_secs(20), "on-call hears why", || {
        json_lines(&alerts).iter().any(|a| {
            a["body"]["group"] == "repairs_held/paid_implies_reserved"
                && a["body"]["event"] == "firing"
        })
    })
    .await;
    let fired = json_lines(&alerts)[0]["body"].clone();
    assert_eq!(
        fired["title"],
        "[FIRING critical] paid_implies_reserved: 10 automatic repairs held for a person"
    );
    assert!(
        fired["description"]
            .as_str()
            .unwrap()
            .contains("more than max_auto_per_run (5)"),
        "{fired}"
    );
    eventually(Duration::from_secs(10), "the held counter", || {
        metric(
            port,
            "invariantd_repairs_held_total{rule=\"paid_implies_reserved\",reason=\"too_many\"}",
        ) == Some(1.0)
    })
    .await;
    // Approving them all at once: the rate limit (4 an hour) lets one more through.
    let (status, bulk) = post(
        port,
        "/api/v1/rules/paid_implies_reserved/repairs/approve",
        Some(TOKEN),
        &serde_json::json!({ "comment": "checked" }),
    );
    assert_eq!(
        (status, bulk["approved"].as_array().map(Vec::len)),
        (200, Some(10)),
        "{bulk}"
    );
    eventually(Duration::from_secs(20), "the held alert resolves", || {
        json_lines(&alerts).iter().any(|a| {
            a["body"]["group"] == "repairs_held/paid_implies_reserved"
                && a["body"]["event"] == "resolved"
        })
    })
    .await;
    eventually(Duration::from_secs(20), "one more applied", || {
        repairs(port, "state=applied").len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        repairs(port, "state=applied").len(),
        4,
        "the rate limit holds the rest"
    );
    assert_eq!(repairs(port, "state=approved").len(), 9);
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_dataset_that_suddenly_returns_nothing_pauses_automatic_repairs() {
    let reserved: Vec<i64> = (1..=120).collect();
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 120, &reserved).await;
    let w = workdir(
        &p,
        &i,
        &rule(&format!(
            "  mode: auto\n  max_auto_per_run: 1000\n  actions:\n{}",
            reserve_action(SourceKind::Sqlite, false)
        )),
    );
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    let (status, _) = post(
        port,
        "/api/v1/rules/paid_implies_reserved/repairs/enable",
        Some(TOKEN),
        &serde_json::json!({}),
    );
    assert_eq!(status, 200);
    eventually(Duration::from_secs(20), "a first run", || {
        metric(
            port,
            "invariantd_rule_runs_total{rule=\"paid_implies_reserved\",outcome=\"pass\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    // The reservations table is emptied (a botched migration, a replica resync).
    i.exec_str(&["DELETE FROM reservations"]).await;
    eventually(Duration::from_secs(20), "120 repairs held", || {
        repairs(port, "state=pending").len() == 120
    })
    .await;
    let held = repairs(port, "state=pending");
    let why = held[0]["hold_reason"].as_str().unwrap();
    assert!(
        why.contains("dataset `reservation` returned no rows, where the run before returned 120"),
        "{why}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        i.count("SELECT COUNT(*) FROM reservations").await,
        0,
        "nothing applied"
    );
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

/// Waits until every repair of `orders` has ended, and checks that each was applied, and
/// each order reserved, exactly once.
async fn every_order_reserved_once(port: u16, inventory: &TestDb, orders: i64) {
    eventually(Duration::from_secs(180), "every repair ends", || {
        let ended = ["applied", "skipped", "failed", "needs_manual"]
            .iter()
            .map(|s| repairs(port, &format!("state={s}")).len())
            .sum::<usize>();
        ended == orders as usize
    })
    .await;
    assert_eq!(repairs(port, "state=failed").len(), 0);
    assert_eq!(repairs(port, "state=needs_manual").len(), 0);
    assert_eq!(
        reservation_counts(inventory, orders).await,
        (0, 0),
        "every order reserved exactly once"
    );
}

#[tokio::test]
async fn a_thousand_repairs_are_applied_exactly_once_across_a_kill_9() {
    const ORDERS: i64 = 1000;
    let (p, i) = shop(SourceKind::Postgres, SourceKind::Postgres, ORDERS, &[]).await;
    let w = workdir(
        &p,
        &i,
        &rule(&format!(
            "  mode: approve\n  actions:\n{}",
            reserve_action(SourceKind::Postgres, true)
        )),
    );
    let (mut daemon, port) = w
        .spawn_daemon(
            &format!(
                "{}repairs: {{ workers: 4, lease: 2s }}\n",
                tokens_file(w.path())
            ),
            std::process::Stdio::null(),
        )
        .await;
    eventually(
        Duration::from_secs(60),
        "a thousand repairs pending",
        || repairs(port, "state=pending").len() == ORDERS as usize,
    )
    .await;
    let (status, bulk) = post(
        port,
        "/api/v1/rules/paid_implies_reserved/repairs/approve",
        Some(TOKEN),
        &serde_json::json!({}),
    );
    assert_eq!(
        (status, bulk["approved"].as_array().map(Vec::len)),
        (200, Some(ORDERS as usize))
    );
    // Killed in the middle of the batch.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while i.count("SELECT COUNT(*) FROM reservations").await < 150 {
        assert!(
            std::time::Instant::now() < deadline,
            "repairs never got going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill(&daemon, "KILL");
    daemon.wait().unwrap();
    let before = i.count("SELECT COUNT(*) FROM reservations").await;
    assert!(before < ORDERS, "killed before the end ({before})");

    let mut daemon = w.respawn(port).await;
    every_order_reserved_once(port, &i, ORDERS).await;
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
    let verify = w.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// Three replicas on one PostgreSQL state store apply a thousand approved repairs while each
/// in turn is killed with SIGKILL and started again: every order is reserved exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_repairs_are_applied_exactly_once_by_replicas_killed_and_restarted() {
    const ORDERS: i64 = 1000;
    let (p, i) = shop(SourceKind::Postgres, SourceKind::Postgres, ORDERS, &[]).await;
    let state = TestDb::new(SourceKind::Postgres, "repairs3").await;
    let rules = rule(&format!(
        "  mode: approve\n  actions:\n{}",
        reserve_action(SourceKind::Postgres, true)
    ));
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let w = workdir(&p, &i, &rules);
        let extra = format!(
            "{}repairs: {{ workers: 4, lease: 2s }}\nstate: {{ url: \"{}\" }}\ncluster: {{ lease: 3s, renew: 1s }}\n",
            tokens_file(w.path()),
            state.admin_url
        );
        let (daemon, port) = w.spawn_daemon(&extra, std::process::Stdio::null()).await;
        replicas.push((w, daemon, port));
    }
    let port = replicas[0].2;
    eventually(
        Duration::from_secs(60),
        "a thousand repairs pending",
        || repairs(port, "state=pending").len() == ORDERS as usize,
    )
    .await;
    let (status, bulk) = post(
        port,
        "/api/v1/rules/paid_implies_reserved/repairs/approve",
        Some(TOKEN),
        &serde_json::json!({}),
    );
    assert_eq!(
        (status, bulk["approved"].as_array().map(Vec::len)),
        (200, Some(ORDERS as usize)),
        "{bulk}"
    );
    // Each replica in turn killed in the middle of the batch, and started again.
    for (n, at) in [(1, 150), (2, 400), (0, 650)] {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while i.count("SELECT COUNT(*) FROM reservations").await < at {
            assert!(std::time::Instant::now() < deadline, "repairs stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (w, daemon, port) = &mut replicas[n];
        kill(daemon, "KILL");
        daemon.wait().unwrap();
        *daemon = w.respawn(*port).await;
    }
    every_order_reserved_once(port, &i, ORDERS).await;
    for (_, daemon, _) in &mut replicas {
        terminate_within(daemon, Duration::from_secs(20)).await;
    }
    let verify = replicas[0].0.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[tokio::test]
async fn publish_actions_send_the_idempotency_key_as_the_message_id() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 2, &[1]).await;
    let nats = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("NATS on 127.0.0.1:4222 (.ci/run starts it)");
    let subject = format!("invariantd.test.{}", std::process::id());
    let mut events = nats.subscribe(format!("{subject}.>")).await.unwrap();
    nats.flush().await.unwrap();
    let actions = format!(
        "    announce:\n      publish:\n        url: \"nats://127.0.0.1:4222\"\n        subject: \"{subject}.reserve.{{{{key}}}}\"\n        json: {{ order_id: \"{{{{key}}}}\", amount_cents: \"{{{{payment.amount_cents}}}}\" }}\n"
    );
    let w = workdir(
        &p,
        &i,
        &rule(&format!("  mode: approve\n  actions:\n{actions}")),
    );
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(20), "a repair pending", || {
        repairs(port, "state=pending").len() == 1
    })
    .await;
    let planned = repairs(port, "state=pending")[0].clone();
    let id = planned["id"].as_str().unwrap();
    approve(port, id, serde_json::json!({}));
    let message = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::StreamExt::next(&mut events),
    )
    .await
    .expect("an event within 20 s")
    .unwrap();
    assert_eq!(message.subject.as_str(), format!("{subject}.reserve.2"));
    let headers = message.headers.expect("headers");
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        planned["idempotency_key"].as_str()
    );
    let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "order_id": 2, "amount_cents": 1002 })
    );
    eventually(Duration::from_secs(20), "the repair is applied", || {
        repairs(port, "state=applied").len() == 1
    })
    .await;
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn the_cli_lists_shows_and_decides_repairs() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 3, &[1]).await;
    let w = workdir(
        &p,
        &i,
        &rule(&format!(
            "  mode: approve\n  actions:\n{}",
            reserve_action(SourceKind::Sqlite, false)
        )),
    );
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(20), "two repairs pending", || {
        repairs(port, "state=pending").len() == 2
    })
    .await;
    let cli = |args: &[&str], token: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"));
        c.args(args)
            .current_dir(w.path())
            .env_remove("INVARIANTD_CONFIG");
        match token {
            Some(t) => c.env("INVARIANTD_TOKEN", t),
            None => c.env_remove("INVARIANTD_TOKEN"),
        };
        c.output().unwrap()
    };
    let list = cli(&["repairs", "list", "--state", "pending"], None);
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        text.starts_with("ID")
            && text.contains("paid_implies_reserved")
            && text.contains("pending"),
        "{text}"
    );
    let id = repairs(port, "state=pending")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let show = cli(&["repairs", "show", &id], None);
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("action reserve"),
        "{show:?}"
    );

    // A 401 says where the CLI takes its token from.
    let refused = cli(&["repairs", "approve", &id], None);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("401") && said.contains("INVARIANTD_TOKEN") && said.contains("--token"),
        "{said}"
    );
    let wrong = cli(&["repairs", "approve", &id], Some("not-a-token"));
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("401") && said.contains("is not one"),
        "{said}"
    );
    let approved = cli(&["repairs", "approve", &id, "--comment", "ok"], Some(TOKEN));
    assert!(approved.status.success(), "{approved:?}");
    let other = repairs(port, "state=pending")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rejected = cli(&["repairs", "reject", &other], Some(TOKEN));
    assert!(rejected.status.success(), "{rejected:?}");
    // Who decided is on the repair itself, not only in the audit log.
    let shown =
        String::from_utf8_lossy(&cli(&["repairs", "show", &other], None).stdout).to_string();
    assert!(
        shown.contains("state                 rejected")
            && shown.contains("rejected_by           ops"),
        "{shown}"
    );
    let shown = String::from_utf8_lossy(&cli(&["repairs", "show", &id], None).stdout).to_string();
    assert!(
        shown.contains("approved_by           ops") && !shown.contains("rejected_by"),
        "{shown}"
    );
    eventually(Duration::from_secs(20), "applied", || {
        repairs(port, "state=applied").len() == 1
    })
    .await;
    let json = cli(&["repairs", "list", "--format", "json"], None);
    let body: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn explain_shows_the_rows_each_part_of_the_assertion_grace_and_history() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 2, &[1]).await;
    let rules = format!(
        "{}---\nname: fresh\nkey: order_id\ngrace: 1h\ndatasets:\n  payment: {{ source: payments, query: \"SELECT order_id, CURRENT_TIMESTAMP AS changed FROM payments\", updated_at: changed }}\nassert: payment == null\n",
        rule(&format!(
            "  mode: approve\n  actions:\n{}",
            reserve_action(SourceKind::Sqlite, false)
        ))
    );
    let w = workdir(&p, &i, &rules);
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(20), "a repair pending", || {
        repairs(port, "state=pending").len() == 1
    })
    .await;

    let out = w.cli(&["explain", "paid_implies_reserved", "2", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["verdict"], "violated");
    assert_eq!(e["datasets"][0]["rows"][0]["amount_cents"], 1002);
    assert_eq!(e["datasets"][1]["rows"], serde_json::json!([]));
    let step = |expr: &str| {
        e["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["expr"] == expr)
            .unwrap_or_else(|| panic!("no step {expr}: {}", e["steps"]))["value"]
            .clone()
    };
    assert_eq!(step("payment == null || size(reservation) > 0"), "false");
    assert_eq!(step("size(reservation)"), "0");
    assert_eq!(step("payment == null"), "false");
    assert_eq!(e["history"][0]["state"], "open");
    assert_eq!(e["repairs"][0]["state"], "pending");
    assert_eq!(e["repairs"][0]["planned"]["params"][0]["value"], 2);

    // The text form, for a terminal.
    let text = String::from_utf8_lossy(&w.cli(&["explain", "paid_implies_reserved", "2"]).stdout)
        .to_string();
    assert!(
        text.contains("verdict: violated")
            && text.contains("size(reservation)")
            && text.contains("= 0"),
        "{text}"
    );
    // A key that holds, one nobody has, one within its grace.
    assert_eq!(
        w.cli(&["explain", "paid_implies_reserved", "1"])
            .status
            .code(),
        Some(0)
    );
    let none = w.cli(&[
        "explain",
        "paid_implies_reserved",
        "999",
        "--format",
        "json",
    ]);
    assert_eq!(none.status.code(), Some(2));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&none.stdout).unwrap()["verdict"],
        "not_found"
    );
    let fresh = w.cli(&["explain", "fresh", "2", "--format", "json"]);
    let fresh: serde_json::Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert_eq!(fresh["verdict"], "in_grace", "{fresh}");
    assert!(
        fresh["grace"].as_str().unwrap().contains("grace (1h)"),
        "{fresh}"
    );

    // The API gives the same for a violation.
    let (_, body) = http(port, "GET", "/api/v1/violations?rule=paid_implies_reserved");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = http(port, "GET", &format!("/api/v1/violations/{id}/explain"));
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (api["verdict"].as_str(), api["key"].as_str()),
        (Some("violated"), Some("2"))
    );
    assert_eq!(api["steps"], e["steps"]);
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_conflict_means_what_the_rule_says_and_other_statuses_are_retried() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 4, &[1]).await;
    let out = tempfile::tempdir().unwrap();
    let conflicts = out.path().join("409.jsonl");
    let refusals = out.path().join("422.jsonl");
    let conflict = Helper::start(
        "http_recorder.py",
        &[conflicts.to_str().unwrap(), "0", "409"],
    );
    let refusal = Helper::start(
        "http_recorder.py",
        &[refusals.to_str().unwrap(), "0", "422"],
    );
    let missing = out.path().join("404.jsonl");
    let gone = Helper::start("http_recorder.py", &[missing.to_str().unwrap(), "0", "404"]);
    let actions = format!(
        "    done_before:\n      http:\n        url: \"http://127.0.0.1:{}/refunds/{{{{key}}}}\"\n        on_409: applied\n    refused:\n      http:\n        url: \"http://127.0.0.1:{}/refunds/{{{{key}}}}\"\n    lost:\n      http:\n        url: \"http://127.0.0.1:{}/refunds/{{{{key}}}}\"\n",
        conflict.port, refusal.port, gone.port
    );
    let w = workdir(
        &p,
        &i,
        &rule(&format!("  mode: approve\n  actions:\n{actions}")),
    );
    let (mut daemon, port) = w
        .spawn_daemon(
            &format!("{}repairs: {{ max_attempts: 2 }}\n", tokens_file(w.path())),
            std::process::Stdio::null(),
        )
        .await;
    eventually(Duration::from_secs(20), "three repairs pending", || {
        repairs(port, "state=pending").len() == 3
    })
    .await;
    // Waiting repairs have an age.
    eventually(Duration::from_secs(10), "the oldest pending age", || {
        metric(
            port,
            "invariantd_repairs_oldest_pending_age_seconds{rule=\"paid_implies_reserved\"}",
        )
        .is_some_and(|age| age > 0.0)
            && metric(
                port,
                "invariantd_repairs_pending{rule=\"paid_implies_reserved\"}",
            ) == Some(3.0)
    })
    .await;
    let pending = repairs(port, "state=pending");
    let two = by_key(&pending, "2")["id"].as_str().unwrap().to_string();
    let three = by_key(&pending, "3")["id"].as_str().unwrap().to_string();
    let four = by_key(&pending, "4")["id"].as_str().unwrap().to_string();
    approve(port, &four, serde_json::json!({ "action": "lost" }));
    approve(port, &two, serde_json::json!({}));
    approve(port, &three, serde_json::json!({ "action": "refused" }));
    eventually(Duration::from_secs(30), "all three ended", || {
        repairs(port, "state=applied").len() == 1 && repairs(port, "state=failed").len() == 2
    })
    .await;
    assert_eq!(
        repairs(port, "state=applied")[0]["key"],
        "2",
        "409 with on_409: applied"
    );
    // Any other status is retried, with the same key, until max_attempts.
    let lost = by_key(&repairs(port, "state=failed"), "4").clone();
    assert_eq!(lost["attempts"], 2, "{lost}");
    assert!(
        lost["result"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{lost}"
    );
    let tries = json_lines(&missing);
    assert_eq!(tries.len(), 2);
    assert_eq!(
        tries[0]["headers"]["idempotency-key"],
        tries[1]["headers"]["idempotency-key"]
    );
    let failed = by_key(&repairs(port, "state=failed"), "3").clone();
    assert_eq!(failed["key"], "3");
    assert!(
        failed["result"].as_str().unwrap().contains("422"),
        "{failed}"
    );
    assert_eq!(failed["attempts"], 1, "a refusal is not retried");
    assert_eq!(json_lines(&refusals).len(), 1);
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn dry_run_plans_and_shows_without_applying_and_a_changed_rule_needs_enabling_again() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 3, &[1]).await;
    let auto = |extra: &str| {
        rule(&format!(
            "  mode: auto\n{extra}  actions:\n{}",
            reserve_action(SourceKind::Sqlite, false)
        ))
    };
    let w = workdir(&p, &i, &auto("  dry_run: true\n"));
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    // The rule's own dry run: enabling does not apply them.
    let (status, _) = post(
        port,
        "/api/v1/rules/paid_implies_reserved/repairs/enable",
        Some(TOKEN),
        &serde_json::json!({}),
    );
    assert_eq!(status, 200);
    eventually(Duration::from_secs(20), "two repairs in dry run", || {
        repairs(port, "state=dry_run").len() == 2
    })
    .await;
    assert!(
        repairs(port, "state=dry_run")[0]["hold_reason"]
            .as_str()
            .unwrap()
            .starts_with("dry run")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reservation_counts(&i, 3).await, (2, 0));
    terminate_within(&mut daemon, Duration::from_secs(20)).await;

    // `run --dry-run` with the rule enabled: still nothing applied, also after a reload.
    std::fs::write(w.path().join("rules/rules.yaml"), auto("")).unwrap();
    p.exec_str(&["INSERT INTO payments VALUES (4, 1004, 'ref/4', 'captured')"])
        .await;
    let mut dry = crate::harness::Daemon::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .args(["run", "--dry-run"])
            .current_dir(w.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(20), "the daemon is ready", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", "/readyz").0 == 200
    })
    .await;
    let (status, _) = post(
        port,
        "/api/v1/rules/paid_implies_reserved/repairs/enable",
        Some(TOKEN),
        &serde_json::json!({}),
    );
    assert_eq!(status, 200);
    kill(&dry, "HUP");
    eventually(
        Duration::from_secs(20),
        "order 4's repair in dry run",
        || by_key_opt(&repairs(port, "state=dry_run"), "4"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(repairs(port, "state=applied").len(), 0);
    terminate_within(&mut dry, Duration::from_secs(20)).await;

    // Without --dry-run the enabled rule repairs by itself; changed, it waits to be enabled again.
    let mut daemon = w.respawn(port).await;
    p.exec_str(&["INSERT INTO payments VALUES (5, 1005, 'ref/5', 'captured')"])
        .await;
    eventually(
        Duration::from_secs(20),
        "order 5 repaired by itself",
        || by_key_opt(&repairs(port, "state=applied"), "5"),
    )
    .await;
    std::fs::write(
        w.path().join("rules/rules.yaml"),
        auto("  max_auto_per_run: 20\n"),
    )
    .unwrap();
    kill(&daemon, "HUP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.exec_str(&["INSERT INTO payments VALUES (6, 1006, 'ref/6', 'captured')"])
        .await;
    eventually(
        Duration::from_secs(20),
        "order 6's repair waits in dry run",
        || by_key_opt(&repairs(port, "state=dry_run"), "6"),
    )
    .await;
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

fn by_key_opt(items: &[serde_json::Value], key: &str) -> bool {
    items.iter().any(|r| r["key"] == key)
}

#[test]
fn the_readmes_repair_example_is_valid() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let section = &readme[readme.find("\n## Repairs\n").expect("a Repairs section")..];
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml example");
    assert!(block.starts_with("repair:"), "{block}");
    let rules = format!(
        "name: paid_implies_reserved\nkey: order_id\ndatasets:\n  payment: {{ source: payments, query: \"SELECT order_id, id, amount_cents FROM payments\" }}\n  reservation: {{ source: inventory, query: \"SELECT order_id FROM reservations\" }}\nassert: payment == null || reservation != null\n{block}"
    );
    let config = "sources:\n  payments: { url: \"sqlite://payments.db\" }\n  inventory: { url: \"sqlite://inventory.db\" }\n  inventory_writer: { url: \"sqlite://inventory.db\" }\nrules: [rules/]\n";
    let workdir = Workdir::raw(config, &rules);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
        .args(["validate"])
        .env("PAYMENTS_URL", "https://payments.example.com")
        .env("PAYMENTS_TOKEN", "t")
        .current_dir(workdir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[tokio::test]
async fn a_statement_changing_other_than_expect_rows_is_rolled_back_and_fails() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 3, &[1]).await;
    // A careless statement: it would refund every order up to the key, not the key's alone.
    let rules = rule(
        "  mode: approve\n  action:\n    sql:\n      source: payments_writer\n      statement: \"UPDATE payments SET status = 'refunded' WHERE order_id <= $1\"\n      params: [key]\n",
    );
    let w = Workdir::new(
        &[
            ("payments", &p.url),
            ("payments_writer", &p.admin_url),
            ("inventory", &i.url),
        ],
        Some(&rules),
    );
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(20), "two repairs pending", || {
        repairs(port, "state=pending").len() == 2
    })
    .await;
    let two = by_key(&repairs(port, "state=pending"), "2")["id"]
        .as_str()
        .unwrap()
        .to_string();
    approve(port, &two, serde_json::json!({}));
    eventually(Duration::from_secs(20), "the repair fails", || {
        repairs(port, "state=failed").len() == 1
    })
    .await;
    let failed = &repairs(port, "state=failed")[0];
    assert!(
        failed["result"]
            .as_str()
            .unwrap()
            .contains("affected 2 rows, not the 1 expected (expect_rows); rolled back"),
        "{failed}"
    );
    assert_eq!(failed["attempts"], 1, "a wrong row count is not retried");
    assert_eq!(
        p.count("SELECT COUNT(*) FROM payments WHERE status = 'refunded'")
            .await,
        0,
        "nothing was changed"
    );
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[test]
fn a_repair_url_takes_values_only_in_its_path_and_query() {
    let action = |url: &str| {
        format!(
            "name: r{n}\nkey: id\ndatasets:\n  t: {{ source: db, query: \"SELECT id, host FROM t\" }}\nassert: t == null\nrepair:\n  action:\n    http: {{ url: \"{url}\" }}\n",
            n = url.len()
        )
    };
    let refused = [
        "http://{{t.host}}/x",
        "http://127.0.0.1:{{key}}/x",
        "https://pay{{key}}.example.com/",
        "http://user@{{t.host}}",
    ];
    let rules: Vec<String> = refused.iter().map(|u| action(u)).collect();
    let workdir = Workdir::raw(
        "sources:\n  db: { url: \"sqlite://db.db\" }\nrules: [rules/]\n",
        &rules.join("---\n"),
    );
    let out = workdir.cli(&["validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let located: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("url takes {{…}} only in its path and query"))
        .collect();
    assert_eq!(located.len(), refused.len(), "{stderr}");
    // Each points at the `{{` in the file: line 9 of its document, after `url: "` and the
    // literal start.
    for (line, url) in located.iter().zip(refused) {
        let column = "    http: { url: \"".len() + url.find("{{").unwrap() + 1;
        assert!(line.contains(&format!(":{column}: ")), "{line}");
    }
    // In the path and the query, values are fine.
    let fine = Workdir::raw(
        "sources:\n  db: { url: \"sqlite://db.db\" }\nrules: [rules/]\n",
        &action("http://payments.internal:8080/refunds/{{key}}?host={{t.host}}"),
    );
    let out = fine.cli(&["validate"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn enabling_under_four_eyes_through_the_api_takes_two_admins_and_no_one_alone() {
    let (p, i) = shop(SourceKind::Sqlite, SourceKind::Sqlite, 3, &[1]).await;
    let w = workdir(
        &p,
        &i,
        &rule(&format!(
            "  mode: auto\n  actions:\n{}",
            reserve_action(SourceKind::Sqlite, false)
        )),
    );
    // Two admins and an on-call approver of our own.
    const SECOND_ADMIN: &str = "tests-second-admin-0000111122223333";
    {
        use std::os::unix::fs::PermissionsExt;
        let path = w.path().join("tokens");
        std::fs::write(
            &path,
            format!("ops:admin:{TOKEN}\nlead:approve:{LEAD_TOKEN}\nboss:admin:{SECOND_ADMIN}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (mut daemon, port) = w
        .spawn_daemon(
            "auth: { tokens_file: tokens }\nrepairs: { four_eyes: true }\n",
            std::process::Stdio::null(),
        )
        .await;
    eventually(Duration::from_secs(20), "two repairs in dry run", || {
        repairs(port, "state=dry_run").len() == 2
    })
    .await;
    let enable = |token| {
        post(
            port,
            "/api/v1/rules/paid_implies_reserved/repairs/enable",
            Some(token),
            &serde_json::json!({}),
        )
    };
    // An on-call approver may not enable at all.
    let (status, answer) = enable(LEAD_TOKEN);
    assert_eq!(status, 403, "{answer}");
    // One admin: asked for, nothing enabled, nothing approved; the same admin again is refused.
    let (status, answer) = enable(TOKEN);
    assert_eq!(
        (status, &answer["enabled"]),
        (202, &serde_json::json!(false)),
        "{answer}"
    );
    let (status, answer) = enable(TOKEN);
    assert_eq!(status, 403, "{answer}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(repairs(port, "state=dry_run").len(), 2);
    assert_eq!(reservation_counts(&i, 3).await, (2, 0));
    // A second admin: enabled by both, and the two waiting repairs go through.
    let (status, answer) = enable(SECOND_ADMIN);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["enabled_by"], "ops, boss");
    assert_eq!(answer["approved"], 2);
    eventually(Duration::from_secs(20), "both applied", || {
        repairs(port, "state=applied").len() == 2
    })
    .await;
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}
