//! JUnit XML, as CI systems read test results (`check --junit FILE`, `test --junit FILE`):
//! one `<testsuite>` in a `<testsuites>`, one `<testcase>` per rule (or per fixture case of
//! `test`), a `<failure>` with the message and a sample of violations, an `<error>` for a
//! rule that could not be judged. It follows the Jenkins xUnit plugin's `junit-10.xsd`, the
//! schema GitLab, GitHub's test reporters and Jenkins read; the tests validate it against
//! that schema and read it back with an XML parser.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::Invocation;

/// A whole report: what ran, when, and each case.
pub struct Suite {
    /// `invariantd check` or `invariantd test`.
    pub name: String,
    pub started_at: DateTime<Utc>,
    pub elapsed: Duration,
    pub properties: Vec<(String, String)>,
    pub cases: Vec<Case>,
}

/// One test case: a rule's run, or one fixture case.
pub struct Case {
    pub name: String,
    pub classname: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub time: Option<Duration>,
    pub result: CaseResult,
}

pub enum CaseResult {
    Passed,
    /// Passed, with a warning for whoever reads the report (in `system-out`).
    Warned(String),
    /// The check found what it checks for: `message` is the summary, `text` the details.
    Failed {
        kind: String,
        message: String,
        text: String,
    },
    /// The case could not be judged (a source down, a query that failed).
    Error {
        kind: String,
        message: String,
        text: String,
    },
}

/// The properties every report carries: the version that wrote it and the configuration.
pub fn properties(at: &Invocation<'_>) -> Vec<(String, String)> {
    vec![
        (
            "invariantd.version".into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
        ("config".into(), at.config.display().to_string()),
    ]
}

/// The report as an XML document.
pub fn render(suite: &Suite) -> String {
    let count = |f: fn(&CaseResult) -> bool| suite.cases.iter().filter(|c| f(&c.result)).count();
    let failures = count(|r| matches!(r, CaseResult::Failed { .. }));
    let errors = count(|r| matches!(r, CaseResult::Error { .. }));
    let tests = suite.cases.len();
    let time = seconds(suite.elapsed);
    let name = attr(&suite.name);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time}\" timestamp=\"{}\">",
        suite.started_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    if !suite.properties.is_empty() {
        out.push_str("    <properties>\n");
        for (k, v) in &suite.properties {
            let _ = writeln!(
                out,
                "      <property name=\"{}\" value=\"{}\"/>",
                attr(k),
                attr(v)
            );
        }
        out.push_str("    </properties>\n");
    }
    for case in &suite.cases {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\"",
            attr(&case.name),
            attr(&case.classname)
        );
        if let Some(file) = &case.file {
            let _ = write!(out, " file=\"{}\"", attr(file));
        }
        if let Some(line) = case.line {
            let _ = write!(out, " line=\"{line}\"");
        }
        if let Some(t) = case.time {
            let _ = write!(out, " time=\"{}\"", seconds(t));
        }
        let (element, kind, message, text) = match &case.result {
            CaseResult::Passed => {
                out.push_str("/>\n");
                continue;
            }
            CaseResult::Warned(text) => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>{}</system-out>\n    </testcase>",
                    text_node(text)
                );
                continue;
            }
            CaseResult::Failed {
                kind,
                message,
                text,
            } => ("failure", kind, message, text),
            CaseResult::Error {
                kind,
                message,
                text,
            } => ("error", kind, message, text),
        };
        let _ = writeln!(
            out,
            ">\n      <{element} type=\"{}\" message=\"{}\">{}</{element}>\n    </testcase>",
            attr(kind),
            attr(message),
            text_node(text)
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// A character XML 1.0 can hold: not a control other than tab, newline and carriage return,
/// not a surrogate, not U+FFFE or U+FFFF. Others (which a database's text may hold) become
/// U+FFFD, as a parser would refuse the whole file for one of them.
fn xml_char(c: char) -> char {
    match c {
        '\t' | '\n' | '\r' => c,
        '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
        c => c,
    }
}

/// Text for an attribute value: markup and quotes escaped, line breaks kept as references
/// (a parser would fold them into spaces).
fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().map(xml_char) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

/// Text for an element's content.
fn text_node(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().map(xml_char) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_databases_cannot_break_the_document() {
        assert_eq!(
            attr("a<b & \"c\" 'd'\nE\u{1}\u{ffff}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&#10;E\u{fffd}\u{fffd}"
        );
        assert_eq!(
            text_node("]]> <x/> & \u{0}\r\n"),
            "]]&gt; &lt;x/&gt; &amp; \u{fffd}&#13;\n"
        );
    }
}
