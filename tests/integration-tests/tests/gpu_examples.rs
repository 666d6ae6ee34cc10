//! One kernel, two engines: every dsl-example kernel, every packed config, runs
//! on the GPU and on the CPU interpreter (the semantic reference) on the same
//! fresh random inputs, at several shapes including ragged ones; outputs are
//! NaN-poisoned before each run and compared element by element, each output
//! at a tolerance derived from its dtype and reduction length ([`tolerance`]).
//!
//! The two sides come from different places: the GPU side from the pack
//! (checked current against `dsl-examples/*.tile` by `examples_pack`), the
//! interpreter side compiled here from the current `.tile` text with
//! `tile_front` ([`from_source`]), so a stale pack cannot agree with itself.
#![cfg(feature = "gpu")]

use half::bf16;
use rand::{Rng, SeedableRng};
use tile_front::frontend::{parse_program, Program, SourceFile};
use tile_runtime::{describe, Arg, Config, Device, Scalar};
use tile_testkit::*;

/// A host-side argument: a buffer (dtype, bytes, whether it is an output to compare) or a scalar.
enum HostArg {
    Buf {
        dtype: Scalar,
        data: Vec<f32>,
        output: bool,
    },
    I32(i32),
    F32(f32),
}

struct Case {
    label: String,
    grid: [u32; 3],
    args: Vec<HostArg>,
    /// The row length `n` (softmax, norms), `K` (matmul), `seq` (attention),
    /// `N` (sinkhorn): what the tolerance's reduction length is derived from.
    n: usize,
    /// Rows (layernorm_bwd accumulates dw and db over them).
    rows: usize,
}

fn meta(c: &Config, name: &str) -> usize {
    c.meta
        .iter()
        .find(|(m, _)| m == name)
        .map(|x| x.1)
        .unwrap_or(0) as usize
}

fn small() -> bool {
    std::env::var_os("TILE_SANITIZER_RUN").is_some()
}

