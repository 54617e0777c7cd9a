//! The house keeps its layers: reads the layer table at the top of
//! `src/lib.rs` and every `crate::`, `super::` and `self::` path in the
//! files of `src/` (comments, strings and `#[cfg(test)]` modules left out),
//! and fails on an import from a lower layer up into a higher one, on a
//! circle of files importing each other, and on a module missing from the
//! table. A text scan, not a compiler pass: paths are resolved to the
//! deepest module file that exists, which is what an import ties a file to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (e.g. `["config", "route"]`) → file, for every file of `src/`.
fn module_files(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src/");
            let mut module: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if module.last().is_some_and(|l| l == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                continue;
            }
            out.insert(module, path);
        }
    }
    out
}

/// The code without comments, string and char literals, and `#[cfg(test)]`
/// modules; newlines kept, so that line numbers stay right.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
            blank(&mut out, &b[i..end]);
            i = end;
        } else if rest.starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            blank(&mut out, &b[i..end]);
            i = end;
        } else if rest.starts_with(b"r#\"") || rest.starts_with(b"r\"") {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let start = i + 2 + hashes;
            let end = text[start..].find(&close).map_or(b.len(), |p| start + p + close.len());
            blank(&mut out, &b[i..end]);
            i = end;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            blank(&mut out, &b[i..end]);
            i = end;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}'); otherwise a lifetime.
            let end = if rest.get(1) == Some(&b'\\') {
                text[i + 2..].find('\'').map_or(b.len(), |p| i + 2 + p + 1)
            } else if let Some(c) = text[i + 1..].chars().next() {
                let after = i + 1 + c.len_utf8();
                if b.get(after) == Some(&b'\'') {
                    after + 1
                } else {
                    i + 1
                }
            } else {
                i + 1
            };
            blank(&mut out, &b[i..end]);
            i = end;
        } else if rest.starts_with(b"#[cfg(test)]") {
            // The attribute and the item it is on, to the matching brace.
            let open = text[i..].find('{').map_or(b.len(), |p| i + p);
            let mut depth = 0usize;
            let mut end = b.len();
            let mut j = open;
            while j < b.len() {
                match b[j] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            // Only a module is skipped; a test-only `use` ends at its `;`.
            let semi = text[i..].find(';').map_or(b.len(), |p| i + p + 1);
            let end = if semi < open { semi } else { end };
            blank(&mut out, &b[i..end]);
            i = end;
        } else {
            let c = text[i..].chars().next().expect("inside the text");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Every path starting with `crate`, `super` or `self` in `code`, with its
/// line, as segments (`crate::{a::b, c}` gives `crate a b` and `crate c`).
fn paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = ["crate", "super", "self"]
            .into_iter()
            .find(|k| code[i..].starts_with(k) && (i == 0 || !is_ident(b[i - 1])));
        let Some(k) = starts else {
            i += 1;
            continue;
        };
        let after = i + k.len();
        if after < b.len() && is_ident(b[after]) {
            i = after;
            continue;
        }
        let line = code[..i].matches('\n').count() + 1;
        let mut found = Vec::new();
        let end = path_at(code, i, Vec::new(), &mut found);
        out.extend(found.into_iter().map(|p| (line, p)));
        i = end.max(i + 1);
    }
    out
}

/// Reads one path (possibly with `{...}` groups) starting at `i`, after the
/// segments already in `prefix`; returns where it ended.
fn path_at(code: &str, mut i: usize, mut prefix: Vec<String>, found: &mut Vec<Vec<String>>) -> usize {
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        if i > start {
            prefix.push(code[start..i].to_string());
        }
        let j = skip_ws(i);
        if code[j..].starts_with("::") {
            let k = skip_ws(j + 2);
            if b.get(k) == Some(&b'{') {
                let mut k = k + 1;
                loop {
                    k = path_at(code, k, prefix.clone(), found);
                    k = skip_ws(k);
                    match b.get(k) {
                        Some(b',') => k += 1,
                        Some(b'}') => return k + 1,
                        _ => return k,
                    }
                    if b.get(skip_ws(k)) == Some(&b'}') {
                        return skip_ws(k) + 1;
                    }
                }
            }
            i = j + 2;
            continue;
        }
        if !prefix.is_empty() {
            found.push(prefix);
        }
        return i;
    }
}

/// The module file a path used from `from` leads to: the deepest module
/// along it that has a file.
fn resolve(
    from: &[String],
    from_is_mod_rs: bool,
    path: &[String],
    files: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let mut base: Vec<String> = Vec::new();
    let mut segments = path.iter();
    // `self` in a file is its own module; `super` its parent.
    let mut current = from.to_vec();
    let _ = from_is_mod_rs;
    for s in segments.by_ref() {
        match s.as_str() {
            "crate" => {
                current = Vec::new();
            }
            "self" => {}
            "super" => {
                current.pop()?;
            }
            other => {
                base = current.clone();
                base.push(other.to_string());
                break;
            }
        }
    }
    if base.is_empty() {
        return None;
    }
    let mut deepest = files.contains_key(&base).then(|| base.clone());
    for s in segments {
        base.push(s.clone());
        if files.contains_key(&base) {
            deepest = Some(base.clone());
        } else {
            break;
        }
    }
    deepest
}

/// Top-level module → layer, from the table at the top of `src/lib.rs`.
fn layers(lib: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | ") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Ok(layer) = cells[0].parse::<u32>() else {
            continue;
        };
        for m in cells[1].split(',') {
            let m = m.trim().trim_matches('`').to_string();
            assert!(out.insert(m.clone(), layer).is_none(), "{m} is in two layers");
        }
    }
    out
}

