//! Alerting end to end, against real receivers on loopback: an SMTP server (aiosmtpd), HTTP
//! endpoints that record webhooks, and a real Alertmanager. One grouped message per rule, with
//! a sample; retries until a receiver takes it; a restart that neither loses nor repeats; the
//! resolve; and the checker's own blindness (a source down, a rule that cannot be judged).

use std::time::Duration;

use invariantd::config::SourceKind;

use crate::harness::{
    Alertmanager, Helper, Proxy, TestDb, Workdir, eventually, free_port, http, json_lines,
    private_ca, terminate_within,
};

/// Requests a recorder answered with 200.
fn delivered(lines: &[serde_json::Value]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["status"] == 200)
        .cloned()
        .collect()
}

/// A SQLite source with one broken row, and a workdir whose rule `rule` (every second) flags it.
async fn one_broken_row(label: &str, rule: &str) -> (TestDb, Workdir) {
    let db = TestDb::new(SourceKind::Sqlite, label).await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, ok INTEGER)",
        "INSERT INTO t VALUES (1, 0)",
    ])
    .await;
    let rules = format!(
        "name: {rule}\nevery: 1s\nkey: id\ndatasets:\n  t: {{ source: db, query: \"SELECT id, ok FROM t\" }}\nassert: t.ok == 1\n"
    );
    let workdir = Workdir::new(&[("db", &db.url)], Some(&rules));
    (db, workdir)
}

#[tokio::test]
async fn a_failing_rule_is_announced_once_everywhere_survives_a_restart_and_resolves() {
    let out = tempfile::tempdir().unwrap();
    let mails = out.path().join("mails.jsonl");
    let hooks = out.path().join("hooks.jsonl");
    let chats = out.path().join("chats.jsonl");
    let smtp = Helper::start(
        "smtp_server.py",
        &[
            mails.to_str().unwrap(),
            "--auth",
            "alerts",
            "mail-password-123",
        ],
    );
    // The webhook endpoint refuses the first two attempts: delivery retries.
    let hook = Helper::start("http_recorder.py", &[hooks.to_str().unwrap(), "2"]);
    let chat = Helper::start("http_recorder.py", &[chats.to_str().unwrap()]);
    let am = Alertmanager::start().await;
    // Nothing listens here: a receiver that is down.
    let dead = free_port();

    let db = TestDb::new(SourceKind::Sqlite, "notify").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, ok INTEGER, amount_cents INTEGER)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) INSERT INTO t SELECT i, 0, 4999 FROM n",
    ])
    .await;
    let rules = r#"name: broken
description: Every row is ok.
severity: critical
labels: { team: inventory, runbook_url: "https://runbooks.example.com/broken" }
every: 1s
key: id
datasets:
  t: { source: db, query: "SELECT id, ok, amount_cents FROM t" }
