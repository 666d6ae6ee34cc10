//! GPU tier: the stress kernels of `tests/kernels/*.tile` on the GPU
//! against straightforward CPU references, at ragged sizes, outputs NaN-poisoned.
#![cfg(feature = "gpu")]

use half::bf16;
use integration_tests::*;
use rand::{Rng, SeedableRng};
use tile_runtime::{describe, Arg};

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
