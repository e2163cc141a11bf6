//! The web page at `/`: open violations by rule and the repairs waiting for a person, each with
//! its evidence and the planned action, and approve / reject buttons. Rendered on the server,
//! every value HTML-escaped; a small script (`ui/app.js`, served as it is: no build step) sends
//! decisions to the API with the bearer token, asked once per browser session and kept in
//! `sessionStorage` — a header, never a cookie, so another site cannot ride on it. The page
//! forbids inline script and every foreign source (Content-Security-Policy).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use super::ApiError;
use crate::context::Handle;
use crate::state::{RepairFilter, RepairRecord, RepairState, ViolationFilter, ViolationState};
use crate::value::format_timestamp;

const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Repairs and violations per rule shown at most; the API lists the rest.
const SHOWN: u32 = 100;

/// Text made safe for HTML, in element content and quoted attributes alike.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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

/// A JSON value, indented, escaped.
fn json_pre(v: &impl serde::Serialize) -> String {
    format!(
        "<pre>{}</pre>",
        esc(&serde_json::to_string_pretty(v).unwrap_or_default())
    )
}

fn repair_card(
    r: &RepairRecord,
    rule: Option<&crate::rules::Rule>,
    violation: Option<&crate::state::ViolationRecord>,
    out: &mut String,
) {
    let id = r.id.to_string();
    let _ = write!(
        out,
        "<div class=\"card repair\" id=\"repair-{id}\"><div><span class=\"state\">{state}</span> repair #{id} · rule <b>{rule}</b> · key <b>{key}</b></div>\
         <div class=\"meta\">planned {created} ({mode}){hold}</div>",
        state = esc(r.state.as_str()),
        rule = esc(&r.rule),
        key = esc(&r.key),
        created = esc(&format_timestamp(r.created_us)),
        mode = esc(&r.mode),
        hold = r
            .hold_reason
            .as_deref()
            .map(|h| format!(" · {}", esc(h)))
            .unwrap_or_default(),
    );
    if let Some(v) = violation {
        let _ = write!(
            out,
            "<div class=\"message\">{}</div><div class=\"meta\">the rows when last seen:</div>{}",
            esc(&v.message),
            json_pre(&v.datasets)
        );
    }
    for a in &r.actions {
        let kind = rule
            .and_then(|rule| rule.repair.as_ref())
            .and_then(|rep| rep.actions.iter().find(|x| x.name == a.name));
        let text = match kind {
            Some(k) => crate::actions::describe(&*k.kind, &a.spec),
            None => serde_json::to_string_pretty(&a.spec).unwrap_or_default(),
        };
        let _ = write!(
            out,
            "<div class=\"meta\">action <b>{}</b>{}:</div><pre class=\"action\">{}</pre>",
            esc(&a.name),
            if a.name == r.action { " (planned)" } else { "" },
            esc(&text)
        );
    }
    if r.state.awaits_person() {
        if r.actions.len() > 1 {
            let _ = write!(
                out,
                "<label>action <select class=\"action\" data-planned=\"{}\">",
                esc(&r.action)
            );
            for a in &r.actions {
                let _ = write!(
                    out,
                    "<option value=\"{n}\"{sel}>{n}</option>",
                    n = esc(&a.name),
                    sel = if a.name == r.action { " selected" } else { "" }
                );
            }
            let _ = write!(out, "</select></label>");
        }
        let _ = write!(
            out,
            "<div><input class=\"comment\" placeholder=\"comment (recorded with your name)\" aria-label=\"comment\"></div>\
             <button class=\"approve\" data-act=\"approve\" data-id=\"{id}\">Approve</button>\
             <button class=\"reject\" data-act=\"reject\" data-id=\"{id}\">Reject</button>"
        );
    } else if let Some(result) = &r.result {
        let _ = write!(
            out,
            "<div class=\"meta\">{}</div>",
            esc(&crate::actions::public_result(result))
        );
    }
    let _ = write!(
        out,
        "<span class=\"result\" aria-live=\"polite\"></span></div>"
    );
}

/// `GET /`: the page. With `auth.read: token` a browser cannot send the token with the page
/// request itself: the page then comes empty, and its script asks for the token and fetches
/// the content (`/ui/content`) with it.
pub async fn page(State(handle): State<Arc<Handle>>) -> Result<Response, ApiError> {
    let needs_token = handle.current().config.auth.read_requires_token;
    let main = if needs_token {
        "<main id=\"content\" data-needs-token=\"true\"><p class=\"empty\">Reading needs a token: set it above.</p></main>".to_string()
    } else {
        format!(
            "<main id=\"content\">{}</main>",
            content_html(&handle).await?
        )
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>invariantd</title><link rel=\"stylesheet\" href=\"/ui/app.css\">\
         <script src=\"/ui/app.js\" defer></script></head><body>\
         <header><h1>invariantd</h1><span class=\"token\"><span id=\"token-state\">no token yet</span> \
         <button data-act=\"token\">Set token</button></span></header>{main}</body></html>"
    );
    Ok(with_policy(Html(html).into_response()))
}

/// `GET /ui/content`: the page's content alone (behind the read token when there is one).
pub async fn content(State(handle): State<Arc<Handle>>) -> Result<Response, ApiError> {
    Ok(with_policy(
        Html(content_html(&handle).await?).into_response(),
    ))
}

