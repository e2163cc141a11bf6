//! Incremental runs: only changed keys and open ones are judged, on every database and every
//! way it stores a time; and, on random workloads, they agree with a full sweep.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Duration as Delta, Utc};
use invariantd::config::SourceKind::{self, MySql, Postgres, Sqlite};
use invariantd::engine::{run_rule, run_rule_incremental, run_rule_with_open};
use invariantd::sources::Sources;
use invariantd::verdict::{Outcome, RunMode};
use proptest::prelude::*;

use crate::harness::{TestDb, Workdir, keys};

const RULE: &str = r#"
name: paid_implies_reserved
key: id
incremental: { overlap: 1m }
datasets:
  payment: { source: db, query: "SELECT id, amount, updated_at FROM payments", updated_at: updated_at }
  reservation: { source: db, query: "SELECT id, qty, updated_at FROM reservations", updated_at: updated_at }
assert: payment == null || (reservation != null && reservation.qty > 0)
"#;

/// Column types for `updated_at` of each table, per database: every form a time is kept in.
fn time_types(kind: SourceKind) -> (&'static str, &'static str) {
    match kind {
        Postgres => ("TIMESTAMPTZ", "TIMESTAMP"),
        MySql => ("DATETIME(6)", "TIMESTAMP(6) NULL"),
        Sqlite => ("TEXT", "TEXT"),
    }
}

/// A time as each database takes it in an INSERT.
fn at(kind: SourceKind, t: DateTime<Utc>) -> String {
    match kind {
        Postgres => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00")),
        MySql => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f")),
        Sqlite => format!("'{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
    }
}

async fn incremental_judges_changed_and_open_keys(kind: SourceKind) {
    let (pt, rt) = time_types(kind);
    incremental_judges_changed_and_open_keys_in(kind, pt, rt, Delta::hours(2)).await;
}

/// With `updated_at` of types `pt` and `rt`; the old rows changed `age` ago (a `DATE` needs
/// days to tell them from the recent ones).
async fn incremental_judges_changed_and_open_keys_in(
    kind: SourceKind,
    pt: &str,
    rt: &str,
    age: Delta,
) {
    let db = TestDb::new(kind, "incremental").await;
    let now = Utc::now();
    let old = at(kind, now - age);
    let recent = at(kind, now - Delta::minutes(2));
    db.exec(&[
        format!("CREATE TABLE payments (id BIGINT PRIMARY KEY, amount INT, updated_at {pt})"),
        format!("CREATE TABLE reservations (id BIGINT PRIMARY KEY, qty INT, updated_at {rt})"),
        // 1: broken long ago, its violation open; 2: broken long ago, never seen (a full
        // sweep finds it); 3: paid recently, nothing reserved; 4: paid long ago, its
        // reservation emptied recently; 5: fine, changed recently; 6: fine, old.
        format!(
            "INSERT INTO payments VALUES (1, 10, {old}), (2, 10, {old}), (3, 10, {recent}), (4, 10, {old}), (5, 10, {recent}), (6, 10, {old})"
        ),
        format!("INSERT INTO reservations VALUES (4, 0, {recent}), (5, 1, {recent}), (6, 1, {old})"),
    ])
    .await;
    let work = Workdir::new(&[("db", &db.url)], Some(RULE));
    let (config, rules) = work.load();
    let sources = Sources::new(&config.sources, config.secrets.clone());
    let open: HashSet<&str> = ["1"].into();
    let since = now - Delta::minutes(10);
    let run = run_rule_incremental(&rules[0], &sources, now, since, &open).await;
    assert_eq!(run.error, None, "{kind:?}");
    assert_eq!(run.mode, RunMode::Incremental);
    assert_eq!(run.outcome, Outcome::Fail);
    assert_eq!(keys(&run), ["1", "3", "4"], "{kind:?}");
    assert_eq!(run.keys_changed, 3, "{kind:?}: keys 3, 4 and 5 changed");
    assert_eq!(
        run.keys_judged, 4,
        "{kind:?}: the changed keys and the open one"
    );

    // The full sweep sees key 2 as well.
    let full = run_rule(&rules[0], &sources, now).await;
    assert_eq!(full.mode, RunMode::Full);
    assert_eq!(keys(&full), ["1", "2", "3", "4"], "{kind:?}");
}

#[tokio::test]
async fn incremental_runs_judge_changed_and_open_keys_on_postgres() {
    incremental_judges_changed_and_open_keys(Postgres).await;
}

#[tokio::test]
async fn incremental_runs_compare_postgres_dates_and_text_times_with_the_instant() {
    incremental_judges_changed_and_open_keys_in(Postgres, "DATE", "TEXT", Delta::days(3)).await;
}

#[tokio::test]
async fn incremental_runs_judge_changed_and_open_keys_on_mariadb() {
    incremental_judges_changed_and_open_keys(MySql).await;
}

#[tokio::test]
async fn incremental_runs_judge_changed_and_open_keys_on_sqlite() {
    incremental_judges_changed_and_open_keys(Sqlite).await;
}

#[test]
fn incremental_needs_updated_at_on_every_dataset() {
    let rules = r#"
name: r
key: id
incremental: { full_sweep: "0 3 * * *" }
consistent_cut: { lag: 30s }
datasets:
  a: { source: db, query: "SELECT id, updated_at FROM a", updated_at: updated_at }
  b: { source: db, query: "SELECT id FROM b" }
assert: a != null
"#;
    let work = Workdir::new(&[("db", "sqlite://x.db")], Some(rules));
    let out = work.cli(&["validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rules.yaml:4:14: rule `r`: incremental needs `updated_at` on every dataset, to know which rows changed; dataset `b` has none"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "rules.yaml:5:17: rule `r`: consistent_cut needs `updated_at` on every dataset"
        ),
        "{stderr}"
    );
}

/// One step of a random workload on the shop.
#[derive(Debug, Clone)]
enum Step {
    /// A payment captured (or changed) for this key.
    Pay(u8),
    /// The key's reservation set to this quantity (0 is the broken case).
    Reserve(u8, u8),
    /// Time passes (seconds), then an incremental run.
    Run(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..12).prop_map(Step::Pay),
        (0u8..12, 0u8..3).prop_map(|(k, q)| Step::Reserve(k, q)),
        (1u16..400).prop_map(Step::Run),
    ]
}

