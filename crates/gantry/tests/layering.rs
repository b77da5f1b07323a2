//! The module graph of the library goes one way: each top-level module imports only modules
//! listed before it in `LAYERS` (the order of `lib.rs`'s documentation). Checked from the
//! sources: every `crate::<module>` path and `use crate::{..}` group of every file under
//! `src/<module>` (or `src/<module>.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top.
const LAYERS: &[&str] = &[
    "error",
    "util",
    "stats",
    "device",
    "dist",
    "precision",
    "nn",
    "models",
    "plugins",
    "loss",
    "rundir",
    "classify",
    "eval",
    "train",
    "translate",
    "report",
    "config",
    "interop",
    "generate",
    "run",
    "bench",
    "experiment",
];

fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            files(&e.path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules a source text names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c::{d, e}};`: the first segment of every top-level item.
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        item.push(c);
                    }
                    '}' if depth == 0 => break,
                    '}' => {
                        depth -= 1;
                        item.push(c);
                    }
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    c => item.push(c),
                }
            }
            items.push(item);
            for item in items {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn imports_go_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut seen = BTreeSet::new();
    let mut violations = Vec::new();
    for (level, module) in LAYERS.iter().enumerate() {
        let mut paths = Vec::new();
        files(&src.join(module), &mut paths);
        files(&src.join(format!("{module}.rs")), &mut paths);
        assert!(!paths.is_empty(), "no source for module {module}");
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            for dep in imports(&text) {
                seen.insert(dep.clone());
                match LAYERS.iter().position(|m| *m == dep) {
                    Some(l) if l < level || dep == *module => {}
                    Some(_) => violations.push(format!(
                        "{} imports {dep}, which is above {module}",
                        path.strip_prefix(&src).unwrap().display()
                    )),
                    None => violations.push(format!(
                        "{} imports {dep}, which LAYERS does not list",
                        path.display()
                    )),
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // Every module of lib.rs is placed in the order.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(LAYERS.contains(&m), "lib.rs module {m} is not in LAYERS");
        }
    }
    assert!(seen.contains("models"), "the scan found nothing: {seen:?}");
}

#[test]
fn the_scan_sees_paths_and_groups() {
    let found = imports("use crate::{error::Result, models::{self, Generator}};\nlet x = crate::device::derive_seed(1); // crate::run\n");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["device", "error", "models"]
    );
}

/// No `.unwrap()` in the non-test code of any crate of the workspace: user input reaches most
/// paths, and a panic is never the answer to it. The crates also carry
/// `#![cfg_attr(not(test), deny(clippy::unwrap_used))]`; this test keeps the rule without clippy.
/// (Unit tests sit in a `#[cfg(test)]` module at the end of a file; what follows it is skipped.)
#[test]
fn no_unwrap_outside_tests() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for krate in ["gantry", "gantry-cli", "gantry-data", "gantry-metrics"] {
        let mut all = Vec::new();
        files(&crates.join(krate).join("src"), &mut all);
        assert!(!all.is_empty(), "no sources under {krate}/src");
        // `testutil.rs` is declared under `#[cfg(test)]` as a whole.
        for f in all.into_iter().filter(|f| !f.ends_with("testutil.rs")) {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("#[cfg(test)]") {
                    break;
                }
                let code = line.split("//").next().unwrap_or("");
                if code.contains(".unwrap()") {
                    offenders.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "unwrap() outside tests:\n{}",
        offenders.join("\n")
    );
}
