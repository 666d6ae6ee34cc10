//! The compile cache through the binary (issue 30 items 2 and 3): a second
//! `tilec pack` of an unchanged directory takes every configuration from the
//! cache and leaves a byte-identical pack untouched; a change to one file
//! recompiles only its configurations; a pack built without the cache is the
//! same bytes; `tilec cache` shows the cache and `tilec cache clear` empties it.

use std::path::Path;
use std::process::Command;

fn tilec(cache: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tilec"))
        .args(args)
        .env("TILE_CACHE_DIR", cache)
        .env_remove("TILE_CACHE")
        .env_remove("TILE_CACHE_MAX_BYTES")
        .envs(env.iter().copied())
        .output()
        .expect("tilec runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const ADD: &str = "kernel add<const BLOCK: i32>(a: *f32, b: *f32, c: *f32, n: i32) {
    let offs = program_id(0) * BLOCK + arange(0, BLOCK);
    let mask = offs < n;
    store(c + offs, load(a + offs, mask, 0.0) + load(b + offs, mask, 0.0), mask);
}

tune add { key: [n], BLOCK: [256, 512], warps: [4] }
";

const SCALE: &str = "kernel scale<const BLOCK: i32>(x: *f32, y: *f32, n: i32) {
    let offs = program_id(0) * BLOCK + arange(0, BLOCK);
    let mask = offs < n;
    store(y + offs, load(x + offs, mask, 0.0) * 2.0, mask);
}

tune scale { key: [n], BLOCK: [256], warps: [4, 8] }
";

#[test]
fn second_pack_comes_from_the_cache_and_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, cache) = (tmp.path().join("src"), tmp.path().join("cache"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("add.tile"), ADD).unwrap();
    std::fs::write(src.join("scale.tile"), SCALE).unwrap();
    let pack = tmp.path().join("out.tpack");
    let pack_args = [
        "pack",
        src.to_str().unwrap(),
        "-o",
        pack.to_str().unwrap(),
        "--arch",
        "sm_90",
    ];
    let (code, _, err) = tilec(&cache, &[], &pack_args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("4 configs compiled, 0 from the cache"),
        "{err}"
    );
    assert!(err.contains("wrote "), "{err}");
    let first = std::fs::read(&pack).unwrap();
    let mtime = std::fs::metadata(&pack).unwrap().modified().unwrap();

    // Nothing changed: every configuration from the cache, the same bytes,
    // and the pack is not rewritten.
    let (code, _, err) = tilec(&cache, &[], &pack_args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("0 configs compiled, 4 from the cache"),
        "{err}"
    );
    assert!(err.contains("unchanged "), "{err}");
    assert_eq!(std::fs::read(&pack).unwrap(), first);
    assert_eq!(std::fs::metadata(&pack).unwrap().modified().unwrap(), mtime);

    // --quiet says nothing.
    let mut quiet = pack_args.to_vec();
    quiet.push("--quiet");
    let (code, out, err) = tilec(&cache, &[], &quiet);
    assert_eq!(code, 0, "{err}");
    assert_eq!((out.as_str(), err.as_str()), ("", ""));

    // A hit is byte-identical to a fresh compile: the pack built without the
    // cache is the same file.
    let fresh = tmp.path().join("fresh.tpack");
    let mut nocache = pack_args.to_vec();
    nocache[3] = fresh.to_str().unwrap();
    let (code, _, err) = tilec(&cache, &[("TILE_CACHE", "0")], &nocache);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("4 configs compiled (cache off)"), "{err}");
    assert_eq!(std::fs::read(&fresh).unwrap(), first);

    // A one-line change in one file recompiles only that file's configurations.
    std::fs::write(src.join("scale.tile"), SCALE.replace("* 2.0", "* 3.0")).unwrap();
    let (code, _, err) = tilec(&cache, &[], &pack_args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("2 configs compiled, 2 from the cache"),
        "{err}"
    );
    assert!(err.contains("wrote "), "{err}");
    assert_ne!(std::fs::read(&pack).unwrap(), first);

    // `tilec cache` shows the six entries; `tilec cache clear` deletes them.
    let (code, out, err) = tilec(&cache, &[], &["cache"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("path: {}", cache.display())), "{out}");
    assert!(out.contains("entries: 6"), "{out}");
    let (code, out, err) = tilec(&cache, &[], &["cache", "clear"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("6 entries"), "{out}");
    let (code, out, _) = tilec(&cache, &[], &["cache"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("entries: 0") && out.contains("bytes: 0 "),
        "{out}"
    );

    // After a clear, everything compiles again, to the same pack.
    let (code, _, err) = tilec(&cache, &[], &pack_args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("4 configs compiled, 0 from the cache"),
        "{err}"
    );
}

/// `tilec build --emit ptx` goes through the cache too: the second build is a
/// hit with the same output; `--time` names every MLIR pass and LLVM step.
#[test]
fn build_uses_the_cache_and_time_lists_every_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let file = tmp.path().join("add.tile");
    std::fs::write(&file, ADD).unwrap();
    let args = ["build", file.to_str().unwrap(), "--emit", "ptx"];
    let (code, first, err) = tilec(&cache, &[], &args);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = tilec(&cache, &[], &["cache"]);
    assert!(out.contains("entries: 1"), "{out}");
    let (code, second, err) = tilec(&cache, &[], &args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(first, second);
    let (code, third, err) = tilec(&cache, &[], &[&args[..], &["--time"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(third, first, "a cache hit is what a fresh compile gives");
    for step in [
        "mlir-context",
        "tir-to-mlir",
        "lower-to-mlir",
        "mlir-passes",
        "convert-scf-to-cf",
        "convert-gpu-to-nvvm",
        "reconcile-unrealized-casts",
        "llvm-to-ptx",
        "translate-to-llvm-ir",
        "llvm-optimise",
        "nvptx-codegen",
        "total",
    ] {
        assert!(err.contains(step), "`{step}` missing from --time:\n{err}");
    }
}
