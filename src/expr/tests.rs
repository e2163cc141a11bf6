use super::*;
use crate::value::{Key, Value, parse_timestamp_text};

fn scope() -> Vec<(&'static str, bool, Vec<String>)> {
    vec![
        (
            "order",
            false,
            cols(&["order_id", "status", "total", "updated_at"]),
        ),
        ("payment", true, cols(&["order_id", "amount", "status"])),
        ("shipment", false, cols(&["order_id", "shipped_at"])),
    ]
}

/// The scope expressions compile in, over `scope()`'s datasets.
fn scope_of<'a>(datasets: &'a [(&'static str, bool, Vec<String>)]) -> Scope<'a> {
    Scope {
        datasets: datasets
            .iter()
            .map(|(name, many, columns)| ScopeDataset {
                name,
                many: *many,
                columns: Some(columns),
            })
            .collect(),
        previous: false,
    }
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn row(values: Vec<Value>) -> Row {
    Row {
        key: Key::Int(7),
        values: values.into(),
    }
}

fn dec(s: &str) -> Value {
    Value::Decimal(s.parse().unwrap())
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// order 7: processing, total 10.10, updated 2026-11-26T09:00Z; two payments; no shipment.
/// Each dataset's rows and whether it is `many`.
fn order_7() -> Vec<(Vec<Row>, bool)> {
    vec![
        (
            vec![row(vec![
                Value::Int(7),
                text("processing"),
                dec("10.10"),
                text("2026-11-26 09:00:00"),
            ])],
            false,
        ),
        (
            vec![
                row(vec![Value::Int(7), dec("10.1"), text("captured")]),
                row(vec![Value::Int(7), Value::Double(0.0), text("refunded")]),
            ],
            true,
        ),
        (vec![], false),
    ]
}

/// The groups of `datasets`, borrowing their rows.
fn groups(datasets: &[(Vec<Row>, bool)]) -> Vec<Group<'_>> {
    datasets
        .iter()
        .map(|(rows, many)| Group { rows, many: *many })
        .collect()
}

fn eval(src: &str) -> Result<String, String> {
    let datasets = scope();
    let scope = scope_of(&datasets);
    let ast = parse(src).map_err(|e| format!("parse: {}", e.message))?;
    let program = compile(&ast, &scope).map_err(|es| {
        es.iter()
            .map(|e| format!("compile@{}: {}", e.span.start, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let rows = order_7();
    let groups = groups(&rows);
    let key = Key::Int(7);
    let env = Env {
        now: parse_timestamp_text("2026-11-26T09:30:00Z").unwrap(),
        key: &key,
        groups: &groups,
        missing_is_null: false,
        previous: None,
    };
    program
        .eval(&env)
        .map(|v| v.display())
        .map_err(|e| format!("eval: {}", e.message))
}

#[track_caller]
fn check(src: &str, want: &str) {
    assert_eq!(eval(src).as_deref(), Ok(want), "{src}");
}

#[test]
fn null_checks_and_rows() {
    check("order != null", "true");
    check("shipment == null", "true");
    check("payment == null", "false");
    check("size(payment)", "2");
    check("payment.size() == 2", "true");
    check("key == 7", "true");
}

#[test]
fn decimals_are_exact_and_mix_with_ints_and_doubles() {
    check("order.total == payment[0].amount", "true");
    check("decimal('0.10') == 0.1", "true");
    check("decimal('0.1') + decimal('0.2') == decimal('0.3')", "true");
    check("order.total * 3", "30.3");
    check("order.total > 10", "true");
    check("payment[1].amount == 0", "true");
}

#[test]
fn timestamps_durations_and_text_timestamps() {
    check("now - order.updated_at", "30m");
    check(
        "duration(string(now - order.updated_at)) == duration('30m')",
        "true",
    );
    check("now - order.updated_at > duration('15m')", "true");
    check("order.updated_at < now", "true");
    check(
        "timestamp('2026-11-26T09:00:00Z') == timestamp(order.updated_at)",
        "true",
    );
    check("duration('1h30m') == duration('90m')", "true");
    check("order.updated_at + duration('1h')", "2026-11-26T10:00:00Z");
}

#[test]
fn logic_absorbs_errors_like_cel() {
    // shipment has no row: its field is an error, but the other side decides.
    check("shipment == null || shipment.shipped_at < now", "true");
    check("shipment.shipped_at < now || true", "true");
    check("false && shipment.shipped_at < now", "false");
    assert!(
        eval("shipment.shipped_at < now || false")
            .unwrap_err()
            .contains("no row")
    );
}

#[test]
fn macros_bind_rows() {
    check("payment.exists(p, p.status == 'refunded')", "true");
    check("payment.all(p, p.amount > 0)", "false");
    check("payment.exists_one(p, p.status == 'captured')", "true");
    check("size(payment.filter(p, p.status == 'captured'))", "1");
    check(
        "payment.filter(p, p.amount > 0).all(q, q.status == 'captured')",
        "true",
    );
    check("payment.map(p, p.status)", "[captured, refunded]");
    check("order.status in ['processing', 'paid']", "true");
}

#[test]
fn strings() {
    check(
        "order.status.startsWith('proc') && order.status.contains('ess')",
        "true",
    );
    check("order.status.matches('^pro.*ing$')", "true");
    check("'a' + order.status.upperAscii()", "aPROCESSING");
    check("size('héllo')", "5");
    check("'B' < 'a'", "true");
}

#[test]
fn type_mismatches_are_errors_not_false() {
    assert_eq!(
        eval("order.status == 1").unwrap_err(),
        "eval: no such overload: string == int"
    );
    assert_eq!(
        eval("order.total < 'x'").unwrap_err(),
        "eval: no such overload: decimal < string"
    );
    assert_eq!(eval("1 / 0").unwrap_err(), "eval: division by zero");
    assert_eq!(
        eval("9223372036854775807 + 1").unwrap_err(),
        "eval: integer overflow"
    );
}

#[test]
fn compile_errors_name_what_exists() {
    assert_eq!(
        eval("paymnt == null").unwrap_err(),
        "compile@0: unknown name `paymnt`; did you mean `payment`? (datasets: order, payment, shipment; also `now` and `key`)"
    );
    assert_eq!(
        eval("order.totl > 0").unwrap_err(),
        "compile@6: dataset `order` has no column `totl`; did you mean `total`? its query returns: order_id, status, total, updated_at"
    );
    assert!(
        eval("payment.amount > 0")
            .unwrap_err()
            .contains("is a list of rows (many: true)")
    );
    assert_eq!(
        eval("duration('15 minutes')").unwrap_err(),
        "compile@9: invalid duration `15 minutes`: expected a form like `15m`, `1h30m` or `90s`"
    );
    assert_eq!(
        eval("sise(payment)").unwrap_err(),
        "compile@0: unknown function `sise`; did you mean `size`?"
    );
    // Every error, not the first.
    assert_eq!(
        eval("a == b").unwrap_err().matches("unknown name").count(),
        2
    );
}

#[test]
fn templates_render_values_and_report_errors_with_offsets() {
    let datasets = scope();
    let scope = scope_of(&datasets);
    let t = Template::compile(
        "order {{key}}: {{ order.total }} due, {{size(payment)}} payments",
        &scope,
    )
    .unwrap();
    let rows = order_7();
    let groups = groups(&rows);
    let key = Key::Int(7);
    let env = Env {
        now: 0,
        key: &key,
        groups: &groups,
        missing_is_null: false,
        previous: None,
    };
    assert_eq!(t.render(&env), "order 7: 10.10 due, 2 payments");
    let errs = Template::compile("{{key}} {{ order.nope }}", &scope).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].offset, 17);
    let errs = Template::compile("{{key", &scope).unwrap_err();
    assert_eq!(errs[0].message, "`{{` is never closed with `}}`");
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("15m"), Ok(900_000_000));
    assert_eq!(parse_duration("1.5s"), Ok(1_500_000));
    assert_eq!(parse_duration("-1h"), Ok(-3_600_000_000));
    assert!(parse_duration("15").is_err());
    assert!(parse_duration("m").is_err());
}

#[test]
fn a_message_reading_a_row_that_is_not_there_says_null() {
    let columns = vec!["total".to_string()];
    let scope = Scope {
        datasets: vec![ScopeDataset {
            name: "order",
            many: false,
            columns: Some(&columns),
        }],
        previous: false,
    };
    let t = Template::compile("order {{key}}: total {{order.total}}", &scope).unwrap();
    let groups = vec![Group {
        rows: &[],
        many: false,
    }];
    let key = Key::Int(7);
    let env = Env {
        now: 0,
        key: &key,
        groups: &groups,
        missing_is_null: false,
        previous: None,
    };
    assert_eq!(t.render(&env), "order 7: total null");
    // The assertion itself still treats it as an error: `!= null` must be checked first.
    let program = compile(&parse("order.total > 0").unwrap(), &scope).unwrap();
    assert!(program.eval_bool(&env).is_err());
}

#[test]
fn expressions_too_deep_for_a_stack_are_refused_with_a_position() {
    let chain = |op: &str, n: usize| {
        (1..=n)
            .map(|i| format!("key == '{i}'"))
            .collect::<Vec<_>>()
            .join(op)
    };
    for (text, what) in [
        (format!("{}true", "!".repeat(11_000)), "11,000 `!`"),
        (chain(" && ", 3_000), "3,000 `&&`"),
        (chain(" || ", 2_000), "2,000 `||`"),
        (format!("a{}", ".f".repeat(10_500)), "10,500 `.field`"),
        (
            format!("{}1{}", "(".repeat(5_000), ")".repeat(5_000)),
            "5,000 parentheses",
        ),
    ] {
        let e = parse(&text).expect_err(what);
        let expected = if what.contains("parentheses") {
            "32 brackets"
        } else {
            "levels deep"
        };
        assert!(e.message.contains(expected), "{what}: {}", e.message);
    }
    let e = parse(&format!("key == '{}'", "x".repeat(70_000))).unwrap_err();
    assert!(
        e.message
            .starts_with("expression is 70009 bytes long; at most 65536"),
        "{}",
        e.message
    );
    // The same alternatives as a list are flat, and fine.
    let items: Vec<String> = (1..=2_000).map(|i| format!("'{i}'")).collect();
    assert!(parse(&format!("string(key) in [{}]", items.join(", "))).is_ok());
}

/// Parses, compiles and evaluates `text` (for `key`) on a thread with tokio's default
/// worker stack, as the daemon would.
fn judge_on_worker_stack(text: String, key: i64) -> Result<bool, ParseError> {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            parse(&text).map(|e| {
                let program = compile(&e, &Scope::default()).unwrap();
                let key = Key::Int(key);
                let env = Env {
                    now: 0,
                    key: &key,
                    groups: &[],
                    missing_is_null: false,
                    previous: None,
                };
                program.eval_bool(&env).unwrap()
            })
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn whatever_parses_also_compiles_and_evaluates_on_a_small_worker_stack() {
    // The deepest chain that loads.
    let text = (1..=99)
        .map(|i| format!("key == {i}"))
        .collect::<Vec<_>>()
        .join(" || ");
    assert_eq!(judge_on_worker_stack(text, 99), Ok(true));
}

#[test]
fn nested_brackets_are_bounded_so_parsing_fits_a_small_worker_stack() {
    // Found by fuzzing: 100 unclosed calls, each holding an `||` and a comparison, overflowed
    // a 2 MiB stack in the debug build while the parser went down.
    let run = |text: String| judge_on_worker_stack(text, 1);
    let unclosed = format!("(a.to{}", "|| b.total >= decimao(to".repeat(100));
    let e = run(unclosed).unwrap_err();
    assert!(e.message.contains("more than 32 brackets"), "{}", e.message);
    // The deepest nesting that loads also compiles and evaluates there.
    let deepest = format!("{}key == 1{}", "(key == 0 || ".repeat(32), ")".repeat(32));
    assert_eq!(run(deepest), Ok(true));
    let e = run(format!(
        "{}key == 1{}",
        "(key == 0 || ".repeat(33),
        ")".repeat(33)
    ))
    .unwrap_err();
    assert!(e.message.contains("more than 32 brackets"), "{}", e.message);
}

#[test]
fn negating_the_most_negative_int_is_an_overflow_not_a_panic() {
    // Found by fuzzing: folding `- -9223372036854775808` panicked in the parser.
    let e = eval("- -9223372036854775808 == 0").unwrap_err();
    assert!(e.contains("overflow"), "{e}");
    check("-9223372036854775808 < 0", "true");
}

/// `abs` for assertions and impacts over signed amounts: of each number type and durations,
/// keeping the type; overflow and non-numbers are errors, never a wrong value.
#[test]
fn abs_of_signed_amounts_keeps_the_type() {
    check("abs(-3)", "3");
    check("abs(3)", "3");
    check("abs(-2.5)", "2.5");
    check("abs(decimal('-10.10'))", "10.10");
    check("abs(order.total - 20) > 9", "true");
    check("(order.total - 20).abs() == decimal('9.90')", "true");
    check("abs(duration('-90s')) == duration('90s')", "true");
    assert!(
        eval("abs(-9223372036854775807 - 1)")
            .unwrap_err()
            .contains("overflow")
    );
    assert!(eval("abs('x')").unwrap_err().contains("no such overload"));
}

/// `size(D) OP n` over a `many` dataset counts the rows in place: the same results, steps and
/// budget as the general path (`size(D) + 0 OP n` is not specialised; it costs two steps more).
#[test]
fn counting_rows_in_place_agrees_with_the_general_path() {
    let datasets = scope();
    let scope = scope_of(&datasets);
    let program = |src: &str| compile(&parse(src).unwrap(), &scope).unwrap();
    let key = Key::Int(7);
    for rows in [0, 1, 2, 3] {
        let mut datasets = order_7();
        datasets[1].0.truncate(rows.min(2));
        if rows == 3 {
            let extra = datasets[1].0[0].clone();
            datasets[1].0.push(extra);
        }
        let groups = groups(&datasets);
        let env = Env {
            now: 0,
            key: &key,
            groups: &groups,
            missing_is_null: false,
            previous: None,
        };
        for op in ["==", "!=", "<", "<=", ">", ">="] {
            for n in [0, 1, 2, 3] {
                let fast = program(&format!("size(payment) {op} {n}"));
                assert!(matches!(fast.root, compile::Node::RowCount { .. }), "{op}");
                let slow = program(&format!("size(payment) + 0 {op} {n}"));
                let (a, b) = (fast.eval_within(&env, 100), slow.eval_within(&env, 100));
                assert_eq!(
                    a.result.map(|v| v.display()),
                    b.result.map(|v| v.display()),
                    "{rows} rows, {op} {n}"
                );
                assert_eq!(a.steps + 2, b.steps);
            }
        }
        // The budget: four steps are enough, three are not.
        let fast = program("size(payment) > 0");
        assert_eq!(fast.eval_within(&env, 4).steps, 4);
        assert!(!fast.eval_within(&env, 4).exhausted);
        let short = fast.eval_within(&env, 3);
        assert!(short.exhausted && short.result.is_err());
        assert_eq!(short.steps, 3);
    }
    // Not a `many` dataset, or not an integer literal: the general path, and its errors.
    assert!(!matches!(
        program("size(order) == 0").root,
        compile::Node::RowCount { .. }
    ));
    assert!(!matches!(
        program("size(payment) == 1.0").root,
        compile::Node::RowCount { .. }
    ));
    assert_eq!(
        eval("size(order) == 0").unwrap_err(),
        "eval: no such overload: size(row)"
    );
}

/// An assertion of row counts as source text: `size(a) OP n`, `!`, `&&`, `||` over two
/// `many` datasets.
fn counts_source() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let leaf = (
        prop::sample::select(vec!["a", "b"]),
        prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]),
        0i64..4,
    )
        .prop_map(|(ds, op, n)| format!("size({ds}) {op} {n}"));
    leaf.prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| format!("!({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("({a}) || ({b})")),
        ]
    })
}

