//! What ships for Prometheus and Grafana: the alerting rules (`alerts/`) pass promtool's checks
//! and unit tests, amtool accepts the example Alertmanager routing, the dashboards
//! (`dashboards/`) load through file provisioning, every metric they query is one a real
//! daemon exports and every query returns data from a real Prometheus, and the rules and
//! invariantd's own alerts together give one notification per event in a real Alertmanager.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::{
    Prometheus, TestDb, Workdir, eventually, http, json_lines, terminate_within, tokens_file,
};

fn alerts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("alerts")
}

/// Runs a tool in `alerts/`, failing the test with what it printed.
fn tool(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(alerts())
        .output()
        .unwrap_or_else(|e| panic!("{program} (see README: Tests): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_alerting_rules_and_their_tests_pass() {
    tool("promtool", &["check", "rules", "invariantd.rules.yml"]);
    tool("promtool", &["test", "rules", "invariantd.test.yml"]);
}

#[test]
fn amtool_accepts_the_example_alertmanager_routing() {
    tool("amtool", &["check-config", "alertmanager.example.yml"]);
}

/// The metric names a text of PromQL queries (`invariantd_…` and `process_…`).
fn metrics_in(text: &str) -> BTreeSet<String> {
    regex::Regex::new(r"\b(invariantd|process)_[a-z_]+")
        .unwrap()
        .find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Every query of both dashboards, with the PromQL Prometheus can run for it (variables set
/// to `job` and `rule`; for `label_values(METRIC, label)`, the series it reads).
pub(crate) fn dashboard_exprs(job: &str, rule: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in ["overview.json", "rule.json"] {
        for query in dashboard_queries(file).lines().filter(|q| !q.is_empty()) {
            let expr = match query.strip_prefix("label_values(") {
                Some(rest) => rest.rsplit_once(',').unwrap().0.to_string(),
                None => query.to_string(),
            };
            let expr = expr
                .replace("$job", job)
                .replace("$rule", rule)
                .replace("$__rate_interval", "1m");
            out.push((format!("{file}: {query}"), expr));
        }
    }
    out
}

/// The queries of every panel of a Grafana dashboard, checking it loads through file
/// provisioning: a stable uid, and a `datasource` variable instead of `${DS_…}` inputs.
fn dashboard_queries(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("dashboards")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("${DS_") && !text.contains("__inputs"),
        "{file}"
    );
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        dashboard["uid"]
            .as_str()
            .is_some_and(|u| u.starts_with("invariantd-")),
        "{file}"
    );
    assert!(
        dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "{file}"
    );
    let mut queries = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(
            !targets.is_empty(),
            "{file}: panel {} has no query",
            panel["title"]
        );
        for target in targets {
            queries.push_str(target["expr"].as_str().unwrap());
            queries.push('\n');
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = variable["definition"].as_str() {
            queries.push_str(q);
            queries.push('\n');
        }
    }
    queries
}

#[tokio::test]
async fn every_metric_the_alerts_and_dashboards_query_is_exported() {
    let rules = std::fs::read_to_string(alerts().join("invariantd.rules.yml")).unwrap();
    let mut named: Vec<(String, &str)> = metrics_in(&rules)
        .into_iter()
        .map(|m| (m, "alerts/invariantd.rules.yml"))
        .collect();
    for file in ["overview.json", "rule.json"] {
        named.extend(
            metrics_in(&dashboard_queries(file))
                .into_iter()
                .map(|m| (m, file)),
        );
    }
    assert!(named.len() >= 20, "{named:?}");
    let (workdir, _shop) = Workdir::sqlite_shop(2).await;
    // And a rule with a repair, so that the repair families have their series.
    std::fs::create_dir(workdir.path().join("repairing")).unwrap();
    std::fs::write(
        workdir.path().join("repairing/rule.yaml"),
        "name: order_reserved\nkey: order_id\nevery: 1s\ndatasets:\n  order: { source: orders, query: \"SELECT id AS order_id FROM orders\" }\nassert: order != null\nrepair:\n  action:\n    sql: { source: orders, statement: \"UPDATE orders SET status = status WHERE id = ?\", params: [key] }\n",
    )
    .unwrap();
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        config.replace("rules: [", "rules: [\"repairing/\", "),
    )
    .unwrap();
    // A receiver, so that the alert delivery counter has series too.
    let hooks = tempfile::NamedTempFile::new().unwrap();
    let hook = crate::harness::Helper::start("http_recorder.py", &[hooks.path().to_str().unwrap()]);
    let alerting = crate::harness::webhook_alerting(hook.port, "", &[]);
    let (mut child, port) = workdir
        .spawn_daemon(&alerting, std::process::Stdio::null())
        .await;
    // Once every rule has run and an alert went out, every family has its series (a family
    // with none is not shown).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let scrape = loop {
        let (_, scrape) = http(port, "GET", "/metrics");
        if scrape.contains("invariantd_rule_keys{")
            && scrape.contains("invariantd_rule_run_duration_seconds_bucket{")
            && scrape.contains("invariantd_alerts_sent_total{")
            && scrape.contains("invariantd_repairs_held_total{")
        {
            break scrape;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run finished: {scrape}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    terminate_within(&mut child, std::time::Duration::from_secs(15)).await;
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for (name, file) in &named {
        // Samples carry `_total` (counters) or `_bucket`, `_count`, `_sum` (histograms); TYPE
        // lines do not.
        let base = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .fold(name.as_str(), |n, suffix| n.trim_end_matches(suffix));
        assert!(
            exported.contains(name.as_str()) || exported.contains(base),
            "{file} queries {name}, which invariantd does not export"
        );
    }
}

/// A shop whose one rule has an impact and a repair (approved by hand), and a daemon whose
/// webhook receiver is down: what both dashboards and the alerts need to have data.
const REPAIRED_RULE: &str = r#"
name: row_ok
severity: critical
every: 1s
key: id
datasets:
  t: { source: shop, query: "SELECT id, ok, cents FROM t" }
assert: t == null || t.ok == 1
impact: { value: t.cents, unit: cents, scale: 0.01, display_unit: EUR }
repair:
  mode: approve
  action:
    sql: { source: shop, statement: "UPDATE t SET ok = 1 WHERE id = $1", params: [key] }
"#;

async fn broken_shop(alerting: &str) -> (TestDb, Workdir) {
    let db = TestDb::new(invariantd::config::SourceKind::Sqlite, "dash").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, ok INTEGER, cents INTEGER)",
        "INSERT INTO t VALUES (1, 1, 100), (2, 0, 250)",
    ])
    .await;
    let w = Workdir::new(&[("shop", &db.admin_url)], Some(REPAIRED_RULE));
    let config = std::fs::read_to_string(w.config()).unwrap();
    std::fs::write(
        w.config(),
        format!(
            "{config}{}outbound: {{ allow: [127.0.0.1] }}\n{alerting}",
            tokens_file(w.path())
        ),
    )
    .unwrap();
    (db, w)
}

