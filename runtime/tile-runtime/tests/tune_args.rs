//! `tune::tune_args` without a GPU: a kernel of any pack tuned from argument
//! specs written as for `tilec run`, on the CPU device (the check then holds
//! the interpreter against itself, so what it can reject here is a config
//! that leaves part of an output unwritten or disagrees with the other
//! configs), the second run read from the cache, and bad requests refused
//! with errors that name what is wrong before any buffer is made.

use std::path::Path;
use tile_front::frontend::SourceFile;
use tile_ir::launch::GridExpr;
use tile_runtime::tune::{plan_args, tune_args, ArgTuneRequest, Autotuner};
use tile_runtime::{describe, Device, Pack};

mod common;
use common::pack_of;

fn tutorial_pack(dir: &Path) -> Pack {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tutorial/bias_gelu.tile");
    pack_of(dir, "tutorial", &SourceFile::load(&path).unwrap())
}

fn request(kernel: &str, args: &[&str]) -> ArgTuneRequest {
    ArgTuneRequest {
        kernel: kernel.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

const BIAS_GELU: &[&str] = &[
    "x=rand:bf16:16x300",
    "b=rand:bf16:300",
    "y=nan:bf16:16x300",
    "rows=16",
    "cols=300",
];

fn quick_tuner(dir: &Path) -> Autotuner {
    let mut t = Autotuner::new(dir.join("autotune.json"));
    t.budget_ms = 1.0; // the times mean nothing on the CPU
    t
}

#[test]
fn the_tutorial_kernel_tunes_from_argument_specs_then_comes_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let pack = tutorial_pack(dir.path());
    let plan = plan_args(&pack, &request("bias_gelu", BIAS_GELU)).unwrap();
    assert_eq!(plan.key_values, vec![("cols".to_string(), 300)]);
    assert_eq!(plan.outputs, vec![2]);
    assert_eq!(plan.bytes, (2 * (2 * 16 * 300 + 300)) as f64);
    let (cpu, tuner) = (Device::cpu(), quick_tuner(dir.path()));
    let first = tune_args(&cpu, &pack, &plan, &tuner).unwrap();
    assert!(!first.from_cache);
    assert_eq!(first.entry.trials.len(), 8);
    for t in &first.entry.trials {
        assert!(t.result.is_ok(), "{}: {:?}", describe(&t.config), t.result);
    }
    let second = tune_args(&cpu, &pack, &plan, &tuner).unwrap();
    assert!(second.from_cache, "the second run reads the cache");
    // (the times went through JSON, which may round their last bit)
    assert_eq!(second.entry.best, first.entry.best);
    assert_eq!(second.entry.trials.len(), 8);
    // Another problem size is another key, tuned afresh.
    let mut other = request("bias_gelu", BIAS_GELU);
    other.args[2] = "y=nan:bf16:16x200".into();
    other.args[4] = "cols=200".into();
    let plan = plan_args(&pack, &other).unwrap();
    assert!(!tune_args(&cpu, &pack, &plan, &tuner).unwrap().from_cache);
}

/// BLOCK=16 covers a quarter of what the grid (64 per program) assumes (16
/// programs write 256 of the 1000 elements); S=2
/// computes something else than S=1. Neither may be timed.
const SCALE: &str = "
kernel scale<const BLOCK: i32, const S: i32>(x: *f32, y: *f32, n: i32) {
    let offs = program_id(0) * BLOCK + arange(0, BLOCK);
    let m = offs < n;
    store(y + offs, load(x + offs, m, 0.0) * (S as f32), m);
}
tune scale { key: [n], BLOCK: [16, 64], S: [1, 2], warps: [4], grid: [cdiv(n, 64)] }
";

#[test]
fn configs_the_check_rejects_are_not_timed_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceFile::new("scale.tile", SCALE);
    let pack = pack_of(dir.path(), "scale", &src);
    let req = request("scale", &["x=rand:1000", "y=nan:1000", "n=1000"]);
    let plan = plan_args(&pack, &req).unwrap();
    let tuned = tune_args(&Device::cpu(), &pack, &plan, &quick_tuner(dir.path())).unwrap();
    let result = |block: i64, s: i64| {
        let t = tuned
            .entry
            .trials
            .iter()
            .find(|t| t.config.meta == vec![("BLOCK".into(), block), ("S".into(), s)])
            .unwrap();
        t.result.clone().map(|_| ())
    };
    for s in [1, 2] {
        let why = result(16, s).unwrap_err();
        assert!(
            why.contains("`y` keeps the NaN poison at 744 of 1000 elements")
                && why.contains("does not write all of it"),
            "{why}"
        );
    }
    assert_eq!(result(64, 1), Ok(()));
    let why = result(64, 2).unwrap_err();
    assert!(
        why.contains("wrong result: y[")
            && why.contains("against config BLOCK=64, S=1, warps=4 (configs must agree)"),
        "{why}"
    );
    assert_eq!(describe(&tuned.entry.best), "BLOCK=64, S=1, warps=4");
}

