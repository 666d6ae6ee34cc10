//! Every op of `mhc_train::ops` on the GPU (kernels from the compiled packs, GEMMs
//! through cuBLAS) against the same op on the CPU interpreter (embedded
//! sources, matrixmultiply), on the same fresh random inputs with NaN-filled
//! outputs, at realistic and ragged sizes. Without a GPU every test prints
//! `SKIPPED <name>: <reason>` and passes.
//!
//! Packs: `$TILE_PACK_DIR/{mhc,model}.tpack`, else `target/packs/` (both made
//! by `bash scripts/packs [DIR]`). `TILE_SANITIZER_RUN=1` shrinks the sizes
//! for compute-sanitizer runs.
//!
//! Tolerances (see `close`, `close_by`): 2e-4 of the output's RMS for f32
//! kernels (the GPU's `ex2.approx`/`lg2.approx`/`rsqrt.approx` are accurate to
//! a few ulp; sums run in another order); the TF32 GEMM bounds below for
//! cuBLAS results; per element, from the input, for GELU (`tanh.approx`,
//! 2^-10.987 relative); AdamW's update itself (p after − p before), not the
//! parameters, at a few f32 roundings of the update; f32 stream sums at
//! their reduction length, bf16 results at one bf16 ulp (2^-7 relative: the
//! engines may round an f32 value near a tie either way); bit-exact for
//! moves and casts.

use half::bf16;
use mhc::kernels::KernelSet;
use mhc_train::ops::{AdamW, Ops, OpsError, Out};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tile_runtime::blas::GemmOp;
use tile_runtime::{Buffer, Device, Element, Scalar};
use tile_testkit::{gpu_or_skip, packs_dir as pack_dir, seed};

const F32_TOL: f64 = 2e-4;
/// f32 unit roundoff (half an ulp, relative) per rounding.
const U: f64 = 1.0 / 16_777_216.0;
/// One TF32 GEMM: each input rounded to a 10-bit mantissa (2^-11 relative),
/// so each product is off by up to 2^-10, independently, of either sign: over
/// K terms the output's error has σ ≈ 2^-10/√3 of the output's RMS. Within
/// 7σ of the RMS for every one of up to ~10^6 outputs: 4·2^-10 ≈ 4e-3.
const TF32_GEMM_TOL: f64 = 4.0 / 1024.0;
/// Attention chains TF32 GEMMs around a softmax: the forward two (scores,
/// then P·V; a score's error passes through exp as a relative error of p),
/// the backward up to four in sequence (S = Q·Kᵀ → P → dP = dY·Vᵀ →
/// dQ = dS·K): σ ≈ √4·2^-10/√3 ≈ 2^-10 of the RMS, 10σ: 10·2^-10 ≈ 1e-2.
const ATTN_TOL: f64 = 10.0 / 1024.0;

/// Host data of one buffer.
#[derive(Clone)]
enum Host {
    F32(Vec<f32>),
    I32(Vec<i32>),
    Bf16(Vec<bf16>),
}

impl Host {
    fn upload(&self, d: &Device) -> Buffer {
        match self {
            Host::F32(v) => d.upload(v),
            Host::I32(v) => d.upload(v),
            Host::Bf16(v) => d.upload(v),
        }
        .unwrap()
    }
}

fn nan_f32(n: usize) -> Host {
    Host::F32(vec![f32::NAN; n])
}

fn nan_bf16(n: usize) -> Host {
    Host::Bf16(vec![bf16::NAN; n])
}

fn download(d: &Device, b: &Buffer) -> Vec<f64> {
    match b.dtype() {
        Scalar::BF16 => d
            .download::<bf16>(b)
            .unwrap()
            .iter()
            .map(|x| x.to_f64())
            .collect(),
        _ => d
            .download::<f32>(b)
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect(),
    }
}

/// The ops on the GPU and on the CPU, or `None` after printing why the test is skipped.
fn pair(test: &str) -> Option<[Ops; 2]> {
    let gpu = gpu_or_skip(test)?;
    let dir = pack_dir();
    // Refuse stale packs: every kernel's source hash is a current .tile file.
    for pack in ["mhc", "model"] {
        tile_testkit::current_pack_path(pack);
    }
    let ks = KernelSet::open(Arc::new(gpu), Some(&dir)).unwrap_or_else(|e| {
        panic!(
            "{e}\n(build the packs with `bash scripts/packs {}`)",
            dir.display()
        )
    });
    let cpu = KernelSet::from_sources(Arc::new(Device::cpu())).unwrap();
    Some([
        Ops::new(Arc::new(ks)).unwrap(),
        Ops::new(Arc::new(cpu)).unwrap(),
    ])
}

/// The full sizes, or smaller ones under compute-sanitizer (`TILE_SANITIZER_RUN`,
/// set by scripts/gpu-run.sh), which runs kernels many times slower.
/// AdamW's clip norm for [`scaled_by_0_7`].
const CLIP: f32 = 1.4;

/// A step's `[loss, squared gradient norm]` on the device whose norm (2)
/// AdamW clips to [`CLIP`]: every gradient scaled by 0.7 (exactly, in f32).
fn scaled_by_0_7(d: &Device) -> Buffer {
    d.upload(&[0.25f32, 4.0]).unwrap()
}

fn pick<T>(full: T, small: T) -> T {
    if std::env::var_os("TILE_SANITIZER_RUN").is_some() {
        small
    } else {
        full
    }
}

fn rng(test: &str) -> StdRng {
    StdRng::seed_from_u64(seed(&format!("{test}: ")))
}

