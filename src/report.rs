//! What the terminal commands print: the results of `check` (and `run --once`) as a table for
//! people or one JSON document for programs, with the exit status they promise, and the
//! files CI systems read (`--junit`, `--output`: `junit`, `results`); the violations of
//! `violations list`; and the silences of `silence list`.

mod check;
pub mod files;
pub mod junit;
pub mod results;

pub use check::{check_junit, exit_code, render_json, render_table};

use std::fmt::Write as _;

use crate::api::repairs::RepairView;
use crate::api::silences::SilenceView;
use crate::api::views::{Page, ViolationView};
use crate::state::{Verification, ViolationRecord};
use crate::value::{format_timestamp, terminal_safe};

/// What a CI report says of how the command ran, beside its results.
pub struct Invocation<'a> {
    pub config: &'a std::path::Path,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub elapsed: std::time::Duration,
}

/// JSON with the characters that can reorder or hide what a terminal shows — C1 controls and
/// bidirectional controls (U+202E, U+2066…) — escaped as `\uXXXX`, as JSON allows for any
/// character; serde_json writes them raw. They can only stand inside strings, so each is
/// replaced where it is.
pub fn inert_json(json: String) -> String {
    fn hostile(c: char) -> bool {
        matches!(c, '\u{80}'..='\u{9f}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}' | '\u{061c}')
    }
    if !json.chars().any(hostile) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if hostile(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Violations as a table for people.
pub fn violations_table(items: &[ViolationRecord], next: Option<i64>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let rule_w = items.iter().map(|v| v.rule.len()).max().unwrap_or(4).max(4);
    let key_w = items.iter().map(|v| v.key.len()).max().unwrap_or(3).max(3);
    let _ = writeln!(
        out,
        "{:>6}  {:<rule_w$}  {:<key_w$}  {:<8}  {:<20}  {:>5}  MESSAGE",
        "ID", "RULE", "KEY", "STATE", "FIRST SEEN", "SEEN"
    );
    for v in items {
        let first = format_timestamp(v.first_seen_us);
        let _ = writeln!(
            out,
            "{:>6}  {:<rule_w$}  {:<key_w$}  {:<8}  {:<20}  {:>5}  {}",
            v.id,
            v.rule,
            terminal_safe(&v.key),
            v.state.as_str(),
            first.get(..19).unwrap_or(&first),
            v.occurrences,
            terminal_safe(&v.message)
        );
    }
    match next {
        Some(n) => {
            let _ = writeln!(out, "(more: --after {n})");
        }
        None => {
            let _ = writeln!(
                out,
                "{} violation{}",
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            );
        }
    }
    out
}

/// Violations as `{"items": […], "next": cursor}`, the API's shape.
pub fn violations_json(items: &[ViolationRecord], next: Option<i64>) -> String {
    let page = Page {
        items: items.iter().map(ViolationView::from).collect(),
        next: next.map(|n| n.to_string()),
    };
    let mut out = inert_json(serde_json::to_string_pretty(&page).expect("views serialize"));
    out.push('\n');
    out
}

/// Silences as the API gives them (a page's items, or one silence) as a table.
pub fn silences_table(items: &[SilenceView]) -> String {
    use std::fmt::Write as _;
    let text = |v: &str| terminal_safe(v).into_owned();
    let rows: Vec<[String; 5]> = items
        .iter()
        .map(|s| {
            let mut what: Vec<String> = s
                .matchers
                .iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect();
            if let Some(key) = &s.key {
                what.push(format!("key={}", text(key)));
            }
            // When it ended: its expiry if someone ended it early, else its end.
            let state = match (&s.expired_at, s.active) {
                (Some(at), _) => format!(
                    "expired {} by {}",
                    text(at),
                    text(s.expired_by.as_deref().unwrap_or("?"))
                ),
                (None, true) => format!("active until {}", text(&s.ends_at)),
                (None, false) => format!("ended {}", text(&s.ends_at)),
            };
            [
                text(&s.id),
                what.join(","),
                state,
                text(&s.created_by),
                text(&s.comment),
            ]
        })
        .collect();
    let w = |i: usize, head: &str| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
            .max(head.len())
    };
    let (wi, wm, ws, wb) = (w(0, "ID"), w(1, "MATCHES"), w(2, "STATE"), w(3, "BY"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>wi$}  {:<wm$}  {:<ws$}  {:<wb$}  COMMENT",
        "ID", "MATCHES", "STATE", "BY"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:>wi$}  {:<wm$}  {:<ws$}  {:<wb$}  {}",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
    out
}

/// Audit entries, newest first, as a table.
pub fn audit_table(entries: &[crate::state::AuditRecord]) -> String {
    let mut out = String::new();
    let actor_w = entries
        .iter()
        .map(|e| e.actor.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let action_w = entries
        .iter()
        .map(|e| e.action.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:>5}  {:<20}  {:<actor_w$}  {:<action_w$}  SUBJECT",
        "SEQ", "AT", "ACTOR", "ACTION"
    );
    for e in entries {
        let at = format_timestamp(e.at_us);
        let _ = writeln!(
            out,
            "{:>5}  {:<20}  {:<actor_w$}  {:<action_w$}  {}",
            e.seal_seq.map_or("-".to_string(), |s| s.to_string()),
            at.get(..19).unwrap_or(&at),
            terminal_safe(&e.actor),
            terminal_safe(&e.action),
            terminal_safe(&e.subject)
        );
    }
    out
}

/// Audit entries, newest first, as `{"items": [...]}`.
pub fn audit_json(entries: &[crate::state::AuditRecord]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "seq": e.seal_seq,
                "at": format_timestamp(e.at_us),
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "details": serde_json::from_str::<serde_json::Value>(&e.details).unwrap_or_default(),
                "hash": e.hash,
            })
        })
        .collect();
    inert_json(format!("{:#}\n", serde_json::json!({ "items": items })))
}

