//! The crate's import graph, read from its sources: no file imports one that
//! imports it back, no top-level module either, and every top-level module
//! imports only modules of the layers below its own (CONTRIBUTING.md,
//! "Layering", describes the same table).
//!
//! The reading is lexical, not a compiler's: comments and literals are
//! blanked, then every path that starts with `crate`, `super`, `self`, the
//! library's name (from the binary) or a child module (in a `use`) is
//! followed down the module tree as far as it names modules. A module's file
//! contains its submodules, so edges from a file to its own submodules (a
//! parent declares and re-exports them) are not counted: circles are looked
//! for between files that do not contain one another.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The top-level modules, by layer from the bottom up. A module may import
/// modules of lower layers only. A new top-level module needs a place here
/// and in CONTRIBUTING.md.
const LAYERS: &[(&str, &[&str])] = &[
    ("names", &["fqdn"]),
    (
        "foundations",
        &["control", "diagnostic", "git", "parallel", "tables"],
    ),
    (
        "host",
        &["addresses", "heap", "links", "logging", "netns", "systemd"],
    ),
    ("language", &["policy"]),
    ("configuration", &["config"]),
    (
        "engines",
        &["compile", "datapath", "lists_import", "ntp", "preflight"],
    ),
    ("reference model", &["model"]),
    (
        "operation",
        &[
            "attachments",
            "deny_log",
            "dns",
            "expectations",
            "explain",
            "metrics",
            "verdict_diff",
        ],
    ),
    ("labelling", &["labels"]),
    ("reloading", &["reload"]),
    ("programs", &["daemon", "lab"]),
    ("interface", &["cli"]),
];

/// The library's name as the binary writes it.
const LIBRARY: &str = "tollgate";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Crate {
    Lib,
    Bin,
}

/// A module of either crate: its path below the crate root.
type ModulePath = (Crate, Vec<String>);

/// Every module file of both crates and what each refers to.
struct Tree {
    /// Module → its file, relative to `src/`.
    files: BTreeMap<ModulePath, String>,
    /// File → the modules it refers to (resolved to files).
    edges: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The text with comments removed and the contents of string and character
/// literals blanked, so neither can look like code.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && (i == 0
                || !ident(chars[i - 1])
                || (chars[i - 1] == 'b' && (i < 2 || !ident(chars[i - 2]))))
        {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some(_) => j += 1,
                }
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            // Everything else, lifetimes included, is kept.
            out.push(c);
            i += 1;
        }
    }
    out
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            // A number with its suffix (`1u8`) is not an identifier.
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token::PathSep);
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    out
}

fn ident(token: Option<&Token>) -> Option<&str> {
    match token {
        Some(Token::Ident(name)) => Some(name),
        _ => None,
    }
}

