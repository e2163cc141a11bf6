//! Resolves an AST against a rule's scope (its datasets and their columns, `now`, `key`) into a
//! tree of `Node`s whose names are indexes, collecting every error with its span.

use rust_decimal::Decimal;

use super::counts::{Counts, ROW_COUNT_STEPS};
use super::parser::{BinaryOp, Expr, ExprKind, Lit, Span, UnaryOp};
use super::{Program, parse_duration};
use crate::value::parse_timestamp_text;

/// A dataset as an expression sees it.
#[derive(Debug, Clone)]
pub struct ScopeDataset<'a> {
    pub name: &'a str,
    pub many: bool,
    /// The columns the dataset returns, when known. `None` when they cannot be known without
    /// asking the database (`SELECT *`): field names are then checked when the rule runs.
    pub columns: Option<&'a [String]>,
}

#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    pub datasets: Vec<ScopeDataset<'a>>,
    /// Whether `previous` names what the rule measured at its previous run (a `row_count`
    /// check with `max_drop`).
    pub previous: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    pub message: String,
    pub span: Span,
}

/// A constant known at compile time.
#[derive(Debug, Clone)]
pub(crate) enum Const {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Bytes(Vec<u8>),
    Timestamp(i64),
    Duration(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Size,
    Abs,
    Int,
    Double,
    Decimal,
    String,
    Timestamp,
    Duration,
    Contains,
    StartsWith,
    EndsWith,
    Matches,
    LowerAscii,
    UpperAscii,
    Trim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comprehension {
    All,
    Exists,
    ExistsOne,
    Filter,
    Map,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Const(Const),
    Now,
    Key,
    /// What the rule measured at its previous run, or null.
    Previous,
    /// A dataset by index: a row or null, or a list of rows (`many`).
    Dataset(usize),
    /// A column of a dataset's row, through the slot the column has in this run.
    Field {
        ds: usize,
        slot: usize,
        span: Span,
    },
    Local(usize),
    LocalField {
        local: usize,
        slot: usize,
        span: Span,
    },
    /// A column of any other expression that yields a row (`payment[0].amount`).
    RowField {
        row: Box<Node>,
        slot: usize,
        span: Span,
    },
    /// `has(x.f)`: the row is there and the column is not NULL.
    Has(Box<Node>),
    Not(Box<Node>, Span),
    Neg(Box<Node>, Span),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>, Span),
    Cond(Box<Node>, Box<Node>, Box<Node>, Span),
    List(Vec<Node>),
    Index(Box<Node>, Box<Node>, Span),
    Call(Func, Vec<Node>, Span),
    /// A regular expression compiled once.
    MatchesConst(Box<Node>, Box<regex::Regex>, Span),
    /// `size(D) OP n` for a dataset `D` with `many` and an integer literal `n`, the shape of
    /// existence rules (`size(payment) == 0 || size(reservation) > 0`): the rows are counted
    /// where they are, with no value built. It costs the four steps of what it stands for.
    RowCount {
        ds: usize,
        op: BinaryOp,
        n: i64,
        span: Span,
    },
    Comprehension {
        kind: Comprehension,
        range: Box<Node>,
        local: usize,
        body: Box<Node>,
        span: Span,
    },
}

impl Node {
    pub(crate) fn span(&self) -> Span {
        match self {
            Node::Field { span, .. }
            | Node::LocalField { span, .. }
            | Node::RowField { span, .. }
            | Node::Not(_, span)
            | Node::Neg(_, span)
            | Node::Binary(_, _, _, span)
            | Node::Cond(_, _, _, span)
            | Node::Index(_, _, span)
            | Node::Call(_, _, span)
            | Node::MatchesConst(_, _, span)
            | Node::RowCount { span, .. }
            | Node::Comprehension { span, .. } => *span,
            Node::And(a, b) | Node::Or(a, b) => Span {
                start: a.span().start,
                end: b.span().end,
            },
            Node::Has(n) => n.span(),
            _ => Span { start: 0, end: 0 },
        }
    }
}

/// What the compiler knows statically about a value, enough to resolve field names to slots.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// A row of dataset `ds`, or null.
    Row(usize),
    /// A list of rows of dataset `ds`.
    Rows(usize),
    Other,
}

struct Local<'s> {
    name: &'s str,
    shape: Shape,
}

struct Compiler<'a, 's> {
    scope: &'a Scope<'a>,
    locals: Vec<Local<'s>>,
    max_locals: usize,
    errors: Vec<CompileError>,
}