/// What `audit verify` found, as people read it: `since` is the kept head's entry it started
/// from, `keyed` whether `auth.audit_key_file` is set.
pub fn verification_text(found: &Verification, since: Option<i64>, keyed: bool) -> String {
    let plural = |n: i64| if n == 1 { "y" } else { "ies" };
    match found {
        Verification::Intact {
            entries,
            checked,
            head,
            unkeyed,
        } => {
            let mut out = format!("audit log intact: {entries} entr{}", plural(*entries));
            if let Some(seq) = since {
                let _ = write!(
                    out,
                    " ({checked} checked, after entry {seq}, the head you kept)"
                );
            }
            if let Some(h) = head {
                let _ = write!(
                    out,
                    ", head {h}\n(keep {entries}:{h} elsewhere: `audit verify --since {entries}:{h}` checks only what is written after it, `--head {h}` that the log was not cut short before it)"
                );
            }
            out.push('\n');
            if *unkeyed > 0 {
                let _ = writeln!(
                    out,
                    "{unkeyed} entr{} hashed without a key (written before auth.audit_key_file was set{}): anyone who can write the store could have rewritten {}",
                    if *unkeyed == 1 { "y is" } else { "ies are" },
                    if keyed { "" } else { "; set it" },
                    if *unkeyed == 1 { "it" } else { "them" },
                );
            }
            out
        }
        Verification::Broken { at, reason } if *at > 0 => {
            format!("audit log BROKEN at entry {at}: {reason}\n")
        }
        Verification::Broken { reason, .. } => format!("audit log BROKEN: {reason}\n"),
    }
}

/// What `audit verify` found, as `{"intact": …}`: the entries, how many were checked, the
/// head and the unkeyed count; or where (`at`, null for the log as a whole) and why not.
pub fn verification_json(found: &Verification) -> String {
    let value = match found {
        Verification::Intact {
            entries,
            checked,
            head,
            unkeyed,
        } => serde_json::json!({
            "intact": true,
            "entries": entries,
            "checked": checked,
            "head": head,
            "unkeyed": unkeyed,
        }),
        Verification::Broken { at, reason } => serde_json::json!({
            "intact": false,
            "at": (*at > 0).then_some(*at),
            "reason": reason,
        }),
    };
    inert_json(format!("{value:#}"))
}

