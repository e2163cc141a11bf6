//! Selecting rules as dbt users do: `check`, `test`, `validate` and the API's lists take
//! selectors. A selection is a union of selectors (`--select` given several times, or several
//! selectors separated by spaces); a selector is an intersection of terms joined by commas;
//! `--exclude` takes the same syntax and removes what it selects. A term is
//!
//! - `NAME` or `name:NAME`: rules by name; `*` and `?` are wildcards;
//! - `KEY=VALUE` or `label:KEY=VALUE`: rules with that label (the value may have wildcards);
//!   `label:KEY` for any value;
//! - `path:PATH` (or a bare term with a `/` or ending in `.yaml`/`.yml`): the rules of a
//!   file, or of every file under a directory;
//! - `severity:LEVEL`: rules of that severity.
//!
//! A term that selects no rule is an error (a misspelt name, an unknown label), and so is a
//! selection that ends up empty: a run that quietly does nothing would pass in CI.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::{Rule, Severity};

/// A parsed selection: what to include (everything when empty) and what to leave out.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Vec<Selector>,
    exclude: Vec<Selector>,
}

/// Terms that must all hold, and the text they came from.
#[derive(Debug, Clone)]
struct Selector {
    text: String,
    terms: Vec<Term>,
}

#[derive(Debug, Clone)]
enum Term {
    Name(Glob),
    Label {
        key: String,
        value: Option<Glob>,
    },
    /// As written, and as resolved to compare with the rules' files.
    Path {
        given: String,
        path: PathBuf,
    },
    Severity(Severity),
}

/// A pattern with `*` (any text) and `?` (one character), matched against the whole text.
#[derive(Debug, Clone)]
struct Glob {
    text: String,
    re: Regex,
}

impl Glob {
    fn new(text: &str) -> Glob {
        let mut re = String::from("^");
        for c in text.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        Glob {
            text: text.to_string(),
            re: Regex::new(&re).expect("an escaped pattern is a valid regex"),
        }
    }

    fn matches(&self, text: &str) -> bool {
        self.re.is_match(text)
    }
}

impl Selection {
    /// Parses `--select` and `--exclude` values; each value may hold several selectors
    /// separated by spaces. An error says which selector is wrong and why.
    pub fn parse(include: &[String], exclude: &[String]) -> Result<Selection, String> {
        let selectors = |values: &[String]| -> Result<Vec<Selector>, String> {
            values
                .iter()
                .flat_map(|v| v.split_whitespace())
                .map(Selector::parse)
                .collect()
        };
        Ok(Selection {
            include: selectors(include)?,
            exclude: selectors(exclude)?,
        })
    }

    /// Whether the selection selects every rule (no selector given).
    pub fn is_all(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Makes each `path:` term absolute as `resolve` says, to compare with the rules' files
    /// resolved the same way.
    fn resolve_paths(&mut self, resolve: impl Fn(&Path) -> PathBuf) {
        for selector in self.include.iter_mut().chain(&mut self.exclude) {
            for term in &mut selector.terms {
                if let Term::Path { given, path } = term {
                    *path = resolve(Path::new(given));
                }
            }
        }
    }

    /// The selected rules, in their order, or `None` when no selector was given; `path:`
    /// terms relative to `base` (the working directory when `None`). The files are compared
    /// with symbolic links resolved.
    pub fn select<'r>(
        mut self,
        rules: &'r [Rule],
        base: Option<&Path>,
    ) -> Result<Option<Vec<&'r Rule>>, String> {
        if self.is_all() {
            return Ok(None);
        }
        let resolve = |p: &Path| {
            std::fs::canonicalize(p)
                .or_else(|_| std::path::absolute(p))
                .unwrap_or_else(|_| p.to_path_buf())
        };
        self.resolve_paths(|p| match base {
            Some(base) if p.is_relative() => resolve(&base.join(p)),
            _ => resolve(p),
        });
        // The rules' files are looked up on disk only when a `path:` term needs them: the API
        // selects on every request.
        let by_path = self
            .include
            .iter()
            .chain(&self.exclude)
            .flat_map(|s| &s.terms)
            .any(|t| matches!(t, Term::Path { .. }));
        let files: Vec<PathBuf> = rules
            .iter()
            .map(|r| {
                if by_path {
                    resolve(&r.origin.file)
                } else {
                    r.origin.file.clone()
                }
            })
            .collect();
        self.apply(rules, &files).map(Some)
    }

    /// The selected rules, in their order, given each rule's file (`files[i]` for
    /// `rules[i]`, resolved as the `path:` terms were). A term that selects no rule, or a
    /// selection left empty, is an error naming it.
    pub fn apply<'r>(&self, rules: &'r [Rule], files: &[PathBuf]) -> Result<Vec<&'r Rule>, String> {
        for selector in self.include.iter().chain(&self.exclude) {
            for term in &selector.terms {
                if !rules.iter().zip(files).any(|(r, f)| term.matches(r, f)) {
                    return Err(match term {
                        Term::Name(g) if !g.text.contains(['*', '?']) => {
                            format!("no rule named `{}`{}", g.text, hint(term, rules))
                        }
                        _ => format!("`{}` selects no rule{}", term_text(term), hint(term, rules)),
                    });
                }
            }
        }
        let selected: Vec<&Rule> = rules
            .iter()
            .zip(files)
            .filter(|(r, f)| {
                (self.include.is_empty() || self.include.iter().any(|s| s.matches(r, f)))
                    && !self.exclude.iter().any(|s| s.matches(r, f))
            })
            .map(|(r, _)| r)
            .collect();
        if selected.is_empty() {
            let texts = |s: &[Selector]| {
                s.iter()
                    .map(|s| s.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut what = format!("--select {}", texts(&self.include));
            if self.include.is_empty() {
                what = "every rule".into();
            }
            if !self.exclude.is_empty() {
                what.push_str(&format!(" --exclude {}", texts(&self.exclude)));
            }
            return Err(format!("{what} selects no rule"));
        }
        Ok(selected)
    }
}

