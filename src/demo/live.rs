//! The live demo: a shop taking orders through its saga on four SQLite databases, an inventory
//! outage in the middle, and the daemon watching — then a verdict: did invariantd find exactly
//! the orders the outage broke?
//!
//! Time: the shipped rules speak in minutes (15 minutes stuck, 5 minutes of grace). To tell
//! the story in about a minute, the demo runs a copy of the rules with every duration divided
//! by `--speed`, and the shop works at the same pace; timestamps stay real, so `grace` still
//! covers sagas in flight exactly as in production.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Executor};
use tokio::time::Instant;

use super::shop::{SERVICES, Shop};
use crate::config::SourceKind;

/// Divides every duration of a rule file by `speed`: `every:`, `grace:` and the literals of
/// `duration('…')`. Only the demo's copy of the rules is changed. `every` stays at least 1 s,
/// the shortest interval a rule may have.
pub fn scale_durations(text: &str, speed: u32) -> String {
    let scaled_ms = |d: &str| -> Option<i64> {
        let micros = crate::expr::parse_duration(d).ok()?;
        Some((micros / 1000 / i64::from(speed)).max(1))
    };
    let scale = |d: &str| scaled_ms(d).map(|ms| format!("{ms}ms"));
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let mut replaced = None;
        for (field, floor) in [("every: ", 1000), ("grace: ", 0)] {
            if let Some(value) = trimmed.strip_prefix(field)
                && let Some(ms) = scaled_ms(value.trim())
            {
                replaced = Some(format!("{field}{}ms\n", ms.max(floor)));
            }
        }
        match replaced {
            Some(r) => out.push_str(&r),
            None => {
                let mut rest = line;
                while let Some(i) = rest.find("duration('") {
                    let after = &rest[i + 10..];
                    let Some(end) = after.find('\'') else { break };
                    out.push_str(&rest[..i + 10]);
                    out.push_str(&scale(&after[..end]).unwrap_or_else(|| after[..end].to_string()));
                    rest = &after[end..];
                }
                out.push_str(rest);
            }
        }
    }
    out
}

/// How the story goes, in shop time (the real time is this divided by the speed).
pub struct Story {
    pub speed: u32,
    /// A new order every this long.
    pub order_every: Duration,
    /// Each step of the saga takes this long.
    pub step: Duration,
    /// The inventory service is down from … to ….
    pub outage: (Duration, Duration),
    /// The story ends (and the verdict is given) this long after the start.
    pub length: Duration,
}

impl Story {
    pub fn new(speed: u32) -> Story {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Story {
            speed,
            order_every: Duration::from_secs(15),
            step: Duration::from_secs(30),
            // Orders stuck from the outage's last minute still pass the 15-minute threshold
            // (plus grace and a run) before the end.
            outage: (minutes(5), minutes(12)),
            length: minutes(35),
        }
    }

    pub fn real(&self, d: Duration) -> Duration {
        d / self.speed
    }
}

struct Order {
    id: i64,
    total: rust_decimal::Decimal,
    step: u32,
    next_at: Instant,
    /// Caught by the outage: the saga captured the payment but never reserved stock.
    broken: bool,
}

/// The shop's four databases and its orders in flight.
pub struct Simulator {
    pools: BTreeMap<&'static str, SqlitePool>,
    orders: Vec<Order>,
    next_order: i64,
    next_id: i64,
    pub broken: BTreeSet<i64>,
    pub created: u64,
}

impl Simulator {
    /// Creates the databases (empty tables, WAL so the daemon reads while the shop writes).
    pub async fn create(dir: &Path) -> anyhow::Result<Simulator> {
        let empty = Shop::new(Utc::now());
        let mut pools = BTreeMap::new();
        for service in SERVICES {
            let options = SqliteConnectOptions::from_str("sqlite://")?
                .filename(dir.join(format!("{service}.db")))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            for statement in empty.sql(service, SourceKind::Sqlite) {
                pool.execute(AssertSqlSafe(statement)).await?;
            }
            pools.insert(service, pool);
        }
        Ok(Simulator {
            pools,
            orders: Vec::new(),
            next_order: 1,
            next_id: 1,
            broken: BTreeSet::new(),
            created: 0,
        })
    }

