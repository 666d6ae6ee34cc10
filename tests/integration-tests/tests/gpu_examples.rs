//! One kernel, two engines: every dsl-example kernel, every packed config, runs
//! on the GPU and on the CPU interpreter (the semantic reference) on the same
//! fresh random inputs, at several shapes including ragged ones; outputs are
//! NaN-poisoned before each run and compared element by element.
#![cfg(feature = "gpu")]

use half::bf16;
use rand::{Rng, SeedableRng};
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

/// The cases to run for `kernel` at `config`.
fn cases(kernel: &str, c: &Config, rng: &mut impl Rng) -> Vec<Case> {
    use Scalar::*;
    let mut out = Vec::new();
    let case = |label: String, grid: [u32; 3], args: Vec<HostArg>| Case { label, grid, args };
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
                out.push(case(format!("{rows}x{n}"), [rows as u32, 1, 1], args));
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

#[test]
fn gpu_every_example_matches_the_interpreter() {
    let Some(gpu) = gpu_or_skip("gpu_every_example_matches_the_interpreter") else {
        return;
    };
    let cpu = Device::cpu();
    let pack = examples_pack();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut summary = Vec::new();
    for kp in &pack.manifest().kernels {
        let variants: Vec<_> = if small() {
            kp.variants.iter().take(1).collect()
        } else {
            kp.variants.iter().collect()
        };
        for v in variants {
            let kg = pack.load_kernel(&gpu, &kp.name, &v.config).unwrap();
            let kc = pack.load_kernel(&cpu, &kp.name, &v.config).unwrap();
            for case in cases(&kp.name, &v.config, &mut rng) {
                let got = run_case(&gpu, &kg, &case);
                let want = run_case(&cpu, &kc, &case);
                let dtypes: Vec<Scalar> = case
                    .args
                    .iter()
                    .filter_map(|a| {
                        if let HostArg::Buf {
                            dtype,
                            output: true,
                            ..
                        } = a
                        {
                            Some(*dtype)
                        } else {
                            None
                        }
                    })
                    .collect();
                for (i, ((g, w), dt)) in got.iter().zip(&want).zip(&dtypes).enumerate() {
                    // bf16 outputs: the engines may round a value on either side
                    // of a bf16 tie after f32 work in another order: 2 ulps (2^-7).
                    // f32 outputs: reduction order and approximate exp/rsqrt, ~1e-5;
                    // atomically accumulated sums over rows: 1e-4.
                    let (rtol, atol) = if *dt == Scalar::BF16 {
                        (1.0 / 128.0, 1e-3)
                    } else {
                        (1e-4, 1e-4)
                    };
                    let bad = mismatches(g, w, rtol, atol);
                    assert!(
                        bad.is_empty(),
                        "{} [{}] {} output #{i}: {} of {} differ, first at {}: gpu {} vs interpreter {}",
                        kp.name,
                        describe(&v.config),
                        case.label,
                        bad.len(),
                        g.len(),
                        bad[0],
                        g[bad[0]],
                        w[bad[0]]
                    );
                }
                summary.push(format!(
                    "ok {} [{}] {}",
                    kp.name,
                    describe(&v.config),
                    case.label
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