/// `-D S=2` makes the configs that compute `2·x` the reference: the S = 1
/// ones are left out (not checked against them, not timed), and the pinned
/// tuning is cached apart from the unpinned one. A pin that names no
/// meta-parameter, or a value no config has, is refused before any buffer.
#[test]
fn pinned_meta_parameters_leave_the_other_configs_out() {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceFile::new("scale.tile", SCALE);
    let pack = pack_of(dir.path(), "scale", &src);
    let mut req = request("scale", &["x=rand:1000", "y=nan:1000", "n=1000"]);
    req.pins = vec![("S".into(), 2)];
    let plan = plan_args(&pack, &req).unwrap();
    assert!(
        plan.key_values.contains(&("-D S".to_string(), 2)),
        "{:?}",
        plan.key_values
    );
    let tuner = quick_tuner(dir.path());
    let tuned = tune_args(&Device::cpu(), &pack, &plan, &tuner).unwrap();
    assert_eq!(describe(&tuned.entry.best), "BLOCK=64, S=2, warps=4");
    for t in &tuned.entry.trials {
        let why = t.result.clone().err().unwrap_or_default();
        match (t.config.value("BLOCK"), t.config.value("S")) {
            (_, Some(1)) => assert_eq!(why, "left out by -D S=2"),
            (Some(64), Some(2)) => assert!(t.result.is_ok(), "{why}"),
            _ => assert!(why.contains("does not write all of it"), "{why}"),
        }
    }
    // The unpinned request is another key: tuned afresh, S = 1 wins.
    req.pins.clear();
    let plan = plan_args(&pack, &req).unwrap();
    let unpinned = tune_args(&Device::cpu(), &pack, &plan, &tuner).unwrap();
    assert!(!unpinned.from_cache);
    assert_eq!(describe(&unpinned.entry.best), "BLOCK=64, S=1, warps=4");
    for (pins, want) in [
        (
            vec![("T".to_string(), 2)],
            "-D T=2: kernel `scale` has no meta-parameter `T` (it has BLOCK, S",
        ),
        (
            vec![("S".to_string(), 3)],
            "-D S=3: no configuration of kernel `scale` has these values",
        ),
        (
            vec![("BLOCK".to_string(), 16), ("S".to_string(), 3)],
            "-D BLOCK=16 -D S=3: no configuration",
        ),
    ] {
        req.pins = pins;
        let e = format!("{:#}", plan_args(&pack, &req).unwrap_err());
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn bad_requests_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let pack = tutorial_pack(dir.path());
    let err = |req: ArgTuneRequest| format!("{:#}", plan_args(&pack, &req).unwrap_err());
    let with = |i: usize, spec: &str| {
        let mut r = request("bias_gelu", BIAS_GELU);
        r.args[i] = spec.into();
        err(r)
    };
    let e = err(request("bias_gelu_fused", BIAS_GELU));
    assert!(
        e.contains("kernel `bias_gelu_fused`: not in the pack (it holds: bias_gelu)"),
        "{e}"
    );
    let e = with(0, "x=rand:f32:16x300");
    assert!(
        e.contains("`x=rand:f32:16x300`: parameter `x` points to bf16, not f32"),
        "{e}"
    );
    let e = with(0, "x=rand:bf16:16by300");
    assert!(e.contains("`16by300` is not a length"), "{e}");
    let e = with(0, "z=rand:bf16:4800");
    assert!(e.contains("kernel `bias_gelu` has no parameter `z`"), "{e}");
    assert!(
        e.contains("signature: bias_gelu(x: *bf16, b: *bf16, y: *bf16, rows: i32, cols: i32)"),
        "{e}"
    );
    let e = with(4, "cols=3e2");
    assert!(
        e.contains("parameter `cols` is i32, and `3e2` is not one"),
        "{e}"
    );
    let e = with(2, "y=zeros:bf16:16x300");
    assert!(e.contains("no output to check"), "{e}");

    // A large problem needs a reduced one for the check, and gets it with --check-arg.
    let big = [
        "x=rand:bf16:8192x8192",
        "b=rand:bf16:8192",
        "y=nan:bf16:8192x8192",
        "rows=8192",
        "cols=8192",
    ];
    let e = err(request("bias_gelu", &big));
    assert!(
        e.contains("too many to run on the interpreter") && e.contains("--check-arg"),
        "{e}"
    );
    let mut r = request("bias_gelu", &big);
    r.check_args = ["x=rand:bf16:4x8192", "y=nan:bf16:4x8192", "rows=4"]
        .map(String::from)
        .to_vec();
    let plan = plan_args(&pack, &r).unwrap();
    assert_eq!(plan.check.scalar("rows").and_then(|v| v.as_i64()), Some(4));
    assert_eq!(plan.key_values, vec![("cols".to_string(), 8192)]);
    r.check_args.push("rows=5".into());
    assert!(err(r).contains("`rows` is given twice"));

    let mut r = request("bias_gelu", BIAS_GELU);
    r.bytes = Some("2*rows*colums".into());
    let e = err(r);
    assert!(e.contains("--bytes: `2*rows*colums`: `colums` is not a scalar argument (scalar arguments: rows, cols)"), "{e}");
    let mut r = request("bias_gelu", BIAS_GELU);
    (r.bytes, r.flops) = (Some("2*rows*cols*2".into()), Some("10*rows*cols".into()));
    let plan = plan_args(&pack, &r).unwrap();
    assert_eq!((plan.bytes, plan.flops), (19200.0, Some(48000.0)));

    let mut r = request("bias_gelu", BIAS_GELU);
    r.grid = grid(&["4", "2"]);
    r.check_args = vec!["rows=8".into()];
    assert!(err(r).contains("needs its own, --check-grid"));
}

/// SCALE without its `grid:`, packed as `NAME.tpack`.
fn scale_without_a_grid(dir: &Path, name: &str) -> Pack {
    let src = SourceFile::new("scale.tile", SCALE.replace(", grid: [cdiv(n, 64)]", ""));
    pack_of(dir, name, &src)
}

#[test]
fn a_kernel_without_a_declared_grid_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let pack = scale_without_a_grid(dir.path(), "nogrid");
    let mut req = request("scale", &["x=rand:1000", "y=nan:1000", "n=1000"]);
    let e = format!("{:#}", plan_args(&pack, &req).unwrap_err());
    assert!(
        e.contains("declares no launch grid") && e.contains("--grid X[,Y[,Z]]"),
        "{e}"
    );
    req.grid = grid(&["16"]);
    let plan = plan_args(&pack, &req).unwrap();
    let tuned = tune_args(&Device::cpu(), &pack, &plan, &quick_tuner(dir.path())).unwrap();
    assert_eq!(describe(&tuned.entry.best), "BLOCK=64, S=1, warps=4");
}

