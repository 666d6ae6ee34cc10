//! GPU tier: the stress kernels of `tests/kernels/*.tile` on the GPU
//! against straightforward CPU references, at ragged sizes, outputs NaN-poisoned.
#![cfg(feature = "gpu")]

use half::bf16;
use rand::{Rng, SeedableRng};
use tile_runtime::{describe, Arg};
use tile_testkit::*;

fn small() -> bool {
    std::env::var_os("TILE_SANITIZER_RUN").is_some()
}

#[test]
fn gpu_row_and_column_sums() {
    let Some(dev) = gpu_or_skip("gpu_row_and_column_sums") else {
        return;
    };
    let pack = pack_named("codegen-tests.tpack");
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for v in &pack.kernel("row_col_sum").unwrap().variants {
        let get = |n: &str| v.config.meta.iter().find(|(m, _)| m == n).unwrap().1 as usize;
        let (rows, bc) = (get("ROWS"), get("BC"));
        let k = pack.load_kernel(&dev, "row_col_sum", &v.config).unwrap();
        for (nr, nc) in [
            (1, 1),
            (rows * 3 + 1, bc),
            (if small() { 7 } else { 1000 }, bc - 3),
        ] {
            let x: Vec<f32> = (0..nr * nc)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let bx = dev.upload(&x).unwrap();
            let bo = dev.upload(&vec![f32::NAN; nr]).unwrap();
            let bcol = dev.upload(&vec![0.0f32; nc]).unwrap();
            let grid = [nr.div_ceil(rows) as u32, 1, 1];
            dev.launch(
                &k,
                grid,
                &[
                    Arg::Buffer(&bx),
                    Arg::Buffer(&bo),
                    Arg::Buffer(&bcol),
                    Arg::I32(nr as i32),
                    Arg::I32(nc as i32),
                ],
            )
            .unwrap();
            let got = dev.download::<f32>(&bo).unwrap();
            let want: Vec<f32> = (0..nr)
                .map(|r| x[r * nc..(r + 1) * nc].iter().sum())
                .collect();
            // f32 sums of ≤ 1024 terms of magnitude ≤ 1 in another order: a few ulps of √n·ε.
            let bad = mismatches(&got, &want, 1e-5, 1e-4);
            assert!(
                bad.is_empty(),
                "row sums [{}] {nr}x{nc}: {} bad, first {}: {} vs {}",
                describe(&v.config),
                bad.len(),
                bad[0],
                got[bad[0]],
                want[bad[0]]
            );
            let got = dev.download::<f32>(&bcol).unwrap();
            let want: Vec<f32> = (0..nc)
                .map(|c| (0..nr).map(|r| x[r * nc + c]).sum())
                .collect();
            let bad = mismatches(&got, &want, 1e-4, 1e-3);
            assert!(
                bad.is_empty(),
                "col sums [{}] {nr}x{nc}: {} bad, first {}: {} vs {}",
                describe(&v.config),
                bad.len(),
                bad[0],
                got[bad[0]],
                want[bad[0]]
            );
            eprintln!("ok row_col_sum [{}] {nr}x{nc}", describe(&v.config));
        }
    }
}

#[test]
fn gpu_softmax_rows() {
    let Some(dev) = gpu_or_skip("gpu_softmax_rows") else {
        return;
    };
    let pack = pack_named("codegen-tests.tpack");
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for v in &pack.kernel("softmax").unwrap().variants {
        let block = v.config.meta[0].1 as usize;
        let k = pack.load_kernel(&dev, "softmax", &v.config).unwrap();
        for (rows, n) in [
            (1, 1),
            (3, block),
            (if small() { 5 } else { 257 }, block - 5),
        ] {
            let x: Vec<bf16> = (0..rows * n)
                .map(|_| bf16::from_f32(rng.random_range(-8.0f32..8.0)))
                .collect();
            let bx = dev.upload(&x).unwrap();
            let by = dev.upload(&vec![bf16::NAN; rows * n]).unwrap();
            dev.launch(
                &k,
                [rows as u32, 1, 1],
                &[Arg::Buffer(&bx), Arg::Buffer(&by), Arg::I32(n as i32)],
            )
            .unwrap();
            let got: Vec<f32> = dev
                .download::<bf16>(&by)
                .unwrap()
                .iter()
                .map(|v| v.to_f32())
                .collect();
            let mut want = Vec::new();
            for r in 0..rows {
                let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|v| v.to_f64()).collect();
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
                want.extend(row.iter().map(|v| ((v - m).exp() / s) as f32));
            }
            // bf16 output: half an ulp is 2^-9 relative; ex2.approx adds ~1e-6.
            let bad = mismatches(&got, &want, 4e-3, 1e-6);
            assert!(
                bad.is_empty(),
                "softmax [{}] {rows}x{n}: {} bad, first {}: {} vs {}",
                describe(&v.config),
                bad.len(),
                bad[0],
                got[bad[0]],
                want[bad[0]]
            );
            eprintln!("ok softmax [{}] {rows}x{n}", describe(&v.config));
        }
    }
}

