//! The demo's on-call inbox: a webhook receiver on loopback that the demo's daemon sends its
//! alerts to, as any webhook endpoint would get them. Each alert is appended to
//! `alerts.jsonl` in the demo directory and its title printed, so the story shows what the
//! person on call would have received, when.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use tokio_util::sync::CancellationToken;

/// A running inbox; stopped when dropped.
pub struct Inbox {
    /// Where the daemon sends to (loopback when the inbox listens on every address).
    pub address: std::net::SocketAddr,
    pub file: PathBuf,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    stop: CancellationToken,
}

struct Shared {
    file: PathBuf,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    body: axum::Json<serde_json::Value>,
) -> &'static str {
    let axum::Json(alert) = body;
    println!(
        "  alert to on-call: {}",
        crate::value::terminal_safe(alert["title"].as_str().unwrap_or("(untitled)"))
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&shared.file)
    {
        let _ = writeln!(f, "{alert}");
    }
    shared.received.lock().expect("inbox lock").push(alert);
    "ok"
}

impl Inbox {
    /// Listens on `ip`, on a free port.
    pub async fn start(dir: &Path, ip: std::net::IpAddr) -> anyhow::Result<Inbox> {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
        let address = super::reachable(listener.local_addr()?);
        let file = dir.join("alerts.jsonl");
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            file: file.clone(),
            received: received.clone(),
        });
        let app = axum::Router::new()
            .route("/", post(receive))
            .with_state(shared);
        let stop = CancellationToken::new();
        tokio::spawn(crate::http::serve::serve(listener, app, stop.clone()));
        Ok(Inbox {
            address,
            file,
            received,
            stop,
        })
    }

    /// The `alerting` section that sends every alert here, and the `outbound.allow` entry
    /// that lets alerts reach its address.
    pub fn config(&self) -> String {
        let ip = self.address.ip();
        let url = format!("http://{}/", self.address);
        format!(
            "outbound: {{ allow: [\"{ip}\"] }}\nalerting:\n  for: 0s\n  evaluation_interval: 1s\n  sample_size: 3\n  receivers:\n    on-call: {{ webhook: {{ url: \"{url}\" }} }}\n  routes:\n    - {{ receivers: [on-call] }}\n"
        )
    }

    /// Whether an alert of `group` with `event` has arrived.
    pub fn has(&self, group: &str, event: &str) -> bool {
        self.received
            .lock()
            .expect("inbox lock")
            .iter()
            .any(|a| a["group"] == group && a["event"] == event)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