proptest::proptest! {
    /// Judged from the row counts, an assertion of counts has the value, the steps and the
    /// budget of the general evaluation, short-circuits included.
    #[test]
    fn assertions_of_row_counts_judge_as_the_general_path(
        source in counts_source(),
        sizes in (0usize..4, 0usize..4),
        slack in 0u64..3,
    ) {
        let datasets = vec![("a", true, cols(&["id"])), ("b", true, cols(&["id"]))];
        let scope = scope_of(&datasets);
        let program = compile(&parse(&source).unwrap(), &scope).unwrap();
        let worst = program.counts.as_ref().expect("an assertion of counts").1;
        let rows = |n: usize| ((0..n).map(|i| row(vec![Value::Int(i as i64)])).collect(), true);
        let datasets = vec![rows(sizes.0), rows(sizes.1)];
        let groups = groups(&datasets);
        let key = Key::Int(1);
        let env = Env { now: 0, key: &key, groups: &groups, missing_is_null: false, previous: None };
        // Over the worst case, the count path; at any budget, the general path beside it.
        for budget in [worst + slack, worst.saturating_sub(slack)] {
            let fast = program.eval_bool_within(&env, budget);
            let slow = program.eval_within(&env, budget);
            let slow_value = slow.result.map(|v| match v {
                Val::Bool(b) => b,
                other => panic!("{source}: {}", other.display()),
            });
            proptest::prop_assert_eq!(fast.result.is_ok(), slow_value.is_ok(), "{}", source);
            if let (Ok(a), Ok(b)) = (&fast.result, &slow_value) {
                proptest::prop_assert_eq!(a, b, "{} with {:?}", source, sizes);
            }
            proptest::prop_assert_eq!(fast.steps, slow.steps, "{} with {:?}", source, sizes);
            proptest::prop_assert_eq!(fast.exhausted, slow.exhausted, "{}", source);
        }
    }
}