assert: t.ok == 1
message: "row {{key}} is not ok"
impact: { value: t.amount_cents, unit: cents, scale: 0.01, display_unit: EUR }
"#;
    let workdir = Workdir::new(&[("db", &db.url)], Some(rules));
    std::fs::write(workdir.path().join("smtp-password"), "mail-password-123\n").unwrap();
    let alerting = format!(
        r#"outbound: {{ allow: [127.0.0.1] }}
alerting:
  for: 0s
  evaluation_interval: 1s
  sample_size: 5
  base_url: "http://invariantd.example.com"
  receivers:
    mail:
      email:
        to: [oncall@example.com]
        from: "invariantd <alerts@example.com>"
        smtp: "smtp://alerts@127.0.0.1:{}"
        password_file: smtp-password
    hook: {{ webhook: {{ url: "http://127.0.0.1:{}/hook" }} }}
    chat: {{ webhook: {{ url: "http://127.0.0.1:{}/slack", format: slack }} }}
    am: {{ alertmanager: {{ url: "http://127.0.0.1:{}", resend_interval: 2s }} }}
    dead: {{ webhook: {{ url: "http://127.0.0.1:{dead}/" }} }}
  routes:
    - {{ match: {{ severity: critical, team: inventory }}, receivers: [mail, am, dead], continue: true }}
    - {{ match: {{ kind: violation }}, receivers: [hook, chat] }}
"#,
        smtp.port, hook.port, chat.port, am.port
    );
    let (mut child, port) = workdir
        .spawn_daemon(&alerting, std::process::Stdio::null())
        .await;

    // One mail for the 100 violations, with a sample of 5, through SMTP AUTH.
    eventually(Duration::from_secs(30), "no mail arrived", || {
        !json_lines(&mails).is_empty()
    })
    .await;
    let mail = &json_lines(&mails)[0];
    assert_eq!(mail["to"], serde_json::json!(["oncall@example.com"]));
    assert_eq!(mail["login"], "alerts");
    assert_eq!(
        mail["subject"],
        "[FIRING critical] broken: 100 violations, 4,999.00 EUR at risk"
    );
    assert!(
        mail["message_id"]
            .as_str()
            .unwrap()
            .starts_with("<violation.broken."),
        "{mail}"
    );
    let data = mail["body"].as_str().unwrap();
    for part in [
        "Every row is ok.",
        "At risk:   4,999.00 EUR",
        "The oldest 5 of 100:",
        "  - 1: row 1 is not ok",
        "Runbook:    https://runbooks.example.com/broken",
        // The rule's view on the page first, the API second.
        "Page:       http://invariantd.example.com/rules/broken\r\nRule:       http://invariantd.example.com/api/v1/rules/broken\r\nViolations: http://invariantd.example.com/api/v1/violations?rule=broken&state=open",
    ] {
        assert!(data.contains(part), "{part:?} not in:\n{data}");
    }

    // The webhook got it on the third attempt, the same message each time.
    eventually(Duration::from_secs(30), "the webhook never took it", || {
        !delivered(&json_lines(&hooks)).is_empty()
    })
    .await;
    let attempts = json_lines(&hooks);
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    let id = attempts[2]["body"]["id"].as_str().unwrap().to_string();
    for a in &attempts {
        assert_eq!(a["headers"]["idempotency-key"], id.as_str());
        assert_eq!(a["body"]["id"], id.as_str());
    }
    let body = &attempts[2]["body"];
    assert_eq!(body["event"], "firing");
    assert_eq!(body["kind"], "violation");
    assert_eq!(body["rule"], "broken");
    assert_eq!(body["count"], 100);
    assert_eq!(body["sample"].as_array().unwrap().len(), 5);
    assert_eq!(body["labels"]["team"], "inventory");
    assert_eq!(body["impact"]["total"], "499900");
    assert_eq!(body["impact"]["unit"], "cents");
    assert_eq!(
        body["links"]["page"],
        "http://invariantd.example.com/rules/broken"
    );
    assert_eq!(
        body["links"]["rule"],
        "http://invariantd.example.com/api/v1/rules/broken"
    );

    eventually(Duration::from_secs(10), "no Slack message", || {
        !json_lines(&chats).is_empty()
    })
    .await;
    let slack = &json_lines(&chats)[0]["body"];
    assert_eq!(
        slack["text"],
        "[FIRING critical] broken: 100 violations, 4,999.00 EUR at risk"
    );

    // Alertmanager shows the alert, with labels that identify the group.
    eventually(Duration::from_secs(10), "Alertmanager has no alert", || {
        !am.alerts().is_empty()
    })
    .await;
    let alerts = am.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let labels = &alerts[0]["labels"];
    assert_eq!(labels["alertname"], "InvariantViolated");
    assert_eq!(labels["rule"], "broken");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["team"], "inventory");
    assert_eq!(alerts[0]["status"]["state"], "active");
    assert_eq!(
        alerts[0]["generatorURL"],
        "http://invariantd.example.com/rules/broken"
    );
    let ends_at = |alerts: &[serde_json::Value]| {
        chrono::DateTime::parse_from_rfc3339(alerts[0]["endsAt"].as_str().unwrap()).unwrap()
    };
    let first_end = ends_at(&alerts);

    let metrics = http(port, "GET", "/metrics").1;
    for line in [
        r#"invariantd_alerts_sent_total{receiver="hook",outcome="failed"} 2"#,
        r#"invariantd_alerts_sent_total{receiver="hook",outcome="sent"} 1"#,
        r#"invariantd_alerts_sent_total{receiver="mail",outcome="sent"} 1"#,
        r#"invariantd_alerts_sent_total{receiver="dead",outcome="failed"}"#,
        r#"invariantd_violations_impact{rule="broken",unit="cents"} 499900.0"#,
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    // The API shows the money at risk per rule and per violation.
    let rule: serde_json::Value =
        serde_json::from_str(&http(port, "GET", "/api/v1/rules/broken").1).unwrap();
    assert_eq!(rule["impact"]["display"], "4,999.00 EUR");
    assert_eq!(rule["violations"]["items"][0]["impact"], "4999");

    // A restart: nothing is announced again, nothing is lost.
    assert!(
        terminate_within(&mut child, Duration::from_secs(15))
            .await
            .success()
    );
    let mut child = workdir.respawn(port).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(json_lines(&mails).len(), 1);
    assert_eq!(delivered(&json_lines(&hooks)).len(), 1);
    assert_eq!(json_lines(&chats).len(), 1);
    let alerts = am.alerts();
    assert_eq!(alerts.len(), 1);
    // Sent again while it fires (every resend_interval): Alertmanager keeps it alive.
    assert!(ends_at(&alerts) > first_end, "{alerts:#?}");

    // The data is repaired: one resolve message each, and Alertmanager resolves the alert.
    db.exec_str(&["UPDATE t SET ok = 1"]).await;
    eventually(Duration::from_secs(30), "no resolve mail", || {
        json_lines(&mails).len() == 2
    })
    .await;
    assert_eq!(
        json_lines(&mails)[1]["subject"],
        "[RESOLVED] broken: every violation cleared"
    );
    eventually(Duration::from_secs(30), "no resolve webhook", || {
        delivered(&json_lines(&hooks)).len() == 2
    })
    .await;
    let resolved = &delivered(&json_lines(&hooks))[1]["body"];
    assert_eq!(resolved["event"], "resolved");
    assert_ne!(resolved["id"], id.as_str());
    assert!(resolved["ends_at"].is_string());
    eventually(
        Duration::from_secs(30),
        "Alertmanager still shows the alert",
        || am.alerts().is_empty(),
    )
    .await;
    assert!(
        terminate_within(&mut child, Duration::from_secs(15))
            .await
            .success()
    );
    // Still exactly one of each: no message per key, no repeat.
    assert_eq!(json_lines(&mails).len(), 2);
    assert_eq!(json_lines(&chats).len(), 2);
}