fn rand_vec(rng: &mut impl Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn input(dtype: Scalar, data: Vec<f32>) -> HostArg {
    HostArg::Buf {
        dtype,
        data,
        output: false,
    }
}

fn output(dtype: Scalar, n: usize) -> HostArg {
    HostArg::Buf {
        dtype,
        data: vec![f32::NAN; n],
        output: true,
    }
}

/// Accumulated outputs (atomics) start at zero instead of NaN.
fn accum(dtype: Scalar, n: usize) -> HostArg {
    HostArg::Buf {
        dtype,
        data: vec![0.0; n],
        output: true,
    }
}

/// Kernels whose outputs feed each other (attention_bwd.tile: the forward's
/// lse and delta go into the backward): gpu_attention runs them as a chain
/// against an f64 reference instead of one by one here.
fn checked_elsewhere(kernel: &str) -> bool {
    kernel == "attention_lse" || kernel.starts_with("attention_bwd")
}

/// The cases to run for `kernel` at `config`.
fn cases(kernel: &str, c: &Config, rng: &mut impl Rng) -> Vec<Case> {
    use Scalar::*;
    let mut out = Vec::new();
    let case = |label: String, grid: [u32; 3], args: Vec<HostArg>, n: usize, rows: usize| Case {
        label,
        grid,
        args,
        n,
        rows,
    };
    match kernel {
        "vector_add" | "vector_add_bf16" => {
            let dt = if kernel == "vector_add" { F32 } else { BF16 };
            let block = meta(c, "BLOCK");
            for n in [1, 1000, 3 * block + 17] {
                out.push(case(
                    format!("n={n}"),
                    [n.div_ceil(block) as u32, 1, 1],
                    vec![
                        input(dt, rand_vec(rng, n, -1.0, 1.0)),
                        input(dt, rand_vec(rng, n, -1.0, 1.0)),
                        output(dt, n),
                        HostArg::I32(n as i32),
                    ],
                    1,
                    1,
                ));
            }
        }
        "softmax" | "softmax_bf16" | "rmsnorm" | "rmsnorm_looped" | "layernorm_fwd"
        | "layernorm_bwd" => {
            let block = meta(c, "BLOCK");
            let ns: Vec<usize> = match kernel {
                "rmsnorm_looped" => vec![block, 3 * block + 5],
                _ => vec![block, block - 7, block / 2 + 1],
            };
            for n in ns {
                let rows = if small() { 3 } else { 37 };
                let dt = if matches!(kernel, "softmax_bf16" | "rmsnorm" | "rmsnorm_looped") {
                    BF16
                } else {
                    F32
                };
                let x = input(dt, rand_vec(rng, rows * n, -3.0, 3.0));
                let args = match kernel {
                    "softmax" => vec![
                        x,
                        output(F32, rows * n),
                        HostArg::I32(rows as i32),
                        HostArg::I32(n as i32),
                    ],
                    "softmax_bf16" => vec![x, output(BF16, rows * n), HostArg::I32(n as i32)],
                    "rmsnorm" | "rmsnorm_looped" => {
                        vec![
                            x,
                            input(BF16, rand_vec(rng, n, 0.5, 1.5)),
                            output(BF16, rows * n),
                            HostArg::I32(n as i32),
                            HostArg::F32(1e-6),
                        ]
                    }
                    "layernorm_fwd" => vec![
                        x,
                        input(F32, rand_vec(rng, n, 0.5, 1.5)),
                        input(F32, rand_vec(rng, n, -0.5, 0.5)),
                        output(F32, rows * n),
                        output(F32, rows),
                        output(F32, rows),
                        HostArg::I32(n as i32),
                        HostArg::F32(1e-5),
                    ],
                    _ => vec![
                        x,
                        input(F32, rand_vec(rng, n, 0.5, 1.5)),
                        input(F32, rand_vec(rng, rows * n, -1.0, 1.0)),
                        input(F32, rand_vec(rng, rows, -0.5, 0.5)),
                        input(F32, rand_vec(rng, rows, 0.5, 2.0)),
                        output(F32, rows * n),
                        accum(F32, n),
                        accum(F32, n),
                        HostArg::I32(n as i32),
                    ],
                };
                out.push(case(
                    format!("{rows}x{n}"),
                    [rows as u32, 1, 1],
                    args,
                    n,
                    rows,
                ));
            }
        }
        "sinkhorn" => {
            let n = meta(c, "N");
            let b = if small() { 3 } else { 100 };
            out.push(case(
                format!("{b}x{n}x{n}"),
                [b as u32, 1, 1],
                vec![
                    input(F32, rand_vec(rng, b * n * n, 0.05, 1.0)),
                    output(F32, b * n * n),
                ],
                n,
                1,
            ));
        }
        "matmul" => {
            let (bm, bn) = (meta(c, "BM"), meta(c, "BN"));
            let shapes: &[(usize, usize, usize)] = if small() {
                &[(70, 33, 40)]
            } else {
                // On sm_90 TMA fetches A when K·2 bytes is a multiple of 16, B
                // when N·2 is: both, neither, only A, only B.
                &[
                    (64, 64, 64),
                    (100, 70, 50),
                    (257, 129, 95),
                    (96, 160, 1000),
                    (130, 100, 64),
                    (70, 64, 36),
                ]
            };
            for &(m, n, k) in shapes {
                out.push(case(
                    format!("{m}x{n}x{k}"),
                    [(m.div_ceil(bm) * n.div_ceil(bn)) as u32, 1, 1],
                    vec![
                        input(BF16, rand_vec(rng, m * k, -1.0, 1.0)),
                        input(BF16, rand_vec(rng, k * n, -1.0, 1.0)),
                        output(BF16, m * n),
                        HostArg::I32(m as i32),
                        HostArg::I32(n as i32),
                        HostArg::I32(k as i32),
                    ],
                    k,
                    1,
                ));
            }
        }
        "attention" => {
            let (bm, d) = (meta(c, "BM"), meta(c, "D"));
            let seqs: &[usize] = if small() { &[70] } else { &[64, 200] };
            let heads = 2;
            for &seq in seqs {
                let n = heads * seq * d;
                out.push(case(
                    format!("{heads} heads x {seq} x {d}"),
                    [seq.div_ceil(bm) as u32, heads as u32, 1],
                    vec![
                        input(BF16, rand_vec(rng, n, -1.0, 1.0)),
                        input(BF16, rand_vec(rng, n, -1.0, 1.0)),
                        input(BF16, rand_vec(rng, n, -1.0, 1.0)),
                        output(BF16, n),
                        HostArg::I32(seq as i32),
                        HostArg::F32(1.0 / (d as f32).sqrt()),
                    ],
                    seq,
                    1,
                ));
            }
        }
        other => panic!("no test cases for example kernel `{other}`: add them here"),
    }
    out
}

/// Run a case on a device; returns the output buffers as f32.
fn run_case(dev: &Device, k: &tile_runtime::Kernel, case: &Case) -> Vec<Vec<f32>> {
    let mut bufs = Vec::new();
    for a in &case.args {
        if let HostArg::Buf { dtype, data, .. } = a {
            let bytes: Vec<u8> = match dtype {
                Scalar::BF16 => data
                    .iter()
                    .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            bufs.push(dev.upload_bytes(*dtype, &bytes).unwrap());
        }
    }
    let mut bi = 0;
    let args: Vec<Arg> = case
        .args
        .iter()
        .map(|a| match a {
            HostArg::Buf { .. } => {
                bi += 1;
                Arg::Buffer(&bufs[bi - 1])
            }
            HostArg::I32(x) => Arg::I32(*x),
            HostArg::F32(x) => Arg::F32(*x),
        })
        .collect();
    dev.launch(k, case.grid, &args).unwrap();
    dev.synchronize().unwrap();
    let mut outs = Vec::new();
    for (a, b) in case
        .args
        .iter()
        .filter(|a| matches!(a, HostArg::Buf { .. }))
        .zip(&bufs)
    {
        if let HostArg::Buf {
            dtype,
            output: true,
            ..
        } = a
        {
            let bytes = dev.download_bytes(b).unwrap();
            outs.push(match dtype {
                Scalar::BF16 => bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                _ => bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            });
        }
    }
    outs
}

/// f32 unit roundoff: half an ulp, 2^-24 relative, per rounding.
const U: f64 = 1.0 / 16_777_216.0;
/// One bf16 ulp relative to the value, 2^-7 (8 significant bits: half an ulp,
/// 2^-8, per rounding). The engines round f32 results that differ slightly, so
/// a value near a rounding boundary may go either way: one ulp apart.
const BF16_FLIP: f64 = 1.0 / 128.0;
/// The GPU's approximate functions: `ex2.approx` 2^-22 relative, plus its
/// argument `x·log2 e` rounded (|x| ≤ 6 here: ≤ 9·2^-24 in the exponent,
/// ≈ 2^-23 relative), plus `rcp`/`rsqrt.approx` 2^-23: below 2^-20 together.
const APPROX: f64 = 1.0 / 1_048_576.0;

/// A sum of `k` same-sign f32 terms: worst case k·2^-24 relative per engine,
/// two engines summing in different orders.
fn sum_rel(k: usize) -> f64 {
    2.0 * k as f64 * U
}

/// A sum of `k` f32 terms of either sign, relative to the largest output: no
/// worst case relative to a cancelled result, so the typical rounding walk
/// √k·2^-24 of partial sums no larger than the largest output, ×2 engines,
/// ×4 for a 4σ margin.
fn sum_cancel(k: usize) -> f64 {
    8.0 * (k as f64).sqrt() * U
}

/// `|gpu − interpreter| ≤ rel·|interpreter| + abs_of_max·max|interpreter| + abs`.
#[derive(Clone, Copy, Debug)]
struct Tol {
    rel: f64,
    abs_of_max: f64,
    abs: f64,
}

/// The tolerance of output `output` of `kernel` in `case`, derived from the
/// dtype and reduction length (each line says how). A floor of 2^-24 of the
/// largest output stands for "no cancellation": every output is checked
/// relatively, so a kernel writing 0 (or anything else) where the reference is
/// small fails.
fn tolerance(kernel: &str, c: &Config, case: &Case, output: usize) -> Tol {
    let (n, rows) = (case.n, case.rows);
    let t = |rel: f64, abs_of_max: f64| Tol {
        rel,
        abs_of_max,
        abs: 0.0,
    };
    match kernel {
        // One correctly rounded f32 add of the same inputs on both: identical.
        "vector_add" => t(U, 0.0),
        // The f32 sum of two bf16 values is exact; its rounding to bf16 is the same on both.
        "vector_add_bf16" => t(BF16_FLIP, 0.0),
        // exp (approximate), a same-sign sum of n terms, a division: positive
        // outputs, no cancellation.
        "softmax" => t(sum_rel(n) + 2.0 * APPROX + 2.0 * U, U),
        "softmax_bf16" => t(BF16_FLIP + sum_rel(n) + 2.0 * APPROX, U),
        // A same-sign sum of n squares, rsqrt (approximate), two products, bf16 out.
        "rmsnorm" | "rmsnorm_looped" => t(BF16_FLIP + sum_rel(n) + 2.0 * APPROX + 4.0 * U, U),
        "layernorm_fwd" => match output {
            // y = (x − mean)·rstd·w + b: the mean is a cancelled sum of n terms
            // and x − mean, + b cancel again (2^-24 each of the largest term).
            0 => t(sum_rel(n) + 2.0 * APPROX + 4.0 * U, sum_cancel(n) + 4.0 * U),
            // mean: a sum of n terms of either sign.
            1 => t(sum_rel(n), sum_cancel(n)),
            // rstd: a same-sign sum of n squares, rsqrt (approximate).
            _ => t(sum_rel(n) + 2.0 * APPROX, U),
        },
        "layernorm_bwd" => match output {
            // dx: two sums over the row (either sign) and a few products.
            0 => t(sum_rel(n) + 4.0 * U, sum_cancel(n) + 4.0 * U),
            // dw, db: atomically accumulated over the rows in any order, terms of either sign.
            _ => t(sum_rel(rows) + 4.0 * U, sum_cancel(rows) + 4.0 * U),
        },
        // exp (approximate), then ITERS × (a row and a column normalisation:
        // a same-sign sum of N terms and a division, which the GPU may do to
        // 2 ulps: 8·2^-24 for both engines); Sinkhorn is contracting, so
        // relative errors add rather than grow.
        "sinkhorn" => {
            let iters = meta(c, "ITERS").max(1);
            t(
                2.0 * APPROX + iters as f64 * 2.0 * (sum_rel(n) + 8.0 * U),
                U,
            )
        }
        // bf16 products are exact in f32; a sum of K terms of either sign; bf16 out.
        "matmul" => t(BF16_FLIP + sum_rel(n), sum_cancel(n)),
        "attention" => {
            let d = meta(c, "D");
            Tol {
                // Scores: sums of D products; the online softmax: exp
                // (approximate) and a same-sign sum over seq; bf16 out.
                rel: BF16_FLIP + sum_rel(d) + sum_rel(n) + 4.0 * APPROX,
                // acc = Σ p·v over seq keys (either sign).
                abs_of_max: sum_cancel(n) + sum_cancel(d),
                // `p as bf16`: engines whose f32 p differ by ~2^-20 round it
                // differently with probability ~2^-12 per key (≈0.05 flips per
                // query at seq = 200); a flip moves the output by
                // ≤ 2^-7·(p/l)·|v|, and p/l ≤ e/seq here (scores q·k·scale have
                // σ ≈ 1/3, so the largest is within e^1 of the mean). Allow two
                // flips at 4× the mean weight, |v| ≤ 1.
                abs: 2.0 * BF16_FLIP * 4.0 / n as f64,
            }
        }
        other => panic!("no tolerance for `{other}`: derive one here"),
    }
}

/// Outputs of `got` outside `tol` of `want` (NaN on either side is never
/// within), and the fraction of outputs whose bound is mostly relative
/// (rel·|want| ≥ the absolute parts): how many a tolerance really checks.
fn check(got: &[f32], want: &[f32], tol: Tol) -> (Vec<usize>, f64) {
    let max = want.iter().fold(0.0f64, |m, w| m.max((*w as f64).abs()));
    let floor = tol.abs_of_max * max + tol.abs;
    let mut relative = 0usize;
    let bad = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| {
            let (g, w) = (**g as f64, **w as f64);
            if tol.rel * w.abs() >= floor {
                relative += 1;
            }
            !((g - w).abs() <= tol.rel * w.abs() + floor)
        })
        .map(|(i, _)| i)
        .collect();
    (bad, relative as f64 / want.len().max(1) as f64)
}

/// The example programs, parsed from the current `dsl-examples/*.tile` text.
fn example_programs() -> Vec<(String, Program)> {
    let dir = root().join("dsl-examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tile"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .tile files in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let src = SourceFile::load(&p).unwrap();
            let prog = parse_program(&src)
                .unwrap_or_else(|d| panic!("{}: {}", p.display(), d.render(&src)));
            (p.display().to_string(), prog)
        })
        .collect()
}

