//! The page's front: what on-call asks first, in that order. One line per rule with something
//! open — severity, description, open violations, money at risk, the oldest violation's age,
//! repairs waiting, last run — sorted by severity, then money at risk; then the repairs
//! waiting, grouped by rule in the same order (never a warning rule's above a critical one's);
//! last, the replicas sharing the state store and what each runs.

use std::collections::HashMap;
use std::fmt::Write as _;

use rust_decimal::Decimal;

use super::cards::{approve_all, repair_card};
use super::html::{esc, span, table, time};
use crate::context::Context;
use crate::rules::{Rule, Severity};
use crate::state::{RepairFilter, RepairRecord, RepairState, RuleSnapshot, RunRecord, StateError};

/// Waiting repairs shown per state at most; the API lists the rest.
const SHOWN: u32 = 100;

/// What the front shows of one rule.
pub struct Line<'a> {
    pub rule: Option<&'a Rule>,
    pub name: String,
    pub snap: RuleSnapshot,
    pub waiting: usize,
    pub last_run: Option<RunRecord>,
    /// The severity its violations carry now, under its thresholds.
    pub severity_now: Option<Severity>,
}

impl Line<'_> {
    fn severity(&self) -> Severity {
        self.severity_now
            .or(self.rule.map(|r| r.severity))
            .unwrap_or(Severity::Info)
    }

    /// The money at risk as the rule displays it (`1,234.50 EUR`), when it has an impact.
    pub fn risk(&self) -> Option<String> {
        let impact = self.rule?.impact.as_ref()?;
        Some(impact.describe(self.snap.impact.unwrap_or_default()))
    }
}

/// The order of the front: severity (critical first), then money at risk (most first), then
/// name.
pub fn order(lines: &mut [Line<'_>]) {
    lines.sort_by(|a, b| {
        a.severity()
            .cmp(&b.severity())
            .then_with(|| {
                let risk = |l: &Line<'_>| l.snap.impact.unwrap_or(Decimal::ZERO);
                risk(b).cmp(&risk(a))
            })
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// One cell: a run's outcome and how long ago it finished.
pub fn last_run(run: Option<&RunRecord>, now_us: i64) -> String {
    match run {
        Some(r) => format!(
            "<span class=\"outcome-{o}\">{o}</span>, {t}",
            o = esc(r.outcome.as_str()),
            t = time(now_us, r.finished_us)
        ),
        None => "<i>not run yet</i>".into(),
    }
}

/// The front, as HTML.
pub async fn front(ctx: &Context, now_us: i64) -> Result<String, StateError> {
    let mut waiting: Vec<RepairRecord> = Vec::new();
    for state in [
        RepairState::Pending,
        RepairState::DryRun,
        RepairState::NeedsManual,
    ] {
        waiting.extend(
            ctx.store
                .repairs(&RepairFilter {
                    rules: None,
                    state: Some(state),
                    limit: SHOWN,
                    ..Default::default()
                })
                .await?,
        );
    }
    let snapshots = ctx.store.open_summaries().await?;
    let mut by_rule: HashMap<&str, Vec<&RepairRecord>> = HashMap::new();
    for r in &waiting {
        by_rule.entry(r.rule.as_str()).or_default().push(r);
    }
    // Every rule with something open, and any rule no longer configured that still has
    // repairs waiting.
    let mut names: Vec<&str> = ctx
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| snapshots.get(*n).is_some_and(|s| s.open > 0) || by_rule.contains_key(n))
        .collect();
    for n in by_rule.keys() {
        if !names.contains(n) {
            names.push(n);
        }
    }
    // The newest run of each, and the violation beside each repair waiting: one statement
    // each, however many rules and repairs are shown.
    let mut latest = ctx.store.latest_runs(&names).await?;
    let pairs: Vec<(String, String)> = waiting
        .iter()
        .map(|r| (r.rule.clone(), r.key.clone()))
        .collect();
    let violations = ctx.store.open_violations_of(&pairs).await?;
    let mut lines = Vec::new();
    for name in names {
        let last_run = latest.remove(name).and_then(|(run, _)| run);
        let rule = ctx.rule(name);
        let snap = snapshots.get(name).cloned().unwrap_or_default();
        let severity_now = match rule {
            Some(r) => {
                let judged = crate::alert::status::judged(&ctx.store, r).await?;
                Some(crate::alert::status::state_of(r, &snap, judged).severity)
            }
            None => None,
        };
        lines.push(Line {
            rule,
            name: name.to_string(),
            snap,
            waiting: by_rule.get(name).map_or(0, Vec::len),
            last_run,
            severity_now,
        });
    }
    order(&mut lines);

    let mut body = String::new();
    let open_total: i64 = snapshots.values().map(|s| s.open).sum();
    let _ = write!(
        body,
        "<p class=\"meta\">{open_total} open violation{} · {} repair{} waiting</p>",
        if open_total == 1 { "" } else { "s" },
        waiting.len(),
        if waiting.len() == 1 { "" } else { "s" },
    );
    if lines.is_empty() {
        let _ = write!(body, "<p class=\"empty\">Every invariant holds.</p>");
        body.push_str(&replicas(ctx, now_us).await?);
        return Ok(body);
    }
    let _ = write!(body, "<h2>What is wrong</h2>");
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                format!(
                    "<span class=\"{s}\">{s}</span>",
                    s = esc(l.severity().as_str())
                ),
                format!(
                    "<a href=\"/rules/{n}\">{n}</a><div class=\"meta\">{d}</div>",
                    n = esc(&l.name),
                    d = esc(l.rule.map_or("no longer configured", |r| &r.description))
                ),
                l.snap.open.to_string(),
                esc(&l.risk().unwrap_or_default()),
                l.snap
                    .oldest_first_seen_us
                    .map(|t| span(now_us - t))
                    .unwrap_or_default(),
                l.waiting.to_string(),
                last_run(l.last_run.as_ref(), now_us),
            ]
        })
        .collect();
    body.push_str(&table(
        "summary",
        &[
            "Severity",
            "Rule",
            "Open",
            "At risk",
            "Oldest",
            "Repairs waiting",
            "Last run",
        ],
        &rows,
    ));

    let _ = write!(body, "<h2>Repairs waiting for a person</h2>");
    if waiting.is_empty() {
        let _ = write!(body, "<p class=\"empty\">None.</p>");
    }
    for line in lines.iter().filter(|l| l.waiting > 0) {
        let repairs = &by_rule[line.name.as_str()];
        let _ = write!(
            body,
            "<h3 class=\"waiting\" data-rule=\"{n}\"><span class=\"{s}\">{s}</span> {n} · {w} waiting{risk}</h3>",
            n = esc(&line.name),
            s = esc(line.severity().as_str()),
            w = line.waiting,
            risk = line
                .risk()
                .map(|r| format!(" · {} at risk", esc(&r)))
                .unwrap_or_default()
        );
        let decidable = repairs.iter().filter(|r| r.state.awaits_person()).count();
        if decidable > 0 {
            body.push_str(&approve_all(&line.name, decidable, line.risk().as_deref()));
        }
        for r in repairs {
            let violation = violations.get(&(r.rule.clone(), r.key.clone()));
            repair_card(r, line.rule, violation, now_us, &mut body);
        }
    }
    body.push_str(&replicas(ctx, now_us).await?);
    Ok(body)
}

