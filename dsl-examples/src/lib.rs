//! The example kernels under `dsl-examples/*.tile`, and launch recipes for the
//! ones the GPU tools (`tile-tune`) know how to size: inputs, grid per config,
//! and the ideal bytes and FLOPs of one launch.

use std::path::PathBuf;
use tile_runtime::{Arg, Buffer, Config, Device, RuntimeError, Scalar};

/// Directory holding the example `.tile` files.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A launch argument of a problem: an index into its buffers or a scalar.
pub enum ProblemArg {
    Buf(usize),
    I32(i32),
    F32(f32),
}

/// One problem instance of a kernel, ready to launch with any config.
pub struct Problem {
    pub kernel: &'static str,
    pub label: String,
    pub buffers: Vec<Buffer>,
    pub args: Vec<ProblemArg>,
    /// Grid for a config (from its meta-parameters).
    pub grid: fn(&Config, &[i64]) -> [u32; 3],
    /// Sizes the grid function reads.
    pub dims: Vec<i64>,
    /// Ideal bytes moved (each input read once, each output written once).
    pub bytes: f64,
    pub flops: f64,
    /// Runtime scalars that key the autotuning cache.
    pub key: Vec<(String, i64)>,
    /// Buffers the kernel writes.
    pub outputs: Vec<usize>,
    /// Host copies of the buffers as f32, made by the first check.
    pub host: Vec<Vec<f32>>,
}

pub fn meta(c: &Config, name: &str) -> i64 {
    c.meta
        .iter()
        .find(|(m, _)| m == name)
        .map(|x| x.1)
        .unwrap_or(1)
}

fn cdiv(a: i64, b: i64) -> u32 {
    ((a + b - 1) / b) as u32
}

impl Problem {
    /// Run `gpu_kernel` once with poisoned outputs and compare a sample of the
    /// output with a straightforward f64 reference of the *problem* (not of the
    /// config), so configs that are wrong for this problem (e.g. a BLOCK smaller
    /// than the row) are rejected before they are timed.
    pub fn check(
        &mut self,
        device: &Device,
        gpu_kernel: &tile_runtime::Kernel,
        config: &Config,
    ) -> Result<(), String> {
        let e = |e: RuntimeError| e.to_string();
        let to_f32 = |dt: Scalar, bytes: Vec<u8>| -> Vec<f32> {
            match dt {
                Scalar::BF16 => bytes
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                _ => bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            }
        };
        if self.host.is_empty() {
            for b in &self.buffers {
                self.host
                    .push(to_f32(b.dtype(), device.download_bytes(b).map_err(e)?));
            }
        }
        let o = self.outputs[0];
        let dt = self.buffers[o].dtype();
        let poison = match dt {
            Scalar::BF16 => half::bf16::NAN.to_le_bytes().repeat(self.buffers[o].len()),
            _ => f32::NAN.to_le_bytes().repeat(self.buffers[o].len()),
        };
        device.write(&mut self.buffers[o], &poison).map_err(e)?;
        device
            .launch(
                gpu_kernel,
                (self.grid)(config, &self.dims),
                &self.launch_args(),
            )
            .map_err(e)?;
        let got = to_f32(dt, device.download_bytes(&self.buffers[o]).map_err(e)?);
        let h = &self.host;
        // (index, expected) pairs: whole first and last rows, or sampled entries.
        let mut want: Vec<(usize, f64)> = Vec::new();
        match self.kernel {
            "softmax" | "rmsnorm" => {
                let (r, c) = (self.dims[0] as usize, self.dims[1] as usize);
                for row in [0, 1, r - 1] {
                    let x: Vec<f64> = h[0][row * c..(row + 1) * c]
                        .iter()
                        .map(|&v| v as f64)
                        .collect();
                    if self.kernel == "softmax" {
                        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
                        want.extend(
                            x.iter()
                                .enumerate()
                                .map(|(j, v)| (row * c + j, (v - m).exp() / s)),
                        );
                    } else {
                        let rs =
                            1.0 / (x.iter().map(|v| v * v).sum::<f64>() / c as f64 + 1e-6).sqrt();
                        want.extend(
                            x.iter()
                                .enumerate()
                                .map(|(j, v)| (row * c + j, v * rs * h[1][j] as f64)),
                        );
                    }
                }
            }
            "matmul" => {
                let (m, n) = (self.dims[0] as usize, self.dims[1] as usize);
                let k = h[0].len() / m;
                for t in 0..64usize {
                    let (i, j) = ((t * 7919) % m, (t * 104729 + 13) % n);
                    want.push((
                        i * n + j,
                        (0..k)
                            .map(|p| h[0][i * k + p] as f64 * h[1][p * n + j] as f64)
                            .sum(),
                    ));
                }
            }
            _ => {
                let n = h[0].len();
                for t in 0..4096usize {
                    let i = (t * 65537) % n;
                    want.push((i, h[0][i] as f64 + h[1][i] as f64));
                }
            }
        }
        // bf16 output: 2 ulps (2^-7) relative; f32: 1e-4 (approximate exp, summation order).
        let rtol = if dt == Scalar::BF16 {
            1.0 / 128.0
        } else {
            1e-4
        };
        for (i, w) in want {
            let g = got[i] as f64;
            if !((g - w).abs() <= rtol * w.abs() + 1e-5) {
                return Err(format!("wrong result at element {i}: {g} (reference {w})"));
            }
        }
        Ok(())
    }

