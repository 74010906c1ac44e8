//! The shape of the code: the modules of `src/` import each other without circles, at the level
//! of top-level modules and of their children (`auth::login`, `pipeline::route`), so that each
//! can be read, tested and replaced on its own. Drawn from the `crate::` paths in the sources
//! (test modules and comments left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name at `depth` (1: `auth`, 2: `auth::login`) -> the modules it names.
fn imports(depth: usize) -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs = vec![src.clone()];
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
            let relative = path.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            let name = parts[..parts.len().min(depth)].join("::");
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let named = graph.entry(name.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let path: Vec<&str> = line[at + "crate::".len()..]
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                        .next()
                        .unwrap_or_default()
                        .split("::")
                        .take_while(|s| s.starts_with(|c: char| c.is_ascii_lowercase()))
                        .take(depth)
                        .collect();
                    let target = path.join("::");
                    if !target.is_empty() && target != name {
                        named.insert(target);
                    }
                }
            }
        }
    }
    graph
}

/// A circle through `start`, if there is one: the shortest, as a list of modules.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(module) = queue.pop_front() {
        for next in graph.get(module).into_iter().flatten() {
            if next == start {
                let mut path = vec![module.to_owned()];
                while let Some(&before) = came_from.get(path.last().unwrap().as_str()) {
                    path.push(before.to_owned());
                }
                path.reverse();
                path.push(start.to_owned());
                return Some(path);
            }
            if graph.contains_key(next) && !came_from.contains_key(next.as_str()) {
                came_from.insert(next, module);
                queue.push_back(next);
            }
        }
    }
    None
}

#[test]
fn modules_import_each_other_without_circles() {
    for depth in [1, 2] {
        let graph = imports(depth);
        assert!(graph.len() > 20, "the sources were not read: {graph:?}");
        assert!(
            graph["pipeline"].contains("refused") || graph.contains_key("pipeline::route"),
            "imports were not read"
        );
        let circles: Vec<String> = graph
            .keys()
            .filter_map(|module| circle(&graph, module))
            .map(|path| path.join(" -> "))
            .collect();
        assert!(circles.is_empty(), "depth {depth}: {circles:#?}");
    }
}
