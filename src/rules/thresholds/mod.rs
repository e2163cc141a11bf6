//! `warn_if` and `error_if`: when a rule's violations only warn and when they are an error, by
//! their count, their fraction of the keys judged, or the money they put at risk. The decision
//! is pure (`Thresholds::status`); the run, `check`, the metrics, the API and alerting apply it
//! to what they counted.
//!
//! Without either, a rule is as it always was: any violation is an error. With thresholds, a
//! rule is an error when a condition of `error_if` holds, else it warns when one of `warn_if`
//! holds (with no `warn_if`: when it has any violation), else it passes. Conditions of one
//! map are alternatives: any one that holds is enough.

use std::fmt;
use std::path::Path;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Severity;
use crate::diag::Diagnostics;
use crate::verdict::RuleStatus;
use crate::yaml::{self, Document};

/// `warn_if:` or `error_if:` as written.
#[derive(Debug, Deserialize)]
pub(super) struct RawConditions {
    violations: Option<Spanned<String>>,
    fraction: Option<Spanned<String>>,
    impact: Option<Spanned<String>>,
}

/// What a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The number of violations.
    Violations,
    /// Violations divided by the keys judged (0 to 1).
    Fraction,
    /// The sum of the violations' `impact`, in the rule's unit.
    Impact,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Violations => "violations",
            Measure::Fraction => "fraction",
            Measure::Impact => "impact",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds(self, a: Decimal, b: Decimal) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// One condition: `violations > 10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub measure: Measure,
    pub op: Op,
    pub value: Decimal,
}

impl Condition {
    /// Whether it holds for `tally` (never for a measure the tally does not have).
    pub fn holds(&self, tally: &Tally) -> bool {
        tally
            .value(self.measure)
            .is_some_and(|v| self.op.holds(v, self.value))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.measure.as_str(),
            self.op.as_str(),
            self.value.normalize()
        )
    }
}

/// What a rule's violations add up to, as thresholds read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub violations: u64,
    /// The keys judged (the fraction's denominator); 0 when not known, and then no
    /// `fraction` condition holds.
    pub judged: u64,
    /// The sum of the violations' impact, when the rule has one.
    pub impact: Option<Decimal>,
}

impl Tally {
    fn value(&self, m: Measure) -> Option<Decimal> {
        match m {
            Measure::Violations => Some(Decimal::from(self.violations)),
            Measure::Fraction => (self.judged > 0).then(|| {
                Decimal::from(self.violations) / Decimal::from(self.judged.max(self.violations))
            }),
            Measure::Impact => self.impact,
        }
    }
}

/// A rule's `warn_if` and `error_if`; both empty for a rule without thresholds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Thresholds {
    pub warn_if: Option<Vec<Condition>>,
    pub error_if: Option<Vec<Condition>>,
}

impl Thresholds {
    /// Whether the rule has any.
    pub fn is_set(&self) -> bool {
        self.warn_if.is_some() || self.error_if.is_some()
    }

    /// The status of a rule whose violations add up to `tally`.
    pub fn status(&self, tally: &Tally) -> RuleStatus {
        // A rule with no violation passes, whatever its conditions say (`< 5` holds at 0).
        if tally.violations == 0 {
            return RuleStatus::Pass;
        }
        let any = |conds: &[Condition]| conds.iter().any(|c| c.holds(tally));
        if !self.is_set() || self.error_if.as_deref().is_some_and(any) {
            RuleStatus::Error
        } else if self.warn_if.as_deref().is_none_or(any) {
            RuleStatus::Warn
        } else {
            RuleStatus::Pass
        }
    }

    /// The conditions that hold, for messages (`violations > 10`).
    pub fn reasons(&self, tally: &Tally, status: RuleStatus) -> Vec<String> {
        let conds = match status {
            RuleStatus::Error => self.error_if.as_deref(),
            RuleStatus::Warn => self.warn_if.as_deref(),
            _ => None,
        };
        conds
            .unwrap_or_default()
            .iter()
            .filter(|c| c.holds(tally))
            .map(ToString::to_string)
            .collect()
    }
}