/// The names of the `mod name;` declarations (modules in their own file).
fn declared_modules(tokens: &[Token]) -> Vec<String> {
    tokens
        .windows(3)
        .filter_map(|w| match w {
            [Token::Ident(kw), Token::Ident(name), Token::Punct(';')] if kw == "mod" => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect()
}

/// Every path of a `use` tree, from after `use` to its `;`, as segments.
/// Returns the paths and the index after the tree.
fn use_paths(tokens: &[Token], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut paths = Vec::new();
    let mut prefixes: Vec<Vec<String>> = vec![Vec::new()];
    let mut current: Vec<String> = Vec::new();
    while let Some(token) = tokens.get(i) {
        i += 1;
        match token {
            Token::Ident(name) if name == "as" => {
                // The alias is not a module: skip it.
                i += 1;
            }
            Token::Ident(name) => current.push(name.clone()),
            Token::PathSep => {}
            Token::Punct('{') => {
                let mut prefix = prefixes.last().cloned().unwrap_or_default();
                prefix.append(&mut current);
                prefixes.push(prefix);
            }
            Token::Punct(',') | Token::Punct('}') | Token::Punct(';') => {
                if !current.is_empty() {
                    let mut path = prefixes.last().cloned().unwrap_or_default();
                    path.append(&mut current);
                    paths.push(path);
                }
                match token {
                    Token::Punct('}') => {
                        prefixes.pop();
                    }
                    Token::Punct(';') => break,
                    _ => {}
                }
            }
            // `*`: the path so far is what is used.
            Token::Punct(_) => {}
        }
    }
    (paths, i)
}

impl Tree {
    fn read() -> Tree {
        let src = src_dir();
        let mut tree = Tree {
            files: BTreeMap::new(),
            edges: BTreeMap::new(),
        };
        let mut parsed = BTreeMap::new();
        for (krate, root) in [(Crate::Lib, "lib.rs"), (Crate::Bin, "main.rs")] {
            tree.declare(&src, (krate, Vec::new()), root.into(), &mut parsed);
        }
        let modules: BTreeSet<ModulePath> = tree.files.keys().cloned().collect();
        for (module, file) in tree.files.clone() {
            let refs = references(&parsed[&file], &module, &modules);
            let targets = refs
                .into_iter()
                .map(|target| tree.file_of(&target))
                .filter(|target| *target != file)
                .collect();
            tree.edges.insert(file, targets);
        }
        tree
    }

    /// Records `module` in `file` and, recursively, the modules it declares.
    fn declare(
        &mut self,
        src: &Path,
        module: ModulePath,
        file: String,
        parsed: &mut BTreeMap<String, Vec<Token>>,
    ) {
        let text = fs::read_to_string(src.join(&file))
            .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let tokens = tokens(&code_only(&text));
        // `a.rs` and `a/mod.rs` keep their submodules in `a/`; the crate
        // roots in `src/`.
        let stem = Path::new(&file).with_extension("");
        let dir = match stem.file_name().and_then(|n| n.to_str()) {
            Some("lib" | "main" | "mod") => {
                stem.parent().map(Path::to_path_buf).unwrap_or_default()
            }
            _ => stem,
        };
        for name in declared_modules(&tokens) {
            let flat = dir.join(format!("{name}.rs"));
            let nested = dir.join(&name).join("mod.rs");
            let child = if src.join(&flat).exists() {
                flat
            } else {
                nested
            };
            let mut path = module.1.clone();
            path.push(name);
            self.declare(src, (module.0, path), child.display().to_string(), parsed);
        }
        parsed.insert(file.clone(), tokens);
        self.files.insert(module, file);
    }

    /// The file that holds `module`: its own, or that of the nearest
    /// enclosing module with one (an inline `mod tests { … }`).
    fn file_of(&self, module: &ModulePath) -> String {
        let (krate, path) = module;
        (0..=path.len())
            .rev()
            .find_map(|n| self.files.get(&(*krate, path[..n].to_vec())))
            .cloned()
            .expect("every crate has a root file")
    }

    /// Whether `file` is `module`'s own file or that of one of its ancestors.
    fn contains(&self, file: &str, module: &ModulePath) -> bool {
        let (krate, path) = module;
        (0..=path.len()).any(|n| {
            self.files
                .get(&(*krate, path[..n].to_vec()))
                .map(String::as_str)
                == Some(file)
        })
    }

    fn module_of(&self, file: &str) -> &ModulePath {
        self.files
            .iter()
            .find(|(_, f)| f.as_str() == file)
            .map(|(m, _)| m)
            .expect("every file was declared")
    }

    /// The file-level graph: edges to the files a file does not contain.
    fn file_graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.edges
            .iter()
            .map(|(file, targets)| {
                let kept = targets
                    .iter()
                    .filter(|t| !self.contains(file, self.module_of(t)))
                    .cloned()
                    .collect();
                (file.clone(), kept)
            })
            .collect()
    }

    /// The top-level module of a file: the binary's root counts as `cli`
    /// (it only hands over to it); the library's root is none.
    fn top_level(&self, file: &str) -> Option<String> {
        match self.module_of(file) {
            (_, path) if !path.is_empty() => Some(path[0].clone()),
            (Crate::Bin, _) => Some("cli".into()),
            (Crate::Lib, _) => None,
        }
    }

    fn top_level_graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (file, targets) in &self.edges {
            let Some(from) = self.top_level(file) else {
                continue;
            };
            let entry = graph.entry(from.clone()).or_default();
            for to in targets.iter().filter_map(|t| self.top_level(t)) {
                if to != from {
                    entry.insert(to);
                }
            }
        }
        graph
    }
}

/// The modules `tokens` (the file of `module`) refer to.
fn references(
    tokens: &[Token],
    module: &ModulePath,
    modules: &BTreeSet<ModulePath>,
) -> Vec<ModulePath> {
    let mut found = Vec::new();
    // The brace depth just inside each enclosing inline module.
    let mut inline: Vec<usize> = Vec::new();
    let mut scope = module.1.clone();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let here: ModulePath = (module.0, scope.clone());
        match &tokens[i] {
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(name), Some(Token::Punct('{'))) =
                    (ident(tokens.get(i + 1)), tokens.get(i + 2))
                {
                    scope.push(name.to_string());
                    depth += 1;
                    inline.push(depth);
                    i += 3;
                    continue;
                }
            }
            Token::Ident(kw) if kw == "use" => {
                let (paths, next) = use_paths(tokens, i + 1);
                for path in paths {
                    // In a `use`, a path may also start at a child module.
                    let child = (module.0, [here.1.clone(), vec![path[0].clone()]].concat());
                    if is_anchor(&path[0]) || modules.contains(&child) {
                        found.extend(resolve(&here, &path, modules));
                    }
                }
                i = next;
                continue;
            }
            Token::Ident(first)
                if is_anchor(first) && tokens.get(i + 1) == Some(&Token::PathSep) =>
            {
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while let (Some(Token::PathSep), Some(name)) =
                    (tokens.get(j), ident(tokens.get(j + 1)))
                {
                    path.push(name.to_string());
                    j += 2;
                }
                found.extend(resolve(&here, &path, modules));
                i = j;
                continue;
            }
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                    scope.pop();
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Whether a path starting with `name` names a module of this workspace.
fn is_anchor(name: &str) -> bool {
    matches!(name, "crate" | "super" | "self" | LIBRARY)
}

