//! Differential test, interpreter against GPU (issue 27 part 2): every kernel
//! of the fuzz packs named by `TILE_FUZZ_PACK` (files or directories,
//! comma-separated; built by `scripts/fuzz-pack` from `tile_testkit::progen`
//! programs plus the regression cases of `tests/integration-tests/differential/`)
//! runs in every configuration on the same random inputs on `Device::cpu()`
//! (the interpreter, the pack's TIR) and `Device::cuda(0)` (the pack's PTX).
//!
//! Inputs: `tile_testkit::progen::drive` (integers mixing small values, 0,
//! -1, shift amounts around the width, the extremes and the whole range;
//! floats of both signs, small, large up to 1e6 (f16: 1e4), small integers,
//! ±0, ±1); outputs start as NaN (floats) or `0x5EED5EED` (integers), so an
//! element one side writes and the other does not differs. Every buffer is
//! compared after the launch (inputs must come back unchanged): integers bit
//! for bit, floats equal (NaN = NaN, -0 = 0) where the generator built an
//! exact value, else within the tolerance it derived for that output from the
//! dtypes, the reduction lengths and the documented errors of the
//! approximate functions (the `// outputs:` line of each source; derivation
//! in tests/tile-testkit/src/progen.rs, "Tolerances").
//!
//! Prints the seed (`TILE_TEST_SEED` replays it) and the counts; on a
//! disagreement the kernel, its source, the configuration, the launch, the
//! element and both values. Regression cases marked `// known-failure:` are
//! reported and not failed.
//!
//! `differential_harness_*` run the same harness with the interpreter on both
//! sides (in CI, without a GPU or a pack), and check that it catches a kernel
//! that computes something else.
#![cfg(feature = "gpu")]

use std::path::{Path, PathBuf};
use tile_front::frontend::{parse_program, SourceFile};
use tile_runtime::{Config, Device, Kernel, Pack};
use tile_testkit::progen::{self, drive, OutputSpec};

/// Launches (fresh sizes and inputs) per configuration.
const LAUNCHES: usize = 2;

/// Kernels per pack under compute-sanitizer.
const SANITIZER_KERNELS: usize = 20;

/// The regression cases, always part of the differential test.
fn regression_dir() -> PathBuf {
    tile_testkit::root().join("tests/integration-tests/differential")
}

/// A kernel's source text: regenerated when the name is a generated one and
/// the text hashes to the pack's `source_hash`, else the regression case with
/// that hash.
fn source_for(name: &str, hash: &str) -> Option<String> {
    if let Some((s, i)) = progen::parse_name(name) {
        let g = progen::generate(s, i);
        if tile_ir::pack::sha256_hex(g.source.as_bytes()) == hash {
            return Some(g.source);
        }
    }
    tile_testkit::files_below(&regression_dir(), &["tile"])
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find(|t| tile_ir::pack::sha256_hex(t.as_bytes()) == hash)
}

#[derive(Default, Debug)]
struct Stats {
    programs: usize,
    configs: usize,
    launches: usize,
    elements: usize,
    disagreements: usize,
    known: usize,
    failures: Vec<String>,
}

impl Stats {
    fn report(&self, label: &str) {
        eprintln!(
            "{label}: {} programs, {} configurations, {} launches, {} elements compared, {} disagreements ({} in known failures)",
            self.programs, self.configs, self.launches, self.elements, self.disagreements, self.known
        );
    }
}

