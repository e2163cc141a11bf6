//! The HTTP server under hostile clients: half-open connections time out, connections are
//! capped by closing the oldest unfinished one (and the cap is logged), a request has one
//! deadline for its headers and body, changes from another origin are refused, bodies are
//! bounded, and every error answer is the documented JSON.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::harness::{TOKEN, free_port};

/// A log sink for one test's events.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether the server closed the connection (EOF or reset) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response; wait for the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn half_open_and_idle_connections_time_out_and_connections_are_capped() {
    let log = Captured::default();
    let sink = log.clone();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
    let stop = CancellationToken::new();
    let server = tokio::spawn(invariantd::http::serve::serve_with(
        listener,
        app,
        stop.clone(),
        20,
        Duration::from_secs(1),
    ));

    let figures = tokio::task::spawn_blocking(move || {
        // 40 clients that never finish their headers, one after the other: each of the last
        // 20 makes room by closing the oldest unfinished one, so the first 20 are closed.
        let mut half_open: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n").unwrap();
                std::thread::sleep(Duration::from_millis(5));
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let closed: Vec<bool> = half_open
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(10)))
            .collect();
        assert_eq!(
            closed,
            (0..40).map(|i| i < 20).collect::<Vec<_>>(),
            "the oldest unfinished connections are the ones closed"
        );
        let refused_at_once = closed.iter().filter(|c| **c).count();
        let started = Instant::now();
        for s in &mut half_open {
            assert!(
                closed_within(s, Duration::from_secs(3)),
                "a half-open connection was kept past the header timeout"
            );
        }
        let all_closed_after = started.elapsed();

        // A kept-alive connection that asks nothing more is closed too.
        let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
        idle.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 256];
        let n = idle.read(&mut answer).unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
        let idle_since = Instant::now();
        assert!(
            closed_within(&mut idle, Duration::from_secs(3)),
            "an idle connection was kept"
        );
        (refused_at_once, all_closed_after, idle_since.elapsed())
    })
    .await
    .unwrap();
    let (refused_at_once, all_closed_after, idle_closed_after) = figures;
    assert!(
        refused_at_once >= 20,
        "{refused_at_once} connections over the cap were refused at once"
    );
    assert!(
        all_closed_after < Duration::from_millis(1800),
        "{all_closed_after:?}"
    );
    assert!(
        idle_closed_after > Duration::from_millis(500)
            && idle_closed_after < Duration::from_millis(1800),
        "{idle_closed_after:?}"
    );
    // And the server answers as before.
    let (status, _) = tokio::task::spawn_blocking(move || crate::harness::http(port, "GET", "/ok"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("Too many HTTP connections") && logged.contains("max_connections=20"),
        "{logged}"
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}

async fn call(
    app: &axum::Router,
    request: axum::http::request::Builder,
    body: Body,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, headers, json)
}

