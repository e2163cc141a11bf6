//! The shipped rule pack against the example shop, with one order broken in every way the
//! rules know: each rule must report exactly the broken orders, on every database and on a
//! mix of them.

use std::collections::BTreeSet;

use chrono::Utc;
use invariantd::config::SourceKind::{self, MySql, Postgres, Sqlite};
use invariantd::demo::shop::{SERVICES, scenario};
use invariantd::verdict::Outcome;

use crate::harness::{TestDb, Workdir};

async fn shop_on(kinds: [SourceKind; 4]) {
    let shop = scenario(Utc::now(), 40);
    let mut dbs = Vec::new();
    let mut sources = Vec::new();
    for (service, kind) in SERVICES.iter().zip(kinds) {
        let db = TestDb::new(kind, service).await;
        db.exec(&shop.sql(service, kind)).await;
        sources.push((*service, db.url.clone()));
        dbs.push(db);
    }
    let sources: Vec<(&str, &str)> = sources.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let workdir = Workdir::new(&sources, None);
    let runs = workdir.run().await;
    assert_eq!(runs.len(), shop.expected.len());
    for run in &runs {
        assert_eq!(run.error, None, "rule {}", run.rule);
        let found: BTreeSet<i64> = run
            .violations
            .iter()
            .map(|v| v.key.to_string().parse().unwrap())
            .collect();
        let expected = &shop.expected[run.rule.as_str()];
        assert_eq!(&found, expected, "rule {} on {kinds:?}", run.rule);
        let outcome = if expected.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        assert_eq!(run.outcome, outcome, "rule {}", run.rule);
        assert!(run.total_rows_scanned() > 0, "rule {}", run.rule);
    }
    // The outage one minute ago is inside the grace period of paid_implies_reserved.
    let paid = runs
        .iter()
        .find(|r| r.rule == "paid_implies_reserved")
        .unwrap();
    assert!(paid.keys_in_grace >= 1);
}

#[tokio::test]
async fn shop_on_postgres_reports_exactly_the_broken_orders() {
    shop_on([Postgres; 4]).await;
}

#[tokio::test]
async fn shop_on_mariadb_reports_exactly_the_broken_orders() {
    shop_on([MySql; 4]).await;
}

#[tokio::test]
async fn shop_on_sqlite_reports_exactly_the_broken_orders() {
    shop_on([Sqlite; 4]).await;
}

#[tokio::test]
async fn shop_across_postgres_mariadb_and_sqlite_reports_exactly_the_broken_orders() {
    shop_on([Postgres, MySql, Sqlite, Postgres]).await;
    shop_on([Sqlite, Postgres, MySql, MySql]).await;
}
