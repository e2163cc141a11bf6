//! One rule's view (`/rules/NAME`): what it checks, its open violations, its repairs (those
//! waiting as cards, the decided ones as a table naming who decided), its history — open
//! violations and money at risk over the last 24 hours and 7 days, drawn as inline SVG — and
//! its last runs.

use std::fmt::Write as _;

use super::cards::{approve_all, decider, repair_card};
use super::chart::svg;
use super::html::{esc, span, table, time};
use super::overview::last_run;
use crate::context::Context;
use crate::http::history::{Window, histories};
use crate::rules::Rule;
use crate::state::{RepairFilter, RepairState, StateError, ViolationFilter, ViolationState};

/// Rows of each list shown at most; the API lists the rest.
const SHOWN: u32 = 100;
/// Runs shown.
const RUNS: u32 = 20;

pub async fn view(ctx: &Context, rule: &Rule, now_us: i64) -> Result<String, StateError> {
    let snap = ctx.store.rule_snapshot(&rule.name).await?;
    let judged = crate::alert::status::judged(&ctx.store, rule).await?;
    let state = crate::alert::status::state_of(rule, &snap, judged);
    let mut body = String::new();
    let risk = rule
        .impact
        .as_ref()
        .map(|i| i.describe(snap.impact.unwrap_or_default()));
    let labels: Vec<String> = rule
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect();
    let _ = write!(
        body,
        "<p class=\"meta\"><a href=\"/\">← every rule</a></p>\
         <h2 class=\"rule\"><span class=\"{s}\">{s}</span> {n}</h2>\
         <div class=\"meta\">{d}</div>{thresholds}\
         <div class=\"meta\">runs {schedule} · grace {grace}{labels}</div>",
        s = esc(state.severity.as_str()),
        n = esc(&rule.name),
        thresholds = if rule.thresholds.is_set() {
            format!(
                "<div class=\"meta status\">status <b class=\"status-{st}\">{st}</b>{why}</div>",
                st = state.status.as_str(),
                why = if state.reasons.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", esc(&state.reasons.join(", ")))
                }
            )
        } else {
            String::new()
        },
        d = esc(&rule.description),
        schedule = esc(&match &rule.schedule {
            crate::rules::Schedule::Every(d) => format!("every {}", humantime::format_duration(*d)),
            crate::rules::Schedule::Cron { pattern, .. } => format!("at `{pattern}`"),
        }),
        grace = esc(&humantime::format_duration(rule.grace).to_string()),
        labels = if labels.is_empty() {
            String::new()
        } else {
            format!(" · {}", labels.join(", "))
        },
    );
    let runs = ctx.store.runs(Some(&rule.name), None, RUNS).await?;
    let _ = write!(
        body,
        "<p class=\"headline\"><b class=\"open-count\">{open}</b> open{risk} · oldest {oldest} · last run {last}</p>",
        open = snap.open,
        risk = risk
            .as_deref()
            .map(|r| format!(" · <b class=\"at-risk\">{}</b> at risk", esc(r)))
            .unwrap_or_default(),
        oldest = snap
            .oldest_first_seen_us
            .map(|t| span(now_us - t))
            .unwrap_or_else(|| "—".into()),
        last = last_run(runs.first(), now_us),
    );

    // Open violations.
    let _ = write!(body, "<h3>Open violations</h3>");
    let violations = ctx
        .store
        .violations(&ViolationFilter {
            rules: None,
            rule: Some(rule.name.clone()),
            state: Some(ViolationState::Open),
            limit: SHOWN,
            ..Default::default()
        })
        .await?;
    if violations.is_empty() {
        let _ = write!(body, "<p class=\"empty\">None: the invariant holds.</p>");
    } else {
        let mut headers = vec!["Key", "Message", "Since", "Seen by"];
        if rule.impact.is_some() {
            headers.push("Impact");
        }
        headers.push("Evidence");
        let rows: Vec<Vec<String>> = violations
            .iter()
            .map(|v| {
                let id = v.id.to_string();
                let mut row = vec![
                    format!("<b>{}</b>", esc(&v.key)),
                    esc(&v.message),
                    time(now_us, v.first_seen_us),
                    format!(
                        "{} run{}",
                        v.occurrences,
                        if v.occurrences == 1 { "" } else { "s" }
                    ),
                ];
                if let Some(i) = &rule.impact {
                    row.push(esc(&v
                        .impact
                        .as_deref()
                        .and_then(|t| t.parse().ok())
                        .map(|d| i.describe(d))
                        .unwrap_or_default()));
                }
                row.push(format!(
                    "<button data-act=\"explain\" data-url=\"/ui/explain/{id}\" data-target=\"evidence-{id}\">Explain</button>\
                     <div class=\"evidence\" id=\"evidence-{id}\"></div>"
                ));
                row
            })
            .collect();
        body.push_str(&table("violations", &headers, &rows));
        if snap.open > i64::from(SHOWN) {
            let _ = write!(
                body,
                "<p class=\"meta\">and {} more: /api/v1/violations?rule={}</p>",
                snap.open - i64::from(SHOWN),
                esc(&rule.name)
            );
        }
    }

    // Repairs: those waiting first, as cards; then the latest decided.
    if rule.repair.is_some() {
        let _ = write!(body, "<h3>Repairs</h3>");
        let repairs = ctx
            .store
            .repairs(&RepairFilter {
                rules: None,
                rule: Some(rule.name.clone()),
                limit: SHOWN,
                newest_first: true,
                ..Default::default()
            })
            .await?;
        let (waiting, decided): (Vec<_>, Vec<_>) = repairs
            .iter()
            .partition(|r| r.state.awaits_person() || r.state == RepairState::NeedsManual);
        // Those waiting in the order they came; the decided, newest first.
        let waiting: Vec<_> = waiting.into_iter().rev().collect();
        let decidable = waiting.iter().filter(|r| r.state.awaits_person()).count();
        if decidable > 0 {
            body.push_str(&approve_all(&rule.name, decidable, risk.as_deref()));
        }
        for r in &waiting {
            let violation = violations.iter().find(|v| v.key == r.key);
            repair_card(r, Some(rule), violation, now_us, &mut body);
        }
        if !decided.is_empty() {
            let rows: Vec<Vec<String>> = decided
                .iter()
                .map(|r| {
                    vec![
                        format!("#{}", r.id),
                        esc(&r.key),
                        format!("<span class=\"state\">{}</span>", esc(r.state.as_str())),
                        esc(&r.action),
                        esc(&decider(r).unwrap_or_default()),
                        esc(&r
                            .result
                            .as_deref()
                            .map(crate::actions::public_result)
                            .unwrap_or_default()),
                        time(now_us, r.updated_us),
                    ]
                })
                .collect();
            body.push_str(&table(
                "repairs",
                &[
                    "Repair", "Key", "State", "Action", "Decided", "Result", "Updated",
                ],
                &rows,
            ));
        } else if waiting.is_empty() {
            let _ = write!(body, "<p class=\"empty\">None yet.</p>");
        }
    }

    // History.
    let _ = write!(body, "<h3>History</h3><div class=\"charts\">");
    let windows = [Window::Day, Window::Week];
    let charts = histories(&ctx.store, &rule.name, &windows, now_us).await?;
    for (window, points) in windows.into_iter().zip(charts) {
        body.push_str(&svg(
            &points,
            "open violations",
            window,
            |p| p.open.into(),
            |v| v.to_string(),
        ));
        if let Some(i) = &rule.impact {
            body.push_str(&svg(
                &points,
                "money at risk",
                window,
                |p| p.impact,
                |v| i.describe(v),
            ));
        }
    }
    let _ = write!(body, "</div>");

    // Last runs.
    let _ = write!(body, "<h3>Last runs</h3>");
    if runs.is_empty() {
        let _ = write!(body, "<p class=\"empty\">Not run yet.</p>");
    } else {
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                vec![
                    time(now_us, r.started_us),
                    format!(
                        "<span class=\"outcome-{o}\">{o}</span>",
                        o = esc(r.outcome.as_str())
                    ),
                    esc(r.mode.as_str()),
                    format!("{:.2} s", (r.finished_us - r.started_us) as f64 / 1e6),
                    r.keys_judged.to_string(),
                    r.violations.to_string(),
                    r.keys_with_errors.to_string(),
                    esc(r.error.as_deref().unwrap_or_default()),
                ]
            })
            .collect();
        body.push_str(&table(
            "runs",
            &[
                "Started",
                "Outcome",
                "Mode",
                "Took",
                "Keys judged",
                "Violations",
                "Key errors",
                "Error",
            ],
            &rows,
        ));
    }
    Ok(body)
}