#[tokio::test]
async fn a_source_down_and_a_rule_that_cannot_be_judged_alert_on_their_own() {
    let out = tempfile::tempdir().unwrap();
    let hooks = out.path().join("hooks.jsonl");
    let hook = Helper::start("http_recorder.py", &[hooks.to_str().unwrap()]);

    let pg = TestDb::new(SourceKind::Postgres, "notify_dep").await;
    pg.exec_str(&[
        "CREATE TABLE t (id INT, ok BOOLEAN)",
        "INSERT INTO t VALUES (1, true)",
    ])
    .await;
    let (proxy, pg_url) = Proxy::in_front_of(&pg).await;
    let lite = TestDb::new(SourceKind::Sqlite, "notify_dep").await;
    let rules = r#"name: pg_rule
severity: critical
every: 1s
key: id
datasets:
  t: { source: pg, query: "SELECT id, ok FROM t" }
assert: t.ok
---
name: no_table
severity: warning
every: 1s
key: id
datasets:
  t: { source: lite, query: "SELECT id FROM missing_table" }
assert: t != null
"#;
    let workdir = Workdir::new(&[("pg", &pg_url), ("lite", &lite.url)], Some(rules));
    let alerting = format!(
        r#"outbound: {{ allow: [127.0.0.1] }}
alerting:
  for: 0s
  evaluation_interval: 1s
  stale_after: 3s
  receivers:
    hook: {{ webhook: {{ url: "http://127.0.0.1:{}/hook" }} }}
  routes:
    - {{ match: {{ kind: source_down }}, receivers: [hook] }}
    - {{ match: {{ kind: unknown }}, receivers: [hook] }}
    - {{ match: {{ kind: stale, rule: no_table }}, receivers: [hook] }}
"#,
        hook.port
    );
    let (mut child, _port) = workdir
        .spawn_daemon(&alerting, std::process::Stdio::null())
        .await;
    let bodies = || -> Vec<serde_json::Value> {
        json_lines(&hooks)
            .into_iter()
            .map(|l| l["body"].clone())
            .collect()
    };
    let find = |group: &str, event: &str| {
        bodies()
            .into_iter()
            .find(|b| b["group"] == group && b["event"] == event)
    };

    eventually(
        Duration::from_secs(30),
        "no alert for the rule that cannot run",
        || find("unknown/no_table", "firing").is_some(),
    )
    .await;
    let unknown = find("unknown/no_table", "firing").unwrap();
    assert_eq!(unknown["error_kind"], "query_failed");
    assert_eq!(unknown["severity"], "warning");
    // A rule that never succeeded is stale once stale_after has passed since the start.
    eventually(
        Duration::from_secs(30),
        "no alert for the stale rule",
        || find("stale/no_table", "firing").is_some(),
    )
    .await;
    let stale = find("stale/no_table", "firing").unwrap();
    assert!(stale["last_success"].is_null(), "{stale}");

    proxy.cut();
    eventually(
        Duration::from_secs(30),
        "no alert for the source down",
        || find("source_down/pg", "firing").is_some(),
    )
    .await;
    let down = find("source_down/pg", "firing").unwrap();
    assert_eq!(down["rules"], serde_json::json!(["pg_rule"]));
    // As bad as the worst rule it blinds.
    assert_eq!(down["severity"], "critical");

    proxy.restore();
    eventually(
        Duration::from_secs(30),
        "the source down never resolved",
        || find("source_down/pg", "resolved").is_some(),
    )
    .await;
    assert!(
        terminate_within(&mut child, Duration::from_secs(15))
            .await
            .success()
    );
    // The rule blinded by the source is covered by the source's alert, not alerted again.
    assert!(
        bodies().iter().all(|b| b["group"] != "unknown/pg_rule"),
        "{:#?}",
        bodies()
    );
}

