//! A change made through the API wakes the service that acts on it, instead of leaving it to
//! that service's next tick: an approval or a rejection wakes the repair service (and the alert
//! evaluator, whose held-repairs alert changes); adding or expiring a silence wakes the alert
//! evaluator. Refused changes wake nobody.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures_util::FutureExt;
use invariantd::context::{Context, Handle, Wake};
use invariantd::state::{NewRepair, RepairState};
use tower::ServiceExt;

use crate::harness::{TOKEN, Workdir, tokens_file};

async fn post(app: &axum::Router, uri: &str, body: &str) -> StatusCode {
    app.clone()
        .oneshot(
            Request::post(uri)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap()
        .status()
}

/// Whether each service was woken since the last look (and takes the wake-up).
fn woken(wake: &Wake) -> (bool, bool) {
    (
        wake.repairs.notified().now_or_never().is_some(),
        wake.alerts.notified().now_or_never().is_some(),
    )
}

#[tokio::test]
async fn decisions_and_silences_wake_the_service_that_acts_on_them() {
    let (workdir, _) = Workdir::sqlite_shop(1).await;
    let auth = tokens_file(workdir.path());
    let config = std::fs::read_to_string(workdir.config()).unwrap();
    std::fs::write(workdir.config(), format!("{config}{auth}")).unwrap();
    let (config, rules) = workdir.load();
    let rule = rules[0].name.clone();
    let ctx = Context::start(config, rules).await.unwrap();
    let new = |key: &str| NewRepair {
        key: key.into(),
        occurrence_us: 1_000,
        state: RepairState::Pending,
        mode: "approve".into(),
        action: "reserve".into(),
        actions: Vec::new(),
        idempotency_key: format!("idem-{key}"),
        hold_reason: None,
        held_by: None,
    };
    let ids = ctx
        .store
        .plan_repairs(&rule, &[new("1"), new("2")], 10)
        .await
        .unwrap();
    let (handle, _control) = Handle::new(Arc::new(ctx));
    let wake = handle.wake.clone();
    let app = invariantd::http::router(handle);
    assert_eq!(woken(&wake), (false, false));

    let approve = format!("/api/v1/repairs/{}/approve", ids[0]);
    assert_eq!(post(&app, &approve, "{}").await, StatusCode::OK);
    assert_eq!(woken(&wake), (true, true), "an approval");
    // Deciding it again is refused, and wakes nobody.
    assert_eq!(post(&app, &approve, "{}").await, StatusCode::CONFLICT);
    assert_eq!(woken(&wake), (false, false), "a refused decision");

    let reject = format!("/api/v1/repairs/{}/reject", ids[1]);
    assert_eq!(post(&app, &reject, "{}").await, StatusCode::OK);
    assert_eq!(woken(&wake), (true, true), "a rejection");

    // A silence without its comment is refused, and wakes nobody.
    let bare = format!(r#"{{"matchers": {{"rule": "{rule}"}}, "duration": "1h"}}"#);
    assert_eq!(
        post(&app, "/api/v1/silences", &bare).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(woken(&wake), (false, false), "a refused silence");
    let silence = format!(
        r#"{{"matchers": {{"rule": "{rule}"}}, "duration": "1h", "comment": "known, fixing"}}"#
    );
    assert_eq!(
        post(&app, "/api/v1/silences", &silence).await,
        StatusCode::CREATED
    );
    assert_eq!(woken(&wake), (false, true), "a silence");
    let delete = app
        .clone()
        .oneshot(
            Request::delete("/api/v1/silences/1")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::OK);
    assert_eq!(woken(&wake), (false, true), "a silence expired");
    std::mem::forget(workdir);
}
