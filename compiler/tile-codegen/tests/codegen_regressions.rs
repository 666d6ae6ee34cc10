//! Code-generation regressions: programs that once crashed or were refused.

use tile_codegen::{compile, Options};
use tile_front::frontend::{parse_program, SourceFile};

fn compile_src(text: &str, kernel: &str) -> Result<String, String> {
    compile_src_warps(text, kernel, 4)
}

fn compile_src_warps(text: &str, kernel: &str, warps: u32) -> Result<String, String> {
    compile_art_result(text, kernel, warps).map(|a| a.ptx)
}

fn compile_art_result(
    text: &str,
    kernel: &str,
    warps: u32,
) -> Result<tile_codegen::Artifacts, String> {
    let src = SourceFile::new("regression.tile", text);
    let program = parse_program(&src).map_err(|d| d.render(&src))?;
    let tir = program
        .specialize(kernel, &[])
        .map_err(|d| d.render(&src))?;
    compile(
        &tir,
        &Options {
            warps,
            ..Options::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// A `dot` accumulated in a loop nested in a loop without results: the
/// layout assignment skipped loops without results, so the dot had no
/// accumulator layout ("dot result not in the mma layout"), and the failed
/// lowering then destroyed the outer block before the nested ones that use
/// its values (a use-after-free that crashed the process).
#[test]
fn dot_in_a_loop_nested_in_a_loop_without_results() {
    let src = r#"
kernel nested(a: *bf16, b: *bf16, o: *f32, K: i32) {
    let i = arange(0, 32);
    let j = arange(0, 64);
    for k1 in 0..K step 64 {
        let mut acc = zeros([32, 64], f32);
        for k0 in 0..K step 64 {
            let at = load(a + i[:, None] * 64 + j[None, :]);
            let bt = load(b + j[:, None] * 64 + j[None, :]);
            acc = dot(at, bt, acc);
        }
        store(o + k1 + i[:, None] * 64 + j[None, :], acc);
    }
}
"#;
    let ptx = compile_src(src, "nested").unwrap();
    assert!(ptx.contains("mma.sync"), "the dot runs on tensor cores");
}

/// A lowering error inside nested regions is reported, not a crash.
#[test]
fn a_lowering_error_in_nested_regions_is_reported() {
    let src = r#"
kernel f32dot(a: *f32, o: *f32, K: i32) {
    let i = arange(0, 16);
    for k1 in 0..K {
        if k1 > 2 {
            let t = load(a + i[:, None] * 16 + i[None, :]);
            store(o + i[:, None] * 16 + i[None, :], dot(t, t));
        }
    }
}
"#;
    let err = compile_src(src, "f32dot").unwrap_err();
    assert!(err.contains("dot of f32 operands"), "{err}");
}

/// Every kernel of the `.tile` files `files` (sorted as given) at the first
/// point of its tune space (its defaults without one): (file, kernel, TIR).
fn first_configs(files: &[std::path::PathBuf]) -> Vec<(String, String, tile_ir::Kernel)> {
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).unwrap();
        let file = SourceFile::new(path.display().to_string(), &text);
        let program = parse_program(&file).map_err(|d| d.render(&file)).unwrap();
        for kernel in program.kernel_names() {
            let meta = program
                .check_configs(&kernel)
                .into_iter()
                .next()
                .unwrap_or_default();
            let tir = program
                .specialize(&kernel, &meta)
                .map_err(|d| d.render(&file))
                .unwrap();
            out.push((path.display().to_string(), kernel, tir));
        }
    }
    out
}

/// The `.tile` files of `dsl-examples`, sorted.
fn example_files() -> Vec<std::path::PathBuf> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dsl-examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tile"))
        .collect();
    files.sort();
    files
}

/// Every example kernel compiles to the same PTX every time (packs and
/// caches are keyed by content): thread coordinates of the non-canonical
/// layouts were emitted in a HashMap's order, which differs between maps.
#[test]
fn compilation_is_deterministic() {
    for (path, kernel, tir) in first_configs(&example_files()) {
        let ptx: Vec<String> = (0..3)
            .map(|_| {
                compile(
                    &tir,
                    &Options {
                        warps: 4,
                        ..Options::default()
                    },
                )
                .unwrap()
                .ptx
            })
            .collect();
        assert!(
            ptx.iter().all(|p| p == &ptx[0]),
            "PTX of `{kernel}` ({path}) differs between compilations"
        );
    }
}