/// One kernel in one configuration on both sides: `a` is the reference (the
/// interpreter), `b` the side under test.
#[allow(clippy::too_many_arguments)]
fn compare(
    name: &str,
    source: &str,
    config: &Config,
    (dev_a, ka): (&Device, &Kernel),
    (dev_b, kb): (&Device, &Kernel),
    rng: &mut rand::rngs::StdRng,
    stats: &mut Stats,
) {
    let outputs: Vec<OutputSpec> = progen::parse_outputs(source).unwrap_or_default();
    let known = source
        .lines()
        .find_map(|l| l.trim().strip_prefix("// known-failure:"))
        .map(str::trim);
    let mut bad: Vec<String> = Vec::new();
    for _ in 0..LAUNCHES {
        let case = drive::case(rng, ka.signature(), config);
        let want = match drive::run(dev_a, ka, &case) {
            Ok(w) => w,
            Err(e) => {
                bad.push(format!("interpreter failed on {}: {e}", case.describe()));
                continue;
            }
        };
        let got = match drive::run(dev_b, kb, &case) {
            Ok(g) => g,
            Err(e) => {
                bad.push(format!("launch failed on {}: {e}", case.describe()));
                continue;
            }
        };
        stats.launches += 1;
        for (i, (param, dt, _)) in case.buffers.iter().enumerate() {
            let tol = if param.starts_with('y') {
                match outputs.iter().find(|o| &o.param == param) {
                    Some(o) => o.tol,
                    None => {
                        bad.push(format!("no `// outputs:` tolerance for `{param}`"));
                        continue;
                    }
                }
            } else {
                None
            };
            stats.elements += want[i].len() / dt.size_bytes();
            let idx = drive::disagreements(*dt, &got[i], &want[i], tol);
            if idx.is_empty() {
                continue;
            }
            stats.disagreements += idx.len();
            if known.is_some() {
                stats.known += idx.len();
            }
            let show: Vec<String> = idx
                .iter()
                .take(5)
                .map(|&e| {
                    let (r, c) = (e / case.n as usize, e % case.n as usize);
                    if dt.is_float() {
                        format!(
                            "[{e}] (row {r}, col {c}): gpu {:e} interpreter {:e}",
                            drive::float_at(*dt, &got[i], e),
                            drive::float_at(*dt, &want[i], e)
                        )
                    } else {
                        format!(
                            "[{e}] (row {r}, col {c}): gpu {} interpreter {}",
                            drive::int_at(*dt, &got[i], e),
                            drive::int_at(*dt, &want[i], e)
                        )
                    }
                })
                .collect();
            bad.push(format!(
                "`{param}` ({}, tolerance {}): {} of {} elements differ on {}:\n    {}",
                dt.name(),
                tol.map_or("exact".into(), |(a, r)| format!("abs {a:e} rel {r:e}")),
                idx.len(),
                want[i].len() / dt.size_bytes(),
                case.describe(),
                show.join("\n    ")
            ));
        }
    }
    if !bad.is_empty() {
        let head = match known {
            Some(why) => format!("KNOWN FAILURE ({why}) "),
            None => String::new(),
        };
        let msg = format!(
            "{head}{name} [{}]:\n  {}\n--- source:\n{source}",
            config.describe(),
            bad.join("\n  ")
        );
        eprintln!("{msg}");
        if known.is_none() {
            stats.failures.push(msg);
        }
    }
}

/// A per-kernel RNG, so that a replay of one seed gives each kernel the same
/// inputs whatever else the pack holds.
fn kernel_rng(seed: u64, name: &str) -> rand::rngs::StdRng {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    tile_testkit::rng(seed ^ h)
}

/// The packs `TILE_FUZZ_PACK` names (files, or directories of `*.tpack`).
fn fuzz_packs(var: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for part in var.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let p = Path::new(part);
        if p.is_dir() {
            out.extend(tile_testkit::files_below(p, &["tpack"]));
        } else {
            out.push(p.to_path_buf());
        }
    }
    out
}

