//! A repair as a card a person decides on — the violation's rows, each action as it will run,
//! who decided, approve / reject — and the per-rule line that approves them all, naming what
//! it approves. The page's script updates the card in place after a decision.

use std::fmt::Write as _;

use super::html::{datasets, esc, time};
use crate::rules::Rule;
use crate::state::{RepairRecord, ViolationRecord};

/// Who decided a repair and how, as the card shows it: `approved by ops`, `rejected by lead`,
/// or the first approval under four eyes.
pub fn decider(r: &RepairRecord) -> Option<String> {
    match (&r.rejected_by, &r.approved_by) {
        (Some(by), _) => Some(format!("rejected by {by}")),
        (None, Some(by)) if r.state.awaits_person() => Some(format!("approved once by {by}")),
        (None, Some(by)) => Some(format!("approved by {by}")),
        (None, None) => None,
    }
}

pub fn repair_card(
    r: &RepairRecord,
    rule: Option<&Rule>,
    violation: Option<&ViolationRecord>,
    now_us: i64,
    out: &mut String,
) {
    let id = r.id.to_string();
    let _ = write!(
        out,
        "<div class=\"card repair\" id=\"repair-{id}\" data-id=\"{id}\" data-rule=\"{rule}\">\
         <div><span class=\"state\" data-state=\"{state}\">{state}</span> repair #{id} · key <b>{key}</b>\
         <span class=\"decider\">{decider}</span></div>\
         <div class=\"meta\">planned {created} ({mode}){hold}</div>",
        state = esc(r.state.as_str()),
        rule = esc(&r.rule),
        key = esc(&r.key),
        decider = decider(r)
            .map(|d| format!(" · {}", esc(&d)))
            .unwrap_or_default(),
        created = time(now_us, r.created_us),
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
            "<div class=\"message\">{}</div><div class=\"meta\">the rows when last seen:</div>{}\
             <button data-act=\"explain\" data-url=\"/ui/explain/{vid}\" data-target=\"evidence-repair-{id}\">Explain now</button>\
             <div class=\"evidence\" id=\"evidence-repair-{id}\"></div>",
            esc(&v.message),
            datasets(&v.datasets),
            vid = v.id,
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
    }
    let result = r
        .result
        .as_deref()
        .map(|t| esc(&crate::actions::public_result(t)))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<div class=\"meta outcome\">{result}</div><span class=\"result\" aria-live=\"polite\"></span></div>"
    );
}

/// The button approving every waiting repair of a rule, after a confirmation that names the
/// count, the rule and the money at risk (`risk`, as the rule displays it).
pub fn approve_all(rule: &str, count: usize, risk: Option<&str>) -> String {
    format!(
        "<div class=\"card bulk\"><button class=\"approve\" data-act=\"approve-rule\" data-rule=\"{r}\" data-count=\"{count}\" data-risk=\"{risk}\">Approve all {count} of {r}</button><span class=\"result\" aria-live=\"polite\"></span></div>",
        r = esc(rule),
        risk = esc(risk.unwrap_or_default()),
    )
}
