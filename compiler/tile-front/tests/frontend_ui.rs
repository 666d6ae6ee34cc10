//! Diagnostics snapshots: every `tests/ui/*.tile` is a program with errors; its
//! rendered diagnostics are snapshotted, and every error code of `diag::Code`
//! must be produced by at least one of them.

use std::collections::BTreeSet;
use std::path::Path;
use tile_front::diag::Code;
use tile_front::frontend::{parse_program, SourceFile};

/// All diagnostics of a file, as `tilec check` reports them (warnings first).
fn diagnose(src: &SourceFile) -> tile_front::diag::Diagnostics {
    match parse_program(src) {
        Err(d) => d,
        Ok(p) => {
            let mut d = p.warnings().clone();
            d.extend(p.check_all());
            d
        }
    }
}

fn ui_files() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/ui exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tile"))
        .collect();
    files.sort();
    files
}

#[test]
fn ui_snapshots() {
    let files = ui_files();
    assert!(
        files.len() >= 40,
        "expected at least 40 ui tests, found {}",
        files.len()
    );
    let mut silent = Vec::new();
    for path in files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("x")
            .to_string();
        // Bytes, not text: `invalid_utf8.tile` is not UTF-8 on purpose.
        let bytes = std::fs::read(&path).expect("readable");
        let src = SourceFile::from_bytes(format!("ui/{stem}.tile"), bytes);
        let d = diagnose(&src);
        if d.is_empty() {
            silent.push(stem);
            continue;
        }
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("snapshots/ui");
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_snapshot!(stem, d.render(&src)));
    }
    assert!(
        silent.is_empty(),
        "ui tests without a diagnostic: {silent:?}"
    );
}

#[test]
fn every_code_has_a_ui_test() {
    let mut seen = BTreeSet::new();
    for path in ui_files() {
        let bytes = std::fs::read(&path).expect("readable");
        let src = SourceFile::from_bytes("t.tile", bytes);
        for d in diagnose(&src).iter() {
            seen.insert(d.code);
        }
    }
    // An internal error is a compiler bug: no valid test can produce it.
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| **c != Code::Internal && !seen.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "error codes without a ui test: {missing:?}"
    );
}

#[test]
fn every_code_is_documented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/LANGUAGE.md");
    let doc = std::fs::read_to_string(path).expect("docs/LANGUAGE.md exists");
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !doc.contains(&format!("| {c} |")))
        .collect();
    assert!(
        missing.is_empty(),
        "error codes missing from docs/LANGUAGE.md: {missing:?}"
    );
}
