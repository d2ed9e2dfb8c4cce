//! The library's top-level modules import each other without cycles (issue 13: `client` ↔
//! `config` ↔ `tls` ↔ `discovery` and `source` ↔ `devices` were). A cycle means two modules that
//! can only be understood, tested and moved together.
//!
//! Read from the source text: a module's files (`src/NAME.rs`, or everything under
//! `src/NAME/`) depend on every top-level module they name as `crate::OTHER` (or, in the
//! module's own root file, `super::OTHER`), test code included; comment lines are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

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

/// Top-level module name → its files, and for each file whether it is the module's root.
fn modules(src: &Path) -> BTreeMap<String, Vec<(PathBuf, bool)>> {
    let mut mods = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name == "bin" {
                continue;
            }
            let mut files = Vec::new();
            rust_files(&path, &mut files);
            let root = path.join("mod.rs");
            let files = files.into_iter().map(|f| (f.clone(), f == root)).collect();
            mods.insert(name, files);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            mods.insert(name, vec![(path, true)]);
        }
    }
    mods
}

/// `crate::NAME` / `super::NAME` references in code (not comments) to any of `names`.
fn references(text: &str, prefix: &str, names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices(prefix) {
            let rest = &line[at + prefix.len()..];
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `use crate::{a, b}` lists several.
            let listed: Vec<String> = if rest.starts_with('{') {
                rest[1..rest.find('}').unwrap_or(rest.len())]
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or("").to_string())
                    .collect()
            } else {
                vec![ident]
            };
            found.extend(listed.into_iter().filter(|n| names.contains(n)));
        }
    }
    found
}

fn graph(src: &Path) -> Graph {
    let mods = modules(src);
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(name, files)| {
            let mut deps = BTreeSet::new();
            for (file, is_root) in files {
                let text = std::fs::read_to_string(file).unwrap();
                deps.extend(references(&text, "crate::", &names));
                if *is_root {
                    deps.extend(references(&text, "super::", &names));
                }
            }
            deps.remove(name);
            (name.clone(), deps)
        })
        .collect()
}

/// One cycle, as the path of modules around it, if there is any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The reader works: modules known to depend on others are seen to.
    assert!(
        g["grpc"].contains("hub") && g["hub"].contains("source"),
        "{g:#?}"
    );
    if let Some(cycle) = find_cycle(&g) {
        panic!("import cycle: {}\n{g:#?}", cycle.join(" → "));
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let g: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_string(), BTreeSet::from([to.to_string()])))
        .collect();
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    let names: BTreeSet<String> = ["config", "tls"].map(String::from).into();
    let text =
        "use crate::{config::Config, tls};\n// crate::hub in a comment\nlet x = crate::tls::f();";
    assert_eq!(references(text, "crate::", &names), names);
}
