//! Evaluation of compiled expressions over borrowed rows.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::compile::{Comprehension, Const, Func, Node};
use super::parser::{BinaryOp, Span};
use super::{Env, Row, parse_duration, value_to_val};
use crate::value::{
    Key, Value, decimal_from_f64, format_duration, format_timestamp, hex, parse_timestamp_text,
};

/// A value during evaluation. Text and rows are borrowed from the rows being judged, so the
/// common paths (null checks, comparisons of columns) allocate nothing.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Decimal(Decimal),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    /// Microseconds.
    Duration(i64),
    Row(&'a Row),
    Rows(&'a [Row]),
    List(Vec<Val<'a>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalError {
    pub message: String,
    pub span: Span,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

type R<'a> = Result<Val<'a>, EvalError>;

/// The message of the error every node returns once an evaluation's budget is spent.
pub(crate) const BUDGET_SPENT: &str = "evaluation budget spent";

/// The state of one evaluation: the comprehension variables in scope, and how many more
/// nodes it may evaluate (its budget of steps).
pub(crate) struct Frame<'a> {
    pub locals: Vec<Val<'a>>,
    pub steps_left: u64,
    /// The budget ran out at some point, even if `||`, `&&` or a comprehension absorbed the
    /// error it caused: the evaluation as a whole is then over budget.
    pub exhausted: bool,
}

fn err<T>(span: Span, message: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError {
        message: message.into(),
        span,
    })
}

impl Val<'_> {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Double(_) => "double",
            Val::Decimal(_) => "decimal",
            Val::Str(_) => "string",
            Val::Bytes(_) => "bytes",
            Val::Timestamp(_) => "timestamp",
            Val::Duration(_) => "duration",
            Val::Row(_) => "row",
            Val::Rows(_) | Val::List(_) => "list",
        }
    }

    /// The value as a person reads it in a message.
    pub fn display(&self) -> String {
        match self {
            Val::Null => "null".into(),
            Val::Bool(b) => b.to_string(),
            Val::Int(i) => i.to_string(),
            Val::Double(d) => d.to_string(),
            Val::Decimal(d) => d.to_string(),
            Val::Str(s) => s.to_string(),
            Val::Bytes(b) => hex(b),
            Val::Timestamp(t) => format_timestamp(*t),
            Val::Duration(d) => format_duration(*d),
            Val::Row(r) => {
                let cells: Vec<String> = r.values.iter().map(Value::to_string).collect();
                format!("({})", cells.join(", "))
            }
            Val::Rows(rows) => {
                let items: Vec<String> = rows.iter().map(|r| Val::Row(r).display()).collect();
                format!("[{}]", items.join(", "))
            }
            Val::List(items) => {
                let items: Vec<String> = items.iter().map(Val::display).collect();
                format!("[{}]", items.join(", "))
            }
        }
    }
}

fn key_val(key: &Key) -> Val<'_> {
    match key {
        Key::Int(i) => Val::Int(*i),
        Key::Text(s) => Val::Str(Cow::Borrowed(s)),
    }
}

fn const_val(c: &Const) -> Val<'_> {
    match c {
        Const::Null => Val::Null,
        Const::Bool(b) => Val::Bool(*b),
        Const::Int(i) => Val::Int(*i),
        Const::Double(d) => Val::Double(*d),
        Const::Str(s) => Val::Str(Cow::Borrowed(s)),
        Const::Bytes(b) => Val::Bytes(Cow::Borrowed(b)),
        Const::Timestamp(t) => Val::Timestamp(*t),
        Const::Duration(d) => Val::Duration(*d),
    }
}

fn slot<'a>(row: &'a Row, slot: usize, span: Span) -> R<'a> {
    match row.values.get(slot) {
        Some(v) => Ok(value_to_val(v)),
        None => err(span, "column not resolved for this run"),
    }
}