    async fn exec(&self, service: &str, sql: String) -> anyhow::Result<()> {
        self.pools[service].execute(AssertSqlSafe(sql)).await?;
        Ok(())
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Takes a new order.
    pub async fn new_order(&mut self, step: Duration) -> anyhow::Result<()> {
        let id = self.next_order;
        self.next_order += 1;
        self.created += 1;
        let total = rust_decimal::Decimal::new(1000 + (id * 731) % 9000, 2);
        let now = now();
        self.exec(
            "orders",
            format!("INSERT INTO orders VALUES ({id}, 'customer-{}', 'pending', {total}, '{now}', '{now}')", id % 97),
        )
        .await?;
        self.orders.push(Order {
            id,
            total,
            step: 0,
            next_at: Instant::now() + step,
            broken: false,
        });
        Ok(())
    }

    /// Moves every order whose next step is due one step through the saga.
    pub async fn advance(&mut self, inventory_up: bool, step: Duration) -> anyhow::Result<()> {
        let due: Vec<usize> = (0..self.orders.len())
            .filter(|i| self.orders[*i].next_at <= Instant::now())
            .collect();
        for i in due {
            let (id, total, current) =
                (self.orders[i].id, self.orders[i].total, self.orders[i].step);
            let now = now();
            let cancel = id % 11 == 0;
            match current {
                // Reserve stock, then authorize the payment and start processing.
                0 => {
                    if inventory_up {
                        let rid = self.id();
                        self.exec("inventory", format!("INSERT INTO reservations VALUES ({rid}, {id}, 'SKU-{:03}', 1, 'reserved', '{now}')", id % 500)).await?;
                    } else {
                        // The saga's bug: the reservation call fails and is not compensated.
                        self.orders[i].broken = true;
                    }
                    let pid = self.id();
                    self.exec("payments", format!("INSERT INTO payments VALUES ({pid}, {id}, 'authorized', {total}, '{now}')")).await?;
                    self.exec("orders", format!("UPDATE orders SET status = 'processing', updated_at = '{now}' WHERE id = {id}")).await?;
                }
                // Capture the payment; a healthy order becomes paid, a broken one stays processing.
                1 => {
                    if cancel && !self.orders[i].broken {
                        self.exec("payments", format!("UPDATE payments SET status = 'refunded', updated_at = '{now}' WHERE order_id = {id}")).await?;
                        self.exec("inventory", format!("UPDATE reservations SET state = 'released', updated_at = '{now}' WHERE order_id = {id}")).await?;
                        self.exec("orders", format!("UPDATE orders SET status = 'cancelled', updated_at = '{now}' WHERE id = {id}")).await?;
                        self.orders[i].step = u32::MAX;
                        continue;
                    }
                    self.exec("payments", format!("UPDATE payments SET status = 'captured', updated_at = '{now}' WHERE order_id = {id}")).await?;
                    if self.orders[i].broken {
                        self.broken.insert(id);
                        self.orders[i].step = u32::MAX; // stuck in processing for good
                        continue;
                    }
                    self.exec("orders", format!("UPDATE orders SET status = 'paid', updated_at = '{now}' WHERE id = {id}")).await?;
                }
                // Ship.
                2 => {
                    let sid = self.id();
                    self.exec(
                        "shipping",
                        format!("INSERT INTO shipments VALUES ({sid}, {id}, 'shipped', '{now}')"),
                    )
                    .await?;
                    self.exec("inventory", format!("UPDATE reservations SET state = 'consumed', updated_at = '{now}' WHERE order_id = {id}")).await?;
                    self.exec("orders", format!("UPDATE orders SET status = 'shipped', updated_at = '{now}' WHERE id = {id}")).await?;
                    self.orders[i].step = u32::MAX;
                    continue;
                }
                _ => continue,
            }
            self.orders[i].step += 1;
            self.orders[i].next_at = Instant::now() + step;
        }
        self.orders.retain(|o| o.step != u32::MAX);
        Ok(())
    }

    /// What an operator does by hand for a broken order: reserves its stock and moves the order
    /// on, so every rule holds for it again.
    pub async fn fix_by_hand(&mut self, id: i64) -> anyhow::Result<()> {
        let now = now();
        let rid = self.id();
        self.exec(
            "inventory",
            format!("INSERT INTO reservations VALUES ({rid}, {id}, 'SKU-{:03}', 1, 'reserved', '{now}')", id % 500),
        )
        .await?;
        self.exec(
            "orders",
            format!("UPDATE orders SET status = 'paid', updated_at = '{now}' WHERE id = {id}"),
        )
        .await
    }

    /// What the rules must report when the story ends: every broken order, in the two rules
    /// the outage breaks, and nothing else.
    pub fn expected(&self) -> BTreeMap<&'static str, BTreeSet<i64>> {
        let mut e: BTreeMap<&'static str, BTreeSet<i64>> = super::shop::RULES
            .iter()
            .map(|r| (*r, BTreeSet::new()))
            .collect();
        e.insert("paid_implies_reserved", self.broken.clone());
        e.insert("order_not_stuck_processing", self.broken.clone());
        e
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Runs the story: the shop on its own task until `story.length`, reporting through `report`
/// every few seconds with (elapsed, orders taken, inventory up, broken orders so far).
pub async fn simulate(
    sim: &mut Simulator,
    story: &Story,
    mut report: impl FnMut(Duration, u64, bool, usize),
) -> anyhow::Result<()> {
    let start = Instant::now();
    let step = story.real(story.step);
    let mut next_order = start;
    let mut next_report = start;
    while start.elapsed() < story.real(story.length) {
        let elapsed = start.elapsed();
        let inventory_up =
            !(story.real(story.outage.0)..story.real(story.outage.1)).contains(&elapsed);
        // New orders stop a little before the end, so none is mid-saga at the verdict.
        if Instant::now() >= next_order && elapsed + 4 * step < story.real(story.length) {
            sim.new_order(step).await?;
            next_order += story.real(story.order_every);
        }
        sim.advance(inventory_up, step).await?;
        if Instant::now() >= next_report {
            report(elapsed, sim.created, inventory_up, sim.broken.len());
            next_report += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rule_durations_are_divided_by_the_speed() {
        let text = "every: 1m\ngrace: 5m\nassert: now - order.updated_at <= duration('15m') && x < duration('1h')\n";
        assert_eq!(
            super::scale_durations(text, 30),
            "every: 2000ms\ngrace: 10000ms\nassert: now - order.updated_at <= duration('30000ms') && x < duration('120000ms')\n"
        );
        // Never below the shortest interval a rule may have.
        assert!(super::scale_durations("every: 1m\n", 120).starts_with("every: 1000ms"));
    }
}
