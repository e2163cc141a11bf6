//! Typed values as they come out of the databases: one `Value` per column slot of a `Row`, the
//! join `Key`, the `Types` a column or an expression can have, and their conversions to text
//! and JSON for people and the API.
//!
//! Timestamps are kept as microseconds since the Unix epoch in UTC (the precision PostgreSQL and
//! MySQL store), so comparing two of them is an integer comparison in the hot loop. Exact
//! decimals use `rust_decimal`, so `0.10 == 0.1` and sums never drift.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;

/// The most text a violation keeps of one value, and of its message.
pub const EVIDENCE_MAX: usize = 1024;
pub const MESSAGE_MAX: usize = 4096;

/// A set of value types, as bits: what a column can hold (a source describes each column of
/// a query so) and what an expression can evaluate to (the rule checker's static types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Types(u16);

impl Types {
    pub const BOOL: Types = Types(1);
    pub const INT: Types = Types(1 << 1);
    pub const DOUBLE: Types = Types(1 << 2);
    pub const DECIMAL: Types = Types(1 << 3);
    pub const STRING: Types = Types(1 << 4);
    pub const BYTES: Types = Types(1 << 5);
    pub const TIMESTAMP: Types = Types(1 << 6);
    pub const DURATION: Types = Types(1 << 7);
    pub const NULL: Types = Types(1 << 8);
    pub const ROW: Types = Types(1 << 9);
    pub const LIST: Types = Types(1 << 10);
    /// What a column of unknown type may hold.
    pub const COLUMN: Types = Types(0b111_1111);
    pub const ANY: Types = Types(0b111_1111_1111);

    const NAMES: [&'static str; 11] = [
        "bool",
        "int",
        "double",
        "decimal",
        "string",
        "bytes",
        "timestamp",
        "duration",
        "null",
        "row",
        "list",
    ];

    /// Whether the two sets share a type.
    pub const fn meets(self, other: Types) -> bool {
        self.0 & other.0 != 0
    }

    /// The types of this set that are also in `other`.
    pub const fn within(self, other: Types) -> Types {
        Types(self.0 & other.0)
    }

    /// Both sets together.
    pub const fn with(self, other: Types) -> Types {
        Types(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn singles(self) -> impl Iterator<Item = Types> {
        (0..11)
            .map(|i| Types(1 << i))
            .filter(move |t| self.0 & t.0 != 0)
    }

    /// `int`, or `int or string` for a set.
    pub fn describe(self) -> String {
        let names: Vec<&str> = (0..11)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| Types::NAMES[i])
            .collect();
        names.join(" or ")
    }
}

/// One column value of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Decimal(Decimal),
    Text(Box<str>),
    Bytes(Box<[u8]>),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Double(_) => "double",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Timestamp(_) => "timestamp",
        }
    }

    /// The value as evidence: as `to_json`, with text and bytes cut to `EVIDENCE_MAX` bytes.
    pub fn to_evidence(&self) -> serde_json::Value {
        match self {
            Value::Text(s) => serde_json::Value::String(truncated(s, EVIDENCE_MAX).into_owned()),
            Value::Bytes(b) if b.len() * 2 > EVIDENCE_MAX => serde_json::Value::String(format!(
                "{}…[truncated: {} bytes]",
                hex(&b[..EVIDENCE_MAX / 2]),
                b.len()
            )),
            other => other.to_json(),
        }
    }

    /// The value as JSON: decimals as strings (JSON numbers lose their exactness in most
    /// clients), timestamps as RFC 3339 strings, bytes as lowercase hex.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Double(d) => serde_json::Number::from_f64(*d)
                .map(J::Number)
                .unwrap_or_else(|| J::String(d.to_string())),
            Value::Decimal(d) => J::String(d.to_string()),
            Value::Text(s) => J::String(s.to_string()),
            Value::Bytes(b) => J::String(hex(b)),
            Value::Timestamp(t) => J::String(format_timestamp(*t)),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::Decimal(d) => write!(f, "{d}"),
            Value::Text(s) => f.write_str(s),
            Value::Bytes(b) => f.write_str(&hex(b)),
            Value::Timestamp(t) => f.write_str(&format_timestamp(*t)),
        }
    }
}

/// Text for a terminal: control characters (C0 but tab, DEL, C1), and the bidirectional
/// controls that reorder what a reader sees, are shown as `\u{…}` escapes, so a hostile value
/// in a row can neither clear the screen, retitle the window, nor disguise itself.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The secrets invariantd knows (passwords of the source and state URLs, API tokens): never
/// shown. A row that happens to hold one (a query that selects a connection string, say)
/// is stored, logged and served with `***` in its place.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// Secrets shorter than this cannot be told from ordinary text, and are not redacted.
const SECRET_MIN: usize = 4;

