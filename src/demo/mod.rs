//! `invariantd demo`: the quick start on embedded SQLite. It creates the databases of the four
//! services of a small shop, writes a config and the shipped rules next to them, runs the shop
//! through the inventory outage of the design story (`live`) with the daemon watching and its
//! alerts going to a local on-call webhook (`inbox`), and ends by saying whether the open
//! violations are exactly the orders the outage broke — then the repairs invariantd planned
//! for the rest are approved (on the web page, or by the demo after a while) and applied, and
//! on-call hears each rule heal.
//! `shop` builds fixed scenarios of the same shop for the tests, on every database kind.

pub mod inbox;
pub mod live;
pub mod shop;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, bail};
use chrono::Utc;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

use crate::cli::DemoArgs;
use crate::config::SourceKind;
use shop::{SERVICES, Shop};

/// The shipped rule pack, embedded so the demo works from the binary alone.
pub const RULE_FILES: [(&str, &str); 4] = [
    (
        "payments.yaml",
        include_str!("../../examples/shop/rules/payments.yaml"),
    ),
    (
        "orders.yaml",
        include_str!("../../examples/shop/rules/orders.yaml"),
    ),
    (
        "inventory.yaml",
        include_str!("../../examples/shop/rules/inventory.yaml"),
    ),
    (
        "shipping.yaml",
        include_str!("../../examples/shop/rules/shipping.yaml"),
    ),
];

/// The repairs the demo's rules offer (the shipped pack offers none: its statements would be
/// the demo shop's, in SQLite's dialect). Both wait for a person's approval.
const DEMO_REPAIRS: [(&str, &str); 2] = [
    (
        "paid_implies_reserved",
        r#"repair:
  mode: approve
  action:
    sql:
      source: inventory
      statement: >-
        INSERT INTO reservations (id, order_id, sku, quantity, state, updated_at)
        SELECT COALESCE(MAX(id), 0) + 1, ?1, printf('SKU-%03d', ?1 % 500), 1, 'reserved',
        strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM reservations
      params: [key]
"#,
    ),
    (
        "order_not_stuck_processing",
        r#"repair:
  mode: approve
  action:
    sql:
      source: orders
      statement: >-
        UPDATE orders SET status = 'paid', updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
        WHERE id = ?1 AND status = 'processing'
      params: [key]
"#,
    ),
];

