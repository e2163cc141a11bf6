//! The module structure the README's architecture section promises: data flows one way, and a
//! module imports only the modules before it in `ORDER`. Read from the sources, so a new import
//! against the flow fails here rather than in review.

use std::path::{Path, PathBuf};

/// Every top-level module, in the order data flows (see the README's architecture section).
const ORDER: [&str; 32] = [
    "value",
    "diag",
    "yaml",
    "verdict",
    "lifecycle",
    "outbound",
    "notification",
    "receivers",
    "config",
    "expr",
    "sources",
    "actions",
    "rules",
    "engine",
    "scheduler",
    "state",
    "health",
    "metrics",
    "alert",
    "repair",
    "api",
    "auth",
    "context",
    "http",
    "daemon",
    "cli",
    "telemetry",
    "report",
    "rule_tests",
    "demo",
    "init",
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

/// The module path of a file (`src/sources/mysql/wire.rs` → `["sources", "mysql", "wire"]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_str().unwrap().to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The modules a file's code names (`crate::a::b`, `super::c`, `self::d`), each as the longest
/// module path that exists. A trailing `#[cfg(test)] mod tests` is left out: tests may look
/// anywhere, and nothing imports them.
fn imports(text: &str, own: &[String], modules: &[Vec<String>]) -> Vec<Vec<String>> {
    let code = text
        .split("\n#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or(text);
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for head in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(head) {
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let rest: Vec<&str> = code[at + head.len()..]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            // `self` is the file's own module, `super` its parent, whether the file is a
            // folder's `mod.rs` or not.
            let mut path: Vec<String> = match head {
                "crate::" => Vec::new(),
                "self::" => own.to_vec(),
                _ => own[..own.len().saturating_sub(1)].to_vec(),
            };
            let mut rest = rest.as_slice();
            while head == "super::" && rest.first() == Some(&"super") {
                path.pop();
                rest = &rest[1..];
            }
            path.extend(rest.iter().map(|s| s.to_string()));
            while !path.is_empty() && !modules.contains(&path) {
                path.pop();
            }
            if !path.is_empty() && path != own {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn files_of_one_folder_import_each_other_without_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: Vec<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
    // For each folder, which of its children (files or sub-folders) use which: an arrow from
    // the child that holds the importing file to the child that holds the imported module.
    let mut arrows: std::collections::BTreeMap<
        Vec<String>,
        std::collections::BTreeSet<(String, String)>,
    > = Default::default();
    for (file, own) in files.iter().zip(&modules) {
        let text = std::fs::read_to_string(file).unwrap();
        for target in imports(&text, own, &modules) {
            // The folder both sit in, below which they part.
            let common = own.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common >= own.len() || common >= target.len() {
                continue; // a folder's own mod.rs and its children: not siblings
            }
            arrows
                .entry(own[..common].to_vec())
                .or_default()
                .insert((own[common].clone(), target[common].clone()));
        }
    }
    let mut circles = Vec::new();
    for (folder, edges) in &arrows {
        if folder.is_empty() {
            continue; // the top level's order is `modules_import_only_the_modules_before_them`
        }
        for (from, to) in edges {
            // A circle: `to` reaches back to `from`.
            let mut seen = vec![to.clone()];
            let mut stack = vec![to.clone()];
            while let Some(at) = stack.pop() {
                for (a, b) in edges {
                    if *a == at && !seen.contains(b) {
                        seen.push(b.clone());
                        stack.push(b.clone());
                    }
                }
            }
            if seen.contains(from) {
                circles.push(format!(
                    "src/{}: `{from}` uses `{to}`, which leads back to `{from}`",
                    folder.join("/")
                ));
            }
        }
    }
    assert!(circles.is_empty(), "{}", circles.join("\n"));
}

/// No file grows past what a reader takes in at once; a file that does holds more than one
/// concern and is split along them.
const MAX_LINES: usize = 800;

#[test]
fn no_source_file_is_longer_than_800_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}