impl Selector {
    fn parse(text: &str) -> Result<Selector, String> {
        let terms = text
            .split(',')
            .map(|t| Term::parse(t).map_err(|e| format!("selector `{text}`: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Selector {
            text: text.to_string(),
            terms,
        })
    }

    fn matches(&self, rule: &Rule, file: &Path) -> bool {
        self.terms.iter().all(|t| t.matches(rule, file))
    }
}

impl Term {
    fn parse(text: &str) -> Result<Term, String> {
        if text.is_empty() {
            return Err("an empty term (two commas, or a comma at an end)".into());
        }
        let (method, arg) = match text.split_once(':') {
            Some((m, a)) if !m.contains('=') && !m.contains('/') => (Some(m), a),
            _ => (None, text),
        };
        if method.is_some() && arg.is_empty() {
            return Err(format!("`{text}` says what to select by but not what"));
        }
        Ok(match method {
            Some("name") => Term::Name(Glob::new(arg)),
            Some("label") => label(arg)?,
            Some("path" | "file") => Term::Path {
                given: arg.to_string(),
                path: PathBuf::from(arg),
            },
            Some("severity") => Term::Severity(Severity::parse(arg).ok_or_else(|| {
                format!("severity must be info, warning or critical, not `{arg}`")
            })?),
            Some(other) => {
                return Err(format!(
                    "unknown selector method `{other}:`; selectors are NAME, name:NAME, KEY=VALUE, label:KEY=VALUE, path:PATH and severity:LEVEL"
                ));
            }
            None if arg.contains('=') => label(arg)?,
            None if arg.contains('/') || arg.ends_with(".yaml") || arg.ends_with(".yml") => {
                Term::Path {
                    given: arg.to_string(),
                    path: PathBuf::from(arg),
                }
            }
            None => Term::Name(Glob::new(arg)),
        })
    }

