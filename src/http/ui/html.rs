//! The page's small vocabulary: escaping, times as people read them ("12 min ago", the exact
//! time on hover), and rows as tables with their column names. Pure functions of their
//! inputs (the caller passes `now`), every value escaped.

use std::fmt::Write as _;

use crate::value::format_timestamp;

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

/// A length of time in its two largest units: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn span(micros: i64) -> String {
    let s = micros.max(0) / 1_000_000;
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min", s / 60),
        3_600..86_400 if s % 3_600 >= 60 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        3_600..86_400 => format!("{} h", s / 3_600),
        _ if s % 86_400 >= 3_600 => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
        _ => format!("{} d", s / 86_400),
    }
}

/// How long before `now_us` `at_us` was: `just now`, `12 min ago`, `in 3 min` (a time ahead).
pub fn ago(now_us: i64, at_us: i64) -> String {
    let d = now_us - at_us;
    if d.abs() < 1_000_000 {
        "just now".into()
    } else if d < 0 {
        format!("in {}", span(-d))
    } else {
        format!("{} ago", span(d))
    }
}

/// A `<time>` that reads as `ago`, with the exact time on hover and for machines.
pub fn time(now_us: i64, at_us: i64) -> String {
    let exact = esc(&format_timestamp(at_us));
    format!(
        "<time datetime=\"{exact}\" title=\"{exact}\">{}</time>",
        esc(&ago(now_us, at_us))
    )
}

/// A table with a header row; cells are HTML already.
pub fn table(class: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "<div class=\"scroll\"><table class=\"{}\"><thead><tr>",
        esc(class)
    );
    for h in headers {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        // Each cell names its column, for narrow screens where a row is shown as a block.
        for (i, cell) in row.iter().enumerate() {
            let _ = write!(
                out,
                "<td data-label=\"{}\">{cell}</td>",
                esc(headers.get(i).copied().unwrap_or_default())
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// One value of a row, as text: strings as they are, `null` as an empty cell.
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

/// The rows of each dataset (`{"payment": {…} | [{…}, …] | null, …}`, as a violation keeps
/// them and `explain` reads them): one table per dataset, its columns named.
pub fn datasets(value: &serde_json::Value) -> String {
    let Some(map) = value.as_object() else {
        return format!("<pre>{}</pre>", esc(&value.to_string()));
    };
    let mut out = String::new();
    for (name, rows) in map {
        let rows: Vec<&serde_json::Map<String, serde_json::Value>> = match rows {
            serde_json::Value::Array(items) => items.iter().filter_map(|r| r.as_object()).collect(),
            serde_json::Value::Object(row) => vec![row],
            _ => Vec::new(),
        };
        out.push_str(&rows_table(name, &rows));
    }
    out
}

/// One dataset's rows as a table, under its name; "no row" when it has none.
pub fn rows_table(name: &str, rows: &[&serde_json::Map<String, serde_json::Value>]) -> String {
    if rows.is_empty() {
        return format!("<div class=\"meta\">{}: <i>no row</i></div>", esc(name));
    }
    // The columns in the order the first row has them, then any others.
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        for c in row.keys() {
            if !columns.contains(&c.as_str()) {
                columns.push(c);
            }
        }
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row.get(*c).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    format!(
        "<div class=\"meta\">{} ({} row{}):</div>{}",
        esc(name),
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        table("rows", &columns, &body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            esc("<img src=x onerror=\"alert('1')\">&"),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"
        );
    }

    #[test]
    fn times_read_as_people_say_them() {
        let now = 10_000_000_000_000;
        let s = 1_000_000;
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now, now - 45 * s), "45 s ago");
        assert_eq!(ago(now, now - 12 * 60 * s), "12 min ago");
        assert_eq!(ago(now, now - 3 * 3600 * s), "3 h ago");
        assert_eq!(ago(now, now - (3 * 3600 + 5 * 60) * s), "3 h 5 min ago");
        assert_eq!(ago(now, now - (2 * 86400 + 4 * 3600) * s), "2 d 4 h ago");
        assert_eq!(ago(now, now + 180 * s), "in 3 min");
        let t = time(now, now - 12 * 60 * s);
        assert!(
            t.contains(">12 min ago</time>") && t.contains("title=\"1970-04-26T"),
            "{t}"
        );
    }

    #[test]
    fn rows_are_tables_with_their_column_names() {
        let v = serde_json::json!({
            "payment": { "order_id": 2, "reference": "<b>x</b>" },
            "reservation": [],
            "lines": [{ "sku": "a" }, { "sku": "b", "qty": 2 }],
            "gone": null
        });
        let html = datasets(&v);
        assert!(
            html.contains("<th scope=\"col\">order_id</th><th scope=\"col\">reference</th>"),
            "{html}"
        );
        assert!(html.contains("<td data-label=\"order_id\">2</td><td data-label=\"reference\">&lt;b&gt;x&lt;/b&gt;</td>"), "{html}");
        assert!(
            html.contains("reservation: <i>no row</i>") && html.contains("gone: <i>no row</i>"),
            "{html}"
        );
        assert!(
            html.contains("lines (2 rows)") && html.contains("<th scope=\"col\">qty</th>"),
            "{html}"
        );
        assert!(
            html.contains("<tr><td data-label=\"sku\">a</td><td data-label=\"qty\"></td></tr>"),
            "{html}"
        );
    }
}
