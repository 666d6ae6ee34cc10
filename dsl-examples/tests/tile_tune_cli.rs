//! `tile-tune` refuses bad arguments with errors that name what is wrong, and
//! finds them before it looks for a GPU, so this runs anywhere; on a machine
//! without a GPU, valid arguments end in a clear "needs a GPU" and a failure
//! status.

mod common;

use std::process::Command;

/// The tutorial's kernel in a TIR-only pack (what the check's interpreter
/// runs; enough for everything before the GPU).
fn tutorial_pack(dir: &std::path::Path) -> std::path::PathBuf {
    common::tir_pack(dir, "tutorial.tpack", &["docs/tutorial/bias_gelu.tile"])
}

/// Run tile-tune on the tutorial pack: (success, stderr).
fn tile_tune(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let pack = tutorial_pack(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_tile-tune"))
        .arg("--pack")
        .arg(&pack)
        .arg("--cache")
        .arg(dir.path().join("autotune.json"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ARGS: &[&str] = &[
    "--arg",
    "x=rand:bf16:64x1000",
    "--arg",
    "b=rand:bf16:1000",
    "--arg",
    "y=nan:bf16:64x1000",
    "--arg",
    "rows=64",
    "--arg",
    "cols=1000",
];

/// `bias_gelu` with ARGS, one of them replaced.
fn with(i: usize, spec: &str) -> (bool, String) {
    let mut args = vec!["bias_gelu"];
    args.extend(ARGS);
    args[2 * i + 2] = spec;
    tile_tune(&args)
}

fn fails_with(result: (bool, String), wanted: &str) {
    let (ok, err) = result;
    assert!(!ok, "tile-tune succeeded; expected `{wanted}`");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(wanted), "expected `{wanted}` in:\n{err}");
}

#[test]
fn an_unknown_kernel_names_the_packs_kernels() {
    let mut args = vec!["gelu"];
    args.extend(ARGS);
    fails_with(
        tile_tune(&args),
        "kernel `gelu`: not in the pack (it holds: bias_gelu)",
    );
}

#[test]
fn a_wrong_dtype_shape_or_parameter_names_the_argument() {
    fails_with(
        with(0, "x=rand:f32:64x1000"),
        "error: `bias_gelu`: `x=rand:f32:64x1000`: parameter `x` points to bf16, not f32",
    );
    fails_with(
        with(0, "x=rand:bf16:64x"),
        "`x=rand:bf16:64x`: `64x` is not a length (a count like 4096 or a shape like 64x4096)",
    );
    fails_with(
        with(0, "z=rand:bf16:64000"),
        "kernel `bias_gelu` has no parameter `z`\n  signature: bias_gelu(x: *bf16, b: *bf16, y: *bf16, rows: i32, cols: i32)",
    );
    fails_with(
        with(4, "cols=many"),
        "`cols=many`: parameter `cols` is i32, and `many` is not one",
    );
    fails_with(with(2, "y=zeros:bf16:64x1000"), "no output to check");
}

#[test]
fn a_kernel_without_built_in_sizes_asks_for_arguments() {
    fails_with(
        tile_tune(&["bias_gelu"]),
        "no arguments for `bias_gelu`: give them with --arg NAME=SPEC",
    );
    let mut args = vec!["bias_gelu", "softmax"];
    args.extend(ARGS);
    fails_with(
        tile_tune(&args),
        "--arg gives one kernel's arguments, and 2 kernels are named",
    );
}

#[test]
fn a_large_problem_needs_a_reduced_one_for_the_check() {
    let big = [
        "bias_gelu",
        "--arg",
        "x=rand:bf16:8192x8192",
        "--arg",
        "b=rand:bf16:8192",
        "--arg",
        "y=nan:bf16:8192x8192",
        "--arg",
        "rows=8192",
        "--arg",
        "cols=8192",
    ];
    fails_with(
        tile_tune(&big),
        "too many to run on the interpreter for every config (at most 4194304): give a reduced problem for the check with --check-arg",
    );
    let mut args = big.to_vec();
    args.extend([
        "--check-arg",
        "x=rand:bf16:4x8192",
        "--check-arg",
        "y=nan:bf16:4x8192",
    ]);
    args.extend([
        "--check-arg",
        "rows=4",
        "--bytes",
        "2*rows*cols*2",
        "--flops",
        "rowz",
    ]);
    fails_with(
        tile_tune(&args),
        "--flops: `rowz`: `rowz` is not a scalar argument (scalar arguments: rows, cols)",
    );
}

#[test]
fn valid_arguments_without_a_gpu_say_a_gpu_is_needed() {
    if tile_runtime::Device::gpu_unavailable_reason().is_none() {
        eprintln!("this machine has a GPU: the message for machines without one is not reachable");
        return;
    }
    let mut args = vec!["bias_gelu", "--report"];
    args.extend(ARGS);
    fails_with(
        tile_tune(&args),
        "error: tile-tune needs a GPU (configs are timed with CUDA events); the arguments are valid: no GPU available",
    );
}

/// `--grid` takes numbers or expressions, split into axes at the commas
/// outside parentheses; a malformed one is named.
#[test]
fn a_grid_is_numbers_or_expressions() {
    let grid = |g: &str| {
        let mut args = vec!["bias_gelu"];
        args.extend(ARGS);
        args.extend(["--grid", g]);
        tile_tune(&args)
    };
    fails_with(
        grid("cdiv(rows,"),
        "`cdiv(rows,`: the expression ends too early",
    );
    fails_with(grid("1,2,3,4"), "is not X[,Y[,Z]]");
    fails_with(grid("0"), "`0` in `0` is not a positive integer");
    fails_with(grid("rows % 2"), "`rows % 2`: unexpected character `%`");
    // Well formed (a name that is neither a parameter nor a meta-parameter
    // fails when a config is launched): it gets as far as the GPU.
    let (ok, err) = grid("cdiv(rows, 4), cdiv(cols, BC)");
    assert!(
        !ok && !err.contains("--grid") && !err.contains("panicked"),
        "{err}"
    );
    if tile_runtime::Device::gpu_unavailable_reason().is_some() {
        assert!(err.contains("tile-tune needs a GPU"), "{err}");
    }
}

/// `-D NAME=VALUE` holds a meta-parameter; a malformed pin, an unknown name
/// and a value no config has are named before any GPU is needed.
#[test]
fn a_pin_names_a_meta_parameter_and_a_value_of_it() {
    let pin = |p: &str| {
        let mut args = vec!["bias_gelu", "-D", p];
        args.extend(ARGS);
        tile_tune(&args)
    };
    fails_with(pin("BR"), "`BR`: expected NAME=VALUE, e.g. -D RP=32");
    fails_with(pin("BR=x"), "`BR=x`: the value of BR must be an integer");
    fails_with(
        pin("RP=32"),
        "-D RP=32: kernel `bias_gelu` has no meta-parameter `RP`",
    );
    fails_with(
        pin("BR=5"),
        "-D BR=5: no configuration of kernel `bias_gelu` has these values",
    );
    let (ok, err) = pin("BR=16");
    assert!(
        !ok && !err.contains("-D") && !err.contains("panicked"),
        "{err}"
    );
    if tile_runtime::Device::gpu_unavailable_reason().is_some() {
        assert!(err.contains("tile-tune needs a GPU"), "{err}");
    }
}
