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
    let w = Workdir::new(
        &[
            ("payments", &payments.url),
            ("inventory", &inventory.url),
            ("inventory_writer", &inventory.admin_url),
        ],
        Some(rules),
    );
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
    let w = Workdir::new(
        &[
            ("payments", &payments.url),
            ("inventory", &inventory.url),
            ("inventory_writer", &inventory.admin_url),
        ],
        Some(rules),
    );
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