/// `kernel` at `config` compiled from the current source for the interpreter.
fn from_source(
    programs: &[(String, Program)],
    dev: &Device,
    kernel: &str,
    c: &Config,
) -> tile_runtime::Kernel {
    let (file, prog) = programs
        .iter()
        .find(|(_, p)| p.kernel_names().iter().any(|k| k == kernel))
        .unwrap_or_else(|| panic!("`{kernel}` is in the pack but in no dsl-examples/*.tile"));
    let tir = prog
        .specialize(kernel, &c.meta)
        .unwrap_or_else(|d| panic!("{file}: {kernel} [{}]: {d:?}", describe(c)));
    dev.load_tir(tir, c.warps).unwrap()
}

fn output_dtypes(case: &Case) -> Vec<Scalar> {
    case.args
        .iter()
        .filter_map(|a| match a {
            HostArg::Buf {
                dtype,
                output: true,
                ..
            } => Some(*dtype),
            _ => None,
        })
        .collect()
}

/// Compare every output of one case; Err with the first mismatch.
fn compare(
    kernel: &str,
    c: &Config,
    case: &Case,
    got: &[Vec<f32>],
    want: &[Vec<f32>],
) -> Result<Vec<f64>, String> {
    let mut fractions = Vec::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = tolerance(kernel, c, case, i);
        let (bad, relative) = check(g, w, tol);
        if let Some(&first) = bad.first() {
            return Err(format!(
                "{kernel} [{}] {} output #{i} ({:?}): {} of {} differ ({tol:?}), first at {first}: \
                 gpu {} vs interpreter {}",
                describe(c),
                case.label,
                output_dtypes(case)[i],
                bad.len(),
                g.len(),
                g[first],
                w[first]
            ));
        }
        fractions.push(relative);
    }
    Ok(fractions)
}

