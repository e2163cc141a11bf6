//! The violation lifecycle in the state store, on SQLite and on PostgreSQL, driven by real rule
//! runs over a source whose data changes between runs.

use std::str::FromStr;

use chrono::Utc;
use invariantd::config::{ConnectOptions, SourceKind, StateConfig};
use invariantd::engine::run_rule_with_open;
use invariantd::state::{Recorded, StateStore, ViolationFilter, ViolationRecord, ViolationState};
use invariantd::verdict::{Outcome, RuleRun};

use crate::harness::{TestDb, Workdir};

async fn state_store(kind: SourceKind, db: &Option<TestDb>, dir: &std::path::Path) -> StateStore {
    keyed_state_store(kind, db, dir, None).await
}

/// A state store whose audit chain is keyed with the key in `key_file`.
async fn keyed_state_store(
    kind: SourceKind,
    db: &Option<TestDb>,
    dir: &std::path::Path,
    key_file: Option<std::path::PathBuf>,
) -> StateStore {
    let options = match kind {
        SourceKind::Postgres => ConnectOptions::Postgres(
            sqlx::postgres::PgConnectOptions::from_str(&db.as_ref().unwrap().admin_url).unwrap(),
            Default::default(),
        ),
        _ => ConnectOptions::Sqlite(
            sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://")
                .unwrap()
                .filename(dir.join("state.db")),
        ),
    };
    let retention = std::time::Duration::from_secs(3600);
    let store = StateStore::open(&StateConfig {
        options,
        retention,
        audit_key_file: key_file,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap(); // a second time is a no-op
    store
}

const RULE: &str = r#"
name: ok
grace: 5m
key: id
datasets:
  t: { source: shop, query: "SELECT id, ok, updated_at FROM t", updated_at: updated_at }
assert: t == null || t.ok == 1
message: "{{key}} is not ok"
"#;

struct Fixture {
    source: TestDb,
    workdir: Workdir,
    down: Workdir,
    store: StateStore,
    _state_db: Option<TestDb>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(kind: SourceKind) -> Fixture {
        let source = TestDb::new(SourceKind::Sqlite, "lifecycle").await;
        source
            .exec_str(&["CREATE TABLE t (id INTEGER, ok INTEGER, updated_at TEXT)"])
            .await;
        let workdir = Workdir::new(&[("shop", &source.url)], Some(RULE));
        let down = Workdir::new(
            &[("shop", "sqlite:///nonexistent/invariantd-test.db")],
            Some(RULE),
        );
        let state_db = match kind {
            SourceKind::Postgres => Some(TestDb::new(SourceKind::Postgres, "state").await),
            _ => None,
        };
        let dir = tempfile::tempdir().unwrap();
        let store = state_store(kind, &state_db, dir.path()).await;
        Fixture {
            source,
            workdir,
            down,
            store,
            _state_db: state_db,
            _dir: dir,
        }
    }

    /// A statement on the state store's database, as someone editing it by hand would.
    async fn by_hand(&self, sql: &str) {
        match &self._state_db {
            Some(db) => db.exec_str(&[sql]).await,
            None => {
                use sqlx::Connection;
                let path = self._dir.path().join("state.db");
                let mut c =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }

    async fn set(&self, id: i64, ok: i64, minutes_ago: i64) {
        let at = (Utc::now() - chrono::Duration::minutes(minutes_ago)).to_rfc3339();
        self.source
            .exec(&[
                format!("DELETE FROM t WHERE id = {id}"),
                format!("INSERT INTO t VALUES ({id}, {ok}, '{at}')"),
            ])
            .await;
    }

    async fn cycle_with(&self, workdir: &Workdir) -> (RuleRun, Recorded) {
        let (config, rules) = workdir.load();
        let sources = invariantd::sources::Sources::new(&config.sources, config.secrets.clone());
        let open = self.store.open_violations("ok").await.unwrap();
        let keys = invariantd::state::keys_of(&open);
        let run = run_rule_with_open(&rules[0], &sources, Utc::now(), &keys, None).await;
        let recorded = self.store.record(&run, &open, None).await.unwrap();
        (run, recorded)
    }

    async fn cycle(&self) -> Recorded {
        let (run, recorded) = self.cycle_with(&self.workdir).await;
        assert_ne!(run.outcome, Outcome::Unknown, "{:?}", run.error);
        recorded
    }

    async fn all(&self) -> Vec<ViolationRecord> {
        self.store
            .violations(&ViolationFilter {
                rules: None,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
    }
}

fn rec(opened: u64, seen_again: u64, resolved: u64) -> (u64, u64, u64) {
    (opened, seen_again, resolved)
}

fn counts(r: Recorded) -> (u64, u64, u64) {
    (r.opened, r.seen_again, r.resolved)
}

async fn lifecycle(kind: SourceKind) {
    let f = Fixture::new(kind).await;
    f.set(1, 0, 60).await;
    f.set(2, 0, 60).await;
    f.set(3, 1, 60).await;

    // Open.
    assert_eq!(counts(f.cycle().await), rec(2, 0, 0));
    // Seen again.
    assert_eq!(counts(f.cycle().await), rec(0, 2, 0));
    let v = f.all().await;
    assert_eq!(
        v.iter()
            .map(|v| (v.key.as_str(), v.state.as_str(), v.occurrences))
            .collect::<Vec<_>>(),
        [("1", "open", 2), ("2", "open", 2)]
    );
    assert_eq!(v[0].message, "1 is not ok");
    assert_eq!(v[0].datasets["t"]["ok"], 0);
    assert!(v[0].last_seen_us > v[0].first_seen_us);

    // Resolve: key 1 holds again.
    f.set(1, 1, 60).await;
    assert_eq!(counts(f.cycle().await), rec(0, 1, 1));
    let first_id = f.all().await[0].id;

    // Reopen: a new row, linked to the resolved one.
    f.set(1, 0, 60).await;
    assert_eq!(counts(f.cycle().await), rec(1, 1, 0));
    let v = f.all().await;
    assert_eq!(v.len(), 3);
    let reopened = v
        .iter()
        .find(|v| v.key == "1" && v.state == ViolationState::Open)
        .unwrap();
    assert_eq!(reopened.previous_id, Some(first_id));
    assert_eq!(reopened.occurrences, 1);
    let resolved = v.iter().find(|v| v.id == first_id).unwrap();
    assert_eq!(resolved.state, ViolationState::Resolved);
    assert!(resolved.resolved_us.is_some());

    // Unknown changes nothing.
    let before = f.all().await;
    let (run, recorded) = f.cycle_with(&f.down).await;
    assert_eq!(run.outcome, Outcome::Unknown);
    assert_eq!(counts(recorded), rec(0, 0, 0));
    assert_eq!(f.all().await, before);

    // A key changed within grace is not judged: its open violation stays open, untouched.
    f.set(2, 1, 1).await;
    assert_eq!(counts(f.cycle().await), rec(0, 1, 0));
    let two = f
        .all()
        .await
        .into_iter()
        .find(|v| v.key == "2" && v.state == ViolationState::Open)
        .unwrap();
    assert_eq!(two.occurrences, 4);

    // A key gone from every dataset violates nothing: resolved.
    f.source.exec_str(&["DELETE FROM t WHERE id = 2"]).await;
    assert_eq!(counts(f.cycle().await), rec(0, 1, 1));

    // Filters and cursor.
    let open = f
        .store
        .violations(&ViolationFilter {
            rules: None,
            state: Some(ViolationState::Open),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        open.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(),
        ["1"]
    );
    let page = f
        .store
        .violations(&ViolationFilter {
            rules: None,
            rule: Some("ok".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let next = f
        .store
        .violations(&ViolationFilter {
            rules: None,
            rule: Some("ok".into()),
            limit: 10,
            after_id: Some(page[0].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 2);

    // Counters add up across runs.
    let totals = f.store.totals().await.unwrap();
    let t = &totals["ok"];
    assert_eq!(
        (
            t.detected,
            t.resolved,
            t.runs.get(&Outcome::Unknown).copied()
        ),
        (3, 2, Some(1))
    );
    assert_eq!(t.runs.get(&Outcome::Fail).copied(), Some(6));

    // Pruning keeps open violations and removes old resolved ones.
    let deleted = f
        .store
        .prune(Utc::now().timestamp_micros() + 1)
        .await
        .unwrap()
        .rows;
    assert!(deleted >= 2, "{deleted}");
    let left = f.all().await;
    assert_eq!(
        left.iter()
            .map(|v| (v.key.as_str(), v.state.as_str()))
            .collect::<Vec<_>>(),
        [("1", "open")]
    );
    assert_eq!(left[0].previous_id, None);
}

#[tokio::test]
async fn violations_open_recur_resolve_and_reopen_in_a_sqlite_state_store() {
    lifecycle(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn violations_open_recur_resolve_and_reopen_in_a_postgres_state_store() {
    lifecycle(SourceKind::Postgres).await;
}

/// A repair whose check after acting finds the key holding resolves its violation at once, in
/// the same transaction, by name; a run that was already reading when it did neither reopens
/// nor resolves it again, and a later one judges the key afresh.
/// What is open per rule, as `store` says (from what it remembers, if it is the sole writer).
async fn open_now(store: &StateStore) -> Vec<(String, i64, Option<i64>)> {
    let mut open: Vec<_> = store
        .open_summaries()
        .await
        .unwrap()
        .into_iter()
        .map(|(rule, s)| (rule, s.open, s.oldest_first_seen_us))
        .collect();
    open.sort();
    open
}

async fn a_repair_resolves_its_violation(kind: SourceKind) {
    use invariantd::state::{Decision, NewRepair, RepairEnd, RepairState};
    let f = Fixture::new(kind).await;
    // This store remembers what is open between reads, as a daemon alone does; `fresh` asks
    // the same database every time: the two agree at every step, whoever wrote.
    f.store.set_sole_writer(true);
    let fresh = state_store(kind, &f._state_db, f._dir.path()).await;
    assert_eq!(open_now(&f.store).await, []);
    f.set(1, 0, 60).await;
    f.set(2, 0, 60).await;
    assert_eq!(counts(f.cycle().await), rec(2, 0, 0));
    assert_eq!(open_now(&f.store).await, open_now(&fresh).await);
    assert_eq!(open_now(&f.store).await[0].1, 2);
    let one = f.all().await.into_iter().find(|v| v.key == "1").unwrap();
    let planned = f
        .store
        .plan_repairs(
            "ok",
            &[NewRepair {
                key: "1".into(),
                occurrence_us: one.first_seen_us,
                state: RepairState::Pending,
                mode: "approve".into(),
                action: "fix".into(),
                actions: Vec::new(),
                idempotency_key: "idem-1".into(),
                hold_reason: None,
                held_by: None,
            }],
            10,
        )
        .await
        .unwrap();
    let decision = Decision {
        by: "ops".into(),
        approve: true,
        action: None,
        comment: None,
        four_eyes: false,
    };
    f.store
        .decide(planned[0], &decision, 20)
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now().timestamp_micros();
    let claimed = f
        .store
        .claim_repairs("w", (now, now + 60_000_000), 1, &[], None)
        .await
        .unwrap();

    // A run starts reading while the key is still broken...
    let (config, rules) = f.workdir.load();
    let sources = invariantd::sources::Sources::new(&config.sources, config.secrets.clone());
    let open = f.store.open_violations("ok").await.unwrap();
    let in_flight = run_rule_with_open(
        &rules[0],
        &sources,
        Utc::now(),
        &invariantd::state::keys_of(&open),
        None,
    )
    .await;
    assert_eq!(in_flight.violations.len(), 2);

    // ...then the repair fixes it (changing it now, within the rule's grace) and ends.
    f.set(1, 1, 0).await;
    let end = RepairEnd::Repaired("1 row changed; the invariant holds now".into());
    let written = f
        .store
        .end_attempt(&claimed[0], &end, Utc::now().timestamp_micros())
        .await
        .unwrap()
        .expect("the fence is the claim's");
    assert!(written.resolved_after.is_some());
    let v = f.all().await.into_iter().find(|v| v.id == one.id).unwrap();
    assert_eq!(v.state, ViolationState::Resolved);
    assert_eq!(v.resolved_by, Some(format!("repair #{}", planned[0])));
    let totals = f.store.totals().await.unwrap();
    assert_eq!((totals["ok"].detected, totals["ok"].resolved), (2, 1));
    assert_eq!(f.store.rule_snapshot("ok").await.unwrap().open, 1);
    assert_eq!(
        open_now(&f.store).await,
        open_now(&fresh).await,
        "after the repair"
    );

    // The run that read before the repair: key 2 seen again, key 1 left as the repair left it.
    assert_eq!(
        counts(f.store.record(&in_flight, &open, None).await.unwrap()),
        rec(0, 1, 0)
    );
    let ones: Vec<ViolationRecord> = f.all().await.into_iter().filter(|v| v.key == "1").collect();
    assert_eq!(ones.len(), 1, "not reopened: {ones:?}");
    assert_eq!(ones[0].state, ViolationState::Resolved);
    assert_eq!(ones[0].resolved_by, Some(format!("repair #{}", planned[0])));
    assert_eq!(
        f.store.totals().await.unwrap()["ok"].resolved,
        1,
        "counted once"
    );

    // The next run finds the key within its grace: nothing to judge, nothing opened.
    assert_eq!(counts(f.cycle().await), rec(0, 1, 0));
    // Broken again later: a new violation, linked to the repaired one.
    f.set(1, 0, 60).await;
    assert_eq!(counts(f.cycle().await), rec(1, 1, 0));
    let reopened = f
        .all()
        .await
        .into_iter()
        .find(|v| v.key == "1" && v.state == ViolationState::Open)
        .unwrap();
    assert_eq!(reopened.previous_id, Some(one.id));
    assert_eq!(reopened.resolved_by, None);
    assert_eq!(open_now(&f.store).await, open_now(&fresh).await, "reopened");
    assert_eq!(open_now(&f.store).await[0].1, 2);
    // Fixed by hand in the database, behind the sole writer's back: it shows once the store
    // no longer counts on being the only writer.
    f.by_hand("UPDATE violations SET state = 'resolved', resolved_us = 1 WHERE key = '2'")
        .await;
    assert_eq!(open_now(&f.store).await[0].1, 2, "remembered");
    f.store.set_sole_writer(false);
    assert_eq!(open_now(&f.store).await, open_now(&fresh).await);
    assert_eq!(open_now(&f.store).await[0].1, 1);
}

#[tokio::test]
async fn a_repair_resolves_its_violation_on_sqlite() {
    a_repair_resolves_its_violation(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn a_repair_resolves_its_violation_on_postgres() {
    a_repair_resolves_its_violation(SourceKind::Postgres).await;
}

async fn many(kind: SourceKind) {
    let f = Fixture::new(kind).await;
    let at = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    f.source
        .exec(&[format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) INSERT INTO t SELECT i, 0, '{at}' FROM n"
        )])
        .await;
    assert_eq!(counts(f.cycle().await), rec(5000, 0, 0));
    f.source
        .exec_str(&["UPDATE t SET ok = 1 WHERE id % 2 = 0"])
        .await;
    assert_eq!(counts(f.cycle().await), rec(0, 2500, 2500));
    let open = f.store.open_keys("ok").await.unwrap();
    assert_eq!(open.len(), 2500);
    assert!(open.contains("4999") && !open.contains("5000"));
    // The open violations of many (rule, key) pairs at once, in more than one statement:
    // only those that are open.
    let mut pairs: Vec<(String, String)> =
        (1..=900).map(|i| ("ok".into(), i.to_string())).collect();
    pairs.push(("elsewhere".into(), "1".into()));
    let found = f.store.open_violations_of(&pairs).await.unwrap();
    assert_eq!(found.len(), 450);
    let one = &found[&("ok".to_string(), "899".to_string())];
    assert_eq!((one.key.as_str(), one.state), ("899", ViolationState::Open));
    assert!(!found.contains_key(&("ok".to_string(), "900".to_string())));

    // A big recording is written in parts (see `state::parts`), each with its counters.
    f.source.exec_str(&["UPDATE t SET ok = 0"]).await;
    assert_eq!(counts(f.cycle().await), rec(2500, 2500, 0));
    // Each part counted what it changed: the counters agree with the rows.
    let totals = f.store.totals().await.unwrap();
    assert_eq!(totals["ok"].detected, 7500);
    assert_eq!(totals["ok"].resolved, 2500);
}

#[tokio::test]
async fn a_run_with_thousands_of_violations_is_recorded_in_batches_on_sqlite() {
    many(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn a_run_with_thousands_of_violations_is_recorded_in_batches_on_postgres() {
    many(SourceKind::Postgres).await;
}

/// The alerting tables and money at risk, on either store: what the evaluator and delivery
/// rely on — outbox order, no duplicates, retries, silences, impact sums, the last runs.
async fn alert_bookkeeping(kind: SourceKind) {
    use invariantd::state::{AlertGroupState, NewSilence, OutboxEntry};
    let f = Fixture::new(kind).await;
    let with_impact = Workdir::new(
        &[("shop", &f.source.url)],
        Some(&format!(
            "{RULE}impact: {{ value: t.id * 0.10, unit: eur }}\n"
        )),
    );
    f.set(1, 0, 10).await;
    f.set(2, 0, 10).await;
    let (_, recorded) = f.cycle_with(&with_impact).await;
    assert_eq!(recorded.opened, 2);
    let snapshot = f.store.rule_snapshot("ok").await.unwrap();
    // Summed exactly: 0.10 + 0.20 is 0.30, which no double is.
    let exact = |s: &str| Some(s.parse::<rust_decimal::Decimal>().unwrap());
    assert_eq!(snapshot.impact, exact("0.30"));
    let mut impacts: Vec<Option<String>> = f.all().await.into_iter().map(|v| v.impact).collect();
    impacts.sort();
    assert_eq!(impacts, [Some("0.1".to_string()), Some("0.2".to_string())]);
    let open = f.store.open_summaries().await.unwrap();
    assert_eq!((open["ok"].open, open["ok"].impact), (2, exact("0.30")));
    // An impact that is not a decimal (written by hand) is counted open but left out of the
    // sum, which PostgreSQL takes in SQL and SQLite here; a negative one is summed.
    f.by_hand(
        "INSERT INTO violations (rule, key, state, message, datasets, impact, first_seen_us, \
         last_seen_us, occurrences) VALUES ('ok', '98', 'open', 'm', '{}', 'lots', 1, 1, 1), \
         ('ok', '99', 'open', 'm', '{}', '-0.05', 1, 1, 1), ('ok', '97', 'open', 'm', '{}', NULL, 1, 1, 1)",
    )
    .await;
    let open = f.store.open_summaries().await.unwrap();
    assert_eq!((open["ok"].open, open["ok"].impact), (5, exact("0.25")));
    let snapshot = f.store.rule_snapshot("ok").await.unwrap();
    assert_eq!((snapshot.open, snapshot.impact), (5, exact("0.25")));
    f.by_hand("DELETE FROM violations WHERE key IN ('97', '98', '99')")
        .await;
    assert!(f.store.last_success("ok").await.unwrap().is_some());
    assert_eq!(f.store.last_success("other").await.unwrap(), None);

    let now = Utc::now().timestamp_micros();
    let group = AlertGroupState {
        group_key: "violation/ok".into(),
        firing: true,
        started_us: Some(now),
        last_sent_us: Some(now),
        sent_count: 2,
        sequence: 1,
        ..Default::default()
    };
    let entry = |id: &str, receiver: &str| OutboxEntry {
        message_id: id.into(),
        receiver: receiver.into(),
        notification: format!("{{\"id\": \"{id}\"}}"),
    };
    let entries = [
        entry("m1", "mail"),
        entry("m1", "hook"),
        entry("m2", "mail"),
    ];
    f.store
        .save_alert_group(&group, &entries, now, None)
        .await
        .unwrap();
    // Saving the same notifications again (a retried evaluation) queues nothing twice.
    f.store
        .save_alert_group(&group, &entries, now, None)
        .await
        .unwrap();
    let groups = f.store.alert_groups().await.unwrap();
    assert_eq!(groups["violation/ok"], group);
    assert_eq!(f.store.undelivered().await.unwrap()["mail"], 2);

    let first = f.store.next_notification("mail").await.unwrap().unwrap();
    assert_eq!(first.message_id, "m1");
    f.store
        .notification_failed(first.id, now + 5_000_000, "connection refused")
        .await
        .unwrap();
    // A failure keeps the order: the same one is next, with its attempt counted.
    let again = f.store.next_notification("mail").await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (first.id, 1));
    assert_eq!(again.next_attempt_us, now + 5_000_000);
    f.store.notification_sent(first.id, now - 1).await.unwrap();
    let second = f.store.next_notification("mail").await.unwrap().unwrap();
    assert_eq!(second.message_id, "m2");
    // Delivered notifications go with the retention; undelivered ones stay until they are
    // older than it too.
    f.store.prune(now).await.unwrap();
    assert_eq!(f.store.undelivered().await.unwrap()["mail"], 1);
    assert_eq!(f.store.undelivered().await.unwrap()["hook"], 1);
    assert!(f.store.next_notification("mail").await.unwrap().is_some());
    let deleted = f.store.prune(now).await.unwrap().rows;
    assert_eq!(deleted, 0, "the delivered one went at the first prune");
    f.store.prune(now + 1).await.unwrap();
    assert!(f.store.undelivered().await.unwrap().is_empty());

    let added = f
        .store
        .add_silence(
            &NewSilence {
                matchers: [("rule".to_string(), "ok".to_string())].into(),
                key: Some("1".into()),
                comment: "refunded by hand".into(),
                created_by: "ops".into(),
                ends_us: now + 3_600_000_000,
            },
            now,
        )
        .await
        .unwrap();
    let id = added.id;
    let active = f.store.silences(false, now).await.unwrap();
    assert_eq!(active, [added]);
    assert_eq!(active[0].key.as_deref(), Some("1"));
    assert!(
        f.store
            .silences(false, now + 3_600_000_001)
            .await
            .unwrap()
            .is_empty()
    );
    let expired = f
        .store
        .expire_silence(id, "ops", now + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expired.expired_us, Some(now + 1));
    // Expiring again changes nothing; an unknown id is none.
    let again = f
        .store
        .expire_silence(id, "someone", now + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.expired_by.as_deref(), Some("ops"));
    assert!(
        f.store
            .expire_silence(9999, "ops", now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(f.store.silences(false, now + 2).await.unwrap().is_empty());
    assert_eq!(f.store.silences(true, now + 2).await.unwrap().len(), 1);
}

#[tokio::test]
async fn alert_bookkeeping_on_sqlite() {
    alert_bookkeeping(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn alert_bookkeeping_on_postgres() {
    alert_bookkeeping(SourceKind::Postgres).await;
}

/// The audit log's chain on either store, keyed: whole after appends, and broken — at the
/// right entry — by each way of laundering it: an edit, a deletion, a row inserted by hand, an
/// entry rewritten without the key, the whole chain rewritten without it (found with the head
/// kept elsewhere), and an emptied log where repairs exist.
async fn audit_chain(kind: SourceKind) {
    use invariantd::state::{AuditEntry, Verification};
    let state_db = match kind {
        SourceKind::Postgres => Some(TestDb::new(SourceKind::Postgres, "audit").await),
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("audit.key");
    std::fs::write(&key_file, "0123456789abcdef0123456789abcdef-secret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let store = keyed_state_store(kind, &state_db, dir.path(), Some(key_file.clone())).await;
    let entry = |i: usize| AuditEntry {
        actor: "ops".into(),
        action: "silence.add".into(),
        subject: format!("silence/{i}"),
        details: serde_json::json!({ "comment": format!("number {i}\nwith a newline") }),
    };
    assert_eq!(
        store.verify_audit(None).await.unwrap(),
        Verification::Intact {
            entries: 0,
            checked: 0,
            head: None,
            unkeyed: 0
        }
    );
    for i in 1..=5 {
        store.audit(&entry(i), 1_000 + i as i64).await.unwrap();
    }
    let Verification::Intact {
        entries: 5,
        checked: 5,
        head: Some(head),
        unkeyed: 0,
    } = store.verify_audit(None).await.unwrap()
    else {
        panic!("not intact")
    };
    assert!(head.starts_with("hmac-sha256:"), "{head}");
    assert_eq!(store.audit_head().await.unwrap(), (5, Some(head.clone())));
    assert!(matches!(
        store.verify_audit(Some(&head[12..30])).await.unwrap(),
        Verification::Intact { entries: 5, .. }
    ));
    let listed = store.audit_entries(None, 10).await.unwrap();
    assert_eq!(listed[0].subject, "silence/5");
    assert_eq!(listed[0].hash.as_deref(), Some(head.as_str()));
    // The mark alone is not a head: it would match every keyed hash.
    assert!(matches!(
        store.verify_audit(Some("hmac-sha256:")).await.unwrap(),
        Verification::Broken { at: 0, .. }
    ));
    // From a head kept earlier: only what came after it is read.
    let kept = |seq: i64| {
        listed
            .iter()
            .find(|r| r.seal_seq == Some(seq))
            .and_then(|r| r.hash.clone())
            .unwrap()
    };
    assert_eq!(
        store.verify_audit_since(2, &kept(2)).await.unwrap(),
        Verification::Intact {
            entries: 5,
            checked: 3,
            head: Some(head.clone()),
            unkeyed: 0
        }
    );
    assert!(matches!(
        store.verify_audit_since(5, &head[12..30]).await.unwrap(),
        Verification::Intact {
            entries: 5,
            checked: 0,
            ..
        }
    ));
    assert_eq!(
        store.verify_audit_since(2, &head).await.unwrap(),
        Verification::Broken {
            at: 2,
            reason: "entry 2 is not the head you kept (its hash differs): the log was rewritten"
                .into()
        }
    );
    assert_eq!(
        store.verify_audit_since(2, "hmac-sha256:").await.unwrap(),
        Verification::Broken {
            at: 2,
            reason: "entry 2 is not the head you kept (its hash differs): the log was rewritten"
                .into()
        }
    );
    assert_eq!(
        store.verify_audit_since(9, &kept(2)).await.unwrap(),
        Verification::Broken {
            at: 9,
            reason: "entry 9, the head you kept, is not in the chain: the log was cut short or rewritten".into()
        }
    );

    let url = match kind {
        SourceKind::Postgres => state_db.as_ref().unwrap().admin_url.clone(),
        _ => format!("sqlite://{}", dir.path().join("state.db").display()),
    };
    let tamper = |sql: &'static str| {
        let url = url.clone();
        async move {
            if url.starts_with("postgres") {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            } else {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    };
    // Edited: the entry no longer matches its hash.
    tamper("UPDATE audit_log SET actor = 'someone else' WHERE seal_seq = 3").await;
    assert_eq!(
        store.verify_audit(None).await.unwrap(),
        Verification::Broken {
            at: 3,
            reason: "entry 3 does not match its hash (edited)".into()
        }
    );
    let edited = |at: i64| Verification::Broken {
        at,
        reason: format!("entry {at} does not match its hash (edited)"),
    };
    assert_eq!(
        store.verify_audit_since(2, &kept(2)).await.unwrap(),
        edited(3)
    );
    assert_eq!(
        store.verify_audit_since(3, &kept(3)).await.unwrap(),
        edited(3)
    );
    // An entry before the kept head is the whole verify's to find.
    assert!(matches!(
        store.verify_audit_since(4, &kept(4)).await.unwrap(),
        Verification::Intact { checked: 1, .. }
    ));
    tamper("UPDATE audit_log SET actor = 'ops' WHERE seal_seq = 3").await;
    assert!(matches!(
        store.verify_audit(None).await.unwrap(),
        Verification::Intact { entries: 5, .. }
    ));
    // A row inserted by hand, backdated: the daemon's next entry does not seal it, and verify
    // names it.
    tamper("INSERT INTO audit_log (at_us, actor, action, subject, details) VALUES (1, 'ops', 'repair.approved', 'repair/9', '{}')").await;
    store.audit(&entry(6), 2_000).await.unwrap();
    let Verification::Broken { at: 0, reason } = store.verify_audit(None).await.unwrap() else {
        panic!("a hand-made row passed");
    };
    assert!(
        reason.contains("is not sealed: invariantd did not write it"),
        "{reason}"
    );
    tamper("DELETE FROM audit_log WHERE seal_seq IS NULL").await;
    // The newest entry rewritten by someone without the key: they can only hash it unkeyed.
    let unkeyed = keyed_state_store(kind, &state_db, dir.path(), None).await;
    tamper("DELETE FROM audit_log WHERE seal_seq = 6").await;
    unkeyed.audit(&entry(66), 2_000).await.unwrap();
    assert_eq!(
        store.verify_audit(None).await.unwrap(),
        Verification::Broken {
            at: 6,
            reason:
                "entry 6 is not keyed though the entries before it are: rewritten without the key"
                    .into()
        }
    );
    assert_eq!(
        store.verify_audit_since(5, &head).await.unwrap(),
        Verification::Broken {
            at: 6,
            reason:
                "entry 6 is not keyed though the entries before it are: rewritten without the key"
                    .into()
        }
    );
    // The whole chain rewritten without the key: whole, all unkeyed, and the head kept
    // elsewhere is not in it.
    tamper("DELETE FROM audit_log").await;
    for i in 1..=5 {
        unkeyed.audit(&entry(i), 1_000 + i as i64).await.unwrap();
    }
    assert!(matches!(
        store.verify_audit(None).await.unwrap(),
        Verification::Intact {
            entries: 5,
            unkeyed: 5,
            ..
        }
    ));
    let Verification::Broken { at: 0, reason } = store.verify_audit(Some(&head)).await.unwrap()
    else {
        panic!("a rewritten chain reached the kept head");
    };
    assert!(
        reason.contains("the head you kept is not in the chain"),
        "{reason}"
    );
    assert!(matches!(
        store.verify_audit_since(2, &kept(2)).await.unwrap(),
        Verification::Broken { at: 2, .. }
    ));
    // Deleted: a gap.
    tamper("DELETE FROM audit_log WHERE seal_seq = 2").await;
    assert_eq!(
        store.verify_audit(None).await.unwrap(),
        Verification::Broken {
            at: 2,
            reason: "entry 2 is missing: the chain goes on at 3 (deleted)".into()
        }
    );
    // Emptied, where a repair exists: its entries are missing.
    let planned = invariantd::state::NewRepair {
        key: "1".into(),
        occurrence_us: 1,
        state: invariantd::state::RepairState::Pending,
        mode: "approve".into(),
        action: "a".into(),
        actions: Vec::new(),
        idempotency_key: "k".into(),
        hold_reason: None,
        held_by: None,
    };
    store
        .plan_repairs("r", std::slice::from_ref(&planned), 3_000)
        .await
        .unwrap();
    tamper("DELETE FROM audit_log").await;
    let Verification::Broken { at: 0, reason } = store.verify_audit(None).await.unwrap() else {
        panic!("an emptied log passed");
    };
    assert!(
        reason.contains("has no entry in the log: entries were deleted (0 entries left)"),
        "{reason}"
    );
    // From a kept head: a repair planned after it whose entries were cut off the end.
    tamper("DELETE FROM repairs").await;
    for i in 1..=3 {
        store.audit(&entry(i), 4_000 + i as i64).await.unwrap();
    }
    let (3, Some(third)) = store.audit_head().await.unwrap() else {
        panic!("not three entries");
    };
    store.plan_repairs("r", &[planned], 5_000).await.unwrap();
    assert!(matches!(
        store.verify_audit_since(3, &third).await.unwrap(),
        Verification::Intact {
            entries: 4,
            checked: 1,
            ..
        }
    ));
    tamper("DELETE FROM audit_log WHERE seal_seq = 4").await;
    let Verification::Broken { at: 0, reason } = store.verify_audit_since(3, &third).await.unwrap()
    else {
        panic!("a repair planned after the kept head lost its entries unnoticed");
    };
    assert!(
        reason.contains("has no entry in the log: entries were deleted (3 entries left)"),
        "{reason}"
    );
    // A key that cannot be used writes nothing, and says why.
    std::fs::write(&key_file, "short").unwrap();
    let bad = keyed_state_store(kind, &state_db, dir.path(), Some(key_file)).await;
    let e = bad.audit(&entry(7), 4_000).await.unwrap_err().to_string();
    assert!(e.contains("needs at least 32"), "{e}");
}

#[tokio::test]
async fn the_audit_chain_finds_edits_and_deletions_on_sqlite() {
    audit_chain(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn the_audit_chain_finds_edits_and_deletions_on_postgres() {
    audit_chain(SourceKind::Postgres).await;
}

/// Repairs in the store: planned once per occurrence, claimed once while leased, taken over
/// after the lease with a new fence, and a stale fence's result refused.
async fn repair_claims(kind: SourceKind) {
    use invariantd::state::{Decision, NewRepair, RepairEnd, RepairFilter, RepairState};
    let state_db = match kind {
        SourceKind::Postgres => Some(TestDb::new(SourceKind::Postgres, "claims").await),
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = state_store(kind, &state_db, dir.path()).await;
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
    let planned = store
        .plan_repairs("r", &[new("1"), new("2")], 10)
        .await
        .unwrap();
    assert_eq!(planned.len(), 2);
    // Planning the same occurrences again adds nothing.
    assert!(
        store
            .plan_repairs("r", &[new("1"), new("2")], 20)
            .await
            .unwrap()
            .is_empty()
    );
    let approve = Decision {
        by: "ops".into(),
        approve: true,
        action: None,
        comment: None,
        four_eyes: false,
    };
    for id in &planned {
        store.decide(*id, &approve, 30).await.unwrap().unwrap();
    }
    // Worker A takes both; worker B finds nothing while A's leases run.
    let a = store
        .claim_repairs("a", (100, 1_000), 10, &[], None)
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    assert!(a.iter().all(|c| c.fence == 1 && !c.interrupted));
    assert!(
        store
            .claim_repairs("b", (500, 1_500), 10, &[], None)
            .await
            .unwrap()
            .is_empty()
    );
    // A stalls past its leases: B takes them over, with a new fence, and knows an attempt was
    // interrupted.
    let b = store
        .claim_repairs("b", (2_000, 3_000), 10, &[], None)
        .await
        .unwrap();
    assert_eq!(b.len(), 2);
    assert!(b.iter().all(|c| c.fence == 2 && c.interrupted));
    // A wakes up: its result is refused; B's stands.
    let done = RepairEnd::Final(RepairState::Applied, "done".into());
    assert!(
        store
            .end_attempt(&a[0], &done, 2_100)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .end_attempt(&b[0], &done, 2_200)
            .await
            .unwrap()
            .is_some()
    );
    // B could not check the key (its source down): it did not act, so the repair stays
    // marked interrupted for whoever takes it next.
    let retry = RepairEnd::Retry {
        at_us: 10_000,
        error: "busy".into(),
        acted: false,
    };
    assert!(
        store
            .end_attempt(&b[1], &retry, 2_300)
            .await
            .unwrap()
            .is_some()
    );
    // Not due before its time, then due again.
    assert!(
        store
            .claim_repairs("c", (5_000, 6_000), 10, &[], None)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_repairs("c", (10_000, 11_000), 10, &[], None)
        .await
        .unwrap();
    assert_eq!(
        (again.len(), again[0].fence, again[0].interrupted),
        (1, 3, true)
    );
    // Once an attempt acted, the mark is gone.
    let acted = RepairEnd::Retry {
        at_us: 20_000,
        error: "503".into(),
        acted: true,
    };
    assert!(
        store
            .end_attempt(&again[0], &acted, 10_500)
            .await
            .unwrap()
            .is_some()
    );
    let last = store
        .claim_repairs("c", (20_000, 21_000), 10, &[], None)
        .await
        .unwrap();
    assert_eq!(
        (last.len(), last[0].fence, last[0].interrupted),
        (1, 4, false)
    );
    let applied = store
        .repairs(&RepairFilter {
            rules: None,
            state: Some(RepairState::Applied),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].result.as_deref(), Some("done"));
    // The audit log has every transition, in one whole chain.
    let actions: Vec<String> = store
        .audit_entries(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .rev()
        .collect();
    assert_eq!(
        actions,
        [
            "repair.planned",
            "repair.planned",
            "repair.approved",
            "repair.approved",
            "repair.applied",
            "repair.retry",
            "repair.retry"
        ]
    );
    assert!(matches!(
        store.verify_audit(None).await.unwrap(),
        invariantd::state::Verification::Intact { entries: 7, .. }
    ));
}

#[tokio::test]
async fn repairs_are_claimed_once_and_a_stale_fence_is_refused_on_sqlite() {
    repair_claims(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn repairs_are_claimed_once_and_a_stale_fence_is_refused_on_postgres() {
    repair_claims(SourceKind::Postgres).await;
}

/// Enabling a rule's automatic repairs: under four eyes it takes two different people asking
/// for the same version, and it never approves more repairs at once than the rule's cap — the
/// 300 repairs an older daemon left waiting for enabling are held for a person instead.
async fn enabling(kind: SourceKind) {
    use invariantd::state::{
        EnableRequest, Enabling, Hold, NewRepair, Refusal, RepairFilter, RepairState,
    };
    let state_db = match kind {
        SourceKind::Postgres => Some(TestDb::new(SourceKind::Postgres, "enabling").await),
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = state_store(kind, &state_db, dir.path()).await;
    let waiting = |rule: &str, n: usize| -> Vec<NewRepair> {
        (0..n)
            .map(|k| NewRepair {
                key: k.to_string(),
                occurrence_us: 1_000,
                state: RepairState::DryRun,
                mode: "auto".into(),
                action: "reserve".into(),
                actions: Vec::new(),
                idempotency_key: format!("idem-{rule}-{k}"),
                hold_reason: Some("not enabled".into()),
                held_by: Some(Hold::NotEnabled),
            })
            .collect()
    };
    store
        .plan_repairs("many", &waiting("many", 300), 10)
        .await
        .unwrap();
    store
        .plan_repairs("few", &waiting("few", 3), 10)
        .await
        .unwrap();
    let request = |rule: &'static str, by: &'static str, fingerprint: &'static str| EnableRequest {
        rule,
        fingerprint,
        by,
        four_eyes: true,
        max_auto_per_run: 5,
    };
    let in_state = |rule: &str, state: RepairState| {
        let store = &store;
        let rule = rule.to_string();
        async move {
            store
                .repairs(&RepairFilter {
                    rules: None,
                    state: Some(state),
                    rule: Some(rule),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };

    // One person: recorded, nothing enabled or approved; the same person again is refused.
    let first = store
        .enable_repairs(&request("few", "ops", "v1"), 20)
        .await
        .unwrap();
    assert_eq!(first, Ok(Enabling::Requested { reset: None }));
    assert_eq!(store.enabled_fingerprint("few").await.unwrap(), None);
    assert_eq!(in_state("few", RepairState::DryRun).await.len(), 3);
    let again = store
        .enable_repairs(&request("few", "ops", "v1"), 21)
        .await
        .unwrap();
    assert_eq!(again, Err(Refusal::SelfApproval));
    // A second person asking for another version starts over.
    let other = store
        .enable_repairs(&request("few", "lead", "v2"), 22)
        .await
        .unwrap();
    assert!(
        matches!(other, Ok(Enabling::Requested { reset: Some(ref r) }) if r.by == "ops" && r.action == "v1"),
        "{other:?}"
    );
    assert_eq!(store.enabled_fingerprint("few").await.unwrap(), None);
    // The second person for the same version enables it, and the few waiting are approved by both.
    let done = store
        .enable_repairs(&request("few", "ops", "v2"), 23)
        .await
        .unwrap();
    assert_eq!(
        done,
        Ok(Enabling::Enabled {
            by: "lead, ops".into(),
            approved: 3,
            held: None
        })
    );
    assert_eq!(
        store.enabled_fingerprint("few").await.unwrap().as_deref(),
        Some("v2")
    );
    let approved = in_state("few", RepairState::Approved).await;
    assert_eq!(approved.len(), 3);
    assert!(
        approved
            .iter()
            .all(|r| r.approved_by.as_deref() == Some("lead, ops"))
    );

    // 300 waiting, over the cap of 5: enabled, but every one is held for a person.
    store
        .enable_repairs(&request("many", "ops", "v1"), 30)
        .await
        .unwrap()
        .unwrap();
    let done = store
        .enable_repairs(&request("many", "lead", "v1"), 31)
        .await
        .unwrap()
        .unwrap();
    let Enabling::Enabled {
        approved: 0,
        held: Some((Hold::TooMany, why, 300)),
        ..
    } = &done
    else {
        panic!("{done:?}");
    };
    assert!(why.contains("more than max_auto_per_run (5)"), "{why}");
    assert!(in_state("many", RepairState::Approved).await.is_empty());
    let held = in_state("many", RepairState::Pending).await;
    assert_eq!(held.len(), 300);
    assert!(
        held.iter()
            .all(|r| r.held_by == Some(Hold::TooMany) && r.approved_by.is_none())
    );
    // And the chain records every step.
    assert!(matches!(
        store.verify_audit(None).await.unwrap(),
        invariantd::state::Verification::Intact { .. }
    ));
}

#[tokio::test]
async fn enabling_needs_two_people_under_four_eyes_and_keeps_the_cap_on_sqlite() {
    enabling(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn enabling_needs_two_people_under_four_eyes_and_keeps_the_cap_on_postgres() {
    enabling(SourceKind::Postgres).await;
}

/// Leases by the database's clock: one holder at a time; a renewal only by the holder with
/// its token and before expiry (a holder paused past its lease finds it lost); a takeover or a
/// new holder after release gets a larger token; the old token fails the fence check.
async fn leases(kind: SourceKind) {
    use std::time::Duration;
    let state_db = match kind {
        SourceKind::Postgres => Some(TestDb::new(SourceKind::Postgres, "leases").await),
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = state_store(kind, &state_db, dir.path()).await;
    let long = Duration::from_secs(30);
    let a = store
        .acquire_lease("rule/r", "a", long)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.token, 1);
    assert!(
        store
            .acquire_lease("rule/r", "b", long)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .acquire_lease("rule/r", "a", long)
            .await
            .unwrap()
            .is_none(),
        "renew, not re-acquire"
    );
    let renewed = store.renew_lease(&a, long).await.unwrap().unwrap();
    assert!(renewed.expires_us >= a.expires_us);
    assert!(store.still_holds(&a).await.unwrap());
    // Another lease is another name.
    assert_eq!(
        store
            .acquire_lease("leader", "b", long)
            .await
            .unwrap()
            .unwrap()
            .token,
        1
    );

    // A holder that misses its renewal loses the lease: it cannot renew it late, and the
    // next holder's token is larger.
    let short = Duration::from_millis(300);
    let c = store
        .acquire_lease("range/r/1", "c", short)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!store.still_holds(&c).await.unwrap());
    assert!(
        store.renew_lease(&c, long).await.unwrap().is_none(),
        "a late renewal concedes"
    );
    let d = store
        .acquire_lease("range/r/1", "d", long)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.token, c.token + 1);
    assert!(!store.still_holds(&c).await.unwrap());
    assert!(store.still_holds(&d).await.unwrap());
    // Writes guarded by the lease: the stale holder's are refused and write nothing, the new
    // holder's go through.
    let run = RuleRun::unknown(
        "r",
        Utc::now(),
        Duration::from_millis(5),
        invariantd::verdict::RunError::new(invariantd::verdict::ErrorKind::Cancelled, "x"),
    );
    let refused = store.record(&run, &[], Some(&c)).await.unwrap_err();
    assert!(
        matches!(refused, invariantd::state::StateError::LeaseLost(ref n) if n == "range/r/1"),
        "{refused}"
    );
    assert!(store.runs(Some("r"), None, 10).await.unwrap().is_empty());
    let group = invariantd::state::AlertGroupState {
        group_key: "violation/r".into(),
        firing: true,
        ..Default::default()
    };
    let refused = store
        .save_alert_group(&group, &[], 1, Some(&c))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, invariantd::state::StateError::LeaseLost(_)),
        "{refused}"
    );
    assert!(store.alert_groups().await.unwrap().is_empty());
    store.record(&run, &[], Some(&d)).await.unwrap();
    store
        .save_alert_group(&group, &[], 1, Some(&d))
        .await
        .unwrap();
    assert_eq!(store.runs(Some("r"), None, 10).await.unwrap().len(), 1);
    assert_eq!(store.alert_groups().await.unwrap().len(), 1);
    // A stale holder cannot release what it lost, nor renew with the new token's holder name.
    assert!(!store.release_lease(&c).await.unwrap());
    let forged = invariantd::state::Lease {
        holder: "c".into(),
        ..d.clone()
    };
    assert!(store.renew_lease(&forged, long).await.unwrap().is_none());
    // Renewed together, only what is still held comes back.
    let together = store
        .renew_leases(&[c.clone(), d.clone(), forged.clone()], long)
        .await
        .unwrap();
    assert_eq!(
        together
            .iter()
            .map(|l| (l.name.as_str(), l.holder.as_str(), l.token))
            .collect::<Vec<_>>(),
        [("range/r/1", "d", d.token)]
    );
    // Released, it can be taken at once, with a larger token still.
    assert!(store.release_lease(&d).await.unwrap());
    let e = store
        .acquire_lease("range/r/1", "c", long)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.token, d.token + 1);

    let rows = store.leases().await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.name.as_str(), r.holder.as_str(), r.token, r.expired))
            .collect::<Vec<_>>(),
        [
            ("leader", "b", 1, false),
            ("range/r/1", "c", 3, false),
            ("rule/r", "a", 1, false)
        ]
    );
}

#[tokio::test]
async fn leases_fence_by_the_database_clock_on_sqlite() {
    leases(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn leases_fence_by_the_database_clock_on_postgres() {
    leases(SourceKind::Postgres).await;
}

/// A partitioned sweep in the store: started under the rule's lease only; each part's run
/// written only under that part's own lease, by its current holder, once; a new sweep drops
/// the last one (and its parts' leases, so a reader still at it writes nothing); sampled
/// boundaries are of one rule version.
async fn sweeps(kind: SourceKind) {
    use invariantd::sources::KeyRange;
    use invariantd::state::{PartState, StateError, part_lease};
    use invariantd::value::Key;
    use std::time::Duration;
    let state_db = match kind {
        SourceKind::Postgres => Some(TestDb::new(SourceKind::Postgres, "sweeps").await),
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = state_store(kind, &state_db, dir.path()).await;
    let long = Duration::from_secs(30);
    let ranges = invariantd::engine::key_ranges(&[Key::Int(100)]).unwrap();
    let snapshots =
        std::collections::BTreeMap::from([("db".to_string(), "0000000A-1".to_string())]);
    let holder = store
        .acquire_lease("rule/r", "a", long)
        .await
        .unwrap()
        .unwrap();
    let stale = invariantd::state::Lease {
        token: holder.token - 1,
        ..holder.clone()
    };
    assert!(matches!(
        store
            .start_sweep("r", "v1", 1, &ranges, &snapshots, Some(&stale))
            .await,
        Err(StateError::LeaseLost(_))
    ));
    assert!(store.pending_parts().await.unwrap().is_empty());
    store
        .start_sweep("r", "v1", 1, &ranges, &snapshots, Some(&holder))
        .await
        .unwrap();
    let pending = store.pending_parts().await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(
        pending[1].range,
        KeyRange {
            from: Some(Key::Int(100)),
            until: None
        }
    );
    assert_eq!(pending[1].snapshots, snapshots);
    let part = pending[0].clone();
    let run = RuleRun::unknown(
        "r",
        Utc::now(),
        Duration::from_millis(5),
        invariantd::verdict::RunError::new(invariantd::verdict::ErrorKind::Cancelled, "x"),
    );
    // A reader that lost its part's lease cannot write; nor can any other lease stand in.
    let name = part_lease("r", 1, part.part);
    let lost = store
        .acquire_lease(&name, "x", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = store
        .acquire_lease(&name, "y", long)
        .await
        .unwrap()
        .unwrap();
    for lease in [&lost, &holder] {
        assert!(matches!(
            store.finish_part(&part, &run, lease).await,
            Err(StateError::LeaseLost(_))
        ));
    }
    store.finish_part(&part, &run, &taken).await.unwrap();
    // Once only.
    store.finish_part(&part, &run, &taken).await.unwrap();
    assert_eq!(store.sweep_progress("r", 1).await.unwrap(), (2, 1));
    assert_eq!(store.sweep_progress("r", 9).await.unwrap(), (0, 0));
    let parts = store.sweep_parts("r", 1).await.unwrap();
    assert_eq!(parts[0].0.state, PartState::Done);
    assert_eq!(parts[0].0.holder.as_deref(), Some("y"));
    assert_eq!(parts[0].1.as_ref().unwrap().rule, "r");
    assert!(parts[1].1.is_none());
    // The next sweep replaces it: the other part's reader writes nothing anywhere.
    let other = pending[1].clone();
    let reading = store
        .acquire_lease(&part_lease("r", 1, other.part), "z", long)
        .await
        .unwrap()
        .unwrap();
    store
        .start_sweep("r", "v1", 2, &ranges, &snapshots, Some(&holder))
        .await
        .unwrap();
    assert!(matches!(
        store.finish_part(&other, &run, &reading).await,
        Err(StateError::LeaseLost(_))
    ));
    assert!(store.sweep_parts("r", 1).await.unwrap().is_empty());
    assert_eq!(store.pending_parts().await.unwrap().len(), 2);
    // Ended: the runs are cleared, who read what stays, nothing is pending from it.
    let p0 = store.pending_parts().await.unwrap()[0].clone();
    let lease = store
        .acquire_lease(&part_lease("r", 2, p0.part), "y", long)
        .await
        .unwrap()
        .unwrap();
    store.finish_part(&p0, &run, &lease).await.unwrap();
    store.end_sweep("r", 2).await.unwrap();
    let parts = store.sweep_parts("r", 2).await.unwrap();
    assert!(parts[0].1.is_none());
    assert_eq!(parts[0].0.holder.as_deref(), Some("y"));
    // Boundaries are of one version of the rule.
    let keys = [Key::Text("b".into()), Key::Text("m".into())];
    store
        .save_sweep_boundaries("r", "v1", &keys, 5, Some(&holder))
        .await
        .unwrap();
    assert_eq!(
        store.sweep_boundaries("r", "v1").await.unwrap().unwrap(),
        keys
    );
    assert!(store.sweep_boundaries("r", "v2").await.unwrap().is_none());
    store.forget_sweep_boundaries("r").await.unwrap();
    assert!(store.sweep_boundaries("r", "v1").await.unwrap().is_none());
}

#[tokio::test]
async fn partitioned_sweeps_are_fenced_part_by_part_on_sqlite() {
    sweeps(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn partitioned_sweeps_are_fenced_part_by_part_on_postgres() {
    sweeps(SourceKind::Postgres).await;
}

/// What the alert evaluator reads for every rule at once: each rule's newest run, and when its
/// newest run that judged its keys finished — the same as asking rule by rule.
async fn latest_runs(kind: SourceKind) {
    use std::time::Duration;
    let state_db = match kind {
        SourceKind::Postgres => Some(TestDb::new(SourceKind::Postgres, "latest").await),
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = state_store(kind, &state_db, dir.path()).await;
    let unknown = |rule: &str, at: i64| {
        RuleRun::unknown(
            rule,
            chrono::DateTime::from_timestamp_micros(at).unwrap(),
            Duration::from_millis(5),
            invariantd::verdict::RunError::new(invariantd::verdict::ErrorKind::Timeout, "slow"),
        )
    };
    let passed = |rule: &str, at: i64| RuleRun {
        outcome: invariantd::verdict::Outcome::Pass,
        error: None,
        finished: true,
        fingerprint: "v".into(),
        keys_judged: 7,
        keys_in_grace: 2,
        key_errors_total: 1,
        ..unknown(rule, at)
    };
    let t = 1_700_000_000_000_000;
    for run in [
        passed("a", t),
        unknown("a", t + 10),
        unknown("b", t + 20),
        passed("d", t + 30),
    ] {
        store.record(&run, &[], None).await.unwrap();
    }
    // More rules than one statement takes.
    let mut names: Vec<String> = (0..450).map(|i| format!("z{i}")).collect();
    names.extend(["a", "b", "c", "d"].map(String::from));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let latest = store.latest_runs(&names).await.unwrap();
    assert_eq!(latest.len(), names.len());
    for name in ["a", "b", "c", "d", "z7"] {
        let one = store.runs(Some(name), None, 1).await.unwrap().pop();
        let judged = store.last_success(name).await.unwrap();
        assert_eq!(latest[name], (one, judged), "{name}");
    }
    assert_eq!(latest["a"].1, Some(t + 5_000));
    assert_eq!(
        latest["a"].0.as_ref().unwrap().outcome,
        invariantd::verdict::Outcome::Unknown
    );
    assert_eq!(latest["c"], (None, None));
    // What restores the metrics reads the same runs (and the newest judged one's key counts).
    let snapshots = store.rule_snapshots(&names).await.unwrap();
    for name in ["a", "b", "c", "d"] {
        let judged = store.last_success(name).await.unwrap();
        let shown = snapshots.get(name).and_then(|s| s.last_success_us);
        assert_eq!(shown, judged, "{name}");
    }
    assert_eq!(snapshots["a"].last_keys, Some([7, 2, 1]));
    assert!(!snapshots.contains_key("b"));
    // And when each version's last full sweep started, the same as rule by rule.
    let versions: Vec<(&str, &str)> = names.iter().map(|n| (*n, "v")).collect();
    let full = store.last_full_sweeps(&versions).await.unwrap();
    assert_eq!(full.len(), names.len());
    for name in ["a", "b", "c", "d"] {
        let marks = store.sweep_marks(name, "v").await.unwrap();
        assert_eq!(full[name], marks.last_full_us, "{name}");
    }
    assert_eq!(
        (full["a"], full["d"], full["b"]),
        (Some(t), Some(t + 30), None)
    );
}

#[tokio::test]
async fn the_newest_runs_of_many_rules_are_read_at_once_on_sqlite() {
    latest_runs(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn the_newest_runs_of_many_rules_are_read_at_once_on_postgres() {
    latest_runs(SourceKind::Postgres).await;
}

/// A rule's history charts from the store (spans streamed and counted as they come) agree
/// with the same spans counted in memory, for every kind of span: open before the
/// window and still open, opened and resolved inside it, resolved at a step's very instant,
/// resolved before the window, resolved when first seen, without impact, with a negative one,
/// and with an impact written by hand that is not a decimal.
async fn history_charts(kind: SourceKind) {
    use invariantd::http::history::{Open, Window, history, series};
    let f = Fixture::new(kind).await;
    const H: i64 = 3_600_000_000;
    let now = Utc::now().timestamp_micros();
    let step = H / 2;
    let day_start = now - 24 * H;
    let spans: Vec<(i64, Option<i64>, Option<&str>)> = vec![
        (now - 30 * H, None, Some("1.10")),
        (now - 10 * H, Some(now - 5 * H), Some("2.25")),
        (
            day_start + 3 * step,
            Some(day_start + 7 * step),
            Some("-0.50"),
        ),
        (now - 40 * H, Some(now - 30 * H), Some("9.99")),
        (now - 3 * H, Some(now - 3 * H), Some("5.00")),
        (now - 2 * H, None, None),
        (now - 100 * H, Some(now - H), Some("lots")),
        (now - 6 * 24 * H, Some(now - 3 * 24 * H), Some("0.01")),
        (now - H / 3, None, Some("123456789.123456789")),
    ];
    let values: Vec<String> = spans
        .iter()
        .enumerate()
        .map(|(i, (from, until, impact))| {
            format!(
                "('ok', 'k{i}', '{state}', 'm', '{{}}', {impact}, {from}, {from}, 1, {until})",
                state = if until.is_some() { "resolved" } else { "open" },
                impact = impact.map_or("NULL".to_string(), |x| format!("'{x}'")),
                until = until.map_or("NULL".to_string(), |u| u.to_string()),
            )
        })
        .collect();
    f.by_hand(&format!(
        "INSERT INTO violations (rule, key, state, message, datasets, impact, first_seen_us, \
         last_seen_us, occurrences, resolved_us) VALUES {}",
        values.join(", ")
    ))
    .await;
    let opens: Vec<Open> = spans
        .iter()
        .map(|(from, until, impact)| Open {
            from_us: *from,
            until_us: *until,
            impact: impact.and_then(|x| x.parse().ok()),
        })
        .collect();
    for window in [Window::Day, Window::Week] {
        let stored = history(&f.store, "ok", window, now).await.unwrap();
        let counted = series(&opens, window, now);
        assert_eq!(stored, counted, "{kind:?} {window:?}");
        assert!(stored.iter().any(|p| p.open >= 3), "{kind:?}: {stored:?}");
    }
}

#[tokio::test]
async fn history_charts_agree_with_the_spans_on_sqlite() {
    history_charts(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn history_charts_agree_with_the_spans_on_postgres() {
    history_charts(SourceKind::Postgres).await;
}

/// Pruning goes in batches of bounded size, oldest first, until nothing old is left: a chain
/// of resolved violations each linked to the one before, cut where the retention ends, loses
/// its old part without a broken link, and what is kept (a newer resolved one, an open one
/// linked to it, newer runs) stays as it was.
async fn pruning_in_batches(kind: SourceKind) {
    let f = Fixture::new(kind).await;
    let before = Utc::now().timestamp_micros() - 3_600_000_000;
    let rows: Vec<String> = (0..27)
        .map(|i| {
            let (state, resolved) = match i {
                25 => ("resolved", (before + 10).to_string()),
                26 => ("open", "NULL".to_string()),
                _ => ("resolved", (before - 1000 + i).to_string()),
            };
            format!(
                "('ok', 'k{i}', '{state}', 'm', '{{}}', {at}, {at}, 1, {resolved})",
                at = before - 5000
            )
        })
        .collect();
    f.by_hand(&format!(
        "INSERT INTO violations (rule, key, state, message, datasets, first_seen_us, last_seen_us, \
         occurrences, resolved_us) VALUES {}",
        rows.join(", ")
    ))
    .await;
    f.by_hand(
        "UPDATE violations SET previous_id = id - 1 WHERE id > (SELECT MIN(id) FROM violations)",
    )
    .await;
    let runs: Vec<String> = (0..10)
        .map(|i| {
            let at = if i < 9 { before - 100 + i } else { before + 1 };
            format!("('ok', {at}, {at}, 'pass', 0, 0)")
        })
        .collect();
    f.by_hand(&format!(
        "INSERT INTO runs (rule, started_us, finished_us, outcome, rows_scanned, violations) VALUES {}",
        runs.join(", ")
    ))
    .await;
    // An audit entry older than the retention: the audit trail is kept for ever.
    let old = invariantd::state::AuditEntry {
        actor: "ops".into(),
        action: "silence.add".into(),
        subject: "silence/1".into(),
        details: serde_json::json!({}),
    };
    f.store.audit(&old, before - 10_000).await.unwrap();

    let pruned = f.store.prune_in_batches(before, 4).await.unwrap();
    // 25 violations in 7 batches (six of 4, one of 1), 9 runs in 3, the outbox and the
    // silences in one each (nothing to prune).
    assert_eq!((pruned.rows, pruned.batches), (34, 12), "{kind:?}");
    let left = f.all().await;
    let shown: Vec<_> = left
        .iter()
        .map(|v| (v.key.as_str(), v.state.as_str(), v.previous_id.is_some()))
        .collect();
    assert_eq!(
        shown,
        [("k25", "resolved", false), ("k26", "open", true)],
        "{kind:?}"
    );
    assert_eq!(left[1].previous_id, Some(left[0].id));
    let kept = f.store.runs(None, None, 100).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].started_us, before + 1);
    // Again: nothing is left to prune, one batch a table.
    let again = f.store.prune(before).await.unwrap();
    assert_eq!((again.rows, again.batches), (0, 4));
    // Pruning never touches the audit chain.
    assert!(matches!(
        f.store.verify_audit(None).await.unwrap(),
        invariantd::state::Verification::Intact { entries: 1, .. }
    ));
}

#[tokio::test]
async fn pruning_goes_in_bounded_batches_on_sqlite() {
    pruning_in_batches(SourceKind::Sqlite).await;
}

#[tokio::test]
async fn pruning_goes_in_bounded_batches_on_postgres() {
    pruning_in_batches(SourceKind::Postgres).await;
}
