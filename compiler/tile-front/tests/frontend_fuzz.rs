//! Robustness: the front end never panics or hangs, whatever the input.
//!
//! Inputs are generated (token soups from the language's vocabulary, random
//! text) and mutated (byte-level edits of the example kernels). Each input goes
//! through `parse_program`, then `check_all`, then `--emit`-style printing.
//! A watchdog fails the run when one input takes longer than 10 s (a hang).
//!
//! CI runs a small count; `TILEC_FUZZ_CASES=1000000 cargo test --release -p tile-front
//! --test frontend_fuzz` runs a million (see docs/LANGUAGE.md).

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tile_front::frontend::{parse_program, SourceFile};

/// Run every stage the CLI runs on one input; true when it checked cleanly.
fn exercise(text: &str) -> bool {
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
            for k in p.kernel_names() {
                let _ = p.tune_space(&k);
                let _ = p.meta_params(&k);
                if let Ok(t) = p.specialize(&k, &[]) {
                    let _ = tile_ir::print_kernel(&t);
                }
            }
            d.is_empty()
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

fn examples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dsl-examples");
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                out.push(t);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        out.push("kernel k<const B: i32 = 16>(x: *f32) { store(x + arange(0, B), 1.0); }".into());
    }
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
fn make_case(rng: &mut StdRng, seeds: &[String]) -> String {
    match rng.random_range(0..14) {
        10..=13 => program(rng),
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
            let mut s: Vec<u8> = seeds[rng.random_range(0..seeds.len())].clone().into_bytes();
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
    }
}

#[test]
fn fuzz_no_panic_no_hang() {
    let cases: u64 = std::env::var("TILEC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("TILE_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
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
                let case = make_case(&mut rng, &seeds);
                if let Ok(mut c) = current.lock() {
                    c.clone_from(&case);
                }
                if exercise(&case) {
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
            panic!("front end hung for 10 s on input:\n{c}");
        }
    }
    if worker.join().is_err() {
        let c = current.lock().map(|c| c.clone()).unwrap_or_default();
        panic!("front end panicked on input:\n{c}");
    }
    eprintln!(
        "fuzz: {} cases ({} checked without error), no panic, no hang",
        done.load(Ordering::Relaxed),
        clean.load(Ordering::Relaxed)
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