/// A K loop `acc = dot(a, b, acc)` on sm_90 runs on `wgmma` and leaves one
/// multiply group running into the next iteration; the loop's final wait
/// sits behind `lb < ub`, so there is exactly one `wait_group 0`.
#[test]
fn a_k_loop_keeps_its_wgmma_in_flight() {
    let src = r#"
kernel mm(a: *bf16, b: *bf16, c: *f32, K: i32) {
    let rm = arange(0, 128);
    let rn = arange(0, 256);
    let rk = arange(0, 64);
    let mut acc = zeros([128, 256], f32);
    for k0 in 0..K step 64 {
        let at = load(a + rm[:, None] * K + (k0 + rk)[None, :]);
        let bt = load(b + (k0 + rk)[:, None] * 256 + rn[None, :]);
        acc = dot(at, bt, acc);
    }
    store(c + rm[:, None] * 256 + rn[None, :], acc);
}
"#;
    let ptx = compile_src_warps(src, "mm", 8).unwrap();
    assert!(ptx.contains("wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16"));
    assert_eq!(ptx.matches("wgmma.wait_group.sync.aligned 1;").count(), 1);
    assert_eq!(ptx.matches("wgmma.wait_group.sync.aligned 0;").count(), 1);
    assert!(ptx.contains("fence.proxy.async.shared::cta"));
}

/// A pipelined operand the body also uses (mHC's projection squares its x
/// tile) is copied ahead like the other and read back from its stage,
/// instead of keeping the whole dot off the pipeline.
#[test]
fn a_pipelined_load_with_other_uses_is_read_back() {
    let src = r#"
kernel proj(x: *bf16, w: *bf16, z: *f32, r: *f32, K: i32) {
    let rt = arange(0, 64);
    let rk = arange(0, 64);
    let rn = arange(0, 64);
    let mut acc = zeros([64, 64], f32);
    let mut ss = zeros([64, 64], f32);
    for k0 in 0..K step 64 {
        let xb = load(x + rt[:, None] * K + (k0 + rk)[None, :]);
        acc = dot(xb, load(w + (k0 + rk)[:, None] * 64 + rn[None, :]), acc);
        let xf = xb as f32;
        ss += xf * xf;
    }
    store(z + rt[:, None] * 64 + rn[None, :], acc);
    store(r + rt, sum(ss, 1));
}
"#;
    let ptx = compile_src_warps(src, "proj", 4).unwrap();
    assert!(
        ptx.contains("cp.async.cg.shared.global"),
        "both operands copied ahead"
    );
    assert!(ptx.contains("wgmma.mma_async"), "and multiplied with wgmma");
    assert!(ptx.contains("ld.shared.v4"), "x read back from its stage");
    assert!(
        !ptx.contains("ld.global.v4"),
        "no operand loaded into registers first"
    );
}

/// On sm_90 a masked tile load of a `wgmma` loop in the TMA form (a pointer
/// parameter plus row index × stride plus column index, masked by both
/// bounds, zeros elsewhere) is fetched by TMA into its swizzled stage, the
/// host describing the tensor through a hidden parameter (the map by value,
/// `__grid_constant__`, read in place), and a hidden mask telling which maps
/// it encoded; `cp.async` stays for launches whose tensors TMA cannot
/// describe. An unmasked load (no bounds for the host to give) keeps
/// `cp.async` alone.
#[test]
fn a_masked_tile_load_on_wgmma_is_fetched_by_tma() {
    use tile_ir::launch::{HostScalar::Param, TmaOperand};
    let src = r#"
kernel mm(a: *bf16, b: *bf16, c: *f32, M: i32, N: i32, K: i32) {
    let rm = program_id(0) * 128 + arange(0, 128);
    let rn = arange(0, 256);
    let rk = arange(0, 64);
    let mut acc = zeros([128, 256], f32);
    for k0 in 0..K step 64 {
        let ka = k0 + rk;
        let at = load(a + rm[:, None] * K + ka[None, :], (rm[:, None] < M) & (ka[None, :] < K), 0.0);
        let bt = load(b + ka[:, None] * N + rn[None, :], (ka[:, None] < K) & (rn[None, :] < N), 0.0);
        acc = dot(at, bt, acc);
    }
    store(c + rm[:, None] * N + rn[None, :], acc, (rm[:, None] < M) & (rn[None, :] < N));
}
"#;
    let art = compile_art(src, "mm", 8);
    let op = |base, rows, cols, stride, box_rows| TmaOperand {
        base,
        elem_bytes: 2,
        rows: Param(rows),
        cols: Param(cols),
        row_stride: Param(stride),
        box_rows,
        box_cols: 64,
        swizzle_bytes: 128,
    };
    assert_eq!(art.tma, vec![op(0, 3, 5, 5, 128), op(1, 5, 4, 4, 64)]);
    let ptx = &art.ptx;
    for p in ["mm_param_6", "mm_param_7"] {
        assert!(
            ptx.contains(&format!(".param .align 64 .b8 {p}[128]")),
            "{p}"
        );
        // Its own address (made generic by `cvta.param`) goes to TMA: the
        // kernel never loads the map (as it would to make a local copy).
        assert!(
            !ptx.contains(&format!("[{p}]")) && !ptx.contains(&format!("[{p}+")),
            "{p}"
        );
    }
    assert!(ptx.contains(".param .u32 mm_param_8") && ptx.contains("cvta.param.u64"));
    assert!(!ptx.contains("mm_param_9"));
    // A: one box of 128 × 64; B: four of 64 × 64 (one per 128-byte column of atoms).
    let boxes = ptx
        .matches("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes")
        .count();
    assert!(boxes > 0 && boxes.is_multiple_of(5), "{boxes} box copies");
    assert!(ptx.contains("mbarrier.try_wait.parity") && ptx.contains("mbarrier.arrive.expect_tx"));
    // Where TMA cannot take a box, one rolled loop copies it with cp.async:
    // one `cp.async` per buffer at each place the copies are issued (five
    // box copies there), not one per group of 16 bytes a thread holds.
    let copies = ptx.matches("cp.async.cg.shared.global").count();
    assert_eq!(copies, 2 * boxes / 5, "the cp.async path remains, rolled");

    let unmasked = src
        .replace(", (rm[:, None] < M) & (ka[None, :] < K), 0.0", "")
        .replace(", (ka[:, None] < K) & (rn[None, :] < N), 0.0", "");
    let art = compile_art(&unmasked, "mm", 8);
    assert!(art.tma.is_empty() && !art.ptx.contains("cp.async.bulk"));
}