/// A streaming loop pipelined through shared memory (`stages` on a loop
/// without a dot, `tests/kernels/stream_mix.tile`) against an f32 reference
/// at ragged widths (a partial last step, a single column), outputs
/// NaN-poisoned; and a launch whose output overlaps a streamed input is
/// refused (a copy issued ahead would read what the loop had not written).
#[test]
fn gpu_streaming_loop_through_the_pipeline() {
    let Some(dev) = gpu_or_skip("gpu_streaming_loop_through_the_pipeline") else {
        return;
    };
    let pack = pack_named("codegen-tests.tpack");
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let kernel = pack.kernel("stream_mix").unwrap();
    assert!(kernel.variants.iter().all(|v| v.config.stages.is_some()));
    for v in &kernel.variants {
        let get = |n: &str| v.config.meta.iter().find(|(m, _)| m == n).unwrap().1 as usize;
        let (m, bc) = (get("M"), get("BC"));
        let k = pack.load_kernel(&dev, "stream_mix", &v.config).unwrap();
        for (rows, n) in [
            (1, 1),
            (3, 2 * bc + 5),
            (if small() { 5 } else { 300 }, 7 * bc - 3),
        ] {
            let len = rows * m * n;
            let gen = |rng: &mut rand::rngs::StdRng| -> Vec<bf16> {
                (0..len)
                    .map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)))
                    .collect()
            };
            let (a, b) = (gen(&mut rng), gen(&mut rng));
            let w: Vec<f32> = (0..m).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            let (ba, bb, bw) = (
                dev.upload(&a).unwrap(),
                dev.upload(&b).unwrap(),
                dev.upload(&w).unwrap(),
            );
            let bo = dev.upload(&vec![bf16::NAN; len]).unwrap();
            let bs = dev.upload(&vec![f32::NAN; rows * m]).unwrap();
            let args = |out| {
                [
                    Arg::Buffer(&ba),
                    Arg::Buffer(&bb),
                    Arg::Buffer(&bw),
                    Arg::Buffer(out),
                    Arg::Buffer(&bs),
                    Arg::I32(n as i32),
                ]
            };
            dev.launch(&k, [rows as u32, 1, 1], &args(&bo)).unwrap();
            // out: a·w + b in f32 (two roundings, as the kernel), then bf16:
            // the same bits but for a tie rounded apart; allow half a bf16 ulp.
            let want: Vec<f32> = (0..len)
                .map(|j| {
                    let i = (j / n) % m;
                    bf16::from_f32(a[j].to_f32() * w[i] + b[j].to_f32()).to_f32()
                })
                .collect();
            let got: Vec<f32> = dev
                .download::<bf16>(&bo)
                .unwrap()
                .iter()
                .map(|x| x.to_f32())
                .collect();
            let bad = mismatches(&got, &want, 4e-3, 0.0);
            assert!(
                bad.is_empty(),
                "stream_mix out [{}] {rows}x{m}x{n}: {} bad, first {}: {} vs {}",
                describe(&v.config),
                bad.len(),
                bad[0],
                got[bad[0]],
                want[bad[0]]
            );
            // s: f32 sums of n ≤ 1,800 products of magnitude ≤ 1 in another
            // order: a few n·ε of the largest partial sum.
            let want: Vec<f32> = (0..rows * m)
                .map(|ri| {
                    let row = &a[ri * n..(ri + 1) * n];
                    let col = &b[ri * n..(ri + 1) * n];
                    row.iter()
                        .zip(col)
                        .map(|(x, y)| x.to_f64() * y.to_f64())
                        .sum::<f64>() as f32
                })
                .collect();
            let got = dev.download::<f32>(&bs).unwrap();
            let bad = mismatches(&got, &want, 1e-4, 1e-3);
            assert!(
                bad.is_empty(),
                "stream_mix s [{}] {rows}x{m}x{n}: {} bad, first {}: {} vs {}",
                describe(&v.config),
                bad.len(),
                bad[0],
                got[bad[0]],
                want[bad[0]]
            );
            eprintln!("ok stream_mix [{}] {rows}x{m}x{n}", describe(&v.config));
        }
        // The output in place of a streamed input: refused, the input unchanged.
        let a: Vec<bf16> = (0..m * bc).map(|j| bf16::from_f32(j as f32)).collect();
        let (ba, bb) = (dev.upload(&a).unwrap(), dev.upload(&a).unwrap());
        let bw = dev.upload(&vec![1.0f32; m]).unwrap();
        let bs = dev.upload(&vec![0.0f32; m]).unwrap();
        let err = dev.launch(
            &k,
            [1, 1, 1],
            &[
                Arg::Buffer(&ba),
                Arg::Buffer(&bb),
                Arg::Buffer(&bw),
                Arg::Buffer(&ba),
                Arg::Buffer(&bs),
                Arg::I32(bc as i32),
            ],
        );
        assert!(
            err.is_err(),
            "[{}]: an output overlapping a streamed input was launched",
            describe(&v.config)
        );
        assert_eq!(dev.download::<bf16>(&ba).unwrap(), a);
    }
}

