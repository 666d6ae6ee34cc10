//! Robustness: the front end never panics or hangs, whatever the input.
//!
//! Inputs are generated (token soups from the language's vocabulary, random
//! text, well-typed kernels from `tile_testkit::progen`, kernels around random
//! expressions) and mutated (byte-level edits of the `.tile` files of the
//! repository and of generated kernels). Each input goes through
//! `parse_program`, then `check_all`, then `--emit`-style printing; an input
//! that checks cleanly also runs on the interpreter (small buffers; errors
//! such as out-of-bounds accesses are fine, a panic is not). A watchdog fails
//! the run when one input takes longer than 10 s (a hang).
//!
//! Seeded per run: the seed is printed, `TILE_TEST_SEED=N` replays it. CI runs
//! a small count; `TILEC_FUZZ_CASES=1000000 cargo test --release -p tile-front
//! --test frontend_fuzz` runs a million (see docs/LANGUAGE.md). Code
//! generation of generated kernels is the codegen tier's
//! (tests/integration-tests/tests/pipeline_fuzz.rs).

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tile_front::frontend::{parse_program, SourceFile};
use tile_testkit::progen;
use tile_testkit::tile_runtime::{Arg, Device, ParamKind, Scalar};

/// Minimum fraction of `progen` kernels the checker must accept (each
/// rejection is the generator writing something the language does not allow).
const MIN_PROGEN_ACCEPTED: f64 = 0.9;

/// Run a kernel that checked on the interpreter with small buffers (4096
/// elements per pointer, scalars 7 / 0.5, a 2×2-program grid); errors are
/// expected (unmasked accesses out of bounds), panics are bugs. Only for
/// generated kernels that were not mutated: a mutation can turn a loop bound
/// `q * 3` into `q * 365536`, which would run for minutes.
fn interpret(t: &tile_ir::Kernel) {
    let cpu = Device::cpu();
    let Ok(k) = cpu.load_tir(t.clone(), 4) else {
        return;
    };
    let params = k.signature().params.clone();
    let bufs: Vec<_> = params
        .iter()
        .filter_map(|p| match p.kind {
            ParamKind::Ptr(d) => cpu.alloc(d, 4096).ok(),
            _ => None,
        })
        .collect();
    let mut next = bufs.iter();
    let args: Vec<Arg> = params
        .iter()
        .filter_map(|p| match p.kind {
            ParamKind::Ptr(_) => next.next().map(Arg::Buffer),
            ParamKind::Scalar(Scalar::I64) => Some(Arg::I64(7)),
            ParamKind::Scalar(Scalar::F32) => Some(Arg::F32(0.5)),
            ParamKind::Scalar(_) => Some(Arg::I32(7)),
        })
        .collect();
    let _ = cpu.launch(&k, [2, 2, 1], &args);
}

/// Run every stage the CLI runs on one input; true when it checked cleanly.
fn exercise(text: &str) -> bool {
    exercise_and_run(text, false)
}

/// [`exercise`], and with `run` a kernel that checks cleanly runs on the interpreter.
fn exercise_and_run(text: &str, run: bool) -> bool {
    let src = SourceFile::new("fuzz.tile", text);
    match parse_program(&src) {
        Err(d) => {
            let _ = d.render(&src);
            false
        }
        Ok(p) => {
            let d = p.check_all();
            let _ = d.render(&src);
            // Invalid TIR out of the checker or a pass is a compiler bug.
            if let Some(bug) = d
                .iter()
                .find(|x| x.code == tile_front::diag::Code::Internal)
            {
                panic!("internal error: {}", bug.message);
            }
            let clean = d.is_empty();
            for k in p.kernel_names() {
                let _ = p.tune_space(&k);
                let _ = p.meta_params(&k);
                let meta = p.check_configs(&k).remove(0);
                if let Ok(t) = p.specialize(&k, &meta) {
                    let _ = tile_ir::print_kernel(&t);
                    if clean && run {
                        interpret(&t);
                    }
                }
            }
            clean
        }
    }
}

