//! Compile time, source to PTX in process (parse, check, specialise, TIR →
//! MLIR → LLVM → PTX for sm_90; no compile cache), of rmsnorm, matmul and
//! attention from `dsl-examples/`: each kernel's first tune configuration,
//! and the configuration issue 30 measured Triton on.
//! Run: `cargo bench -p tilec --bench compile_time` (docs/BENCHMARKS.md,
//! "Compile time"). Sample sizes are small: one matmul compile is ~1 s.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::time::Duration;
use tile_codegen::{compile, Arch, Options};
use tile_front::frontend::{parse_program, SourceFile};
use tile_ir::Config;

fn source(name: &str) -> SourceFile {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dsl-examples")
        .join(format!("{name}.tile"));
    SourceFile::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The kernel's first tune configuration, defaults filled in (as `tilec pack`).
fn first_config(src: &SourceFile, kernel: &str) -> Config {
    let p = parse_program(src).expect("parses");
    let mut c = p
        .tune_space(kernel)
        .expect("a tune block")
        .configs()
        .remove(0);
    for (n, d) in p.meta_params(kernel) {
        if !c.meta.iter().any(|(m, _)| *m == n) {
            c.meta.push((n, d.expect("a default")));
        }
    }
    c
}

fn source_to_ptx(src: &SourceFile, kernel: &str, config: &Config) -> String {
    let p = parse_program(src).expect("parses");
    let tir = p.specialize(kernel, &config.meta).expect("checks");
    let opts = Options {
        arch: Arch::Sm90,
        warps: config.warps,
        stages: config.stages,
        ctas: config.ctas,
        dump_passes: false,
        // As packs compile.
        keep_ir: false,
    };
    compile(&tir, &opts).expect("compiles").ptx
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    let cfg = |meta: &[(&str, i64)], warps: u32| Config {
        meta: meta.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        warps,
        stages: None,
        ctas: None,
    };
    // (kernel, issue 30's configuration: the one Triton was timed on)
    let cases = [
        ("rmsnorm", cfg(&[("BLOCK", 4096)], 16)),
        ("matmul", cfg(&[("BM", 128), ("BN", 256), ("BK", 64)], 8)),
        (
            "attention",
            cfg(&[("BM", 128), ("BN", 64), ("D", 64), ("CAUSAL", 0)], 4),
        ),
    ];
    for (kernel, issue) in cases {
        let src = source(kernel);
        for (which, config) in [("first", first_config(&src, kernel)), ("issue30", issue)] {
            let id = format!("{kernel} {which} [{}]", config.describe());
            g.bench_function(id, |b| {
                b.iter(|| source_to_ptx(black_box(&src), kernel, &config))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
