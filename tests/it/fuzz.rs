//! Fuzzing the loaders with proptest (cargo-fuzz needs a nightly toolchain, which CI does not
//! have): the config loader, the rule loader, and the expression parser, compiler, type
//! checker and evaluator (through each rule's `tests:` cases), on mutations of a committed seed
//! corpus — `tests/fuzz/` and the shipped rule pack. Nothing may panic or hang, and every
//! rejection names the file and a line within it.
//!
//! CI runs `FUZZ_CASES` seeded cases per target. `INVARIANTD_FUZZ_CASES=40000
//! INVARIANTD_FUZZ_SEED=7 cargo test fuzz` runs more, from another seed;
//! `INVARIANTD_FUZZ_LAST=file` keeps the input being tried (figures in the README).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

/// Cases per target in CI: a few seconds each.
const FUZZ_CASES: u32 = 1500;
/// A case taking longer than this is a hang.
const HANG: Duration = Duration::from_secs(5);

fn cases() -> u32 {
    std::env::var("INVARIANTD_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(FUZZ_CASES)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

/// Pieces that make parsers work: YAML and expression punctuation, templates, variables,
/// extreme numbers and durations, odd Unicode and bytes that are not UTF-8.
const TOKENS: &[&str] = &[
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\n",
    "\n  ",
    "  ",
    "'",
    "\"",
    "#",
    "&a",
    "*a",
    "!!str",
    "---",
    "|",
    ">-",
    "${PW}",
    "${",
    "{{",
    "}}",
    "{{key}}",
    "(",
    ")",
    "&&",
    "||",
    "!",
    ".",
    "==",
    "<=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "?",
    "in",
    "null",
    "true",
    "1e400",
    "-9223372036854775808",
    "99999999999999999999",
    "0.000000000000000000000000001",
    "400000000000y",
    "25d",
    "0s",
    "30m",
    "1h",
    "duration('",
    "timestamp('",
    "decimal('",
    "\u{202e}",
    "\u{0}",
    "\u{1b}[2J",
    "é",
    "𝄞",
    "\u{feff}",
    "\\",
    "\\u0000",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, usize),
    Delete(usize, usize),
    Replace(usize, usize),
    Byte(usize, u8),
    Splice(usize, usize, usize),
    Repeat(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Replace(at, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Byte(at, b)),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(a, b, c)| Mutation::Splice(a, b, c)),
        (any::<usize>(), 1usize..30, 2usize..200).prop_map(|(at, n, k)| Mutation::Repeat(at, n, k)),
    ]
}

/// A seed (by index) changed by a few mutations; `others` gives splice material.
fn mutate(seed: &[u8], others: &[Vec<u8>], mutations: &[Mutation]) -> Vec<u8> {
    let mut s = seed.to_vec();
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *m {
            Mutation::Insert(i, t) => {
                let p = at(i, s.len());
                s.splice(p..p, TOKENS[t].bytes());
            }
            Mutation::Delete(i, n) => {
                let p = at(i, s.len());
                let end = (p + n).min(s.len());
                s.drain(p..end);
            }
            Mutation::Replace(i, t) => {
                let p = at(i, s.len());
                let end = (p + TOKENS[t].len()).min(s.len());
                s.splice(p..end, TOKENS[t].bytes());
            }
            Mutation::Byte(i, b) => {
                if !s.is_empty() {
                    let p = i % s.len();
                    s[p] = b;
                }
            }
            Mutation::Splice(i, j, k) => {
                let other = &others[j % others.len()];
                if !other.is_empty() {
                    let from = k % other.len();
                    let to = (from + 1 + k % 64).min(other.len());
                    let p = at(i, s.len());
                    s.splice(p..p, other[from..to].iter().copied());
                }
            }
            Mutation::Repeat(i, n, k) => {
                let p = at(i, s.len());
                let end = (p + n).min(s.len());
                let piece = s[p..end].to_vec();
                for _ in 0..k {
                    s.splice(p..p, piece.iter().copied());
                }
            }
        }
    }
    s
}

/// Every diagnostic names `file` and a line within the text (or 0 for the whole file).
fn located(diags: &invariantd::diag::Diagnostics, file: &Path, text: &str) {
    // Lines as YAML counts them: a CR alone ends a line too.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u64;
    for d in &diags.0 {
        assert_eq!(d.file, file, "{d}");
        assert!(d.line <= lines + 1, "line {} of {lines}: {d}", d.line);
        assert!(!d.message.is_empty(), "{d}");
    }
}