const VOCAB: &[&str] = &[
    "kernel",
    "fn",
    "tune",
    "let",
    "mut",
    "for",
    "in",
    "static",
    "step",
    "if",
    "else",
    "const",
    "true",
    "false",
    "as",
    "None",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ";",
    "..",
    "->",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "&",
    "&&",
    "|",
    "||",
    "^",
    "!",
    "<<",
    ">>",
    "+=",
    "-=",
    "*=",
    "0",
    "1",
    "16",
    "32",
    "1024",
    "2.5",
    "1e-5",
    "x",
    "y",
    "n",
    "k",
    "BLOCK",
    "acc",
    "i",
    "f32",
    "bf16",
    "i32",
    "i64",
    "i1",
    "*f32",
    "program_id",
    "arange",
    "load",
    "store",
    "zeros",
    "full",
    "sum",
    "max",
    "dot",
    "where",
    "exp",
    "reshape",
    "trans",
    "broadcast_to",
    "cdiv",
    "atomic_add",
    "maximum",
    "sqrt",
    "key",
    "warps",
    "\n",
    " ",
    "//c\n",
    "/*",
    "*/",
];

/// The `.tile` files of the repository (examples, test kernels, mHC kernels):
/// the seeds of the mutations.
fn examples() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out: Vec<String> = ["dsl-examples", "tests/kernels", "mhc-kernels/kernels"]
        .iter()
        .flat_map(|d| tile_testkit::files_below(&root.join(d), &["tile"]))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(out.len() >= 5, "the corpus of .tile seeds is gone");
    out
}

/// A random expression over the names bound by [`program`] (often ill-typed on
/// purpose: the checker must reject it cleanly or accept it with valid TIR).
fn expr(rng: &mut StdRng, depth: u32) -> String {
    const LEAVES: &[&str] = &[
        "a", "t", "s", "b", "n", "acc", "1", "2.0", "BLOCK", "true", "m", "i",
    ];
    if depth == 0 || rng.random_range(0..4) == 0 {
        return LEAVES[rng.random_range(0..LEAVES.len())].to_string();
    }
    let d = depth - 1;
    let bin = ["+", "-", "*", "/", "%", "<", "==", "&&", "&", "<<", "!="];
    match rng.random_range(0..14) {
        0..=3 => format!(
            "({} {} {})",
            expr(rng, d),
            bin[rng.random_range(0..bin.len())],
            expr(rng, d)
        ),
        4 => format!(
            "{}(({}) as f32)",
            ["exp", "sqrt", "tanh", "sigmoid", "abs"][rng.random_range(0..5)],
            expr(rng, d)
        ),
        5 => format!(
            "{}({}, {})",
            ["sum", "max", "min"][rng.random_range(0..3)],
            expr(rng, d),
            rng.random_range(-1..3)
        ),
        6 => format!(
            "where({}, {}, {})",
            expr(rng, d),
            expr(rng, d),
            expr(rng, d)
        ),
        7 => format!(
            "{}({}, {})",
            ["maximum", "minimum", "cdiv"][rng.random_range(0..3)],
            expr(rng, d),
            expr(rng, d)
        ),
        8 => format!(
            "({}) as {}",
            expr(rng, d),
            ["f32", "bf16", "i32", "i64", "i1", "f16"][rng.random_range(0..6)]
        ),
        9 => format!(
            "({})[{}]",
            expr(rng, d),
            [":, None", "None, :", ":", "None"][rng.random_range(0..4)]
        ),
        10 => format!(
            "load(x + {}, {}, {})",
            expr(rng, d),
            expr(rng, d),
            expr(rng, d)
        ),
        11 => format!(
            "if {} {{ {} }} else {{ {} }}",
            expr(rng, d),
            expr(rng, d),
            expr(rng, d)
        ),
        12 => format!(
            "dot(zeros([16, 16], bf16), ({}) as bf16, zeros([16, 16], f32))",
            expr(rng, d)
        ),
        _ => format!("f({})", expr(rng, d)),
    }
}