/// The severity a rule's alerts and reports carry at a status: its own when it is an error,
/// at most `warning` when it warns, none when it passes.
pub fn effective_severity(severity: Severity, status: RuleStatus) -> Option<Severity> {
    match status {
        RuleStatus::Error => Some(severity),
        // Severity orders critical < warning < info: the lower of the two ranks.
        RuleStatus::Warn => Some(severity.max(Severity::Warning)),
        RuleStatus::Pass | RuleStatus::Unknown => None,
    }
}

/// Where thresholds are being checked, for messages.
pub(super) struct Site<'a> {
    pub file: &'a Path,
    pub doc: &'a Document<'a>,
    pub ctx: &'a str,
    /// Whether the rule has `impact:` (an `impact` condition needs it).
    pub has_impact: bool,
}

/// Checks `warn_if` and `error_if`, each problem where it is written.
pub(super) fn check(
    site: &Site<'_>,
    warn_if: Option<RawConditions>,
    error_if: Option<RawConditions>,
    diags: &mut Diagnostics,
) -> Thresholds {
    Thresholds {
        warn_if: warn_if.map(|w| conditions(site, "warn_if", w, diags)),
        error_if: error_if.map(|e| conditions(site, "error_if", e, diags)),
    }
}

fn conditions(
    site: &Site<'_>,
    field: &str,
    raw: RawConditions,
    diags: &mut Diagnostics,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let written = [
        (Measure::Violations, raw.violations),
        (Measure::Fraction, raw.fraction),
        (Measure::Impact, raw.impact),
    ];
    let mut any = false;
    for (measure, text) in written {
        let Some(text) = text else { continue };
        any = true;
        let at = yaml::pos(&text, site.doc.line_offset);
        let mut fail = |why: String| {
            diags.push(
                site.file,
                at,
                format!("{}: {field}.{}: {why}", site.ctx, measure.as_str()),
            )
        };
        if measure == Measure::Impact && !site.has_impact {
            fail("the rule has no `impact:` to sum".to_string());
            continue;
        }
        match parse_condition(measure, &text.value) {
            Ok(c) => out.push(c),
            Err(why) => fail(why),
        }
    }
    if !any {
        diags.push(
            site.file,
            crate::diag::Pos {
                line: site.doc.line_offset + 1,
                column: 1,
            },
            format!(
                "{}: {field} names no condition; give violations, fraction or impact",
                site.ctx
            ),
        );
    }
    out
}

/// `> 10`, `>= 0.5%`, `== 0`: an operator and a number (a fraction may be a percentage).
fn parse_condition(measure: Measure, text: &str) -> Result<Condition, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "`{t}` is not a comparison such as \"> 10\" (quote it in YAML: a leading > starts a folded text); operators > >= < <= == !="
        )
    };
    let (op, rest) = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        (">", Op::Gt),
        ("<", Op::Lt),
    ]
    .iter()
    .find_map(|(s, op)| t.strip_prefix(s).map(|r| (*op, r.trim())))
    .ok_or_else(bad)?;
    let (number, percent) = match rest.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (rest, false),
    };
    let mut value: Decimal = number.parse().map_err(|_| bad())?;
    if percent {
        if measure != Measure::Fraction {
            return Err(format!("`{t}`: only a fraction may be a percentage"));
        }
        value /= Decimal::ONE_HUNDRED;
    }
    if value.is_sign_negative() {
        return Err(format!("`{t}`: the number cannot be negative"));
    }
    if measure == Measure::Fraction && value > Decimal::ONE {
        return Err(format!(
            "`{t}`: a fraction is between 0 and 1 (or 0% and 100%)"
        ));
    }
    if measure == Measure::Violations && !value.fract().is_zero() {
        return Err(format!("`{t}`: violations are counted in whole numbers"));
    }
    Ok(Condition { measure, op, value })
}

#[cfg(test)]
mod tests;