impl Node {
    pub(crate) fn eval<'a>(&'a self, env: &Env<'a>, cx: &mut Frame<'a>) -> R<'a> {
        // Every node evaluated is a step; once the budget is spent every node fails at once,
        // so a spent evaluation unwinds in as many steps as it is deep.
        if cx.steps_left == 0 {
            cx.exhausted = true;
            return err(self.span(), BUDGET_SPENT);
        }
        cx.steps_left -= 1;
        match self {
            Node::Const(c) => Ok(const_val(c)),
            Node::Now => Ok(Val::Timestamp(env.now)),
            Node::Key => Ok(key_val(env.key)),
            Node::Previous => Ok(env.previous.map_or(Val::Null, Val::Int)),
            Node::Dataset(ds) => Ok(dataset(env, *ds)),
            Node::Field { ds, slot: s, span } => {
                let group = &env.groups[*ds];
                match group.rows.first() {
                    Some(row) => slot(row, *s, *span),
                    None if env.missing_is_null => Ok(Val::Null),
                    None => err(*span, "no row for this key (check `!= null` first)"),
                }
            }
            Node::Local(i) => Ok(cx.locals[*i].clone()),
            Node::LocalField {
                local,
                slot: s,
                span,
            } => row_field(&cx.locals[*local], *s, *span, env.missing_is_null),
            Node::RowField { row, slot: s, span } => {
                row_field(&row.eval(env, cx)?, *s, *span, env.missing_is_null)
            }
            Node::Has(inner) => Ok(Val::Bool(matches!(
                inner.eval(env, cx),
                Ok(v) if !matches!(v, Val::Null)
            ))),
            Node::Not(a, span) => match a.eval(env, cx)? {
                Val::Bool(b) => Ok(Val::Bool(!b)),
                v => err(*span, format!("no such overload: !{}", v.type_name())),
            },
            Node::Neg(a, span) => match a.eval(env, cx)? {
                Val::Int(i) => i.checked_neg().map(Val::Int).ok_or_else(|| overflow(*span)),
                Val::Double(d) => Ok(Val::Double(-d)),
                Val::Decimal(d) => Ok(Val::Decimal(-d)),
                Val::Duration(d) => Ok(Val::Duration(-d)),
                v => err(*span, format!("no such overload: -{}", v.type_name())),
            },
            Node::And(a, b) => logic(env, cx, a, b, false),
            Node::Or(a, b) => logic(env, cx, a, b, true),
            Node::Cond(c, a, b, span) => match c.eval(env, cx)? {
                Val::Bool(true) => a.eval(env, cx),
                Val::Bool(false) => b.eval(env, cx),
                v => err(
                    *span,
                    format!("the condition of `? :` is {}, not a bool", v.type_name()),
                ),
            },
            Node::Binary(op, a, b, span) => {
                let a = a.eval(env, cx)?;
                let b = b.eval(env, cx)?;
                binary(*op, a, b, *span)
            }
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(item.eval(env, cx)?);
                }
                Ok(Val::List(out))
            }
            Node::Index(a, i, span) => {
                let a = a.eval(env, cx)?;
                let i = i.eval(env, cx)?;
                let Val::Int(i) = i else {
                    return err(
                        *span,
                        format!("list index must be an int, not {}", i.type_name()),
                    );
                };
                let item = match &a {
                    Val::Rows(rows) => usize::try_from(i)
                        .ok()
                        .and_then(|i| rows.get(i))
                        .map(Val::Row),
                    Val::List(items) => usize::try_from(i).ok().and_then(|i| items.get(i)).cloned(),
                    other => return err(*span, format!("cannot index {}", other.type_name())),
                };
                item.ok_or_else(|| EvalError {
                    message: format!("index {i} out of range"),
                    span: *span,
                })
            }
            Node::Call(func, args, span) => {
                // Every function takes one or two arguments (the compiler checks): evaluated
                // in place, with no list to allocate for each call.
                let (first, second) = match args.as_slice() {
                    [a] => (a.eval(env, cx)?, None),
                    [a, b] => (a.eval(env, cx)?, Some(b.eval(env, cx)?)),
                    _ => return err(*span, format!("{func:?}: wrong number of arguments")),
                };
                call(*func, first, second, *span)
            }
            Node::RowCount { ds, op, n, span } => {
                // The steps of the nodes it stands for, one already taken: the budget runs
                // out here exactly when it would have there.
                let rest = super::counts::ROW_COUNT_STEPS - 1;
                if cx.steps_left < rest {
                    cx.steps_left = 0;
                    cx.exhausted = true;
                    return err(*span, BUDGET_SPENT);
                }
                cx.steps_left -= rest;
                let len = env.groups[*ds].rows.len() as i64;
                Ok(Val::Bool(super::counts::compare(len, *op, *n)))
            }
            Node::MatchesConst(subject, re, span) => match subject.eval(env, cx)? {
                Val::Str(s) => Ok(Val::Bool(re.is_match(&s))),
                v => err(
                    *span,
                    format!("no such overload: {}.matches(string)", v.type_name()),
                ),
            },
            Node::Comprehension {
                kind,
                range,
                local,
                body,
                span,
            } => comprehension(env, cx, *kind, range, *local, body, *span),
        }
    }
}

