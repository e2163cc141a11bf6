//! The example shop: the schemas of its four services (orders, payments, inventory, shipping),
//! and scenarios of orders — healthy ones in every state of the saga, and broken ones, each
//! recorded with the violations the shipped rules (`rules/`) must report for it. The demo
//! builds its databases from this, and so do the integration tests, on every database kind.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

use crate::config::SourceKind;

/// The four services, in the order their databases are named in configs.
pub const SERVICES: [&str; 4] = ["orders", "payments", "inventory", "shipping"];

/// What can go wrong with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// The inventory service was down: payment captured, nothing reserved, order stuck in
    /// `processing` for 45 minutes.
    Outage,
    /// The same, one minute ago: still within the rules' grace, so not yet judged.
    RecentOutage,
    /// Captured 25.00 for an order of 30.00.
    AmountMismatch,
    /// Two captures for one order.
    DoubleCapture,
    /// Shipped with no captured payment.
    ShippedUnpaid,
    /// Stock reserved two hours ago, no payment authorized or captured.
    ReservedUnpaid,
    /// Refunded, but the reservation still holds the stock.
    RefundNotReleased,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: i64,
    pub customer: String,
    pub status: &'static str,
    pub total: Decimal,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Payment {
    pub id: i64,
    pub order_id: i64,
    pub status: &'static str,
    pub amount: Decimal,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: i64,
    pub order_id: i64,
    pub sku: String,
    pub quantity: i64,
    pub state: &'static str,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Shipment {
    pub id: i64,
    pub order_id: i64,
    pub status: &'static str,
    pub updated_at: DateTime<Utc>,
}

/// A shop's data and what the rules must find in it.
#[derive(Debug, Clone)]
pub struct Shop {
    pub now: DateTime<Utc>,
    pub orders: Vec<Order>,
    pub payments: Vec<Payment>,
    pub reservations: Vec<Reservation>,
    pub shipments: Vec<Shipment>,
    /// Rule name → the order ids it must report.
    pub expected: BTreeMap<&'static str, BTreeSet<i64>>,
    next_order: i64,
    next_id: i64,
}

pub const RULES: [&str; 7] = [
    "paid_implies_reserved",
    "order_not_stuck_processing",
    "captured_amount_matches_total",
    "single_capture_per_order",
    "shipped_implies_paid",
    "reservation_has_payment",
    "refund_releases_stock",
];