#[test]
fn gpu_differential_interpreter_vs_gpu() {
    let var = match std::env::var("TILE_FUZZ_PACK") {
        Ok(v) => v,
        Err(_) => {
            let msg = "gpu_differential: TILE_FUZZ_PACK is not set (build the packs with \
                       `scripts/fuzz-pack OUT_DIR SEED COUNT` and point it at them; \
                       docs/ARCHITECTURE.md, \"Differential test\")";
            if std::env::var(tile_testkit::REQUIRE_GPU_VAR).is_ok_and(|v| v == "1") {
                panic!("{msg}, but {}=1", tile_testkit::REQUIRE_GPU_VAR);
            }
            eprintln!("SKIPPED {msg}");
            return;
        }
    };
    let packs = fuzz_packs(&var);
    assert!(!packs.is_empty(), "TILE_FUZZ_PACK={var}: no pack there");
    let Some(gpu) = tile_testkit::gpu_or_skip("gpu_differential_interpreter_vs_gpu") else {
        // Without a GPU: at least the packs load and every source is found.
        let mut n = 0;
        for path in &packs {
            let pack = Pack::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for k in &pack.manifest().kernels {
                assert!(
                    source_for(&k.name, &k.source_hash).is_some(),
                    "{}: no source for `{}`",
                    path.display(),
                    k.name
                );
                n += 1;
            }
        }
        eprintln!(
            "gpu_differential: {n} kernels in {} packs, every source found",
            packs.len()
        );
        return;
    };
    let seed = tile_testkit::seed("gpu_differential: ");
    let cpu = Device::cpu();
    let mut stats = Stats::default();
    let mut regression_seen = 0;
    // Under compute-sanitizer (scripts/gpu-run.sh sets TILE_SANITIZER_RUN)
    // every launch is slow: the first kernels of each pack only.
    let limit = if std::env::var_os("TILE_SANITIZER_RUN").is_some() {
        SANITIZER_KERNELS
    } else {
        usize::MAX
    };
    for path in &packs {
        let pack = Pack::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for k in pack.manifest().kernels.iter().take(limit) {
            let source = source_for(&k.name, &k.source_hash).unwrap_or_else(|| {
                panic!(
                    "{}: kernel `{}`: its source is neither a progen program of this checkout nor a \
                     regression case (rebuild the pack with scripts/fuzz-pack from this checkout)",
                    path.display(),
                    k.name
                )
            });
            if progen::parse_name(&k.name).is_none() {
                regression_seen += 1;
            }
            stats.programs += 1;
            // A probe of a regression case replays the inputs of the program
            // it was reduced from (`// inputs-as: fz_SEED_INDEX`).
            let inputs_as = source
                .lines()
                .find_map(|l| l.trim().strip_prefix("// inputs-as:"))
                .map_or(k.name.as_str(), str::trim);
            let mut rng = kernel_rng(seed, inputs_as);
            for v in &k.variants {
                let ka = pack.load_kernel(&cpu, &k.name, &v.config).unwrap();
                stats.configs += 1;
                let kb = match pack.load_kernel(&gpu, &k.name, &v.config) {
                    Ok(kb) => kb,
                    Err(e) if e.to_string().contains("no PTX") => panic!(
                        "{}: {e}\n(build the fuzz packs for this target: \
                         FUZZ_PACK_ARCH=sm_90,sm_80 scripts/fuzz-pack ...)",
                        path.display()
                    ),
                    Err(e) => {
                        let msg = format!(
                            "{} [{}]: the GPU does not load the PTX: {e}\n--- source:\n{source}",
                            k.name,
                            v.config.describe()
                        );
                        eprintln!("{msg}");
                        if source.contains("// known-failure:") {
                            stats.known += 1;
                        } else {
                            stats.failures.push(msg);
                        }
                        continue;
                    }
                };
                compare(
                    &k.name,
                    &source,
                    &v.config,
                    (&cpu, &ka),
                    (&gpu, &kb),
                    &mut rng,
                    &mut stats,
                );
            }
        }
        eprintln!("gpu_differential: {} done", path.display());
    }
    let cases = if limit == usize::MAX {
        tile_testkit::files_below(&regression_dir(), &["tile"]).len()
    } else {
        0
    };
    stats.report("gpu_differential");
    assert!(
        regression_seen >= cases,
        "the packs hold {regression_seen} of the {cases} regression cases in {} (rebuild them with scripts/fuzz-pack)",
        regression_dir().display()
    );
    assert!(
        stats.failures.is_empty(),
        "{} kernel configurations disagree (TILE_TEST_SEED={seed}); the first:\n{}",
        stats.failures.len(),
        stats.failures[0]
    );
}

/// Generated programs and the regression cases, checked and specialised here
/// (no LLVM): `(name, source, [(config, kernel on the CPU)])`.
#[allow(clippy::type_complexity)]
fn cpu_programs(seed: u64, count: u64) -> Vec<(String, String, Vec<(Config, Kernel)>)> {
    let mut sources: Vec<String> = (0..count)
        .map(|i| progen::generate(seed, i).source)
        .collect();
    for p in tile_testkit::files_below(&regression_dir(), &["tile"]) {
        sources.push(std::fs::read_to_string(p).unwrap());
    }
    let cpu = Device::cpu();
    sources
        .into_iter()
        .filter_map(|text| {
            let src = SourceFile::new("p.tile", text.as_str());
            let regression = !text.contains("Generated by tile_testkit::progen");
            let accepted = parse_program(&src)
                .ok()
                .filter(|p| p.check_all().is_empty());
            assert!(
                accepted.is_some() || !regression,
                "a regression case is rejected:\n{text}"
            );
            let p = accepted?;
            let name = p.kernel_names().remove(0);
            let space = p.tune_space(&name)?;
            let kernels = space
                .configs()
                .into_iter()
                .map(|c| {
                    let tir = p.specialize(&name, &c.meta).unwrap();
                    let k = cpu.load_tir(tir, c.warps).unwrap();
                    (c, k)
                })
                .collect();
            Some((name, text, kernels))
        })
        .collect()
}

