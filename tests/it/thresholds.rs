//! Thresholds (`warn_if`, `error_if`) end to end: `check`'s exit status, table, JSON, JUnit and
//! run results; and in the daemon, an alert group that fires as a warning, escalates to its
//! rule's severity once as `error_if` is crossed, reaches a pager through a route by
//! `min_impact` once enough money is at risk, and resolves to every receiver it told — with the
//! status on the metrics and the API.

use std::time::Duration;

use invariantd::config::SourceKind;

use crate::harness::{Helper, TestDb, Workdir, eventually, http, json_lines};

const RULE: &str = r#"name: orders_paid
severity: critical
every: 1s
key: id
datasets:
  o: { source: db, query: "SELECT id, paid, total FROM orders" }
assert: o.paid == 1
impact: { value: o.total, unit: cents }
error_if: { violations: "> 2" }
"#;

async fn orders(label: &str, unpaid: &[(i64, i64)]) -> TestDb {
    let db = TestDb::new(SourceKind::Sqlite, label).await;
    let mut statements = vec![
        "CREATE TABLE orders (id INTEGER, paid INTEGER, total INTEGER)".to_string(),
        "INSERT INTO orders VALUES (1, 1, 10), (2, 1, 10)".to_string(),
    ];
    for (id, total) in unpaid {
        statements.push(format!("INSERT INTO orders VALUES ({id}, 0, {total})"));
    }
    db.exec(&statements).await;
    db
}

#[tokio::test]
async fn check_warns_below_error_if_and_fails_above_it() {
    let db = orders("thr_check", &[(10, 100), (11, 100)]).await;
    let wd = Workdir::new(&[("db", &db.url)], Some(RULE));
    let out = wd.cli(&["check", "--junit", "junit.xml", "--output", "results.json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Two violations only warn: exit 0, said as such.
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "orders_paid (critical): 2 violations — warn: below error_if (violations > 2)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("1 fail (1 only warn)"), "{stdout}");
    let junit = std::fs::read_to_string(wd.path().join("junit.xml")).unwrap();
    assert!(
        junit.contains("<system-out>warning: 2 violations"),
        "{junit}"
    );
    assert!(!junit.contains("<failure"), "{junit}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(wd.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["status"], "warn");
    assert_eq!(results["summary"]["warn"], 1);
    assert_eq!(results["results"][0]["status"], "warn");
    let json = wd.cli(&["check", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["rules"][0]["status"], "warn");
    assert_eq!(doc["rules"][0]["effective_severity"], "warning");

    // A third crosses error_if: exit 1, at the rule's own severity.
    db.exec_str(&["INSERT INTO orders VALUES (12, 0, 100)"])
        .await;
    let out = wd.cli(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("3 violations — error: violations > 2"),
        "{stdout}"
    );
    let json = wd.cli(&["check", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["rules"][0]["status"], "error");
    assert_eq!(doc["rules"][0]["effective_severity"], "critical");
}

#[tokio::test]
async fn an_alert_escalates_once_reaches_the_pager_by_money_at_risk_and_resolves_to_all() {
    let out = tempfile::tempdir().unwrap();
    let log = out.path().join("hooks.jsonl");
    let hook = Helper::start("http_recorder.py", &[log.to_str().unwrap()]);
    let db = orders("thr_daemon", &[(10, 100)]).await;
    let wd = Workdir::new(&[("db", &db.url)], Some(RULE));
    let alerting = format!(
        r#"outbound: {{ allow: [127.0.0.1] }}
alerting:
  for: 0s
  evaluation_interval: 1s
  receivers:
    tickets: {{ webhook: {{ url: "http://127.0.0.1:{p}/tickets" }} }}
    pager: {{ webhook: {{ url: "http://127.0.0.1:{p}/pager" }} }}
  routes:
    - {{ match: {{ kind: violation }}, min_impact: 1000, receivers: [pager] }}
    - {{ match: {{ kind: violation }}, receivers: [tickets] }}
"#,
        p = hook.port
    );
    let (_daemon, port) = wd
        .spawn_daemon(&alerting, std::process::Stdio::null())
        .await;
    let sent = || -> Vec<(String, String, String)> {
        json_lines(&log)
            .into_iter()
            .filter(|l| l["body"]["group"] == "violation/orders_paid")
            .map(|l| {
                (
                    l["path"].as_str().unwrap_or_default().to_string(),
                    l["body"]["event"].as_str().unwrap_or_default().to_string(),
                    l["body"]["severity"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    };
    let has = |path: &str, event: &str, severity: &str| {
        sent()
            .iter()
            .any(|(p, e, s)| p == path && e == event && s == severity)
    };
    // One unpaid order warns: a ticket, at warning.
    eventually(Duration::from_secs(30), "the warning", || {
        has("/tickets", "firing", "warning")
    })
    .await;
    let (_, body) = http(port, "GET", "/api/v1/rules/orders_paid");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["status"], "warn", "{body}");
    assert_eq!(view["effective_severity"], "warning", "{body}");
    assert_eq!(
        view["thresholds"]["error_if"][0], "violations > 2",
        "{body}"
    );
    assert_eq!(view["last_run"]["status"], "warn", "{body}");
    let (_, metrics) = http(port, "GET", "/metrics");
    assert!(
        metrics.contains("invariantd_rule_status{rule=\"orders_paid\",status=\"warn\"} 1"),
        "{metrics}"
    );
    // The page shows the rule at the severity it has now, with its status.
    let (_, page) = http(port, "GET", "/rules/orders_paid");
    assert!(
        page.contains("<span class=\"warning\">warning</span> orders_paid"),
        "{page}"
    );
    assert!(
        page.contains("status <b class=\"status-warn\">warn</b>"),
        "{page}"
    );

    // Three cross error_if: escalated to critical, once, still to the ticket queue.
    db.exec_str(&["INSERT INTO orders VALUES (11, 0, 100), (12, 0, 100)"])
        .await;
    eventually(Duration::from_secs(30), "the escalation", || {
        has("/tickets", "escalated", "critical")
    })
    .await;
    let escalation = json_lines(&log)
        .into_iter()
        .find(|l| l["body"]["event"] == "escalated")
        .unwrap();
    assert_eq!(escalation["body"]["escalated_from"], "warning");
    assert_eq!(escalation["body"]["reasons"][0], "violations > 2");
    let (_, metrics) = http(port, "GET", "/metrics");
    assert!(
        metrics.contains("invariantd_rule_status{rule=\"orders_paid\",status=\"error\"} 1"),
        "{metrics}"
    );

    // Enough money at risk reaches the pager, which alone is told.
    db.exec_str(&["INSERT INTO orders VALUES (13, 0, 5000)"])
        .await;
    eventually(Duration::from_secs(30), "the page", || {
        has("/pager", "escalated", "critical")
    })
    .await;
    let tickets_escalated = sent()
        .iter()
        .filter(|(p, e, _)| p == "/tickets" && e == "escalated")
        .count();
    assert_eq!(tickets_escalated, 1, "{:?}", sent());

    // Every order paid: the resolve goes to both, at critical.
    db.exec_str(&["UPDATE orders SET paid = 1"]).await;
    eventually(Duration::from_secs(30), "the resolves", || {
        has("/tickets", "resolved", "critical") && has("/pager", "resolved", "critical")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let escalations = sent().iter().filter(|(_, e, _)| e == "escalated").count();
    assert_eq!(escalations, 2, "announced once each: {:?}", sent());
}
