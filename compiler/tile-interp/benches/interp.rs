//! Throughput of the CPU interpreter on row-wise kernels (rmsnorm in bf16,
//! softmax in f32) written in the DSL, against a plain Rust loop doing the same
//! arithmetic. Run: `cargo bench -p tilec --no-default-features --bench interp`.
//!
//! Each group reports elements/s for: the interpreter over the whole grid in
//! parallel (rayon), the interpreter with one program instance at a time
//! (`sequential`, the per-core figure), and the plain Rust loop (one core).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use std::time::Duration;
use tile_front::frontend::{parse_program, SourceFile};
use tile_interp::{self as interp, Arg, Buffer, Options};

const SRC: &str = r#"
kernel rmsnorm<const BLOCK: i32>(x: *bf16, w: *bf16, y: *bf16, n: i32, eps: f32) {
    let row = program_id(0);
    let cols = arange(0, BLOCK);
    let mask = cols < n;
    let xs = load(x + row * n + cols, mask, 0.0) as f32;
    let r = rsqrt(sum(xs * xs, 0) / (n as f32) + eps);
    let ws = load(w + cols, mask, 0.0) as f32;
    store(y + row * n + cols, (xs * r * ws) as bf16, mask);
}

kernel softmax<const BLOCK: i32>(x: *f32, y: *f32, n: i32) {
    let row = program_id(0);
    let cols = arange(0, BLOCK);
    let mask = cols < n;
    let xs = load(x + row * n + cols, mask, -1.0e30);
    let m = max(xs, 0);
    let e = exp(xs - m);
    let s = sum(e, 0);
    store(y + row * n + cols, e / s, mask);
}
"#;

fn rmsnorm_ref(x: &[bf16], w: &[bf16], y: &mut [bf16], n: usize, eps: f32) {
    for (xr, yr) in x.chunks(n).zip(y.chunks_mut(n)) {
        let ss: f32 = xr.iter().map(|v| v.to_f32() * v.to_f32()).sum();
        let r = 1.0 / (ss / n as f32 + eps).sqrt();
        for ((o, &a), &b) in yr.iter_mut().zip(xr).zip(w) {
            *o = bf16::from_f32(a.to_f32() * r * b.to_f32());
        }
    }
}

fn softmax_ref(x: &[f32], y: &mut [f32], n: usize) {
    for (xr, yr) in x.chunks(n).zip(y.chunks_mut(n)) {
        let m = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0;
        for (o, &a) in yr.iter_mut().zip(xr) {
            *o = (a - m).exp();
            s += *o;
        }
        for o in yr.iter_mut() {
            *o /= s;
        }
    }
}

fn bench(c: &mut Criterion) {
    let program = parse_program(&SourceFile::new("bench.tile", SRC)).expect("bench kernels parse");
    let (rows, n, block) = (256usize, 4000usize, 4096i64);
    let mut rng = tile_testkit::rng(1);
    let meta = [("BLOCK".to_string(), block)];

    // rmsnorm, bf16
    let k = program
        .specialize("rmsnorm", &meta)
        .expect("rmsnorm specializes");
    let xv = tile_testkit::random_bf16(&mut rng, rows * n, -2.0, 2.0);
    let wv = tile_testkit::random_bf16(&mut rng, n, -1.0, 1.0);
    let (x, w, y) = (
        Buffer::from_bf16(&xv),
        Buffer::from_bf16(&wv),
        Buffer::zeros(tile_ir::Scalar::BF16, rows * n),
    );
    let args = [
        Arg::Buffer(&x),
        Arg::Buffer(&w),
        Arg::Buffer(&y),
        Arg::I32(n as i32),
        Arg::F32(1e-5),
    ];
    let mut g = c.benchmark_group(format!("rmsnorm_bf16_{rows}x{n}"));
    g.throughput(Throughput::Elements((rows * n) as u64));
    for parallel in [true, false] {
        let name = if parallel {
            "interp_parallel"
        } else {
            "interp_sequential"
        };
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                interp::run_with(&k, [rows as u32, 1, 1], &args, &Options { parallel }).unwrap()
            })
        });
    }
    let mut yv = vec![bf16::ZERO; rows * n];
    g.bench_function(BenchmarkId::from_parameter("rust_loop"), |b| {
        b.iter(|| rmsnorm_ref(&xv, &wv, &mut yv, n, 1e-5))
    });
    g.finish();
    // the interpreter and the loop agree to bf16 rounding
    let got = y.to_f32_vec();
    let max_diff = got
        .iter()
        .zip(&yv)
        .map(|(a, b)| (a - b.to_f32()).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff <= 0.05,
        "rmsnorm: interpreter and loop differ by {max_diff}"
    );

    // softmax, f32
    let k = program
        .specialize("softmax", &meta)
        .expect("softmax specializes");
    let xv = tile_testkit::random_f32(&mut rng, rows * n, -4.0, 4.0);
    let (x, y) = (
        Buffer::from_f32(&xv),
        Buffer::zeros(tile_ir::Scalar::F32, rows * n),
    );
    let args = [Arg::Buffer(&x), Arg::Buffer(&y), Arg::I32(n as i32)];
    let mut g = c.benchmark_group(format!("softmax_f32_{rows}x{n}"));
    g.throughput(Throughput::Elements((rows * n) as u64));
    for parallel in [true, false] {
        let name = if parallel {
            "interp_parallel"
        } else {
            "interp_sequential"
        };
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                interp::run_with(&k, [rows as u32, 1, 1], &args, &Options { parallel }).unwrap()
            })
        });
    }
    let mut yv = vec![0.0f32; rows * n];
    g.bench_function(BenchmarkId::from_parameter("rust_loop"), |b| {
        b.iter(|| softmax_ref(&xv, &mut yv, n))
    });
    g.finish();
    let got = y.to_f32_vec();
    let max_diff = got
        .iter()
        .zip(&yv)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff <= 1e-6,
        "softmax: interpreter and loop differ by {max_diff}"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