fn randv(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Run `f` on both devices with `inputs` and `outputs` (initial contents)
/// uploaded to each; the outputs as downloaded, [gpu, cpu].
fn run(
    ops: &[Ops; 2],
    inputs: &[Host],
    outputs: &[Host],
    f: impl Fn(&Ops, &[Buffer], &mut [Buffer]) -> Result<(), OpsError>,
) -> [Vec<Vec<f64>>; 2] {
    [0, 1].map(|i| {
        let d = ops[i].device();
        let ins: Vec<Buffer> = inputs.iter().map(|h| h.upload(d)).collect();
        let mut outs: Vec<Buffer> = outputs.iter().map(|h| h.upload(d)).collect();
        f(&ops[i], &ins, &mut outs).unwrap();
        d.synchronize().unwrap();
        outs.iter().map(|b| download(d, b)).collect()
    })
}

/// |gpu − cpu| ≤ tol·(|cpu| + rms(cpu)) everywhere (NaN fails); tol = 0: bit-exact.
#[track_caller]
fn close(what: &str, [gpu, cpu]: &[Vec<Vec<f64>>; 2], tol: f64) {
    for (k, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let rms = (c.iter().map(|w| w * w).sum::<f64>() / c.len().max(1) as f64).sqrt();
        let bad: Vec<usize> = (0..c.len())
            // Written so that NaN on either side counts as a mismatch.
            .filter(|&i| {
                let ok = (g[i] - c[i]).abs() <= tol * (c[i].abs() + rms);
                !ok
            })
            .collect();
        if let Some(&i) = bad.first() {
            panic!(
                "{what} output {k}: {} of {} elements differ; first [{i}]: gpu {}, cpu {} (rms {rms:.3e}, tol {tol:.1e})",
                bad.len(),
                c.len(),
                g[i],
                c[i]
            );
        }
        eprintln!("{what} output {k}: {} elements match", c.len());
    }
}

/// |gpu − cpu| ≤ bound(output, index, cpu value) everywhere (NaN fails).
#[track_caller]
fn close_by(what: &str, [gpu, cpu]: &[Vec<Vec<f64>>; 2], bound: impl Fn(usize, usize, f64) -> f64) {
    for (k, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let bad: Vec<usize> = (0..c.len())
            .filter(|&i| !((g[i] - c[i]).abs() <= bound(k, i, c[i])))
            .collect();
        if let Some(&i) = bad.first() {
            panic!(
                "{what} output {k}: {} of {} elements differ; first [{i}]: gpu {}, cpu {} (bound {:.3e})",
                bad.len(),
                c.len(),
                g[i],
                c[i],
                bound(k, i, c[i])
            );
        }
        eprintln!("{what} output {k}: {} elements match", c.len());
    }
}

/// The largest |value| of each output.
fn max_abs(outs: &[Vec<f64>]) -> Vec<f64> {
    outs.iter()
        .map(|o| o.iter().fold(0.0f64, |m, x| m.max(x.abs())))
        .collect()
}

/// GELU's forward and backward bounds at input x (and upstream dy), from
/// `tanh.approx` (absolute error ≤ 2^-10.987·|tanh u|, taken as 2^-10) through the kernel's
/// formulas (elementwise.tile), plus a few f32 roundings of each term.
/// Forward 0.5·x·(1 + t): the tanh error times 0.5|x|. Backward
/// dy·(0.5(1 + t) + 0.5x(1 − t²)·du): δt·(0.5 + |x·t|·du) times |dy|
/// (d(t²) = 2t·δt). Where t → −1 the output cancels to ~0 while the bound
/// stays 2^-11·|x|: that is the hardware's real error there.
fn gelu_bounds(x: f64, dy: f64) -> (f64, f64) {
    let t = (0.7978845608028654 * (x + 0.044715 * x * x * x)).tanh();
    let du = 0.7978845608028654 * (1.0 + 0.134145 * x * x);
    // PTX ISA: tanh.approx.f32's maximum relative error is 2^-10.987; 2^-10.
    let dt = t.abs() / 1024.0;
    let fwd = 0.5 * x.abs() * (dt + 8.0 * U) + 8.0 * U * (0.5 * x.abs() * (1.0 + t.abs()));
    let g = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
    let bwd = dy.abs()
        * (dt * (0.5 + (x * t).abs() * du) + 16.0 * U * (1.0 + x.abs() * du) + 8.0 * U * g.abs());
    (fwd, bwd)
}

/// The AdamW update (p after − p before) of two steps, as `close_by` bounds:
/// per step the kernel rounds ~12 times in f32 (m, v, the bias corrections,
/// sqrt, +eps, the division, the decay, ×lr) on terms no larger than
/// lr·(3 + wd·|p|) (|m̂/√v̂| ≤ 1 at step 1, ≤ 3 at step 2), and stores p
/// rounded to its own ulp (2^-24·|p| each step); both engines: 2 steps × 2 ×
/// (16·2^-24·lr·(3 + wd·|p|) + 2^-24·|p|).
fn adamw_update_bound(p0: f64, lr: f64, wd: f64) -> f64 {
    4.0 * (16.0 * U * lr * (3.0 + wd * p0.abs()) + U * (p0.abs() + lr))
}

#[test]
fn gpu_gemm() {
    let Some(ops) = pair("gpu_gemm") else { return };
    let mut rng = rng("gpu_gemm");
    for (m, n, k, ta, tb, batch) in [
        (257, 129, 300, false, false, 1),
        (64, 768, 2304, false, true, 1),
        (300, 70, 33, true, false, 1),
        (129, 64, 129, false, true, 12),
        (129, 64, 129, true, true, 5),
    ] {
        let op = GemmOp::new(m, n, k)
            .trans_a(ta)
            .trans_b(tb)
            .alpha(0.75)
            .beta(0.5)
            .offsets(3, 5, 7)
            .batched(batch);
        let (a, b) = (
            randv(&mut rng, 3 + batch * m * k, 1.0),
            randv(&mut rng, 5 + batch * n * k, 1.0),
        );
        let c = randv(&mut rng, 7 + batch * m * n, 1.0);
        let r = run(
            &ops,
            &[Host::F32(a), Host::F32(b)],
            &[Host::F32(c)],
            |o, i, out| o.gemm(&op, &i[0], &i[1], &mut out[0]),
        );
        close(
            &format!("gemm {m}x{n}x{k} ta={ta} tb={tb} batch={batch}"),
            &r,
            TF32_GEMM_TOL,
        );
        // The same with bf16 operands (the trainer's linear layers): exact
        // products, f32 sums in two orders, each within k·U·Σ|a·b| of exact
        // (Σ|a·b| ≈ k/4 for uniform ±1 inputs, the outputs' RMS ≈ √k/3):
        // 2·k·U·(k/4)/(√k/3) = 1.5·k^1.5·U of the RMS; 2·k^1.5·U.
        let half = |v: Vec<f32>| Host::Bf16(v.into_iter().map(bf16::from_f32).collect());
        let (a, b) = (
            randv(&mut rng, 3 + batch * m * k, 1.0),
            randv(&mut rng, 5 + batch * n * k, 1.0),
        );
        let c = randv(&mut rng, 7 + batch * m * n, 1.0);
        let r = run(&ops, &[half(a), half(b)], &[Host::F32(c)], |o, i, out| {
            o.gemm(&op, &i[0], &i[1], &mut out[0])
        });
        close(
            &format!("bf16 gemm {m}x{n}x{k} ta={ta} tb={tb} batch={batch}"),
            &r,
            2.0 * (k as f64).powf(1.5) * U,
        );
        // And into a bf16 C (the trainer's MLP hidden layer): the same sums,
        // each rounded once; where the two engines' sums straddle a rounding
        // boundary they differ by one bf16 ulp, at most 2⁻⁷ of the value.
        let (a, b) = (
            randv(&mut rng, 3 + batch * m * k, 1.0),
            randv(&mut rng, 5 + batch * n * k, 1.0),
        );
        let c = randv(&mut rng, 7 + batch * m * n, 1.0);
        let r = run(&ops, &[half(a), half(b)], &[half(c)], |o, i, out| {
            o.gemm(&op, &i[0], &i[1], &mut out[0])
        });
        close(
            &format!("bf16 gemm into bf16 {m}x{n}x{k} ta={ta} tb={tb} batch={batch}"),
            &r,
            2.0 * (k as f64).powf(1.5) * U + 1.0 / 128.0,
        );
    }
}

/// The MLP's GEMMs with GELU in their epilogue (our kernels, not cuBLAS):
/// the bf16 GEMM's tolerance (as `gpu_gemm`'s "into bf16"), one more bf16
/// ulp where GELU follows a value that rounded apart, and GELU's own
/// (`tanh.approx` on the GPU: ≤ 2⁻¹⁰ of |x| and of the slope, under 2⁻⁷ of
/// the RMS here).
#[test]
fn gpu_mlp_gemms() {
    let Some(ops) = pair("gpu_mlp_gemms") else {
        return;
    };
    let mut rng = rng("gpu_mlp_gemms");
    let half = |v: Vec<f32>| Host::Bf16(v.into_iter().map(bf16::from_f32).collect());
    for (m, n, k) in pick(
        [(300, 520, 192), (131, 150, 72)],
        [(131, 150, 72), (5, 9, 70)],
    ) {
        let tol = 2.0 * (k as f64).powf(1.5) * U + 2.0 / 128.0;
        let (a, w) = (randv(&mut rng, m * k, 1.0), randv(&mut rng, k * n, 0.3));
        let r = run(
            &ops,
            &[half(a), half(w)],
            &[nan_bf16(m * n), nan_bf16(m * n)],
            |o, i, out| {
                let (u, g) = out.split_at_mut(1);
                o.linear_gelu(&i[0], &i[1], &mut u[0], &mut g[0], m, n, k)
            },
        );
        close(&format!("linear_gelu {m}x{n}x{k}"), &r, tol);
        let (dy, w) = (randv(&mut rng, m * k, 1.0), randv(&mut rng, n * k, 0.3));
        let u = randv(&mut rng, m * n, 3.0);
        let r = run(
            &ops,
            &[half(dy), half(w), half(u)],
            &[nan_bf16(m * n), nan_bf16(m * n)],
            |o, i, out| {
                let (du, g) = out.split_at_mut(1);
                o.linear_gelu_bwd(&i[0], &i[1], &i[2], &mut du[0], &mut g[0], m, n, k)
            },
        );
        close(&format!("linear_gelu_bwd {m}x{n}x{k}"), &r, tol);
    }
}

#[test]
fn gpu_embedding() {
    let Some(ops) = pair("gpu_embedding") else {
        return;
    };
    let mut rng = rng("gpu_embedding");
    for (b, t, vocab, c) in pick(
        [(4, 257, 256, 768), (3, 100, 300, 77)],
        [(2, 33, 256, 96), (1, 10, 30, 77)],
    ) {
        let rows = b * t;
        let toks: Vec<i32> = (0..rows)
            .map(|_| rng.random_range(0..vocab as i32))
            .collect();
        let ins = [
            Host::I32(toks.clone()),
            Host::F32(randv(&mut rng, vocab * c, 1.0)),
            Host::F32(randv(&mut rng, t * c, 1.0)),
            Host::F32(randv(&mut rng, rows * c, 1.0)),
        ];
        let r = run(
            &ops,
            &ins,
            &[nan_f32(rows * c), nan_f32(rows * c)],
            |o, i, out| {
                o.embed_fwd(&i[0], &i[1], None, &mut out[0], rows, t, vocab, c)?;
                o.embed_fwd(&i[0], &i[1], Some(&i[2]), &mut out[1], rows, t, vocab, c)
            },
        );
        close("embed_fwd", &r, 0.0);
        let prev = Host::F32(randv(&mut rng, vocab * c, 1.0));
        let r = run(
            &ops,
            &ins,
            &[nan_f32(vocab * c), prev, nan_f32(t * c)],
            |o, i, out| {
                o.embed_bwd(&toks, &i[3], &mut out[0], vocab, c, Out::Write)?;
                o.embed_bwd(&toks, &i[3], &mut out[1], vocab, c, Out::Add)?;
                o.embed_pos_bwd(&i[3], &mut out[2], rows, t, c, Out::Write)
            },
        );
        close("embed_bwd", &r, F32_TOL);
    }
}

#[test]
fn gpu_rmsnorm() {
    let Some(ops) = pair("gpu_rmsnorm") else {
        return;
    };
    let mut rng = rng("gpu_rmsnorm");
    // Up to rows of several blocks (5000 columns).
    for (rows, n) in pick(
        [(1000, 768), (37, 3000), (300, 33), (20, 5000)],
        [(50, 768), (3, 3000), (70, 33), (3, 5000)],
    ) {
        let ins = [
            Host::F32(randv(&mut rng, rows * n, 2.0)),
            Host::F32(randv(&mut rng, n, 1.0)),
            Host::F32(randv(&mut rng, rows * n, 1.0)),
        ];
        let outs = [
            nan_f32(rows * n),
            nan_f32(rows),
            Host::F32(randv(&mut rng, rows * n, 1.0)),
            nan_f32(n),
        ];
        let r = run(&ops, &ins, &outs, |o, i, out| {
            let (y, rest) = out.split_at_mut(1);
            let (rstd, rest) = rest.split_at_mut(1);
            let (dx, dw) = rest.split_at_mut(1);
            o.rmsnorm_fwd(&i[0], &i[1], &mut y[0], &mut rstd[0], rows, n, 1e-5)?;
            o.rmsnorm_bwd(
                &i[0],
                &i[1],
                &rstd[0],
                &i[2],
                &mut dx[0],
                Out::Add,
                None,
                &mut dw[0],
                Out::Write,
                rows,
                n,
            )
        });
        close(&format!("rmsnorm {rows}x{n}"), &r, F32_TOL);
        // A bf16 run's backward: dy in bf16, dx also rounded into dx16.
        let dy16 = match &ins[2] {
            Host::F32(v) => Host::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            _ => unreachable!("dy is f32"),
        };
        let r = run(
            &ops,
            &[ins[0].clone(), ins[1].clone(), dy16.clone()],
            &[outs[2].clone(), nan_bf16(rows * n), nan_f32(n)],
            |o, i, out| {
                let (dx, rest) = out.split_at_mut(1);
                let (dx16, dw) = rest.split_at_mut(1);
                let mut rstd = o.device().alloc_output(Scalar::F32, rows)?;
                let mut y = o.device().alloc_output(Scalar::BF16, rows * n)?;
                o.rmsnorm_fwd(&i[0], &i[1], &mut y, &mut rstd, rows, n, 1e-5)?;
                o.rmsnorm_bwd(
                    &i[0],
                    &i[1],
                    &rstd,
                    &i[2],
                    &mut dx[0],
                    Out::Add,
                    Some(&mut dx16[0]),
                    &mut dw[0],
                    Out::Write,
                    rows,
                    n,
                )
            },
        );
        close(
            &format!("rmsnorm backward from bf16 {rows}x{n}"),
            &r,
            F32_TOL + 1.0 / 128.0,
        );
        // y rounded to bf16 (the trainer's): within F32_TOL, then one bf16
        // ulp (2^-7 relative) where the engines' values round apart.
        let r = run(
            &ops,
            &ins[..2],
            &[nan_bf16(rows * n), nan_f32(rows)],
            |o, i, out| {
                let (y, rstd) = out.split_at_mut(1);
                o.rmsnorm_fwd(&i[0], &i[1], &mut y[0], &mut rstd[0], rows, n, 1e-5)
            },
        );
        close(
            &format!("rmsnorm to bf16 {rows}x{n}"),
            &r,
            F32_TOL + 1.0 / 128.0,
        );
        // A plain residual's sum and the next norm in one kernel, the
        // sublayer's term in bf16 (a bf16 run's): the sum exact on both
        // engines (one f32 add), y and rstd as above.
        let r = run(
            &ops,
            &[ins[0].clone(), ins[1].clone(), dy16.clone()],
            &[nan_f32(rows * n), nan_bf16(rows * n), nan_f32(rows)],
            |o, i, out| {
                let (sum, rest) = out.split_at_mut(1);
                let (y, rstd) = rest.split_at_mut(1);
                o.add_rmsnorm_fwd(
                    &i[0],
                    &i[2],
                    &mut sum[0],
                    &i[1],
                    &mut y[0],
                    &mut rstd[0],
                    rows,
                    n,
                    1e-5,
                )
            },
        );
        close(
            &format!("add_rmsnorm to bf16 {rows}x{n}"),
            &r,
            F32_TOL + 1.0 / 128.0,
        );
    }
}

#[test]
fn gpu_attention() {
    let Some(ops) = pair("gpu_attention") else {
        return;
    };
    let mut rng = rng("gpu_attention");
    for (bh, t, d) in pick(
        [(8, 257, 64), (2, 1030, 32), (3, 5, 16)],
        [(2, 65, 16), (1, 130, 32), (3, 5, 16)],
    ) {
        let nq = bh * t * d;
        let ins: Vec<Host> = (0..4)
            .map(|_| Host::F32(randv(&mut rng, nq, 1.0)))
            .collect();
        let scale = 1.0 / (d as f32).sqrt();
        let outs = [
            nan_f32(bh * t * t),
            nan_f32(nq),
            nan_f32(nq),
            nan_f32(nq),
            nan_f32(nq),
            nan_f32(bh * t * t),
        ];
        let r = run(&ops, &ins, &outs, |o, i, out| {
            let [p, y, dq, dk, dv, ws] = out else {
                unreachable!()
            };
            o.attention_fwd(&i[0], &i[1], &i[2], p, y, bh, t, d, scale)?;
            o.attention_bwd(
                &i[0], &i[1], &i[2], p, &i[3], dq, dk, dv, ws, bh, t, d, scale,
            )
        });
        close(&format!("attention bh={bh} t={t} d={d}"), &r, ATTN_TOL);
        // The softmax kernels alone (no TF32 GEMM in front).
        let s = [
            Host::F32(randv(&mut rng, bh * t * t, 4.0)),
            Host::F32(randv(&mut rng, bh * t * t, 1.0)),
        ];
        let r = run(
            &ops,
            &s,
            &[nan_f32(bh * t * t), nan_f32(bh * t * t)],
            |o, i, out| {
                let (p, ds) = out.split_at_mut(1);
                o.attn_softmax_fwd(&i[0], &mut p[0], bh, t, scale)?;
                o.attn_softmax_bwd(&p[0], &i[1], &mut ds[0], bh, t, scale)
            },
        );
        close(&format!("attn_softmax bh={bh} t={t}"), &r, F32_TOL);
    }
}

/// The fused attention (flash_attention.tile) forward and backward, GPU
/// against the interpreter on the same bf16 inputs, at lengths no multiple
/// of the blocks. Both round P and dS to bf16 before their second dots; the
/// GPU's exp2 (`ex2.approx`, ≤ 2 f32 ulp) can flip such a rounding (one bf16
/// ulp, 2^-8, of one term) only for the rare terms within 2 f32 ulp of a
/// rounding boundary, and the outputs' own bf16 rounding then differs by at
/// most one ulp: 4·2^-8 of (|cpu| + rms) leaves room for both.
#[test]
fn gpu_flash_attention() {
    let Some(ops) = pair("gpu_flash_attention") else {
        return;
    };
    let mut rng = rng("gpu_flash_attention");
    // Several sequences and heads in the token-major tensors (qkv, o, dO,
    // dqkv) the kernels read and write.
    for (batch, heads, t, d) in pick(
        [(2, 4, 257, 64), (1, 1, 1030, 128)],
        [(1, 2, 70, 64), (1, 1, 65, 128)],
    ) {
        let (bh, nq) = (batch * heads, batch * heads * t * d);
        let ins: Vec<Host> = [3 * nq, nq]
            .into_iter()
            .map(|n| {
                Host::Bf16(
                    randv(&mut rng, n, 2.0)
                        .into_iter()
                        .map(bf16::from_f32)
                        .collect(),
                )
            })
            .collect();
        let scale = 1.0 / (d as f32).sqrt();
        // The deterministic backward, then the fused one (its f32 dQ sums
        // compared too).
        for fused in [false, true] {
            let mut outs = vec![
                nan_bf16(nq),
                nan_f32(bh * t),
                nan_f32(bh * t),
                nan_bf16(3 * nq),
            ];
            if fused {
                outs.push(nan_f32(nq));
            }
            let r = run(&ops, &ins, &outs, |o, i, out| {
                let (y, rest) = out.split_first_mut().unwrap();
                let [lse, delta, dqkv, acc @ ..] = rest else {
                    unreachable!()
                };
                o.flash_attention_fwd(&i[0], y, lse, batch, t, heads, d, scale)?;
                o.flash_attention_bwd(
                    &i[0],
                    y,
                    lse,
                    &i[1],
                    delta,
                    dqkv,
                    acc.first_mut(),
                    batch,
                    t,
                    heads,
                    d,
                    scale,
                )
            });
            close(
                &format!("flash attention batch={batch} heads={heads} t={t} d={d} fused={fused}"),
                &r,
                4.0 / 256.0,
            );
        }
    }
}

/// A test-only switch that turns a kernel deliberately wrong, to show that the
/// GPU tier catches it: `TILE_TEST_SABOTAGE=adamw-no-bias-correction` (here;
/// see integration-tests' gpu_examples for the others).
fn sabotaged(what: &str) -> bool {
    std::env::var("TILE_TEST_SABOTAGE").is_ok_and(|v| v.split(',').any(|w| w == what))
}

#[test]
fn gpu_gelu_loss_adamw() {
    let Some(ops) = pair("gpu_gelu_loss_adamw") else {
        return;
    };
    let mut rng = rng("gpu_gelu_loss_adamw");
    let n = pick(1_000_003, 10_007);
    let (x, dy) = (randv(&mut rng, n, 5.0), randv(&mut rng, n, 1.0));
    let ins = [Host::F32(x.clone()), Host::F32(dy.clone())];
    let r = run(&ops, &ins, &[nan_f32(n), nan_f32(n)], |o, i, out| {
        let (y, dx) = out.split_at_mut(1);
        o.gelu_fwd(&i[0], &mut y[0], n)?;
        o.gelu_bwd(&i[0], &i[1], &mut dx[0], n)
    });
    close_by("gelu", &r, |k, i, _| {
        let (fwd, bwd) = gelu_bounds(x[i] as f64, dy[i] as f64);
        if k == 0 {
            fwd
        } else {
            bwd
        }
    });
    // Rounded to bf16 (the trainer's): the same bounds, then one bf16 ulp.
    let r = run(&ops, &ins, &[nan_bf16(n), nan_bf16(n)], |o, i, out| {
        let (y, dx) = out.split_at_mut(1);
        o.gelu_fwd(&i[0], &mut y[0], n)?;
        o.gelu_bwd(&i[0], &i[1], &mut dx[0], n)
    });
    close_by("gelu to bf16", &r, |k, i, c| {
        let (fwd, bwd) = gelu_bounds(x[i] as f64, dy[i] as f64);
        (if k == 0 { fwd } else { bwd }) * (1.0 + 1.0 / 128.0) + c.abs() / 128.0
    });
    // From bf16 inputs (the trainer's MLP: the GEMM writes u in bf16): the
    // bounds at the rounded x, then one bf16 ulp.
    let x16: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    let ins16 = [
        Host::Bf16(x16.iter().map(|&v| bf16::from_f32(v)).collect()),
        Host::F32(dy.clone()),
    ];
    let r = run(&ops, &ins16, &[nan_bf16(n), nan_bf16(n)], |o, i, out| {
        let (y, dx) = out.split_at_mut(1);
        o.gelu_fwd(&i[0], &mut y[0], n)?;
        o.gelu_bwd(&i[0], &i[1], &mut dx[0], n)
    });
    close_by("gelu from bf16", &r, |k, i, c| {
        let (fwd, bwd) = gelu_bounds(x16[i] as f64, dy[i] as f64);
        (if k == 0 { fwd } else { bwd }) * (1.0 + 1.0 / 128.0) + c.abs() / 128.0
    });
    for (rows, vocab) in pick([(2049, 256), (33, 5000)], [(65, 256), (3, 5000)]) {
        let targets: Vec<i32> = (0..rows)
            .map(|_| rng.random_range(0..vocab as i32))
            .collect();
        let ins = [
            Host::F32(randv(&mut rng, rows * vocab, 8.0)),
            Host::I32(targets),
        ];
        let r = run(
            &ops,
            &ins,
            &[nan_f32(rows), nan_f32(rows * vocab), nan_f32(1)],
            |o, i, out| {
                let [loss, dl, mean] = out else {
                    unreachable!()
                };
                o.cross_entropy(&i[0], &i[1], loss, Some(dl), rows, vocab, 1.0 / rows as f32)?;
                o.sum(loss, rows, mean, 0, 1.0 / rows as f32, Out::Write)
            },
        );
        close(&format!("cross_entropy {rows}x{vocab}"), &r, F32_TOL);
    }
    let hp = AdamW {
        lr: 3e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let n = pick(300_001, 3001);
    let (g1, g2) = (randv(&mut rng, n, 1.0), randv(&mut rng, n, 1.0));
    let p0 = randv(&mut rng, n, 1.0);
    let ins = [Host::F32(g1.clone()), Host::F32(g2.clone())];
    let outs = [
        Host::F32(p0.clone()),
        Host::F32(vec![0.0; n]),
        Host::F32(vec![0.0; n]),
    ];
    let mut r = run(&ops, &ins, &outs, |o, i, out| {
        let [p, m, v] = out else { unreachable!() };
        let stats = scaled_by_0_7(o.device());
        o.adamw(p, &i[0], m, v, None, n, &hp, 1, &stats, CLIP)?;
        // A wrong optimizer on purpose (`sabotaged`): step 2 on the GPU
        // without its bias correction (at step 10^6 both corrections are 1).
        let step2 = if o.device().is_gpu() && sabotaged("adamw-no-bias-correction") {
            1_000_000
        } else {
            2
        };
        o.adamw(p, &i[1], m, v, None, n, &hp, step2, &stats, CLIP)
    });
    // Compare the update, not the parameters: |update| ≈ 2·lr = 6e-4 against
    // |p| ≈ 1, so a tolerance on p would cover most of it.
    for side in r.iter_mut() {
        for (pi, p0i) in side[0].iter_mut().zip(&p0) {
            *pi -= *p0i as f64;
        }
    }
    let s = 0.7;
    close_by("adamw (update, m, v)", &r, |k, i, c| {
        let (a, b) = ((g1[i] as f64 * s).abs(), (g2[i] as f64 * s).abs());
        match k {
            0 => adamw_update_bound(p0[i] as f64, hp.lr as f64, hp.weight_decay as f64),
            // m = 0.09·g1 + 0.1·g2 (either sign): 4 roundings of terms ≤ 0.1·|g|, two engines.
            1 => 8.0 * U * 0.1 * (a + b),
            // v: positive terms, 5 roundings, two engines.
            _ => 10.0 * U * c.abs(),
        }
    });
}

#[test]
fn gpu_reductions_are_deterministic() {
    let Some(ops) = pair("gpu_reductions_are_deterministic") else {
        return;
    };
    let mut rng = rng("gpu_reductions_are_deterministic");
    let (rows, n) = pick((8193, 769), (300, 77));
    let x = Host::F32(randv(&mut rng, rows * n, 1.0));
    let outs = [nan_f32(n), nan_f32(n), nan_f32(4), nan_f32(4)];
    let r = run(&ops, &[x], &outs, |o, i, out| {
        let [a, b, s, t] = out else { unreachable!() };
        o.col_sum(&i[0], rows, n, a, Out::Write)?;
        o.col_sum(&i[0], rows, n, b, Out::Write)?;
        o.sum(&i[0], rows * n, s, 1, 1.0, Out::Write)?;
        o.sum_squares(&i[0], rows * n, s, 2, Out::Write)?;
        o.sum(&i[0], rows * n, t, 1, 1.0, Out::Write)?;
        o.sum_squares(&i[0], rows * n, t, 2, Out::Write)
    });
    // Repeated runs on the GPU are bit-identical (the resume test relies on it).
    assert_eq!(r[0][0], r[0][1], "col_sum differs between two runs");
    assert_eq!(r[0][2][1..3], r[0][3][1..3], "sums differ between two runs");
    let cmp = [
        vec![r[0][0].clone(), r[0][2][1..3].to_vec()],
        vec![r[1][0].clone(), r[1][2][1..3].to_vec()],
    ];
    close("reductions", &cmp, F32_TOL);
}

#[test]
fn gpu_glue() {
    let Some(ops) = pair("gpu_glue") else { return };
    let mut rng = rng("gpu_glue");
    let n = pick(1_000_003, 10_007);
    let ins = [
        Host::F32(randv(&mut rng, n, 3.0)),
        Host::F32(randv(&mut rng, n, 3.0)),
    ];
    // copy and fill leave some elements alone: those must keep their values.
    let outs = [
        nan_f32(n),
        Host::F32(randv(&mut rng, n, 1.0)),
        Host::F32(randv(&mut rng, n + 10, 1.0)),
        Host::F32(randv(&mut rng, n, 1.0)),
        nan_bf16(n),
        nan_f32(n),
    ];
    let r = run(&ops, &ins, &outs, |o, i, out| {
        let [sum, y, copy, filled, h, back] = out else {
            unreachable!()
        };
        o.add(&i[0], &i[1], sum, n)?;
        o.axpy(-0.5, &i[0], y, n)?;
        o.scale(y, 1.25, n)?;
        o.copy(&i[0], 3, copy, 7, n - 3)?;
        o.fill(filled, 0.25, n - 1)?;
        o.cast_f32_bf16(&i[0], h, n)?;
        o.cast_bf16_f32(h, back, n)
    });
    // (FMA contraction may differ in the last bit for add/axpy/scale.)
    close("glue", &r, 1e-6);
    let (b, t, h, d, rows, c) = pick((2, 129, 12, 64, 300, 1000), (1, 33, 4, 16, 30, 100));
    let qkv = Host::F32(randv(&mut rng, b * t * 3 * h * d, 1.0));
    let bias = (
        Host::F32(randv(&mut rng, rows * c, 1.0)),
        Host::F32(randv(&mut rng, c, 1.0)),
    );
    let outs = [
        nan_f32(b * h * t * d),
        nan_f32(b * t * 3 * h * d),
        bias.0,
        nan_bf16(b * h * t * d),
        nan_bf16(b * t * 3 * h * d),
    ];
    let r = run(&ops, &[qkv, bias.1], &outs, |o, i, out| {
        let [x, back, xb, x16, back16] = out else {
            unreachable!()
        };
        for slot in 0..3 {
            o.split_heads(&i[0], x, b, t, h, d, 3, slot)?;
            o.merge_heads(x, back, b, t, h, d, 3, slot)?;
            // bf16 heads, merged into f32 and into bf16.
            o.split_heads(&i[0], x16, b, t, h, d, 3, slot)?;
            o.merge_heads(x16, back16, b, t, h, d, 3, slot)?;
        }
        o.add_bias(xb, &i[1], rows, c)
    });
    close("permutes and bias", &r, 0.0);
}

/// Initialisation draws the same bits on the GPU as on the interpreter
/// (integer Philox, one rounding to f32: `init_normal.rs` holds the
/// interpreter to an independent Philox).
#[test]
fn gpu_init_normal() {
    let Some(ops) = pair("gpu_init_normal") else {
        return;
    };
    let mut rng = rng("gpu_init_normal");
    let n = pick(3_000_017, 10_007);
    let (seed, stream) = (rng.random::<u64>(), rng.random::<u32>());
    let r = run(&ops, &[], &[nan_f32(n)], |o, _, out| {
        o.init_normal(&mut out[0], n, 0.02, seed, stream)
    });
    close("init_normal", &r, 0.0);
}

/// Issue 31: a tensor past 2³¹ elements (n = 2³¹ + 2125, 8.6 GB of f32).
/// On the GPU, x drawn by `init_normal`, y = GELU(x) into a NaN-filled
/// buffer, then blocks of x and y at a stride through the tensor, one across
/// 2³¹ and the last one gathered by `copy` into small buffers. On the
/// interpreter, each block of x drawn alone at its own indices
/// (`init_normal_part`, bit for bit) and GELU of it (within GELU's bounds).
/// A 32-bit offset anywhere (the kernels' element index, the copy's source)
/// would wrap past 2³¹: wrong draws, NaN left in y, or a fault.
#[test]
fn gpu_past_2_31_elements() {
    let Some([gpu, cpu]) = pair("gpu_past_2_31_elements") else {
        return;
    };
    let mut rng = rng("gpu_past_2_31_elements");
    let n = pick((1usize << 31) + 2125, 100_003);
    let block = 4096;
    let (seed, stream) = (rng.random::<u64>(), rng.random::<u32>());
    let mut starts: Vec<usize> = (0..15).map(|k| k * (n / 15)).collect();
    starts.push(((1usize << 31) - block / 2).min(n - block));
    starts.push(n - block);
    let m = starts.len() * block;
    let d = gpu.device();
    let (xs, ys) = {
        let mut x = d.alloc(Scalar::F32, n).unwrap();
        let mut y = d.alloc(Scalar::F32, n).unwrap();
        gpu.init_normal(&mut x, n, 1.0, seed, stream).unwrap();
        gpu.fill(&mut y, f32::NAN, n).unwrap();
        gpu.gelu_fwd(&x, &mut y, n).unwrap();
        let mut xs = d.upload(&vec![f32::NAN; m]).unwrap();
        let mut ys = d.upload(&vec![f32::NAN; m]).unwrap();
        for (k, &s) in starts.iter().enumerate() {
            gpu.copy(&x, s, &mut xs, k * block, block).unwrap();
            gpu.copy(&y, s, &mut ys, k * block, block).unwrap();
        }
        d.synchronize().unwrap();
        (download(d, &xs), download(d, &ys))
    };
    let c = cpu.device();
    for (k, &s) in starts.iter().enumerate() {
        let mut x = c.upload(&vec![f32::NAN; block]).unwrap();
        let mut y = c.upload(&vec![f32::NAN; block]).unwrap();
        cpu.init_normal_part(&mut x, block, s as u64, 1.0, seed, stream)
            .unwrap();
        cpu.gelu_fwd(&x, &mut y, block).unwrap();
        let (xc, yc) = (download(c, &x), download(c, &y));
        for i in 0..block {
            let (xg, yg) = (xs[k * block + i], ys[k * block + i]);
            assert!(
                xg.to_bits() == xc[i].to_bits(),
                "x[{}]: gpu {xg}, interpreter {}",
                s + i,
                xc[i]
            );
            let bound = gelu_bounds(xc[i], 0.0).0;
            assert!(
                (yg - yc[i]).abs() <= bound,
                "gelu(x)[{}]: gpu {yg}, interpreter {} (bound {bound:.3e})",
                s + i,
                yc[i]
            );
        }
    }
    eprintln!(
        "n = {n}: {} blocks of {block} at a stride to element {} match",
        starts.len(),
        n - 1
    );
}

#[test]
fn gpu_streams() {
    let Some(ops) = pair("gpu_streams") else {
        return;
    };
    let mut rng = rng("gpu_streams");
    for (t, n, c) in pick(
        [(1024, 4, 768), (77, 2, 1100), (5, 8, 31)],
        [(64, 4, 96), (7, 2, 1100), (5, 8, 31)],
    ) {
        let bf = |v: Vec<f32>| Host::Bf16(v.into_iter().map(bf16::from_f32).collect());
        let ins = [
            Host::F32(randv(&mut rng, t * c, 2.0)),
            bf(randv(&mut rng, t * n * c, 2.0)),
        ];
        let outs = [
            nan_bf16(t * n * c),
            nan_f32(t * c),
            Host::F32(randv(&mut rng, t * c, 1.0)),
            bf(randv(&mut rng, t * n * c, 1.0)),
        ];
        let r = run(&ops, &ins, &outs, |o, i, out| {
            let [xs, x, dx, dxs] = out else {
                unreachable!()
            };
            o.streams_expand(&i[0], xs, t, n, c)?;
            o.streams_collapse(&i[1], x, t, n, c)?;
            o.streams_expand_bwd(&i[1], dx, t, n, c, Out::Add)?;
            o.streams_collapse_bwd(&i[0], dxs, t, n, c, Out::Add)
        });
        // xs, dxs: bf16 results of the same f32 values: one bf16 ulp (2^-7)
        // if a value near a tie rounds the other way (plus, for dxs, an
        // f32 add of terms up to the largest output). x, dx: f32 sums of n
        // (+1) terms of either sign: 2(n + 1) roundings of terms no larger
        // than the largest output, two engines.
        let max = max_abs(&r[1]);
        close_by(
            &format!("streams t={t} n={n} c={c}"),
            &r,
            |k, _, c| match k {
                0 => c.abs() / 128.0,
                3 => c.abs() / 128.0 + 2.0 * U * max[3],
                _ => 4.0 * (n + 1) as f64 * U * max[k],
            },
        );
    }
}

/// Two AdamW steps in f64 from p0 (the kernel's formula, elementwise.tile),
/// the update p2 − p0; `bias_correct_2 = false` drops step 2's bias
/// correction (a deliberately wrong optimizer).
fn adamw_update_f64(p0: f64, g: [f64; 2], hp: &AdamW, s: f64, bias_correct_2: bool) -> f64 {
    let (b1, b2) = (hp.beta1 as f64, hp.beta2 as f64);
    let (lr, eps, wd) = (hp.lr as f64, hp.eps as f64, hp.weight_decay as f64);
    let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
    for (step, g) in [1, 2].into_iter().zip(g) {
        let gs = g * s;
        m = b1 * m + (1.0 - b1) * gs;
        v = b2 * v + (1.0 - b2) * gs * gs;
        let (bc1, bc2) = if step == 2 && !bias_correct_2 {
            (1.0, 1.0)
        } else {
            (
                (1.0 - b1.powi(step)) as f32 as f64,
                (1.0 - b2.powi(step)) as f32 as f64,
            )
        };
        p -= lr * ((m / bc1) / ((v / bc2).sqrt() + eps) + wd * p);
    }
    p - p0
}

/// The AdamW update bound, exercised without a GPU: the interpreter's update
/// is within it of the f64 update, and an optimizer without step 2's bias
/// correction is outside it almost everywhere (with the old check, p within
/// 2e-4·(|p| + rms), it passed wherever the update difference was < ~3e-4).
#[test]
fn adamw_update_bound_holds_on_the_cpu_and_catches_a_missing_bias_correction() {
    let cpu = KernelSet::from_sources(Arc::new(Device::cpu())).unwrap();
    let ops = Ops::new(Arc::new(cpu)).unwrap();
    let d = ops.device();
    let mut rng = rng("adamw_update_bound");
    let hp = AdamW {
        lr: 3e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let n = 3001;
    let (g1, g2, p0) = (
        randv(&mut rng, n, 1.0),
        randv(&mut rng, n, 1.0),
        randv(&mut rng, n, 1.0),
    );
    let mut p = d.upload(&p0).unwrap();
    let (mut m, mut v) = (
        d.upload(&vec![0f32; n]).unwrap(),
        d.upload(&vec![0f32; n]).unwrap(),
    );
    let (b1, b2) = (d.upload(&g1).unwrap(), d.upload(&g2).unwrap());
    let stats = scaled_by_0_7(d);
    ops.adamw(&mut p, &b1, &mut m, &mut v, None, n, &hp, 1, &stats, CLIP)
        .unwrap();
    ops.adamw(&mut p, &b2, &mut m, &mut v, None, n, &hp, 2, &stats, CLIP)
        .unwrap();
    let got: Vec<f64> = download(d, &p)
        .iter()
        .zip(&p0)
        .map(|(p, p0)| p - *p0 as f64)
        .collect();
    let (mut worst, mut caught) = (0.0f64, 0);
    for i in 0..n {
        let g = [g1[i] as f64, g2[i] as f64];
        let bound = adamw_update_bound(p0[i] as f64, hp.lr as f64, hp.weight_decay as f64);
        let want = adamw_update_f64(p0[i] as f64, g, &hp, 0.7, true);
        assert!(
            (got[i] - want).abs() <= bound,
            "[{i}] update {} vs f64 {want} (bound {bound:e})",
            got[i]
        );
        worst = worst.max((got[i] - want).abs() / bound);
        let wrong = adamw_update_f64(p0[i] as f64, g, &hp, 0.7, false);
        if (got[i] - wrong).abs() > bound {
            caught += 1;
        }
    }
    eprintln!("adamw: worst error {worst:.2} of the bound; no step-2 bias correction caught at {caught} of {n}");
    assert!(caught as f64 >= 0.99 * n as f64, "caught {caught} of {n}");
}

/// The optimiser with every parameter gathered into one allocation (one
/// norm reduction, one AdamW launch per group of like parameters: what the
/// trainer runs on a GPU) against one launch per tensor, on tensors of odd
/// sizes with mixed weight decay and learning-rate scales: the gathered
/// values start equal to the originals, the squared norms agree to f32
/// rounding of the two summation orders, and with one stats buffer (so
/// both clip alike) three updates give the same bits in p, m and v.
#[test]
fn gpu_gathered_adamw_matches_one_launch_per_tensor() {
    use mhc_train::train::optim::AdamW as Optimiser;
    use mhc_train::train::params::{Slot, Weight};
    let Some([ops, _]) = pair("gpu_gathered_adamw") else {
        return;
    };
    let d = ops.device();
    let mut rng = rng("gpu_gathered_adamw");
    let shapes: [(usize, bool, f32); 6] = [
        (1000, true, 1.0),
        (77, false, 1.0),
        (4096, true, 1.0),
        (3, false, 0.1),
        (2500, true, 1.0),
        (65, false, 0.1),
    ];
    let values: Vec<Vec<f32>> = shapes.iter().map(|s| randv(&mut rng, s.0, 1.0)).collect();
    let make =
        |d: &Device| -> Vec<Weight> { values.iter().map(|v| Weight::new(d, v).unwrap()).collect() };
    let (mut wa, mut wb) = (make(d), make(d));
    fn slots<'a>(w: &'a mut [Weight], shapes: &[(usize, bool, f32)]) -> Vec<Slot<'a>> {
        w.iter_mut()
            .zip(shapes)
            .enumerate()
            .map(|(i, (w, &(n, decay, lr_scale)))| {
                // The decayed ones as matrices with bf16 copies.
                let mut s = match decay {
                    true => Slot::matrix(format!("w{i}"), &[n], w, true),
                    false => Slot::of(format!("w{i}"), &[n], decay, w),
                };
                s.lr_scale = lr_scale;
                s
            })
            .collect()
    }
    let mut oa =
        Optimiser::new(d, &mut slots(&mut wa, &shapes), true, 0.9, 0.95, 1e-8, 0.1).unwrap();
    let mut ob =
        Optimiser::new(d, &mut slots(&mut wb, &shapes), false, 0.9, 0.95, 1e-8, 0.1).unwrap();
    assert!(oa.is_gathered() && !ob.is_gathered());
    for (w, v) in wa.iter().zip(&values) {
        assert_eq!(&d.download::<f32>(&w.value).unwrap(), v, "gathered value");
    }
    // The matrices' copies made (as a forward does), then kept by the updates.
    for ws in [&mut wa, &mut wb] {
        for (w, s) in ws.iter_mut().zip(&shapes) {
            if s.1 {
                w.round(&ops).unwrap();
            }
        }
    }
    for t in 1..=3u64 {
        let grads: Vec<Vec<f32>> = shapes.iter().map(|s| randv(&mut rng, s.0, 2.0)).collect();
        for w in [&mut wa, &mut wb] {
            for (w, g) in w.iter_mut().zip(&grads) {
                d.write(&mut w.grad, &f32::to_bytes(g)).unwrap();
            }
        }
        let mut sa = d.upload(&[1.0f32, f32::NAN]).unwrap();
        let mut sb = d.upload(&[1.0f32, f32::NAN]).unwrap();
        oa.grad_sum_squares(&ops, &slots(&mut wa, &shapes), &mut sa)
            .unwrap();
        ob.grad_sum_squares(&ops, &slots(&mut wb, &shapes), &mut sb)
            .unwrap();
        let (na, nb) = (
            d.download::<f32>(&sa).unwrap()[1],
            d.download::<f32>(&sb).unwrap()[1],
        );
        let want: f64 = grads.iter().flatten().map(|&g| g as f64 * g as f64).sum();
        // Two f32 summation orders over 7741 terms: relative 1e-5 is ~80 ulps.
        for (what, got) in [("gathered", na), ("per tensor", nb)] {
            assert!(
                ((got as f64 - want) / want).abs() < 1e-5,
                "step {t}: {what} squared norm {got} against {want}"
            );
        }
        // Clip to half the norm: the scale is exercised too.
        let clip = 0.5 * na.sqrt();
        oa.update(&ops, &mut slots(&mut wa, &shapes), 1e-2, &sa, clip, t)
            .unwrap();
        ob.update(&ops, &mut slots(&mut wb, &shapes), 1e-2, &sa, clip, t)
            .unwrap();
        for (i, (a, b)) in wa.iter().zip(&wb).enumerate() {
            let bits = |x: &Buffer| -> Vec<u32> {
                d.download::<f32>(x)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(bits(&a.value), bits(&b.value), "step {t}: parameter {i}");
            if shapes[i].1 {
                let rounded: Vec<u16> = d
                    .download::<f32>(&a.value)
                    .unwrap()
                    .iter()
                    .map(|&v| half::bf16::from_f32(v).to_bits())
                    .collect();
                for (what, w) in [("gathered", a), ("per tensor", b)] {
                    let copy = d.download::<half::bf16>(w.rounded().unwrap()).unwrap();
                    let copy: Vec<u16> = copy.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(copy, rounded, "step {t}: {what} bf16 copy of parameter {i}");
                }
            }
        }
        for (i, ((ma, va), (mb, vb))) in oa.moments.iter().zip(&ob.moments).enumerate() {
            let same = |x: &Buffer, y: &Buffer| {
                d.download::<f32>(x).unwrap() == d.download::<f32>(y).unwrap()
            };
            assert!(
                same(ma, mb) && same(va, vb),
                "step {t}: moments of parameter {i}"
            );
        }
    }
}