fn row_field<'a>(v: &Val<'a>, s: usize, span: Span, missing_is_null: bool) -> R<'a> {
    match v {
        Val::Row(row) => slot(row, s, span),
        Val::Null if missing_is_null => Ok(Val::Null),
        Val::Null => err(span, "no row (check `!= null` first)"),
        other => err(span, format!("field access on {}", other.type_name())),
    }
}

fn dataset<'a>(env: &Env<'a>, ds: usize) -> Val<'a> {
    let group = &env.groups[ds];
    if group.many {
        Val::Rows(group.rows)
    } else {
        match group.rows.first() {
            Some(row) => Val::Row(row),
            None => Val::Null,
        }
    }
}

/// CEL's commutative logic: the deciding side wins even if the other side is an error.
fn logic<'a>(env: &Env<'a>, cx: &mut Frame<'a>, a: &'a Node, b: &'a Node, is_or: bool) -> R<'a> {
    let decide = is_or;
    let first = match a.eval(env, cx) {
        Ok(Val::Bool(x)) if x == decide => return Ok(Val::Bool(decide)),
        Ok(Val::Bool(_)) => None,
        Ok(v) => Some(EvalError {
            message: format!(
                "no such overload: {} {} …",
                v.type_name(),
                if is_or { "||" } else { "&&" }
            ),
            span: a.span(),
        }),
        Err(e) => Some(e),
    };
    match b.eval(env, cx) {
        Ok(Val::Bool(x)) if x == decide => Ok(Val::Bool(decide)),
        Ok(Val::Bool(x)) => match first {
            Some(e) => Err(e),
            None => Ok(Val::Bool(x)),
        },
        Ok(v) => Err(first.unwrap_or(EvalError {
            message: format!(
                "no such overload: … {} {}",
                if is_or { "||" } else { "&&" },
                v.type_name()
            ),
            span: b.span(),
        })),
        Err(e) => Err(first.unwrap_or(e)),
    }
}

fn comprehension<'a>(
    env: &Env<'a>,
    cx: &mut Frame<'a>,
    kind: Comprehension,
    range: &'a Node,
    local: usize,
    body: &'a Node,
    span: Span,
) -> R<'a> {
    let items: Vec<Val<'a>> = match range.eval(env, cx)? {
        Val::Rows(rows) => rows.iter().map(Val::Row).collect(),
        Val::List(items) => items,
        Val::Null => Vec::new(),
        v => return err(span, format!("cannot iterate over {}", v.type_name())),
    };
    let mut out = Vec::new();
    let mut count = 0usize;
    let mut first_error = None;
    for item in items {
        cx.locals.truncate(local);
        cx.locals.push(item.clone());
        let result = body.eval(env, cx);
        cx.locals.truncate(local);
        if cx.exhausted {
            return err(span, BUDGET_SPENT);
        }
        match kind {
            Comprehension::Map => out.push(result?),
            Comprehension::Filter => match result? {
                Val::Bool(true) => out.push(item),
                Val::Bool(false) => {}
                v => {
                    return err(
                        body.span(),
                        format!("filter predicate is {}, not a bool", v.type_name()),
                    );
                }
            },
            _ => match result {
                Ok(Val::Bool(b)) => {
                    if b {
                        count += 1;
                    }
                    match kind {
                        Comprehension::All if !b => return Ok(Val::Bool(false)),
                        Comprehension::Exists if b => return Ok(Val::Bool(true)),
                        _ => {}
                    }
                }
                Ok(v) => {
                    first_error.get_or_insert(EvalError {
                        message: format!("predicate is {}, not a bool", v.type_name()),
                        span: body.span(),
                    });
                }
                // As with `&&` and `||`, an error matters only if no element decides.
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            },
        }
    }
    match kind {
        Comprehension::Map | Comprehension::Filter => Ok(Val::List(out)),
        _ => match first_error {
            Some(e) => Err(e),
            None => Ok(Val::Bool(match kind {
                Comprehension::All => true,
                Comprehension::Exists => false,
                _ => count == 1,
            })),
        },
    }
}

