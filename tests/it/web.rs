//! The web page in a real headless Chromium, driven through ChromeDriver (W3C WebDriver):
//! the evidence, an approve click that really applies a repair, hostile data shown as text,
//! and a layout that fits a phone.

use std::time::Duration;

use invariantd::config::SourceKind;
use serde_json::{Value, json};

use crate::harness::{TOKEN, TestDb, Workdir, eventually, http, terminate_within, tokens_file};

/// A Chromium session through ChromeDriver, both ended when dropped.
struct Browser {
    driver: std::process::Child,
    base: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

const CHROME_ARGS: [&str; 8] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=390,844",
];

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; .ci/run installs it)");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            client,
            _profile: profile,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while browser
            .client
            .get(format!("{}/status", browser.base))
            .send()
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args: Vec<String> = CHROME_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let answer = browser.call("POST", "/session", Some(caps)).await;
        let session = answer["sessionId"].as_str().expect("a session").to_string();
        browser.base = format!("{}/session/{session}", browser.base);
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self
                .client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.unwrap_or(json!({})).to_string()),
        };
        let text = request.send().await.unwrap().text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn run(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    async fn click(&self, css: &str) {
        let found = self
            .call(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string();
        self.call("POST", &format!("/element/{id}/click"), None)
            .await;
    }

    /// Waits for a prompt and answers it with `text`.
    async fn answer_prompt(&self, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let shown = self.call("GET", "/alert/text", None).await;
            if shown.is_string() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no prompt: {shown}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.call("POST", "/alert/text", Some(json!({ "text": text })))
            .await;
        self.call("POST", "/alert/accept", None).await;
    }

    /// Waits for a dialog (alert, confirm or prompt) and returns its text, leaving it open.
    async fn dialog_text(&self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let shown = self.call("GET", "/alert/text", None).await;
            if let Some(text) = shown.as_str() {
                return text.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no dialog: {shown}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `script` (an expression) is true in the page.
    async fn until(&self, script: &str, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.run(&format!("return Boolean({script});")).await != json!(true) {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; then ChromeDriver goes.
        let base = self.base.clone();
        let _ = std::thread::spawn(move || {
            let _ = reqwest::blocking::Client::new().delete(base).send();
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A workdir reading payments and inventory, with a writer on inventory for the repairs.
fn shop(payments: &TestDb, inventory: &TestDb, rules: &str) -> Workdir {
    Workdir::new(
        &[
            ("payments", &payments.url),
            ("inventory", &inventory.url),
            ("inventory_writer", &inventory.admin_url),
        ],
        Some(rules),
    )
}

#[tokio::test]
async fn the_page_shows_the_evidence_and_an_approve_click_applies_the_repair() {
    let payments = TestDb::new(SourceKind::Sqlite, "web_payments").await;
    let inventory = TestDb::new(SourceKind::Sqlite, "web_inventory").await;
    payments
        .exec_str(&[
            "CREATE TABLE payments (order_id INTEGER NOT NULL, reference TEXT NOT NULL)",
            "INSERT INTO payments VALUES (1, 'fine'), (2, '<img src=x onerror=\"document.title=1\">')",
        ])
        .await;
    inventory
        .exec_str(&[
            "CREATE TABLE reservations (order_id INTEGER NOT NULL)",
            "INSERT INTO reservations VALUES (1)",
        ])
        .await;
    let rules = r#"
name: paid_implies_reserved
description: Every captured payment has its stock reserved.
severity: critical
every: 1s
key: order_id
datasets:
  payment: { source: payments, query: "SELECT order_id, reference FROM payments" }
  reservation: { source: inventory, query: "SELECT order_id FROM reservations" }
assert: payment == null || reservation != null
message: "order {{key}} ({{payment.reference}}) is paid, nothing reserved"
repair:
  mode: approve
  action:
    sql:
      source: inventory_writer
      statement: "INSERT INTO reservations (order_id) VALUES ($1)"
      params: [key]
"#;
    let w = shop(&payments, &inventory, rules);
    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(20), "a repair pending", || {
        http(port, "GET", "/api/v1/repairs?state=pending")
            .1
            .contains("\"key\":\"2\"")
    })
    .await;

    let browser = Browser::start().await;
    let page = format!("http://127.0.0.1:{port}/");
    browser.go(&page).await;
    browser
        .until(
            "document.body.innerText.includes('Repairs waiting for a person')",
            "the page shows the repairs",
        )
        .await;
    // Hostile data is text, not markup.
    assert_eq!(
        browser
            .run("return document.querySelectorAll('img').length;")
            .await,
        0
    );
    let text = browser
        .run("return document.body.innerText;")
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains("<img src=x onerror=\"document.title=1\">"),
        "{text}"
    );
    assert_eq!(browser.run("return document.title;").await, "invariantd");
    // The planned action as it will run: the statement and this repair's values.
    assert!(
        text.contains("INSERT INTO reservations (order_id) VALUES ($1)")
            && text.contains("with parameters: 2"),
        "{text}"
    );
    // It fits a phone: nothing wider than the screen.
    assert_eq!(
        browser
            .run("return document.documentElement.scrollWidth <= window.innerWidth;")
            .await,
        true
    );

    // The evidence, judged now.
    browser.click("button[data-act=explain]").await;
    browser
        .until(
            "document.querySelector('.evidence .verdict') && document.querySelector('.evidence .verdict').textContent == 'violated'",
            "the evidence shows the violation",
        )
        .await;
    assert!(
        browser
            .run("return document.querySelector('.evidence').innerText;")
            .await
            .as_str()
            .unwrap()
            .contains("reservation != null")
    );

    // Approve: the token is asked once, sent as a header, never kept in a cookie.
    browser.click("button[data-act=approve]").await;
    browser.answer_prompt(TOKEN).await;
    browser
        .until(
            "document.querySelector('.repair .result').textContent.includes('approved by ops')",
            "the approval is confirmed",
        )
        .await;
    assert_eq!(browser.run("return document.cookie;").await, "");
    eventually(Duration::from_secs(20), "the repair is applied", || {
        http(port, "GET", "/api/v1/repairs?state=applied")
            .1
            .contains("\"key\":\"2\"")
    })
    .await;
    assert_eq!(
        inventory
            .count("SELECT COUNT(*) FROM reservations WHERE order_id = 2")
            .await,
        1
    );
    eventually(Duration::from_secs(20), "the violation resolves", || {
        http(port, "GET", "/api/v1/violations")
            .1
            .contains("\"items\":[]")
    })
    .await;
    browser.go(&page).await;
    browser
        .until(
            "document.body.innerText.includes('Every invariant holds')",
            "the page shows everything green",
        )
        .await;
    drop(browser);
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn with_read_tokens_the_page_asks_once_and_approve_all_approves_a_rule() {
    let payments = TestDb::new(SourceKind::Sqlite, "web_payments").await;
    let inventory = TestDb::new(SourceKind::Sqlite, "web_inventory").await;
    payments
        .exec_str(&[
            "CREATE TABLE payments (order_id INTEGER NOT NULL)",
            "INSERT INTO payments VALUES (1), (2), (3)",
        ])
        .await;
    inventory
        .exec_str(&["CREATE TABLE reservations (order_id INTEGER NOT NULL)"])
        .await;
    let rules = r#"
name: paid_implies_reserved
every: 1s
key: order_id
datasets:
  payment: { source: payments, query: "SELECT order_id FROM payments" }
  reservation: { source: inventory, query: "SELECT order_id FROM reservations" }
assert: payment == null || reservation != null
repair:
  action:
    sql:
      source: inventory_writer
      statement: "INSERT INTO reservations (order_id) VALUES ($1)"
      params: [key]
"#;
    let w = shop(&payments, &inventory, rules);
    let auth =
        tokens_file(w.path()).replace("tokens_file: tokens", "tokens_file: tokens, read: token");
    let (mut daemon, port) = w.spawn_daemon(&auth, std::process::Stdio::null()).await;
    let pending = || {
        crate::harness::http_as(port, "GET", "/api/v1/repairs?state=pending", Some(TOKEN))
            .1
            .matches("\"key\"")
            .count()
    };
    eventually(Duration::from_secs(20), "three repairs pending", || {
        pending() == 3
    })
    .await;

    let browser = Browser::start().await;
    browser.go(&format!("http://127.0.0.1:{port}/")).await;
    // Reads need the token: the page asks for it once, then loads its content with it.
    browser.answer_prompt(TOKEN).await;
    browser
        .until(
            "document.body.innerText.includes('Approve all 3 of paid_implies_reserved')",
            "the content loads with the token",
        )
        .await;
    browser.click("button[data-act=approve-rule]").await;
    browser.dialog_text().await;
    browser.call("POST", "/alert/accept", None).await;
    browser
        .until(
            "document.querySelector('.bulk .result').textContent == '3 approved'",
            "all three approved without asking again",
        )
        .await;
    eventually(Duration::from_secs(20), "all three applied", || {
        crate::harness::http_as(port, "GET", "/api/v1/repairs?state=applied", Some(TOKEN))
            .1
            .matches("\"key\"")
            .count()
            == 3
    })
    .await;
    assert_eq!(
        inventory.count("SELECT COUNT(*) FROM reservations").await,
        3
    );
    drop(browser);
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}

/// What on-call sees first, in order, and what a click does: the critical rule above the
/// warning one with its money at risk, its repairs above the warning rule's; a bulk approval
/// that names what it approves and can be declined; cards that show what became of each
/// repair without a reload and cannot be pressed twice; and a rule's view whose charts are
/// drawn from the store's history — all on a 390 px wide screen.
#[tokio::test]
async fn the_page_answers_on_call_in_order_and_each_click_says_what_it_did() {
    use invariantd::engine::run_rule_with_open;
    let payments = TestDb::new(SourceKind::Sqlite, "web_payments").await;
    let inventory = TestDb::new(SourceKind::Sqlite, "web_inventory").await;
    payments
        .exec_str(&[
            "CREATE TABLE payments (order_id INTEGER NOT NULL, amount_cents INTEGER NOT NULL)",
            "INSERT INTO payments VALUES (1, 500), (2, 1010), (3, 2020), (7, 10), (8, 20)",
        ])
        .await;
    inventory
        .exec_str(&[
            "CREATE TABLE reservations (order_id INTEGER NOT NULL)",
            "INSERT INTO reservations VALUES (1)",
            "CREATE TABLE invoices (order_id INTEGER NOT NULL)",
            "INSERT INTO invoices VALUES (1), (2), (7), (8)",
        ])
        .await;
    let rules = r#"
name: invoiced
description: Every payment has an invoice.
severity: warning
every: 1s
key: order_id
datasets:
  payment: { source: payments, query: "SELECT order_id FROM payments" }
  invoice: { source: inventory, query: "SELECT order_id FROM invoices" }
assert: payment == null || invoice != null
repair:
  mode: approve
  action:
    sql:
      source: inventory_writer
      statement: "INSERT INTO invoices (order_id) VALUES ($1)"
      params: [key]
---
name: paid_implies_reserved
description: Every captured payment has its stock reserved.
severity: critical
every: 1s
key: order_id
datasets:
  payment: { source: payments, query: "SELECT order_id, amount_cents FROM payments" }
  reservation: { source: inventory, query: "SELECT order_id FROM reservations" }
assert: payment == null || reservation != null
impact: { value: payment.amount_cents, unit: cents, scale: 0.01, display_unit: EUR }
repair:
  mode: approve
  action:
    sql:
      source: inventory_writer
      statement: "INSERT INTO reservations (order_id) VALUES ($1)"
      params: [key]
"#;
    let w = shop(&payments, &inventory, rules);
    tokens_file(w.path());

    // History before the daemon: orders 7 and 8 broke five hours ago, 7 was fixed two hours
    // ago, 8 just before the daemon starts. Recorded by real runs at those times.
    let t = chrono::Utc::now();
    let h = |n: i64| t - chrono::Duration::hours(n);
    {
        let (config, loaded) = w.load();
        let rule = loaded
            .iter()
            .find(|r| r.name == "paid_implies_reserved")
            .unwrap();
        let sources = invariantd::sources::Sources::new(&config.sources, config.secrets.clone());
        let store = invariantd::state::StateStore::open(&config.state)
            .await
            .unwrap();
        inventory
            .exec_str(&["INSERT INTO reservations VALUES (2), (3)"])
            .await;
        for (at, fix) in [
            (h(5), "INSERT INTO reservations VALUES (7)"),
            (h(2), "INSERT INTO reservations VALUES (8)"),
            (h(1), "DELETE FROM reservations WHERE order_id IN (2, 3)"),
        ] {
            let open = store.open_violations(&rule.name).await.unwrap();
            let keys = invariantd::state::keys_of(&open);
            let run = run_rule_with_open(rule, &sources, at, &keys, None).await;
            store.record(&run, &open, None).await.unwrap();
            inventory.exec_str(&[fix]).await;
        }
        drop(store);
    }
    // Open: 7 and 8 from 5 h ago until 2 h ago; 8 alone from 2 h until 1 h ago.
    let expected = |at: chrono::DateTime<chrono::Utc>| -> (i64, &'static str) {
        if at < h(5) || at >= h(1) {
            (0, "0")
        } else if at < h(2) {
            (2, "30")
        } else {
            (1, "20")
        }
    };

    let (mut daemon, port) = w
        .spawn_daemon(&tokens_file(w.path()), std::process::Stdio::null())
        .await;
    eventually(Duration::from_secs(20), "three repairs pending", || {
        http(port, "GET", "/api/v1/repairs?state=pending")
            .1
            .matches("\"key\"")
            .count()
            == 3
    })
    .await;

    let browser = Browser::start().await;
    let page = format!("http://127.0.0.1:{port}/");
    browser.go(&page).await;
    browser
        .until("document.querySelector('table.summary')", "the summary")
        .await;
    // One line per rule, critical first, with its money at risk and what waits.
    let lines = browser
        .run("return [...document.querySelectorAll('table.summary tbody tr')].map(r => [...r.cells].map(c => c.innerText.trim()));")
        .await;
    assert_eq!(lines[0][0], "critical", "{lines}");
    assert!(
        lines[0][1]
            .as_str()
            .unwrap()
            .starts_with("paid_implies_reserved"),
        "{lines}"
    );
    assert_eq!(
        (
            lines[0][2].as_str(),
            lines[0][3].as_str(),
            lines[0][5].as_str()
        ),
        (Some("2"), Some("30.30 EUR"), Some("2")),
        "{lines}"
    );
    assert!(
        lines[0][6].as_str().unwrap().starts_with("fail, "),
        "{lines}"
    );
    assert_eq!(lines[1][0], "warning", "{lines}");
    assert_eq!(lines.as_array().unwrap().len(), 2, "{lines}");
    // The repairs waiting, in the same order: never the warning rule's above the critical's.
    assert_eq!(
        browser
            .run("return [...document.querySelectorAll('.repair')].map(c => c.dataset.rule);")
            .await,
        json!(["paid_implies_reserved", "paid_implies_reserved", "invoiced"])
    );
    // Times read as people say them, the exact time on hover.
    assert_eq!(
        browser.run("const t = document.querySelector('.repair time'); return /ago|just now/.test(t.textContent) && t.title.endsWith('Z');").await,
        true
    );
    // No JSON dumps: rows are tables with their column names.
    assert_eq!(
        browser
            .run("return document.querySelectorAll('main pre:not(.action)').length;")
            .await,
        0
    );
    assert_eq!(
        browser.run("return [...document.querySelectorAll('.repair table.rows th')].slice(0, 2).map(h => h.textContent);").await,
        json!(["order_id", "amount_cents"])
    );
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth;";
    assert_eq!(browser.run(fits).await, true, "the front fits 390 px");
    browser.run("window.notReloaded = true; return 1;").await;

    // Approve all asks first, naming the count, the rule and the money; declining does nothing.
    let bulk = "button[data-act=approve-rule][data-rule=paid_implies_reserved]";
    browser.click(bulk).await;
    let asked = browser.dialog_text().await;
    assert!(
        asked.contains("2")
            && asked.contains("paid_implies_reserved")
            && asked.contains("30.30 EUR"),
        "{asked}"
    );
    browser.call("POST", "/alert/dismiss", None).await;
    browser
        .until(
            "document.querySelector('.bulk .result').textContent == 'nothing approved'",
            "declined",
        )
        .await;
    assert_eq!(
        http(port, "GET", "/api/v1/repairs?state=pending")
            .1
            .matches("\"key\"")
            .count(),
        3
    );
    browser.click(bulk).await;
    browser.dialog_text().await;
    browser.call("POST", "/alert/accept", None).await;
    browser.answer_prompt(TOKEN).await;
    // Each card follows its repair to the end, in place: applied, with what the check found.
    browser
        .until(
            "[...document.querySelectorAll('.repair[data-rule=paid_implies_reserved] .state')].every(s => s.textContent == 'applied')",
            "both cards show applied without a reload",
        )
        .await;
    let said = browser
        .run("return document.querySelector('.repair[data-rule=paid_implies_reserved] .result').textContent;")
        .await;
    assert!(
        said.as_str().unwrap().contains("the invariant holds now"),
        "{said}"
    );
    assert_eq!(
        browser.run("return [...document.querySelectorAll('.repair[data-rule=paid_implies_reserved] button.approve, .repair[data-rule=paid_implies_reserved] button.reject')].every(b => b.disabled);").await,
        true
    );
    // Reject, pressed twice at once: one request, and the card names who rejected it.
    browser
        .run("const b = document.querySelector('.repair[data-rule=invoiced] button.reject'); b.click(); b.click(); return b.disabled;")
        .await;
    browser
        .until(
            "document.querySelector('.repair[data-rule=invoiced] .result').textContent == 'rejected by ops'",
            "the card says who rejected it",
        )
        .await;
    assert_eq!(
        browser
            .run(
                "return document.querySelector('.repair[data-rule=invoiced] .decider').textContent;"
            )
            .await,
        " · rejected by ops"
    );
    assert_eq!(
        browser.run("return window.notReloaded === true;").await,
        true
    );
    let (_, audit) = http(port, "GET", "/api/v1/repairs?state=rejected");
    assert_eq!(
        audit.matches("\"rejected_by\":\"ops\"").count(),
        1,
        "{audit}"
    );

    // The rule's view: its charts drawn from the store's history.
    browser
        .go(&format!("{page}rules/paid_implies_reserved"))
        .await;
    browser
        .until(
            "document.querySelectorAll('figure.chart').length == 4",
            "four charts",
        )
        .await;
    assert_eq!(browser.run(fits).await, true, "the rule's view fits 390 px");
    let charts = browser
        .run("return [...document.querySelectorAll('figure.chart')].map(f => [f.dataset.window, f.dataset.measure, [...f.querySelectorAll('circle.point')].map(c => [c.dataset.at, c.dataset.value])]);")
        .await;
    let mut checked = 0;
    for chart in charts.as_array().unwrap() {
        let money = chart[1] == "money at risk";
        let points = chart[2].as_array().unwrap();
        assert_eq!(
            points.len(),
            if chart[0] == "24h" { 49 } else { 57 },
            "{chart}"
        );
        for p in points {
            let at: chrono::DateTime<chrono::Utc> = p[0].as_str().unwrap().parse().unwrap();
            if at >= h(1) {
                continue; // the daemon's own violations, opened and repaired in seconds
            }
            let (open, risk) = expected(at);
            let value = p[1].as_str().unwrap();
            if money {
                assert_eq!(
                    value.parse::<rust_decimal::Decimal>().unwrap(),
                    risk.parse().unwrap(),
                    "{chart}"
                );
            } else {
                assert_eq!(value, open.to_string(), "at {at}: {chart}");
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
    // The same points through the API.
    let (_, body) = http(
        port,
        "GET",
        "/api/v1/rules/paid_implies_reserved/history?window=24h",
    );
    let api: Value = serde_json::from_str(&body).unwrap();
    let two_open = api["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["open"] == 2)
        .count();
    assert!((5..=7).contains(&two_open), "{body}");
    // The last runs, and the repairs with who decided.
    let text = browser
        .run("return document.body.innerText;")
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains("Last runs") && text.contains("approved by ops"),
        "{text}"
    );
    drop(browser);
    terminate_within(&mut daemon, Duration::from_secs(20)).await;
}
