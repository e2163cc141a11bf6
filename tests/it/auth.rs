//! Admin behind a token: changes need a bearer token from `auth.tokens_file`, reads too with
//! `auth.read: token`, probes never; a tokens file others can read stops the daemon at start.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use invariantd::context::{Context, Handle};
use tower::ServiceExt;

use crate::harness::{TOKEN, Workdir, tokens_file};

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap(), challenge)
}

pub async fn router(extra_config: &str) -> axum::Router {
    let (workdir, _) = Workdir::sqlite_shop(1).await;
    let auth = tokens_file(workdir.path());
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        format!(
            "{config}{}",
            auth.trim_end().replace('}', &format!("{extra_config} }}")) + "\n"
        ),
    )
    .unwrap();
    let (config, rules) = workdir.load();
    let ctx = Context::start(config, rules).await.unwrap();
    // No supervisor answers: a reload that gets through auth is answered 503.
    let (handle, control) = Handle::new(Arc::new(ctx));
    drop(control);
    std::mem::forget(workdir);
    invariantd::http::router(handle)
}

#[tokio::test]
async fn changes_need_a_valid_bearer_token_and_reads_stay_open_by_default() {
    let app = router("").await;
    let (status, body, challenge) = call(&app, "POST", "/api/v1/reload", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        r#"{"error":"this needs a bearer token: Authorization: Bearer <token>"}"#
    );
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="invariantd""#));
    let (status, body, _) =
        call(&app, "POST", "/api/v1/reload", Some("not-the-token-at-all")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, r#"{"error":"the bearer token is not valid"}"#);
    let (status, body, _) = call(&app, "POST", "/api/v1/reload", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "past auth: {body}");

    for uri in ["/api/v1/rules", "/metrics", "/healthz"] {
        assert_eq!(
            call(&app, "GET", uri, None).await.0,
            StatusCode::OK,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn with_read_token_every_read_needs_one_but_the_probes() {
    let app = router(", read: token").await;
    for uri in [
        "/api/v1/rules",
        "/api/v1/violations",
        "/api/v1/runs",
        "/metrics",
    ] {
        assert_eq!(
            call(&app, "GET", uri, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        assert_eq!(
            call(&app, "GET", uri, Some(TOKEN)).await.0,
            StatusCode::OK,
            "{uri}"
        );
    }
    assert_eq!(call(&app, "GET", "/healthz", None).await.0, StatusCode::OK);
    assert_eq!(
        call(&app, "GET", "/readyz", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn a_tokens_file_others_can_read_stops_the_daemon_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let (workdir, _) = Workdir::sqlite_shop(1).await;
    let auth = tokens_file(workdir.path());
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(
        workdir.config(),
        format!("{config}{auth}http: {{ listen: \"127.0.0.1:0\" }}\n"),
    )
    .unwrap();
    let tokens = workdir.path().join("tokens");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = workdir.cli(&["run"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "error: the tokens file tokens can be read by group or others (mode 0644); make it private: chmod 600 tokens"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "a secret was printed: {stderr}");
    // And `validate` gives the same verdict.
    let out = workdir.cli(&["validate"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(mode 0644)"), "{stderr}");
}

#[tokio::test]
async fn validate_refuses_the_tokens_file_run_refuses_with_the_line_of_each_problem() {
    use std::os::unix::fs::PermissionsExt;
    let (workdir, _) = Workdir::sqlite_shop(1).await;
    let auth = tokens_file(workdir.path());
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(workdir.config(), format!("{config}{auth}")).unwrap();
    let tokens = workdir.path().join("tokens");
    std::fs::write(
        &tokens,
        b"ok:admin:aaaaaaaaaaaaaaaaaaaaaaaa\nshort:read:12345\nbad:read:bbbb\xfe\xffbbbbbbbbbbbbbbbbb\nlegacy:cccccccccccccccccccccc\n",
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    for args in [&["validate"][..], &["run"][..]] {
        let out = workdir.cli(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_ne!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            stderr.contains("tokens:2: the token of `short` must be at least 16 characters")
                && stderr.contains("tokens:3: not UTF-8 text"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("12345"), "a secret was printed: {stderr}");
    }
    // Fixed, it is valid, with a warning for the line that gives no role.
    std::fs::write(
        &tokens,
        "ok:admin:aaaaaaaaaaaaaaaaaaaaaaaa\nlegacy:cccccccccccccccccccccc\n",
    )
    .unwrap();
    let out = workdir.cli(&["validate"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: tokens: line 2 gives no role, so it is admin"),
        "{stderr}"
    );
}

/// Every endpoint, as the router serves it, with its path parameters filled in.
fn every_endpoint() -> Vec<(invariantd::http::Endpoint, String)> {
    invariantd::http::endpoints()
        .into_iter()
        .map(|e| {
            let uri = e
                .path
                .replace("{id}", "1")
                .replace("{name}", "paid_implies_reserved");
            (e, uri)
        })
        .collect()
}

#[tokio::test]
async fn each_endpoint_needs_its_role_and_a_lesser_token_gets_403() {
    use crate::harness::{LEAD_TOKEN, READ_TOKEN};
    use invariantd::auth::Role;
    use invariantd::http::Access;
    let app = router(", read: token").await;
    let token_of = |role: Role| match role {
        Role::Read => READ_TOKEN,
        Role::Approve => LEAD_TOKEN,
        Role::Admin => TOKEN,
    };
    let endpoints = every_endpoint();
    assert!(endpoints.len() >= 25, "{}", endpoints.len());
    for (e, uri) in &endpoints {
        let Access::Role(needed) = e.access else {
            let (status, body, _) = call(&app, e.method, uri, None).await;
            assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "{} {uri}: {status} {body}",
                e.method
            );
            continue;
        };
        let (status, _, _) = call(&app, e.method, uri, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{} {uri} without a token",
            e.method
        );
        for role in Role::ALL {
            let (status, body, _) = call(&app, e.method, uri, Some(token_of(role))).await;
            if role >= needed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{} {uri} as {role}: {status} {body}",
                    e.method
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{} {uri} as {role}: {body}",
                    e.method
                );
                assert!(
                    body.contains(&format!("this needs the `{needed}` role")),
                    "{body}"
                );
            }
        }
    }
    // The page's shells are open, but with `read: token` they carry no data: neither the
    // front nor a rule's view (a name that exists or not looks the same from outside).
    for uri in ["/", "/rules/paid_implies_reserved", "/rules/no_such_rule"] {
        let (status, body, _) = call(&app, "GET", uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(
            body.contains("data-needs-token=\"true\"")
                && !body.contains("Open violations")
                && !body.contains("What is wrong")
                && !body.contains("stock reserved")
                && !body.contains("No rule is named"),
            "{uri}: {body}"
        );
    }
    // With the token, the same view has them.
    let (_, body, _) = call(
        &app,
        "GET",
        "/ui/rules/paid_implies_reserved",
        Some(READ_TOKEN),
    )
    .await;
    assert!(
        body.contains("stock reserved") && body.contains("Open violations"),
        "{body}"
    );
    // A history window it does not know is refused, saying which it knows.
    let (status, body, _) = call(
        &app,
        "GET",
        "/api/v1/rules/paid_implies_reserved/history?window=1h",
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("window `1h` is not one of 24h, 7d"), "{body}");
    // The roles as documented: reads for Prometheus and Grafana; on-call decides; admin changes
    // what runs.
    let role_of = |method: &str, path: &str| {
        endpoints
            .iter()
            .find(|(e, _)| e.method == method && e.path == path)
            .map(|(e, _)| e.access)
            .unwrap()
    };
    assert_eq!(role_of("GET", "/metrics"), Access::Role(Role::Read));
    assert_eq!(
        role_of("POST", "/api/v1/repairs/{id}/approve"),
        Access::Role(Role::Approve)
    );
    assert_eq!(
        role_of("POST", "/api/v1/rules/{name}/repairs/enable"),
        Access::Role(Role::Admin)
    );
    assert_eq!(role_of("POST", "/api/v1/reload"), Access::Role(Role::Admin));
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = router(", read: token").await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = app
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/api/v1/rules")
                    .header(header::AUTHORIZATION, format!("{scheme} {TOKEN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
}