/// The replicas sharing the state store, last: each one's heartbeat, roles and rules.
async fn replicas(ctx: &Context, now_us: i64) -> Result<String, StateError> {
    let rows = ctx.store.leases().await?;
    let names: Vec<String> = ctx.rules.iter().map(|r| r.name.clone()).collect();
    let view = crate::api::cluster::cluster_view(&rows, None, &names);
    let mut out = String::from("<h2>Replicas</h2>");
    let rows: Vec<Vec<String>> = view
        .replicas
        .iter()
        .map(|r| {
            let heartbeat = rows
                .iter()
                .find(|l| l.name == format!("replica/{}", r.replica))
                .map(|l| time(now_us, l.renewed_us))
                .unwrap_or_default();
            let roles: Vec<&str> = [(r.leader, "leader"), (r.alerting, "alerting")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
            vec![
                format!("<code>{}</code>", esc(&r.replica)),
                if r.live { "live" } else { "gone" }.into(),
                heartbeat,
                esc(&roles.join(", ")),
                format!(
                    "{}<div class=\"meta\">{}</div>",
                    r.rules.len(),
                    esc(&r.rules.join(", "))
                ),
                esc(&r.ranges.join(", ")),
            ]
        })
        .collect();
    out.push_str(&table(
        "replicas",
        &[
            "Replica",
            "State",
            "Heartbeat",
            "Roles",
            "Rules it runs",
            "Ranges it reads",
        ],
        &rows,
    ));
    if !view.unheld_rules.is_empty() {
        let _ = write!(
            out,
            "<p class=\"meta\">Rules no live replica runs now: {}</p>",
            esc(&view.unheld_rules.join(", "))
        );
    }
    Ok(out)
}
