//! Metrics and the HTTP API: real values after runs, `promtool check metrics` on the output,
//! values restored after a restart, series of deleted rules gone, and API errors that are
//! clear and leak nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use invariantd::context::{Context, Handle};
use invariantd::daemon::run_once;
use tower::ServiceExt;

use crate::harness::Workdir;

async fn runtime(workdir: &Workdir, only: Option<&[&str]>) -> Context {
    let (config, mut rules) = workdir.load();
    if let Some(names) = only {
        rules.retain(|r| names.contains(&r.name.as_str()));
    }
    Context::start(config, rules).await.unwrap()
}

/// The value of one series in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_count_runs_and_violations_and_pass_promtool() {
    let (workdir, shop) = Workdir::sqlite_shop(3).await;
    let rt = runtime(&workdir, None).await;
    run_once(&rt, 4).await.unwrap();
    run_once(&rt, 4).await.unwrap();
    let text = rt.metrics.render(Utc::now().timestamp_micros());

    let captured = r#"{rule="captured_amount_matches_total"}"#;
    let open = shop.expected["captured_amount_matches_total"].len() as f64;
    assert_eq!(
        sample(
            &text,
            &format!("invariantd_violations_detected_total{captured}")
        ),
        Some(open)
    );
    assert_eq!(
        sample(
            &text,
            r#"invariantd_violations_open{rule="captured_amount_matches_total",severity="critical"}"#
        ),
        Some(open)
    );
    assert_eq!(
        sample(
            &text,
            r#"invariantd_rule_runs_total{rule="captured_amount_matches_total",outcome="fail"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("invariantd_rule_run_duration_seconds_count{captured}")
        ),
        Some(2.0)
    );
    assert!(
        sample(
            &text,
            &format!("invariantd_oldest_open_violation_age_seconds{captured}")
        )
        .unwrap()
            > 0.0
    );
    assert!(
        sample(
            &text,
            &format!("invariantd_rule_last_success_timestamp_seconds{captured}")
        )
        .unwrap()
            > 1.7e9
    );
    assert!(
        sample(
            &text,
            r#"invariantd_rows_scanned_total{rule="captured_amount_matches_total",dataset="order"}"#
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample(&text, r#"invariantd_source_up{source="payments"}"#),
        Some(1.0)
    );
    assert!(text.contains("# HELP invariantd_violations_open "));
    assert!(text.contains("invariantd_build_info{version="));
    // Never a key or an error text as a label.
    assert!(!text.contains("key="));
    crate::harness::promtool_check_metrics(&text);

    // The payments go (the keys are no longer in any dataset): every violation resolves, and
    // the time to consistency counts each, open for seconds.
    let payments = format!("sqlite://{}", workdir.path().join("payments.db").display());
    let mut conn = {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&payments).await.unwrap()
    };
    let orders = format!("sqlite://{}", workdir.path().join("orders.db").display());
    let mut orders = {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&orders).await.unwrap()
    };
    for (conn, table) in [(&mut conn, "payments"), (&mut orders, "orders")] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(conn)
            .await
            .unwrap();
    }
    run_once(&rt, 4).await.unwrap();
    let text = rt.metrics.render(Utc::now().timestamp_micros());
    let healed = |suffix: &str| {
        sample(
            &text,
            &format!("invariantd_violation_open_duration_seconds_{suffix}"),
        )
    };
    assert_eq!(healed(&format!("count{captured}")), Some(open));
    assert_eq!(
        healed(r#"bucket{rule="captured_amount_matches_total",le="60"}"#),
        Some(open)
    );
    assert!(healed(&format!("sum{captured}")).unwrap() < 60.0 * open);
    assert_eq!(
        sample(
            &text,
            &format!("invariantd_violations_resolved_total{captured}")
        ),
        Some(open)
    );
    crate::harness::promtool_check_metrics(&text);
}

