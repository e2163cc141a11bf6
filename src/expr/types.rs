//! Static types: the set of types each sub-expression can have, so that an operation no
//! combination of its operands' types allows is an error before any key is judged — at load,
//! where only literals have known types (`now - order.placed_at < '30m'`: a duration or a
//! timestamp against text that is not a timestamp), and once per run, when the queries'
//! column types are known (`order.total > 'high'` with `total` a NUMERIC).
//!
//! The sets mirror the evaluator's overloads (`eval.rs`). NULL is left out of column types on
//! purpose: a NULL meets its own check at run time (`!= null`), and a rule must not be refused
//! for columns that may be NULL.

use super::compile::{Comprehension, Const, Func, Node};
use super::parser::{BinaryOp, Span};
use super::{CompileError, Program, parse_duration};
pub use crate::value::Types;
use crate::value::parse_timestamp_text;

const NUMBERS: Types = Types::INT.with(Types::DOUBLE).with(Types::DECIMAL);

fn numeric(t: Types) -> bool {
    t.meets(NUMBERS)
}

/// An operand: its possible types, and its text when it is a string literal.
#[derive(Clone, Copy)]
struct Operand<'a> {
    types: Types,
    literal: Option<&'a str>,
}

/// Whether text is read as a timestamp next to one: any text may be, unless it is a literal
/// that is not a timestamp.
fn can_be_timestamp(o: &Operand<'_>) -> bool {
    o.literal.is_none_or(|s| parse_timestamp_text(s).is_some())
}

/// The type of `a op b` for single types, or `None` where the evaluator has no overload.
fn result(op: BinaryOp, a: Types, b: Types, oa: &Operand<'_>, ob: &Operand<'_>) -> Option<Types> {
    use BinaryOp::*;
    let ts_or_str = |t: Types, o: &Operand<'_>| {
        t == Types::TIMESTAMP || (t == Types::STRING && can_be_timestamp(o))
    };
    let comparable = || {
        (numeric(a) && numeric(b))
            || (a == b
                && [
                    Types::STRING,
                    Types::BYTES,
                    Types::BOOL,
                    Types::DURATION,
                    Types::TIMESTAMP,
                ]
                .contains(&a))
            || (a == Types::TIMESTAMP && ts_or_str(b, ob))
            || (b == Types::TIMESTAMP && ts_or_str(a, oa))
    };
    match op {
        Eq | Ne => {
            let ok = a == Types::NULL
                || b == Types::NULL
                || (a == Types::ROW && b == Types::ROW)
                || (a == Types::LIST && b == Types::LIST)
                || comparable();
            ok.then_some(Types::BOOL)
        }
        Lt | Le | Gt | Ge => comparable().then_some(Types::BOOL),
        In => (b == Types::LIST).then_some(Types::BOOL),
        Add | Sub | Mul | Div | Rem if numeric(a) && numeric(b) => {
            Some(if a == Types::DECIMAL || b == Types::DECIMAL {
                Types::DECIMAL
            } else if a == Types::DOUBLE || b == Types::DOUBLE {
                Types::DOUBLE
            } else {
                Types::INT
            })
        }
        Add if a == b && [Types::STRING, Types::BYTES, Types::LIST].contains(&a) => Some(a),
        Add | Sub if a == Types::DURATION && b == Types::DURATION => Some(Types::DURATION),
        Add if a == Types::DURATION && ts_or_str(b, ob) => Some(Types::TIMESTAMP),
        Add | Sub if b == Types::DURATION && ts_or_str(a, oa) => Some(Types::TIMESTAMP),
        Sub if (a == Types::TIMESTAMP && ts_or_str(b, ob))
            || (b == Types::TIMESTAMP && ts_or_str(a, oa)) =>
        {
            Some(Types::DURATION)
        }
        _ => None,
    }
}

struct Checker<'a> {
    /// Per dataset, per column slot: the column's possible types.
    columns: &'a [Vec<Types>],
    errors: Vec<CompileError>,
}