    fn matches(&self, rule: &Rule, file: &Path) -> bool {
        match self {
            Term::Name(g) => g.matches(&rule.name),
            Term::Label { key, value } => rule
                .labels
                .iter()
                .any(|(k, v)| k == key && value.as_ref().is_none_or(|g| g.matches(v))),
            Term::Path { path, .. } => file.starts_with(path),
            Term::Severity(s) => rule.severity == *s,
        }
    }
}

fn label(arg: &str) -> Result<Term, String> {
    let (key, value) = match arg.split_once('=') {
        Some((k, v)) => (k, Some(Glob::new(v))),
        None => (arg, None),
    };
    if key.is_empty() {
        return Err(format!("`{arg}` names no label"));
    }
    Ok(Term::Label {
        key: key.to_string(),
        value,
    })
}

fn term_text(term: &Term) -> String {
    match term {
        Term::Name(g) => g.text.clone(),
        Term::Label { key, value: None } => format!("label:{key}"),
        Term::Label {
            key,
            value: Some(v),
        } => format!("{key}={}", v.text),
        Term::Path { given, .. } => format!("path:{given}"),
        Term::Severity(s) => format!("severity:{}", s.as_str()),
    }
}

/// What there is to select, for the error of a term that selects nothing.
fn hint(term: &Term, rules: &[Rule]) -> String {
    match term {
        Term::Name(_) => {
            let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
            format!("; rules: {}", names.join(", "))
        }
        Term::Label { .. } => {
            let mut labels: Vec<String> = rules
                .iter()
                .flat_map(|r| r.labels.iter().map(|(k, v)| format!("{k}={v}")))
                .collect();
            labels.sort();
            labels.dedup();
            if labels.is_empty() {
                "; no rule has labels".into()
            } else {
                format!("; labels: {}", labels.join(", "))
            }
        }
        Term::Path { .. } => "; no rule file is there".into(),
        Term::Severity(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A rule of this name, labels and severity, from this file.
    fn rule(name: &str, labels: &[(&str, &str)], severity: &str, file: &str) -> Rule {
        let config = crate::config::parse(
            Path::new("invariantd.yaml"),
            "sources:\n  db: { url: \"sqlite://db.db\" }\nrules: [rules/]\n",
            &|_| None,
        )
        .expect("a valid config");
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}: \"{v}\""))
            .collect();
        let text = format!(
            "name: {name}\nseverity: {severity}\nlabels: {{ {} }}\nkey: k\ndatasets:\n  a: {{ source: db, query: \"SELECT k FROM t\" }}\nassert: a == null\n",
            labels.join(", ")
        );
        let mut diags = crate::diag::Diagnostics::default();
        let mut rules =
            super::super::parse_file(Path::new(file), &text, &config, &|_| None, &mut diags);
        assert!(diags.is_empty(), "{diags}");
        rules.remove(0)
    }

    fn shop() -> Vec<Rule> {
        vec![
            rule(
                "paid_implies_reserved",
                &[("team", "inventory"), ("tier", "1")],
                "critical",
                "rules/inventory/paid.yaml",
            ),
            rule(
                "reserved_implies_paid",
                &[("team", "inventory")],
                "warning",
                "rules/inventory/reserved.yaml",
            ),
            rule(
                "shipped_implies_paid",
                &[("team", "shipping"), ("tier", "1")],
                "critical",
                "rules/shipping.yaml",
            ),
            rule("orders_fresh", &[], "info", "rules/fresh.yaml"),
        ]
    }

    fn names(rules: &[Rule], include: &[&str], exclude: &[&str]) -> Result<Vec<String>, String> {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let selection = Selection::parse(&own(include), &own(exclude))?;
        let files: Vec<PathBuf> = rules.iter().map(|r| r.origin.file.clone()).collect();
        Ok(selection
            .apply(rules, &files)?
            .iter()
            .map(|r| r.name.clone())
            .collect())
    }

