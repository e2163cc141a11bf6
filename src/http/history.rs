//! A rule's history from the state store: how many of its violations were open, and how much
//! was at risk, at each step of the last 24 hours or 7 days — for the page's charts and
//! `GET /api/v1/rules/{name}/history`. `series` is pure: given when each violation was open
//! and its impact, it counts at each instant; `history` reads what changed at each step from
//! the store (`StateStore::open_steps_of`) and adds it up the same way; `histories` does
//! several windows from one read.
//! Each violation counts with the impact it had when last seen.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::state::{StateError, StateStore, StepChange, Steps};
use crate::value::format_timestamp;

/// One violation's time open: from when first seen until resolved (`None`: still open).
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    pub from_us: i64,
    pub until_us: Option<i64>,
    pub impact: Option<Decimal>,
}

/// The state of a rule at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    #[serde(skip)]
    pub at_us: i64,
    pub at: String,
    pub open: i64,
    /// The impact of the violations open then, exact (a decimal string).
    #[serde(with = "crate::value::decimal_text")]
    pub impact: Decimal,
}

/// The windows a chart can show: its length and its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Day,
    Week,
}

impl Window {
    pub fn parse(text: &str) -> Option<Window> {
        match text {
            "24h" => Some(Window::Day),
            "7d" => Some(Window::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Window::Day => "last 24 hours",
            Window::Week => "last 7 days",
        }
    }

    /// (length, step) in microseconds: 48 steps of 30 minutes, or 56 of 3 hours.
    pub fn bounds(self) -> (i64, i64) {
        const H: i64 = 3_600_000_000;
        match self {
            Window::Day => (24 * H, H / 2),
            Window::Week => (7 * 24 * H, 3 * H),
        }
    }
}

/// The open count and impact at each step of `window` ending at `now_us` (the last point is
/// `now_us` itself). A violation counts at `t` when it was first seen at or before `t` and not
/// resolved by `t`.
pub fn series(opens: &[Open], window: Window, now_us: i64) -> Vec<Point> {
    let (length, step) = window.bounds();
    let spans = opens.iter().map(|o| (o.from_us, o.until_us, o.impact));
    let changes = crate::state::step_changes(spans, now_us - length, step, length / step);
    accumulate(&changes, window, now_us)
}

/// The points, from what changed at each step (`StateStore::open_steps_of`).
pub fn accumulate(changes: &[StepChange], window: Window, now_us: i64) -> Vec<Point> {
    let (length, step) = window.bounds();
    let mut open = 0;
    let mut impact = Decimal::ZERO;
    changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let t = now_us - length + i as i64 * step;
            open += c.opened - c.closed;
            impact = impact
                .saturating_add(c.opened_impact)
                .saturating_sub(c.closed_impact);
            Point {
                at_us: t,
                at: format_timestamp(t),
                open,
                impact,
            }
        })
        .collect()
}

/// A rule's points over `window`, ending now, from the store (one pass over the spans open
/// in the window).
pub async fn history(
    store: &StateStore,
    rule: &str,
    window: Window,
    now_us: i64,
) -> Result<Vec<Point>, StateError> {
    Ok(histories(store, rule, &[window], now_us).await?.remove(0))
}

/// `history` for each of `windows`, from one pass over the rule's spans.
pub async fn histories(
    store: &StateStore,
    rule: &str,
    windows: &[Window],
    now_us: i64,
) -> Result<Vec<Vec<Point>>, StateError> {
    let grids: Vec<Steps> = windows
        .iter()
        .map(|w| {
            let (length, step) = w.bounds();
            Steps {
                from_us: now_us - length,
                step_us: step,
                steps: length / step,
            }
        })
        .collect();
    let changes = store.open_steps_of(rule, &grids).await?;
    Ok(windows
        .iter()
        .zip(&changes)
        .map(|(w, c)| accumulate(c, *w, now_us))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000_000;

    #[test]
    fn points_count_what_was_open_and_at_risk_at_each_step() {
        let now = 1_000 * H;
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let opens = [
            // Open for the whole day, still open.
            Open {
                from_us: now - 30 * H,
                until_us: None,
                impact: Some(d("0.10")),
            },
            // Opened 2 hours ago, resolved an hour ago.
            Open {
                from_us: now - 2 * H,
                until_us: Some(now - H),
                impact: Some(d("0.20")),
            },
            // Before the window entirely.
            Open {
                from_us: now - 40 * H,
                until_us: Some(now - 30 * H),
                impact: None,
            },
        ];
        let points = series(&opens, Window::Day, now);
        assert_eq!(points.len(), 49);
        assert_eq!(points[0].at_us, now - 24 * H);
        assert_eq!(points[48].at_us, now);
        let at = |h: i64| points.iter().find(|p| p.at_us == now - h * H).unwrap();
        assert_eq!((at(3).open, at(3).impact), (1, d("0.10")));
        assert_eq!((at(2).open, at(2).impact), (2, d("0.30")));
        // Resolved at that instant: no longer open.
        assert_eq!((at(1).open, at(1).impact), (1, d("0.10")));
        assert_eq!(series(&opens, Window::Week, now).len(), 57);
    }

    proptest! {
        /// Each point's count and impact agree with the opened-less-resolved count at its instant.
        #[test]
        fn each_point_agrees_with_the_spans(spans in proptest::collection::vec((0i64..200, 0i64..200, proptest::option::of(0i64..1000)), 0..40)) {
            let now = 1_000 * H;
            let opens: Vec<Open> = spans.iter().map(|(a, len, cents)| Open {
                from_us: now - a * H,
                until_us: (*len < 150).then(|| now - a * H + len * H),
                impact: cents.map(|c| Decimal::new(c, 2)),
            }).collect();
            // Counted another way: what had opened by then, less what had been resolved.
            for p in series(&opens, Window::Week, now) {
                let opened = opens.iter().filter(|o| o.from_us <= p.at_us);
                let resolved = opens.iter().filter(|o| o.until_us.is_some_and(|u| u <= p.at_us));
                prop_assert_eq!(p.open, opened.clone().count() as i64 - resolved.clone().count() as i64);
                let sum = |it: &mut dyn Iterator<Item = &Open>| it.map(|o| o.impact.unwrap_or_default()).sum::<Decimal>();
                prop_assert_eq!(p.impact, sum(&mut opened.clone()) - sum(&mut resolved.clone()));
            }
        }
    }
}