impl Shop {
    pub fn new(now: DateTime<Utc>) -> Shop {
        Shop {
            now,
            orders: Vec::new(),
            payments: Vec::new(),
            reservations: Vec::new(),
            shipments: Vec::new(),
            expected: RULES.iter().map(|r| (*r, BTreeSet::new())).collect(),
            next_order: 1,
            next_id: 1,
        }
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn order(&mut self, status: &'static str, total: Decimal, age: Duration) -> i64 {
        let id = self.next_order;
        self.next_order += 1;
        let at = self.now - age;
        self.orders.push(Order {
            id,
            customer: format!("customer-{}", id % 97),
            status,
            total,
            created_at: at - Duration::minutes(3),
            updated_at: at,
        });
        id
    }

    fn pay(&mut self, order_id: i64, status: &'static str, amount: Decimal, age: Duration) {
        let id = self.id();
        let updated_at = self.now - age;
        self.payments.push(Payment {
            id,
            order_id,
            status,
            amount,
            updated_at,
        });
    }

    fn reserve(&mut self, order_id: i64, state: &'static str, age: Duration) {
        let id = self.id();
        let updated_at = self.now - age;
        // Two order lines for even orders: `many: true` datasets see lists longer than one.
        for line in 0..(1 + (order_id % 2)) {
            self.reservations.push(Reservation {
                id: id * 10 + line,
                order_id,
                sku: format!("SKU-{:03}", (order_id * 7 + line) % 500),
                quantity: 1 + line,
                state,
                updated_at,
            });
        }
    }

    fn ship(&mut self, order_id: i64, status: &'static str, age: Duration) {
        let id = self.id();
        let updated_at = self.now - age;
        self.shipments.push(Shipment {
            id,
            order_id,
            status,
            updated_at,
        });
    }

    fn expect(&mut self, rule: &'static str, order_id: i64) {
        self.expected
            .get_mut(rule)
            .expect("a shipped rule")
            .insert(order_id);
    }

    /// Adds `n` healthy orders, cycling through every state of the saga. Amounts use two
    /// decimals on orders and three on payments (`10.10` against `10.100`): equal, exactly.
    pub fn healthy(&mut self, n: usize) -> &mut Self {
        for i in 0..n {
            let total = Decimal::new(1000 + (i as i64 * 137) % 9000, 2);
            let old = Duration::hours(2) + Duration::minutes(i as i64 % 600);
            match i % 6 {
                0 => {
                    let id = self.order("shipped", total, old);
                    self.pay(id, "captured", total, old);
                    self.reserve(id, "consumed", old);
                    self.ship(id, "shipped", old);
                }
                1 => {
                    let id = self.order("paid", total, old);
                    self.pay(id, "captured", total, old);
                    self.reserve(id, "reserved", old);
                    self.ship(id, "preparing", old);
                }
                2 => {
                    let id = self.order("cancelled", total, old);
                    self.pay(id, "refunded", total, old);
                    self.reserve(id, "released", old);
                }
                3 => {
                    let id = self.order("pending", total, old);
                    self.reserve(id, "reserved", old);
                    self.pay(id, "authorized", total, old);
                }
                4 => {
                    // Mid-saga right now: processing for two minutes is normal.
                    let recent = Duration::minutes(2);
                    let id = self.order("processing", total, recent);
                    self.reserve(id, "reserved", recent);
                    self.pay(id, "authorized", total, recent);
                }
                _ => {
                    let id = self.order("shipped", total, old);
                    self.pay(id, "captured", total, old);
                    self.reserve(id, "consumed", old);
                    self.ship(id, "delivered", old);
                }
            }
        }
        self
    }

    /// Adds one order broken by `anomaly`, and records what the rules must report.
    pub fn broken(&mut self, anomaly: Anomaly) -> i64 {
        let old = Duration::hours(2);
        match anomaly {
            Anomaly::Outage | Anomaly::RecentOutage => {
                let age = if anomaly == Anomaly::Outage {
                    Duration::minutes(45)
                } else {
                    Duration::minutes(1)
                };
                let total = Decimal::new(4990, 2);
                let id = self.order("processing", total, age);
                self.pay(id, "captured", total, age);
                if anomaly == Anomaly::Outage {
                    self.expect("paid_implies_reserved", id);
                    self.expect("order_not_stuck_processing", id);
                }
                id
            }
            Anomaly::AmountMismatch => {
                let id = self.order("paid", Decimal::new(3000, 2), old);
                self.pay(id, "captured", Decimal::new(2500, 2), old);
                self.reserve(id, "reserved", old);
                self.expect("captured_amount_matches_total", id);
                id
            }
            Anomaly::DoubleCapture => {
                let total = Decimal::new(2000, 2);
                let id = self.order("paid", total, old);
                self.pay(id, "captured", total, old);
                self.pay(id, "captured", total, old);
                self.reserve(id, "reserved", old);
                self.expect("single_capture_per_order", id);
                self.expect("captured_amount_matches_total", id);
                id
            }
            Anomaly::ShippedUnpaid => {
                let id = self.order("shipped", Decimal::new(1500, 2), old);
                self.reserve(id, "consumed", old);
                self.ship(id, "shipped", old);
                self.expect("shipped_implies_paid", id);
                id
            }
            Anomaly::ReservedUnpaid => {
                let id = self.order("pending", Decimal::new(1200, 2), old);
                self.reserve(id, "reserved", old);
                self.expect("reservation_has_payment", id);
                id
            }
            Anomaly::RefundNotReleased => {
                let total = Decimal::new(800, 2);
                let id = self.order("cancelled", total, old);
                self.pay(id, "refunded", total, old);
                self.reserve(id, "reserved", old);
                self.expect("refund_releases_stock", id);
                self.expect("reservation_has_payment", id);
                id
            }
        }
    }

    /// The statements that create and fill one service's database on `kind`.
    pub fn sql(&self, service: &str, kind: SourceKind) -> Vec<String> {
        let t = Types::of(kind);
        let ts = |at: &DateTime<Utc>| timestamp_literal(at, kind);
        let (ddl, rows): (String, Vec<String>) = match service {
            "orders" => (
                format!(
                    "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer {text} NOT NULL, status {text} NOT NULL, total NUMERIC(12,2) NOT NULL, created_at {ts} NOT NULL, updated_at {ts} NOT NULL)",
                    text = t.text,
                    ts = t.timestamp
                ),
                self.orders
                    .iter()
                    .map(|o| {
                        format!(
                            "({}, '{}', '{}', {}, {}, {})",
                            o.id,
                            o.customer,
                            o.status,
                            o.total,
                            ts(&o.created_at),
                            ts(&o.updated_at)
                        )
                    })
                    .collect(),
            ),
            "payments" => (
                format!(
                    "CREATE TABLE payments (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, status {text} NOT NULL, amount NUMERIC(12,3) NOT NULL, updated_at {ts} NOT NULL)",
                    text = t.text,
                    ts = t.timestamp
                ),
                self.payments
                    .iter()
                    .map(|p| {
                        format!(
                            "({}, {}, '{}', {}, {})",
                            p.id,
                            p.order_id,
                            p.status,
                            p.amount,
                            ts(&p.updated_at)
                        )
                    })
                    .collect(),
            ),
            "inventory" => (
                format!(
                    "CREATE TABLE reservations (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, sku {text} NOT NULL, quantity INTEGER NOT NULL, state {text} NOT NULL, updated_at {ts} NOT NULL)",
                    text = t.text,
                    ts = t.timestamp
                ),
                self.reservations
                    .iter()
                    .map(|r| {
                        format!(
                            "({}, {}, '{}', {}, '{}', {})",
                            r.id,
                            r.order_id,
                            r.sku,
                            r.quantity,
                            r.state,
                            ts(&r.updated_at)
                        )
                    })
                    .collect(),
            ),
            "shipping" => (
                format!(
                    "CREATE TABLE shipments (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, status {text} NOT NULL, updated_at {ts} NOT NULL)",
                    text = t.text,
                    ts = t.timestamp
                ),
                self.shipments
                    .iter()
                    .map(|s| {
                        format!(
                            "({}, {}, '{}', {})",
                            s.id,
                            s.order_id,
                            s.status,
                            ts(&s.updated_at)
                        )
                    })
                    .collect(),
            ),
            other => panic!("no service named {other}"),
        };
        let table = match service {
            "orders" => "orders",
            "payments" => "payments",
            "inventory" => "reservations",
            _ => "shipments",
        };
        let mut statements = vec![ddl];
        for chunk in rows.chunks(500) {
            statements.push(format!("INSERT INTO {table} VALUES {}", chunk.join(", ")));
        }
        statements
    }
}

struct Types {
    text: &'static str,
    timestamp: &'static str,
}

impl Types {
    /// Each database as its users write it: PostgreSQL with time zones, MySQL with DATETIME,
    /// SQLite with RFC 3339 text.
    fn of(kind: SourceKind) -> Types {
        match kind {
            SourceKind::Postgres => Types {
                text: "TEXT",
                timestamp: "TIMESTAMPTZ",
            },
            SourceKind::MySql => Types {
                text: "VARCHAR(64)",
                timestamp: "DATETIME(6)",
            },
            SourceKind::Sqlite => Types {
                text: "TEXT",
                timestamp: "TEXT",
            },
        }
    }
}

fn timestamp_literal(at: &DateTime<Utc>, kind: SourceKind) -> String {
    match kind {
        SourceKind::Postgres => format!("'{}'", at.format("%Y-%m-%d %H:%M:%S%.6f+00")),
        SourceKind::MySql => format!("'{}'", at.format("%Y-%m-%d %H:%M:%S%.6f")),
        SourceKind::Sqlite => format!(
            "'{}'",
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
    }
}

/// The standard scenario: healthy traffic and one order broken in every way, plus the
/// outage of the design story.
pub fn scenario(now: DateTime<Utc>, healthy: usize) -> Shop {
    let mut shop = Shop::new(now);
    shop.healthy(healthy);
    for anomaly in [
        Anomaly::Outage,
        Anomaly::RecentOutage,
        Anomaly::AmountMismatch,
        Anomaly::DoubleCapture,
        Anomaly::ShippedUnpaid,
        Anomaly::ReservedUnpaid,
        Anomaly::RefundNotReleased,
    ] {
        shop.broken(anomaly);
    }
    shop.healthy(healthy);
    shop
}
