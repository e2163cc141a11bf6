//! What ships for Prometheus and Grafana: the alerting rules (`alerts/`) pass promtool's checks
//! and unit tests, amtool accepts the example Alertmanager routing, the dashboards
//! (`dashboards/`) load through file provisioning, and every metric they query is one a real
//! daemon exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Workdir, http, terminate_within};

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
    let alerting = format!(
        "outbound: {{ allow: [127.0.0.1] }}\nalerting:\n  evaluation_interval: 1s\n  receivers:\n    hook: {{ webhook: {{ url: \"http://127.0.0.1:{}/\" }} }}\n  routes:\n    - {{ receivers: [hook] }}\n",
        hook.port
    );
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