#[test]
fn validate_rejects_routes_to_nowhere_and_matchers_on_nothing() {
    let config = r#"sources:
  db: { url: "sqlite://db.sqlite" }
rules: [rules/]
alerting:
  receivers:
    hook: { webhook: { url: "http://127.0.0.1:9/hook" } }
    spare: { webhook: { url: "http://127.0.0.1:9/spare" } }
  routes:
    - { match: { tem: inventory }, receivers: [hook] }
    - { match: { severity: urgent, kind: violation }, receivers: [hok] }
    - {}
    - { min_impact: 100, receivers: [hook] }
"#;
    let rules = "name: r\nlabels: { team: inventory }\nevery: 1m\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id FROM t\" }\nassert: t != null\n";
    let workdir = Workdir::raw(config, rules);
    let out = workdir.cli(&["validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for part in [
        "invariantd.yaml:10:67: alerting.routes[1]: no receiver is named `hok`; did you mean `hook`?",
        "invariantd.yaml:10:28: alerting.routes[1]: severity `urgent` is not one of critical, warning, info",
        "invariantd.yaml:9:18: alerting.routes[0]: matches on `tem`, which is not severity, rule, kind, source or a label of any rule",
        "invariantd.yaml:11:7: alerting.routes[2]: a route needs at least one receiver",
        "alerting.routes[3]: min_impact, but no rule it can take has an `impact`: it would take no alert",
    ] {
        assert!(stderr.contains(part), "{part:?} not in:\n{stderr}");
    }
    // Fixed: valid, with a warning for the receiver no route reaches.
    let fixed = config
        .replace("urgent", "critical")
        .replace("hok", "hook")
        .replace("tem:", "team:")
        .replace("    - {}\n", "")
        .replace("    - { min_impact: 100, receivers: [hook] }\n", "");
    std::fs::write(workdir.config(), fixed).unwrap();
    let out = workdir.cli(&["validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: invariantd.yaml: alerting: no route sends to receiver `spare`"),
        "{stderr}"
    );
    // Receivers on loopback that `outbound.allow` does not list are warned about at once.
    assert!(
        stderr.contains("warning: invariantd.yaml: alerting.receivers.hook: its alerts will be refused: 127.0.0.1 is a loopback address, not in outbound.allow"),
        "{stderr}"
    );
    std::fs::write(
        workdir.config(),
        format!(
            "{}outbound: {{ allow: [127.0.0.0/8] }}\n",
            std::fs::read_to_string(workdir.config()).unwrap()
        ),
    )
    .unwrap();
    let out = workdir.cli(&["validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("will be refused"), "{stderr}");
}

#[tokio::test]
async fn silences_hold_a_rule_or_one_key_are_listed_and_lifted() {
    let out = tempfile::tempdir().unwrap();
    let hooks = out.path().join("hooks.jsonl");
    let hook = Helper::start("http_recorder.py", &[hooks.to_str().unwrap()]);
    let db = TestDb::new(SourceKind::Sqlite, "silences").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, ok INTEGER)",
        "INSERT INTO t VALUES (1, 1), (2, 1), (3, 1)",
        "CREATE TABLE u (id INTEGER, ok INTEGER)",
        "INSERT INTO u VALUES (7, 1), (8, 1)",
    ])
    .await;
    let rules = r#"name: broken
labels: { team: inventory }
every: 1s
key: id
datasets:
  t: { source: db, query: "SELECT id, ok FROM t" }
assert: t.ok == 1
---
name: other
every: 1s
key: id
datasets:
  u: { source: db, query: "SELECT id, ok FROM u" }
assert: u.ok == 1
"#;
    let workdir = Workdir::new(&[("db", &db.url)], Some(rules));
    let extra = format!(
        "{}{}",
        crate::harness::tokens_file(workdir.path()),
        crate::harness::webhook_alerting(hook.port, "hook", &["for: 0s"])
    );
    let (mut child, port) = workdir
        .spawn_daemon(&extra, std::process::Stdio::null())
        .await;
    let url = format!("http://127.0.0.1:{port}");
    let silence = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"));
        cmd.arg("silence").args(args).env("INVARIANTD_URL", &url);
        cmd.env_remove("INVARIANTD_TOKEN");
        if let Some(t) = token {
            cmd.env("INVARIANTD_TOKEN", t);
        }
        let out = cmd.current_dir(workdir.path()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let token = Some(crate::harness::TOKEN);
    // `silence add ARGS --comment COMMENT`.
    let add = |args: &str, comment: &str, token: Option<&str>| {
        let mut all: Vec<&str> = vec!["add"];
        all.extend(args.split_whitespace());
        all.extend(["--comment", comment]);
        silence(&all, token)
    };

    // Without a token: refused, and said why.
    let (code, _, err) = add("--rule broken --for 1h", "x", None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("needs a bearer token"), "{err}");
    // A matcher on nothing: refused by the daemon.
    let (code, _, err) = add("--match tem=inventory --for 1h", "x", token);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("`tem` is not"), "{err}");
    // A label value no rule carries would silence nothing: refused, naming those there are.
    let (code, _, err) = add("--match team=nosuchteam --for 1h", "x", token);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no rule has team=nosuchteam") && err.contains("inventory"),
        "{err}"
    );
    // So would a label the named rule does not carry.
    let (code, _, err) = add("--rule other --match team=inventory --for 1h", "x", token);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("rule `other` has no label team=inventory"),
        "{err}"
    );

    let (code, whole, err) = add(
        "--match team=inventory --for 1h",
        "INC-42: restocking",
        token,
    );
    assert_eq!(code, Some(0), "{err}");
    let whole_id = whole
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let (code, _, err) = add("--rule other --key 7 --for 1h", "known bad row", token);
    assert_eq!(code, Some(0), "{err}");

    // Break both rules.
    db.exec_str(&["UPDATE t SET ok = 0", "UPDATE u SET ok = 0"])
        .await;
    let bodies = || -> Vec<serde_json::Value> {
        json_lines(&hooks)
            .into_iter()
            .map(|l| l["body"].clone())
            .collect()
    };
    eventually(Duration::from_secs(30), "no alert for `other`", || {
        bodies().iter().any(|b| b["group"] == "violation/other")
    })
    .await;
    let other = bodies()
        .into_iter()
        .find(|b| b["group"] == "violation/other")
        .unwrap();
    // Key 7 is silenced: the group counts and shows key 8 alone.
    assert_eq!(other["count"], 1);
    assert_eq!(other["sample"][0]["key"], "8");
    assert_eq!(other["sample"].as_array().unwrap().len(), 1);

    // `broken` is silenced whole: not sent, but visible and marked in the API.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(bodies().iter().all(|b| b["group"] != "violation/broken"));
    let (status, alerts) = http(port, "GET", "/api/v1/alerts");
    assert_eq!(status, 200, "{alerts}");
    let alerts: serde_json::Value = serde_json::from_str(&alerts).unwrap();
    let broken = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["group"] == "violation/broken")
        .unwrap_or_else(|| panic!("{alerts:#}"));
    assert_eq!(broken["state"], "firing");
    assert_eq!(broken["silenced_by"], serde_json::json!([whole_id]));
    // Metrics are not silenced.
    assert!(
        http(port, "GET", "/metrics")
            .1
            .contains(r#"invariantd_violations_open{rule="broken",severity="warning"} 3"#)
    );

    let (code, list, err) = silence(&["list"], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        list.contains("team=inventory") && list.contains("INC-42: restocking"),
        "{list}"
    );
    assert!(
        list.contains("rule=other,key=7") && list.contains("ops"),
        "{list}"
    );

    // Lifted: the rule still fails, so it is announced at once. What is printed is when it
    // ended and who ended it, not the end it had.
    let (code, expired, err) = silence(&["expire", &whole_id], token);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        expired.contains("expired 20") && expired.contains(" by ops") && !expired.contains("until"),
        "{expired}"
    );
    eventually(
        Duration::from_secs(30),
        "no alert once the silence was lifted",
        || bodies().iter().any(|b| b["group"] == "violation/broken"),
    )
    .await;
    let broken = bodies()
        .into_iter()
        .find(|b| b["group"] == "violation/broken")
        .unwrap();
    assert_eq!(broken["count"], 3);
    // Expiring again is harmless; the list no longer shows it as active.
    assert_eq!(silence(&["expire", &whole_id], token).0, Some(0));
    let (_, list, _) = silence(&["list", "--format", "json"], None);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list:#}");

    // A silence ends by itself.
    let (code, _, err) = add("--rule other --for 1s", "brief", token);
    assert_eq!(code, Some(0), "{err}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, list, _) = silence(&["list", "--format", "json"], None);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list:#}");
    let (_, all, _) = silence(&["list", "--all", "--format", "json"], None);
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 3, "{all:#}");
    // Each change is in the audit log, with who made it; the chain is whole.
    let audit = workdir.cli(&["audit", "list", "--format", "json"]);
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("ops", "silence.add"),
            ("ops", "silence.expire"),
            ("ops", "silence.expire"),
            ("ops", "silence.add"),
            ("ops", "silence.add"),
        ],
        "{audit:#}"
    );
    let verify = workdir.cli(&["audit", "verify"]);
    assert!(verify.status.success());
    assert!(
        String::from_utf8_lossy(&verify.stdout).starts_with("audit log intact: 5 entries, head "),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(
        terminate_within(&mut child, Duration::from_secs(15))
            .await
            .success()
    );
}