/// Columns of text, each as wide as its widest cell; the last one is not padded.
fn columns(head: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                let _ = writeln!(out, "{c}");
            } else {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
    };
    line(head.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// `repairs list`: the API's page of repairs as a table.
pub fn repairs_table(page: &Page<RepairView>) -> String {
    let text = |v: &str| terminal_safe(v).into_owned();
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|r| {
            let why = r.result.as_ref().or(r.hold_reason.as_ref());
            vec![
                text(&r.id),
                text(&r.rule),
                text(&r.key),
                r.state.as_str().to_string(),
                text(&r.action),
                text(&r.created_at).chars().take(19).collect(),
                why.map(|w| text(w)).unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = columns(
        &[
            "ID",
            "RULE",
            "KEY",
            "STATE",
            "ACTION",
            "CREATED",
            "RESULT / WHY",
        ],
        &rows,
    );
    if let Some(next) = &page.next {
        let _ = writeln!(out, "(more: --cursor {next})");
    }
    out
}

/// `repairs show` / `approve` / `reject`: one repair, field by field, with its actions.
pub fn repair_detail(r: &RepairView) -> String {
    let mut out = String::new();
    let attempts = r.attempts.to_string();
    let fields: [(&str, Option<&str>); 17] = [
        ("id", Some(&r.id)),
        ("rule", Some(&r.rule)),
        ("key", Some(&r.key)),
        ("state", Some(r.state.as_str())),
        ("action", Some(&r.action)),
        ("mode", Some(&r.mode)),
        ("hold_reason", r.hold_reason.as_deref()),
        ("approved_by", r.approved_by.as_deref()),
        ("rejected_by", r.rejected_by.as_deref()),
        ("comment", r.comment.as_deref()),
        ("attempts", Some(&attempts)),
        ("result", r.result.as_deref()),
        ("idempotency_key", Some(&r.idempotency_key)),
        ("violation_first_seen", Some(&r.violation_first_seen)),
        ("created_at", Some(&r.created_at)),
        ("updated_at", Some(&r.updated_at)),
        ("finished_at", r.finished_at.as_deref()),
    ];
    for (name, v) in fields {
        let v = terminal_safe(v.unwrap_or_default());
        if !v.is_empty() {
            let _ = writeln!(out, "{name:<21} {v}");
        }
    }
    for a in &r.actions {
        let mut spec = serde_json::to_value(a).unwrap_or_default();
        if let Some(m) = spec.as_object_mut() {
            m.remove("name");
        }
        let _ = writeln!(
            out,
            "action {:<14} {}",
            terminal_safe(&a.name),
            terminal_safe(&spec.to_string())
        );
    }
    out
}

/// `explain`: the evidence for one key, for a terminal.
pub fn evidence_text(e: &crate::repair::Evidence) -> String {
    let n = &e.now;
    let safe = |s: &str| terminal_safe(s).into_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rule {}, key {} (judged at {})",
        safe(&n.rule),
        safe(&n.key),
        n.at
    );
    for d in &n.datasets {
        let _ = writeln!(
            out,
            "\ndataset {} (source {}): {} row{}",
            d.name,
            d.source,
            d.rows.len(),
            if d.rows.len() == 1 { "" } else { "s" }
        );
        for r in &d.rows {
            let _ = writeln!(out, "  {}", safe(&r.to_string()));
        }
    }
    if let Some(g) = &n.grace {
        let _ = writeln!(out, "\ngrace: {g}");
    }
    let _ = writeln!(out, "\nassert: {}", safe(&n.assertion));
    let width = n
        .steps
        .iter()
        .map(|s| s.expr.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    for s in &n.steps {
        let _ = writeln!(out, "  {:<width$}  = {}", safe(&s.expr), safe(&s.value));
    }
    let _ = writeln!(out, "\nverdict: {}", n.verdict);
    if let Some(m) = &n.message {
        let _ = writeln!(out, "message: {}", safe(m));
    }
    if let Some(err) = &n.error {
        let _ = writeln!(out, "error: {}", safe(err));
    }
    if !e.history.is_empty() {
        let _ = writeln!(out, "\nviolations of this key:");
        for v in &e.history {
            let _ = writeln!(
                out,
                "  #{} {} since {} ({} runs){}",
                safe(&v.id),
                safe(&v.state),
                safe(&v.first_seen),
                v.occurrences,
                match (&v.resolved_at, &v.resolved_by) {
                    (Some(t), Some(by)) => format!(", resolved {t} by {}", safe(by)),
                    (Some(t), None) => format!(", resolved {t}"),
                    _ => String::new(),
                }
            );
        }
    }
    if !e.repairs.is_empty() {
        let _ = writeln!(out, "\nrepairs:");
        for r in &e.repairs {
            let why = r.result.as_ref().or(r.hold_reason.as_ref());
            let _ = writeln!(
                out,
                "  #{} {} {} {}",
                safe(&r.id),
                safe(&r.state),
                safe(&r.action),
                why.map(|w| safe(w)).unwrap_or_default()
            );
        }
    }
    out
}

/// The replicas and what they hold, as `invariantd cluster` prints them.
pub fn cluster_table(view: &crate::api::cluster::ClusterView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if view.replicas.is_empty() {
        out.push_str("No replica has run on this state store in the last hour.\n");
    }
    let w = view
        .replicas
        .iter()
        .map(|r| r.replica.len())
        .max()
        .unwrap_or(0)
        .max("REPLICA".len());
    if !view.replicas.is_empty() {
        let _ = writeln!(
            out,
            "{:<w$}  {:<5}  {:<27}  {:<16}  RULES",
            "REPLICA", "LIVE", "HEARTBEAT", "ROLES"
        );
    }
    for r in &view.replicas {
        let mut roles = Vec::new();
        if r.leader {
            roles.push("leader");
        }
        if r.alerting {
            roles.push("alerting");
        }
        let _ = writeln!(
            out,
            "{:<w$}  {:<5}  {:<27}  {:<16}  {}{}",
            terminal_safe(&r.replica),
            if r.live { "yes" } else { "no" },
            r.heartbeat,
            if roles.is_empty() {
                "-".into()
            } else {
                roles.join(",")
            },
            if r.rules.is_empty() {
                "-".into()
            } else {
                format!("{} ({})", r.rules.len(), terminal_safe(&r.rules.join(", ")))
            },
            if r.ranges.is_empty() {
                String::new()
            } else {
                format!("; reading {}", terminal_safe(&r.ranges.join(", ")))
            }
        );
    }
    if !view.unheld_rules.is_empty() {
        let _ = writeln!(
            out,
            "Rules no live replica runs now: {}",
            terminal_safe(&view.unheld_rules.join(", "))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn bidi_and_c1_controls_are_escaped_in_json_and_it_reads_back_the_same() {
        let text = "a\u{202e}b\u{2066}c\u{2069}d\u{200f}e\u{9b}f";
        let json = super::inert_json(serde_json::json!({ "k": text }).to_string());
        assert_eq!(json, r#"{"k":"a\u202eb\u2066c\u2069d\u200fe\u009bf"}"#);
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["k"], text);
    }
}