fn compile_art(text: &str, kernel: &str, warps: u32) -> tile_codegen::Artifacts {
    compile_art_result(text, kernel, warps).unwrap_or_else(|e| panic!("{e}"))
}

/// The TMA form also holds through widening casts (an i64 row offset, as
/// mHC's `mhc_proj` computes) and for a dimension the mask leaves out when its
/// start is a constant (the box then covers exactly its indices).
#[test]
fn tma_sees_through_widening_casts_and_constant_unmasked_dimensions() {
    use tile_ir::launch::{HostScalar, TmaOperand};
    let src = r#"
kernel proj(x: *bf16, w: *bf16, z: *f32, rows: i32, K: i32) {
    let rr = program_id(0) * 64 + arange(0, 64);
    let rmask = rr < rows;
    let rbase = (rr as i64) * (K as i64);
    let rn = arange(0, 128);
    let mut acc = zeros([64, 128], f32);
    for j0 in 0..K step 64 {
        let j = j0 + arange(0, 64);
        let jmask = j < K;
        let xb = load(x + rbase[:, None] + j[None, :], rmask[:, None] && jmask[None, :], 0.0);
        acc = dot(xb, load(w + j[:, None] * 128 + rn[None, :], jmask[:, None], 0.0), acc);
    }
    store(z + rr[:, None] * 128 + rn[None, :], acc, rmask[:, None]);
}
"#;
    let art = compile_art(src, "proj", 4);
    let op = |base, rows, cols, row_stride, box_rows| TmaOperand {
        base,
        elem_bytes: 2,
        rows,
        cols,
        row_stride,
        box_rows,
        box_cols: 64,
        swizzle_bytes: 128,
    };
    use HostScalar::{Const, Param};
    assert_eq!(
        art.tma,
        vec![
            op(0, Param(3), Param(4), Param(4), 64),
            op(1, Param(4), Const(128), Const(128), 64)
        ]
    );
    // A mask on a dimension whose start is not constant is still required.
    let unbounded = src.replace("rmask[:, None] && jmask[None, :]", "jmask[None, :]");
    assert_eq!(compile_art(&unbounded, "proj", 4).tma.len(), 1);
}

/// A mask conjunct on another index vector of a box dimension (mHC's
/// `mhc_proj_bwd_dphi`: rows of its group and of the tensor) is a guard: TMA
/// still fetches the box, whenever the guard holds for all of it.
#[test]
fn tma_takes_other_bounds_of_a_dimension_as_guards() {
    let src = r#"
kernel dphi(x: *bf16, w: *bf16, part: *f32, rows: i32, K: i32, group: i32) {
    let first = program_id(0) * group;
    let j = arange(0, 64);
    let mut acc = zeros([64, 64], f32);
    for r0 in 0..group step 64 {
        let rl = r0 + arange(0, 64);
        let rr = first + rl;
        let rmask = rl < group && rr < rows;
        let a = load(w + j[:, None] * rows + rr[None, :], rmask[None, :], 0.0);
        let xb = load(x + rr[:, None] * K + j[None, :], rmask[:, None] && (j < K)[None, :], 0.0);
        acc = dot(a, xb, acc);
    }
    store(part + j[:, None] * 64 + j[None, :], acc);
}
"#;
    let art = compile_art(src, "dphi", 4);
    assert_eq!(art.tma.len(), 2, "{:?}", art.tma);
    // Each issue checks the guard's last row against `group`.
    assert!(art.ptx.matches("cp.async.bulk.tensor").count() >= 2);
}

