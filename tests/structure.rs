//! The shape of the code, held: inside each crate the modules form a tree
//! (no module imports one that imports it back), no source file outside
//! tests passes 1,000 lines and no function 150. docs/architecture.md
//! shows the core's module graph that this checks.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 1000;
const MAX_FN_LINES: usize = 150;

/// The crates whose module graph must be a tree, by their `src` folder.
const CRATES: [&str; 4] = ["src", "sidecar/src", "injector/src", "runtime/src"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A file's code before its `#[cfg(test)]` module (tests live below it),
/// without comment lines (a doc link is not an import).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    before_tests.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect()
}

/// The top-level module a file of `src` belongs to (`mutate` for
/// `mutate/plan.rs`), `None` for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

/// `crate::x` and `crate::{x, y::z}` in `text`: the modules named.
fn crate_uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let list = &list[..list.find('}').unwrap_or(list.len())];
            for item in list.split(',') {
                let word: String = item.trim().chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                out.insert(word);
            }
        } else {
            out.insert(rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect());
        }
    }
    out.remove("");
    out
}

#[test]
fn the_modules_of_each_crate_form_a_tree() {
    let mut report = String::new();
    for krate in CRATES {
        let src = root().join(krate);
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let Some(m) = module_of(&src, f) else { continue };
            let uses = crate_uses(&code(f));
            graph.entry(m.clone()).or_default().extend(uses.into_iter().filter(|u| *u != m));
        }
        let known: BTreeSet<String> = graph.keys().cloned().collect();
        for deps in graph.values_mut() {
            deps.retain(|d| known.contains(d));
        }
        // A module that reaches itself through its imports is in a circle.
        for start in graph.keys() {
            let mut stack: Vec<&String> = graph[start].iter().collect();
            let mut seen = BTreeSet::new();
            while let Some(m) = stack.pop() {
                if m == start {
                    report.push_str(&format!("{krate}: {start} imports itself back ({:?})\n", graph[start]));
                    break;
                }
                if seen.insert(m) {
                    stack.extend(graph[m].iter());
                }
            }
        }
    }
    assert!(report.is_empty(), "import circles:\n{report}");
}

#[test]
fn no_source_file_or_function_outgrows_its_bound() {
    let mut report = String::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&root().join(krate), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let name = f.strip_prefix(root()).unwrap().display().to_string();
            if f.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let lines = text.lines().count();
            if lines > MAX_FILE_LINES {
                report.push_str(&format!("{name}: {lines} lines\n"));
            }
            // rustfmt puts a function's closing brace at its own indentation.
            let code = code(&f);
            let code: Vec<&str> = code.lines().collect();
            for (i, line) in code.iter().enumerate() {
                let trimmed = line.trim_start();
                let indent = &line[..line.len() - trimmed.len()];
                let head = trimmed
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ")
                    .trim_start_matches("const ")
                    .trim_start_matches("async ");
                if !head.starts_with("fn ") || line.ends_with(';') {
                    continue;
                }
                let close = format!("{indent}}}");
                if let Some(end) = code[i + 1..].iter().position(|l| *l == close) {
                    if end + 2 > MAX_FN_LINES {
                        report.push_str(&format!("{name}:{}: a function of {} lines\n", i + 1, end + 2));
                    }
                }
            }
        }
    }
    assert!(report.is_empty(), "past the bounds ({MAX_FILE_LINES} lines a file, {MAX_FN_LINES} a function):\n{report}");
}
