//! The web page: the front at `/` (`overview`: what is wrong, by rule, then the repairs
//! waiting, as `cards`), and one rule's view at `/rules/NAME` (`rule`: its violations, repairs,
//! history charts drawn by `chart`, last runs); `html` holds the escaping, times and tables.
//! Rendered on the server, every value HTML-escaped; a small script (`app.js`, served as it
//! is: no build step) sends decisions to the API with the bearer token, asked once per
//! browser session and kept in `sessionStorage` — a header, never a cookie, so another site
//! cannot ride on it — and updates a card in place after a decision. The page forbids inline
//! script, inline style and every foreign source (Content-Security-Policy).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

mod cards;
mod chart;
mod html;
mod overview;
mod rule;

use super::ApiError;
use crate::context::Handle;
use html::esc;

const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn with_policy(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub async fn script() -> Response {
    with_policy(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            SCRIPT,
        )
            .into_response(),
    )
}

pub async fn style() -> Response {
    with_policy(([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response())
}

/// The page around `main`: with `auth.read: token` a browser cannot send the token with the
/// page request itself, so the page then comes empty and its script fetches `content` (a
/// `/ui/…` path) with the token.
fn shell(title: &str, main: Option<String>, content: &str) -> Response {
    let main = match main {
        Some(html) => format!("<main id=\"content\">{html}</main>"),
        None => format!(
            "<main id=\"content\" data-needs-token=\"true\" data-content=\"{}\"><p class=\"empty\">Reading needs a token: set it above.</p></main>",
            esc(content)
        ),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/ui/app.css\">\
         <script src=\"/ui/app.js\" defer></script></head><body>\
         <header><h1><a href=\"/\">invariantd</a></h1><span class=\"token\"><span id=\"token-state\">no token yet</span> \
         <button data-act=\"token\">Set token</button></span></header>{main}</body></html>",
        title = esc(title),
    );
    with_policy(Html(html).into_response())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// `GET /`: the front (`overview`).
pub async fn page(State(handle): State<Arc<Handle>>) -> Result<Response, ApiError> {
    let ctx = handle.current();
    let main = if ctx.config.auth.read_requires_token {
        None
    } else {
        Some(overview::front(&ctx, now_us()).await?)
    };
    Ok(shell("invariantd", main, "/ui/content"))
}

/// `GET /ui/content`: the front alone (behind the read token when there is one).
pub async fn content(State(handle): State<Arc<Handle>>) -> Result<Response, ApiError> {
    let ctx = handle.current();
    let html = overview::front(&ctx, now_us()).await?;
    Ok(with_policy(Html(html).into_response()))
}

/// The view of the rule `name`, or a page saying there is none.
async fn rule_html(handle: &Handle, name: &str) -> Result<Result<String, String>, ApiError> {
    let ctx = handle.current();
    Ok(match ctx.rule(name) {
        Some(rule) => Ok(rule::view(&ctx, rule, now_us()).await?),
        None => Err(format!(
            "<p class=\"meta\"><a href=\"/\">← every rule</a></p><p class=\"empty\">No rule is named `{}` in the configuration in force.</p>",
            esc(name)
        )),
    })
}

/// `GET /rules/{name}`: one rule's view (`rule`).
pub async fn rule_page(
    State(handle): State<Arc<Handle>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let title = format!("{name} · invariantd");
    let content = format!("/ui/rules/{}", crate::value::percent_encode(&name));
    if handle.current().config.auth.read_requires_token {
        return Ok(shell(&title, None, &content));
    }
    Ok(match rule_html(&handle, &name).await? {
        Ok(html) => shell(&title, Some(html), &content),
        Err(html) => {
            let mut r = shell(&title, Some(html), &content);
            *r.status_mut() = axum::http::StatusCode::NOT_FOUND;
            r
        }
    })
}

/// `GET /ui/rules/{name}`: a rule's view alone (behind the read token when there is one).
pub async fn rule_content(
    State(handle): State<Arc<Handle>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(match rule_html(&handle, &name).await? {
        Ok(html) => with_policy(Html(html).into_response()),
        Err(html) => {
            let mut r = with_policy(Html(html).into_response());
            *r.status_mut() = axum::http::StatusCode::NOT_FOUND;
            r
        }
    })
}

/// `GET /ui/explain/{violation}`: the evidence for a violation's key, judged now, as HTML.
pub async fn explain(
    State(handle): State<Arc<Handle>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::not_found(format!("no violation with id `{id}`"));
    let number: i64 = id.parse().map_err(|_| missing())?;
    let ctx = handle.current();
    let v = ctx.store.violation(number).await?.ok_or_else(missing)?;
    let rule = ctx.rule(&v.rule).ok_or_else(missing)?;
    let mut e = crate::repair::evidence(rule, &ctx.sources, &ctx.store, &v.key).await?;
    // The page shows repairs' results as a caller without a token sees them.
    for r in &mut e.repairs {
        if let Some(t) = &mut r.result {
            *t = crate::actions::public_result(t).into_owned();
        }
    }
    let n = &e.now;
    let mut out = format!(
        "<div class=\"meta\">judged at {}: <b class=\"verdict\">{}</b></div>",
        esc(&n.at),
        esc(n.verdict)
    );
    for d in &n.datasets {
        let rows: Vec<&serde_json::Map<String, serde_json::Value>> =
            d.rows.iter().filter_map(|r| r.as_object()).collect();
        out.push_str(&html::rows_table(
            &format!("dataset {} (source {})", d.name, d.source),
            &rows,
        ));
    }
    if let Some(g) = &n.grace {
        let _ = write!(out, "<div class=\"meta\">grace: {}</div>", esc(g));
    }
    let steps: Vec<Vec<String>> = n
        .steps
        .iter()
        .map(|s| {
            vec![
                format!("<code>{}</code>", esc(&s.expr)),
                format!("<code>{}</code>", esc(&s.value)),
            ]
        })
        .collect();
    out.push_str(&html::table("steps", &["Expression", "Value"], &steps));
    if let Some(err) = &n.error {
        let _ = write!(out, "<div class=\"meta\">error: {}</div>", esc(err));
    }
    if !e.repairs.is_empty() {
        let rows: Vec<Vec<String>> = e
            .repairs
            .iter()
            .map(|r| {
                vec![
                    format!("#{}", esc(&r.id)),
                    esc(&r.state),
                    esc(&r.action),
                    esc(r
                        .rejected_by
                        .as_deref()
                        .or(r.approved_by.as_deref())
                        .unwrap_or_default()),
                    esc(r
                        .result
                        .as_deref()
                        .or(r.hold_reason.as_deref())
                        .unwrap_or_default()),
                ]
            })
            .collect();
        let _ = write!(out, "<div class=\"meta\">repairs of this key:</div>");
        out.push_str(&html::table(
            "repairs",
            &["Repair", "State", "Action", "Decided by", "Result"],
            &rows,
        ));
    }
    Ok(with_policy(Html(out).into_response()))
}
