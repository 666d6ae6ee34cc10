//! Tidy: the architecture as tests (docs/ARCHITECTURE.md, "Invariants").
//! - Each crate's dependencies are the layering: a crate that gains one it
//!   must not have (the runtime linking the parser, a GPU-side binary linking
//!   LLVM) fails here, naming the path that brought it in.
//! - No import cycles between the top-level modules of a crate.
//! - No source file above 1,200 lines outside tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tile_testkit::root;

/// The workspace's resolved packages: id → name, and id → the ids of its
/// normal (non-dev, non-build) dependencies.
struct Graph {
    names: BTreeMap<String, String>,
    deps: BTreeMap<String, Vec<String>>,
}

/// `cargo metadata`, read once for every rule.
fn dependency_graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        names.insert(
            p["id"].as_str().unwrap().to_string(),
            p["name"].as_str().unwrap().to_string(),
        );
    }
    let mut deps = BTreeMap::new();
    for n in meta["resolve"]["nodes"].as_array().unwrap() {
        let normal: Vec<String> = n["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect();
        deps.insert(n["id"].as_str().unwrap().to_string(), normal);
    }
    Graph { names, deps }
}

/// Every package `krate` links (normal dependencies, transitively), with the
/// chain that first reached it.
fn reachable(graph: &Graph, krate: &str) -> BTreeMap<String, Vec<String>> {
    let Graph { names, deps } = graph;
    let start = names
        .iter()
        .find(|(_, n)| n.as_str() == krate)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("no package `{krate}` in the workspace"));
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stack = vec![(start, vec![krate.to_string()])];
    while let Some((id, path)) = stack.pop() {
        for d in deps.get(&id).into_iter().flatten() {
            let name = names[d].clone();
            if seen.contains_key(&name) {
                continue;
            }
            let mut p = path.clone();
            p.push(name.clone());
            seen.insert(name, p.clone());
            stack.push((d.clone(), p));
        }
    }
    seen
}

const LLVM: &[&str] = &["melior", "inkwell", "mlir-sys", "llvm-sys"];
const PARSER: &[&str] = &["nom", "miette"];
const CLI: &[&str] = &["clap", "indicatif"];
const CUDA: &[&str] = &["cudarc"];
const WORKSPACE: &[&str] = &[
    "tile-ir",
    "tile-front",
    "tile-interp",
    "tile-codegen",
    "tilec",
    "tile-runtime",
    "tile-testkit",
    "mhc",
    "mhc-train",
    "dsl-examples",
    "integration-tests",
    "tile-python",
];

/// A crate, the workspace crates it may link, and the external groups it must not.
struct Rule {
    krate: &'static str,
    allowed: &'static [&'static str],
    forbidden: &'static [&'static [&'static str]],
}

const RULES: &[Rule] = &[
    Rule {
        krate: "tile-ir",
        allowed: &[],
        forbidden: &[LLVM, PARSER, CLI, CUDA],
    },
    Rule {
        krate: "tile-front",
        allowed: &["tile-ir"],
        forbidden: &[LLVM, CLI, CUDA],
    },
    Rule {
        krate: "tile-interp",
        allowed: &["tile-ir"],
        forbidden: &[LLVM, PARSER, CLI, CUDA],
    },
    Rule {
        krate: "tile-codegen",
        allowed: &["tile-ir"],
        forbidden: &[PARSER, CLI, CUDA],
    },
    Rule {
        krate: "tile-runtime",
        allowed: &["tile-ir", "tile-interp"],
        forbidden: &[LLVM, PARSER, CLI],
    },
    Rule {
        krate: "mhc",
        allowed: &["tile-ir", "tile-front", "tile-interp", "tile-runtime"],
        forbidden: &[LLVM, CLI],
    },
    Rule {
        krate: "mhc-train",
        allowed: &[
            "tile-ir",
            "tile-front",
            "tile-interp",
            "tile-runtime",
            "mhc",
        ],
        forbidden: &[LLVM],
    },
    Rule {
        krate: "dsl-examples",
        allowed: &["tile-ir", "tile-interp", "tile-runtime"],
        forbidden: &[LLVM, PARSER],
    },
    Rule {
        krate: "tile-python",
        allowed: &["tile-ir", "tile-interp", "tile-runtime"],
        forbidden: &[LLVM, PARSER, CLI],
    },
    Rule {
        krate: "tile-testkit",
        allowed: &["tile-ir", "tile-interp", "tile-runtime"],
        forbidden: &[LLVM, PARSER, CLI],
    },
];

#[test]
fn crates_depend_only_on_their_layer() {
    let graph = dependency_graph();
    let mut errors = Vec::new();
    for Rule {
        krate,
        allowed,
        forbidden,
    } in RULES
    {
        let links = reachable(&graph, krate);
        for (dep, path) in &links {
            let bad_workspace =
                WORKSPACE.contains(&dep.as_str()) && !allowed.contains(&dep.as_str());
            let bad_external = forbidden.iter().any(|g| g.contains(&dep.as_str()));
            if bad_workspace || bad_external {
                errors.push(format!(
                    "{krate} must not link {dep} (through {})",
                    path.join(" → ")
                ));
            }
        }
    }
    assert!(errors.is_empty(), "layering broken:\n{}", errors.join("\n"));
}

/// The `src/` directories of the workspace's crates.
fn crate_sources() -> Vec<PathBuf> {
    let r = root();
    ["compiler", "runtime", "mhc-kernels", "tests"]
        .iter()
        .flat_map(|g| std::fs::read_dir(r.join(g)).unwrap().flatten())
        .map(|e| e.path().join("src"))
        .chain([r.join("dsl-examples/src"), r.join("python/src")])
        .filter(|p| p.is_dir())
        .collect()
}

/// The top-level module a file of `src` belongs to (`lib.rs`/`main.rs`: the root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

#[test]
fn no_import_cycles_between_top_level_modules() {
    let mut errors = Vec::new();
    for src in crate_sources() {
        let files = tile_testkit::files_below(&src, &["rs"]);
        let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let Some(m) = top_module(&src, f) else {
                continue;
            };
            // Code only: a doc link to another module is no dependency.
            let text: String = std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + 7..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != m && modules.contains(&name) {
                    edges.entry(m.clone()).or_default().insert(name);
                }
            }
            // `super::x` from a file directly under a module directory stays inside it.
        }
        // A cycle: some module reaches itself.
        for start in &modules {
            let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
            let mut seen = BTreeSet::new();
            while let Some(path) = stack.pop() {
                let last = path.last().unwrap();
                for next in edges.get(last).into_iter().flatten() {
                    if next == start {
                        let mut p = path.clone();
                        p.push(next.clone());
                        errors.push(format!("{}: {}", src.display(), p.join(" → ")));
                    } else if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push(p);
                    }
                }
            }
        }
    }
    errors.sort();
    errors.dedup();
    assert!(errors.is_empty(), "import cycles:\n{}", errors.join("\n"));
}

#[test]
fn no_source_file_above_1200_lines() {
    let mut errors = Vec::new();
    for src in crate_sources() {
        let files = tile_testkit::files_below(&src, &["rs"]);
        for f in files {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            if n > 1200 {
                errors.push(format!("{}: {n} lines", f.display()));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "split these by concern:\n{}",
        errors.join("\n")
    );
}
