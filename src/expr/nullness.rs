//! Which datasets are sure to have a row when an assertion is false — when a violation is
//! reported — and which fields of a message read a dataset without that guarantee (or a
//! `x != null ? … : …` guard around them). Such a field renders as `null` in the message; the
//! rule loader warns about it, since it is usually a message written for the wrong case.
//!
//! The analysis is syntactic and conservative: it only claims a row where the expression
//! proves one (`d == null || …` false, `d != null` true, a comparison that read `d.f` without
//! an error), so a warning may be spared but never wrongly raised for those forms.

use std::collections::BTreeSet;

use super::parser::{BinaryOp, Expr, ExprKind, Lit, Span, UnaryOp};

type Names = BTreeSet<String>;

/// (datasets with a row when `e` is true, datasets with a row when `e` is false).
fn facts(e: &Expr, datasets: &[&str]) -> (Names, Names) {
    let is_null = |x: &Expr| matches!(x.kind, ExprKind::Lit(Lit::Null));
    let dataset = |x: &Expr| match &x.kind {
        ExprKind::Ident(n) if datasets.contains(&n.as_str()) => Some(n.clone()),
        _ => None,
    };
    match &e.kind {
        ExprKind::Binary(BinaryOp::Eq | BinaryOp::Ne, a, b)
            if (is_null(a) && dataset(b).is_some()) || (is_null(b) && dataset(a).is_some()) =>
        {
            let name = dataset(a)
                .or_else(|| dataset(b))
                .expect("one side is a dataset");
            let row: Names = [name].into();
            match &e.kind {
                ExprKind::Binary(BinaryOp::Eq, ..) => (Names::new(), row),
                _ => (row, Names::new()),
            }
        }
        ExprKind::Binary(BinaryOp::Or, a, b) => {
            let (ta, fa) = facts(a, datasets);
            let (tb, fb) = facts(b, datasets);
            (ta.intersection(&tb).cloned().collect(), &fa | &fb)
        }
        ExprKind::Binary(BinaryOp::And, a, b) => {
            let (ta, fa) = facts(a, datasets);
            let (tb, fb) = facts(b, datasets);
            (&ta | &tb, fa.intersection(&fb).cloned().collect())
        }
        ExprKind::Unary(UnaryOp::Not, a) => {
            let (t, f) = facts(a, datasets);
            (f, t)
        }
        ExprKind::Call {
            target: None,
            name,
            args,
            ..
        } if name == "has" => {
            let read = fields_read(args.first(), datasets);
            (read, Names::new())
        }
        // Anything else that gives true or false without an error has read every field it
        // reads unconditionally: those rows were there.
        ExprKind::Cond(..) => (Names::new(), Names::new()),
        _ => {
            let read = fields_read(Some(e), datasets);
            (read.clone(), read)
        }
    }
}

/// Datasets whose fields `e` reads on every evaluation (not under `&&`, `||` or `? :`).
fn fields_read(e: Option<&Expr>, datasets: &[&str]) -> Names {
    let mut out = Names::new();
    let Some(e) = e else { return out };
    match &e.kind {
        ExprKind::Select(operand, _, _) => match &operand.kind {
            ExprKind::Ident(n) if datasets.contains(&n.as_str()) => {
                out.insert(n.clone());
            }
            _ => out.extend(fields_read(Some(operand), datasets)),
        },
        ExprKind::Binary(BinaryOp::And | BinaryOp::Or, ..) | ExprKind::Cond(..) => {}
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
            out.extend(fields_read(Some(a), datasets));
            out.extend(fields_read(Some(b), datasets));
        }
        ExprKind::Unary(_, a) => out.extend(fields_read(Some(a), datasets)),
        ExprKind::Call {
            target, args, name, ..
        } if !is_macro(name) => {
            out.extend(fields_read(target.as_deref(), datasets));
            for a in args {
                out.extend(fields_read(Some(a), datasets));
            }
        }
        ExprKind::List(items) => {
            for i in items {
                out.extend(fields_read(Some(i), datasets));
            }
        }
        _ => {}
    }
    out
}

fn is_macro(name: &str) -> bool {
    matches!(
        name,
        "all" | "exists" | "exists_one" | "filter" | "map" | "has"
    )
}

/// The datasets sure to have a row for every key the assertion reports as a violation.
/// `datasets` are the names of the rule's datasets without `many` (a `many` dataset is a list,
/// never null).
pub fn rows_on_violation(assertion: &Expr, datasets: &[&str]) -> BTreeSet<String> {
    facts(assertion, datasets).1
}

