use proptest::prelude::*;

use super::*;

fn cond(measure: Measure, text: &str) -> Condition {
    parse_condition(measure, text).unwrap()
}

fn tally(violations: u64, judged: u64, impact: i64) -> Tally {
    Tally {
        violations,
        judged,
        impact: Some(Decimal::from(impact)),
    }
}

#[test]
fn conditions_read_as_written() {
    assert_eq!(
        cond(Measure::Violations, " > 10 ").to_string(),
        "violations > 10"
    );
    assert_eq!(
        cond(Measure::Fraction, ">= 1.5%").value,
        Decimal::new(15, 3)
    );
    assert_eq!(cond(Measure::Impact, "!= 0").op, Op::Ne);
    for (m, bad) in [
        (Measure::Violations, "10"),
        (Measure::Violations, "> 1.5"),
        (Measure::Violations, "> 5%"),
        (Measure::Fraction, "> 2"),
        (Measure::Impact, "> -1"),
        (Measure::Impact, "=> 3"),
    ] {
        assert!(parse_condition(m, bad).is_err(), "{bad}");
    }
}

#[test]
fn a_rule_warns_until_its_error_threshold_is_crossed() {
    let t = Thresholds {
        warn_if: None,
        error_if: Some(vec![
            cond(Measure::Violations, "> 10"),
            cond(Measure::Impact, "> 1000"),
        ]),
    };
    assert_eq!(t.status(&tally(0, 100, 0)), RuleStatus::Pass);
    assert_eq!(t.status(&tally(3, 100, 500)), RuleStatus::Warn);
    assert_eq!(t.status(&tally(11, 100, 500)), RuleStatus::Error);
    // Either condition is enough.
    assert_eq!(t.status(&tally(2, 100, 5000)), RuleStatus::Error);
    assert_eq!(
        t.reasons(&tally(2, 100, 5000), RuleStatus::Error),
        ["impact > 1000"]
    );
    // warn_if alone: below it the rule passes, and it never is an error.
    let w = Thresholds {
        warn_if: Some(vec![cond(Measure::Fraction, "> 1%")]),
        error_if: None,
    };
    assert_eq!(w.status(&tally(1, 1000, 0)), RuleStatus::Pass);
    // With the keys judged not known (no full sweep of this rule version yet), a fraction
    // says nothing: not 100 %.
    assert_eq!(w.status(&tally(20, 0, 0)), RuleStatus::Pass);
    assert_eq!(w.status(&tally(20, 1000, 0)), RuleStatus::Warn);
    assert_eq!(
        effective_severity(Severity::Critical, RuleStatus::Warn),
        Some(Severity::Warning)
    );
    assert_eq!(
        effective_severity(Severity::Info, RuleStatus::Warn),
        Some(Severity::Info)
    );
    assert_eq!(
        effective_severity(Severity::Critical, RuleStatus::Error),
        Some(Severity::Critical)
    );
}

fn any_condition() -> impl Strategy<Value = Condition> {
    (0..3usize, 0..6usize, 0u32..200).prop_map(|(m, o, v)| {
        let measure = [Measure::Violations, Measure::Fraction, Measure::Impact][m];
        let op = [Op::Gt, Op::Ge, Op::Lt, Op::Le, Op::Eq, Op::Ne][o];
        let value = match measure {
            Measure::Fraction => Decimal::from(v % 101) / Decimal::ONE_HUNDRED,
            _ => Decimal::from(v),
        };
        Condition { measure, op, value }
    })
}

proptest! {
    /// Without thresholds a violation is an error, as always; with them no violation is a
    /// pass, an error_if that holds is an error whatever warn_if says, and a rule whose
    /// conditions all say "more than" never goes down as its violations and impact grow.
    #[test]
    fn statuses_follow_the_conditions(
        warn in proptest::option::of(proptest::collection::vec(any_condition(), 1..3)),
        error in proptest::option::of(proptest::collection::vec(any_condition(), 1..3)),
        violations in 0u64..300,
        judged in 0u64..300,
        impact in 0i64..300,
        more in 0u64..50,
    ) {
        let t = Thresholds { warn_if: warn.clone(), error_if: error.clone() };
        let at = tally(violations, judged.max(violations), impact);
        let s = t.status(&at);
        if violations == 0 {
            prop_assert_eq!(s, RuleStatus::Pass);
        } else if !t.is_set() {
            prop_assert_eq!(s, RuleStatus::Error);
        } else if error.as_ref().is_some_and(|e| !t.reasons(&at, RuleStatus::Error).is_empty() && !e.is_empty()) {
            prop_assert_eq!(s, RuleStatus::Error);
        }
        prop_assert!(s != RuleStatus::Unknown);
        let rising = |c: &Vec<Condition>| c.iter().all(|c| matches!(c.op, Op::Gt | Op::Ge) && c.measure != Measure::Fraction);
        if warn.as_ref().is_none_or(rising) && error.as_ref().is_none_or(rising) {
            let grown = tally(violations + more, judged.max(violations + more), impact + more as i64);
            prop_assert!(t.status(&grown) >= s);
        }
    }
}

#[test]
fn thresholds_are_checked_where_they_are_written() {
    let (rules, errors) = crate::rules::tests::load(
        r#"
name: counted
key: id
datasets: { o: { source: orders, query: "SELECT id, total FROM orders" } }
assert: o.total > 0
impact: { value: o.total, unit: cents }
warn_if: { violations: "> 0" }
error_if: { violations: "> 10", fraction: "> 5%", impact: ">= 100000" }
---
name: wrong
key: id
datasets: { o: { source: orders, query: "SELECT id, total FROM orders" } }
assert: o.total > 0
warn_if: { violations: 10, count: 3 }
error_if: { impact: "> 5" }
---
name: empty
key: id
datasets: { o: { source: orders, query: "SELECT id, total FROM orders" } }
assert: o.total > 0
error_if: {}
"#,
    );
    insta::assert_snapshot!(errors.join("\n"));
    assert_eq!(rules.len(), 1);
    let t = &rules[0].thresholds;
    assert_eq!(t.warn_if.as_ref().unwrap().len(), 1);
    let error_if: Vec<String> = t
        .error_if
        .as_ref()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        error_if,
        ["violations > 10", "fraction > 0.05", "impact >= 100000"]
    );
}
