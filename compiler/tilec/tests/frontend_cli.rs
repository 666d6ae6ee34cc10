//! `tilec check` end to end: exit codes, diagnostics on stderr, `--emit` on stdout.

use std::path::Path;
use std::process::Command;

fn tilec(args: &[&str]) -> (i32, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_tilec"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("tilec runs");
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        s(&out.stdout),
        s(&out.stderr),
    )
}

#[test]
fn check_ok_examples() {
    for f in [
        "vector_add",
        "softmax",
        "rmsnorm",
        "layernorm",
        "matmul",
        "attention",
    ] {
        let (code, _, err) = tilec(&["check", &format!("dsl-examples/{f}.tile")]);
        assert_eq!(code, 0, "{f}: {err}");
        assert!(err.starts_with("ok: "), "{err}");
    }
}

#[test]
fn check_reports_errors_and_fails() {
    let (code, out, err) = tilec(&[
        "check",
        "compiler/tile-front/tests/ui/checker_continues.tile",
    ]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.matches("error[E").count(), 3, "{err}");
    assert!(
        err.contains("--> compiler/tile-front/tests/ui/checker_continues.tile:3:13"),
        "{err}"
    );
}

#[test]
fn emit_stages() {
    let (code, out, _) = tilec(&[
        "check",
        "--emit",
        "tir",
        "dsl-examples/vector_add.tile",
        "-D",
        "BLOCK=2048",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("kernel vector_add<BLOCK = 2048>") && out.contains("arange 0..2048"),
        "{out}"
    );
    let (code, out, _) = tilec(&["check", "--emit", "tokens", "dsl-examples/vector_add.tile"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Kernel") && out.contains("Ident(\"vector_add\")"),
        "{out}"
    );
    let (code, out, _) = tilec(&[
        "check",
        "--emit",
        "ast",
        "dsl-examples/vector_add.tile",
        "--kernel",
        "vector_add",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("KernelDef"), "{out}");
}

#[test]
fn bad_defines_fail_cleanly() {
    let (code, _, err) = tilec(&["check", "dsl-examples/vector_add.tile", "-D", "NOPE=1"]);
    assert_ne!(code, 0);
    assert!(err.contains("NOPE"), "{err}");
    let (code, _, err) = tilec(&["check", "dsl-examples/vector_add.tile", "-D", "BLOCK=1000"]);
    assert_eq!(code, 1);
    assert!(err.contains("error[E0014]"), "{err}");
    let (code, _, err) = tilec(&["check", "no/such/file.tile"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read"), "{err}");
}

/// Issue 22 item 12: a meta-parameter with no value (no default, no tune
/// block, no `-D`) is reported together with the kernel's other errors, which
/// used to appear only once `-D BLOCK=…` was given.
#[test]
fn check_without_a_meta_value_reports_every_error() {
    let file = "compiler/tile-front/tests/ui/meta_missing_body_errors.tile";
    let (code, _, err) = tilec(&["check", file]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("error[E").count(), 3, "{err}");
    for e in [
        "error[E0032]",
        "error[E0009]",
        "error[E0012]",
        "undefined_name",
    ] {
        assert!(err.contains(e), "`{e}` missing: {err}");
    }
    let (code, _, err) = tilec(&["check", file, "-D", "BLOCK=256"]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("error[E").count(), 2, "{err}");
    assert!(!err.contains("E0032"), "{err}");
}

/// `tilec --version` prints the version written into packs, fingerprint
/// included (what a stale pack's error names).
#[test]
fn version_names_the_compiler_fingerprint() {
    let (code, out, _) = tilec(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("tilec {}", tile_ir::VERSION));
    assert!(out.contains(tile_ir::COMPILER_FINGERPRINT), "{out}");
}

/// Issue 22 item 13: a file that is not UTF-8 gets a coded error at the line
/// and column of the first bad byte (it used to be "stream did not contain
/// valid UTF-8", no code, no place), also with `--emit tokens`.
#[test]
fn check_invalid_utf8_is_located() {
    let file = "compiler/tile-front/tests/ui/invalid_utf8.tile";
    for extra in [&[][..], &["--emit", "tokens"][..]] {
        let mut args = vec!["check", file];
        args.extend_from_slice(extra);
        let (code, out, err) = tilec(&args);
        assert_eq!(code, 1, "{err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("error[E0040]: the file is not valid UTF-8: byte 0xE9 at byte offset 46"),
            "{err}"
        );
        assert!(err.contains(&format!("--> {file}:1:47")), "{err}");
        assert!(err.contains("help: source files are UTF-8"), "{err}");
        assert!(!err.contains("stream did not contain"), "{err}");
    }
}

/// Issue 22 item 13: an empty file (or one with only comments) passes, but
/// with a warning instead of silently.
#[test]
fn check_empty_file_warns() {
    let dir = std::env::temp_dir().join(format!("tilec-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let empty = dir.join("empty.tile");
    std::fs::write(&empty, "").expect("write");
    let empty = empty.display().to_string();
    for file in [
        empty.as_str(),
        "compiler/tile-front/tests/ui/empty_file.tile",
        "compiler/tile-front/tests/ui/only_helpers.tile",
    ] {
        let (code, _, err) = tilec(&["check", file]);
        assert_eq!(code, 0, "{file}: {err}");
        assert!(
            err.contains("warning[W0001]: the file defines no kernel"),
            "{err}"
        );
        assert!(err.contains(&format!("--> {file}:1:1")), "{err}");
        assert!(err.contains("ok: 0 kernels"), "{err}");
        assert!(!err.contains("error["), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 20 item 1: `tilec build` says how to launch what it built — block,
/// the grid the tune block declares, dynamic shared memory, hidden TMA
/// parameters — on stderr with the PTX, and as JSON with `--emit launch-json`.
#[test]
fn build_says_how_to_launch() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tilec"))
            .args(args)
            .current_dir(&root)
            .env("TILE_CACHE_DIR", dir.path())
            .output()
            .expect("tilec runs");
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), s(&out.stdout), s(&out.stderr))
    };
    let ptx = dir.path().join("va.ptx");
    let (code, out, err) = run(&[
        "build",
        "dsl-examples/vector_add.tile",
        "-D",
        "BLOCK=2048",
        "--warps",
        "8",
        "-o",
        ptx.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        "launch `vector_add` (BLOCK=2048, warps=8, sm_90):\n  block: 256 threads (32 × 8 warps)\n  grid: [cdiv(n, BLOCK)]\n  dynamic shared memory: 0 bytes\n  hidden parameters: none\n"
    );

    // No `grid:` in the tune block: the caller chooses.
    let (code, _, err) = run(&[
        "build",
        "dsl-examples/rmsnorm.tile",
        "-o",
        ptx.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("  grid: not declared: the caller chooses\n"),
        "{err}"
    );

    // JSON: matmul has a grid and, on sm_90, TMA operands (hidden parameters).
    let (code, out, err) = run(&["build", "dsl-examples/matmul.tile", "--emit", "launch-json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("launch-json is JSON");
    assert_eq!(v["kernel"], "matmul");
    assert_eq!(v["block"], serde_json::json!([128, 1, 1]));
    assert_eq!(v["grid"], serde_json::json!(["cdiv(M, BM) * cdiv(N, BN)"]));
    assert_eq!(v["meta"]["BM"], 64);
    assert_eq!(v["params"].as_array().unwrap().len(), 6);
    let shared = v["shared_bytes"].as_u64().unwrap();
    assert!(shared > 0, "{out}");
    let hidden = v["hidden_params"].as_array().unwrap();
    assert_eq!(hidden.len(), 3, "{out}");
    assert_eq!(hidden[0]["index"], 6);
    assert_eq!(hidden[0]["type"], "tensor_map");
    assert_eq!(hidden[2]["index"], 8);
    assert_eq!(hidden[2]["type"], "i32");
    // The grid expressions round-trip as the runtime reads them.
    let g: Vec<tile_ir::launch::GridExpr> =
        serde_json::from_value(v["grid_exprs"].clone()).unwrap();
    let m = |n: &str| (n == "BM" || n == "BN").then_some(64);
    let p = |n: &str| (n == "M" || n == "N").then_some(100);
    assert_eq!(g[0].eval(&p, &m), Ok(4));
}

/// `tilec build` without a value for everything takes the first
/// configuration of the tune space that agrees with what was given, so the
/// `where:` conditions hold (they once did not: each value was its list's
/// first, pairing N = 4 with the `ctas` meant for N = 2).
#[test]
fn build_defaults_meet_the_tune_blocks_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pair.tile");
    std::fs::write(
        &file,
        "kernel scale<const N: i32, const BC: i32>(x: *f32, y: *f32) {
    let c = program_id(0) * BC + arange(0, BC);
    store(y + c, load(x + c) * (N as f32));
}
tune scale { key: [], N: [2, 4], BC: [256], warps: [1, 2], ctas: [9, 24], where: [(N == 2 && ctas == 24) || (N == 4 && ctas == 9 && warps == 2)] }
",
    )
    .unwrap();
    let ptx = dir.path().join("pair.ptx");
    let build = |extra: &[&str]| {
        let mut args = vec!["build", file.to_str().unwrap(), "-o", ptx.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, _, err) = tilec(&args);
        assert_eq!(code, 0, "{err}");
        err.lines().next().unwrap_or_default().to_string()
    };
    assert_eq!(
        build(&[]),
        "launch `scale` (N=2, BC=256, warps=1, ctas=24, sm_90):"
    );
    assert_eq!(
        build(&["-D", "N=4"]),
        "launch `scale` (N=4, BC=256, warps=2, ctas=9, sm_90):"
    );
    // What is given is kept, even outside the tune space.
    assert_eq!(
        build(&["-D", "N=4", "--warps", "1", "--ctas", "3"]),
        "launch `scale` (N=4, BC=256, warps=1, ctas=3, sm_90):"
    );
}

/// `--explain-moves` names each op that goes through shared memory at its
/// source line and says whether a loop repeats it: `mhc_post_bwd` at N = 8
/// places a sum over C into a row of an [N, N] tile every step (8 moves in
/// its loop); at N = 4 its loop carries partial sums and moves nothing.
#[test]
fn build_explains_the_moves_through_shared_memory() {
    let file = "mhc-kernels/kernels/mhc/mhc.tile";
    let explain = |n: &str| {
        let out =
            std::env::temp_dir().join(format!("explain-moves-{n}-{}.ptx", std::process::id()));
        let (code, _, err) = tilec(&[
            "build",
            file,
            "--kernel",
            "mhc_post_bwd",
            "-D",
            &format!("N={n}"),
            "--explain-moves",
            "-o",
            out.to_str().unwrap(),
        ]);
        let _ = std::fs::remove_file(&out);
        assert_eq!(code, 0, "{err}");
        err
    };
    let wide = explain("8");
    assert!(wide.contains("8 in loops"), "{wide}");
    assert!(
        wide.contains("note: layout conversion: 32 bytes through shared memory between two barriers, every iteration of its loop (8 copies: unrolled)")
            && wide.contains("d_res += where(j[None, :] == i"),
        "{wide}"
    );
    let narrow = explain("4");
    assert!(narrow.contains("none in a loop"), "{narrow}");
    assert!(!narrow.contains("every iteration"), "{narrow}");
}