/// A grid given as an expression over the parameters and meta-parameters
/// follows each config's tile: 16-element blocks get 63 programs for 1000
/// elements and pass the check (with 16 programs, as a fixed grid gives
/// them, they wrote a quarter), and the check problem values it with its
/// own arguments, so it needs no --check-grid.
#[test]
fn a_grid_expression_follows_each_configs_tile() {
    let dir = tempfile::tempdir().unwrap();
    let pack = scale_without_a_grid(dir.path(), "exprgrid");
    let mut req = request("scale", &["x=rand:1000", "y=nan:1000", "n=1000"]);
    req.grid = grid(&["cdiv(n, BLOCK)"]);
    req.check_args = vec!["x=rand:100".into(), "y=nan:100".into(), "n=100".into()];
    let plan = plan_args(&pack, &req).unwrap();
    assert_eq!(plan.check_grid, plan.grid);
    let tuned = tune_args(&Device::cpu(), &pack, &plan, &quick_tuner(dir.path())).unwrap();
    for t in &tuned.entry.trials {
        let s1 = t.config.meta.contains(&("S".to_string(), 1));
        assert_eq!(
            t.result.is_ok(),
            s1,
            "{}: {:?}",
            describe(&t.config),
            t.result
        );
    }
    // A grid over meta-parameters only does not follow the check problem.
    req.grid = grid(&["4 * BLOCK"]);
    let e = format!("{:#}", plan_args(&pack, &req).unwrap_err());
    assert!(e.contains("needs its own, --check-grid"), "{e}");
}

/// `--grid` axes as tile-tune parses them.
fn grid(axes: &[&str]) -> Option<Vec<GridExpr>> {
    Some(axes.iter().map(|a| GridExpr::parse(a).unwrap()).collect())
}