#[test]
fn gpu_matmul_bf16() {
    let Some(dev) = gpu_or_skip("gpu_matmul_bf16") else {
        return;
    };
    let pack = pack_named("codegen-tests.tpack");
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for v in &pack.kernel("matmul").unwrap().variants {
        let get = |n: &str| v.config.meta.iter().find(|(m, _)| m == n).unwrap().1 as usize;
        let (bm, bn) = (get("BM"), get("BN"));
        let k_ = pack.load_kernel(&dev, "matmul", &v.config).unwrap();
        let shapes: &[(usize, usize, usize)] = if small() {
            &[(33, 17, 40)]
        } else {
            &[
                (16, 16, 16),
                (100, 70, 50),
                (256, 256, 256),
                (129, 257, 95),
                // Many K steps, the last one ragged: every pipeline stage is reused.
                (130, 200, 1000),
            ]
        };
        for &(m, n, k) in shapes {
            let a: Vec<bf16> = (0..m * k)
                .map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)))
                .collect();
            let b: Vec<bf16> = (0..k * n)
                .map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)))
                .collect();
            let (ba, bb) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
            let bc = dev.upload(&vec![f32::NAN; m * n]).unwrap();
            let grid = [m.div_ceil(bm) as u32, n.div_ceil(bn) as u32, 1];
            dev.launch(
                &k_,
                grid,
                &[
                    Arg::Buffer(&ba),
                    Arg::Buffer(&bb),
                    Arg::Buffer(&bc),
                    Arg::I32(m as i32),
                    Arg::I32(n as i32),
                    Arg::I32(k as i32),
                ],
            )
            .unwrap();
            let got = dev.download::<f32>(&bc).unwrap();
            let mut want = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] = (0..k)
                        .map(|p| a[i * k + p].to_f64() * b[p * n + j].to_f64())
                        .sum::<f64>() as f32;
                }
            }
            // Exact bf16 products summed in f32: error ≲ k·ε_f32·Σ|ab|.
            let bad = mismatches(&got, &want, 1e-4, 1e-4 * (k as f32).sqrt());
            assert!(
                bad.is_empty(),
                "matmul [{}] {m}x{n}x{k}: {} bad, first {}: {} vs {}",
                describe(&v.config),
                bad.len(),
                bad[0],
                got[bad[0]],
                want[bad[0]]
            );
            eprintln!("ok matmul [{}] {m}x{n}x{k}", describe(&v.config));
        }
    }
}