impl Secrets {
    pub fn add(&mut self, secret: &str) {
        if secret.len() >= SECRET_MIN && !self.0.iter().any(|s| s == secret) {
            self.0.push(secret.to_string());
            // Longest first, so a secret containing another is replaced whole.
            self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Adds the password of a database URL, as written and percent-decoded.
    pub fn add_url_password(&mut self, url: &str) {
        let Some((_, rest)) = url.split_once("://") else {
            return;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let Some((userinfo, _)) = authority.rsplit_once('@') else {
            return;
        };
        if let Some((_, password)) = userinfo.split_once(':') {
            self.add(password);
            self.add(&percent_decode(password));
        }
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(s.as_str(), "***"));
            }
        }
        out
    }

    /// Every string in a JSON value redacted.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                if let std::borrow::Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|v| self.redact_json(v));
                // A JSON column's own keys are text from the row too.
                if map
                    .keys()
                    .any(|k| matches!(self.redact(k), std::borrow::Cow::Owned(_)))
                {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(k, v)| (self.redact(&k).into_owned(), v))
                        .collect();
                }
            }
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` cut to at most `max` bytes (at a character boundary), with a marker saying how much
/// was left out: stored messages and evidence stay bounded whatever a row holds.
pub fn truncated(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}…[truncated: {} bytes]",
        &text[..end],
        text.len()
    ))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The join key of a row. All datasets of one rule use the same kind of key in one run: integers
/// when every dataset's key column is an integer type, text otherwise (integers then compare as
/// their decimal text, the same way the databases were told to sort them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Key {
    Int(i64),
    Text(Box<str>),
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            // Byte-wise, which for UTF-8 is code point order: what PostgreSQL's "C" collation,
            // MySQL's binary cast and SQLite's BINARY collation all produce.
            (Key::Text(a), Key::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            // Never happens within one run (one key kind per rule run); a total order anyway.
            (Key::Int(_), Key::Text(_)) => Ordering::Less,
            (Key::Text(_), Key::Int(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => f.write_str(s),
        }
    }
}

/// A row's column values: up to four held in place, so that a narrow row (a key-only
/// existence rule reads one column per row, millions of rows a sweep) is not an allocation of
/// its own, made by the reader and freed on another thread once judged.
pub type Values = smallvec::SmallVec<[Value; 4]>;

/// One row of a dataset: its key and its column values in the order the query returned them.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: Key,
    pub values: Values,
}

impl Row {
    /// A row that holds nothing and allocates nothing: a slot to decode into, or what is left
    /// where a row was taken out of its batch.
    #[inline(always)]
    pub fn empty() -> Row {
        Row {
            key: Key::Int(0),
            values: Values::new(),
        }
    }
}

pub const MICROS_PER_SECOND: i64 = 1_000_000;

pub fn timestamp_from_datetime(dt: DateTime<Utc>) -> i64 {
    dt.timestamp_micros()
}

/// Timestamps without a time zone (PostgreSQL `timestamp`, MySQL `DATETIME`, SQLite text) are
/// taken to be UTC, the convention of services that store them.
pub fn timestamp_from_naive(dt: NaiveDateTime) -> i64 {
    dt.and_utc().timestamp_micros()
}

pub fn timestamp_from_date(d: NaiveDate) -> i64 {
    timestamp_from_naive(d.and_hms_opt(0, 0, 0).expect("midnight is a valid time"))
}

pub fn format_timestamp(micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => format!("{micros}us"),
    }
}

/// Parses a timestamp stored as text: RFC 3339 (`2026-11-26T09:30:00Z`, with any offset), or
/// the SQL forms SQLite's `CURRENT_TIMESTAMP` and most applications write
/// (`2026-11-26 09:30:00`, optional fraction, optional offset, or a bare date), taken as UTC.
pub fn parse_timestamp_text(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(timestamp_from_naive(dt));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(timestamp_from_date)
}

/// Formats a duration in microseconds for people, in a form `duration()` reads back:
/// `45m`, `1h2m3s`, `1.5s`. Durations of a minute or more are shown to the second.
pub fn format_duration(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    // People read `48s`, not `47.99s`: below a second in milliseconds, below a minute in
    // whole seconds, then hours, minutes and seconds.
    if abs < MICROS_PER_SECOND as u64 {
        let ms = (abs + 500) / 1000;
        return if ms == 0 && abs > 0 {
            format!("{sign}{abs}us")
        } else {
            format!("{sign}{ms}ms")
        };
    }
    let secs = (abs + MICROS_PER_SECOND as u64 / 2) / MICROS_PER_SECOND as u64;
    if secs < 60 {
        return format!("{sign}{secs}s");
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// A double converted to the decimal it prints as (its shortest round-trip form), so a SQLite
/// REAL holding `0.1` equals the exact decimal `0.10`. `None` for NaN, infinities and
/// magnitudes beyond what a decimal holds.
pub fn decimal_from_f64(d: f64) -> Option<Decimal> {
    if !d.is_finite() {
        return None;
    }
    let text = format!("{d}");
    text.parse::<Decimal>()
        .ok()
        .or_else(|| Decimal::from_scientific(&format!("{d:e}")).ok())
}

/// Exact decimals in JSON, as strings (`"339.35"`): `#[serde(with = "crate::value::decimal_text")]`.
/// A number is read too (what earlier releases wrote), by its shortest text.
pub mod decimal_text {
    use rust_decimal::Decimal;
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Decimal;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a decimal, as a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
                v.parse().map_err(|e| E::custom(format!("`{v}`: {e}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
                Ok(Decimal::from(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
                Ok(Decimal::from(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
                super::decimal_from_f64(v).ok_or_else(|| E::custom(format!("{v} is not a decimal")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as one path segment or
/// one query value: the text can never add a segment, a parameter or a host.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_money_are_written_as_decimal_strings_and_numbers_written_earlier_still_read() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Sum {
            #[serde(with = "decimal_text")]
            total: Decimal,
        }
        let sum = Sum {
            total: "0.10".parse::<Decimal>().unwrap() + "0.20".parse::<Decimal>().unwrap(),
        };
        assert_eq!(serde_json::to_string(&sum).unwrap(), r#"{"total":"0.30"}"#);
        for (stored, read) in [
            (r#"{"total":"339.35"}"#, "339.35"),
            (r#"{"total":339.34999999999997}"#, "339.34999999999997"),
            (r#"{"total":499900}"#, "499900"),
        ] {
            let back: Sum = serde_json::from_str(stored).unwrap();
            assert_eq!(back.total.to_string(), read);
        }
        assert!(serde_json::from_str::<Sum>(r#"{"total":"lots"}"#).is_err());
    }

    #[test]
    fn hostile_text_is_escaped_for_terminals_and_long_values_are_cut() {
        assert_eq!(terminal_safe("order 7: fine"), "order 7: fine");
        assert_eq!(
            terminal_safe("a\u{1b}[2Jb\u{7}c\rd\u{0}e\u{202e}f\u{9b}g\th"),
            "a\\u{1b}[2Jb\\u{7}c\\u{d}d\\u{0}e\\u{202e}f\\u{9b}g\th"
        );
        let long = "é".repeat(3000);
        let cut = truncated(&long, 1001);
        assert!(
            cut.starts_with(&"é".repeat(500)),
            "cut at a character boundary"
        );
        assert!(cut.ends_with("…[truncated: 6000 bytes]"), "{cut}");
        let evidence = Value::Text("x".repeat(10_000_000).into()).to_evidence();
        assert!(evidence.as_str().unwrap().len() < EVIDENCE_MAX + 40);
        let bytes = Value::Bytes(vec![0xab; 5000].into()).to_evidence();
        assert!(
            bytes
                .as_str()
                .unwrap()
                .ends_with("…[truncated: 5000 bytes]")
        );
        assert_eq!(Value::Text("short".into()).to_evidence(), "short");
    }

    #[test]
    fn text_keys_order_bytewise_not_by_locale() {
        let mut keys: Vec<Key> = ["b", "B", "é", "a", "Z", "ä"]
            .iter()
            .map(|s| Key::Text((*s).into()))
            .collect();
        keys.sort();
        let order: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(order, ["B", "Z", "a", "b", "ä", "é"]);
    }

    #[test]
    fn timestamps_parse_from_the_text_forms_applications_store() {
        let want = parse_timestamp_text("2026-11-26T09:30:00Z").unwrap();
        assert_eq!(parse_timestamp_text("2026-11-26 09:30:00"), Some(want));
        assert_eq!(
            parse_timestamp_text("2026-11-26T10:30:00+01:00"),
            Some(want)
        );
        assert_eq!(parse_timestamp_text("2026-11-26 09:30:00.000"), Some(want));
        assert_eq!(
            parse_timestamp_text("2026-11-26 09:30:00.5").unwrap() - want,
            500_000
        );
        assert!(parse_timestamp_text("yesterday").is_none());
    }

    #[test]
    fn doubles_become_the_decimal_they_print_as() {
        assert_eq!(decimal_from_f64(0.1), Some("0.10".parse().unwrap()));
        assert_eq!(
            decimal_from_f64(1e-10),
            Some("0.0000000001".parse().unwrap())
        );
        assert_eq!(decimal_from_f64(f64::NAN), None);
    }

    #[test]
    fn durations_print_for_people_and_read_back() {
        assert_eq!(format_duration(45 * MICROS_PER_SECOND), "45s");
        assert_eq!(format_duration(2700 * MICROS_PER_SECOND), "45m");
        assert_eq!(format_duration(3723 * MICROS_PER_SECOND + 5), "1h2m3s");
        assert_eq!(format_duration(1_500_000), "2s");
        assert_eq!(format_duration(47_990_000), "48s");
        assert_eq!(format_duration(-500_000), "-500ms");
        assert_eq!(format_duration(7), "7us");
    }
}