#[tokio::test]
async fn changes_from_another_origin_big_bodies_and_router_errors_get_json_refusals() {
    let app = crate::auth::router("").await;
    let reload = || {
        Request::post("/api/v1/reload")
            .header(header::HOST, "127.0.0.1:9464")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
    };
    // A page elsewhere posting with the operator's token (say, from a browser extension).
    let (status, _, body) = call(
        &app,
        reload().header(header::ORIGIN, "https://evil.example"),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"],
        "requests from another origin cannot change anything"
    );
    let (status, _, body) = call(
        &app,
        reload().header("sec-fetch-site", "cross-site"),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "cross-site requests cannot change anything");
    // Its own origin, and clients without one, get through (no supervisor here: 503).
    for request in [
        reload().header(header::ORIGIN, "http://127.0.0.1:9464"),
        reload(),
    ] {
        let (status, _, _) = call(&app, request, Body::empty()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // Bodies: declared too big, or streamed too big.
    let big = vec![b'x'; 100 * 1024];
    let (status, _, body) = call(&app, reload(), Body::from(big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "the request body is over 64 KiB");
    let stream = futures_util::stream::iter(
        big.chunks(1024)
            .map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let (status, _, _) = call(&app, reload(), Body::from_stream(stream)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // The router's own errors.
    let (status, headers, body) = call(&app, Request::delete("/api/v1/rules"), Body::empty()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "this endpoint does not take that method");
    assert_eq!(headers[header::ALLOW], "GET,HEAD");
    let (status, _, body) = call(&app, Request::get("/nothing/here"), Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no such endpoint");
}

#[tokio::test]
async fn the_probes_listener_answers_while_slow_bodies_hold_every_main_connection() {
    let (workdir, _) = crate::harness::Workdir::sqlite_shop(1).await;
    let (main, probes) = (free_port(), free_port());
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        format!(
            "{config}http: {{ listen: \"127.0.0.1:{main}\", probes_listen: \"127.0.0.1:{probes}\" }}\n"
        ),
    )
    .unwrap();
    let _daemon = crate::harness::Daemon::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .args(["run"])
            .current_dir(workdir.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    crate::harness::eventually(Duration::from_secs(20), "ready", || {
        TcpStream::connect(("127.0.0.1", probes)).is_ok()
            && crate::harness::http(probes, "GET", "/readyz").0 == 200
    })
    .await;
    // The probes listener serves the probes and /metrics, nothing else.
    assert_eq!(crate::harness::http(probes, "GET", "/metrics").0, 200);
    assert_eq!(crate::harness::http(probes, "GET", "/api/v1/rules").0, 404);
    // 530 clients announce a 60,000-byte body and send one byte: every slot of the main
    // listener is held.
    let mut held = Vec::new();
    for _ in 0..530 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", main)) else {
            continue;
        };
        let _ = write!(
            s,
            "POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\nx"
        );
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..20 {
        let asked = Instant::now();
        let (status, _) = crate::harness::http(probes, "GET", "/readyz");
        assert_eq!(status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
        let (status, _) = crate::harness::http(probes, "GET", "/metrics");
        assert_eq!(status, 200);
    }
    drop(held);
}

#[tokio::test]
async fn a_change_without_a_valid_token_is_refused_before_its_body_is_read() {
    let app = crate::auth::router("").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let server = tokio::spawn(invariantd::http::serve::serve(listener, app, stop.clone()));
    let answered = tokio::task::spawn_blocking(move || {
        // A body of 60,000 bytes announced, one sent: the 401 comes at once, not after it.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let asked = Instant::now();
        s.write_all(b"POST /api/v1/silences HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\nx")
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        (String::from_utf8_lossy(&head).to_string(), asked.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(answered.0, "HTTP/1.1 401");
    assert!(answered.1 < Duration::from_secs(1), "{:?}", answered.1);
    stop.cancel();
    let _ = server.await;
}

#[tokio::test]
async fn slow_clients_holding_every_connection_make_room_and_a_request_has_one_deadline() {
    let app = crate::auth::router("").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let server = tokio::spawn(invariantd::http::serve::serve_with(
        listener,
        app,
        stop.clone(),
        8,
        Duration::from_secs(3),
    ));
    let figures = tokio::task::spawn_blocking(move || {
        // Eight clients with a valid token announce a body and send a byte of it now and
        // then: every connection is taken by a request that never finishes.
        let mut slow: Vec<TcpStream> = (0..8)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                write!(
                    s,
                    "POST /api/v1/silences HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 60000\r\n\r\nx"
                )
                .unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        // A reader still gets in, at once: the oldest slow client made room for it.
        let asked = Instant::now();
        let (status, _) = crate::harness::http(port, "GET", "/api/v1/rules");
        let probe = (status, asked.elapsed());
        let oldest_closed = closed_within(&mut slow[0], Duration::from_millis(100));
        // The rest are answered 408 at the deadline of the whole request, though they keep
        // sending: headers and body share one deadline, the body has no time of its own.
        let started = Instant::now();
        let mut answers = Vec::new();
        for s in &mut slow[1..] {
            let _ = s.write_all(b"y");
        }
        std::thread::sleep(Duration::from_millis(1500));
        for s in &mut slow[1..] {
            let _ = s.write_all(b"y");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = [0u8; 12];
            answers.push(match s.read_exact(&mut head) {
                Ok(()) => String::from_utf8_lossy(&head).to_string(),
                Err(e) => e.to_string(),
            });
        }
        (probe, oldest_closed, answers, started.elapsed())
    })
    .await
    .unwrap();
    let ((status, took), oldest_closed, answers, answered_after) = figures;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(oldest_closed, "the oldest unfinished connection was kept");
    assert!(answers.iter().all(|a| a == "HTTP/1.1 408"), "{answers:?}");
    // Sent 200 ms in, they were due 3 s after their connections opened.
    assert!(
        answered_after < Duration::from_millis(3200),
        "{answered_after:?}"
    );
    stop.cancel();
    let _ = server.await;
}