    #[test]
    fn selectors_as_dbt_users_write_them() {
        let rules = shop();
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&["paid_implies_reserved"], &[], &["paid_implies_reserved"]),
            (
                &["*_implies_paid"],
                &[],
                &["reserved_implies_paid", "shipped_implies_paid"],
            ),
            (&["name:orders_fres?"], &[], &["orders_fresh"]),
            (
                &["team=inventory"],
                &[],
                &["paid_implies_reserved", "reserved_implies_paid"],
            ),
            (
                &["label:tier=1"],
                &[],
                &["paid_implies_reserved", "shipped_implies_paid"],
            ),
            (
                &["label:tier"],
                &[],
                &["paid_implies_reserved", "shipped_implies_paid"],
            ),
            (&["team=inventory,tier=1"], &[], &["paid_implies_reserved"]),
            (
                &["team=inventory orders_fresh"],
                &[],
                &[
                    "paid_implies_reserved",
                    "reserved_implies_paid",
                    "orders_fresh",
                ],
            ),
            (
                &["path:rules/inventory"],
                &["reserved_implies_paid"],
                &["paid_implies_reserved"],
            ),
            (&["rules/shipping.yaml"], &[], &["shipped_implies_paid"]),
            (
                &["severity:critical"],
                &[],
                &["paid_implies_reserved", "shipped_implies_paid"],
            ),
            (&[], &["team=*"], &["orders_fresh"]),
        ];
        for (include, exclude, expected) in cases {
            assert_eq!(
                names(&rules, include, exclude).as_deref(),
                Ok(&expected.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]),
                "--select {include:?} --exclude {exclude:?}"
            );
        }
    }

    #[test]
    fn what_selects_nothing_is_an_error_that_names_it() {
        let rules = shop();
        let err = |include: &[&str], exclude: &[&str]| names(&rules, include, exclude).unwrap_err();
        let e = err(&["paid_implies_reserve"], &[]);
        assert!(
            e.starts_with("no rule named `paid_implies_reserve`; rules: paid_implies_reserved,"),
            "{e}"
        );
        let e = err(&["*_implies_shipped"], &[]);
        assert!(
            e.starts_with("`*_implies_shipped` selects no rule; rules: "),
            "{e}"
        );
        let e = err(&["team=payments"], &[]);
        assert_eq!(
            e,
            "`team=payments` selects no rule; labels: team=inventory, team=shipping, tier=1"
        );
        // A misspelt exclusion would otherwise run what it meant to leave out.
        let e = err(&[], &["team=inventroy"]);
        assert!(e.starts_with("`team=inventroy` selects no rule"), "{e}");
        let e = err(&["path:rules/payments"], &[]);
        assert_eq!(
            e,
            "`path:rules/payments` selects no rule; no rule file is there"
        );
        // Each term selects a rule, but not together.
        let e = err(&["team=shipping,severity:info"], &[]);
        assert_eq!(e, "--select team=shipping,severity:info selects no rule");
        let e = err(&["team=inventory"], &["tier=*", "reserved_*"]);
        assert_eq!(
            e,
            "--select team=inventory --exclude tier=* reserved_* selects no rule"
        );
        for (bad, why) in [
            ("a,,b", "an empty term"),
            ("tag:nightly", "unknown selector method `tag:`"),
            ("name:", "says what to select by but not what"),
            (
                "severity:high",
                "severity must be info, warning or critical",
            ),
            ("label:=1", "names no label"),
        ] {
            let e = Selection::parse(&[bad.to_string()], &[]).unwrap_err();
            assert!(e.starts_with(&format!("selector `{bad}`: ")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn no_selector_selects_every_rule() {
        let selection = Selection::parse(&[], &[]).unwrap();
        assert!(selection.is_all());
        let rules = shop();
        assert!(selection.select(&rules, None).unwrap().is_none());
    }

    /// Terms over rules named `r0`… with labels `a` and `b` of values 0-2.
    fn term() -> impl Strategy<Value = String> {
        prop_oneof![
            (0..6usize).prop_map(|i| format!("r{i}")),
            Just("r*".to_string()),
            (0..3usize).prop_map(|v| format!("a={v}")),
            (0..3usize).prop_map(|v| format!("label:b={v}")),
            Just("label:a".to_string()),
        ]
    }

    fn labelled(spec: &[(Option<u8>, Option<u8>)]) -> Vec<Rule> {
        spec.iter()
            .enumerate()
            .map(|(i, (a, b))| {
                let mut labels = Vec::new();
                let (a, b) = (a.map(|v| v.to_string()), b.map(|v| v.to_string()));
                if let Some(a) = &a {
                    labels.push(("a", a.as_str()));
                }
                if let Some(b) = &b {
                    labels.push(("b", b.as_str()));
                }
                rule(
                    &format!("r{i}"),
                    &labels,
                    "warning",
                    &format!("rules/r{i}.yaml"),
                )
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Selectors add up, commas intersect, exclusions subtract, and the rules keep their
        /// order: checked against the sets each term selects on its own.
        #[test]
        fn selections_are_unions_of_intersections_less_exclusions(
            spec in prop::collection::vec((prop::option::of(0u8..3), prop::option::of(0u8..3)), 1..6),
            include in prop::collection::vec(prop::collection::vec(term(), 1..3), 0..3),
            exclude in prop::collection::vec(prop::collection::vec(term(), 1..3), 0..2),
        ) {
            let rules = labelled(&spec);
            let alone = |t: &str| names(&rules, &[t], &[]).unwrap_or_default();
            let join = |s: &[Vec<String>]| s.iter().map(|t| t.join(",")).collect::<Vec<_>>();
            let (inc, exc) = (join(&include), join(&exclude));
            fn as_str(v: &[String]) -> Vec<&str> {
                v.iter().map(String::as_str).collect()
            }
            let got = names(&rules, &as_str(&inc), &as_str(&exc));
            let selects = |selector: &[String], name: &String| {
                selector.iter().all(|t| alone(t).contains(name))
            };
            let expected: Vec<String> = rules
                .iter()
                .map(|r| r.name.clone())
                .filter(|n| include.is_empty() || include.iter().any(|s| selects(s, n)))
                .filter(|n| !exclude.iter().any(|s| selects(s, n)))
                .collect();
            let a_term_selects_nothing = include
                .iter()
                .chain(&exclude)
                .flatten()
                .any(|t| alone(t).is_empty());
            match got {
                Ok(got) => {
                    prop_assert!(!a_term_selects_nothing);
                    prop_assert_eq!(got, expected);
                }
                Err(_) => prop_assert!(a_term_selects_nothing || expected.is_empty()),
            }
        }
    }
}