#[tokio::test]
async fn metrics_are_restored_after_a_restart_and_deleted_rules_lose_their_series() {
    let (workdir, _shop) = Workdir::sqlite_shop(3).await;
    let before = {
        let rt = runtime(&workdir, None).await;
        run_once(&rt, 4).await.unwrap();
        rt.metrics.render(Utc::now().timestamp_micros())
    };
    let kept = ["single_capture_per_order", "paid_implies_reserved"];
    let rt = runtime(&workdir, Some(&kept)).await;
    let after = rt.metrics.render(Utc::now().timestamp_micros());
    for series in [
        r#"invariantd_violations_detected_total{rule="single_capture_per_order"}"#,
        r#"invariantd_violations_open{rule="single_capture_per_order",severity="critical"}"#,
        r#"invariantd_rule_runs_total{rule="paid_implies_reserved",outcome="fail"}"#,
        r#"invariantd_rows_scanned_total{rule="paid_implies_reserved",dataset="reservation"}"#,
        r#"invariantd_rule_last_success_timestamp_seconds{rule="paid_implies_reserved"}"#,
    ] {
        let (b, a) = (sample(&before, series), sample(&after, series));
        assert!(b.is_some() && b.unwrap() > 0.0, "{series} before: {b:?}");
        assert_eq!(a, b, "{series}");
    }
    assert!(before.contains(r#"rule="shipped_implies_paid""#));
    assert!(
        !after.contains(r#"rule="shipped_implies_paid""#),
        "a deleted rule's series remain:\n{after}"
    );
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_api_lists_rules_runs_and_violations_in_pages() {
    let (workdir, shop) = Workdir::sqlite_shop(3).await;
    let rt = Arc::new(runtime(&workdir, None).await);
    run_once(&rt, 4).await.unwrap();
    let (handle, _control) = Handle::new(rt.clone());
    let app = invariantd::http::router(handle.clone());

    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
    assert_eq!(
        get(&app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    handle.health.set_ready(true);
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);

    let (status, metrics) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("invariantd_violations_open"));

    let (_, rules) = get(&app, "/api/v1/rules").await;
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let single = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "single_capture_per_order")
        .unwrap();
    assert_eq!(
        single["open_violations"],
        shop.expected["single_capture_per_order"].len()
    );
    assert_eq!(single["severity"], "critical");
    assert!(single["last_success"].is_string());

    let total: usize = shop.expected.values().map(|k| k.len()).sum();
    let (_, page) = get(&app, "/api/v1/violations?limit=2").await;
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let keys = [
        "id",
        "rule",
        "key",
        "state",
        "message",
        "first_seen",
        "last_seen",
        "occurrences",
    ];
    for k in keys {
        assert!(page["items"][0].get(k).is_some(), "violation field {k}");
    }
    let cursor = page["next"].as_str().unwrap();
    let (_, rest) = get(
        &app,
        &format!("/api/v1/violations?cursor={cursor}&limit=1000"),
    )
    .await;
    let rest: serde_json::Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), total - 2);
    assert_eq!(rest["next"], serde_json::Value::Null);

    let (_, filtered) = get(
        &app,
        "/api/v1/violations?rule=shipped_implies_paid&state=open",
    )
    .await;
    let filtered: serde_json::Value = serde_json::from_str(&filtered).unwrap();
    assert_eq!(
        filtered["items"].as_array().unwrap().len(),
        shop.expected["shipped_implies_paid"].len()
    );

    let (_, runs) = get(&app, "/api/v1/runs?rule=paid_implies_reserved").await;
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs["items"][0]["outcome"], "fail");

    assert_eq!(
        get(&app, "/api/v1/violations?state=bogus").await,
        (
            StatusCode::BAD_REQUEST,
            r#"{"error":"state must be open, resolved or all, not `bogus`"}"#.to_string()
        )
    );
    assert_eq!(
        get(&app, "/api/v1/violations?cursor=x").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(get(&app, "/api/v1/nothing").await.0, StatusCode::NOT_FOUND);
}

/// The rule, violation and repair lists take dbt's selectors (README: Selecting rules).
#[tokio::test]
async fn the_api_lists_take_the_selectors_check_takes() {
    let (workdir, shop) = Workdir::sqlite_shop(3).await;
    let rt = Arc::new(runtime(&workdir, None).await);
    run_once(&rt, 4).await.unwrap();
    let (handle, _control) = Handle::new(rt.clone());
    let app = invariantd::http::router(handle.clone());
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let rule_names = |page: &serde_json::Value| -> Vec<String> {
        let mut names: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["name"]
                    .as_str()
                    .or(r["rule"].as_str())
                    .unwrap()
                    .to_string()
            })
            .collect();
        names.dedup();
        names
    };

    let (status, page) = get(&app, "/api/v1/rules?select=team%3Dpayments").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        rule_names(&json(&page)),
        ["captured_amount_matches_total", "single_capture_per_order"]
    );
    // Spaces add selectors up, commas intersect, exclusions subtract.
    let (_, page) = get(
        &app,
        "/api/v1/rules?select=team%3Dpayments+refund_*&exclude=single_*",
    )
    .await;
    assert_eq!(
        rule_names(&json(&page)),
        ["refund_releases_stock", "captured_amount_matches_total"]
    );

    let (status, page) = get(
        &app,
        "/api/v1/violations?select=team%3Dinventory,*_implies_*&limit=1000",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let page = json(&page);
    let mut selected = rule_names(&page);
    selected.sort();
    selected.dedup();
    // Labelled team=inventory and named like an implication: one rule.
    let mut expected: Vec<String> = ["paid_implies_reserved"]
        .into_iter()
        .filter(|r| !shop.expected[*r].is_empty())
        .map(String::from)
        .collect();
    expected.sort();
    assert_eq!(selected, expected);
    let count: usize = expected
        .iter()
        .map(|r| shop.expected[r.as_str()].len())
        .sum();
    assert_eq!(page["items"].as_array().unwrap().len(), count);

    let (status, page) = get(&app, "/api/v1/repairs?select=team%3Dshipping").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        json(&page)["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["rule"] == "shipped_implies_paid"),
        "{page}"
    );

    // A selector that selects nothing is refused, not an empty list.
    let (status, body) = get(&app, "/api/v1/violations?select=team%3Dfinance").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("select: `team=finance` selects no rule; labels: team=inventory"),
        "{body}"
    );
    let (status, body) = get(&app, "/api/v1/rules?exclude=paid_implies_reservd").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("no rule named `paid_implies_reservd`"),
        "{body}"
    );
    let (status, body) = get(&app, "/api/v1/rules?select=tag:nightly").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown selector method `tag:`"), "{body}");
    assert_eq!(
        get(&app, "/api/v1/runs?select=team%3Dpayments").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn run_errors_carry_their_kind_in_the_api_and_the_metrics_across_restarts() {
    let db = crate::harness::TestDb::new(invariantd::config::SourceKind::Sqlite, "kinds").await;
    db.exec_str(&[
        "CREATE TABLE t (id INTEGER, v INTEGER)",
        "INSERT INTO t VALUES (1, 1)",
    ])
    .await;
    let rules = "name: on_the_down_source\nkey: id\ndatasets:\n  t: { source: down, query: \"SELECT id, v FROM t\" }\nassert: t.v > 0\n---\nname: healthy\nkey: id\ndatasets:\n  t: { source: up, query: \"SELECT id, v FROM t\" }\nassert: t.v > 0\n";
    let down = "postgres://postgres@127.0.0.1:1/nothing";
    let workdir = Workdir::new(&[("up", &db.url), ("down", down)], Some(rules));
    let down_series =
        r#"invariantd_rule_run_errors_total{rule="on_the_down_source",kind="source_unreachable"}"#;
    {
        let ctx = Arc::new(runtime(&workdir, None).await);
        run_once(&ctx, 4).await.unwrap();
        let text = ctx.metrics.render(Utc::now().timestamp_micros());
        assert_eq!(sample(&text, down_series), Some(1.0), "{text}");
        assert_eq!(
            sample(
                &text,
                r#"invariantd_rule_run_errors_total{rule="healthy",kind="source_unreachable"}"#
            ),
            Some(0.0),
            "every kind has a series from the start"
        );
        assert_eq!(
            sample(&text, r#"invariantd_source_up{source="down"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, r#"invariantd_source_up{source="up"}"#),
            Some(1.0)
        );

        let (handle, _control) = Handle::new(ctx.clone());
        let app = invariantd::http::router(handle);
        let (_, body) = get(&app, "/api/v1/runs?rule=on_the_down_source").await;
        let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
        let error = &runs["items"][0]["error"];
        assert_eq!(runs["items"][0]["outcome"], "unknown");
        assert_eq!(error["kind"], "source_unreachable", "{body}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .starts_with("dataset `t` (source `down`): cannot connect: "),
            "{body}"
        );
        let (_, body) = get(&app, "/api/v1/runs?rule=healthy").await;
        let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(runs["items"][0]["error"], serde_json::Value::Null);
    }
    // The count survives a restart.
    let ctx = runtime(&workdir, None).await;
    let text = ctx.metrics.render(Utc::now().timestamp_micros());
    assert_eq!(sample(&text, down_series), Some(1.0), "{text}");
}

#[tokio::test]
async fn keys_held_back_by_grace_or_errors_are_counted_in_check_the_api_and_the_metrics() {
    let db = crate::harness::TestDb::new(invariantd::config::SourceKind::Sqlite, "counts").await;
    let now = Utc::now();
    let old = (now - chrono::Duration::hours(1)).to_rfc3339();
    let recent = (now - chrono::Duration::seconds(10)).to_rfc3339();
    db.exec(&[
        "CREATE TABLE t (id INTEGER, v TEXT, updated_at TEXT)".to_string(),
        // 1 holds, 2 violates, 3 and 4 changed seconds ago, 5 cannot be compared.
        format!("INSERT INTO t VALUES (1, '1', '{old}'), (2, '-1', '{old}'), (3, '-1', '{recent}'), (4, '1', '{recent}'), (5, 'x', '{old}')"),
    ])
    .await;
    let rules = "name: positive\ngrace: 5m\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT id, CAST(v AS INTEGER) AS v, updated_at FROM t WHERE v <> 'x' UNION ALL SELECT id, v, updated_at FROM t WHERE v = 'x'\", updated_at: updated_at }\nassert: t.v > 0\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(rules));

    let out = workdir.cli(&["check", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rule = &doc["rules"][0];
    assert_eq!(
        (
            &rule["keys_judged"],
            &rule["keys_in_grace"],
            &rule["keys_with_errors"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(2),
            &serde_json::json!(1)
        ),
        "{doc}"
    );
    let table = String::from_utf8(workdir.cli(&["check"]).stdout).unwrap();
    let header = table.lines().next().unwrap();
    assert!(header.contains("JUDGED   GRACE  ERRORS"), "{table}");
    let line = table.lines().nth(1).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &fields[..8],
        ["positive", "warning", "fail", "5", "3", "2", "1", "1"],
        "{table}"
    );

    let ctx = Arc::new(runtime(&workdir, None).await);
    run_once(&ctx, 4).await.unwrap();
    let (handle, _control) = Handle::new(ctx.clone());
    let app = invariantd::http::router(handle);
    let (_, body) = get(&app, "/api/v1/runs?rule=positive").await;
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let run = &runs["items"][0];
    assert_eq!(
        (
            &run["keys_judged"],
            &run["keys_in_grace"],
            &run["keys_with_errors"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(2),
            &serde_json::json!(1)
        ),
        "{body}"
    );
    let series =
        |status: &str| format!(r#"invariantd_rule_keys{{rule="positive",status="{status}"}}"#);
    for text in [
        ctx.metrics.render(Utc::now().timestamp_micros()),
        // After a restart, from the last finished run.
        runtime(&workdir, None)
            .await
            .metrics
            .render(Utc::now().timestamp_micros()),
    ] {
        assert_eq!(sample(&text, &series("judged")), Some(3.0), "{text}");
        assert_eq!(sample(&text, &series("in_grace")), Some(2.0));
        assert_eq!(sample(&text, &series("error")), Some(1.0));
    }
}

#[tokio::test]
async fn the_api_answers_single_items_filters_by_key_and_refuses_what_it_cannot_do() {
    let (workdir, shop) = Workdir::sqlite_shop(3).await;
    let ctx = Arc::new(runtime(&workdir, None).await);
    run_once(&ctx, 4).await.unwrap();
    let (handle, _control) = Handle::new(ctx.clone());
    let app = invariantd::http::router(handle);
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();

    // By key.
    let key = shop.expected["single_capture_per_order"]
        .iter()
        .next()
        .unwrap()
        .to_string();
    let (status, body) = get(&app, &format!("/api/v1/violations?key={key}&state=all")).await;
    assert_eq!(status, StatusCode::OK);
    let items = json(&body)["items"].as_array().unwrap().clone();
    assert!(!items.is_empty());
    assert!(items.iter().all(|v| v["key"] == key.as_str()), "{body}");

    // One violation by id, and ids that do not exist.
    let id = items[0]["id"].as_str().unwrap().to_string();
    let (status, body) = get(&app, &format!("/api/v1/violations/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["id"], id.as_str());
    assert_eq!(
        get(&app, "/api/v1/violations/999999").await,
        (
            StatusCode::NOT_FOUND,
            r#"{"error":"no violation with id `999999`"}"#.to_string()
        )
    );
    assert_eq!(
        get(&app, "/api/v1/violations/abc").await.0,
        StatusCode::NOT_FOUND
    );

    // One rule: its last run, counts, typed error and open violations.
    let (status, body) = get(&app, "/api/v1/rules/captured_amount_matches_total").await;
    assert_eq!(status, StatusCode::OK);
    let rule = json(&body);
    assert_eq!(rule["name"], "captured_amount_matches_total");
    assert_eq!(rule["last_run"]["outcome"], "fail");
    assert_eq!(rule["last_run"]["error"], serde_json::Value::Null);
    assert!(rule["last_run"]["keys_judged"].as_i64().unwrap() > 0);
    let open = rule["violations"]["items"].as_array().unwrap();
    assert_eq!(
        open.len(),
        shop.expected["captured_amount_matches_total"].len()
    );
    assert_eq!(rule["open_violations"], open.len());
    // Decimals (a NUMERIC(10,2) column) are strings here as everywhere.
    let total = open
        .iter()
        .find_map(|v| v["datasets"]["order"]["total"].as_str())
        .unwrap_or_else(|| panic!("no order total as a string in {open:?}"));
    assert!(total.contains('.'), "{total}");
    assert_eq!(
        get(&app, "/api/v1/rules/nope").await,
        (
            StatusCode::NOT_FOUND,
            r#"{"error":"no rule named `nope`"}"#.to_string()
        )
    );

    // Limits out of range and unknown parameters are refused, not ignored.
    for limit in ["0", "1001"] {
        assert_eq!(
            get(&app, &format!("/api/v1/violations?limit={limit}")).await,
            (
                StatusCode::BAD_REQUEST,
                format!(r#"{{"error":"limit must be between 1 and 1000, not {limit}"}}"#)
            )
        );
    }
    assert_eq!(get(&app, "/api/v1/runs?limit=1000").await.0, StatusCode::OK);
    let (status, body) = get(&app, "/api/v1/violations?kye=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json(&body)["error"].as_str().unwrap().starts_with(
            "invalid query parameters: kye: unknown field `kye`, expected one of `rule`, `key`"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn rule_labels_process_metrics_and_full_stops_are_on_every_scrape_and_promtool_clean() {
    let (workdir, _shop) = Workdir::sqlite_shop(2).await;
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        format!("{config}metrics: {{ rule_labels: [team, service] }}\n"),
    )
    .unwrap();
    let ctx = runtime(&workdir, None).await;
    // Before any run: every rule has its last-success series, at 0.
    let fresh = ctx.metrics.render(Utc::now().timestamp_micros());
    assert_eq!(
        sample(
            &fresh,
            r#"invariantd_rule_last_success_timestamp_seconds{rule="shipped_implies_paid",team="shipping",service=""}"#
        ),
        Some(0.0),
        "{fresh}"
    );
    run_once(&ctx, 4).await.unwrap();
    let text = ctx.metrics.render(Utc::now().timestamp_micros());
    for series in [
        r#"invariantd_violations_open{rule="paid_implies_reserved",severity="critical",team="inventory",service=""}"#,
        r#"invariantd_rule_runs_total{rule="paid_implies_reserved",outcome="fail",team="inventory",service=""}"#,
        r#"invariantd_rule_run_duration_seconds_count{rule="paid_implies_reserved",team="inventory",service=""}"#,
        r#"invariantd_rows_scanned_total{rule="paid_implies_reserved",dataset="payment",team="inventory",service=""}"#,
    ] {
        assert!(sample(&text, series).is_some(), "{series} missing:\n{text}");
    }
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "process_open_fds",
    ] {
        let value = sample(&text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(value > 0.0, "{name} = {value}");
    }
    for help in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(
            help.ends_with('.') && !help.ends_with(".."),
            "HELP must end in one full stop: {help}"
        );
    }
    crate::harness::promtool_check_metrics(&text);
}

#[tokio::test]
async fn every_configured_source_has_source_up_from_start_even_with_no_rule_reading_it() {
    let db = crate::harness::TestDb::new(invariantd::config::SourceKind::Sqlite, "probe").await;
    db.exec_str(&["CREATE TABLE t (id INTEGER)"]).await;
    let rules = "name: hourly\nevery: 1h\nkey: id\ndatasets:\n  t: { source: used, query: \"SELECT id FROM t\" }\nassert: t != null\n";
    let workdir = Workdir::new(
        &[
            ("used", &db.url),
            ("idle", &db.url),
            ("dead", "postgres://postgres@127.0.0.1:1/nothing"),
        ],
        Some(rules),
    );
    let (mut config, rules) = workdir.load();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    let ctx = Context::start(config, rules).await.unwrap();
    let metrics = ctx.metrics.clone();
    let running = invariantd::daemon::start(ctx, Vec::new()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = metrics.render(Utc::now().timestamp_micros());
        let up = |s: &str| sample(&text, &format!(r#"invariantd_source_up{{source="{s}"}}"#));
        if up("used").is_some() && up("idle").is_some() && up("dead").is_some() {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no source_up for every source:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(&text, r#"invariantd_source_up{source="idle"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"invariantd_source_up{source="dead"}"#),
        Some(0.0)
    );
    running
        .handle
        .send(invariantd::context::Control::Shutdown)
        .await;
    running.wait().await.unwrap();
}

#[tokio::test]
async fn sources_that_can_do_more_than_read_are_named_at_start_and_in_readyz() {
    let pg = crate::harness::TestDb::new(invariantd::config::SourceKind::Postgres, "power").await;
    let my = crate::harness::TestDb::new(invariantd::config::SourceKind::MySql, "power").await;
    let lite = crate::harness::TestDb::new(invariantd::config::SourceKind::Sqlite, "power").await;
    // The administrators, and the checker role every other test connects as.
    let workdir = Workdir::new(
        &[
            ("pg_super", &pg.admin_url),
            ("maria_root", &my.admin_url),
            ("pg_reader", &pg.url),
            ("maria_reader", &my.url),
            ("lite", &lite.url),
        ],
        Some(""),
    );
    let (mut config, rules) = workdir.load();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    let running =
        invariantd::daemon::start(Context::start(config, rules).await.unwrap(), Vec::new())
            .await
            .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while running.handle.health.privileged().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            running.handle.health.privileged()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Give the other three their probe too.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        running.handle.health.privileged(),
        [
            (
                "maria_root".to_string(),
                "its user has the MySQL privilege ALL PRIVILEGES on *.*".to_string()
            ),
            (
                "pg_super".to_string(),
                "its role is a PostgreSQL superuser".to_string()
            ),
        ]
    );
    let port = running.address.port();
    let (status, body) =
        tokio::task::spawn_blocking(move || crate::harness::http(port, "GET", "/readyz"))
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains(
            "warning: source `pg_super` can do more than read: its role is a PostgreSQL superuser"
        ),
        "{body}"
    );
    running
        .handle
        .send(invariantd::context::Control::Shutdown)
        .await;
    running.wait().await.unwrap();
}

/// Money is summed exactly from the store to the API and the metric: 0.10 + 0.20 + … is the
/// decimal it is, never the double a float sum drifts to (0.30000000000000004).
#[tokio::test]
async fn money_at_risk_is_an_exact_decimal_in_the_api_and_the_metric() {
    let db = crate::harness::TestDb::new(invariantd::config::SourceKind::Sqlite, "money").await;
    // 339.35 as a sum of many amounts whose binary sum is not 339.35, and 0.10 + 0.20.
    let mut amounts = vec!["0.10", "0.20"];
    amounts.extend(std::iter::repeat_n("10.01", 13));
    amounts.extend(["104.46", "104.46"]);
    let values: Vec<String> = amounts
        .iter()
        .enumerate()
        .map(|(i, a)| format!("({}, '{a}')", i + 1))
        .collect();
    db.exec(&[
        "CREATE TABLE p (id INTEGER, amount TEXT)".to_string(),
        format!("INSERT INTO p VALUES {}", values.join(", ")),
    ])
    .await;
    let float_sum: f64 = amounts.iter().map(|a| a.parse::<f64>().unwrap()).sum();
    assert_eq!(float_sum.to_string(), "339.34999999999997");
    let rules = "name: unpaid\nkey: id\ndatasets:\n  p: { source: db, query: \"SELECT id, CAST(amount AS REAL) AS amount FROM p\" }\nassert: p == null\nimpact: { value: p.amount, unit: eur, display_unit: EUR }\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(rules));
    let ctx = Arc::new(runtime(&workdir, None).await);
    run_once(&ctx, 4).await.unwrap();
    let (handle, _control) = Handle::new(ctx.clone());
    let app = invariantd::http::router(handle);
    let (_, body) = get(&app, "/api/v1/rules/unpaid").await;
    let rule: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rule["impact"]["total"], "339.35", "{body}");
    assert_eq!(rule["impact"]["display"], "339.35 EUR", "{body}");
    let text = ctx.metrics.render(Utc::now().timestamp_micros());
    let series = r#"invariantd_violations_impact{rule="unpaid",unit="eur"}"#;
    let line = text.lines().find(|l| l.starts_with(series)).unwrap();
    assert_eq!(line, format!("{series} 339.35"), "{text}");
}
