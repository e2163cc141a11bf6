//! Templates inside actions, shared by the kinds: JSON bodies whose strings are templates — a
//! string that is a single `{{ expr }}` keeps the value's JSON type, so
//! `"{{payment.amount_cents}}"` is the number 1999 — SQL parameters as typed values (bound by
//! the database driver, never spliced), and the encodings that keep a value inside its place:
//! a URL's path segment or query value, a NATS subject token.

use crate::expr::{Env, Program, Scope, Template, Val};
use crate::value::{format_timestamp, hex};
use crate::verdict::Param;

/// A JSON body with its template strings compiled.
#[derive(Debug, Clone)]
pub(super) enum Body {
    Literal(serde_json::Value),
    Text(Template),
    Typed(Program),
    Array(Vec<Body>),
    Object(Vec<(String, Body)>),
}

/// Every template string inside a JSON body, in document order.
pub(super) fn json_templates(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_templates(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_templates(v, out)),
        _ => {}
    }
}

/// Compiles a template, adding its errors to `errors` after `what: `.
pub(super) fn template(
    text: &str,
    scope: &Scope<'_>,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<Template> {
    Template::compile(text, scope)
        .map_err(|es| errors.extend(es.into_iter().map(|e| format!("{what}: {}", e.message))))
        .ok()
}

/// Compiles every template string of a JSON body.
pub(super) fn body(
    value: &serde_json::Value,
    scope: &Scope<'_>,
    what: &str,
    errors: &mut Vec<String>,
) -> Body {
    use serde_json::Value as J;
    match value {
        J::String(s) if s.contains("{{") => match Template::compile(s, scope) {
            Ok(t) => match t.single_expr() {
                Some(p) if s.trim().starts_with("{{") && s.trim().ends_with("}}") => {
                    Body::Typed(p.clone())
                }
                _ => Body::Text(t),
            },
            Err(es) => {
                errors.extend(
                    es.into_iter()
                        .map(|e| format!("{what}: in `{s}`: {}", e.message)),
                );
                Body::Literal(J::Null)
            }
        },
        J::Array(items) => {
            Body::Array(items.iter().map(|v| body(v, scope, what, errors)).collect())
        }
        J::Object(map) => Body::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), body(v, scope, what, errors)))
                .collect(),
        ),
        other => Body::Literal(other.clone()),
    }
}

/// Fills in a JSON body for one key.
pub(super) fn render_body(body: &Body, env: &Env<'_>) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match body {
        Body::Literal(v) => v.clone(),
        Body::Text(t) => J::String(
            t.render_strict(env, |s, out| out.push_str(s))
                .map_err(|e| format!("json: {e}"))?,
        ),
        Body::Typed(p) => json(&p.eval(env).map_err(|e| format!("json: {}", e.message))?)?,
        Body::Array(items) => J::Array(
            items
                .iter()
                .map(|b| render_body(b, env))
                .collect::<Result<_, _>>()?,
        ),
        Body::Object(fields) => J::Object(
            fields
                .iter()
                .map(|(k, b)| Ok((k.clone(), render_body(b, env)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// A value as a SQL parameter.
pub(super) fn param(v: &Val<'_>) -> Result<Param, String> {
    Ok(match v {
        Val::Null => Param::Null,
        Val::Bool(b) => Param::Bool(*b),
        Val::Int(i) => Param::Int(*i),
        Val::Double(d) => Param::Double(*d),
        Val::Decimal(d) => Param::Decimal(d.to_string()),
        Val::Str(s) => Param::Text(s.to_string()),
        Val::Timestamp(t) => Param::Timestamp(*t),
        Val::Bytes(b) => Param::Bytes(b.to_vec()),
        other => {
            return Err(format!(
                "is a {} (`{}`), not a single value",
                other.type_name(),
                other.display()
            ));
        }
    })
}

/// A value in a JSON body: numbers stay numbers, decimals are exact strings, timestamps
/// RFC 3339, bytes hex.
fn json(v: &Val<'_>) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        Val::Null => J::Null,
        Val::Bool(b) => J::Bool(*b),
        Val::Int(i) => J::from(*i),
        Val::Double(d) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .ok_or_else(|| format!("json: {d} is not a JSON number"))?,
        Val::Decimal(d) => J::String(d.to_string()),
        Val::Str(s) => J::String(s.to_string()),
        Val::Timestamp(t) => J::String(format_timestamp(*t)),
        Val::Bytes(b) => J::String(hex(b)),
        Val::List(items) => J::Array(items.iter().map(json).collect::<Result<_, _>>()?),
        other => J::String(other.display()),
    })
}

/// A JSON body as a person reads it; nothing for none.
pub(super) fn pretty(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
        .unwrap_or_default()
}

/// Percent-encodes everything but RFC 3986's unreserved characters: a value can never add a
/// path segment, a query parameter or a host.
pub(super) fn percent_encode(value: &str, out: &mut String) {
    out.push_str(&crate::value::percent_encode(value));
}

/// A value inside a NATS subject: one token, so no `.`, wildcard or whitespace of its own.
pub(super) fn subject_token(value: &str, out: &mut String) {
    for c in value.chars() {
        out.push(match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_urls_are_encoded_so_they_stay_one_segment() {
        let mut out = String::new();
        percent_encode("../admin?x=1&y=é", &mut out);
        assert_eq!(out, "..%2Fadmin%3Fx%3D1%26y%3D%C3%A9");
        let mut subject = String::new();
        subject_token("a.b *>", &mut subject);
        assert_eq!(subject, "a_b___");
    }
}