/// A rule file with the demo's repairs added to the rules that have one.
fn with_repairs(text: &str) -> String {
    text.split("\n---\n")
        .map(|doc| {
            let repair = DEMO_REPAIRS.iter().find(|(rule, _)| {
                doc.lines()
                    .any(|l| l.strip_prefix("name: ").map(str::trim) == Some(*rule))
            });
            match repair {
                Some((_, block)) => format!("{}\n{block}", doc.trim_end_matches('\n')),
                None => doc.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A fresh bearer token for the demo's on-call approver, in a private tokens file in `dir`.
fn demo_token(dir: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        dir
    );
    let token = crate::value::hex(&sha2::Sha256::digest(seed.as_bytes())[..16]);
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!("# the demo's on-call approver\noncall:approve:{token}\n"),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(token)
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

/// Where a process on this machine reaches a listener bound to `address`: loopback for an
/// unspecified address (`0.0.0.0`, `::`).
pub fn reachable(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, address.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, address.port()).into(),
        _ => address,
    }
}

/// A word as a shell takes it: quoted when it has anything but plain characters.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The program as the user invoked it (`invariantd` from `PATH`, `target/debug/invariantd`
/// under `cargo run`), so that the commands the demo prints run from where the user is.
fn invoked_as() -> String {
    let program = std::env::args_os()
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "invariantd".into());
    shell_word(&program)
}

/// The config for the shop's databases in `dir`, with the daemon on `listen`.
pub fn sqlite_config(listen: SocketAddr) -> String {
    let mut text = String::from("# Written by `invariantd demo`.\nsources:\n");
    for service in SERVICES {
        text.push_str(&format!(
            "  {service}: {{ url: \"sqlite://{service}.db\" }}\n"
        ));
    }
    text.push_str("state: { url: \"sqlite://invariantd-state.db\" }\nrules: [rules/]\n");
    text.push_str(&format!("http: {{ listen: \"{listen}\" }}\n"));
    text
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "invariantd-demo-{}-{}",
            std::process::id(),
            Utc::now().format("%Y%m%d%H%M%S")
        )),
    };
    prepare_dir(&dir)?;
    let story = live::Story::new(args.speed);
    std::fs::create_dir_all(dir.join("rules"))?;
    for (name, text) in RULE_FILES {
        std::fs::write(
            dir.join("rules").join(name),
            with_repairs(&live::scale_durations(text, args.speed)),
        )?;
    }
    let token = demo_token(&dir)?;
    // A port of our own unless one is given: 9464 may be taken by a daemon already running.
    let listen = if args.listen.port() == 0 {
        std::net::TcpListener::bind(args.listen)
            .with_context(|| format!("cannot listen on {}", args.listen))?
            .local_addr()?
    } else {
        args.listen
    };
    let config_path = dir.join("invariantd.yaml");
    let inbox = inbox::Inbox::start(&dir, listen.ip())
        .await
        .with_context(|| format!("cannot listen on {}", listen.ip()))?;
    std::fs::write(
        &config_path,
        format!(
            "{}auth: {{ tokens_file: tokens }}\n{}",
            sqlite_config(listen),
            inbox.config()
        ),
    )?;
    let me = invoked_as();
    let config_arg = shell_word(&config_path.display().to_string());

    {
        let mut sim = live::Simulator::create(&dir).await?;
        let (config, rules) =
            crate::context::load(&config_path).map_err(|d| anyhow::anyhow!("{d}"))?;
        let ctx = crate::context::Context::start(config, rules).await?;
        let store = ctx.store.clone();
        let minutes = |d: std::time::Duration| d.as_secs() / 60;
        println!(
            "invariantd demo: a shop of four services on SQLite, in {}",
            dir.display()
        );
        println!(
            "The shop takes an order every {}s of shop time. From minute {} to minute {} its inventory",
            story.order_every.as_secs(),
            minutes(story.outage.0),
            minutes(story.outage.1),
        );
        println!(
            "service is down (its database stays up: invariantd keeps reading it), so orders are paid"
        );
        println!(
            "but never reserved. The story lasts {} minutes of shop time, played {}x faster: the demo's",
            minutes(story.length),
            story.speed
        );
        println!(
            "rules are sped up alike, so durations in violation messages are real time ({}s here is {} of shop time).\n",
            1,
            crate::value::format_duration(i64::from(story.speed) * 1_000_000)
        );

        let daemon = crate::daemon::start(ctx, Vec::new()).await?;
        let address = reachable(daemon.address);
        if daemon.address.ip().is_unspecified() {
            println!(
                "The page listens on every address ({}): from another machine, use this one's address.",
                daemon.address
            );
        }
        println!("Watch it while it runs:");
        println!("  http://{address}/   (the page on-call approves repairs on; token: {token})");
        println!("  http://{address}/metrics");
        println!("  http://{address}/api/v1/violations");
        println!("  http://{address}/api/v1/rules");
        println!(
            "Its alerts go to an on-call webhook: each is printed here, and kept in {}\n",
            inbox.file.display()
        );
        let (status_tx, mut status_rx) =
            tokio::sync::watch::channel::<Option<(std::time::Duration, u64, bool, usize)>>(None);
        // The shipped rules' grace, in shop time.
        let grace = "5-minute";
        let reporter = {
            let store = store.clone();
            let speed = story.speed;
            let length = minutes(story.length);
            tokio::spawn(async move {
                while status_rx.changed().await.is_ok() {
                    let Some((elapsed, orders, up, broken)) = *status_rx.borrow_and_update() else {
                        continue;
                    };
                    let open = store.open_summaries().await.unwrap_or_default();
                    let mut found: Vec<String> = open
                        .iter()
                        .filter(|(_, s)| s.open > 0)
                        .map(|(rule, s)| format!("{rule} {}", s.open))
                        .collect();
                    found.sort();
                    // Broken orders not reported yet: changed within the rule's grace.
                    let reported = open
                        .get("paid_implies_reserved")
                        .map_or(0, |s| s.open.max(0) as usize);
                    let held = broken.saturating_sub(reported);
                    let shop_minute = elapsed.as_secs() * u64::from(speed) / 60;
                    println!(
                        "[minute {shop_minute:>2} of {length}] {orders:>3} orders, inventory service {}, {broken:>2} broken so far | open violations: {}{}",
                        if up { "up  " } else { "DOWN" },
                        if found.is_empty() {
                            "none".to_string()
                        } else {
                            found.join(", ")
                        },
                        if held > 0 {
                            format!(" | {held} broken orders still inside the {grace} grace")
                        } else {
                            String::new()
                        }
                    );
                }
            })
        };
        live::simulate(&mut sim, &story, |elapsed, orders, up, broken| {
            let _ = status_tx.send(Some((elapsed, orders, up, broken)));
        })
        .await?;
        drop(status_tx);
        let _ = reporter.await;

        // The end of the story: an operator fixes one broken order by hand, and invariantd sees
        // its violations resolved once the change is past the grace.
        let fixed = sim.broken.iter().next().copied();
        let mut resolved_in = None;
        if let Some(id) = fixed {
            sim.fix_by_hand(id).await?;
            println!(
                "\nAn operator fixes order {id} by hand: reserves its stock and moves it on to paid."
            );
            let started = std::time::Instant::now();
            let patience = story.real(std::time::Duration::from_secs(8 * 60))
                + std::time::Duration::from_secs(10);
            while started.elapsed() < patience {
                let resolved = store
                    .violations(&crate::state::ViolationFilter {
                        rules: None,
                        key: Some(id.to_string()),
                        state: Some(crate::state::ViolationState::Resolved),
                        limit: 10,
                        ..Default::default()
                    })
                    .await?;
                if resolved.len() >= 2 {
                    resolved_in = Some(started.elapsed());
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            match resolved_in {
                Some(t) => println!(
                    "invariantd resolved both of its violations {} later (real time): after the {grace} grace, at the next runs.",
                    crate::value::format_duration(t.as_micros() as i64)
                ),
                None => println!("Unexpected: its violations were not resolved."),
            }
        }

        let mut expected = sim.expected();
        for keys in expected.values_mut() {
            keys.retain(|k| Some(*k) != fixed);
        }
        let open = store
            .violations(&crate::state::ViolationFilter {
                rules: None,
                state: Some(crate::state::ViolationState::Open),
                limit: 100_000,
                ..Default::default()
            })
            .await?;
        let mut found: std::collections::BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
        for v in &open {
            found
                .entry(v.rule.as_str())
                .or_default()
                .extend(v.key.parse::<i64>().ok());
        }
        let exact = expected
            .iter()
            .all(|(rule, keys)| found.get(rule).cloned().unwrap_or_default() == *keys)
            && found.keys().all(|r| expected.contains_key(r))
            && (fixed.is_none() || resolved_in.is_some());
        println!();
        if exact {
            println!(
                "invariantd found every one of the {} orders the outage broke (captured, never reserved, stuck in processing), and nothing else.",
                sim.broken.len()
            );
            if let Some(id) = fixed {
                println!(
                    "The one fixed by hand (order {id}) is resolved; the other {} are still open, waiting for a person.",
                    sim.broken.len() - 1
                );
            }
        } else {
            println!(
                "Unexpected: the outage broke orders {:?}, but the open violations are {found:?}",
                sim.broken
            );
        }
        // The last act: the repairs invariantd planned for the other broken orders wait for
        // on-call's approval; approved, they are applied, and on-call hears each rule heal.
        let rest: Vec<i64> = sim
            .broken
            .iter()
            .copied()
            .filter(|id| Some(*id) != fixed)
            .collect();
        let groups = [
            "violation/paid_implies_reserved",
            "violation/order_not_stuck_processing",
        ];
        let mut all_resolved = groups.iter().all(|g| !inbox.has(g, "firing"));
        let mut repaired = rest.is_empty();
        if !rest.is_empty() {
            repaired = approve_and_apply(
                &store,
                &rest,
                address,
                &token,
                args.approve_after,
                &story,
                &me,
            )
            .await?;
            let started = std::time::Instant::now();
            let patience = story.real(std::time::Duration::from_secs(8 * 60))
                + std::time::Duration::from_secs(10);
            while started.elapsed() < patience && !all_resolved {
                all_resolved = groups.iter().all(|g| inbox.has(g, "resolved"));
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            if all_resolved {
                println!(
                    "Every invariant holds again. On-call got one alert per rule when it broke, and one when it healed: none per order."
                );
            } else {
                println!("Unexpected: not every rule's alert was resolved.");
            }
        }
        let alerted = groups.iter().all(|g| inbox.has(g, "firing"));
        if !alerted {
            println!("Unexpected: on-call was not alerted for every rule the outage broke.");
        }
        daemon.handle.send(crate::context::Control::Shutdown).await;
        daemon.wait().await?;
        let exact = exact && alerted && all_resolved && repaired;
        println!("\nLook further:");
        println!("  {me} violations list --config {config_arg}");
        if let Some(id) = fixed {
            println!(
                "  {me} violations list --state all --key {id} --config {config_arg}   (the fixed order's history)"
            );
        }
        if let Some(id) = rest.first() {
            println!(
                "  {me} explain paid_implies_reserved {id} --config {config_arg}   (the evidence for one order, now repaired)"
            );
        }
        println!(
            "  {me} audit list --config {config_arg}   (who approved what, and what was applied)"
        );
        println!("  {me} run --config {config_arg}   (the daemon again, on the same databases)");
        Ok(if exact {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}

/// The repairs of the orders still broken: waits until they are planned, lets a person approve
/// them on the page for `--approve-after` seconds, approves what is left through the API as
/// that person would, and waits until each is applied. Whether they all were.
async fn approve_and_apply(
    store: &crate::state::StateStore,
    rest: &[i64],
    address: std::net::SocketAddr,
    token: &str,
    approve_after: u32,
    story: &live::Story,
    me: &str,
) -> anyhow::Result<bool> {
    use crate::state::{RepairFilter, RepairState};
    let want = rest.len() * 2;
    let count = |state: RepairState| async move {
        store
            .repairs(&RepairFilter {
                rules: None,
                state: Some(state),
                limit: 1000,
                ..Default::default()
            })
            .await
            .map(|r| r.len())
    };
    let patience =
        story.real(std::time::Duration::from_secs(2 * 60)) + std::time::Duration::from_secs(10);
    let started = std::time::Instant::now();
    while count(RepairState::Pending).await? < want && started.elapsed() < patience {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    println!(
        "\ninvariantd planned {want} repairs for the other {} broken orders: reserve their stock, move them on to paid.",
        rest.len()
    );
    println!("They wait for on-call. Approve them on the page, with the token {token}:");
    println!("  http://{address}/");
    println!(
        "or: {me} repairs approve --rule paid_implies_reserved --url http://{address} --token {token}"
    );
    let wait = std::time::Duration::from_secs(u64::from(approve_after));
    if !wait.is_zero() {
        println!(
            "In {}s the demo approves what is left itself, through the same API.",
            wait.as_secs()
        );
    }
    let started = std::time::Instant::now();
    while started.elapsed() < wait && count(RepairState::Pending).await? > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let client = reqwest::Client::new();
    for rule in ["paid_implies_reserved", "order_not_stuck_processing"] {
        let answer = client
            .post(format!(
                "http://{address}/api/v1/rules/{rule}/repairs/approve"
            ))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(r#"{"comment": "approved in the demo"}"#)
            .send()
            .await?;
        if !answer.status().is_success() {
            println!(
                "Unexpected: approving the repairs of {rule} was refused ({}).",
                answer.status()
            );
        }
    }
    let started = std::time::Instant::now();
    while count(RepairState::Applied).await? < want && started.elapsed() < patience {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let applied = count(RepairState::Applied).await?;
    let skipped = count(RepairState::Skipped).await?;
    // Each applied repair's check after acting found its key holding, and resolved the
    // violation it was planned for: that is what "checked before and after" promises.
    let fixed = store
        .violations(&crate::state::ViolationFilter {
            rules: None,
            state: Some(crate::state::ViolationState::Resolved),
            limit: 1000,
            ..Default::default()
        })
        .await?
        .iter()
        .filter(|v| {
            v.resolved_by
                .as_deref()
                .is_some_and(|b| b.starts_with("repair #"))
        })
        .count();
    if applied == want && fixed < applied {
        println!(
            "Unexpected: {applied} repairs were applied, but only {fixed} fixed the violation they were for."
        );
        return Ok(false);
    }
    if applied == want {
        println!(
            "Approved by oncall: {applied} repairs applied, each checked against the data before and after: {fixed} violations resolved by their repair at once.{}",
            if skipped > 0 {
                format!(
                    " {skipped} planned for the order fixed by hand were closed: nothing left to do."
                )
            } else {
                String::new()
            }
        );
    } else {
        println!("Unexpected: {applied} of {want} repairs were applied.");
    }
    Ok(applied == want)
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