/// Compiles an expression against a scope, collecting every error.
pub fn compile(expr: &Expr, scope: &Scope<'_>) -> Result<Program, Vec<CompileError>> {
    let mut c = Compiler {
        scope,
        locals: Vec::new(),
        max_locals: 0,
        errors: Vec::new(),
    };
    let (root, _) = c.node(expr);
    if c.errors.is_empty()
        && let Some((steps, span)) = over_budget(&root)
    {
        c.errors.push(CompileError {
            message: format!(
                "these nested comprehensions take {steps} steps or more for one key, over the \
                 evaluation budget of {} (iterate over a dataset or a shorter list)",
                super::MAX_STEPS_PER_KEY
            ),
            span,
        });
    }
    if c.errors.is_empty() {
        Ok(Program {
            counts: counts_of(&root).map(|counts| {
                let worst = counts.worst();
                (counts, worst)
            }),
            root,
            locals: c.max_locals,
        })
    } else {
        Err(c.errors)
    }
}

/// The comprehension whose worst case alone is over the per-key budget, if there is one, with
/// that worst case. Lists written out in the expression count with their length and every
/// other range (a dataset's rows, say) as one element, so what is refused is over budget for
/// any data; a comprehension over rows is held to the budget when it runs.
fn over_budget(root: &Node) -> Option<(u64, Span)> {
    let (steps, outermost) = worst_steps(root);
    (steps > super::MAX_STEPS_PER_KEY).then(|| (steps, outermost.unwrap_or_else(|| root.span())))
}

/// The tree as an assertion of row counts, where it is one (`counts.rs`).
fn counts_of(node: &Node) -> Option<Counts> {
    let both = |a: &Node, b: &Node| Some((Box::new(counts_of(a)?), Box::new(counts_of(b)?)));
    Some(match node {
        Node::RowCount { ds, op, n, .. } => Counts::Count {
            ds: *ds,
            op: *op,
            n: *n,
        },
        Node::Not(a, _) => Counts::Not(Box::new(counts_of(a)?)),
        Node::And(a, b) => {
            let (a, b) = both(a, b)?;
            Counts::And(a, b)
        }
        Node::Or(a, b) => {
            let (a, b) = both(a, b)?;
            Counts::Or(a, b)
        }
        _ => return None,
    })
}