/// A well-formed kernel around random statements, to reach the checker and passes.
fn program(rng: &mut StdRng) -> String {
    let mut body = String::from(
        "    let a = arange(0, BLOCK);\n    let m = a < n;\n    let t = load(x + a, m, 0.0);\n    let s = load(x);\n    let b = load(h + a);\n    let i = 3;\n    let mut acc = zeros([BLOCK], f32);\n",
    );
    for _ in 0..rng.random_range(1..6) {
        let e = expr(rng, 4);
        let line = match rng.random_range(0..6) {
            0 => format!("    let v{} = {e};\n", rng.random_range(0..3)),
            1 => format!("    acc = {e};\n"),
            2 => format!("    for i in 0..n step BLOCK {{ acc += {e}; }}\n"),
            3 => format!(
                "    for i in static 0..{} {{ acc = acc * ({e}); }}\n",
                rng.random_range(0..4)
            ),
            4 => format!("    if {e} {{ store(y + a, acc, m); }}\n"),
            _ => format!("    store(y + a, {e}, m);\n"),
        };
        body.push_str(&line);
    }
    format!(
        "fn f(v) {{ v * 2.0 }}\nkernel k<const BLOCK: i32 = {}>(x: *f32, y: *f32, h: *bf16, n: i32) {{\n{body}    store(y + a, acc, m);\n}}\n",
        [16, 32, 3][rng.random_range(0..3)]
    )
}

/// One generated or mutated input.
/// One input, and whether it may run on the interpreter (generated, not mutated).
fn make_case(rng: &mut StdRng, seeds: &[String]) -> (String, bool) {
    let text = match rng.random_range(0..16) {
        10..=12 => return (program(rng), true),
        13 => return (progen::generate(rng.random(), 0).source, true),
        0..=2 => {
            let n = rng.random_range(0..120);
            (0..n)
                .map(|_| VOCAB[rng.random_range(0..VOCAB.len())])
                .collect::<Vec<_>>()
                .join(" ")
        }
        3 => {
            let n = rng.random_range(0..200);
            (0..n)
                .map(|_| char::from_u32(rng.random_range(0..0x3000)).unwrap_or('?'))
                .collect()
        }
        _ => {
            let seed = if rng.random_range(0..3) == 0 {
                progen::generate(rng.random(), 0).source
            } else {
                seeds[rng.random_range(0..seeds.len())].clone()
            };
            let mut s: Vec<u8> = seed.into_bytes();
            for _ in 0..rng.random_range(1..6) {
                if s.is_empty() {
                    break;
                }
                let at = rng.random_range(0..s.len());
                match rng.random_range(0..5) {
                    0 => {
                        let end = (at + rng.random_range(1..20)).min(s.len());
                        s.drain(at..end);
                    }
                    1 => {
                        let tok = VOCAB[rng.random_range(0..VOCAB.len())];
                        s.splice(at..at, tok.bytes());
                    }
                    2 => s[at] = rng.random_range(0..128),
                    3 => {
                        // Duplicate a slice (deepens nesting, repeats items).
                        let end = (at + rng.random_range(1..80)).min(s.len());
                        let piece: Vec<u8> = s[at..end].to_vec();
                        s.splice(at..at, piece);
                    }
                    _ => {
                        let digits = [
                            "0",
                            "3",
                            "17",
                            "4096",
                            "65536",
                            "1000000",
                            "-1",
                            "2147483648",
                        ];
                        s.splice(at..at, digits[rng.random_range(0..digits.len())].bytes());
                    }
                }
            }
            String::from_utf8_lossy(&s).into_owned()
        }
    };
    (text, false)
}