/// A `ctas` whose register cap leaves a `wgmma` accumulator too few
/// registers beside it was accepted, and the driver's ptxas then refused the
/// PTX at load time ("Insufficient registers", C7602; tile-tune reported the
/// configuration as rejected). It is refused at compile time, naming a
/// `ctas` that fits: here a 64 × 64 f32 accumulator on 4 warps is 32
/// registers a thread; 12 CTAs of 128 threads cap a thread at 40, 8 at 64.
#[test]
fn a_ctas_too_many_for_a_wgmma_accumulator_is_refused() {
    let text = "kernel mm(a: *bf16, b: *bf16, c: *f32, K: i32) {
    let r = arange(0, 64);
    let mut acc = zeros([64, 64], f32);
    for k0 in 0..K step 64 {
        let k = k0 + arange(0, 64);
        acc = dot(load(a + r[:, None] * K + k[None, :]), load(b + k[:, None] * 64 + r[None, :]), acc);
    }
    store(c + r[:, None] * 64 + r[None, :], acc);
}";
    let src = SourceFile::new("ctas.tile", text);
    let tir = parse_program(&src).unwrap().specialize("mm", &[]).unwrap();
    let build = |ctas: u32| {
        compile(
            &tir,
            &Options {
                warps: 4,
                ctas: Some(ctas),
                ..Options::default()
            },
        )
        .map(|a| a.ptx)
        .map_err(|e| e.to_string())
    };
    let err = build(12).expect_err("ctas 12 leaves 40 registers a thread");
    assert!(
        err.contains("`ctas: 12` leaves 40 registers") && err.contains("at most 8"),
        "{err}"
    );
    let ptx = build(8).expect("ctas 8 leaves 64 registers a thread");
    assert!(
        ptx.contains(".minnctapersm 8"),
        "no register budget in the PTX"
    );
    assert!(ptx.contains("wgmma"), "the test needs a wgmma accumulator");
}

/// The emitter makes integer ops, comparisons and selects as LLVM dialect
/// ops and folds them itself (`Emitter::fold_structural`); before, MLIR's
/// folders folded the `arith` ops it made. The PTX must be the same either
/// way, for every kernel of the examples and the mHC pack, sm_90 and sm_80:
/// a fold the emitter misses or adds shows here (an MLIR upgrade that
/// changes its folders too).
#[test]
fn llvm_dialect_ops_lower_like_folded_arith_ops() {
    let mut files = example_files();
    files.push(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../mhc-kernels/kernels/mhc/mhc.tile"
        )
        .into(),
    );
    let mut modes_checked = false;
    for (path, kernel, tir) in first_configs(&files) {
        for arch in [tile_codegen::Arch::Sm90, tile_codegen::Arch::Sm80] {
            // The MLIR text (to check what is compared) only once.
            let opts = Options {
                arch,
                warps: 4,
                keep_ir: !modes_checked,
                ..Options::default()
            };
            let llvm_ops = compile(&tir, &opts).unwrap();
            let arith_ops = tile_codegen::with_arith_integer_ops(|| compile(&tir, &opts).unwrap());
            if !modes_checked {
                assert!(
                    llvm_ops.mlir.contains("llvm.add") && !arith_ops.mlir.contains("llvm.add"),
                    "`{kernel}`: the two emitters are not what this test compares"
                );
                modes_checked = true;
            }
            // The MLIR may make constants in another order (they are
            // not instructions in LLVM IR); the PTX must not differ.
            let (a, b) = (&llvm_ops.ptx, &arith_ops.ptx);
            if let Some((i, (x, y))) = a
                .lines()
                .zip(b.lines())
                .enumerate()
                .find(|(_, (x, y))| x != y)
            {
                panic!(
                    "`{kernel}` ({path}, {arch:?}): PTX differs between LLVM dialect and \
                         arith integer ops at line {}:\n  {x}\n  {y}",
                    i + 1
                );
            }
            assert_eq!(
                a.lines().count(),
                b.lines().count(),
                "`{kernel}`: PTX length"
            );
        }
    }
}
