//! `invariantd demo`: the quick start on embedded SQLite. It creates the databases of the four
//! services of a small shop, breaks some orders the way the inventory outage of the design
//! story did (payments captured, nothing reserved, orders stuck in `processing`), writes a
//! config and the shipped rules next to them, and checks the shop — then says whether what was
//! found is exactly what the outage broke.

pub mod shop;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, bail};
use chrono::Utc;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

use crate::cli::DemoArgs;
use crate::config::SourceKind;
use shop::{Anomaly, SERVICES, Shop};

/// The shipped rule pack, embedded so the demo works from the binary alone.
pub const RULE_FILES: [(&str, &str); 4] = [
    ("payments.yaml", include_str!("../../rules/payments.yaml")),
    ("orders.yaml", include_str!("../../rules/orders.yaml")),
    ("inventory.yaml", include_str!("../../rules/inventory.yaml")),
    ("shipping.yaml", include_str!("../../rules/shipping.yaml")),
];

/// The demo's shop: steady traffic, with the outage in the middle of it.
pub fn outage_shop() -> Shop {
    let mut shop = Shop::new(Utc::now());
    shop.healthy(60);
    for _ in 0..12 {
        shop.broken(Anomaly::Outage);
    }
    shop.healthy(30);
    // Orders caught by the outage a minute ago: too fresh to judge yet (grace).
    shop.broken(Anomaly::RecentOutage);
    shop.broken(Anomaly::RecentOutage);
    shop
}

/// Creates one SQLite database per service in `dir` from `shop`.
pub async fn create_sqlite_shop(shop: &Shop, dir: &Path) -> anyhow::Result<()> {
    for service in SERVICES {
        let path = dir.join(format!("{service}.db"));
        let mut conn = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .with_context(|| format!("cannot create {}", path.display()))?;
        for statement in shop.sql(service, SourceKind::Sqlite) {
            conn.execute(AssertSqlSafe(statement)).await?;
        }
        conn.close().await?;
    }
    Ok(())
}

/// The config for the shop's databases in `dir`.
pub fn sqlite_config() -> String {
    let mut text = String::from("# Written by `invariantd demo`.\nsources:\n");
    for service in SERVICES {
        text.push_str(&format!(
            "  {service}: {{ url: \"sqlite://{service}.db\" }}\n"
        ));
    }
    text.push_str("state: { url: \"sqlite://invariantd-state.db?mode=rwc\" }\nrules: [rules/]\n");
    text
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "invariantd-demo-{}-{}",
            std::process::id(),
            Utc::now().format("%Y%m%d%H%M%S")
        )),
    };
    prepare_dir(&dir)?;
    let shop = outage_shop();
    let runtime = crate::app::runtime()?;
    runtime.block_on(create_sqlite_shop(&shop, &dir))?;
    std::fs::create_dir_all(dir.join("rules"))?;
    for (name, text) in RULE_FILES {
        std::fs::write(dir.join("rules").join(name), text)?;
    }
    let config_path = dir.join("invariantd.yaml");
    std::fs::write(&config_path, sqlite_config())?;

    println!("A shop with four services on SQLite, in {}:", dir.display());
    println!(
        "  {} orders, {} payments, {} reservations, {} shipments; the inventory service was down",
        shop.orders.len(),
        shop.payments.len(),
        shop.reservations.len(),
        shop.shipments.len()
    );
    println!(
        "  for a while: payments were captured, nothing was reserved, orders stuck in processing.\n"
    );

    let (config, rules) = crate::app::load(&config_path).map_err(|d| anyhow::anyhow!("{d}"))?;
    let runs = runtime.block_on(async {
        let sources = crate::sources::Sources::new(&config.sources);
        crate::check::run_rules(&rules, &sources, 4).await
    });
    print!("{}", crate::check::render_table(&rules, &runs, 5));

    let mut missed = Vec::new();
    let mut extra = Vec::new();
    for run in &runs {
        let found: BTreeSet<i64> = run
            .violations
            .iter()
            .filter_map(|v| v.key.to_string().parse().ok())
            .collect();
        let expected = shop
            .expected
            .get(run.rule.as_str())
            .cloned()
            .unwrap_or_default();
        missed.extend(
            expected
                .difference(&found)
                .map(|k| format!("{}:{k}", run.rule)),
        );
        extra.extend(
            found
                .difference(&expected)
                .map(|k| format!("{}:{k}", run.rule)),
        );
        if let Some(e) = &run.error {
            bail!("rule {} could not run: {e}", run.rule);
        }
    }
    let broken: BTreeSet<i64> = shop.expected.values().flatten().copied().collect();
    if missed.is_empty() && extra.is_empty() {
        println!(
            "\ninvariantd found every one of the {} orders the outage broke, and nothing else.",
            broken.len()
        );
    } else {
        println!("\nUnexpected: missed {missed:?}, extra {extra:?}");
    }
    println!("\nLook around:");
    println!("  invariantd check --config {}", config_path.display());
    println!(
        "  invariantd check --config {} --format json paid_implies_reserved",
        config_path.display()
    );
    println!("  rules: {}", dir.join("rules").display());
    Ok(if missed.is_empty() && extra.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The demo writes only into a directory it owns: a new one, or an empty one.
fn prepare_dir(dir: &PathBuf) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty; give --dir a new or empty directory",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}