impl Checker<'_> {
    fn error(&mut self, span: Span, message: String) -> Types {
        self.errors.push(CompileError { message, span });
        Types::ANY
    }

    fn ty<'n>(&mut self, node: &'n Node) -> Operand<'n> {
        let any = |types| Operand {
            types,
            literal: None,
        };
        match node {
            Node::Const(c) => match c {
                Const::Str(s) => Operand {
                    types: Types::STRING,
                    literal: Some(s),
                },
                Const::Null => any(Types::NULL),
                Const::Bool(_) => any(Types::BOOL),
                Const::Int(_) => any(Types::INT),
                Const::Double(_) => any(Types::DOUBLE),
                Const::Bytes(_) => any(Types::BYTES),
                Const::Timestamp(_) => any(Types::TIMESTAMP),
                Const::Duration(_) => any(Types::DURATION),
            },
            Node::Now => any(Types::TIMESTAMP),
            Node::Key => any(Types::INT.with(Types::STRING)),
            Node::Previous => any(Types::INT.with(Types::NULL)),
            Node::Dataset(_) => any(Types::ROW.with(Types::LIST).with(Types::NULL)),
            Node::Field { ds, slot, .. } => any(self
                .columns
                .get(*ds)
                .and_then(|c| c.get(*slot))
                .copied()
                .unwrap_or(Types::COLUMN)),
            Node::Local(_) | Node::LocalField { .. } | Node::RowField { .. } | Node::Index(..) => {
                self.walk_children(node);
                any(Types::ANY)
            }
            Node::RowCount { .. } => any(Types::BOOL),
            Node::Has(_)
            | Node::And(..)
            | Node::Or(..)
            | Node::Not(..)
            | Node::MatchesConst(..) => {
                self.walk_children(node);
                any(Types::BOOL)
            }
            Node::Neg(a, span) => {
                let t = self.ty(a).types;
                let out = t.within(NUMBERS.with(Types::DURATION));
                if out.is_empty() && !t.is_empty() {
                    return any(self.error(*span, format!("no such overload: -{}", t.describe())));
                }
                any(out)
            }
            Node::Binary(op, a, b, span) => {
                let oa = self.ty(a);
                let ob = self.ty(b);
                let mut out = Types::default();
                for ta in oa.types.singles() {
                    for tb in ob.types.singles() {
                        if let Some(r) = result(*op, ta, tb, &oa, &ob) {
                            out = out.with(r);
                        }
                    }
                }
                if out.is_empty() && !oa.types.is_empty() && !ob.types.is_empty() {
                    let hint = [ob.literal, oa.literal]
                        .into_iter()
                        .flatten()
                        .find(|s| parse_duration(s).is_ok())
                        .map(|s| format!("; did you mean duration('{s}')?"))
                        .unwrap_or_default();
                    return any(self.error(
                        *span,
                        format!(
                            "no such overload: {} {} {}{hint}",
                            oa.types.describe(),
                            op.symbol(),
                            ob.types.describe()
                        ),
                    ));
                }
                any(out)
            }
            Node::Cond(c, a, b, span) => {
                let tc = self.ty(c).types;
                if !tc.meets(Types::BOOL) {
                    self.error(
                        *span,
                        format!("the condition of `? :` is a {}, not a bool", tc.describe()),
                    );
                }
                let ta = self.ty(a).types;
                let tb = self.ty(b).types;
                any(ta.with(tb))
            }
            Node::List(items) => {
                for i in items {
                    self.ty(i);
                }
                any(Types::LIST)
            }
            Node::Call(func, args, _) => {
                let mut arg = Types::ANY;
                for (i, a) in args.iter().enumerate() {
                    let t = self.ty(a).types;
                    if i == 0 {
                        arg = t;
                    }
                }
                any(match func {
                    // A number or a duration, of the argument's own type.
                    Func::Abs => arg.within(
                        Types::INT
                            .with(Types::DOUBLE)
                            .with(Types::DECIMAL)
                            .with(Types::DURATION),
                    ),
                    Func::Size | Func::Int => Types::INT,
                    Func::Double => Types::DOUBLE,
                    Func::Decimal => Types::DECIMAL,
                    Func::String | Func::LowerAscii | Func::UpperAscii | Func::Trim => {
                        Types::STRING
                    }
                    Func::Timestamp => Types::TIMESTAMP,
                    Func::Duration => Types::DURATION,
                    Func::Contains | Func::StartsWith | Func::EndsWith | Func::Matches => {
                        Types::BOOL
                    }
                })
            }
            Node::Comprehension {
                kind, range, body, ..
            } => {
                self.ty(range);
                self.ty(body);
                any(match kind {
                    Comprehension::All | Comprehension::Exists | Comprehension::ExistsOne => {
                        Types::BOOL
                    }
                    Comprehension::Filter | Comprehension::Map => Types::LIST,
                })
            }
        }
    }

    fn walk_children(&mut self, node: &Node) {
        match node {
            Node::LocalField { .. } | Node::Local(_) => {}
            Node::RowField { row, .. } => {
                self.ty(row);
            }
            Node::Index(a, b, _) | Node::And(a, b) | Node::Or(a, b) => {
                self.ty(a);
                self.ty(b);
            }
            Node::Has(a) | Node::Not(a, _) | Node::MatchesConst(a, _, _) => {
                self.ty(a);
            }
            _ => {}
        }
    }
}

