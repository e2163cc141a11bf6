//! A reload is a diff: what was added, changed and removed (sources, rules, receivers, who may
//! use the API) is worked out in one place; unchanged sources keep their pools; and the
//! reload is audited once, by whoever asked, with what came of it.

use std::sync::Arc;
use std::time::Duration;

use invariantd::config::SourceKind;
use invariantd::context::{Changes, Context};

use crate::harness::{TOKEN, TestDb, Workdir, http_as, kill, tokens_file};

fn changes(added: &[&str], changed: &[&str], removed: &[&str]) -> Changes {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Changes {
        added: own(added),
        changed: own(changed),
        removed: own(removed),
    }
}

#[tokio::test]
async fn a_reload_says_what_changed_and_keeps_the_pools_of_unchanged_sources() {
    let (a, b, c) = (
        TestDb::new(SourceKind::Sqlite, "keep_a").await,
        TestDb::new(SourceKind::Sqlite, "keep_b").await,
        TestDb::new(SourceKind::Sqlite, "keep_c").await,
    );
    let rule = |name: &str, source: &str, assert: &str| {
        format!(
            "name: {name}\nkey: id\ndatasets:\n  t: {{ source: {source}, query: \"SELECT 1 AS id\" }}\nassert: {assert}\n"
        )
    };
    let rules = [
        rule("reads_a", "a", "t != null"),
        rule("reads_b", "b", "t != null"),
        rule("gone", "a", "t != null"),
    ]
    .join("---\n");
    let work = Workdir::new(&[("a", &a.url), ("b", &b.url)], Some(&rules));
    let (config, loaded) = work.load();
    let old = Arc::new(Context::start(config, loaded).await.unwrap());

    // b gets a new statement timeout, c is added; one rule changes, one goes, one comes; the
    // rule reading b changes with it.
    let config = format!(
        "sources:\n  a: {{ url: \"{}\", connect_timeout: 2s, statement_timeout: 10s }}\n  b: {{ url: \"{}\", connect_timeout: 2s, statement_timeout: 20s }}\n  c: {{ url: \"{}\" }}\nrules: [rules/]\n{}",
        a.url,
        b.url,
        c.url,
        tokens_file(work.path())
    );
    std::fs::write(work.config(), config).unwrap();
    let rules = [
        rule("reads_a", "a", "t != null"),
        rule("reads_b", "b", "t != null"),
        rule("new_one", "c", "t != null && true"),
    ]
    .join("---\n");
    std::fs::write(work.path().join("rules/rules.yaml"), rules).unwrap();
    let (config, loaded) = work.load();
    let (new, diff) = old.reloaded(config, loaded).await.unwrap();

    assert_eq!(diff.sources, changes(&["c"], &["b"], &[]));
    assert_eq!(diff.rules, changes(&["new_one"], &["reads_b"], &["gone"]));
    assert!(diff.receivers.is_empty());
    assert!(diff.auth, "a tokens file was added");
    // The unchanged source is the same source, pool and all; the changed one is new.
    assert!(Arc::ptr_eq(
        old.sources.get("a").unwrap(),
        new.sources.get("a").unwrap()
    ));
    assert!(!Arc::ptr_eq(
        old.sources.get("b").unwrap(),
        new.sources.get("b").unwrap()
    ));

    // The same files again: nothing changed, and every pool is kept.
    let (config, loaded) = work.load();
    let (again, diff) = new.reloaded(config, loaded).await.unwrap();
    assert!(
        diff.sources.is_empty() && diff.rules.is_empty() && !diff.auth,
        "{diff:?}"
    );
    for name in ["a", "b", "c"] {
        assert!(Arc::ptr_eq(
            new.sources.get(name).unwrap(),
            again.sources.get(name).unwrap()
        ));
    }
}

