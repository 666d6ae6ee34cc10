//! Front-end compile time: parse + check (+ passes) of `dsl-examples/rmsnorm.tile`.
//! Run: `cargo bench -p tilec --no-default-features --bench frontend`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tile_front::frontend::{parse_program, SourceFile};

fn rmsnorm() -> SourceFile {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dsl-examples/rmsnorm.tile");
    SourceFile::load(&path).expect("dsl-examples/rmsnorm.tile")
}

fn bench(c: &mut Criterion) {
    let src = rmsnorm();
    let meta = [("BLOCK".to_string(), 1024)];
    c.bench_function("rmsnorm: parse", |b| {
        b.iter(|| parse_program(black_box(&src)).expect("parses"))
    });
    c.bench_function(
        "rmsnorm: parse + check (specialize, passes included)",
        |b| {
            b.iter(|| {
                let p = parse_program(black_box(&src)).expect("parses");
                p.specialize("rmsnorm", &meta).expect("checks")
            })
        },
    );
    let p = parse_program(&src).expect("parses");
    c.bench_function("rmsnorm: check only (unoptimised)", |b| {
        b.iter(|| {
            p.specialize_unoptimized(black_box("rmsnorm"), &meta)
                .expect("checks")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