/// The dataset and the literal of `size(D) OP n`, where `D` has `many` and `OP` compares.
fn row_count(op: BinaryOp, a: &Node, b: &Node, scope: &Scope<'_>) -> Option<(usize, i64)> {
    let compares = matches!(
        op,
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
    );
    match (a, b) {
        (Node::Call(Func::Size, args, _), Node::Const(Const::Int(n))) if compares => {
            match args.as_slice() {
                [Node::Dataset(ds)] if scope.datasets.get(*ds).is_some_and(|d| d.many) => {
                    Some((*ds, *n))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The most steps a node can take with each unknown range of one element, and the span of
/// its outermost comprehension.
fn worst_steps(node: &Node) -> (u64, Option<Span>) {
    let children: Vec<&Node> = match node {
        Node::RowCount { .. } => return (ROW_COUNT_STEPS, None),
        Node::Const(_)
        | Node::Now
        | Node::Key
        | Node::Previous
        | Node::Dataset(_)
        | Node::Field { .. }
        | Node::Local(_)
        | Node::LocalField { .. } => Vec::new(),
        Node::RowField { row: a, .. }
        | Node::Has(a)
        | Node::Not(a, _)
        | Node::Neg(a, _)
        | Node::MatchesConst(a, _, _) => vec![a],
        Node::And(a, b) | Node::Or(a, b) | Node::Binary(_, a, b, _) | Node::Index(a, b, _) => {
            vec![a, b]
        }
        Node::Cond(a, b, c, _) => vec![a, b, c],
        Node::List(items) | Node::Call(_, items, _) => items.iter().collect(),
        Node::Comprehension {
            range, body, span, ..
        } => {
            let (r, _) = worst_steps(range);
            let (b, _) = worst_steps(body);
            let n = range_len(range);
            return (
                1u64.saturating_add(r)
                    .saturating_add(n.saturating_mul(b.saturating_add(1))),
                Some(*span),
            );
        }
    };
    children
        .into_iter()
        .fold((1, None), |(steps, span), child| {
            let (s, inner) = worst_steps(child);
            (steps.saturating_add(s), span.or(inner))
        })
}

/// How many elements a range has at most, when the expression says: a list written out, or
/// what a `map` or `filter` makes of one. Anything else counts as one.
fn range_len(range: &Node) -> u64 {
    match range {
        Node::List(items) => items.len() as u64,
        Node::Comprehension {
            kind: Comprehension::Map | Comprehension::Filter,
            range,
            ..
        } => range_len(range),
        _ => 1,
    }
}

const BUILTIN_NAMES: [&str; 2] = ["now", "key"];

impl<'a, 's> Compiler<'a, 's> {
    fn error(&mut self, span: Span, message: impl Into<String>) -> (Node, Shape) {
        self.errors.push(CompileError {
            message: message.into(),
            span,
        });
        (Node::Const(Const::Null), Shape::Other)
    }

    fn node(&mut self, e: &'s Expr) -> (Node, Shape) {
        match &e.kind {
            ExprKind::Lit(l) => (Node::Const(self.literal(l, e.span)), Shape::Other),
            ExprKind::Ident(name) => self.ident(name, e.span),
            ExprKind::Select(operand, field, field_span) => {
                self.select(operand, field, e.span, *field_span)
            }
            ExprKind::Call {
                target,
                name,
                name_span,
                args,
            } => self.call(target.as_deref(), name, *name_span, args, e.span),
            ExprKind::Index(a, b) => {
                let (a, shape) = self.node(a);
                let (b, _) = self.node(b);
                let shape = match shape {
                    Shape::Rows(ds) => Shape::Row(ds),
                    _ => Shape::Other,
                };
                (Node::Index(Box::new(a), Box::new(b), e.span), shape)
            }
            ExprKind::List(items) => {
                let mut nodes = Vec::with_capacity(items.len());
                let mut shape = None;
                for item in items {
                    let (n, s) = self.node(item);
                    shape = match (shape, s) {
                        (None, Shape::Row(ds)) => Some(Shape::Rows(ds)),
                        (Some(Shape::Rows(a)), Shape::Row(b)) if a == b => Some(Shape::Rows(a)),
                        _ => Some(Shape::Other),
                    };
                    nodes.push(n);
                }
                (Node::List(nodes), shape.unwrap_or(Shape::Other))
            }
            ExprKind::Unary(op, a) => {
                let (a, _) = self.node(a);
                let node = match op {
                    UnaryOp::Not => Node::Not(Box::new(a), e.span),
                    UnaryOp::Neg => Node::Neg(Box::new(a), e.span),
                };
                (node, Shape::Other)
            }
            ExprKind::Binary(op, a, b) => {
                let (a, _) = self.node(a);
                let (b, _) = self.node(b);
                let node = match op {
                    BinaryOp::And => Node::And(Box::new(a), Box::new(b)),
                    BinaryOp::Or => Node::Or(Box::new(a), Box::new(b)),
                    _ => match row_count(*op, &a, &b, self.scope) {
                        Some((ds, n)) => Node::RowCount {
                            ds,
                            op: *op,
                            n,
                            span: e.span,
                        },
                        None => Node::Binary(*op, Box::new(a), Box::new(b), e.span),
                    },
                };
                (node, Shape::Other)
            }
            ExprKind::Cond(c, a, b) => {
                let (c, _) = self.node(c);
                let (a, sa) = self.node(a);
                let (b, sb) = self.node(b);
                let shape = if sa == sb { sa } else { Shape::Other };
                (
                    Node::Cond(Box::new(c), Box::new(a), Box::new(b), e.span),
                    shape,
                )
            }
        }
    }

    fn literal(&mut self, l: &Lit, span: Span) -> Const {
        match l {
            Lit::Null => Const::Null,
            Lit::Bool(b) => Const::Bool(*b),
            Lit::Int(i) => Const::Int(*i),
            Lit::UInt(u) => match i64::try_from(*u) {
                Ok(i) => Const::Int(i),
                Err(_) => {
                    self.error(span, "unsigned literal larger than the int range");
                    Const::Null
                }
            },
            Lit::Double(d) => Const::Double(*d),
            Lit::String(s) => Const::Str(s.clone()),
            Lit::Bytes(b) => Const::Bytes(b.clone()),
        }
    }

    fn dataset_names(&self) -> String {
        let names: Vec<&str> = self.scope.datasets.iter().map(|d| d.name).collect();
        if names.is_empty() {
            return "none".into();
        }
        names.join(", ")
    }

    fn ident(&mut self, name: &str, span: Span) -> (Node, Shape) {
        if let Some(i) = self.locals.iter().rposition(|l| l.name == name) {
            let shape = self.locals[i].shape;
            return (Node::Local(i), shape);
        }
        if let Some(ds) = self.scope.datasets.iter().position(|d| d.name == name) {
            let shape = if self.scope.datasets[ds].many {
                Shape::Rows(ds)
            } else {
                Shape::Row(ds)
            };
            return (Node::Dataset(ds), shape);
        }
        match name {
            "now" => (Node::Now, Shape::Other),
            "key" => (Node::Key, Shape::Other),
            "previous" if self.scope.previous => (Node::Previous, Shape::Other),
            _ => {
                let mut candidates: Vec<&str> =
                    self.scope.datasets.iter().map(|d| d.name).collect();
                candidates.extend(BUILTIN_NAMES);
                candidates.extend(self.locals.iter().map(|l| l.name));
                let hint = suggest(name, &candidates)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                let msg = format!(
                    "unknown name `{name}`{hint} (datasets: {}; also `now` and `key`)",
                    self.dataset_names()
                );
                self.error(span, msg)
            }
        }
    }

    /// Resolves `row.field` to a column slot of the row's dataset.
    fn field_slot(&mut self, ds: usize, field: &str, span: Span) -> Option<usize> {
        let d = &self.scope.datasets[ds];
        let Some(columns) = d.columns else {
            // Unknown until the query runs; the rule is compiled again then.
            return Some(usize::MAX);
        };
        if let Some(slot) = columns.iter().position(|c| c == field) {
            return Some(slot);
        }
        let hint = suggest(
            field,
            &columns.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
        let msg = format!(
            "dataset `{}` has no column `{field}`; {hint}its query returns: {}",
            d.name,
            columns.join(", ")
        );
        self.error(span, msg);
        None
    }

    fn select(
        &mut self,
        operand: &'s Expr,
        field: &str,
        span: Span,
        field_span: Span,
    ) -> (Node, Shape) {
        let (node, shape) = self.node(operand);
        match (shape, node) {
            (Shape::Row(ds), Node::Dataset(_)) => match self.field_slot(ds, field, field_span) {
                Some(slot) => (Node::Field { ds, slot, span }, Shape::Other),
                None => (Node::Const(Const::Null), Shape::Other),
            },
            (Shape::Row(ds), Node::Local(local)) => match self.field_slot(ds, field, field_span) {
                Some(slot) => (Node::LocalField { local, slot, span }, Shape::Other),
                None => (Node::Const(Const::Null), Shape::Other),
            },
            (Shape::Row(ds), row) => match self.field_slot(ds, field, field_span) {
                Some(slot) => (
                    Node::RowField {
                        row: Box::new(row),
                        slot,
                        span,
                    },
                    Shape::Other,
                ),
                None => (Node::Const(Const::Null), Shape::Other),
            },
            (Shape::Rows(ds), _) => {
                let name = self.scope.datasets[ds].name;
                self.error(
                    span,
                    format!(
                        "`{name}` is a list of rows (many: true); use size({name}) or a macro such as {name}.all(r, r.{field} …)"
                    ),
                )
            }
            _ => self.error(
                span,
                format!(
                    "`.{field}` applies only to a dataset row or a macro variable bound to one"
                ),
            ),
        }
    }

    fn arity(&mut self, name: &str, args: &[Expr], want: usize, span: Span) -> bool {
        if args.len() == want {
            return true;
        }
        self.error(
            span,
            format!(
                "`{name}` takes {want} argument{}, got {}",
                if want == 1 { "" } else { "s" },
                args.len()
            ),
        );
        false
    }

    fn call(
        &mut self,
        target: Option<&'s Expr>,
        name: &str,
        name_span: Span,
        args: &'s [Expr],
        span: Span,
    ) -> (Node, Shape) {
        // Macros first: their arguments are not ordinary expressions.
        if let Some(kind) = match name {
            "all" => Some(Comprehension::All),
            "exists" => Some(Comprehension::Exists),
            "exists_one" => Some(Comprehension::ExistsOne),
            "filter" => Some(Comprehension::Filter),
            "map" => Some(Comprehension::Map),
            _ => None,
        } {
            let Some(target) = target else {
                return self.error(
                    name_span,
                    format!("`{name}` is a macro: write list.{name}(x, …)"),
                );
            };
            if !self.arity(name, args, 2, span) {
                return (Node::Const(Const::Null), Shape::Other);
            }
            let ExprKind::Ident(var) = &args[0].kind else {
                return self.error(
                    args[0].span,
                    format!("the first argument of `{name}` must be a variable name"),
                );
            };
            let (range, range_shape) = self.node(target);
            let element = match range_shape {
                Shape::Rows(ds) => Shape::Row(ds),
                _ => Shape::Other,
            };
            self.locals.push(Local {
                name: var,
                shape: element,
            });
            let local = self.locals.len() - 1;
            self.max_locals = self.max_locals.max(self.locals.len());
            let (body, body_shape) = self.node(&args[1]);
            self.locals.pop();
            let shape = match kind {
                Comprehension::Filter => range_shape,
                Comprehension::Map => match body_shape {
                    Shape::Row(ds) => Shape::Rows(ds),
                    _ => Shape::Other,
                },
                _ => Shape::Other,
            };
            return (
                Node::Comprehension {
                    kind,
                    range: Box::new(range),
                    local,
                    body: Box::new(body),
                    span,
                },
                shape,
            );
        }
        if name == "has" && target.is_none() {
            if !self.arity(name, args, 1, span) {
                return (Node::Const(Const::Null), Shape::Other);
            }
            if !matches!(args[0].kind, ExprKind::Select(..)) {
                return self.error(
                    args[0].span,
                    "has() takes a field selection, such as has(payment.refunded_at)",
                );
            }
            let (inner, _) = self.node(&args[0]);
            return (Node::Has(Box::new(inner)), Shape::Other);
        }

        let (func, params) = match name {
            "size" => (Func::Size, 1),
            "abs" => (Func::Abs, 1),
            "int" => (Func::Int, 1),
            "double" => (Func::Double, 1),
            "decimal" => (Func::Decimal, 1),
            "string" => (Func::String, 1),
            "timestamp" => (Func::Timestamp, 1),
            "duration" => (Func::Duration, 1),
            "contains" => (Func::Contains, 2),
            "startsWith" => (Func::StartsWith, 2),
            "endsWith" => (Func::EndsWith, 2),
            "matches" => (Func::Matches, 2),
            "lowerAscii" => (Func::LowerAscii, 1),
            "upperAscii" => (Func::UpperAscii, 1),
            "trim" => (Func::Trim, 1),
            _ => {
                let known = [
                    "size",
                    "abs",
                    "int",
                    "double",
                    "decimal",
                    "string",
                    "timestamp",
                    "duration",
                    "contains",
                    "startsWith",
                    "endsWith",
                    "matches",
                    "lowerAscii",
                    "upperAscii",
                    "trim",
                    "has",
                    "all",
                    "exists",
                    "exists_one",
                    "filter",
                    "map",
                ];
                let hint = suggest(name, &known)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return self.error(name_span, format!("unknown function `{name}`{hint}"));
            }
        };
        // Receiver-style and global-style calls are the same function: `s.size()` == `size(s)`.
        let mut all_args: Vec<&'s Expr> = Vec::with_capacity(args.len() + 1);
        all_args.extend(target);
        all_args.extend(args.iter());
        if all_args.len() != params {
            let got = all_args.len();
            return self.error(
                span,
                format!(
                    "`{name}` takes {params} argument{} (counting the receiver), got {got}",
                    if params == 1 { "" } else { "s" }
                ),
            );
        }
        // Fold conversions of literals now, so a bad literal is a load-time error.
        if let [arg] = all_args.as_slice()
            && let ExprKind::Lit(Lit::String(s)) = &arg.kind
        {
            match func {
                Func::Duration => {
                    return match parse_duration(s) {
                        Ok(d) => (Node::Const(Const::Duration(d)), Shape::Other),
                        Err(msg) => self.error(arg.span, msg),
                    };
                }
                Func::Timestamp => {
                    return match parse_timestamp_text(s) {
                        Some(t) => (Node::Const(Const::Timestamp(t)), Shape::Other),
                        None => self.error(
                            arg.span,
                            format!("invalid timestamp `{s}`: expected RFC 3339, such as 2026-01-31T12:00:00Z"),
                        ),
                    };
                }
                Func::Decimal if s.parse::<Decimal>().is_err() => {
                    return self.error(arg.span, format!("invalid decimal `{s}`"));
                }
                _ => {}
            }
        }
        if func == Func::Matches
            && let ExprKind::Lit(Lit::String(pattern)) = &all_args[1].kind
        {
            let (subject, _) = self.node(all_args[0]);
            return match regex::Regex::new(pattern) {
                Ok(re) => (
                    Node::MatchesConst(Box::new(subject), Box::new(re), span),
                    Shape::Other,
                ),
                Err(e) => self.error(all_args[1].span, format!("invalid regular expression: {e}")),
            };
        }
        let nodes = all_args.into_iter().map(|a| self.node(a).0).collect();
        (Node::Call(func, nodes, span), Shape::Other)
    }
}

pub use crate::diag::suggest;