#[tokio::test]
async fn mail_goes_over_starttls_and_tls_to_servers_signed_by_a_private_ca() {
    let out = tempfile::tempdir().unwrap();
    private_ca(out.path());
    let mails = out.path().join("mails.jsonl");
    let smtp = Helper::start(
        "smtp_server.py",
        &[
            mails.to_str().unwrap(),
            "--auth",
            "alerts",
            "tls-password-456",
            "--starttls",
            out.path().join("server.pem").to_str().unwrap(),
            out.path().join("server.key").to_str().unwrap(),
        ],
    );
    let tls_mails = out.path().join("tls-mails.jsonl");
    let smtps = Helper::start(
        "smtp_server.py",
        &[
            tls_mails.to_str().unwrap(),
            "--auth",
            "alerts",
            "tls-password-456",
            "--tls",
            out.path().join("server.pem").to_str().unwrap(),
            out.path().join("server.key").to_str().unwrap(),
        ],
    );
    let (_db, workdir) = one_broken_row("starttls", "broken").await;
    // The password comes from the environment, in the URL.
    let alerting = format!(
        "outbound: {{ allow: [127.0.0.1] }}\nalerting:\n  for: 0s\n  evaluation_interval: 1s\n  receivers:\n    mail:\n      email:\n        to: [oncall@example.com]\n        smtp: \"smtp://alerts:${{SMTP_PASSWORD}}@127.0.0.1:{}?tls=required\"\n        ca_file: {ca}\n    smtps:\n      email:\n        to: [oncall@example.com]\n        smtp: \"smtps://alerts:${{SMTP_PASSWORD}}@127.0.0.1:{}\"\n        ca_file: {ca}\n  routes:\n    - {{ receivers: [mail, smtps] }}\n",
        smtp.port,
        smtps.port,
        ca = out.path().join("ca.pem").display()
    );
    std::fs::write(
        workdir.config(),
        format!(
            "{}http: {{ listen: \"127.0.0.1:0\" }}\n{alerting}",
            std::fs::read_to_string(workdir.config()).unwrap()
        ),
    )
    .unwrap();
    let mut child = crate::harness::Daemon::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .args(["run"])
            .env("SMTP_PASSWORD", "tls-password-456")
            .current_dir(workdir.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(30), "no mail over STARTTLS", || {
        !json_lines(&mails).is_empty()
    })
    .await;
    eventually(Duration::from_secs(30), "no mail over TLS", || {
        !json_lines(&tls_mails).is_empty()
    })
    .await;
    for mail in [&json_lines(&mails)[0], &json_lines(&tls_mails)[0]] {
        assert_eq!(mail["tls"], true, "{mail}");
        assert_eq!(mail["login"], "alerts");
        assert_eq!(mail["subject"], "[FIRING warning] broken: 1 violation");
    }
    assert!(
        terminate_within(&mut child, Duration::from_secs(15))
            .await
            .success()
    );
}

