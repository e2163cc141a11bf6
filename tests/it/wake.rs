//! A change made through the API wakes the service that acts on it, instead of leaving it to
//! that service's next tick: an approval or a rejection wakes the repair service (and the alert
//! evaluator, whose held-repairs alert changes); adding or expiring a silence wakes the alert
//! evaluator. Refused changes wake nobody.
//!
//! And a daemon that is alone, with nothing due, does no store work but renewing its leases;
//! what comes due by time alone (`for`, a repeat, a silence's end) is still announced on time,
//! however long `alerting.evaluation_interval` is.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures_util::FutureExt;
use invariantd::context::{Context, Handle, Wake};
use invariantd::state::{NewRepair, RepairState};
use tower::ServiceExt;

use crate::harness::{
    TOKEN, TestDb, Workdir, eventually, json_lines, tokens_file, webhook_alerting,
};
use invariantd::config::SourceKind;
use std::time::Duration;

async fn post(app: &axum::Router, uri: &str, body: &str) -> StatusCode {
    app.clone()
        .oneshot(
            Request::post(uri)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap()
        .status()
}

/// Whether each service was woken since the last look (and takes the wake-up).
fn woken(wake: &Wake) -> (bool, bool) {
    (
        wake.repairs.notified().now_or_never().is_some(),
        wake.alerts.notified().now_or_never().is_some(),
    )
}

#[tokio::test]
async fn decisions_and_silences_wake_the_service_that_acts_on_them() {
    let (workdir, _) = Workdir::sqlite_shop(1).await;
    let auth = tokens_file(workdir.path());
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(workdir.config(), format!("{config}{auth}")).unwrap();
    let (config, rules) = workdir.load();
    let rule = rules[0].name.clone();
    let ctx = Context::start(config, rules).await.unwrap();
    let new = |key: &str| NewRepair {
        key: key.into(),
        occurrence_us: 1_000,
        state: RepairState::Pending,
        mode: "approve".into(),
        action: "reserve".into(),
        actions: Vec::new(),
        idempotency_key: format!("idem-{key}"),
        hold_reason: None,
        held_by: None,
    };
    let ids = ctx
        .store
        .plan_repairs(&rule, &[new("1"), new("2")], 10)
        .await
        .unwrap();
    let (handle, _control) = Handle::new(Arc::new(ctx));
    let wake = handle.wake.clone();
    let app = invariantd::http::router(handle);
    assert_eq!(woken(&wake), (false, false));

    let approve = format!("/api/v1/repairs/{}/approve", ids[0]);
    assert_eq!(post(&app, &approve, "{}").await, StatusCode::OK);
    assert_eq!(woken(&wake), (true, true), "an approval");
    // Deciding it again is refused, and wakes nobody.
    assert_eq!(post(&app, &approve, "{}").await, StatusCode::CONFLICT);
    assert_eq!(woken(&wake), (false, false), "a refused decision");

    let reject = format!("/api/v1/repairs/{}/reject", ids[1]);
    assert_eq!(post(&app, &reject, "{}").await, StatusCode::OK);
    assert_eq!(woken(&wake), (true, true), "a rejection");

    // A silence without its comment is refused, and wakes nobody.
    let bare = format!(r#"{{"matchers": {{"rule": "{rule}"}}, "duration": "1h"}}"#);
    assert_eq!(
        post(&app, "/api/v1/silences", &bare).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(woken(&wake), (false, false), "a refused silence");
    let silence = format!(
        r#"{{"matchers": {{"rule": "{rule}"}}, "duration": "1h", "comment": "known, fixing"}}"#
    );
    assert_eq!(
        post(&app, "/api/v1/silences", &silence).await,
        StatusCode::CREATED
    );
    assert_eq!(woken(&wake), (false, true), "a silence");
    let delete = app
        .clone()
        .oneshot(
            Request::delete("/api/v1/silences/1")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::OK);
    assert_eq!(woken(&wake), (false, true), "a silence expired");
    std::mem::forget(workdir);
}

/// Rules that run once an hour, one of them offering repairs with one waiting for a person.
const HOURLY: &str = r#"
name: hourly
every: 1h
key: id
datasets:
  t: { source: shop, query: "SELECT id, ok FROM t" }
assert: t.ok == 1
repair:
  mode: approve
  action:
    sql: { source: shop, statement: "UPDATE t SET ok = 1 WHERE id = ?1", params: [key] }
---
name: quiet
every: 1h
key: id
datasets:
  t: { source: shop, query: "SELECT id FROM t" }
assert: t != null
"#;

/// The state database's transactions so far, read from another database.
async fn transactions(admin: &mut sqlx::PgConnection, db: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// A daemon alone on its PostgreSQL state store, its rules run, a repair waiting and an alert
/// delivered, with `evaluation_interval: 1s` (which used to be how often the evaluator read
/// the store): for 20 s it renews its leases (one transaction a `cluster.renew`) and does
/// nothing else there.
#[tokio::test]
async fn alone_with_nothing_due_a_daemon_only_renews_its_leases() {
    use sqlx::Connection as _;
    let shop = TestDb::new(SourceKind::Sqlite, "idle_shop").await;
    shop.exec_str(&[
        "CREATE TABLE t (id INTEGER PRIMARY KEY, ok INTEGER)",
        "INSERT INTO t VALUES (1, 1), (2, 0)",
    ])
    .await;
    let state = TestDb::new(SourceKind::Postgres, "idle_state").await;
    let workdir = Workdir::new(&[("shop", &shop.admin_url)], Some(HOURLY));
    let hooks = tempfile::NamedTempFile::new().unwrap();
    let hook = crate::harness::Helper::start("http_recorder.py", &[hooks.path().to_str().unwrap()]);
    let extra = format!(
        "{}state: {{ url: \"{}\" }}\ncluster: {{ lease: 4s, renew: 2s }}\n{}",
        tokens_file(workdir.path()),
        state.admin_url,
        webhook_alerting(hook.port, "", &["for: 0s"])
    );
    let (_daemon, port) = workdir
        .spawn_daemon(&extra, std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(30), "no alert went out", || {
        json_lines(hooks.path())
            .iter()
            .any(|l| l["body"]["group"] == "violation/hourly")
    })
    .await;
    let (_, waiting) = crate::harness::http(port, "GET", "/api/v1/repairs?state=pending");
    assert!(waiting.contains(r#""key":"2""#), "{waiting}");
    // Settled: a PostgreSQL backend reports its counts up to 10 s after it goes idle.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut admin =
        sqlx::PgConnection::connect(&format!("{}/postgres", crate::harness::pg_server()))
            .await
            .unwrap();
    let before = transactions(&mut admin, &state.name).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = transactions(&mut admin, &state.name).await;
    // Ten renewals, and room for a count reported late at either end; the evaluator alone
    // used to make 20 × 7 here.
    assert!(
        after - before <= 14,
        "{} state store transactions in 20 s with nothing due",
        after - before
    );
    assert!(after - before >= 5, "the leases were not renewed");
    // Still alive to what this process changes: the repair approved now is applied at once,
    // not at a look due in a quarter of an hour.
    let (status, body) = crate::harness::http_as(
        port,
        "POST",
        "/api/v1/rules/hourly/repairs/approve",
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(10),
        "the approved repair was not applied",
        || {
            let (_, applied) = crate::harness::http(port, "GET", "/api/v1/repairs?state=applied");
            applied.contains(r#""key":"2""#)
        },
    )
    .await;
}

/// With `evaluation_interval: 1h` the evaluator of a daemon alone still announces what comes
/// due by time alone, when it does: a firing once `for` has passed, its repeat, and a group
/// that fired under a silence once the silence ends.
#[tokio::test]
async fn alone_what_comes_due_by_time_is_announced_when_it_does() {
    let shop = TestDb::new(SourceKind::Sqlite, "due_shop").await;
    shop.exec_str(&[
        "CREATE TABLE t (id INTEGER PRIMARY KEY, ok INTEGER)",
        "INSERT INTO t VALUES (1, 0)",
        "CREATE TABLE u (id INTEGER PRIMARY KEY, ok INTEGER)",
        "INSERT INTO u VALUES (1, 0)",
    ])
    .await;
    let rules = r#"
name: late
every: 1h
key: id
datasets:
  t: { source: shop, query: "SELECT id, ok FROM t" }
assert: t.ok == 1
---
name: hushed
every: 1h
key: id
datasets:
  u: { source: shop, query: "SELECT id, ok FROM u" }
assert: u.ok == 1
"#;
    let workdir = Workdir::new(&[("shop", &shop.admin_url)], Some(rules));
    let hooks = tempfile::NamedTempFile::new().unwrap();
    let hook = crate::harness::Helper::start("http_recorder.py", &[hooks.path().to_str().unwrap()]);
    let extra = format!(
        "{}{}",
        tokens_file(workdir.path()),
        webhook_alerting(
            hook.port,
            "",
            &["for: 3s", "repeat_interval: 4s", "evaluation_interval: 1h"]
        )
    );
    let (_daemon, port) = workdir
        .spawn_daemon(&extra, std::process::Stdio::null())
        .await;
    let started = std::time::Instant::now();
    // Before `for` has passed on its first run: `hushed` fires under this silence.
    let (status, body) = crate::harness::http_post(
        port,
        "/api/v1/silences",
        Some(TOKEN),
        &serde_json::json!({"matchers": {"rule": "hushed"}, "duration": "6s", "comment": "known"}),
    );
    assert_eq!(status, 201, "{body}");
    let events = |group: &str| -> Vec<String> {
        json_lines(hooks.path())
            .iter()
            .filter(|l| l["body"]["group"] == group)
            .map(|l| l["body"]["event"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    eventually(Duration::from_secs(20), "`late` never repeated", || {
        events("violation/late").len() >= 2
    })
    .await;
    assert_eq!(events("violation/late")[..2], ["firing", "repeat"]);
    eventually(
        Duration::from_secs(20),
        "`hushed` was not announced when its silence ended",
        || !events("violation/hushed").is_empty(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "announced before the silence ended: {:?}",
        started.elapsed()
    );
}
