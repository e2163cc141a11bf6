//! The parser for the CEL syntax of `assert` and `{{…}}` templates: tokens (`lexer.rs`) into
//! the syntax tree (`ast.rs`), with limits on length and depth so no rule can exhaust the
//! stack.

pub use super::ast::{BinaryOp, Expr, ExprKind, Lit, ParseError, Span, UnaryOp};
use super::lexer::{Lexer, RESERVED, Tok};

/// Parses one expression. The whole input must be consumed.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    if src.len() > MAX_LEN {
        return Err(ParseError {
            message: format!(
                "expression is {} bytes long; at most {MAX_LEN} (for many alternatives use `key in [...]`, or move the logic into the query)",
                src.len()
            ),
            span: Span { start: 0, end: 0 },
        });
    }
    let mut p = Parser::new(src)?;
    if p.tok == Tok::Eof {
        return Err(ParseError {
            message: "empty expression".into(),
            span: p.span,
        });
    }
    let expr = p.expr()?;
    if p.tok != Tok::Eof {
        return Err(p.unexpected("an operator or the end of the expression"));
    }
    // Chains (`a || b || …`, `x.a.b…`) are built in loops, so only the finished tree says how
    // deep it is. Compiling, evaluating and analysing recurse over it: whatever parses must be
    // shallow enough for any thread's stack.
    if let Some(span) = too_deep(&expr) {
        dismantle(expr);
        return Err(ParseError {
            message: format!(
                "expression nests more than {MAX_DEPTH} levels deep (each `||`, `&&`, operator or `.field` of a chain is a level); for many alternatives use `key in [...]`"
            ),
            span,
        });
    }
    Ok(expr)
}

fn children(e: &Expr) -> Vec<&Expr> {
    match &e.kind {
        ExprKind::Lit(_) | ExprKind::Ident(_) => Vec::new(),
        ExprKind::Select(a, _, _) | ExprKind::Unary(_, a) => vec![a],
        ExprKind::Call { target, args, .. } => target.iter().map(|t| &**t).chain(args).collect(),
        ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => vec![a, b],
        ExprKind::List(items) => items.iter().collect(),
        ExprKind::Cond(c, a, b) => vec![c, a, b],
    }
}

/// The span of a node deeper than `MAX_DEPTH`, found without recursion.
fn too_deep(e: &Expr) -> Option<Span> {
    let mut stack = vec![(e, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Some(node.span);
        }
        stack.extend(children(node).into_iter().map(|c| (c, depth + 1)));
    }
    None
}

