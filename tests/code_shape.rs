//! The shape of the source tree that README.md's "Architecture" section promises: every
//! module of `src/lib.rs` in exactly one layer of its table, no `crate::` path to a higher
//! layer, no function longer than 80 lines outside tests,
//! and `anyhow` only at the command-line edge (`src/cli/`, `src/main.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 80;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Test-only files: `tests.rs`, `*_tests.rs`, `tests_*.rs` and files under a `tests/` folder.
fn is_test_file(p: &Path) -> bool {
    let name = p.file_stem().unwrap().to_string_lossy();
    name == "tests"
        || name.ends_with("_tests")
        || name.starts_with("tests_")
        || p.components().any(|c| c.as_os_str() == "tests")
}

/// A line without its `//` comment and with string literals emptied (a crude lexer that is
/// enough for this code base: no raw strings with braces, no `//` inside chars).
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let (mut in_str, mut esc) = (false, false);
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
                out.push('"');
            }
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            break;
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            // A char literal like '{' or '}'.
            out.push_str("' '");
            i += 3;
            continue;
        } else if c == '"' {
            in_str = true;
            out.push('"');
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// `(name, first line, length)` of every `fn` with a body outside `#[cfg(test)]` modules.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let mut out = vec![];
    let mut depth = 0usize;
    let mut open: Vec<(String, usize, usize)> = vec![]; // (name, start, depth at its brace)
    let mut pending: Option<(String, usize)> = None;
    let mut test_attr = false;
    let mut skip_until: Option<usize> = None; // depth that ends a test module
    for (n, line) in text.lines().enumerate() {
        let code = code_of(line);
        let t = code.trim();
        if t.starts_with("#[cfg(") && find_word(t, "test").is_some() && !t.contains("not(test") {
            test_attr = true;
        }
        if skip_until.is_none() {
            if let Some(i) = find_word(&code, "fn") {
                let name: String = code[i + 2..]
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    pending = Some((name, n));
                }
            }
        }
        let is_test_mod = test_attr && find_word(&code, "mod").is_some();
        for c in code.chars() {
            match c {
                '{' => {
                    depth += 1;
                    if is_test_mod && skip_until.is_none() {
                        skip_until = Some(depth);
                        test_attr = false;
                    } else if let Some((name, start)) = pending.take() {
                        if skip_until.is_none() {
                            open.push((name, start, depth));
                        }
                    }
                }
                '}' => {
                    if open.last().is_some_and(|o| o.2 == depth) {
                        let (name, start, _) = open.pop().unwrap();
                        out.push((name, start + 1, n - start + 1));
                    }
                    if skip_until == Some(depth) {
                        skip_until = None;
                    }
                    depth = depth.saturating_sub(1);
                }
                // A declaration without a body (trait method, extern fn).
                ';' if pending.as_ref().is_some_and(|p| p.1 == n) && !code.contains('{') => {
                    pending = None;
                }
                _ => {}
            }
        }
        if is_test_mod && code.contains(';') && !code.contains('{') {
            test_attr = false; // `#[cfg(test)] mod x;`: the module is another (test) file
        } else if !t.starts_with("#[") && !t.is_empty() && !is_test_mod {
            test_attr = false;
        }
    }
    out
}

fn find_word(code: &str, w: &str) -> Option<usize> {
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find(w) {
        let i = from + i;
        let before = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let after = bytes
            .get(i + w.len())
            .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'));
        if before && after {
            return Some(i);
        }
        from = i + w.len();
    }
    None
}

#[test]
fn the_function_finder_sees_long_and_nested_functions() {
    let body = |n: usize| "    let x = 1;\n".repeat(n);
    let text = format!(
        "fn short() {{\n{}}}\nimpl X {{\n    fn long(&self) -> u8 {{\n        let s = \"}}{{\";\n{}    }}\n}}\n#[cfg(test)]\nmod tests {{\n    fn in_test() {{\n{}    }}\n}}\n",
        body(3),
        body(90),
        body(200)
    );
    let f = functions(&text);
    let names: Vec<(&str, usize)> = f.iter().map(|x| (x.0.as_str(), x.2)).collect();
    assert_eq!(names, [("short", 5), ("long", 93)], "{f:?}");
}

#[test]
fn no_function_outside_tests_is_longer_than_80_lines() {
    let mut files = vec![];
    rust_files(&root().join("src"), &mut files);
    let mut long = vec![];
    for p in files.iter().filter(|p| !is_test_file(p)) {
        let text = std::fs::read_to_string(p).unwrap();
        for (name, line, len) in functions(&text) {
            if len > MAX_FN_LINES {
                long.push(format!(
                    "{}:{line} fn {name}: {len} lines",
                    p.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn anyhow_only_at_the_command_line_edge() {
    let mut files = vec![];
    rust_files(&root().join("src"), &mut files);
    let mut bad = vec![];
    for p in &files {
        let rel = p.strip_prefix(root().join("src")).unwrap();
        if rel.starts_with("cli") || rel == Path::new("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        for (n, line) in text.lines().enumerate() {
            if find_word(&code_of(line), "anyhow").is_some() {
                bad.push(format!("src/{}:{}", rel.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "anyhow outside src/cli and src/main.rs:\n{}",
        bad.join("\n")
    );
}

/// The top-level modules named right after `crate::`: one (`crate::a::b`) or a group on
/// this line (`crate::{a, b::c}`).
fn used_modules(after: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    match after.strip_prefix('{') {
        Some(group) => group
            .split('}')
            .next()
            .unwrap_or("")
            .split(',')
            .map(ident)
            .filter(|m| !m.is_empty())
            .collect(),
        None => vec![ident(after)],
    }
}

/// Layer of every module, from README.md's Architecture table.
fn readme_layers() -> BTreeMap<String, usize> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let sec = readme
        .split("## Architecture")
        .nth(1)
        .expect("README.md has an Architecture section");
    let mut layers = BTreeMap::new();
    for line in sec.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(layer) = cells
            .get(1)
            .and_then(|c| c.split('.').next()?.parse::<usize>().ok())
        else {
            continue;
        };
        for m in cells[2].split(',') {
            let m = m.trim().trim_start_matches('`');
            let m = m.split('`').next().unwrap();
            if !m.is_empty() && !m.ends_with(".rs") {
                assert!(
                    layers.insert(m.to_string(), layer).is_none(),
                    "`{m}` is listed twice"
                );
            }
        }
    }
    layers
}

#[test]
fn readme_architecture_matches_the_tree() {
    let layers = readme_layers();
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let mods: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let listed: Vec<&String> = layers.keys().collect();
    let mut sorted = mods.clone();
    sorted.sort();
    assert_eq!(
        listed,
        sorted.iter().collect::<Vec<_>>(),
        "README.md's Architecture table and the `pub mod`s of src/lib.rs differ"
    );
    // No `crate::<module>` path (outside comments) to a higher layer.
    let mut upward = vec![];
    for m in &mods {
        let dir = root().join("src").join(m);
        let mut files = vec![];
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(root().join("src").join(format!("{m}.rs")));
        }
        for p in files {
            let rel = p.strip_prefix(root()).unwrap().to_path_buf();
            let text = std::fs::read_to_string(&p).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = code_of(line);
                let mut rest = code.as_str();
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + 7..];
                    for used in used_modules(rest) {
                        if layers.get(&used).is_some_and(|&l| l > layers[m]) {
                            upward.push(format!("{}:{}: {m} → {used}", rel.display(), n + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "uses of a higher layer:\n{}",
        upward.join("\n")
    );
}
