//! A rule's history as an inline SVG line chart drawn on the server: no script, no foreign
//! source, no inline style (the page's CSP stays strict). Each point is a dot with its time and
//! value on hover, and its exact value in `data-value`.

use std::fmt::Write as _;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::html::esc;
use crate::http::history::{Point, Window};

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 140.0;
const LEFT: f64 = 8.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 18.0;

/// One measure of `points` as a line chart: `label` names it (`open violations`), `value`
/// reads it from a point, `show` writes a value as people read it. Each point is a dot with
/// its time and value on hover (and in `data-value`, exact).
pub fn svg(
    points: &[Point],
    label: &str,
    window: Window,
    value: impl Fn(&Point) -> Decimal,
    show: impl Fn(Decimal) -> String,
) -> String {
    let highest = points.iter().map(&value).max().unwrap_or_default();
    // The scale's top: at least 1, so that a chart of zeros is a flat line at the bottom.
    let max = highest.max(Decimal::ONE);
    let n = points.len().max(2) - 1;
    let x = |i: usize| LEFT + (WIDTH - 2.0 * LEFT) * i as f64 / n as f64;
    let y = |v: Decimal| {
        let share = (v / max).to_f64().unwrap_or(0.0);
        TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - share)
    };
    let title = format!("{label}, {}", window.title());
    let mut out = format!(
        "<figure class=\"chart\" data-window=\"{w}\" data-measure=\"{m}\"><figcaption>{t}</figcaption>\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t}\" preserveAspectRatio=\"none\">",
        w = window.as_str(),
        m = esc(label),
        t = esc(&title),
    );
    let base = HEIGHT - BOTTOM;
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#bbb\" stroke-width=\"1\"/>",
        WIDTH - LEFT
    );
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(value(p))))
        .collect();
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"#b00020\" stroke-width=\"2\" points=\"{}\"/>",
        line.join(" ")
    );
    for (i, p) in points.iter().enumerate() {
        let v = value(p);
        let _ = write!(
            out,
            "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#b00020\" data-at=\"{at}\" data-value=\"{v}\"><title>{at}: {shown}</title></circle>",
            x(i),
            y(v),
            at = esc(&p.at),
            shown = esc(&show(v)),
        );
    }
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"10\" font-size=\"10\" fill=\"#555\">max {}</text>",
        esc(&show(highest))
    );
    if let Some(first) = points.first() {
        let _ = write!(
            out,
            "<text x=\"{LEFT}\" y=\"{}\" font-size=\"10\" fill=\"#555\">{}</text>\
             <text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#555\" text-anchor=\"end\">now</text>",
            HEIGHT - 4.0,
            esc(first.at.get(..16).unwrap_or(&first.at)),
            WIDTH - LEFT,
            HEIGHT - 4.0,
        );
    }
    out.push_str("</svg></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::history::{Open, series};

    const H: i64 = 3_600_000_000;

    #[test]
    fn the_svg_carries_each_point_and_nothing_active() {
        let now = 1_000 * H;
        let opens = [Open {
            from_us: now - 3 * H,
            until_us: None,
            impact: None,
        }];
        let points = series(&opens, Window::Day, now);
        let svg = svg(
            &points,
            "open violations",
            Window::Day,
            |p| p.open.into(),
            |v| v.to_string(),
        );
        assert_eq!(svg.matches("<circle class=\"point\"").count(), 49);
        assert_eq!(svg.matches("data-value=\"1\"").count(), 7);
        assert!(!svg.contains("<script") && !svg.contains("style=") && !svg.contains("href"));
    }
}