/// Every query of both dashboards returns data from a real Prometheus scraping a daemon under
/// a job name of its own, once the daemon has applied a repair and failed a delivery: the
/// repair panels, the `job` variable, the process panels.
#[tokio::test]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let dead = crate::harness::free_port();
    let (_db, w) = broken_shop(&format!(
        "alerting:\n  for: 0s\n  evaluation_interval: 1s\n  receivers:\n    hook: {{ webhook: {{ url: \"http://127.0.0.1:{dead}/\" }} }}\n  routes:\n    - {{ receivers: [hook] }}\n"
    ))
    .await;
    let (mut daemon, port) = w.spawn_daemon("", std::process::Stdio::null()).await;
    // Before any delivery, the failure series is there (at 0) for `increase()` to see the first.
    let (_, scrape) = http(port, "GET", "/metrics");
    assert!(
        scrape.contains(r#"invariantd_alerts_sent_total{receiver="hook",outcome="failed"} 0"#),
        "{scrape}"
    );
    let prometheus = Prometheus::start("shop_checker", &[port], &[], None).await;
    eventually(Duration::from_secs(20), "a repair pending", || {
        http(port, "GET", "/api/v1/repairs?state=pending")
            .1
            .contains("\"key\":\"2\"")
    })
    .await;
    // The alert of the violation fails to be delivered; then on-call approves the repair.
    eventually(Duration::from_secs(20), "a failed delivery", || {
        !http(port, "GET", "/metrics")
            .1
            .contains(r#"invariantd_alerts_sent_total{receiver="hook",outcome="failed"} 0"#)
    })
    .await;
    let (status, _) = crate::harness::http_as(
        port,
        "POST",
        "/api/v1/rules/row_ok/repairs/approve",
        Some(crate::harness::TOKEN),
    );
    assert_eq!(status, 200);
    eventually(
        Duration::from_secs(30),
        "Prometheus sees the repair and the failed delivery",
        || {
            !prometheus
                .query(r#"invariantd_repairs_total{outcome="applied"} > 0"#)
                .is_empty()
                && !prometheus
                    .query(r#"invariantd_alerts_sent_total{outcome="failed"} > 0"#)
                    .is_empty()
        },
    )
    .await;
    // A few more scrapes, so that every rate has two samples after the changes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (query, expr) in dashboard_exprs("shop_checker", "row_ok") {
        assert!(
            !prometheus.query(&expr).is_empty(),
            "`{query}` returns nothing"
        );
    }
    drop(prometheus);
    terminate_within(&mut daemon, Duration::from_secs(15)).await;
}

/// Both alert paths wired to one real Alertmanager, as the README sets them up: a real
/// Prometheus evaluating `alerts/` (with every `for:` cut to 0s, so that the metric-based
/// alerts would fire at once) and invariantd pushing its own. Each event of a rule — firing,
/// then resolved — reaches the on-call once, as one alert.
#[tokio::test]
async fn one_notification_per_event_when_both_alert_paths_are_wired() {
    let hooks = tempfile::NamedTempFile::new().unwrap();
    let hook = crate::harness::Helper::start("http_recorder.py", &[hooks.path().to_str().unwrap()]);
    let am = crate::harness::Alertmanager::with_config(&format!(
        "route:\n  receiver: hook\n  group_by: [alertname, rule, source]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - {{ url: \"http://127.0.0.1:{}/\", send_resolved: true }}\n",
        hook.port
    ))
    .await;
    let (db, w) = broken_shop(&format!(
        "alerting:\n  for: 0s\n  evaluation_interval: 1s\n  receivers:\n    am: {{ alertmanager: {{ url: \"http://127.0.0.1:{}\" }} }}\n  routes:\n    - {{ receivers: [am] }}\n",
        am.port
    ))
    .await;
    let (mut daemon, port) = w.spawn_daemon("", std::process::Stdio::null()).await;
    let rules_dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(alerts().join("invariantd.rules.yml")).unwrap();
    let eager = regex::Regex::new(r"for: \d+m")
        .unwrap()
        .replace_all(&shipped, "for: 0s");
    let rules = rules_dir.path().join("invariantd.rules.yml");
    std::fs::write(&rules, eager.as_ref()).unwrap();
    let prometheus = Prometheus::start("invariantd", &[port], &[&rules], Some(am.port)).await;

    let violated = |status: &str| {
        json_lines(hooks.path())
            .into_iter()
            .filter(|n| {
                n["body"]["groupLabels"]["alertname"] == "InvariantViolated"
                    && n["body"]["groupLabels"]["rule"] == "row_ok"
                    && (status.is_empty() || n["body"]["status"] == status)
            })
            .count()
    };
    eventually(
        Duration::from_secs(30),
        "the violation is announced",
        || violated("firing") > 0,
    )
    .await;
    // Prometheus has the metric and evaluates the rule, which stands down.
    eventually(
        Duration::from_secs(20),
        "Prometheus evaluates the shipped rules",
        || {
            !prometheus
                .query(r#"invariantd_violations_open{rule="row_ok"} > 0"#)
                .is_empty()
                && http(prometheus.port, "GET", "/api/v1/rules")
                    .1
                    .contains("\"name\":\"InvariantViolated\"")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        prometheus
            .query(r#"ALERTS{alertname="InvariantViolated"}"#)
            .is_empty()
    );

    // The row is fixed: one resolved notification.
    db.exec_str(&["UPDATE t SET ok = 1"]).await;
    eventually(
        Duration::from_secs(30),
        "the resolution is announced",
        || violated("resolved") > 0,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent: Vec<serde_json::Value> = json_lines(hooks.path())
        .into_iter()
        .filter(|n| n["body"]["groupLabels"]["alertname"] == "InvariantViolated")
        .collect();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    for (n, status) in sent.iter().zip(["firing", "resolved"]) {
        assert_eq!(n["body"]["status"], status, "{n:#}");
        let alerts = n["body"]["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "one alert per event: {n:#}");
        assert_eq!(alerts[0]["labels"]["kind"], "violation", "{n:#}");
    }
    drop(prometheus);
    terminate_within(&mut daemon, Duration::from_secs(15)).await;
}