#[tokio::test]
async fn each_reload_is_audited_once_by_whoever_asked_with_its_result() {
    let db = TestDb::new(SourceKind::Sqlite, "audit_reload").await;
    let rule = "name: one\nevery: 1h\nkey: id\ndatasets:\n  t: { source: db, query: \"SELECT 1 AS id\" }\nassert: t != null\n";
    let workdir = Workdir::new(&[("db", &db.url)], Some(rule));
    let auth = tokens_file(workdir.path());
    let (mut child, port) = workdir
        .spawn_daemon(&auth, std::process::Stdio::null())
        .await;
    // Through the API, then a broken set by signal, then through the API again.
    let (status, _) =
        tokio::task::spawn_blocking(move || http_as(port, "POST", "/api/v1/reload", Some(TOKEN)))
            .await
            .unwrap();
    assert_eq!(status, 200);
    std::fs::write(workdir.path().join("rules/rules.yaml"), "name: one\n").unwrap();
    kill(&child, "HUP");
    let audit = || {
        let out = workdir.cli(&["audit", "list", "--format", "json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "config.reload")
            .cloned()
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while audit().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "{:?}", audit());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries = audit();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let by = |actor: &str| {
        entries
            .iter()
            .find(|e| e["actor"] == actor)
            .unwrap_or_else(|| panic!("no reload by {actor}: {entries:#?}"))
    };
    let api = by("ops");
    assert_eq!(api["details"]["reloaded"], true);
    assert_eq!(api["details"]["rules"], 1);
    assert!(api["details"]["changes"]["rules"].is_object());
    let signal = by("signal");
    assert_eq!(signal["details"]["reloaded"], false);
    assert!(
        signal["details"]["error"]
            .as_str()
            .unwrap()
            .contains("invalid"),
        "{entries:#?}"
    );
    kill(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn a_reload_restarts_only_the_loops_of_rules_it_changed() {
    let db = TestDb::new(SourceKind::Sqlite, "loops").await;
    let rule = |name: &str, assert: &str| {
        format!(
            "name: {name}\nevery: 20s\nkey: id\ndatasets:\n  t: {{ source: db, query: \"SELECT 1 AS id\" }}\nassert: {assert}\n"
        )
    };
    let two = |b: &str| [rule("kept", "t != null"), rule("edited", b)].join("---\n");
    let workdir = Workdir::new(&[("db", &db.url)], Some(&two("t != null")));
    let auth = tokens_file(workdir.path());
    let (mut child, port) = workdir
        .spawn_daemon(&auth, std::process::Stdio::null())
        .await;
    let runs = move |rule: &str| {
        let text = crate::harness::http(port, "GET", "/metrics").1;
        let series = format!(r#"invariantd_rule_runs_total{{rule="{rule}",outcome="pass"}} "#);
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runs("kept") < 1 || runs("edited") < 1 {
        assert!(std::time::Instant::now() < deadline, "the rules never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(
        workdir.path().join("rules/rules.yaml"),
        two("t != null && true"),
    )
    .unwrap();
    let (status, _) =
        tokio::task::spawn_blocking(move || http_as(port, "POST", "/api/v1/reload", Some(TOKEN)))
            .await
            .unwrap();
    assert_eq!(status, 200);
    // The edited rule's loop starts again, and runs at once; the kept rule's loop goes on
    // with its schedule: its next run is 20 s after its first.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runs("edited") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the edited rule did not run again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A restarted loop would have run by now (its first run comes within a tenth of the
    // period, at most 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs("kept"), 1);
    // A reload that cannot be put in force (its tokens file is gone) is refused before any
    // loop stops: the edited rule's loop is not restarted, so it does not run again at once.
    std::fs::write(
        workdir.path().join("rules/rules.yaml"),
        two("t != null && 1 == 1"),
    )
    .unwrap();
    std::fs::remove_file(workdir.path().join("tokens")).unwrap();
    let (status, body) =
        tokio::task::spawn_blocking(move || http_as(port, "POST", "/api/v1/reload", Some(TOKEN)))
            .await
            .unwrap();
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("tokens"), "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!((runs("kept"), runs("edited")), (1, 2));
    kill(&child, "TERM");
    assert!(child.wait().unwrap().success());
}