    pub fn launch_args(&self) -> Vec<Arg<'_>> {
        self.args
            .iter()
            .map(|a| match a {
                ProblemArg::Buf(i) => Arg::Buffer(&self.buffers[*i]),
                ProblemArg::I32(x) => Arg::I32(*x),
                ProblemArg::F32(x) => Arg::F32(*x),
            })
            .collect()
    }

    /// The problems `tile-tune` knows for `kernel`, at benchmark sizes.
    pub fn for_kernel(device: &Device, kernel: &str) -> Result<Option<Problem>, RuntimeError> {
        let rand =
            |dt: Scalar, n: usize, seed: u64| device.upload_bytes(dt, &random_bytes(n, dt, seed));
        Ok(Some(match kernel {
            "softmax" => {
                let (r, c) = (65536i64, 4096i64);
                let n = (r * c) as usize;
                Problem {
                    kernel: "softmax",
                    label: format!("{r}×{c} f32"),
                    buffers: vec![rand(Scalar::F32, n, 1)?, device.alloc(Scalar::F32, n)?],
                    args: vec![
                        ProblemArg::Buf(0),
                        ProblemArg::Buf(1),
                        ProblemArg::I32(r as i32),
                        ProblemArg::I32(c as i32),
                    ],
                    grid: |_, d| [d[0] as u32, 1, 1],
                    dims: vec![r, c],
                    bytes: 2.0 * 4.0 * n as f64,
                    flops: 0.0,
                    key: vec![("n".into(), c)],
                    outputs: vec![1],
                    host: vec![],
                }
            }
            "rmsnorm" => {
                let (r, c) = (65536i64, 4096i64);
                let n = (r * c) as usize;
                Problem {
                    kernel: "rmsnorm",
                    label: format!("{r}×{c} bf16"),
                    buffers: vec![
                        rand(Scalar::BF16, n, 2)?,
                        rand(Scalar::BF16, c as usize, 3)?,
                        device.alloc(Scalar::BF16, n)?,
                    ],
                    args: vec![
                        ProblemArg::Buf(0),
                        ProblemArg::Buf(1),
                        ProblemArg::Buf(2),
                        ProblemArg::I32(c as i32),
                        ProblemArg::F32(1e-6),
                    ],
                    grid: |_, d| [d[0] as u32, 1, 1],
                    dims: vec![r, c],
                    bytes: 2.0 * 2.0 * n as f64 + 2.0 * c as f64,
                    flops: 0.0,
                    key: vec![("n".into(), c)],
                    outputs: vec![2],
                    host: vec![],
                }
            }
            "matmul" => {
                let (m, n, k) = (4096i64, 4096i64, 4096i64);
                Problem {
                    kernel: "matmul",
                    label: format!("{m}×{n}×{k} bf16"),
                    buffers: vec![
                        rand(Scalar::BF16, (m * k) as usize, 4)?,
                        rand(Scalar::BF16, (k * n) as usize, 5)?,
                        device.alloc(Scalar::BF16, (m * n) as usize)?,
                    ],
                    args: vec![
                        ProblemArg::Buf(0),
                        ProblemArg::Buf(1),
                        ProblemArg::Buf(2),
                        ProblemArg::I32(m as i32),
                        ProblemArg::I32(n as i32),
                        ProblemArg::I32(k as i32),
                    ],
                    grid: |c, d| [cdiv(d[0], meta(c, "BM")) * cdiv(d[1], meta(c, "BN")), 1, 1],
                    dims: vec![m, n],
                    bytes: 2.0 * (m * k + k * n + m * n) as f64,
                    flops: 2.0 * (m * n * k) as f64,
                    key: vec![("M".into(), m), ("N".into(), n), ("K".into(), k)],
                    outputs: vec![2],
                    host: vec![],
                }
            }
            "vector_add" => {
                let n = 1i64 << 28;
                Problem {
                    kernel: "vector_add",
                    label: "2^28 f32".into(),
                    buffers: vec![
                        rand(Scalar::F32, n as usize, 6)?,
                        rand(Scalar::F32, n as usize, 7)?,
                        device.alloc(Scalar::F32, n as usize)?,
                    ],
                    args: vec![
                        ProblemArg::Buf(0),
                        ProblemArg::Buf(1),
                        ProblemArg::Buf(2),
                        ProblemArg::I32(n as i32),
                    ],
                    grid: |c, d| [cdiv(d[0], meta(c, "BLOCK")), 1, 1],
                    dims: vec![n],
                    bytes: 12.0 * n as f64,
                    flops: n as f64,
                    key: vec![("n".into(), n)],
                    outputs: vec![2],
                    host: vec![],
                }
            }
            _ => return Ok(None),
        }))
    }
}

/// Random values in [-1, 1) as raw bytes of `dt` (never zeros: they can run faster).
pub fn random_bytes(n: usize, dt: Scalar, seed: u64) -> Vec<u8> {
    let mut state = 0x9E3779B97F4A7C15u64 ^ seed.wrapping_mul(0xD1B54A32D192ED03);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    match dt {
        Scalar::BF16 => (0..n)
            .flat_map(|_| half::bf16::from_f32(next()).to_le_bytes())
            .collect(),
        _ => (0..n).flat_map(|_| next().to_le_bytes()).collect(),
    }
}
