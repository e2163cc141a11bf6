//! The module structure the README's architecture section promises: data flows one way, and a
//! module imports only the modules before it in `ORDER`. Read from the sources, so a new import
//! against the flow fails here rather than in review.

use std::path::{Path, PathBuf};

/// Every top-level module, in the order data flows (see the README's architecture section).
const ORDER: [&str; 25] = [
    "value",
    "diag",
    "yaml",
    "verdict",
    "config",
    "outbound",
    "expr",
    "rules",
    "sources",
    "engine",
    "scheduler",
    "state",
    "metrics",
    "alert",
    "repair",
    "auth",
    "context",
    "http",
    "daemon",
    "cli",
    "telemetry",
    "report",
    "rule_tests",
    "demo",
    "app",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/engine/merge.rs` → `engine`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first
        .as_os_str()
        .to_str()?
        .trim_end_matches(".rs")
        .to_string();
    (name != "lib" && name != "main").then_some(name)
}

#[test]
fn modules_import_only_the_modules_before_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |m: &str| ORDER.iter().position(|o| *o == m);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = rank(&module) else {
            wrong.push(format!(
                "{}: module `{module}` is not in ORDER",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            !text.contains("crate::{"),
            "{}: name imported modules one per path (`crate::a::…`) so this test can read them",
            file.display()
        );
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            match rank(&name) {
                Some(r) if r > own => wrong.push(format!(
                    "{}: `{module}` imports `{name}`, which comes after it",
                    file.display()
                )),
                // Macros exported at the crate root and the like are not modules.
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_module_says_what_it_owns() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap();
        // Test modules beside their code explain themselves in their test names.
        if name == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("//! "),
            "{} does not start with a `//!` header",
            file.display()
        );
    }
}