fn overflow(span: Span) -> EvalError {
    EvalError {
        message: "integer overflow".into(),
        span,
    }
}

/// A number in the widest exact form the pair needs.
enum Num {
    Int(i64, i64),
    Decimal(Decimal, Decimal),
    Double(f64, f64),
}

fn numbers(a: &Val<'_>, b: &Val<'_>) -> Option<Num> {
    use Val::{Decimal as Dec, Double, Int};
    let dec = |v: &Val<'_>| -> Option<Decimal> {
        match v {
            Int(i) => Some(Decimal::from(*i)),
            Dec(d) => Some(*d),
            Double(f) => decimal_from_f64(*f),
            _ => None,
        }
    };
    Some(match (a, b) {
        (Int(x), Int(y)) => Num::Int(*x, *y),
        (Double(x), Double(y)) => Num::Double(*x, *y),
        (Int(x), Double(y)) => Num::Double(*x as f64, *y),
        (Double(x), Int(y)) => Num::Double(*x, *y as f64),
        (Dec(_), Int(_) | Dec(_) | Double(_)) | (Int(_) | Double(_), Dec(_)) => {
            match (dec(a), dec(b)) {
                (Some(x), Some(y)) => Num::Decimal(x, y),
                // NaN or infinity against a decimal: compare as doubles.
                _ => Num::Double(to_f64(a)?, to_f64(b)?),
            }
        }
        _ => return None,
    })
}

fn to_f64(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Int(i) => Some(*i as f64),
        Val::Double(d) => Some(*d),
        Val::Decimal(d) => d.to_f64(),
        _ => None,
    }
}

/// Text next to a timestamp is read as one: SQLite and many applications store timestamps as
/// RFC 3339 or SQL text.
fn as_timestamp(v: &Val<'_>, span: Span) -> Result<Option<i64>, EvalError> {
    match v {
        Val::Timestamp(t) => Ok(Some(*t)),
        Val::Str(s) => match parse_timestamp_text(s) {
            Some(t) => Ok(Some(t)),
            None => err(
                span,
                format!("`{s}` is not a timestamp (expected RFC 3339 text)"),
            ),
        },
        _ => Ok(None),
    }
}

fn compare(a: &Val<'_>, b: &Val<'_>, op: BinaryOp, span: Span) -> Result<Ordering, EvalError> {
    let mismatch = || {
        err(
            span,
            format!(
                "no such overload: {} {} {}",
                a.type_name(),
                op.symbol(),
                b.type_name()
            ),
        )
    };
    if let Some(n) = numbers(a, b) {
        return match n {
            Num::Int(x, y) => Ok(x.cmp(&y)),
            Num::Decimal(x, y) => Ok(x.cmp(&y)),
            Num::Double(x, y) => x
                .partial_cmp(&y)
                .map_or_else(|| err(span, "comparison with NaN"), Ok),
        };
    }
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.as_bytes().cmp(y.as_bytes())),
        (Val::Bytes(x), Val::Bytes(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        (Val::Duration(x), Val::Duration(y)) => Ok(x.cmp(y)),
        (Val::Timestamp(_), Val::Str(_)) | (Val::Str(_), Val::Timestamp(_)) => {
            match (as_timestamp(a, span)?, as_timestamp(b, span)?) {
                (Some(x), Some(y)) => Ok(x.cmp(&y)),
                _ => mismatch(),
            }
        }
        (Val::Timestamp(x), Val::Timestamp(y)) => Ok(x.cmp(y)),
        _ => mismatch(),
    }
}