/// The transcendental lowering against f64 on 2^20 inputs per function (half
/// a dense sweep of its domain, half random), NaN-poisoned output. Prints the
/// maximum relative and absolute errors (the table in docs/ARCHITECTURE.md,
/// "Math") and asserts the PTX ISA's accuracy of each instruction used, with
/// the rounding of the f32 steps around it.
#[test]
fn gpu_math_function_errors() {
    let Some(dev) = gpu_or_skip("gpu_math_function_errors") else {
        return;
    };
    let pack = pack_named("codegen-tests.tpack");
    let v = &pack.kernel("math_funcs").unwrap().variants[0];
    let k = pack.load_kernel(&dev, "math_funcs", &v.config).unwrap();
    let n: usize = if small() { 4096 } else { 1 << 20 };
    let mut rng = rand::rngs::StdRng::from_os_rng();
    // Domains avoid subnormal inputs and results (the approximations flush them).
    fn log_uniform(t: f64) -> f64 {
        10f64.powf(-30.0 + 60.0 * t)
    }
    type Domain = (&'static str, fn(f64) -> f64, fn(f64) -> f64);
    let funcs: [Domain; 7] = [
        ("exp", f64::exp, |t| -87.0 + 175.0 * t),
        ("exp2", f64::exp2, |t| -125.0 + 252.0 * t),
        ("log", f64::ln, log_uniform),
        ("sqrt", f64::sqrt, log_uniform),
        ("rsqrt", |x| 1.0 / x.sqrt(), log_uniform),
        (
            "sigmoid",
            |x| 1.0 / (1.0 + (-x).exp()),
            |t| -30.0 + 60.0 * t,
        ),
        ("tanh", f64::tanh, |t| -10.0 + 20.0 * t),
    ];
    let mut x = Vec::with_capacity(7 * n);
    for (_, _, domain) in &funcs {
        for i in 0..n {
            let t = if i % 2 == 0 {
                i as f64 / n as f64
            } else {
                rng.random::<f64>()
            };
            x.push(domain(t) as f32);
        }
    }
    let bx = dev.upload(&x).unwrap();
    let by = dev.upload(&vec![f32::NAN; 7 * n]).unwrap();
    dev.launch(
        &k,
        [n.div_ceil(1024) as u32, 1, 1],
        &[Arg::Buffer(&bx), Arg::Buffer(&by), Arg::I32(n as i32)],
    )
    .unwrap();
    let y = dev.download::<f32>(&by).unwrap();
    println!("| function | domain | max relative error | max absolute error |");
    println!("|---|---|---|---|");
    let mut failures = Vec::new();
    for (f, (name, exact, domain)) in funcs.iter().enumerate() {
        let (mut max_rel, mut max_abs) = (0f64, 0f64);
        for i in 0..n {
            let xi = x[f * n + i] as f64;
            let want = exact(xi);
            let got = y[f * n + i] as f64;
            let abs = (got - want).abs();
            let rel = abs / want.abs().max(f64::MIN_POSITIVE);
            max_rel = max_rel.max(rel);
            max_abs = max_abs.max(abs);
            // PTX ISA: ex2.approx 2^-22 relative (exp adds the rounding of
            // x·log2(e), |x|·2^-24 relative); lg2.approx 2^-22 absolute in
            // log2 (times ln 2; rounding lg2's result and the product adds up
            // to 2 ulp of the result); rsqrt.approx
            // 2^-22 relative; sqrt.rn correctly rounded; tanh.approx 2^-11
            // relative (2^-10.987); sigmoid = 1/(1 + exp(-x)) adds exp's error,
            // at most ~2^-21 absolute where it matters.
            let ulp = f32::EPSILON as f64;
            let ok = match *name {
                "exp" => rel <= 2f64.powi(-22) * 2.0 + xi.abs() * ulp,
                "exp2" => rel <= 2f64.powi(-21),
                "log" => abs <= 2f64.powi(-22) + 2.0 * want.abs() * ulp,
                "sqrt" => rel <= ulp / 2.0 * 1.01,
                "rsqrt" => rel <= 2f64.powi(-21),
                "sigmoid" => abs <= 2f64.powi(-20) && rel <= 2f64.powi(-21) + 40.0 * ulp,
                "tanh" => rel <= 2f64.powi(-10) || abs <= 2f64.powi(-22),
                _ => unreachable!(),
            };
            if !ok && failures.len() < 10 {
                failures.push(format!(
                    "{name}({xi:e}) = {got:e}, want {want:e} (rel {rel:.2e}, abs {abs:.2e})"
                ));
            }
        }
        let (lo, hi) = (domain(0.0), domain(1.0));
        println!("| {name} | [{lo:.3e}, {hi:.3e}] | {max_rel:.2e} | {max_abs:.2e} |");
    }
    assert!(
        failures.is_empty(),
        "outside the documented accuracy:\n{}",
        failures.join("\n")
    );
}

/// Reshapes that change the layout: column pairs of a loaded tile and of a
/// tensor-core accumulator summed after `reshape([BM, BC, 2])` (a reshape once
/// read the source at the destination's coordinates, doubling one element of
/// each pair instead of adding both).
#[test]
fn gpu_reshape_through_shared_memory() {
    let Some(dev) = gpu_or_skip("gpu_reshape_through_shared_memory") else {
        return;
    };
    let pack = pack_named("codegen-tests.tpack");
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for v in &pack.kernel("reshape_pairs").unwrap().variants {
        let get = |n: &str| v.config.meta.iter().find(|(m, _)| m == n).unwrap().1 as usize;
        let (bm, bc) = (get("BM"), get("BC"));
        let k = pack.load_kernel(&dev, "reshape_pairs", &v.config).unwrap();
        let x: Vec<f32> = (0..bm * 2 * bc)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let a: Vec<bf16> = (0..bm * 32)
            .map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)))
            .collect();
        let b: Vec<bf16> = (0..32 * 2 * bc)
            .map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)))
            .collect();
        let (bx, ba, bb) = (
            dev.upload(&x).unwrap(),
            dev.upload(&a).unwrap(),
            dev.upload(&b).unwrap(),
        );
        let by = dev.upload(&vec![f32::NAN; bm * bc]).unwrap();
        let bz = dev.upload(&vec![f32::NAN; bm * bc]).unwrap();
        dev.launch(
            &k,
            [1, 1, 1],
            &[
                Arg::Buffer(&bx),
                Arg::Buffer(&ba),
                Arg::Buffer(&bb),
                Arg::Buffer(&by),
                Arg::Buffer(&bz),
            ],
        )
        .unwrap();
        let (y, z) = (
            dev.download::<f32>(&by).unwrap(),
            dev.download::<f32>(&bz).unwrap(),
        );
        let prod = |r: usize, col: usize| -> f64 {
            (0..32)
                .map(|p| a[r * 32 + p].to_f64() * b[p * 2 * bc + col].to_f64())
                .sum()
        };
        let mut want_y = Vec::new();
        let mut want_z = Vec::new();
        for r in 0..bm {
            for c in 0..bc {
                want_y.push(x[r * 2 * bc + 2 * c] + x[r * 2 * bc + 2 * c + 1]);
                want_z.push((prod(r, 2 * c) + prod(r, 2 * c + 1)) as f32);
            }
        }
        // y: one f32 addition, exactly as here. z: exact bf16 products summed
        // in f32 (64 terms of magnitude ≤ 1): a few ulps of √64·ε.
        for (name, got, want, tol) in [("y", &y, &want_y, 0.0f32), ("z", &z, &want_z, 1e-5)] {
            let bad = mismatches(got, want, tol, tol);
            assert!(
                bad.is_empty(),
                "reshape_pairs [{}] {name}: {} bad, first {}: {} vs {}",
                describe(&v.config),
                bad.len(),
                bad[0],
                got[bad[0]],
                want[bad[0]]
            );
        }
        eprintln!("ok reshape_pairs [{}]", describe(&v.config));
    }
}

