//! Filling in a rule's repair actions for one violating key: SQL parameters as typed values
//! (bound by the database driver, never spliced), URLs with every value percent-encoded, JSON
//! bodies whose strings are templates — a string that is a single `{{ expr }}` keeps the
//! value's JSON type, so `"{{payment.amount_cents}}"` is the number 1999.

use crate::expr::{Env, Program, Scope, Template, Val};
use crate::rules::{ActionKind, Rule};
use crate::value::{format_timestamp, hex};
use crate::verdict::{ActionSpec, Param, PlannedAction};

/// A JSON body with its template strings compiled.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Literal(serde_json::Value),
    Text(Template),
    Typed(Program),
    Array(Vec<Body>),
    Object(Vec<(String, Body)>),
}

#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Sql {
        params: Vec<Program>,
    },
    Http {
        url: Template,
        body: Option<Body>,
    },
    Publish {
        subject: Template,
        payload: Option<Body>,
    },
}

/// Compiles every action of the rule against the run's scope; the messages of what failed.
pub(crate) fn compile(rule: &Rule, scope: &Scope<'_>) -> Result<Vec<Compiled>, Vec<String>> {
    let Some(repair) = &rule.repair else {
        return Ok(Vec::new());
    };
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let template = |text: &str, what: &str, errors: &mut Vec<String>| {
        Template::compile(text, scope).map_err(|es| {
            errors.extend(es.into_iter().map(|e| format!("{what}: {}", e.message)));
        })
    };
    for action in &repair.actions {
        let what = format!("repair action `{}`", action.name);
        let compiled = match &action.kind {
            ActionKind::Sql { params, .. } => {
                let mut programs = Vec::new();
                for p in params {
                    match crate::expr::compile(p, scope) {
                        Ok(p) => programs.push(p),
                        Err(es) => errors.extend(
                            es.into_iter()
                                .map(|e| format!("{what}: params: {}", e.message)),
                        ),
                    }
                }
                Some(Compiled::Sql { params: programs })
            }
            ActionKind::Http { url, json, .. } => {
                let url = template(url, &format!("{what}: url"), &mut errors);
                let body = json
                    .as_ref()
                    .map(|j| body(j, scope, &format!("{what}: json"), &mut errors));
                url.ok().map(|url| Compiled::Http { url, body })
            }
            ActionKind::Publish { subject, json, .. } => {
                let subject = template(subject, &format!("{what}: subject"), &mut errors);
                let payload = json
                    .as_ref()
                    .map(|j| body(j, scope, &format!("{what}: json"), &mut errors));
                subject
                    .ok()
                    .map(|subject| Compiled::Publish { subject, payload })
            }
        };
        out.extend(compiled);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn body(
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

/// Fills in every action for one key.
pub(crate) fn render(rule: &Rule, compiled: &[Compiled], env: &Env<'_>) -> Vec<PlannedAction> {
    let Some(repair) = &rule.repair else {
        return Vec::new();
    };
    repair
        .actions
        .iter()
        .zip(compiled)
        .map(|(action, c)| PlannedAction {
            name: action.name.clone(),
            spec: render_one(c, env).unwrap_or_else(|error| ActionSpec::Invalid { error }),
        })
        .collect()
}

fn render_one(compiled: &Compiled, env: &Env<'_>) -> Result<ActionSpec, String> {
    let env = &Env {
        missing_is_null: true,
        ..*env
    };
    Ok(match compiled {
        Compiled::Sql { params } => ActionSpec::Sql {
            params: params
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let v = p
                        .eval(env)
                        .map_err(|e| format!("params[{i}]: {}", e.message))?;
                    param(&v).map_err(|e| format!("params[{i}]: {e}"))
                })
                .collect::<Result<_, _>>()?,
        },
        Compiled::Http { url, body } => ActionSpec::Http {
            url: {
                // `.` and `..` would be read as path steps however they are encoded.
                let dots = std::cell::Cell::new(false);
                let url = url
                    .render_strict(env, |v, out| {
                        dots.set(dots.get() || v == "." || v == "..");
                        percent_encode(v, out)
                    })
                    .map_err(|e| format!("url: {e}"))?;
                if dots.get() {
                    return Err(format!(
                        "url: a value is `.` or `..`, which would change the path: {url}"
                    ));
                }
                url
            },
            body: body.as_ref().map(|b| render_body(b, env)).transpose()?,
        },
        Compiled::Publish { subject, payload } => ActionSpec::Publish {
            subject: subject
                .render_strict(env, subject_token)
                .map_err(|e| format!("subject: {e}"))?,
            payload: payload.as_ref().map(|b| render_body(b, env)).transpose()?,
        },
    })
}

fn render_body(body: &Body, env: &Env<'_>) -> Result<serde_json::Value, String> {
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
fn param(v: &Val<'_>) -> Result<Param, String> {
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

/// Percent-encodes everything but RFC 3986's unreserved characters: a value can never add a
/// path segment, a query parameter or a host.
pub fn percent_encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A value inside a NATS subject: one token, so no `.`, wildcard or whitespace of its own.
fn subject_token(value: &str, out: &mut String) {
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