/// A field read in a message that may find no row: the dataset and where it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaybeNull {
    pub dataset: String,
    pub field: String,
    pub span: Span,
}

/// The fields of `datasets` that `e` reads without `sure` having a row for them and without a
/// null guard (`d != null ? d.f : …`, `d == null ? … : d.f`, `has(d.f) ? d.f : …`).
pub fn unguarded_fields(e: &Expr, datasets: &[&str], sure: &BTreeSet<String>) -> Vec<MaybeNull> {
    let mut out = Vec::new();
    walk(e, datasets, sure, &mut out);
    out
}

fn walk(e: &Expr, datasets: &[&str], sure: &BTreeSet<String>, out: &mut Vec<MaybeNull>) {
    match &e.kind {
        ExprKind::Select(operand, field, _) => match &operand.kind {
            ExprKind::Ident(n) if datasets.contains(&n.as_str()) => {
                if !sure.contains(n) {
                    out.push(MaybeNull {
                        dataset: n.clone(),
                        field: field.clone(),
                        span: e.span,
                    });
                }
            }
            _ => walk(operand, datasets, sure, out),
        },
        ExprKind::Cond(c, a, b) => {
            walk(c, datasets, sure, out);
            let (t, f) = facts(c, datasets);
            walk(a, datasets, &(sure | &t), out);
            walk(b, datasets, &(sure | &f), out);
        }
        ExprKind::Binary(BinaryOp::And, a, b) => {
            walk(a, datasets, sure, out);
            let (t, _) = facts(a, datasets);
            walk(b, datasets, &(sure | &t), out);
        }
        ExprKind::Binary(BinaryOp::Or, a, b) => {
            walk(a, datasets, sure, out);
            let (_, f) = facts(a, datasets);
            walk(b, datasets, &(sure | &f), out);
        }
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
            walk(a, datasets, sure, out);
            walk(b, datasets, sure, out);
        }
        ExprKind::Unary(_, a) => walk(a, datasets, sure, out),
        ExprKind::Call {
            target, args, name, ..
        } => {
            // `has(d.f)` is itself the test for a missing row.
            if name == "has" && target.is_none() {
                return;
            }
            if let Some(t) = target {
                walk(t, datasets, sure, out);
            }
            for a in args {
                walk(a, datasets, sure, out);
            }
        }
        ExprKind::List(items) => {
            for i in items {
                walk(i, datasets, sure, out);
            }
        }
        ExprKind::Lit(_) | ExprKind::Ident(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse;

    fn sure(assertion: &str) -> Vec<String> {
        rows_on_violation(
            &parse(assertion).unwrap(),
            &["payment", "order", "shipment"],
        )
        .into_iter()
        .collect()
    }

    fn unguarded(assertion: &str, message: &str) -> Vec<String> {
        let ds = ["payment", "order", "shipment"];
        let sure = rows_on_violation(&parse(assertion).unwrap(), &ds);
        unguarded_fields(&parse(message).unwrap(), &ds, &sure)
            .into_iter()
            .map(|m| format!("{}.{}", m.dataset, m.field))
            .collect()
    }

    #[test]
    fn a_violation_guarantees_the_rows_its_assertion_proves() {
        assert_eq!(sure("payment == null || order != null"), ["payment"]);
        assert_eq!(
            sure("payment == null || (order != null && payment.amount == order.total)"),
            ["payment"]
        );
        assert_eq!(sure("now - order.updated_at < duration('15m')"), ["order"]);
        assert_eq!(
            sure("!(payment != null) || shipment == null"),
            ["payment", "shipment"]
        );
        assert!(sure("payment != null").is_empty());
        assert!(sure("payment == null && order == null").is_empty());
    }

    #[test]
    fn message_fields_without_a_row_or_a_guard_are_found() {
        let assertion = "payment == null || order != null";
        assert!(unguarded(assertion, "payment.amount").is_empty());
        assert_eq!(unguarded(assertion, "order.total"), ["order.total"]);
        assert!(unguarded(assertion, "order == null ? 'none' : string(order.total)").is_empty());
        assert!(unguarded(assertion, "order != null ? order.total : 0").is_empty());
        assert!(unguarded(assertion, "has(order.total) ? order.total : 0").is_empty());
        assert!(unguarded(assertion, "order != null && order.total > 0").is_empty());
        assert_eq!(
            unguarded(assertion, "shipment.id + payment.id"),
            ["shipment.id"]
        );
    }
}