fn equals(a: &Val<'_>, b: &Val<'_>, span: Span) -> Result<bool, EvalError> {
    match (a, b) {
        (Val::Null, Val::Null) => Ok(true),
        // `null` equals only `null`: a row, a list, a number are all "not null".
        (Val::Null, _) | (_, Val::Null) => Ok(false),
        (Val::Row(x), Val::Row(y)) => Ok(std::ptr::eq(*x, *y) || x.values == y.values),
        (Val::Rows(_) | Val::List(_), Val::Rows(_) | Val::List(_)) => {
            let xs = list_items(a);
            let ys = list_items(b);
            if xs.len() != ys.len() {
                return Ok(false);
            }
            for (x, y) in xs.iter().zip(&ys) {
                if !equals(x, y, span)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        _ => compare(a, b, BinaryOp::Eq, span).map(|o| o == Ordering::Equal),
    }
}

fn list_items<'a>(v: &Val<'a>) -> Vec<Val<'a>> {
    match v {
        Val::Rows(rows) => rows.iter().map(Val::Row).collect(),
        Val::List(items) => items.clone(),
        _ => Vec::new(),
    }
}

fn binary<'a>(op: BinaryOp, a: Val<'a>, b: Val<'a>, span: Span) -> R<'a> {
    use BinaryOp::*;
    match op {
        Eq => equals(&a, &b, span).map(Val::Bool),
        Ne => equals(&a, &b, span).map(|e| Val::Bool(!e)),
        Lt => compare(&a, &b, op, span).map(|o| Val::Bool(o == Ordering::Less)),
        Le => compare(&a, &b, op, span).map(|o| Val::Bool(o != Ordering::Greater)),
        Gt => compare(&a, &b, op, span).map(|o| Val::Bool(o == Ordering::Greater)),
        Ge => compare(&a, &b, op, span).map(|o| Val::Bool(o != Ordering::Less)),
        In => match &b {
            Val::Rows(_) | Val::List(_) => {
                for item in list_items(&b) {
                    if equals(&a, &item, span)? {
                        return Ok(Val::Bool(true));
                    }
                }
                Ok(Val::Bool(false))
            }
            other => err(
                span,
                format!("`in` needs a list on the right, not {}", other.type_name()),
            ),
        },
        Add | Sub | Mul | Div | Rem => arithmetic(op, a, b, span),
        And | Or => unreachable!("logic operators compile to their own nodes"),
    }
}