#[test]
fn fuzz_no_panic_no_hang() {
    let cases: u64 = std::env::var("TILEC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed = tile_testkit::seed("frontend_fuzz: ");
    let seeds = examples();
    let done = Arc::new(AtomicU64::new(0));
    let clean = Arc::new(AtomicU64::new(0));
    let current = Arc::new(Mutex::new(String::new()));
    let worker = {
        let (done, current, clean) = (done.clone(), current.clone(), clean.clone());
        // The default 2 MiB stack of spawned threads: deep inputs must fit in it.
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..cases {
                let (case, run) = make_case(&mut rng, &seeds);
                if let Ok(mut c) = current.lock() {
                    c.clone_from(&case);
                }
                if exercise_and_run(&case, run) {
                    clean.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut last = (0, Instant::now());
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        let n = done.load(Ordering::Relaxed);
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            let c = current.lock().map(|c| c.clone()).unwrap_or_default();
            panic!("front end hung for 10 s on input (TILE_TEST_SEED={seed}):\n{c}");
        }
    }
    if worker.join().is_err() {
        let c = current.lock().map(|c| c.clone()).unwrap_or_default();
        panic!("front end panicked on input (TILE_TEST_SEED={seed}):\n{c}");
    }
    eprintln!(
        "fuzz: {} cases ({} checked without error), no panic, no hang",
        done.load(Ordering::Relaxed),
        clean.load(Ordering::Relaxed)
    );
}

/// The generator writes what the language accepts: at least
/// [`MIN_PROGEN_ACCEPTED`] of its kernels check cleanly in every configuration.
#[test]
fn generated_kernels_are_accepted() {
    let seed = tile_testkit::seed("generated_kernels_are_accepted: ");
    let n = 300;
    let mut rejected = Vec::new();
    for i in 0..n {
        let g = progen::generate(seed, i);
        let src = SourceFile::new(format!("{}.tile", g.name), g.source.as_str());
        let d = match parse_program(&src) {
            Ok(p) => p.check_all(),
            Err(d) => d,
        };
        if !d.is_empty() {
            rejected.push(format!("{}{}", g.source, d.render(&src)));
        }
    }
    let ok = n as usize - rejected.len();
    eprintln!("progen: {ok} of {n} generated kernels accepted");
    assert!(
        ok as f64 >= MIN_PROGEN_ACCEPTED * n as f64,
        "only {ok} of {n} generated kernels were accepted (TILE_TEST_SEED={seed}); the first rejected:\n{}",
        rejected.iter().take(3).cloned().collect::<Vec<_>>().join("\n-----\n")
    );
}

#[test]
fn deep_inputs_fit_a_small_stack() {
    let cases = [
        format!(
            "kernel k(x: *f32) {{ let a = {}1{}; }}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        ),
        format!("kernel k(x: *f32) {{ let a = {}1; }}", "-".repeat(100_000)),
        format!("kernel k(x: *f32) {{ {} }}", "{".repeat(100_000)),
        format!(
            "kernel k(x: *f32) {{ let a = 1{}; }}",
            " + 1".repeat(100_000)
        ),
        format!(
            "kernel k(x: *f32) {{ let a = x{}; }}",
            "[:, None]".repeat(10_000)
        ),
        format!("kernel k(x: *f32) {{ {} }}", "if true { ".repeat(10_000)),
        format!(
            "fn f(a) {{ a }}\nkernel k(x: *f32) {{ store(x, {}1.0{}); }}",
            "f(".repeat(120),
            ")".repeat(120)
        ),
        // Helpers nesting each other, each with a deep expression.
        (0..20)
            .map(|i| {
                format!(
                    "fn h{i}(a) {{ h{}({}a{}) }}\n",
                    i + 1,
                    "(".repeat(120),
                    ")".repeat(120)
                )
            })
            .collect::<String>()
            + "fn h20(a) { a }\nkernel k(x: *f32) { store(x, h0(1.0)); }",
    ];
    let t = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for c in &cases {
                let _ = exercise(c);
            }
        })
        .expect("spawn");
    assert!(
        t.join().is_ok(),
        "a deep input overflowed a 2 MiB stack or panicked"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
        let _ = exercise(&s);
    }

    #[test]
    fn token_soup_never_panics(toks in proptest::collection::vec(0..VOCAB.len(), 0..150)) {
        let s: Vec<&str> = toks.iter().map(|&i| VOCAB[i]).collect();
        let _ = exercise(&s.join(" "));
    }
}
