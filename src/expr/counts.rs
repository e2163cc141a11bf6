//! Assertions made only of row counts — `size(D) OP n` over `many` datasets, joined by `&&`,
//! `||` and `!`, the shape of existence rules (`size(payment) == 0 || size(reservation) > 0`)
//! — judged straight from how many rows each dataset has for the key. No value is built and
//! no error is possible (each part is a boolean), so the tree walk is a few comparisons; it
//! takes the steps the general evaluation would take, short-circuits included, so budgets and
//! step counts read the same either way.

use super::Group;
use super::parser::BinaryOp;

/// The steps of `size(D) OP n`: the comparison, the call, the dataset and the literal.
pub(crate) const ROW_COUNT_STEPS: u64 = 4;

/// An assertion of row counts.
#[derive(Debug, Clone)]
pub(crate) enum Counts {
    /// `size(D) OP n`.
    Count {
        ds: usize,
        op: BinaryOp,
        n: i64,
    },
    Not(Box<Counts>),
    And(Box<Counts>, Box<Counts>),
    Or(Box<Counts>, Box<Counts>),
}

impl Counts {
    /// The most steps it can take: every part evaluated.
    pub(crate) fn worst(&self) -> u64 {
        match self {
            Counts::Count { .. } => ROW_COUNT_STEPS,
            Counts::Not(a) => 1 + a.worst(),
            Counts::And(a, b) | Counts::Or(a, b) => 1 + a.worst() + b.worst(),
        }
    }

    /// The assertion's value for these groups, and the steps the general evaluation takes.
    pub(crate) fn judge(&self, groups: &[Group]) -> (bool, u64) {
        match self {
            Counts::Count { ds, op, n } => (
                compare(groups[*ds].rows.len() as i64, *op, *n),
                ROW_COUNT_STEPS,
            ),
            Counts::Not(a) => {
                let (value, steps) = a.judge(groups);
                (!value, 1 + steps)
            }
            Counts::And(a, b) => logic(a, b, groups, false),
            Counts::Or(a, b) => logic(a, b, groups, true),
        }
    }
}

/// `a || b` (`decide` true) or `a && b`: `b` only when `a` does not decide.
fn logic(a: &Counts, b: &Counts, groups: &[Group], decide: bool) -> (bool, u64) {
    let (first, steps) = a.judge(groups);
    if first == decide {
        return (decide, 1 + steps);
    }
    let (second, more) = b.judge(groups);
    (second, 1 + steps + more)
}

/// `len OP n`, for the comparisons `size(D) OP n` stands for.
pub(crate) fn compare(len: i64, op: BinaryOp, n: i64) -> bool {
    match op {
        BinaryOp::Eq => len == n,
        BinaryOp::Ne => len != n,
        BinaryOp::Lt => len < n,
        BinaryOp::Le => len <= n,
        BinaryOp::Gt => len > n,
        BinaryOp::Ge => len >= n,
        _ => unreachable!("only comparisons count rows"),
    }
}
