//! docs/TUTORIAL.md cannot rot: every ```` ```console ```` block in it is a
//! list of `$ command` lines, each followed by the output it printed. This test
//! runs every command, in order, with `sh -c` from the repository root (so
//! pipes and `-o target/…` work as the reader types them), `tilec` on `PATH`
//! (the binary cargo built for this test) and a fresh compile cache, and
//! compares stdout and stderr together (`2>&1`, so in the order printed) with
//! the text in the document.
//!
//! Before comparing, both sides are normalised for what legitimately varies:
//! times (`141.885 ms`, `0.2 s`) become `<time>` and the test's cache
//! directory reads `~/.cache/tile`; trailing spaces are ignored.
//! `BLESS=1 cargo test -p tilec --test tutorial` writes the real outputs back
//! into the document (times as measured). Blocks fenced as `sh` or `text` are
//! not run (the GPU part of the tutorial). The `tile-tune` commands (argument
//! errors, found before the GPU) run the `tile-tune` this test builds.

use std::path::{Path, PathBuf};
use std::process::Command;

const DOC: &str = "docs/TUTORIAL.md";
const BLESS: &str = "BLESS=1 cargo test -p tilec --test tutorial";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// One `$ command` line of a console block and the output written under it.
struct Step {
    /// Index of the `$ ` line in the document's lines.
    line: usize,
    command: String,
    expected: Vec<String>,
    /// Index one past the last output line.
    end: usize,
}

fn parse(lines: &[&str]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut in_console = false;
    for (i, l) in lines.iter().enumerate() {
        if !in_console {
            in_console = l.trim_end() == "```console";
            continue;
        }
        if l.starts_with("```") {
            in_console = false;
            continue;
        }
        if let Some(cmd) = l.strip_prefix("$ ") {
            steps.push(Step {
                line: i,
                command: cmd.to_string(),
                expected: vec![],
                end: i + 1,
            });
        } else if let Some(s) = steps.last_mut() {
            s.expected.push(l.to_string());
            s.end = i + 1;
        } else {
            panic!(
                "{DOC}:{}: a console block must start with a `$ ` line",
                i + 1
            );
        }
    }
    steps
}

/// Replace every number directly followed by a time unit with `<time>`.
fn normalise_times(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let starts_number = b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if starts_number {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                j += 1;
            }
            let rest = &line[j..];
            let unit = ["ms", "µs", "s"].iter().find(|u| {
                rest.strip_prefix(' ')
                    .and_then(|r| r.strip_prefix(**u))
                    .is_some_and(|r| !r.starts_with(|c: char| c.is_alphanumeric()))
            });
            if let Some(u) = unit {
                out.push_str("<time>");
                i = j + 1 + u.len();
                continue;
            }
            out.push_str(&line[i..j]);
            i = j;
            continue;
        }
        let c = line[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn normalise(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .map(|l| normalise_times(l.trim_end()))
        .collect();
    while v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

/// Build `tile-tune` (package dsl-examples, which cargo does not build for
/// this test) beside this test's `tilec`, in the same profile and target
/// directory, so that the tutorial's `tile-tune` commands find it on PATH.
fn build_tile_tune(tilec: &Path) {
    let dir = tilec.parent().expect("tilec's directory");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let target_dir = dir.parent().expect("the target directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "dsl-examples",
            "--bin",
            "tile-tune",
        ])
        .args(["--profile", profile, "--target-dir"])
        .arg(target_dir)
        .current_dir(repo_root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building tile-tune for {DOC} failed");
}

#[test]
fn tutorial_console_blocks_print_what_the_document_says() {
    let started = std::time::Instant::now();
    let root = repo_root();
    let doc_path = root.join(DOC);
    let text = std::fs::read_to_string(&doc_path).expect("docs/TUTORIAL.md");
    let lines: Vec<&str> = text.lines().collect();
    let steps = parse(&lines);
    assert!(
        steps.len() >= 8,
        "only {} console commands in {DOC}",
        steps.len()
    );

    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let tilec = PathBuf::from(env!("CARGO_BIN_EXE_tilec"));
    let path = format!(
        "{}:{}",
        tilec.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The tutorial writes its outputs under target/ (there once tilec is built
    // there; a CARGO_TARGET_DIR elsewhere leaves it absent).
    std::fs::create_dir_all(root.join("target")).unwrap();
    // What the commands write (`-o FILE`) is removed first, so a rerun sees
    // what a reader's first run sees (`tilec pack` says `unchanged` over an
    // identical pack).
    for s in &steps {
        let words: Vec<&str> = s.command.split_whitespace().collect();
        for w in words.windows(2).filter(|w| w[0] == "-o") {
            let _ = std::fs::remove_file(root.join(w[1]));
        }
    }

    if steps.iter().any(|s| s.command.starts_with("tile-tune ")) {
        build_tile_tune(&tilec);
    }

    let bless = std::env::var_os("BLESS").is_some_and(|v| v == "1");
    let mut actual_outputs = Vec::new();
    let mut failures = Vec::new();
    for s in &steps {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{} 2>&1", s.command))
            .current_dir(&root)
            .env("PATH", &path)
            .env("TILE_CACHE_DIR", &cache)
            .env("RUST_BACKTRACE", "0")
            .env_remove("TILE_CACHE")
            .env_remove("TILE_ARCH")
            .output()
            .expect("sh runs");
        let shown = String::from_utf8_lossy(&out.stdout)
            .replace(&cache.display().to_string(), "~/.cache/tile");
        let actual: Vec<String> = shown.lines().map(|l| l.trim_end().to_string()).collect();
        if normalise(&actual) != normalise(&s.expected) {
            failures.push(format!(
                "{DOC}:{}: `{}` printed\n{}\n--- but the document says\n{}\n",
                s.line + 1,
                s.command,
                actual.join("\n"),
                s.expected.join("\n")
            ));
        }
        actual_outputs.push(actual);
    }

    if bless && !failures.is_empty() {
        let mut out: Vec<String> = Vec::new();
        let mut next = 0;
        for (s, actual) in steps.iter().zip(&actual_outputs) {
            out.extend(lines[next..=s.line].iter().map(|l| l.to_string()));
            out.extend(actual.iter().cloned());
            next = s.end;
        }
        out.extend(lines[next..].iter().map(|l| l.to_string()));
        let mut new_text = out.join("\n");
        new_text.push('\n');
        std::fs::write(&doc_path, new_text).unwrap();
        eprintln!("blessed {} command(s) in {DOC}", failures.len());
        return;
    }
    eprintln!(
        "{} tutorial commands in {:.1} s",
        steps.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} tutorial commands print something else than {DOC} says (rerun with `{BLESS}` to update it):\n\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n")
    );
}

#[test]
fn times_are_normalised_and_nothing_else() {
    assert_eq!(
        normalise_times("grid (250, 4, 1): 1000 program instances in 141.885 ms"),
        "grid (250, 4, 1): 1000 program instances in <time>"
    );
    assert_eq!(
        normalise_times("took 2 s, 3 µs; 4 sets"),
        "took <time>, <time>; 4 sets"
    );
    assert_eq!(normalise_times("sm_90 x2 s"), "sm_90 x2 s");
}