#[tokio::test]
async fn a_reload_sends_to_the_receivers_of_the_new_config() {
    let out = tempfile::tempdir().unwrap();
    let (old_log, new_log) = (out.path().join("old.jsonl"), out.path().join("new.jsonl"));
    let old = Helper::start("http_recorder.py", &[old_log.to_str().unwrap()]);
    let new = Helper::start("http_recorder.py", &[new_log.to_str().unwrap()]);
    let (db, workdir) = one_broken_row("reload_receivers", "broken").await;
    let alerting = |port: u16| crate::harness::webhook_alerting(port, "", &["for: 0s"]);
    let (mut child, _port) = workdir
        .spawn_daemon(&alerting(old.port), std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(30), "no firing alert", || {
        !json_lines(&old_log).is_empty()
    })
    .await;

    // The receiver now points elsewhere: the resolve goes there.
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        config.replace(&format!(":{}/", old.port), &format!(":{}/", new.port)),
    )
    .unwrap();
    crate::harness::kill(&child, "HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    db.exec_str(&["UPDATE t SET ok = 1"]).await;
    eventually(
        Duration::from_secs(30),
        "the resolve did not reach the new receiver",
        || {
            json_lines(&new_log)
                .iter()
                .any(|l| l["body"]["event"] == "resolved")
        },
    )
    .await;
    assert_eq!(json_lines(&old_log).len(), 1);
    assert!(
        terminate_within(&mut child, Duration::from_secs(15))
            .await
            .success()
    );
}