/// A kernel's hidden TMA parameters (a tensor map by value per operand, then
/// the mask of those encoded) are checked against the driver's view of the
/// loaded function: a load that claims other TMA operands than the PTX has
/// (as a pack of another compiler would) is refused with a clear error, not
/// launched with garbage for maps. sm_80 code has no TMA and so no hidden
/// parameters at all.
#[test]
fn gpu_tma_hidden_parameters_are_checked_at_load() {
    let Some(dev) = gpu_or_skip("gpu_tma_hidden_parameters_are_checked_at_load") else {
        return;
    };
    let pack = pack_named("dsl-examples.tpack");
    let target = pack.ptx_target(&dev).unwrap().expect("a GPU target");
    let matmul = pack
        .manifest()
        .kernel("matmul")
        .expect("matmul in dsl-examples");
    if !target.starts_with("sm_90") {
        for v in &matmul.variants {
            assert!(
                v.tma.get("sm_80").is_none_or(|t| t.is_empty()),
                "sm_80 code with TMA operands"
            );
        }
        eprintln!("ok: {target} code has no hidden parameters");
        return;
    }
    let v = matmul
        .variants
        .iter()
        .find(|v| v.tma.get("sm_90").is_some_and(|t| t.len() >= 2))
        .expect("a matmul variant with TMA operands on sm_90");
    let (ptx, tma) = (&v.ptx["sm_90"], &v.tma["sm_90"]);
    let shared = v.shared_bytes["sm_90"];
    let load = |tma: Vec<tile_ir::launch::TmaOperand>| {
        dev.load_ptx(ptx, v.tir.signature(), v.config.warps, shared, tma)
    };
    load(tma.clone()).expect("the kernel as compiled loads");
    let fewer = tma[..tma.len() - 1].to_vec();
    let mut more = tma.clone();
    more.push(tma[0].clone());
    for (what, claimed) in [("one operand fewer", fewer), ("one operand more", more)] {
        match load(claimed) {
            Ok(_) => panic!("{what}: loaded, would launch with the wrong hidden parameters"),
            Err(e) => assert!(
                e.to_string().contains("hidden TMA parameters"),
                "{what}: {e}"
            ),
        }
    }
}