/// Drops a tree without recursion (dropping a very deep one recursively would overflow).
fn dismantle(e: Expr) {
    let placeholder = || Expr {
        kind: ExprKind::Lit(Lit::Null),
        span: Span { start: 0, end: 0 },
    };
    let mut stack = vec![e];
    while let Some(mut node) = stack.pop() {
        let take = |b: &mut Box<Expr>| std::mem::replace(&mut **b, placeholder());
        match &mut node.kind {
            ExprKind::Lit(_) | ExprKind::Ident(_) => {}
            ExprKind::Select(a, _, _) | ExprKind::Unary(_, a) => stack.push(take(a)),
            ExprKind::Call { target, args, .. } => {
                if let Some(t) = target {
                    stack.push(take(t));
                }
                stack.append(args);
            }
            ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => {
                stack.push(take(a));
                stack.push(take(b));
            }
            ExprKind::List(items) => stack.append(items),
            ExprKind::Cond(c, a, b) => {
                stack.push(take(c));
                stack.push(take(a));
                stack.push(take(b));
            }
        }
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok,
    span: Span,
    depth: usize,
    /// `expr` entries: the whole expression, then one per bracket inside it.
    nesting: usize,
}

/// Deep nesting is almost certainly a mistake, and unbounded recursion would overflow the stack.
const MAX_DEPTH: usize = 100;

/// How many brackets may nest. Each one re-enters the whole precedence ladder (about ten
/// frames, some large in a debug build), so this bounds the parser's stack far more tightly
/// than `MAX_DEPTH` alone: found by fuzzing, 100 nested unclosed calls overflowed 2 MiB.
const MAX_NESTING: usize = 32;

/// The longest expression: a rule is read by people, and evaluated for every key.
const MAX_LEN: usize = 64 * 1024;

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Result<Self, ParseError> {
        let mut lex = Lexer::new(src);
        let (tok, span) = lex.next()?;
        Ok(Parser {
            lex,
            tok,
            span,
            depth: 0,
            nesting: 0,
        })
    }

    fn bump(&mut self) -> Result<(Tok, Span), ParseError> {
        let (tok, span) = self.lex.next()?;
        let old_tok = std::mem::replace(&mut self.tok, tok);
        let old_span = std::mem::replace(&mut self.span, span);
        Ok((old_tok, old_span))
    }

    fn is(&self, p: &str) -> bool {
        matches!(&self.tok, Tok::Punct(q) if *q == p)
    }

    fn unexpected(&self, wanted: &str) -> ParseError {
        let found = match &self.tok {
            Tok::Eof => "the end of the expression".to_string(),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::Str(_) | Tok::Bytes(_) => "a string".into(),
            Tok::Int(_) | Tok::IntMinMagnitude | Tok::UInt(_) | Tok::Double(_) => "a number".into(),
        };
        ParseError {
            message: format!("expected {wanted}, found {found}"),
            span: self.span,
        }
    }

    fn expect(&mut self, p: &'static str) -> Result<Span, ParseError> {
        if self.is(p) {
            Ok(self.bump()?.1)
        } else {
            Err(self.unexpected(&format!("`{p}`")))
        }
    }

    fn binary_op(&self) -> Option<(BinaryOp, u8)> {
        // Precedence, loosest first: || && relations + - * / %
        Some(match &self.tok {
            Tok::Punct("||") => (BinaryOp::Or, 1),
            Tok::Punct("&&") => (BinaryOp::And, 2),
            Tok::Punct("==") => (BinaryOp::Eq, 3),
            Tok::Punct("!=") => (BinaryOp::Ne, 3),
            Tok::Punct("<") => (BinaryOp::Lt, 3),
            Tok::Punct("<=") => (BinaryOp::Le, 3),
            Tok::Punct(">") => (BinaryOp::Gt, 3),
            Tok::Punct(">=") => (BinaryOp::Ge, 3),
            Tok::Ident(s) if s == "in" => (BinaryOp::In, 3),
            Tok::Punct("+") => (BinaryOp::Add, 4),
            Tok::Punct("-") => (BinaryOp::Sub, 4),
            Tok::Punct("*") => (BinaryOp::Mul, 5),
            Tok::Punct("/") => (BinaryOp::Div, 5),
            Tok::Punct("%") => (BinaryOp::Rem, 5),
            _ => return None,
        })
    }

    /// `Expr = Or ["?" Expr ":" Expr]`: the conditional is the loosest form.
    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        self.nesting += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                message: format!("expression nested more than {MAX_DEPTH} levels deep"),
                span: self.span,
            });
        }
        if self.nesting > MAX_NESTING + 1 {
            return Err(ParseError {
                message: format!(
                    "expression nests more than {MAX_NESTING} brackets (parentheses, calls, lists, indexes, conditionals) inside each other"
                ),
                span: self.span,
            });
        }
        let mut e = self.binary(1)?;
        if self.is("?") {
            self.bump()?;
            let then = self.expr()?;
            self.expect(":")?;
            let otherwise = self.expr()?;
            let span = e.span.to(otherwise.span);
            e = Expr {
                kind: ExprKind::Cond(Box::new(e), Box::new(then), Box::new(otherwise)),
                span,
            };
        }
        self.depth -= 1;
        self.nesting -= 1;
        Ok(e)
    }

    /// Binary operators by precedence climbing; all are left-associative.
    fn binary(&mut self, min_prec: u8) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        while let Some((op, prec)) = self.binary_op() {
            if prec < min_prec {
                break;
            }
            self.bump()?;
            let rhs = self.binary(prec + 1)?;
            let span = lhs.span.to(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        let op = if self.is("!") {
            UnaryOp::Not
        } else if self.is("-") {
            UnaryOp::Neg
        } else {
            return self.member();
        };
        let (_, start) = self.bump()?;
        if op == UnaryOp::Neg && self.tok == Tok::IntMinMagnitude {
            let (_, end) = self.bump()?;
            return Ok(Expr {
                kind: ExprKind::Lit(Lit::Int(i64::MIN)),
                span: start.to(end),
            });
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                message: format!("expression nested more than {MAX_DEPTH} levels deep"),
                span: start,
            });
        }
        let operand = self.unary()?;
        self.depth -= 1;
        // Fold `-<number>` so that the most negative int literal parses.
        if op == UnaryOp::Neg {
            // `-(-9223372036854775808)` has no int: it stays a negation, which the evaluator
            // reports as an overflow.
            if let ExprKind::Lit(Lit::Int(i)) = operand.kind
                && let Some(negated) = i.checked_neg()
            {
                return Ok(Expr {
                    kind: ExprKind::Lit(Lit::Int(negated)),
                    span: start.to(operand.span),
                });
            }
            if let ExprKind::Lit(Lit::Double(d)) = operand.kind {
                return Ok(Expr {
                    kind: ExprKind::Lit(Lit::Double(-d)),
                    span: start.to(operand.span),
                });
            }
        }
        let span = start.to(operand.span);
        Ok(Expr {
            kind: ExprKind::Unary(op, Box::new(operand)),
            span,
        })
    }

    fn member(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.primary()?;
        loop {
            if self.is(".") {
                self.bump()?;
                let (tok, name_span) = self.bump()?;
                let Tok::Ident(name) = tok else {
                    return Err(ParseError {
                        message: "expected a field or method name after `.`".into(),
                        span: name_span,
                    });
                };
                if self.is("(") {
                    let (args, end) = self.args(")")?;
                    let span = e.span.to(end);
                    e = Expr {
                        kind: ExprKind::Call {
                            target: Some(Box::new(e)),
                            name,
                            name_span,
                            args,
                        },
                        span,
                    };
                } else {
                    let span = e.span.to(name_span);
                    e = Expr {
                        kind: ExprKind::Select(Box::new(e), name, name_span),
                        span,
                    };
                }
            } else if self.is("[") {
                self.bump()?;
                let index = self.expr()?;
                let end = self.expect("]")?;
                let span = e.span.to(end);
                e = Expr {
                    kind: ExprKind::Index(Box::new(e), Box::new(index)),
                    span,
                };
            } else {
                return Ok(e);
            }
        }
    }

    /// Arguments after an opening bracket, up to and including `close`.
    fn args(&mut self, close: &'static str) -> Result<(Vec<Expr>, Span), ParseError> {
        self.bump()?;
        let mut args = Vec::new();
        loop {
            if self.is(close) {
                break;
            }
            args.push(self.expr()?);
            if self.is(",") {
                self.bump()?;
            } else if !self.is(close) {
                return Err(self.unexpected(&format!("`,` or `{close}`")));
            }
        }
        let end = self.expect(close)?;
        Ok((args, end))
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let span = self.span;
        let lit = |kind| Ok(Expr { kind, span });
        match self.tok.clone() {
            Tok::Int(i) => {
                self.bump()?;
                lit(ExprKind::Lit(Lit::Int(i)))
            }
            Tok::UInt(u) => {
                self.bump()?;
                lit(ExprKind::Lit(Lit::UInt(u)))
            }
            Tok::Double(d) => {
                self.bump()?;
                lit(ExprKind::Lit(Lit::Double(d)))
            }
            Tok::Str(s) => {
                self.bump()?;
                lit(ExprKind::Lit(Lit::String(s)))
            }
            Tok::Bytes(b) => {
                self.bump()?;
                lit(ExprKind::Lit(Lit::Bytes(b)))
            }
            Tok::Ident(name) => {
                self.bump()?;
                match name.as_str() {
                    "null" => return lit(ExprKind::Lit(Lit::Null)),
                    "true" => return lit(ExprKind::Lit(Lit::Bool(true))),
                    "false" => return lit(ExprKind::Lit(Lit::Bool(false))),
                    n if RESERVED.contains(&n) => {
                        return Err(ParseError {
                            message: format!("`{n}` is a reserved word"),
                            span,
                        });
                    }
                    _ => {}
                }
                if self.is("(") {
                    let (args, end) = self.args(")")?;
                    return Ok(Expr {
                        kind: ExprKind::Call {
                            target: None,
                            name,
                            name_span: span,
                            args,
                        },
                        span: span.to(end),
                    });
                }
                lit(ExprKind::Ident(name))
            }
            Tok::Punct("(") => {
                self.bump()?;
                let mut inner = self.expr()?;
                // The parentheses belong to it: an expression around it, as written, ends
                // with its `)` (what `explain` prints of each sub-expression).
                let end = self.expect(")")?;
                inner.span = span.to(end);
                Ok(inner)
            }
            Tok::Punct("[") => {
                let (items, end) = self.args("]")?;
                Ok(Expr {
                    kind: ExprKind::List(items),
                    span: span.to(end),
                })
            }
            Tok::IntMinMagnitude => Err(ParseError {
                message: "integer literal out of range (int is 64-bit)".into(),
                span,
            }),
            Tok::Punct("{") => Err(ParseError {
                message: "map literals are not supported in rule expressions".into(),
                span,
            }),
            _ => Err(self.unexpected("a value, a name or `(`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `explain` prints each sub-expression as its span's text: parentheses stay with what
    /// they enclose, so none is dropped.
    #[test]
    fn spans_keep_the_parentheses_of_what_they_enclose() {
        let text = "payment == null || (order != null && payment.captured == order.total)";
        let e = parse(text).unwrap();
        let span = |e: &Expr| &text[e.span.start..e.span.end];
        assert_eq!(span(&e), text);
        let ExprKind::Binary(_, lhs, rhs) = &e.kind else {
            panic!("not a binary: {e:?}")
        };
        assert_eq!(span(lhs), "payment == null");
        assert_eq!(
            span(rhs),
            "(order != null && payment.captured == order.total)"
        );
        let nested = parse("((a)) + 1").unwrap();
        assert_eq!((nested.span.start, nested.span.end), (0, 9));
    }

    fn show(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Lit(l) => format!("{l:?}"),
            ExprKind::Ident(n) => n.clone(),
            ExprKind::Select(o, f, _) => format!("{}.{f}", show(o)),
            ExprKind::Call {
                target, name, args, ..
            } => {
                let args: Vec<String> = args.iter().map(show).collect();
                match target {
                    Some(t) => format!("{}.{name}({})", show(t), args.join(", ")),
                    None => format!("{name}({})", args.join(", ")),
                }
            }
            ExprKind::Index(a, b) => format!("{}[{}]", show(a), show(b)),
            ExprKind::List(items) => {
                format!(
                    "[{}]",
                    items.iter().map(show).collect::<Vec<_>>().join(", ")
                )
            }
            ExprKind::Unary(op, a) => format!("({op:?} {})", show(a)),
            ExprKind::Binary(op, a, b) => format!("({} {} {})", show(a), op.symbol(), show(b)),
            ExprKind::Cond(c, a, b) => format!("({} ? {} : {})", show(c), show(a), show(b)),
        }
    }

    #[test]
    fn precedence_follows_cel() {
        let e = parse("a == null || b != null && c.x + 1 * 2 < 3").unwrap();
        assert_eq!(
            show(&e),
            "((a == Null) || ((b != Null) && ((c.x + (Int(1) * Int(2))) < Int(3))))"
        );
        let e = parse("a ? b : c ? d : e").unwrap();
        assert_eq!(show(&e), "(a ? b : (c ? d : e))");
        let e = parse("1 - 2 - 3").unwrap();
        assert_eq!(show(&e), "((Int(1) - Int(2)) - Int(3))");
        let e = parse("size(p) <= 1 && p.all(x, x.amount > 0) && 'a' in ['a', 'b']").unwrap();
        assert_eq!(
            show(&e),
            "(((size(p) <= Int(1)) && p.all(x, (x.amount > Int(0)))) && (String(\"a\") in [String(\"a\"), String(\"b\")]))"
        );
        let e = parse("-9223372036854775808").unwrap();
        assert_eq!(show(&e), "Int(-9223372036854775808)");
        let e = parse("!a.b").unwrap();
        assert_eq!(show(&e), "(Not a.b)");
    }

    #[test]
    fn strings_and_numbers_lex() {
        let e = parse(r#"'it\'s' + "\u00e9" + r'\n' + '''a'b'''"#).unwrap();
        assert_eq!(
            show(&e),
            r#"(((String("it's") + String("é")) + String("\\n")) + String("a'b"))"#
        );
        assert_eq!(show(&parse("1.5e3").unwrap()), "Double(1500.0)");
        assert_eq!(show(&parse("7u").unwrap()), "UInt(7)");
        assert_eq!(show(&parse("0x1F").unwrap()), "Int(31)");
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        let err = parse("a = b").unwrap_err();
        assert_eq!(err.message, "unexpected `=`: compare with `==`");
        assert_eq!(err.span.start, 2);
        let err = parse("a && ").unwrap_err();
        assert_eq!(
            err.message,
            "expected a value, a name or `(`, found the end of the expression"
        );
        let err = parse("(a || b").unwrap_err();
        assert_eq!(err.message, "expected `)`, found the end of the expression");
        let err = parse("a b").unwrap_err();
        assert_eq!(err.span.start, 2);
        let err = parse("'abc").unwrap_err();
        assert_eq!(err.message, "unterminated string literal");
    }
}