#[test]
fn the_readmes_alerting_example_is_valid_with_the_shipped_rules() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let section = &readme[readme.find("\n## Alerting\n").expect("an Alerting section")..];
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml example");
    assert!(block.starts_with("alerting:"), "{block}");
    let mut config = String::from("sources:\n");
    for service in invariantd::demo::shop::SERVICES {
        config.push_str(&format!(
            "  {service}: {{ url: \"sqlite://{service}.db\" }}\n"
        ));
    }
    config.push_str(&format!(
        "rules: [\"{}\"]\n{block}",
        crate::harness::shipped_rules().display()
    ));
    let workdir = Workdir::raw(&config, "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
        .args(["validate"])
        .env("CHAT_WEBHOOK_URL", "https://chat.example.com/hooks/T0/B0/x")
        .current_dir(workdir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[tokio::test]
async fn a_receiver_that_answers_with_a_redirect_is_not_followed() {
    // The other service on loopback the redirect points at: it must never hear from us.
    let dir = tempfile::tempdir().unwrap();
    let elsewhere_log = dir.path().join("elsewhere.jsonl");
    let elsewhere = Helper::start("http_recorder.py", &[elsewhere_log.to_str().unwrap()]);
    let hook_log = dir.path().join("hook.jsonl");
    let target = format!("http://127.0.0.1:{}/internal", elsewhere.port);
    let hook = Helper::start(
        "http_recorder.py",
        &[hook_log.to_str().unwrap(), "0", "307", &target],
    );
    let (_db, workdir) = one_broken_row("redirect", "r").await;
    let alerting = crate::harness::webhook_alerting(hook.port, "hook", &["for: 0s"]);
    let (mut daemon, port) = workdir
        .spawn_daemon(&alerting, std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(20), "the hook asked", || {
        !json_lines(&hook_log).is_empty()
    })
    .await;
    eventually(Duration::from_secs(20), "counted as failed", || {
        http(port, "GET", "/metrics")
            .1
            .contains("invariantd_alerts_sent_total{receiver=\"hook\",outcome=\"failed\"}")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        json_lines(&elsewhere_log).is_empty(),
        "the redirect was followed: {:?}",
        json_lines(&elsewhere_log)
    );
    terminate_within(&mut daemon, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn receivers_reach_loopback_and_metadata_addresses_only_as_outbound_allow_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let hook_log = dir.path().join("hook.jsonl");
    let hook = Helper::start("http_recorder.py", &[hook_log.to_str().unwrap()]);
    let (_db, workdir) = one_broken_row("outbound", "r").await;
    // `localhost` is allowed by name: the address it resolves to goes. The same recorder by
    // its literal address (plain or inside IPv6) is not listed, nor is the metadata service.
    let p = hook.port;
    let alerting = format!(
        "outbound: {{ allow: [localhost] }}\nalerting:\n  for: 0s\n  evaluation_interval: 1s\n  receivers:\n    named: {{ webhook: {{ url: \"http://localhost:{p}/named\" }} }}\n    literal: {{ webhook: {{ url: \"http://127.0.0.1:{p}/literal\" }} }}\n    mapped: {{ webhook: {{ url: \"http://[::ffff:127.0.0.1]:{p}/mapped\" }} }}\n    metadata: {{ alertmanager: {{ url: \"http://169.254.169.254\" }} }}\n    mail: {{ email: {{ to: [oncall@example.com], smtp: \"smtp://127.0.0.1:9\" }} }}\n  routes:\n    - {{ receivers: [named, literal, mapped, metadata, mail] }}\n"
    );
    let stderr_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let (mut daemon, port) = workdir.spawn_daemon(&alerting, stderr.into()).await;
    eventually(Duration::from_secs(20), "the named receiver heard", || {
        !json_lines(&hook_log).is_empty()
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "the others counted as failed",
        || {
            let m = http(port, "GET", "/metrics").1;
            ["literal", "mapped", "metadata", "mail"].iter().all(|r| {
                m.contains(&format!(
                    "invariantd_alerts_sent_total{{receiver=\"{r}\",outcome=\"failed\"}}"
                ))
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paths: Vec<String> = json_lines(&hook_log)
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.iter().all(|p| p == "/named"), "{paths:?}");
    // Each delivery attempt says why it was refused (not only the warnings at start-up).
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    for (receiver, said) in [
        (
            "literal",
            "error=refused: 127.0.0.1 is a loopback address, not in outbound.allow",
        ),
        (
            "mapped",
            "error=refused: ::ffff:127.0.0.1 is a loopback address",
        ),
        (
            "metadata",
            "error=refused: 169.254.169.254 is a cloud metadata address",
        ),
        (
            "mail",
            "error=SMTP server refused: 127.0.0.1 is a loopback address",
        ),
    ] {
        assert!(
            log.lines().any(|l| l.contains("Alert not delivered")
                && l.contains(&format!("receiver={receiver} "))
                && l.contains(said)),
            "{receiver}: {said} not in:\n{log}"
        );
    }
    terminate_within(&mut daemon, Duration::from_secs(15)).await;
}