/// A program that stores a tile and reads it back transposed (each thread
/// loading what others stored), once and in a loop whose next iteration
/// stores over what this one read: without the barriers
/// `lower/global_order.rs` puts between them, a thread may read the old
/// contents. Every block gets fresh values and tmp starts NaN, so a read
/// that comes too early shows.
#[test]
fn gpu_scratch_transpose() {
    let Some(dev) = gpu_or_skip("gpu_scratch_transpose") else {
        return;
    };
    let pack = pack_named("codegen-tests.tpack");
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let blocks = if small() { 3 } else { 264 };
    for name in ["scratch_transpose", "scratch_transpose_loop"] {
        for v in &pack.kernel(name).unwrap().variants {
            let b = v.config.meta[0].1 as usize;
            let k = pack.load_kernel(&dev, name, &v.config).unwrap();
            let n = if name == "scratch_transpose" { 1 } else { 5 };
            let x: Vec<f32> = (0..blocks * n * b * b)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let bx = dev.upload(&x).unwrap();
            let btmp = dev.upload(&vec![f32::NAN; blocks * b * b]).unwrap();
            let by = dev.upload(&vec![f32::NAN; blocks * b * b]).unwrap();
            let mut args = vec![Arg::Buffer(&bx), Arg::Buffer(&btmp), Arg::Buffer(&by)];
            if name == "scratch_transpose_loop" {
                args.push(Arg::I32(n as i32));
            }
            dev.launch(&k, [blocks as u32, 1, 1], &args).unwrap();
            let got = dev.download::<f32>(&by).unwrap();
            let mut want = vec![0.0f32; blocks * b * b];
            for p in 0..blocks {
                let mut acc = vec![0.0f32; b * b];
                for step in 0..n {
                    let xk = &x[(p * n + step) * b * b..][..b * b];
                    let t: Vec<f32> = if name == "scratch_transpose" {
                        xk.iter().map(|v| v * 2.0 + 1.0).collect()
                    } else {
                        xk.iter().zip(&acc).map(|(a, c)| a + c).collect()
                    };
                    for r in 0..b {
                        for c in 0..b {
                            acc[r * b + c] = t[c * b + r];
                        }
                    }
                }
                want[p * b * b..][..b * b].copy_from_slice(&acc);
            }
            // The same f32 operations in the same order: exact.
            let bad = mismatches(&got, &want, 0.0, 0.0);
            assert!(
                bad.is_empty(),
                "{name} [{}]: {} of {} wrong, first y[{}] = {} where {} (a read before another thread's store?)",
                describe(&v.config),
                bad.len(),
                got.len(),
                bad[0],
                got[bad[0]],
                want[bad[0]]
            );
            eprintln!("ok {name} [{}] {blocks} blocks", describe(&v.config));
        }
    }
}
