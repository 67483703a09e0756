//! The crate's modules form no import cycle. A module may use its ancestors' items (a child
//! belongs to its parent), but two modules that are not ancestor and descendant never depend
//! on each other, directly or through others: `metrics` knows nothing of `http`, the carbon
//! feeds dial through `dial` rather than through `upstream`, and within `http/` the request
//! path runs one way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`http::h1`) of every source file, with its text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut segments: Vec<String> = relative
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if segments.last().is_some_and(|s| s == "mod") {
                segments.pop();
            }
            if segments == ["lib"] || segments == ["main"] {
                segments.clear();
            }
            if segments.last().is_some_and(|s| s == "tests") {
                continue; // unit tests may reach anywhere
            }
            let text = std::fs::read_to_string(&path).unwrap();
            found.insert(segments.join("::"), code_only(&text));
        }
    }
    found
}

/// The text without comments and without a trailing `#[cfg(test)] mod tests { ... }`.
fn code_only(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `a::b::c` path in `code`, with `use a::{b, c::d}` groups expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts =
            is_ident(chars[i]) && (i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':'));
        if starts {
            i = path_at(&chars, i, Vec::new(), &mut out);
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads the path starting at `i` (after `prefix`) into `out`; returns where it ends.
fn path_at(
    chars: &[char],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        prefix.push(chars[start..i].iter().collect());
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
            if chars.get(i) == Some(&'{') {
                i += 1;
                loop {
                    while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                        i += 1;
                    }
                    match chars.get(i) {
                        Some('}') | None => return i + 1,
                        Some(&c) if is_ident(c) => i = path_at(chars, i, prefix.clone(), out),
                        Some(_) => i += 1,
                    }
                }
            }
            if chars.get(i).is_some_and(|&c| is_ident(c)) {
                continue;
            }
        }
        if prefix.len() > 1 {
            out.push(prefix);
        }
        return i;
    }
}

/// The module that `path`, written in `module`, names (its longest prefix that is a module).
fn target(module: &str, path: &[String], known: &BTreeSet<String>) -> Option<String> {
    let mut base: Vec<String> = match module {
        "" => Vec::new(),
        m => m.split("::").map(str::to_owned).collect(),
    };
    let mut rest = path;
    match path[0].as_str() {
        "crate" => {
            base.clear();
            rest = &path[1..];
        }
        "self" => rest = &path[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        // A child module named from its parent: `child::item`.
        child if known.contains(&join(&base, &[child.to_owned()])) => {}
        _ => return None,
    }
    (0..=rest.len())
        .rev()
        .map(|n| join(&base, &rest[..n]))
        .find(|m| known.contains(m))
}

fn join(base: &[String], more: &[String]) -> String {
    base.iter()
        .chain(more)
        .cloned()
        .collect::<Vec<_>>()
        .join("::")
}

fn is_ancestor(ancestor: &str, of: &str) -> bool {
    ancestor.is_empty() || of.starts_with(&format!("{ancestor}::"))
}

/// Edges between modules, leaving out a module's use of its own ancestors.
fn graph(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(module, code)| {
            let uses = paths(code)
                .iter()
                .filter_map(|p| target(module, p, &known))
                .filter(|t| t != module && !is_ancestor(t, module))
                .collect();
            (module.clone(), uses)
        })
        .collect()
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn no_two_modules_depend_on_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&modules(&src));
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|component| {
            component
                .iter()
                .map(|m| {
                    let inside: Vec<&String> =
                        graph[m].iter().filter(|t| component.contains(t)).collect();
                    format!("  {m} -> {inside:?}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles:\n{}",
        described.join("\n\n")
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let modules = BTreeMap::from([
        ("a".to_owned(), "use crate::b::Thing;".to_owned()),
        (
            "b".to_owned(),
            "fn f() { crate::a::{x, y::z}(); }".to_owned(),
        ),
        (
            "b::c".to_owned(),
            "use super::Thing; use super::super::a;".to_owned(),
        ),
        ("d".to_owned(), "use crate::a;".to_owned()),
    ]);
    let graph = graph(&modules);
    assert_eq!(graph["b::c"], BTreeSet::from(["a".to_owned()]));
    let mut found = cycles(&graph);
    found.iter_mut().for_each(|c| c.sort());
    assert_eq!(found, vec![vec!["a".to_owned(), "b".to_owned()]]);
}
