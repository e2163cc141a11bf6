//! The statement around a user's query: the query wrapped so its key order can be imposed
//! from outside, and the filters pushed into it — only some keys (`WHERE key IN (…)`, each key
//! a bound parameter), only rows changed since an instant (`updated_at >= …`), only a range of
//! keys (`key >= … AND key < …`). Each database says how it writes its part (`KeySql`); the
//! filters are the same for all.

use super::request::{ChangedSince, Description, KeyKind, KeyMode, KeyRange};
use crate::value::Key;
use crate::verdict::{ErrorKind, RunError};

/// The query wrapped so its key order can be imposed from outside. The newlines keep a
/// trailing `-- comment` in the user's query from swallowing the closing parenthesis.
pub(crate) fn wrap(query: &str) -> String {
    format!("SELECT * FROM (\n{query}\n) AS invariantd_q")
}

pub(crate) fn quote_ident(name: &str, quote: char) -> String {
    let q = quote.to_string();
    format!("{quote}{}{quote}", name.replace(quote, &(q.clone() + &q)))
}

/// How a database writes what the statement around the query needs: the key column as it is
/// (for integer keys, so that an index serves the filter) and as text; the `ORDER BY` of each
/// key order; and `updated_at >= <placeholder>` for a column (by its index in the description),
/// or an error saying why that column cannot be compared with a time.
pub(crate) struct KeySql<'a> {
    pub column: String,
    pub as_text: String,
    pub order_int: String,
    pub order_text: String,
    pub since: &'a (dyn Fn(usize, &str) -> Result<String, String> + Sync),
    /// A text value from its UTF-8 bytes in hexadecimal (`range_filter`'s bounds).
    pub text: fn(&str) -> String,
}

/// `WHERE …` restricting the wrapped query to `keys`, with its parameters added to `args`.
/// An integer key column is compared with integers (keys that are not integers cannot match
/// and are left out); any other with text.
pub(super) fn key_filter<DB: sqlx::Database>(
    keys: &[String],
    kind: KeyKind,
    key: &KeySql<'_>,
    args: &mut DB::Arguments,
) -> Result<String, RunError>
where
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    use sqlx::Arguments as _;
    let bind_error = |e: sqlx::error::BoxDynError| {
        RunError::new(ErrorKind::QueryFailed, format!("cannot bind a key: {e}"))
    };
    let mut placeholders = Vec::new();
    for k in keys {
        match kind {
            KeyKind::Int => match k.parse::<i64>() {
                Ok(i) => args.add(i).map_err(bind_error)?,
                Err(_) => continue,
            },
            _ => args.add(k.clone()).map_err(bind_error)?,
        }
        let mut p = String::new();
        let _ = args.format_placeholder(&mut p);
        placeholders.push(p);
    }
    let column = match kind {
        KeyKind::Int => &key.column,
        _ => &key.as_text,
    };
    Ok(if placeholders.is_empty() {
        "1 = 0".to_string()
    } else {
        format!("{column} IN ({})", placeholders.join(", "))
    })
}

/// `updated_at >= …` restricting the wrapped query to rows changed since an instant, with
/// its parameter added to `args`.
pub(super) fn since_filter<DB: sqlx::Database>(
    changed: &ChangedSince,
    description: &Description,
    key: &KeySql<'_>,
    args: &mut DB::Arguments,
) -> Result<String, RunError>
where
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    use sqlx::Arguments as _;
    let Some(i) = description
        .columns
        .iter()
        .position(|c| *c == changed.column)
    else {
        return Err(RunError::new(
            ErrorKind::SchemaMismatch,
            format!(
                "updated_at names `{}`, which the query does not return; it returns: {}",
                changed.column,
                description.columns.join(", ")
            ),
        ));
    };
    args.add(changed.value())
        .map_err(|e| RunError::new(ErrorKind::QueryFailed, format!("cannot bind a time: {e}")))?;
    let mut p = String::new();
    let _ = args.format_placeholder(&mut p);
    (key.since)(i, &p).map_err(|why| {
        RunError::new(
            ErrorKind::SchemaMismatch,
            format!(
                "updated_at column `{}` ({}) {why}",
                changed.column, description.types[i]
            ),
        )
    })
}

/// `key >= from AND key < until` in the run's key order, with the bounds written into the SQL
/// (a `COPY` and the MySQL wire sweep take no parameters): integers as numbers, text through
/// the database's `text` (from the bytes in hexadecimal, so no key can break out of its
/// literal) and compared as the `ORDER BY` sorts, byte-wise. `None` for an unbounded range.
pub(crate) fn range_filter(
    range: &KeyRange,
    mode: KeyMode,
    int_column: &str,
    text_order: &str,
    text: fn(&str) -> String,
) -> Result<Option<String>, RunError> {
    let bound = |b: &Key| -> Result<String, RunError> {
        match (mode, b) {
            (KeyMode::Int, Key::Int(i)) => Ok(i.to_string()),
            (KeyMode::Text, Key::Text(t)) => Ok(text(&hex(t))),
            (KeyMode::Int, Key::Text(_)) => Err(RunError::new(
                ErrorKind::SchemaMismatch,
                format!("the key range bound `{b}` is text, and the key is an integer now"),
            )),
            (KeyMode::Text, Key::Int(_)) => Err(RunError::new(
                ErrorKind::SchemaMismatch,
                format!("the key range bound `{b}` is an integer, and the key is text now"),
            )),
        }
    };
    let column = match mode {
        KeyMode::Int => int_column,
        KeyMode::Text => text_order,
    };
    let mut parts = Vec::new();
    if let Some(from) = &range.from {
        parts.push(format!("{column} >= {}", bound(from)?));
    }
    if let Some(until) = &range.until {
        parts.push(format!("{column} < {}", bound(until)?));
    }
    Ok((!parts.is_empty()).then(|| parts.join(" AND ")))
}

fn hex(s: &str) -> String {
    use std::fmt::Write as _;
    s.bytes()
        .fold(String::with_capacity(2 * s.len()), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_text(hex: &str) -> String {
        format!("CAST(X'{hex}' AS TEXT)")
    }

    #[test]
    fn a_range_is_written_in_the_key_order_and_no_bound_escapes_its_literal() {
        let both = KeyRange {
            from: Some(Key::Int(10)),
            until: Some(Key::Int(20)),
        };
        assert_eq!(
            range_filter(&both, KeyMode::Int, "k", "t", sqlite_text)
                .unwrap()
                .unwrap(),
            "k >= 10 AND k < 20"
        );
        let hostile = KeyRange {
            from: Some(Key::Text("a') OR (1=1".into())),
            until: None,
        };
        assert_eq!(
            range_filter(&hostile, KeyMode::Text, "k", "t", sqlite_text)
                .unwrap()
                .unwrap(),
            "t >= CAST(X'612729204f522028313d31' AS TEXT)"
        );
        assert!(range_filter(&hostile, KeyMode::Int, "k", "t", sqlite_text).is_err());
        assert!(range_filter(&both, KeyMode::Text, "k", "t", sqlite_text).is_err());
        assert_eq!(
            range_filter(&KeyRange::default(), KeyMode::Int, "k", "t", sqlite_text).unwrap(),
            None
        );
    }
}