/// A test-only switch that turns a kernel deliberately wrong, to show that the
/// GPU tier catches it: `TILE_TEST_SABOTAGE=softmax-zero` (here),
/// `adamw-no-bias-correction` (mhc-train's gpu_ops), `mhc-drop-term` (mhc's
/// backward checks). Each must make the strict GPU run fail.
fn sabotaged(what: &str) -> bool {
    std::env::var("TILE_TEST_SABOTAGE").is_ok_and(|v| v.split(',').any(|w| w == what))
}

#[test]
fn gpu_every_example_matches_the_interpreter() {
    let Some(gpu) = gpu_or_skip("gpu_every_example_matches_the_interpreter") else {
        return;
    };
    let cpu = Device::cpu();
    let pack = examples_pack();
    let programs = example_programs();
    let seed = seed("gpu_every_example_matches_the_interpreter: ");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut summary = Vec::new();
    for kp in &pack.manifest().kernels {
        if checked_elsewhere(&kp.name) {
            continue;
        }
        let variants: Vec<_> = if small() {
            kp.variants.iter().take(1).collect()
        } else {
            kp.variants.iter().collect()
        };
        for v in variants {
            let kg = pack.load_kernel(&gpu, &kp.name, &v.config).unwrap();
            let kc = from_source(&programs, &cpu, &kp.name, &v.config);
            for case in cases(&kp.name, &v.config, &mut rng) {
                let mut got = run_case(&gpu, &kg, &case);
                if kp.name.starts_with("softmax") && sabotaged("softmax-zero") {
                    // A wrong kernel on purpose: writes 0 wherever the
                    // softmax is below 1e-4 (see `sabotaged`).
                    got.iter_mut()
                        .flatten()
                        .filter(|x| x.abs() < 1e-4)
                        .for_each(|x| *x = 0.0);
                }
                let want = run_case(&cpu, &kc, &case);
                let fractions = compare(&kp.name, &v.config, &case, &got, &want)
                    .unwrap_or_else(|e| panic!("{e}"));
                let checked: Vec<String> = fractions
                    .iter()
                    .map(|f| format!("{:.1}%", 100.0 * f))
                    .collect();
                summary.push(format!(
                    "ok {} [{}] {} (outputs checked relatively: {})",
                    kp.name,
                    describe(&v.config),
                    case.label,
                    checked.join(", ")
                ));
            }
        }
    }
    for s in &summary {
        eprintln!("{s}");
    }
    eprintln!(
        "{} kernel × config × shape cases matched the interpreter",
        summary.len()
    );
}