fn run_target(
    name: &str,
    seeds: Vec<Vec<u8>>,
    check: impl Fn(&[u8]) + std::panic::RefUnwindSafe,
) -> (u32, Duration) {
    let started = Instant::now();
    // The same cases at every run, so that CI is repeatable; a longer local run covers more.
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig {
            cases: cases(),
            failure_persistence: None,
            ..ProptestConfig::default()
        },
        match std::env::var("INVARIANTD_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(seed) => TestRng::from_seed(RngAlgorithm::ChaCha, &seed.to_le_bytes().repeat(4)),
            None => TestRng::deterministic_rng(RngAlgorithm::ChaCha),
        },
    );
    let strategy = (0..seeds.len(), proptest::collection::vec(mutation(), 0..8));
    let result = runner.run(&strategy, |(seed, mutations)| {
        let input = mutate(&seeds[seed], &seeds, &mutations);
        // A stack overflow aborts the process: the input it was on is left in this file.
        if let Ok(path) = std::env::var("INVARIANTD_FUZZ_LAST") {
            std::fs::write(path, &input).unwrap();
        }
        let began = Instant::now();
        check(&input);
        prop_assert!(
            began.elapsed() < HANG,
            "{name}: a case took {:?}: {:?}",
            began.elapsed(),
            String::from_utf8_lossy(&input)
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    (cases(), started.elapsed())
}

fn config_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn fuzz_the_config_loader() {
    let corpus = seeds(&root().join("tests/fuzz/config"));
    let file = Path::new("fuzz/invariantd.yaml");
    run_target("config", corpus, |input| {
        let text = config_text(input);
        if let Err(diags) = invariantd::config::parse(file, &text, &|_| Some("pw".into())) {
            assert!(!diags.0.is_empty());
            located(&diags, file, &text);
            // Every config error has its line: something in the file is wrong, somewhere.
            for d in &diags.0 {
                assert!(d.line >= 1, "no line: {d}\n{text}");
            }
        }
    });
}

const SOURCES: &str = "sources:\n  orders: { url: \"sqlite://o.db\" }\n  payments: { url: \"sqlite://p.db\" }\n  inventory: { url: \"sqlite://i.db\" }\n  shipping: { url: \"sqlite://s.db\" }\n  a: { url: \"sqlite://a.db\" }\n  b: { url: \"sqlite://b.db\" }\nrules: [rules/]\n";

fn check_rules(input: &[u8], runtime: &tokio::runtime::Runtime) {
    let config =
        invariantd::config::parse(Path::new("invariantd.yaml"), SOURCES, &|_| None).unwrap();
    let file = Path::new("fuzz/rules.yaml");
    let text = config_text(input);
    let mut diags = invariantd::diag::Diagnostics::default();
    let rules = invariantd::rules::parse_file(file, &text, &config, &|_| None, &mut diags);
    located(&diags, file, &text);
    // Whatever loads also evaluates: its cases run through the engine and the evaluator.
    runtime.block_on(invariantd::rule_tests::run(&rules));
}

#[test]
fn fuzz_the_rule_loader_and_the_rules_tests() {
    let corpus = seeds(&root().join("examples/shop/rules"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    run_target("rules", corpus, |input| check_rules(input, &runtime));
}

#[test]
fn fuzz_expressions_through_parse_compile_type_check_and_evaluation() {
    let text = std::fs::read_to_string(root().join("tests/fuzz/expr/seeds.txt")).unwrap();
    let corpus: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    run_target("expressions", corpus, |input| {
        // The expression as a rule's assertion and message, with a case that evaluates it.
        let expr = String::from_utf8_lossy(input).replace(['\n', '\r'], " ");
        let quoted = serde_json::to_string(&expr).unwrap();
        let rule = format!(
            "name: fuzz\nkey: id\ndatasets:\n  a: {{ source: a, query: \"SELECT id, ok, total, status, note, updated_at FROM a\", updated_at: updated_at }}\n  b: {{ source: b, query: \"SELECT id, amount FROM b\", many: true }}\nassert: {quoted}\nmessage: {}\ntests:\n  - name: case\n    now: \"2026-01-01T12:00:00Z\"\n    given:\n      a: [{{ id: 1, ok: 1, total: \"10.50\", status: paid, note: xé, updated_at: \"2026-01-01T11:00:00Z\" }}, {{ id: 2, ok: 0, total: null, status: null, note: \"\", updated_at: \"2026-01-01T11:59:00Z\" }}]\n      b: [{{ id: 1, amount: 10.5 }}, {{ id: 1, amount: -3 }}, {{ id: 3, amount: 0 }}]\n    expect: pass\n",
            serde_json::to_string(&format!("{{{{{expr}}}}}")).unwrap()
        );
        check_rules(rule.as_bytes(), &runtime);
    });
}
