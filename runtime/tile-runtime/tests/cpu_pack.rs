//! The runtime without a GPU: a pack built from `.tile` source (TIR only) loads
//! onto the CPU device and runs; launches with bad arguments are refused before
//! anything runs, with errors that name the kernel and the argument.

use rand::Rng;
use tile_front::frontend::{parse_program, SourceFile};
use tile_runtime::{Arg, Config, Device, Pack, RuntimeError, Scalar};

mod common;
use common::pack_of;

/// A pack of vector_add (TIR only, as for the CPU backend), written to a temp dir.
fn vector_add_pack(dir: &std::path::Path) -> Pack {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dsl-examples/vector_add.tile");
    pack_of(dir, "va", &SourceFile::load(&path).unwrap())
}

/// A pack of one kernel that fills `BLOCK` elements, with tune block `tune`.
fn fill_pack(dir: &std::path::Path, name: &str, tune: &str) -> Pack {
    let text = format!(
        "kernel k<const BLOCK: i32>(x: *f32) {{\n\
             store(x + arange(0, BLOCK), full([BLOCK], 1.0, f32));\n\
         }}\n\
         tune k {{ {tune} }}\n"
    );
    pack_of(dir, name, &SourceFile::new(name, text))
}

fn cfg(block: i64, warps: u32) -> Config {
    Config {
        meta: vec![("BLOCK".into(), block)],
        warps,
        stages: None,
        ctas: None,
    }
}

#[test]
fn cpu_launch_from_a_pack_matches_a_rust_loop() {
    let dir = tempfile::tempdir().unwrap();
    let pack = vector_add_pack(dir.path());
    let cpu = Device::cpu();
    let k = pack.load_kernel(&cpu, "vector_add", &cfg(1024, 4)).unwrap();
    let mut rng = rand::rng();
    for n in [1usize, 1000, 5000] {
        let a: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (ba, bb) = (cpu.upload(&a).unwrap(), cpu.upload(&b).unwrap());
        let bc = cpu.upload(&vec![f32::NAN; n]).unwrap();
        cpu.launch(
            &k,
            [n.div_ceil(1024) as u32, 1, 1],
            &[
                Arg::Buffer(&ba),
                Arg::Buffer(&bb),
                Arg::Buffer(&bc),
                Arg::I32(n as i32),
            ],
        )
        .unwrap();
        let c = cpu.download::<f32>(&bc).unwrap();
        for i in 0..n {
            assert_eq!(c[i], a[i] + b[i], "n={n} i={i}");
        }
    }
}

#[test]
fn bad_launches_are_refused_with_the_kernel_and_argument_named() {
    let dir = tempfile::tempdir().unwrap();
    let pack = vector_add_pack(dir.path());
    let cpu = Device::cpu();
    let k = pack.load_kernel(&cpu, "vector_add", &cfg(1024, 4)).unwrap();
    let f = cpu.alloc(Scalar::F32, 16).unwrap();
    let h = cpu.alloc(Scalar::BF16, 16).unwrap();
    let msg = |r: Result<(), RuntimeError>| r.unwrap_err().to_string();

    let m = msg(cpu.launch(&k, [1, 1, 1], &[Arg::Buffer(&f), Arg::Buffer(&f)]));
    assert!(
        m.contains("vector_add") && m.contains("expects 4 arguments") && m.contains("got 2"),
        "{m}"
    );
    let m = msg(cpu.launch(
        &k,
        [1, 1, 1],
        &[
            Arg::Buffer(&f),
            Arg::Buffer(&h),
            Arg::Buffer(&f),
            Arg::I32(16),
        ],
    ));
    assert!(
        m.contains("`b`") && m.contains("f32 buffer") && m.contains("bf16"),
        "{m}"
    );
    let m = msg(cpu.launch(
        &k,
        [1, 1, 1],
        &[
            Arg::Buffer(&f),
            Arg::Buffer(&f),
            Arg::Buffer(&f),
            Arg::F32(16.0),
        ],
    ));
    assert!(m.contains("`n`") && m.contains("i32"), "{m}");
    let m = msg(cpu.launch(
        &k,
        [1, 1, 1],
        &[Arg::I32(1), Arg::Buffer(&f), Arg::Buffer(&f), Arg::I32(16)],
    ));
    assert!(m.contains("`a`") && m.contains("buffer"), "{m}");
    let m = msg(cpu.launch(
        &k,
        [0, 1, 1],
        &[
            Arg::Buffer(&f),
            Arg::Buffer(&f),
            Arg::Buffer(&f),
            Arg::I32(16),
        ],
    ));
    assert!(m.contains("empty grid"), "{m}");
    // An unmasked out-of-bounds access is an error, not undefined behaviour.
    let m = msg(cpu.launch(
        &k,
        [1, 1, 1],
        &[
            Arg::Buffer(&f),
            Arg::Buffer(&f),
            Arg::Buffer(&f),
            Arg::I32(2000),
        ],
    ));
    assert!(m.contains("vector_add"), "{m}");

    let m = pack
        .load_kernel(&cpu, "vector_add", &cfg(512, 4))
        .err()
        .unwrap()
        .to_string();
    assert!(
        m.contains("BLOCK=512") && m.contains("not in the pack"),
        "{m}"
    );
    let m = pack
        .load_kernel(&cpu, "nope", &cfg(1024, 4))
        .err()
        .unwrap()
        .to_string();
    assert!(m.contains("nope") && m.contains("vector_add"), "{m}");
    let m = cpu
        .load_ptx(".version 8.0", k.signature().clone(), 4, 0, Vec::new())
        .err()
        .unwrap()
        .to_string();
    assert!(m.contains("PTX cannot run on the CPU"), "{m}");
}

