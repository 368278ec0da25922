//! The shape of the source tree, checked: no import circle between files,
//! imports run down the layers of `lib.rs`'s module map (at most
//! `MAX_UPWARD` exceptions, each listed when the test fails), and no file
//! grows past `MAX_LINES` (the controller past `MAX_CONTROLLER_LINES`).
//!
//! It reads `src/` as text: every `use crate::…`/`use super::…` (braces
//! expanded), every inline `crate::a::b` path and every use of a declared
//! child (`mod x;` … `x::f()`) is an edge from the file that writes it to
//! the deepest module file the path names. A child naming its own parent
//! (`super::Type` defined in `mod.rs`) is not counted: the parent owns the
//! module's shared types. The graph on main before the architecture step
//! had the three circles the issue names: config → tls → config,
//! fastpath ↔ keepalive, health → routing → routing::table → health.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;
const MAX_CONTROLLER_LINES: usize = 450;
const MAX_UPWARD: usize = 2;

/// Layers, lowest first: a module may import from its own layer (not in a
/// circle) and from the layers below. The longest matching prefix decides.
const LAYERS: &[(&str, u8)] = &[
    // 1. foundation: no knowledge of the proxy's moving parts
    ("clock", 1),
    ("config", 1),
    ("protocol", 1),
    ("stats", 1),
    ("tls::material", 1),
    ("tls::upstream", 1), // client TLS settings from material; no state
    ("origin", 1),
    ("word_ring", 1), // the ring under the access log's and the mirror's queues
    // 2. pure decisions and the routing table
    ("routing", 2),
    ("health::verdict", 2),
    ("health::ejection", 2),
    ("guard", 2),
    // 3. the state every service shares
    ("shared", 3),
    ("access_log", 3), // written by the data plane, reopened by control
    // 4. the data plane and the services that feed it
    ("dataplane", 4),
    // traffic mirroring: the table's part is pure like routing; the
    // hand-off and the sender sit with the data plane
    ("mirror", 4),
    ("mirror::route", 2),
    // the HTTP/1.1 framing rules both request paths apply (pure, plus the
    // stream wrapper for pingora's path)
    ("dataplane::framing", 4),
    ("tls", 4),
    ("health", 4),
    // 5. the one writer and what it notifies
    ("control", 5),
    ("cluster", 5), // fleet mode: etcd, under the controller's commit
    ("notify", 5),
    ("reload", 5),
    ("discovery", 5), // resolves names, publishes through the controller
    // 6. the operator's doors
    ("admin", 6),
    // 7. the process and the command line
    ("process", 7),
    ("cli", 7),
    ("ctl", 7),
    ("demo", 7),
    ("main", 7),
    ("", 7), // lib.rs
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src is readable")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`, `src/lib.rs` → ``.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src_dir()).expect("under src");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// The text without comments and string literals, so neither a doc comment
/// nor a message that mentions `crate::x` counts as an import.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let end = text[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |e| i + 2 + e + 2);
            i = end;
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i..].starts_with(b"r#\"") {
            let end = text[i + 3..]
                .find("\"#")
                .map_or(bytes.len(), |e| i + 3 + e + 2);
            i = end;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' && i + 2 < bytes.len() && bytes[i + 2] == b'\'' {
            // A char literal such as '"' or '{'.
            i += 3;
        } else {
            let ch = text[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&base, &inner[start..], out);
    } else {
        let item = tree.split(" as ").next().unwrap_or("").trim();
        if !item.is_empty() {
            out.push(join(prefix, item));
        }
    }
}

fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}::{rest}"),
    }
}

