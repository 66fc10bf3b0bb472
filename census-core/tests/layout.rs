//! The layout of `census-core/src/` (the runtime): its rooms import one another one way only, and the README's
//! layout table names each of them.
//!
//! A room is a file or folder directly under `src/` (`sampler.rs` and `sampler/` are one room),
//! and each folder under `src/integrations/`. A room imports another when one of its files names
//! `crate::other` outside a comment (or a doc attribute's text). `lib.rs` and
//! `integrations/mod.rs`, which declare and re-export the others, are no rooms.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path.strip_prefix(src()).expect("under src/").to_path_buf());
        }
    }
}

/// The room of a file (`None` for `lib.rs`), by its path under `src/`.
fn room_of(path: &Path) -> Option<String> {
    let parts: Vec<String> = path
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    match parts.as_slice() {
        [only] if only == "lib" => None,
        [integrations, module] if integrations == "integrations" && module == "mod" => None,
        [integrations, inner, ..] if integrations == "integrations" && inner != "mod" => {
            Some(format!("integrations/{inner}"))
        }
        [first, ..] => Some(first.clone()),
        [] => None,
    }
}

/// The rooms a line of code names: `crate::room`, `crate::integrations::inner`, and each name of
/// `crate::{a, b::c}`.
fn named(line: &str) -> Vec<String> {
    let mut rooms = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let paths: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .collect(),
            None => vec![rest],
        };
        for path in paths {
            let mut segments = path
                .trim()
                .split("::")
                .map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next());
            let Some(Some(first)) = segments.next() else {
                continue;
            };
            if first.is_empty() || first.starts_with(char::is_uppercase) {
                continue;
            }
            match (first, segments.next().flatten()) {
                ("integrations", Some(inner)) if !inner.is_empty() => {
                    rooms.push(format!("integrations/{inner}"));
                }
                _ => rooms.push(first.to_owned()),
            }
        }
    }
    rooms
}

/// Which rooms each room imports, with where.
fn imports() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut found = Vec::new();
    files(&src(), &mut found);
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for path in found {
        let Some(room) = room_of(&path) else {
            continue;
        };
        let text = fs::read_to_string(src().join(&path)).expect("a source file");
        let edges = graph.entry(room.clone()).or_default();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            // A doc attribute's text (`doc = "..."`, written so for a feature's link) is a
            // comment too.
            let code = line.split("doc = \"").next().unwrap_or_default();
            for target in named(code) {
                if target != room {
                    edges
                        .entry(target)
                        .or_insert_with(|| format!("{}:{}", path.display(), number + 1));
                }
            }
        }
    }
    graph
}

#[test]
fn no_room_imports_one_that_imports_it_back() {
    let graph = imports();
    // Depth-first, keeping the path: a room met again on the path closes a cycle.
    fn visit(
        room: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|r| r == room) {
            let mut cycle = path[at..].to_vec();
            cycle.push(room.to_owned());
            return Some(cycle);
        }
        if done.contains(room) {
            return None;
        }
        path.push(room.to_owned());
        for target in graph.get(room).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(target, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(room.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for room in graph.keys() {
        if let Some(cycle) = visit(room, &graph, &mut Vec::new(), &mut done) {
            let evidence: Vec<String> = cycle
                .windows(2)
                .map(|pair| format!("{} -> {} ({})", pair[0], pair[1], graph[&pair[0]][&pair[1]]))
                .collect();
            panic!("rooms that import each other:\n{}", evidence.join("\n"));
        }
    }
}

/// The row of the README's layout table that names each room.
fn readme_rows(rooms: impl IntoIterator<Item = String>) -> BTreeMap<String, Option<usize>> {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("the workspace's README");
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|line| !line.starts_with("| module | holds |"))
        .take_while(|line| line.starts_with('|'))
        .collect();
    assert!(!table.is_empty(), "the README has its layout table");
    rooms
        .into_iter()
        .map(|room| {
            let names = [format!("`{room}.rs`"), format!("`{room}/`")];
            // Named in the first column; the second may mention other rooms.
            let row = table.iter().position(|row| {
                let modules = row.split('|').nth(1).unwrap_or_default();
                names.iter().any(|name| modules.contains(name.as_str()))
            });
            (room, row)
        })
        .collect()
}

#[test]
fn the_readme_s_layout_table_names_every_room() {
    let missing: Vec<String> = readme_rows(imports().into_keys())
        .into_iter()
        .filter_map(|(room, row)| row.is_none().then_some(room))
        .collect();
    assert!(
        missing.is_empty(),
        "rooms the README's layout table does not name: {missing:?}"
    );
}

#[test]
fn a_room_imports_only_rooms_the_readme_lists_above_it() {
    let graph = imports();
    let rows = readme_rows(graph.keys().cloned());
    let mut upward = Vec::new();
    for (room, targets) in &graph {
        for (target, at) in targets {
            if let (Some(Some(from)), Some(Some(to))) = (rows.get(room), rows.get(target))
                && to > from
            {
                upward.push(format!("{room} -> {target} ({at})"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports of rooms the README lists below the importer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn a_line_names_the_rooms_it_imports() {
    assert_eq!(named("use crate::record::SpanRecord;"), ["record"]);
    assert_eq!(
        named("use crate::{queue, telemetry};"),
        ["queue", "telemetry"]
    );
    assert_eq!(
        named("let x = crate::integrations::tracing::CensusLayer::new();"),
        ["integrations/tracing"]
    );
    assert_eq!(named("crate::SpanId::random()"), Vec::<String>::new());
    assert_eq!(
        room_of(Path::new("integrations/http/tower.rs")).as_deref(),
        Some("integrations/http")
    );
    assert_eq!(
        room_of(Path::new("span/future.rs")).as_deref(),
        Some("span")
    );
    assert_eq!(room_of(Path::new("lib.rs")), None);
    assert_eq!(room_of(Path::new("integrations/mod.rs")), None);
}