/// Open violations as the store keeps them, from a run: the run's violations open (or stay),
/// the open keys it judged holding resolve, the ones it did not judge stay.
fn apply(open: &mut BTreeSet<String>, run: &invariantd::verdict::RuleRun) {
    assert!(run.finished, "{:?}", run.error);
    let found: BTreeSet<String> = keys(run).into_iter().collect();
    let held: BTreeSet<&String> = run.unjudged_open.iter().collect();
    open.retain(|k| found.contains(k) || held.contains(k));
    open.extend(found);
}

async fn incremental_agrees_with_full(steps: Vec<Step>, grace: bool) {
    let db = TestDb::new(Sqlite, "agree").await;
    db.exec_str(&[
        "CREATE TABLE payments (id INTEGER PRIMARY KEY, amount INT, updated_at TEXT)",
        "CREATE TABLE reservations (id INTEGER PRIMARY KEY, qty INT, updated_at TEXT)",
    ])
    .await;
    let rules = if grace {
        RULE.replace("key: id", "key: id\ngrace: 90s")
    } else {
        RULE.to_string()
    };
    let work = Workdir::new(&[("db", &db.url)], Some(&rules));
    let (config, rules) = work.load();
    let rule = &rules[0];
    let sources = Sources::new(&config.sources, config.secrets.clone());
    let mut clock = Utc::now() - Delta::days(1);
    let mut open = BTreeSet::new();
    let mut last_run: Option<DateTime<Utc>> = None;
    // The first run is a full sweep, as in the daemon.
    for s in steps.into_iter().chain([Step::Run(1)]) {
        match s {
            Step::Pay(k) => {
                clock += Delta::milliseconds(1500);
                let t = at(Sqlite, clock);
                db.exec(&[format!(
                    "INSERT INTO payments VALUES ({k}, 10, {t}) ON CONFLICT (id) DO UPDATE SET amount = amount + 1, updated_at = {t}"
                )])
                .await;
            }
            Step::Reserve(k, q) => {
                clock += Delta::milliseconds(1500);
                let t = at(Sqlite, clock);
                db.exec(&[format!(
                    "INSERT INTO reservations VALUES ({k}, {q}, {t}) ON CONFLICT (id) DO UPDATE SET qty = {q}, updated_at = {t}"
                )])
                .await;
            }
            Step::Run(seconds) => {
                clock += Delta::seconds(seconds.into());
                let now = clock;
                let open_keys: HashSet<&str> = open.iter().map(String::as_str).collect();
                let run = match last_run {
                    None => run_rule_with_open(rule, &sources, now, &open_keys, None).await,
                    Some(last) => {
                        // As the daemon reaches back: the overlap, and the grace.
                        let since = last - Delta::minutes(1) - Delta::seconds(90);
                        run_rule_incremental(rule, &sources, now, since, &open_keys).await
                    }
                };
                // A full sweep at the same instant, from the same open violations, is the
                // ground truth.
                let full = run_rule_with_open(rule, &sources, now, &open_keys, None).await;
                let mut truth = open.clone();
                apply(&mut truth, &full);
                apply(&mut open, &run);
                last_run = Some(now);
                assert_eq!(
                    open, truth,
                    "incremental runs (open keys) against a full sweep at {now}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Every violation a full sweep finds, the incremental runs since found too, and they
    /// keep open nothing the full sweep would resolve.
    #[test]
    fn incremental_runs_agree_with_full_sweeps(
        steps in proptest::collection::vec(step(), 1..40),
        grace in any::<bool>(),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(incremental_agrees_with_full(steps, grace));
    }
}

/// The modes of the rule's runs, oldest first, from the state store next to the config.
async fn run_modes(work: &Workdir) -> Vec<(String, i64)> {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", work.path().join("invariantd.db").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let modes = sqlx::query_as("SELECT mode, keys_changed FROM runs ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    modes
}

fn open_keys(work: &Workdir) -> Vec<String> {
    let out = work.cli(&["violations", "list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn runs_sweep_first_then_go_on_from_the_store_and_sweep_again_when_due() {
    let db = TestDb::new(Postgres, "sweeps").await;
    db.exec_str(&[
        "CREATE TABLE payments (id BIGINT PRIMARY KEY, amount INT, updated_at TIMESTAMPTZ)",
        "CREATE TABLE reservations (id BIGINT PRIMARY KEY, qty INT, updated_at TIMESTAMPTZ)",
        "INSERT INTO payments VALUES (1, 10, now() - interval '2 hours')",
    ])
    .await;
    let rules = RULE.replace("{ overlap: 1m }", "{ overlap: 1m, full_sweep: 1h }");
    let work = Workdir::new(&[("db", &db.url)], Some(&rules));
    assert_eq!(work.cli(&["run", "--once"]).status.code(), Some(1));
    assert_eq!(run_modes(&work).await, [("full".to_string(), 0)]);
    assert_eq!(open_keys(&work), ["1"]);

    // A new broken payment, and one whose `updated_at` says it did not change: only a full
    // sweep sees that one.
    db.exec_str(&[
        "INSERT INTO payments VALUES (2, 10, now()), (3, 10, now() - interval '2 hours')",
    ])
    .await;
    assert_eq!(work.cli(&["run", "--once"]).status.code(), Some(1));
    assert_eq!(
        run_modes(&work).await[1],
        ("incremental".to_string(), 1),
        "a new process goes on from the store's marks"
    );
    assert_eq!(open_keys(&work), ["1", "2"]);

    // The full sweep is due once its period has passed since the last one.
    let rules = RULE.replace("{ overlap: 1m }", "{ overlap: 1m, full_sweep: 1s }");
    std::fs::write(work.path().join("rules/rules.yaml"), rules).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(work.cli(&["run", "--once"]).status.code(), Some(1));
    assert_eq!(run_modes(&work).await[2].0, "full");
    assert_eq!(open_keys(&work), ["1", "2", "3"]);
}

/// The value of a metric series on a daemon's /metrics, by its exact text before the value.
fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, body) = crate::harness::http(port, "GET", "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_last_full_sweep_is_a_metric_that_incremental_runs_leave_and_a_restart_restores() {
    let db = TestDb::new(Sqlite, "sweep_metric").await;
    db.exec_str(&[
        "CREATE TABLE payments (id INTEGER PRIMARY KEY, amount INT, updated_at TEXT)",
        "CREATE TABLE reservations (id INTEGER PRIMARY KEY, qty INT, updated_at TEXT)",
        "INSERT INTO payments VALUES (1, 10, '2026-01-01T00:00:00Z')",
    ])
    .await;
    let rules = RULE.replace("key: id", "key: id\nevery: 1s");
    let work = Workdir::new(&[("db", &db.url)], Some(&rules));
    let (mut child, port) = work.spawn_daemon("", std::process::Stdio::null()).await;
    let series =
        r#"invariantd_rule_last_full_sweep_timestamp_seconds{rule="paid_implies_reserved"}"#;
    let mut swept = 0.0;
    crate::harness::eventually(
        std::time::Duration::from_secs(20),
        "a full sweep and two incremental runs",
        || {
            swept = metric(port, series).unwrap_or(0.0);
            let (_, runs) =
                crate::harness::http(port, "GET", "/api/v1/runs?rule=paid_implies_reserved");
            swept > 0.0 && runs.matches(r#""mode":"incremental""#).count() >= 2
        },
    )
    .await;
    assert_eq!(
        metric(port, series),
        Some(swept),
        "incremental runs are not sweeps"
    );
    let status =
        crate::harness::terminate_within(&mut child, std::time::Duration::from_secs(15)).await;
    assert!(status.success());

    let mut child = work.respawn(port).await;
    assert_eq!(metric(port, series), Some(swept), "restored from the store");
    crate::harness::terminate_within(&mut child, std::time::Duration::from_secs(15)).await;
}
