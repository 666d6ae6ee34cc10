//! `tilec run` through the binary: a successful run's summary, and the report
//! of an out-of-bounds access (snapshot).

use std::process::Command;

fn tilec(args: &[&str]) -> (i32, String, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_tilec"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("tilec runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn run_summarises_outputs() {
    let (code, out, err) = tilec(&[
        "run",
        "dsl-examples/vector_add.tile",
        "--kernel",
        "vector_add",
        "-D",
        "BLOCK=1024",
        "--grid",
        "4",
        "--arg",
        "a=arange:4000",
        "--arg",
        "b=full:4000:0.5",
        "--arg",
        "c=nan:4000",
        "--arg",
        "n=4000",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("vector_add<BLOCK=1024> grid (4, 1, 1): 4 program instances"),
        "{out}"
    );
    assert!(out.contains("a: f32[4000] unchanged"), "{out}");
    assert!(
        out.contains("c: f32[4000] written\n    [0.500000, 1.500000, 2.500000"),
        "{out}"
    );
    assert!(
        out.contains("max 3999.500000") && out.contains("NaN 0"),
        "{out}"
    );
}

#[test]
fn out_of_bounds_report() {
    // n = 5000 but the buffers hold 4096 elements: the mask lets program 4 read past the end
    let (code, out, err) = tilec(&[
        "run",
        "dsl-examples/vector_add.tile",
        "--kernel",
        "vector_add",
        "-D",
        "BLOCK=1024",
        "--grid",
        "5",
        "--arg",
        "a=rand:4096",
        "--arg",
        "b=rand:4096",
        "--arg",
        "c=zeros:4096",
        "--arg",
        "n=5000",
    ]);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!(err);
}

#[test]
fn missing_and_mistyped_arguments() {
    let (code, _, err) = tilec(&["run", "dsl-examples/vector_add.tile", "--arg", "a=rand:16"]);
    assert_eq!(code, 1);
    assert!(err.contains("missing --arg for `b`, `c`, `n`"), "{err}");
    assert!(
        err.contains("signature: vector_add(a: *f32, b: *f32, c: *f32, n: i32)"),
        "{err}"
    );
    let (code, _, err) = tilec(&[
        "run",
        "dsl-examples/vector_add.tile",
        "--arg",
        "a=rand:bf16:16",
        "--arg",
        "b=rand:16",
        "--arg",
        "c=zeros:16",
        "--arg",
        "n=16",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("parameter `a` points to f32, not bf16"),
        "{err}"
    );
}

#[test]
fn grid_outside_cuda_limits_is_an_error() {
    let run = |grid: &str| {
        tilec(&[
            "run",
            "dsl-examples/vector_add.tile",
            "-D",
            "BLOCK=16",
            "--grid",
            grid,
            "--arg",
            "a=rand:16",
            "--arg",
            "b=rand:16",
            "--arg",
            "c=zeros:16",
            "--arg",
            "n=16",
        ])
    };
    let (code, _, err) = run("1,70000");
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("grid y = 70000 is beyond CUDA's limit of 65535") && err.contains("hint"),
        "{err}"
    );
    let (code, _, err) = run("1,1,65536");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("grid z = 65536"), "{err}");
    let (code, _, err) = run("2147483648");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("grid x = 2147483648"), "{err}");
    let (code, _, err) = run("0");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("grid x is 0") && err.contains("hint"), "{err}");
    let (code, _, err) = run("2,0");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("grid y is 0"), "{err}");
    // The limits themselves are fine.
    let (code, _, err) = run("1,65535");
    assert_eq!(code, 0, "{err}");
}
