//! A rule's `repair:` section: the actions it offers for a violation (each checked by its kind,
//! in `actions`), and the guardrails around applying them automatically. Checked as strictly
//! as the rest of the rule, each error with its file, line and column.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::actions::{Action, Checker, RawAction};
use crate::config::valid_name;
use crate::diag::{Diagnostics, Pos};
use crate::yaml::{self, OrderedMap};

#[derive(Debug, Deserialize)]
pub(super) struct RawRepair {
    mode: Option<Spanned<String>>,
    #[serde(default)]
    dry_run: bool,
    max_auto_per_run: Option<Spanned<u32>>,
    max_per_hour: Option<Spanned<u32>>,
    action: Option<Spanned<RawAction>>,
    actions: Option<OrderedMap<RawAction>>,
}

/// The shape of a `repair:` section, for finding unknown fields.
pub(super) fn shape() -> yaml::Shape {
    use yaml::Shape;
    Shape::of::<RawRepair>(vec![
        ("action", crate::actions::shape()),
        ("actions", Shape::MapOf(Box::new(crate::actions::shape()))),
    ])
}

/// Whether a rule's repairs are applied once planned, or wait for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    Auto,
    Approve,
}

impl RepairMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RepairMode::Auto => "auto",
            RepairMode::Approve => "approve",
        }
    }
}

/// What a rule's `repair:` section says.
#[derive(Debug, Clone)]
pub struct Repair {
    pub mode: RepairMode,
    /// Plan and show, never apply automatically.
    pub dry_run: bool,
    /// A run finding more violations than this applies none of its repairs automatically.
    pub max_auto_per_run: u32,
    /// At most this many repairs of the rule are applied per rolling hour.
    pub max_per_hour: Option<u32>,
    /// The actions offered, the first one planned unless an approver picks another.
    pub actions: Vec<Action>,
}

/// The default of `max_auto_per_run`.
pub const DEFAULT_MAX_AUTO_PER_RUN: u32 = 10;

/// Checks one rule's `repair:` section.
pub(super) fn check(c: &Checker<'_>, raw: RawRepair, diags: &mut Diagnostics) -> Option<Repair> {
    let before = diags.len();
    let ctx = c.ctx;
    let mode = match &raw.mode {
        None => RepairMode::Approve,
        Some(m) => match m.value.as_str() {
            "auto" => RepairMode::Auto,
            "approve" => RepairMode::Approve,
            other => {
                diags.push(
                    c.file,
                    c.at(m),
                    format!("{ctx}: repair.mode `{other}` is not one of auto, approve"),
                );
                RepairMode::Approve
            }
        },
    };
    let mut actions = Vec::new();
    match (raw.action, raw.actions) {
        (Some(a), None) => {
            let pos = c.at(&a);
            actions.extend(c.action("default", pos, a.value, diags));
        }
        (None, Some(map)) if !map.0.is_empty() => {
            for (name, a) in map.0 {
                let pos = c.at(&name);
                if !valid_name(&name.value) {
                    diags.push(
                        c.file,
                        pos,
                        format!(
                            "{ctx}: repair action name `{}` must match [a-z0-9_]+",
                            name.value
                        ),
                    );
                }
                actions.extend(c.action(&name.value, pos, a, diags));
            }
        }
        (Some(a), Some(_)) => diags.push(
            c.file,
            c.at(&a),
            format!("{ctx}: repair: give either `action` or `actions`, not both"),
        ),
        _ => diags.push(
            c.file,
            Pos {
                line: c.doc.line_offset + 1,
                column: 1,
            },
            format!("{ctx}: repair needs an `action` (or named `actions`)"),
        ),
    }
    let positive = |v: &Option<Spanned<u32>>, what: &str, diags: &mut Diagnostics| {
        if let Some(n) = v
            && n.value == 0
        {
            diags.push(
                c.file,
                c.at(n),
                format!("{ctx}: repair.{what} must be at least 1"),
            );
        }
    };
    positive(&raw.max_auto_per_run, "max_auto_per_run", diags);
    positive(&raw.max_per_hour, "max_per_hour", diags);
    (diags.len() == before).then(|| Repair {
        mode,
        dry_run: raw.dry_run,
        max_auto_per_run: raw
            .max_auto_per_run
            .map_or(DEFAULT_MAX_AUTO_PER_RUN, |n| n.value),
        max_per_hour: raw.max_per_hour.map(|n| n.value),
        actions,
    })
}