/// Open violations by rule and the repairs waiting for a person, as HTML.
async fn content_html(handle: &Handle) -> Result<String, ApiError> {
    let ctx = handle.current();
    let mut waiting: Vec<RepairRecord> = Vec::new();
    for state in [
        RepairState::Pending,
        RepairState::DryRun,
        RepairState::NeedsManual,
    ] {
        waiting.extend(
            ctx.store
                .repairs(&RepairFilter {
                    state: Some(state),
                    limit: SHOWN,
                    ..Default::default()
                })
                .await?,
        );
    }
    let snapshots = ctx.store.rule_snapshots().await?;
    let mut body = String::new();
    let open_total: i64 = snapshots.values().map(|s| s.open).sum();
    let _ = write!(
        body,
        "<p class=\"meta\">{open_total} open violation{} · {} repair{} waiting</p>",
        if open_total == 1 { "" } else { "s" },
        waiting.len(),
        if waiting.len() == 1 { "" } else { "s" },
    );
    let _ = write!(body, "<h2>Repairs waiting for a person</h2>");
    if waiting.is_empty() {
        let _ = write!(body, "<p class=\"empty\">None.</p>");
    }
    // One button per rule: the list is by state, so a rule's repairs need not be adjacent.
    let rules_waiting: std::collections::BTreeSet<&str> = waiting
        .iter()
        .filter(|r| r.state.awaits_person())
        .map(|r| r.rule.as_str())
        .collect();
    for rule in rules_waiting {
        let n = waiting
            .iter()
            .filter(|r| r.rule == rule && r.state.awaits_person())
            .count();
        let _ = write!(
            body,
            "<div class=\"card bulk\"><button class=\"approve\" data-act=\"approve-rule\" data-rule=\"{r}\">Approve all {n} of {r}</button><span class=\"result\" aria-live=\"polite\"></span></div>",
            r = esc(rule)
        );
    }
    for r in &waiting {
        let violation = ctx
            .store
            .violations(&ViolationFilter {
                rule: Some(r.rule.clone()),
                key: Some(r.key.clone()),
                state: Some(ViolationState::Open),
                limit: 1,
                ..Default::default()
            })
            .await?
            .into_iter()
            .next();
        repair_card(r, ctx.rule(&r.rule), violation.as_ref(), &mut body);
    }
    let _ = write!(body, "<h2>Open violations by rule</h2>");
    let mut any = false;
    for rule in &ctx.rules {
        let open = snapshots.get(&rule.name).map_or(0, |s| s.open);
        if open == 0 {
            continue;
        }
        any = true;
        let _ = write!(
            body,
            "<h3><span class=\"{sev}\">{sev}</span> {name} · {open} open</h3><div class=\"meta\">{desc}</div>",
            sev = esc(rule.severity.as_str()),
            name = esc(&rule.name),
            desc = esc(&rule.description),
        );
        let violations = ctx
            .store
            .violations(&ViolationFilter {
                rule: Some(rule.name.clone()),
                state: Some(ViolationState::Open),
                limit: SHOWN,
                ..Default::default()
            })
            .await?;
        for v in &violations {
            let id = v.id.to_string();
            let _ = write!(
                body,
                "<div class=\"card violation\"><div>key <b>{key}</b> · {msg}</div>\
                 <div class=\"meta\">since {since} · seen by {n} run{s}</div>\
                 <button data-act=\"explain\" data-url=\"/ui/explain/{id}\" data-target=\"evidence-{id}\">Explain</button>\
                 <div class=\"evidence\" id=\"evidence-{id}\"></div></div>",
                key = esc(&v.key),
                msg = esc(&v.message),
                since = esc(&format_timestamp(v.first_seen_us)),
                n = v.occurrences,
                s = if v.occurrences == 1 { "" } else { "s" },
            );
        }
        if open > i64::from(SHOWN) {
            let _ = write!(
                body,
                "<p class=\"meta\">and {} more: /api/v1/violations?rule={}</p>",
                open - i64::from(SHOWN),
                esc(&rule.name)
            );
        }
    }
    if !any {
        let _ = write!(body, "<p class=\"empty\">Every invariant holds.</p>");
    }
    Ok(body)
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
        let _ = write!(
            out,
            "<div class=\"meta\">dataset {} (source {}): {} row(s)</div>{}",
            esc(&d.name),
            esc(&d.source),
            d.rows.len(),
            json_pre(&d.rows)
        );
    }
    if let Some(g) = &n.grace {
        let _ = write!(out, "<div class=\"meta\">grace: {}</div>", esc(g));
    }
    let _ = write!(out, "<table><tr><th>expression</th><th>value</th></tr>");
    for s in &n.steps {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
            esc(&s.expr),
            esc(&s.value)
        );
    }
    let _ = write!(out, "</table>");
    if let Some(err) = &n.error {
        let _ = write!(out, "<div class=\"meta\">error: {}</div>", esc(err));
    }
    if !e.repairs.is_empty() {
        let _ = write!(
            out,
            "<div class=\"meta\">repairs:</div>{}",
            json_pre(&e.repairs)
        );
    }
    Ok(with_policy(Html(out).into_response()))
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn hostile_text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            esc("<img src=x onerror=\"alert('1')\">&"),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"
        );
    }
}