fn arithmetic<'a>(op: BinaryOp, a: Val<'a>, b: Val<'a>, span: Span) -> R<'a> {
    use BinaryOp::*;
    let mismatch = |a: &Val<'_>, b: &Val<'_>| {
        err(
            span,
            format!(
                "no such overload: {} {} {}",
                a.type_name(),
                op.symbol(),
                b.type_name()
            ),
        )
    };
    if let Some(n) = numbers(&a, &b) {
        return match n {
            Num::Int(x, y) => {
                let r = match op {
                    Add => x.checked_add(y),
                    Sub => x.checked_sub(y),
                    Mul => x.checked_mul(y),
                    Div | Rem if y == 0 => return err(span, "division by zero"),
                    Div => x.checked_div(y),
                    _ => x.checked_rem(y),
                };
                r.map(Val::Int).ok_or_else(|| overflow(span))
            }
            Num::Decimal(x, y) => {
                let r = match op {
                    Add => x.checked_add(y),
                    Sub => x.checked_sub(y),
                    Mul => x.checked_mul(y),
                    Div | Rem if y.is_zero() => return err(span, "division by zero"),
                    Div => x.checked_div(y),
                    _ => x.checked_rem(y),
                };
                r.map(|d| Val::Decimal(d.normalize()))
                    .ok_or_else(|| EvalError {
                        message: "decimal overflow".into(),
                        span,
                    })
            }
            Num::Double(x, y) => Ok(Val::Double(match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => x / y,
                _ => x % y,
            })),
        };
    }
    let checked = |r: Option<i64>| r.ok_or_else(|| overflow(span));
    match (op, &a, &b) {
        (Add, Val::Str(x), Val::Str(y)) => Ok(Val::Str(Cow::Owned(format!("{x}{y}")))),
        (Add, Val::Bytes(x), Val::Bytes(y)) => {
            Ok(Val::Bytes(Cow::Owned([&x[..], &y[..]].concat())))
        }
        (Add, Val::Rows(_) | Val::List(_), Val::Rows(_) | Val::List(_)) => {
            let mut items = list_items(&a);
            items.extend(list_items(&b));
            Ok(Val::List(items))
        }
        (Add | Sub, Val::Duration(x), Val::Duration(y)) => {
            Ok(Val::Duration(checked(if op == Add {
                x.checked_add(*y)
            } else {
                x.checked_sub(*y)
            })?))
        }
        (Add, Val::Duration(d), Val::Timestamp(_) | Val::Str(_))
        | (Add | Sub, Val::Timestamp(_) | Val::Str(_), Val::Duration(d)) => {
            let t_val = if matches!(a, Val::Duration(_)) {
                &b
            } else {
                &a
            };
            let Some(t) = as_timestamp(t_val, span)? else {
                return mismatch(&a, &b);
            };
            Ok(Val::Timestamp(checked(if op == Add {
                t.checked_add(*d)
            } else {
                t.checked_sub(*d)
            })?))
        }
        (Sub, Val::Timestamp(_) | Val::Str(_), Val::Timestamp(_) | Val::Str(_))
            if matches!(a, Val::Timestamp(_)) || matches!(b, Val::Timestamp(_)) =>
        {
            match (as_timestamp(&a, span)?, as_timestamp(&b, span)?) {
                (Some(x), Some(y)) => Ok(Val::Duration(checked(x.checked_sub(y))?)),
                _ => mismatch(&a, &b),
            }
        }
        _ => mismatch(&a, &b),
    }
}