/// An import edge: from file, to file, the line of the path.
type Edge = (Vec<String>, Vec<String>, usize);

fn edges(src: &Path) -> (BTreeMap<Vec<String>, PathBuf>, Vec<Edge>) {
    let files = module_files(src);
    let mut out = Vec::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).expect("a source file is readable");
        let code = code_only(&text);
        let is_mod_rs = file.file_name().is_some_and(|n| n == "mod.rs");
        for (line, path) in paths(&code) {
            if let Some(target) = resolve(module, is_mod_rs, &path, &files) {
                if &target != module {
                    out.push((module.clone(), target, line));
                }
            }
        }
    }
    (files, out)
}

/// Imports that go up: `from`'s top module is in a lower layer than `to`'s.
fn upward(edges: &[Edge], layer_of: &BTreeMap<String, u32>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (from, to, line) in edges {
        let (a, b) = (&from[0], &to[0]);
        if let (Some(la), Some(lb)) = (layer_of.get(a), layer_of.get(b)) {
            if lb > la {
                out.insert(format!(
                    "{} (layer {la}) uses {} (layer {lb}) at line {line}",
                    from.join("::"),
                    to.join("::")
                ));
            }
        }
    }
    out.into_iter().collect()
}

/// Circles among files: each strongly connected group of more than one file.
fn circles(edges: &[Edge]) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = BTreeMap::new();
    for (from, to, _) in edges {
        graph.entry(from).or_default().insert(to);
        graph.entry(to).or_default();
    }
    // Kosaraju: finish order on the graph, then groups on the reversed one.
    let nodes: Vec<&Vec<String>> = graph.keys().copied().collect();
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for &n in &nodes {
        if seen.contains(n) {
            continue;
        }
        let mut stack = vec![(n, false)];
        while let Some((v, done)) = stack.pop() {
            if done {
                order.push(v);
                continue;
            }
            if !seen.insert(v) {
                continue;
            }
            stack.push((v, true));
            for &w in &graph[v] {
                if !seen.contains(w) {
                    stack.push((w, false));
                }
            }
        }
    }
    let mut reversed: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = BTreeMap::new();
    for (&v, ws) in &graph {
        for &w in ws {
            reversed.entry(w).or_default().push(v);
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for &n in order.iter().rev() {
        if assigned.contains(n) {
            continue;
        }
        let mut group = Vec::new();
        let mut stack = vec![n];
        assigned.insert(n);
        while let Some(v) = stack.pop() {
            group.push(v.join("::"));
            for &w in reversed.get(v).map(Vec::as_slice).unwrap_or(&[]) {
                if assigned.insert(w) {
                    stack.push(w);
                }
            }
        }
        if group.len() > 1 {
            group.sort();
            out.push(group);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_is_in_one_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    let layer_of = layers(&lib);
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let in_table: BTreeSet<String> = layer_of.keys().cloned().collect();
    assert!(!declared.is_empty());
    assert_eq!(declared, in_table, "the modules of lib.rs and its layer table differ");
}

#[test]
fn no_import_goes_up_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    let (files, edges) = edges(&src());
    assert!(
        files.len() > 20 && edges.len() > 50,
        "the scan found too little to judge"
    );
    let up = upward(&edges, &layers(&lib));
    assert!(up.is_empty(), "imports up the layers of src/lib.rs:\n{}", up.join("\n"));
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let (_, edges) = edges(&src());
    let found = circles(&edges);
    let mut report = String::new();
    for group in &found {
        report.push_str(&format!("circle of {} files: {}\n", group.len(), group.join(", ")));
        let ties: BTreeSet<String> = edges
            .iter()
            .filter(|(from, to, _)| group.contains(&from.join("::")) && group.contains(&to.join("::")))
            .map(|(from, to, line)| format!("  {} -> {} (line {line})\n", from.join("::"), to.join("::")))
            .collect();
        report.extend(ties);
    }
    assert!(found.is_empty(), "{report}");
}

/// The checker itself finds what it is for, on a made-up house.
#[test]
fn the_checker_sees_an_upward_import_and_a_circle() {
    let code = code_only(
        "use crate::{config::{self, Config}, server::Server};\n// use crate::hidden;\nlet s = \"crate::in_string\";\n#[cfg(test)]\nmod tests { use crate::test_only; }\nfn f<'a>(c: &'a str) -> char { '\"' }\nsuper::sibling::f();\n",
    );
    let found: Vec<String> = paths(&code).into_iter().map(|(_, p)| p.join("::")).collect();
    assert_eq!(
        found,
        [
            "crate::config::self",
            "crate::config::Config",
            "crate::server::Server",
            "super::sibling::f"
        ]
    );
    let m = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    let files: BTreeMap<Vec<String>, PathBuf> = ["config", "server", "config::route", "config::values"]
        .into_iter()
        .map(|s| (m(s), PathBuf::new()))
        .collect();
    assert_eq!(
        resolve(&m("config::route"), false, &m("super::values::duration"), &files),
        Some(m("config::values"))
    );
    assert_eq!(
        resolve(&m("server"), false, &m("crate::config::Config"), &files),
        Some(m("config"))
    );
    let layer_of: BTreeMap<String, u32> = [("config".to_string(), 1), ("server".to_string(), 8)].into();
    let edges = vec![
        (m("config"), m("server"), 3),
        (m("server"), m("config"), 9),
        (m("config::route"), m("config::values"), 1),
    ];
    assert_eq!(
        upward(&edges, &layer_of),
        ["config (layer 1) uses server (layer 8) at line 3"]
    );
    assert_eq!(circles(&edges), [vec!["config".to_string(), "server".to_string()]]);
}