/// The module `path`, written in `here`, leads to: followed as far as its
/// segments name modules.
fn resolve(
    here: &ModulePath,
    path: &[String],
    modules: &BTreeSet<ModulePath>,
) -> Option<ModulePath> {
    let (mut krate, mut at) = here.clone();
    let mut rest = path;
    while let Some((first, tail)) = rest.split_first() {
        match first.as_str() {
            "crate" => at.clear(),
            LIBRARY => {
                krate = Crate::Lib;
                at.clear();
            }
            "super" => {
                at.pop()?;
            }
            "self" => {}
            _ => break,
        }
        rest = tail;
    }
    for segment in rest {
        let mut deeper = at.clone();
        deeper.push(segment.clone());
        if !modules.contains(&(krate, deeper.clone())) {
            break;
        }
        at = deeper;
    }
    Some((krate, at))
}

/// Every circle in `graph`, each as the path that closes it.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit<'g>(
        node: &'g str,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(start) = stack.iter().position(|n| *n == node) {
            let mut circle: Vec<String> = stack[start..].iter().map(|n| n.to_string()).collect();
            circle.push(node.to_string());
            found.push(circle);
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, found);
        }
        stack.pop();
        done.insert(node);
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// Fails with every circle of `graph` spelled out, one a line.
fn assert_no_circles(graph: &BTreeMap<String, BTreeSet<String>>, between: &str) {
    let found = circles(graph);
    assert!(
        found.is_empty(),
        "import circles between {between}:\n{}",
        spelled_out(&found)
    );
}

fn spelled_out(circles: &[Vec<String>]) -> String {
    circles
        .iter()
        .map(|c| format!("  {}", c.join(" → ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    assert_no_circles(&Tree::read().file_graph(), "files");
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    assert_no_circles(&Tree::read().top_level_graph(), "top-level modules");
}

#[test]
fn top_level_modules_import_only_lower_layers() {
    let layer_of = |module: &str| {
        LAYERS
            .iter()
            .position(|(_, members)| members.contains(&module))
    };
    // This test's own module imports nothing of the crate.
    let this = module_path!().rsplit("::").next();
    let mut wrong = Vec::new();
    for (from, targets) in Tree::read().top_level_graph() {
        if Some(from.as_str()) == this {
            continue;
        }
        let Some(own) = layer_of(&from) else {
            wrong.push(format!(
                "  {from}: in no layer (add it to LAYERS and to CONTRIBUTING.md)"
            ));
            continue;
        };
        for to in targets {
            match layer_of(&to) {
                Some(layer) if layer < own => {}
                Some(layer) => wrong.push(format!(
                    "  {from} ({}) imports {to} ({}), which is not below it",
                    LAYERS[own].0, LAYERS[layer].0
                )),
                None => {} // reported as `from` of its own
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn comments_and_literals_are_not_read_as_paths() {
    let code = code_only(
        "use crate::a; // crate::b\n/* crate::c /* nested */ crate::d */ \"crate::e\" \
         r#\"crate::f\"# '\"' 'x' crate::g::<'static>",
    );
    let paths: Vec<String> = tokens(&code)
        .iter()
        .filter_map(|t| ident(Some(t)).map(str::to_string))
        .collect();
    assert_eq!(paths, ["use", "crate", "a", "crate", "g", "static"]);
}

#[test]
fn a_use_tree_gives_every_path_in_it() {
    let tokens = tokens("super::{a::{self, B}, c::*, d as e};");
    let (paths, end) = use_paths(&tokens, 0);
    let paths: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        ["super::a::self", "super::a::B", "super::c", "super::d"]
    );
    assert_eq!(end, tokens.len());
}

#[test]
fn a_circle_is_spelled_out() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_string(), BTreeSet::from([to.to_string()])))
        .collect();
    assert_eq!(spelled_out(&circles(&graph)), "  a → b → c → a");
    let dag: BTreeMap<String, BTreeSet<String>> =
        BTreeMap::from([("a".into(), BTreeSet::from(["b".into()]))]);
    assert!(circles(&dag).is_empty());
}