fn call<'a>(func: Func, arg: Val<'a>, other: Option<Val<'a>>, span: Span) -> R<'a> {
    let bad = |args: &[Val<'_>]| {
        let types: Vec<&str> = args.iter().map(Val::type_name).collect();
        err(
            span,
            format!("no such overload: {func:?}({})", types.join(", ")).to_lowercase(),
        )
    };
    match (func, &arg, &other) {
        (Func::Abs, Val::Int(i), None) => {
            i.checked_abs().map(Val::Int).ok_or_else(|| overflow(span))
        }
        (Func::Abs, Val::Double(d), None) => Ok(Val::Double(d.abs())),
        (Func::Abs, Val::Decimal(d), None) => Ok(Val::Decimal(d.abs())),
        (Func::Abs, Val::Duration(d), None) => d
            .checked_abs()
            .map(Val::Duration)
            .ok_or_else(|| overflow(span)),
        (Func::Size, Val::Str(s), None) => Ok(Val::Int(s.chars().count() as i64)),
        (Func::Size, Val::Bytes(b), None) => Ok(Val::Int(b.len() as i64)),
        (Func::Size, Val::Rows(r), None) => Ok(Val::Int(r.len() as i64)),
        (Func::Size, Val::List(l), None) => Ok(Val::Int(l.len() as i64)),
        (Func::Int, Val::Int(_), None) => Ok(arg),
        (Func::Int, Val::Double(d), None) => {
            if d.is_finite() && d.trunc() >= i64::MIN as f64 && d.trunc() < i64::MAX as f64 {
                Ok(Val::Int(d.trunc() as i64))
            } else {
                err(span, format!("int({d}) is out of range"))
            }
        }
        (Func::Int, Val::Decimal(d), None) => {
            d.trunc().to_i64().map(Val::Int).ok_or_else(|| EvalError {
                message: format!("int({d}) is out of range"),
                span,
            })
        }
        (Func::Int, Val::Str(s), None) => s
            .trim()
            .parse()
            .map(Val::Int)
            .or_else(|_| err(span, format!("int(`{s}`): not an integer"))),
        (Func::Int, Val::Timestamp(t), None) => Ok(Val::Int(t.div_euclid(1_000_000))),
        (Func::Int, Val::Bool(b), None) => Ok(Val::Int(i64::from(*b))),
        (Func::Double, _, None) => match &arg {
            Val::Str(s) => s
                .trim()
                .parse()
                .map(Val::Double)
                .or_else(|_| err(span, format!("double(`{s}`): not a number"))),
            v => to_f64(v)
                .map(Val::Double)
                .map_or_else(|| bad(std::slice::from_ref(&arg)), Ok),
        },
        (Func::Decimal, Val::Int(i), None) => Ok(Val::Decimal(Decimal::from(*i))),
        (Func::Decimal, Val::Decimal(_), None) => Ok(arg),
        (Func::Decimal, Val::Double(d), None) => {
            decimal_from_f64(*d)
                .map(Val::Decimal)
                .ok_or_else(|| EvalError {
                    message: format!("decimal({d}) is out of range"),
                    span,
                })
        }
        (Func::Decimal, Val::Str(s), None) => s
            .trim()
            .parse()
            .map(Val::Decimal)
            .or_else(|_| err(span, format!("decimal(`{s}`): not a decimal"))),
        (Func::String, Val::Str(_), None) => Ok(arg),
        (Func::String, Val::Bytes(b), None) => match std::str::from_utf8(b) {
            Ok(s) => Ok(Val::Str(Cow::Owned(s.to_string()))),
            Err(_) => err(span, "string(bytes): not valid UTF-8"),
        },
        (Func::String, Val::Row(_) | Val::Rows(_) | Val::List(_), None) => bad(&[arg]),
        (Func::String, _, None) => Ok(Val::Str(Cow::Owned(arg.display()))),
        (Func::Timestamp, Val::Timestamp(_), None) => Ok(arg),
        (Func::Timestamp, Val::Str(_), None) => Ok(Val::Timestamp(
            as_timestamp(&arg, span)?.expect("text is read as a timestamp or fails"),
        )),
        (Func::Timestamp, Val::Int(secs), None) => secs
            .checked_mul(1_000_000)
            .map(Val::Timestamp)
            .ok_or_else(|| overflow(span)),
        (Func::Duration, Val::Duration(_), None) => Ok(arg),
        (Func::Duration, Val::Str(s), None) => parse_duration(s)
            .map(Val::Duration)
            .or_else(|m| err(span, m)),
        (Func::Contains, Val::Str(s), Some(Val::Str(t))) => Ok(Val::Bool(s.contains(t.as_ref()))),
        (Func::StartsWith, Val::Str(s), Some(Val::Str(t))) => {
            Ok(Val::Bool(s.starts_with(t.as_ref())))
        }
        (Func::EndsWith, Val::Str(s), Some(Val::Str(t))) => Ok(Val::Bool(s.ends_with(t.as_ref()))),
        (Func::Matches, Val::Str(s), Some(Val::Str(p))) => match regex::Regex::new(p) {
            Ok(re) => Ok(Val::Bool(re.is_match(s))),
            Err(e) => err(span, format!("invalid regular expression: {e}")),
        },
        (Func::LowerAscii, Val::Str(s), None) => Ok(Val::Str(Cow::Owned(s.to_ascii_lowercase()))),
        (Func::UpperAscii, Val::Str(s), None) => Ok(Val::Str(Cow::Owned(s.to_ascii_uppercase()))),
        (Func::Trim, Val::Str(s), None) => Ok(Val::Str(Cow::Owned(s.trim().to_string()))),
        _ => {
            let mut all = vec![arg];
            all.extend(other);
            bad(&all)
        }
    }
}