#[test]
fn no_gpu_is_an_error_not_a_crash() {
    if Device::gpu_unavailable_reason().is_none() {
        eprintln!("SKIPPED: a GPU is present");
        return;
    }
    let e = Device::cuda(0).unwrap_err().to_string();
    assert!(e.contains("no GPU"), "{e}");
}

/// Issue 20 item 1: `grid: [cdiv(n, BLOCK)]` in vector_add's tune block comes
/// through the pack; `Kernel::grid` evaluates it with the launch's arguments
/// and the config's BLOCK, and that grid covers every element.
#[test]
fn the_declared_grid_is_computed_from_the_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let pack = vector_add_pack(dir.path());
    let cpu = Device::cpu();
    assert!(pack.kernel("vector_add").unwrap().tune.grid.is_some());
    for (block, n) in [(1024, 1usize), (1024, 5000), (2048, 4096), (4096, 4097)] {
        let k = pack
            .load_kernel(&cpu, "vector_add", &cfg(block, 8))
            .unwrap();
        assert_eq!(k.block(), [256, 1, 1]);
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let (ba, bb) = (cpu.upload(&a).unwrap(), cpu.upload(&a).unwrap());
        let bc = cpu.upload(&vec![f32::NAN; n]).unwrap();
        let args = [
            Arg::Buffer(&ba),
            Arg::Buffer(&bb),
            Arg::Buffer(&bc),
            Arg::I32(n as i32),
        ];
        let grid = k.grid(&args).unwrap();
        assert_eq!(grid, [n.div_ceil(block as usize) as u32, 1, 1]);
        cpu.launch(&k, grid, &args).unwrap();
        let c = cpu.download::<f32>(&bc).unwrap();
        assert!(c.iter().zip(&a).all(|(c, a)| *c == 2.0 * a));
    }
    // Arguments that do not fit the signature are refused by name.
    let k = pack.load_kernel(&cpu, "vector_add", &cfg(1024, 4)).unwrap();
    let e = k.grid(&[Arg::I32(3)]).unwrap_err().to_string();
    assert!(
        e.contains("vector_add") && e.contains("expects 4 arguments"),
        "{e}"
    );
    // An empty grid (n = 0) is an error, not a launch of nothing.
    let buf = cpu.upload(&[0f32]).unwrap();
    let args = [
        Arg::Buffer(&buf),
        Arg::Buffer(&buf),
        Arg::Buffer(&buf),
        Arg::I32(0),
    ];
    let e = k.grid(&args).unwrap_err().to_string();
    assert!(e.contains("cdiv(n, BLOCK)` is 0"), "{e}");
}

#[test]
fn a_kernel_without_a_declared_grid_says_so() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dsl-examples/vector_add.tile");
    let program = parse_program(&SourceFile::load(&path).unwrap()).unwrap();
    let cpu = Device::cpu();
    let tir = program
        .specialize("vector_add", &[("BLOCK".into(), 1024)])
        .unwrap();
    let k = cpu.load_tir(tir, 4).unwrap();
    let buf = cpu.upload(&[0f32]).unwrap();
    let args = [
        Arg::Buffer(&buf),
        Arg::Buffer(&buf),
        Arg::Buffer(&buf),
        Arg::I32(1),
    ];
    let e = k.grid(&args).unwrap_err().to_string();
    assert!(e.contains("declares no launch grid"), "{e}");
}

/// A pack whose tune block lists `stages`: a config naming a depth finds
/// that variant; one without (a caller that does not tune depths) finds the
/// block's first; a depth the pack lacks is an error naming the config.
#[test]
fn configs_without_stages_find_the_first_depth() {
    let dir = tempfile::tempdir().unwrap();
    let pack = fill_pack(
        dir.path(),
        "stages",
        "BLOCK: [128], warps: [4], stages: [3, 2]",
    );
    let with = |stages| Config {
        stages,
        ..cfg(128, 4)
    };
    assert_eq!(
        pack.variant("k", &with(None)).unwrap().config.stages,
        Some(3)
    );
    assert_eq!(
        pack.variant("k", &with(Some(2))).unwrap().config.stages,
        Some(2)
    );
    let err = pack.variant("k", &with(Some(4))).unwrap_err().to_string();
    assert!(err.contains("stages=4"), "{err}");
}

/// A caller that does not name `ctas` (the typed launchers) gets the first
/// variant with its meta-parameters and warps, the tune block's first
/// `ctas`; one that names it gets exactly that variant, or an error.
#[test]
fn variants_differing_in_ctas_are_found_by_their_other_values() {
    let dir = tempfile::tempdir().unwrap();
    let pack = fill_pack(
        dir.path(),
        "ctas",
        "BLOCK: [256], warps: [4], ctas: [8, 16]",
    );
    let mut c = cfg(256, 4);
    assert_eq!(pack.variant("k", &c).unwrap().config.ctas, Some(8));
    c.ctas = Some(16);
    assert_eq!(pack.variant("k", &c).unwrap().config.ctas, Some(16));
    c.ctas = Some(3);
    let err = pack.variant("k", &c).unwrap_err().to_string();
    assert!(
        err.contains("ctas=3") && err.contains("not in the pack"),
        "{err}"
    );
}