/// Type errors of an assertion, given each dataset's column types (by slot; a dataset or slot
/// not given may hold any column type). An assertion that cannot be a bool is one too.
pub fn check_assertion(program: &Program, columns: &[Vec<Types>]) -> Vec<CompileError> {
    check_gives(program, columns, Types::BOOL, "the assertion", "a bool")
}

/// Type errors of a rule's `impact` value, which must be a number (or null: no impact known).
pub fn check_number(program: &Program, columns: &[Vec<Types>]) -> Vec<CompileError> {
    let numbers = Types::INT.with(Types::DOUBLE).with(Types::DECIMAL);
    check_gives(program, columns, numbers, "the value", "a number")
}

/// Type errors of an expression, and one if it cannot give any of `want`.
fn check_gives(
    program: &Program,
    columns: &[Vec<Types>],
    want: Types,
    what: &str,
    want_text: &str,
) -> Vec<CompileError> {
    let mut c = Checker {
        columns,
        errors: Vec::new(),
    };
    let t = c.ty(&program.root).types;
    if c.errors.is_empty() && !t.meets(want) && !t.is_empty() {
        c.errors.push(CompileError {
            message: format!("{what} gives {}, not {want_text}", t.describe()),
            span: program.root.span(),
        });
    }
    c.errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{Scope, ScopeDataset, compile, parse};

    fn errors(expr: &str, column_types: Option<Vec<Types>>) -> Vec<String> {
        let columns = vec![
            "placed_at".to_string(),
            "total".to_string(),
            "status".to_string(),
        ];
        let scope = Scope {
            datasets: vec![ScopeDataset {
                name: "order",
                many: false,
                columns: Some(&columns),
            }],
            previous: false,
        };
        let program = compile(&parse(expr).unwrap(), &scope).unwrap();
        let types: Vec<Vec<Types>> = column_types.into_iter().collect();
        check_assertion(&program, &types)
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn literal_types_are_checked_before_any_key_is_judged() {
        assert_eq!(
            errors("now - order.placed_at < '30m'", None),
            ["no such overload: duration < string; did you mean duration('30m')?"]
        );
        assert!(errors("now - order.placed_at < duration('30m')", None).is_empty());
        // Text that is a timestamp compares with one, as it does at run time.
        assert!(errors("order.placed_at < '2026-01-01T00:00:00Z'", None).is_empty());
        assert!(errors("order == null || order.total > 0", None).is_empty());
        assert_eq!(
            errors("1 + 'a' == 2", None),
            ["no such overload: int + string"]
        );
        assert_eq!(
            errors("order.total + 1", None),
            ["the assertion gives int or double or decimal, not a bool"]
        );
    }

    #[test]
    fn column_types_are_checked_once_known() {
        let described = Some(vec![Types::TIMESTAMP, Types::DECIMAL, Types::STRING]);
        assert_eq!(
            errors("order.total > 'high'", described.clone()),
            ["no such overload: decimal > string"]
        );
        assert!(
            errors(
                "order.total > 10 && order.status == 'paid'",
                described.clone()
            )
            .is_empty()
        );
        assert_eq!(
            errors("order.status < 3", described),
            ["no such overload: string < int"]
        );
        // Unknown column types accept both.
        assert!(errors("order.total > 'high'", None).is_empty());
    }
}
