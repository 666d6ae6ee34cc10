//! The example kernels under `dsl-examples/*.tile`, and the problem sizes
//! `tile-tune` uses for some of them when given no arguments ([`preset`]).

use std::path::PathBuf;
use tile_runtime::tune::ArgTuneRequest;
use tile_runtime::{Config, Scalar};

/// Directory holding the example `.tile` files.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The problem sizes `tile-tune` uses for example kernels when no `--arg` is
/// given (`tile-tune softmax rmsnorm matmul vector_add`): the benchmark sizes,
/// a reduced problem for the interpreter check (the same row length, so a
/// block too small for a row is still rejected), and the FLOPs of a launch
/// (bytes are the buffers' sizes: each read or written once).
pub fn preset(kernel: &str) -> Option<ArgTuneRequest> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (args, check_args, grid, check_grid, flops): (&[&str], &[&str], _, _, _) = match kernel {
        "softmax" => (
            &[
                "x=rand:f32:65536x4096",
                "y=nan:f32:65536x4096",
                "rows=65536",
                "n=4096",
            ],
            &["x=rand:f32:16x4096", "y=nan:f32:16x4096", "rows=16"],
            None,
            None,
            None,
        ),
        // rmsnorm declares no grid: one program per row.
        "rmsnorm" => (
            &[
                "x=rand:bf16:65536x4096",
                "w=rand:bf16:4096",
                "y=nan:bf16:65536x4096",
                "n=4096",
                "eps=1e-6",
            ],
            &["x=rand:bf16:16x4096", "y=nan:bf16:16x4096"],
            Some([65536, 1, 1]),
            Some([16, 1, 1]),
            None,
        ),
        "matmul" => (
            &[
                "a=rand:bf16:4096x4096",
                "b=rand:bf16:4096x4096",
                "c=nan:bf16:4096x4096",
                "M=4096",
                "N=4096",
                "K=4096",
            ],
            &[
                "a=rand:bf16:256x256",
                "b=rand:bf16:256x256",
                "c=nan:bf16:256x256",
                "M=256",
                "N=256",
                "K=256",
            ],
            None,
            None,
            Some("2*M*N*K"),
        ),
        "vector_add" => (
            &[
                "a=rand:f32:268435456",
                "b=rand:f32:268435456",
                "c=nan:f32:268435456",
                "n=268435456",
            ],
            &[
                "a=rand:f32:65536",
                "b=rand:f32:65536",
                "c=nan:f32:65536",
                "n=65536",
            ],
            None,
            None,
            Some("n"),
        ),
        _ => return None,
    };
    Some(ArgTuneRequest {
        kernel: kernel.into(),
        args: strings(args),
        check_args: strings(check_args),
        grid: grid.map(fixed_grid),
        check_grid: check_grid.map(fixed_grid),
        flops: flops.map(String::from),
        ..Default::default()
    })
}

/// The kernels [`preset`] knows.
pub const PRESETS: &[&str] = &["softmax", "rmsnorm", "matmul", "vector_add"];

pub fn meta(c: &Config, name: &str) -> i64 {
    c.meta
        .iter()
        .find(|(m, _)| m == name)
        .map(|x| x.1)
        .unwrap_or(1)
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

/// A grid of numbers as `tile-tune --grid` axes.
fn fixed_grid(g: [u32; 3]) -> Vec<tile_ir::launch::GridExpr> {
    g.iter()
        .map(|&n| tile_ir::launch::GridExpr::Const(n.into()))
        .collect()
}