/// The modules a file declares with `mod name;` (or `pub mod name;`).
fn declared_children(code: &str) -> Vec<String> {
    code.split(';')
        .filter_map(|statement| {
            let words: Vec<&str> = statement.split_whitespace().collect();
            match words.as_slice() {
                [.., "mod", name] => Some(name.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// Every crate path a file names, made absolute (without `crate::`).
fn paths_named(module: &str, code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    // `use` statements, braces expanded.
    for statement in code.split(';') {
        let s = statement.trim_start();
        let s = s
            .strip_prefix("pub(crate) ")
            .or_else(|| s.strip_prefix("pub(super) "))
            .or_else(|| s.strip_prefix("pub "))
            .unwrap_or(s);
        let Some(tree) = s.strip_prefix("use ") else {
            continue;
        };
        let mut expanded = Vec::new();
        expand("", tree, &mut expanded);
        paths.extend(expanded);
    }
    // Inline paths: `crate::a::b::c`.
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let path = tail[..end].trim_end_matches(':');
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && path != "crate" {
            paths.push(path.to_string());
        }
        rest = &tail[end.max(1)..];
    }
    // Inline paths into a child this file declares (`mod sections;` …
    // `sections::read(…)`).
    for child in declared_children(code) {
        let needle = format!("{child}::");
        let mut rest = code;
        while let Some(at) = rest.find(&needle) {
            let before = rest[..at].chars().last();
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                paths.push(format!("self::{child}"));
            }
            rest = &rest[at + needle.len()..];
        }
    }
    // Make `super::` and `self::` absolute; drop external crates.
    let parent = |m: &str| {
        m.rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_string())
    };
    paths
        .into_iter()
        .map(|p| {
            if let Some(r) = p.strip_prefix("crate::") {
                r.to_string()
            } else if p.starts_with("super::") {
                // `super` of module a::b is a, whether a::b is `a/b.rs` or
                // `a/b/mod.rs`.
                let mut base = parent(module);
                let mut r = p.as_str();
                while let Some(next) = r.strip_prefix("super::") {
                    r = next;
                    if r.starts_with("super::") {
                        base = parent(&base);
                    }
                }
                join(&base, r)
            } else if let Some(r) = p.strip_prefix("self::") {
                join(module, r)
            } else {
                // A relative path such as `use sections::read` in
                // `config/mod.rs` names a child module; the caller keeps
                // it only if that child exists.
                join(module, &p)
            }
        })
        .collect()
}

/// The deepest module file a path points into.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn layer_of(module: &str) -> u8 {
    LAYERS
        .iter()
        .filter(|(prefix, _)| {
            prefix.is_empty() || module == *prefix || module.starts_with(&format!("{prefix}::"))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, layer)| *layer)
        .expect("the empty prefix matches everything")
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

struct Tree {
    edges: BTreeMap<String, BTreeSet<String>>,
    lines: BTreeMap<String, (PathBuf, usize)>,
}

fn read_tree() -> Tree {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut edges = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        let text = std::fs::read_to_string(file).expect("readable source");
        lines.insert(module.clone(), (file.clone(), text.lines().count()));
        let targets: BTreeSet<String> = paths_named(&module, &code_only(&text))
            .iter()
            .filter_map(|p| resolve(p, &modules))
            // A file naming its own items is not an import between files,
            // and a child using what its parent `mod.rs` defines (shared
            // types of the module) is the module's own business; a parent
            // using its children, and everything else, counts.
            .filter(|t| *t != module && !module.starts_with(&format!("{t}::")) && !t.is_empty())
            .collect();
        edges.insert(module, targets);
    }
    Tree { edges, lines }
}

/// Strongly connected components with more than one file (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn no_import_circle_between_files() {
    let tree = read_tree();
    let found = circles(&tree.edges);
    assert!(
        found.is_empty(),
        "import circles (each list imports itself round): {found:#?}"
    );
}

#[test]
fn imports_run_down_the_layers() {
    let tree = read_tree();
    let upward: Vec<String> = tree
        .edges
        .iter()
        .flat_map(|(from, targets)| {
            targets
                .iter()
                .filter(move |to| top(from) != top(to) && layer_of(to) > layer_of(from))
                .map(move |to| {
                    format!(
                        "{from} (layer {}) -> {to} (layer {})",
                        layer_of(from),
                        layer_of(to)
                    )
                })
        })
        .collect();
    assert!(
        upward.len() <= MAX_UPWARD,
        "{} imports run back up the layers (at most {MAX_UPWARD}): {upward:#?}",
        upward.len()
    );
}

#[test]
fn no_source_file_is_too_long() {
    let tree = read_tree();
    let long: Vec<String> = tree
        .lines
        .iter()
        .filter(|(module, (_, n))| {
            let max = if module.as_str() == "control::controller" {
                MAX_CONTROLLER_LINES
            } else {
                MAX_LINES
            };
            *n > max
        })
        .map(|(_, (file, n))| format!("{} has {n} lines", file.display()))
        .collect();
    assert!(long.is_empty(), "files over the limit: {long:#?}");
}

#[test]
fn the_checker_sees_imports_braces_and_circles() {
    // The parser itself, on made-up text: a test that cannot fail proves nothing.
    let code = code_only(
        "mod q;\nuse crate::{a::b, c::{d::E, f as G}};\n// use crate::z;\nlet s = \"crate::y\"; super::h::I;\nuse super::k; q::run();",
    );
    let mut paths = paths_named("m::n", &code);
    paths.sort();
    assert_eq!(paths, ["a::b", "c::d::E", "c::f", "m::k", "m::n::q"]);
    let mut edges = BTreeMap::new();
    edges.insert("x".to_string(), BTreeSet::from(["y".to_string()]));
    edges.insert("y".to_string(), BTreeSet::from(["x".to_string()]));
    edges.insert("z".to_string(), BTreeSet::from(["x".to_string()]));
    assert_eq!(
        circles(&edges),
        vec![vec!["x".to_string(), "y".to_string()]]
    );
    assert_eq!(layer_of("tls::material"), 1);
    assert_eq!(layer_of("tls::listeners"), 4);
    assert_eq!(layer_of("dataplane::fastpath::head"), 4);
}