/// The comparison itself, on the CPU (runs without a GPU): every example's
/// first tune config from source against itself passes, and the mutations the
/// old tolerance (rtol 1e-4 + atol 1e-4, bf16 atol 1e-3) let through fail: a
/// softmax writing 0 below 1e-4, a bf16 softmax writing 0 below 1e-3, and an
/// output off by 2 bf16 ulps.
#[test]
fn tolerances_catch_outputs_the_old_ones_let_through() {
    let cpu = Device::cpu();
    let programs = example_programs();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("tolerances: "));
    for (_, prog) in &programs {
        for kernel in prog.kernel_names() {
            if checked_elsewhere(&kernel) {
                continue;
            }
            let meta: Vec<(String, i64)> = match prog.tune_space(&kernel) {
                Some(space) => space
                    .params
                    .iter()
                    .map(|(n, vals)| (n.clone(), vals[0]))
                    .collect(),
                None => Vec::new(),
            };
            let warps = prog
                .tune_space(&kernel)
                .and_then(|s| s.warps.first().copied())
                .unwrap_or(4);
            let mut defaults: Vec<(String, i64)> = prog
                .meta_params(&kernel)
                .into_iter()
                .filter_map(|(n, d)| d.map(|d| (n, d)))
                .filter(|(n, _)| !meta.iter().any(|(m, _)| m == n))
                .collect();
            defaults.extend(meta);
            let c = Config {
                meta: defaults,
                warps,
                stages: None,
                ctas: None,
            };
            let k = from_source(&programs, &cpu, &kernel, &c);
            // The interpreter is slow: the first case of each kernel only.
            let case = cases(&kernel, &c, &mut rng).remove(0);
            let want = run_case(&cpu, &k, &case);
            compare(&kernel, &c, &case, &want, &want).unwrap();
            let mutate = |f: &dyn Fn(f32) -> f32| -> Vec<Vec<f32>> {
                want.iter()
                    .map(|o| o.iter().map(|x| f(*x)).collect())
                    .collect()
            };
            if kernel == "softmax" {
                let zeroed = mutate(&|x| if x.abs() < 1e-4 { 0.0 } else { x });
                assert_ne!(zeroed, want, "some softmax outputs are below 1e-4");
                let e = compare(&kernel, &c, &case, &zeroed, &want).unwrap_err();
                eprintln!("caught: {e}");
            }
            if kernel == "softmax_bf16" {
                let zeroed = mutate(&|x| if x.abs() < 1e-3 { 0.0 } else { x });
                assert_ne!(zeroed, want, "some bf16 softmax outputs are below 1e-3");
                let e = compare(&kernel, &c, &case, &zeroed, &want).unwrap_err();
                eprintln!("caught: {e}");
            }
            // Every kernel's outputs 2 bf16 ulps (3·2^-8 relative) off fail;
            // attention, whose absolute part allows two bf16 flips of p, at 4 ulps.
            let factor = if kernel == "attention" {
                1.0 + 1.0 / 32.0
            } else {
                1.0 + 3.0 / 256.0
            };
            let off = mutate(&|x| x * factor);
            if off != want {
                let e = compare(&kernel, &c, &case, &off, &want).unwrap_err();
                eprintln!("caught: {e}");
            }
        }
    }
}