#[test]
fn differential_harness_agrees_with_itself() {
    let seed = tile_testkit::seed("differential_harness: ");
    let cpu = Device::cpu();
    let programs = cpu_programs(seed, 40);
    assert!(programs.len() >= 36, "generated programs were rejected");
    let mut stats = Stats::default();
    for (name, source, kernels) in &programs {
        stats.programs += 1;
        let mut rng = kernel_rng(seed, name);
        for (c, k) in kernels {
            stats.configs += 1;
            compare(name, source, c, (&cpu, k), (&cpu, k), &mut rng, &mut stats);
        }
    }
    stats.report("differential_harness");
    assert!(stats.elements > 0);
    assert!(
        stats.failures.is_empty(),
        "the interpreter disagrees with itself (TILE_TEST_SEED={seed}):\n{}",
        stats.failures[0]
    );
}

#[test]
fn differential_harness_catches_a_kernel_that_computes_something_else() {
    let seed = tile_testkit::seed("differential_harness: ");
    let cpu = Device::cpu();
    let head = "kernel w<const BM: i32, const BN: i32>(x0: *i32, x1: *f32, x2: *f32, y0: *i32, y1: *f32, m: i32, n: i32, q: i32, s: i32, f: f32) {\n\
        let r = program_id(0) * BM + arange(0, BM)[:, None];\n\
        let c = program_id(1) * BN + arange(0, BN)[None, :];\n\
        let mask = (r < m) & (c < n);\n\
        let off = r * n + c;\n";
    let tail = "}\ntune w { key: [], BM: [4], BN: [8], warps: [4] }\n";
    let kernel = |body: &str| {
        let text = format!("// outputs: y0 exact, y1 abs 0 rel 1e-6\n{head}{body}{tail}");
        let src = SourceFile::new("w.tile", text.as_str());
        let p = parse_program(&src).unwrap();
        let c = p.tune_space("w").unwrap().configs().remove(0);
        let k = cpu
            .load_tir(p.specialize("w", &c.meta).unwrap(), c.warps)
            .unwrap();
        (text, c, k)
    };
    let (text, c, good) = kernel(
        "store(y0 + off, load(x0 + off, mask, 0) * 3, mask);\nstore(y1 + off, load(x1 + off, mask, 0.0) * 3.0, mask);\n",
    );
    for (what, body) in [
        (
            "an integer off by one",
            "store(y0 + off, load(x0 + off, mask, 0) * 3 + 1, mask);\nstore(y1 + off, load(x1 + off, mask, 0.0) * 3.0, mask);\n",
        ),
        (
            "a float beyond its tolerance (rel 1e-5 > 1e-6)",
            "store(y0 + off, load(x0 + off, mask, 0) * 3, mask);\nstore(y1 + off, load(x1 + off, mask, 0.0) * 3.00003, mask);\n",
        ),
        (
            "an element left unwritten",
            "store(y0 + off, load(x0 + off, mask, 0) * 3, mask & (c > 0));\nstore(y1 + off, load(x1 + off, mask, 0.0) * 3.0, mask);\n",
        ),
    ] {
        let (_, _, bad) = kernel(body);
        let mut stats = Stats::default();
        let mut rng = kernel_rng(seed, "w");
        compare("w", &text, &c, (&cpu, &good), (&cpu, &bad), &mut rng, &mut stats);
        assert!(
            stats.disagreements > 0 && stats.failures.len() == 1 && stats.failures[0].contains("--- source:"),
            "{what}: not caught (TILE_TEST_SEED={seed}): {stats:?}"
        );
        // The same kernel on both sides agrees.
        let mut stats = Stats::default();
        compare("w", &text, &c, (&cpu, &good), (&cpu, &good), &mut rng, &mut stats);
        assert!(stats.failures.is_empty(), "{:?}", stats.failures);
    }
}
