//! A generator of random, well-typed `.tile` kernels (issue 26 item 4, issue
//! 27 part 2): the fuzz tests check, interpret and compile what it writes, and
//! the differential test runs it on the interpreter and on the GPU.
//!
//! [`generate`]`(seed, index)` is a pure function: the same pair always gives
//! the same text, so a test holding only a kernel's name (`fz_<seed>_<index>`)
//! can print its source and its tolerances again ([`parse_name`]).
//!
//! Every kernel has the same signature, so one driver feeds them all:
//!
//! ```text
//! kernel fz_S_I<const BM: i32, const BN: i32>(x0: *T0, x1: *T1, x2: *T2,
//!     y0: *U0, y1: *U1, m: i32, n: i32, q: i32, s: i32, f: f32)
//! ```
//!
//! Every buffer is an `[m, n]` row-major matrix (`m * n` elements); the grid is
//! `(cdiv(m, BM), cdiv(n, BN), 1)`; program `(pm, pn)` owns the `[BM, BN]` tile
//! at rows `pm * BM ..`, columns `pn * BN ..` (masked at the ragged edges). `q`
//! is a loop count in `0..=`[`LOOP_MAX`], `s` any `i32` (used as divisor and
//! shift amount), `f` any float within [`F_INPUT_MAX`]. Inputs `x*` are read,
//! outputs `y*` written once each, by exactly one program per element: `y0`
//! elementwise, `y1` elementwise, per row (`y1[r, pn]`), per column
//! (`y1[pm, c]`) or per program (`y1[pm, pn]`), so no two programs race.
//!
//! What a kernel may contain: loads with masks and `other` values, integer
//! (`i32`, `i64`) and float (`f32`, `bf16`, `f16`) arithmetic `+ - * / %`,
//! bit operations and shifts (by constants and by run-time amounts),
//! comparisons, `&& || !` on masks, `where`, `maximum`/`minimum`, `fma`, `abs`,
//! casts between every pair of types, `exp exp2 log sqrt rsqrt sigmoid tanh`,
//! reductions (`sum max min` over either axis or the whole tile) with
//! broadcasting back (`[:, None]`, `[None, :]`), `broadcast_to`, run-time and
//! `static` loops, `if`/`else` on run-time conditions, program ids,
//! `num_programs`, `atomic_add` (integers), and `dot` (when every
//! configuration has `BM, BN >= 16`), float `%` of exact operands ([`FLOAT_REM`]),
//! and an input tile stored to `y0` and loaded back reversed within the
//! program's tile (each thread reading what others stored; `y0`'s own store
//! overwrites it at the end).
//!
//! # Tolerances (how the differential test compares)
//!
//! Each value the generator builds carries a class ([`Cls`]): a bound `m` on
//! its magnitude (floats), and a bound `e + r·|v|` on how far the GPU's value
//! may be from the interpreter's. Integers are always exact (bit for bit: the
//! language defines wrapping, division by zero and over-wide shifts,
//! docs/LANGUAGE.md). Float `+ - * /` (IEEE, one rounding), `sqrt` (`sqrt.rn`),
//! `max`/`min`, casts and `dot` of small integers are exact on both sides; the
//! rest is derived here, each constant next to its reason:
//! - an approximate function adds its documented error (ARCHITECTURE.md,
//!   "Math", measured on the H200) with a factor-2 margin ([`FN_ERR`]);
//! - a float `sum` of `L` terms, each within `err` and at most `m`, is within
//!   `L·err + L²·m·2^-23` (two summation orders of f32: each partial sum is
//!   rounded at most `L` times, each rounding at most `2^-24·L·m`, doubled);
//! - a rounding to the result type after inexact operands can flip one ulp:
//!   `r += ulp` ([`Dt::ulp`]: `2^-23` f32, `2^-10` f16, `2^-7` bf16);
//! - `a ± b` adds the operands' absolute errors, `a·b` gives
//!   `ea·mb + eb·ma + ea·eb`; a float division by a broadcast divisor (a
//!   scalar, a row or a column: the GPU multiplies by the reciprocal, within
//!   2 ulp) gets `r = 4·2^-23`.
//!
//! Values whose error bound would be unbounded (an inexact value times an
//! unbounded one) are not built; inexact values never reach an integer
//! (comparisons, float → int casts, loop-carried values), so every integer
//! output is exact. The bound is taken for the largest `BM`, `BN` of the
//! kernel's configurations and over the input ranges of [`F_INPUT_MAX`] and
//! [`F16_INPUT_MAX`], which the driver must respect.

pub mod drive;
mod funcs;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;

/// Magnitude bound of the f32/bf16 inputs and of the scalar `f` the drivers draw.
pub const F_INPUT_MAX: f64 = 1.0e6;
/// Magnitude bound of the f16 inputs (f16's largest finite value is 65504).
pub const F16_INPUT_MAX: f64 = 1.0e4;
/// The largest loop count `q` the drivers pass.
pub const LOOP_MAX: i32 = 4;

/// Documented approximation errors (ARCHITECTURE.md "Math", H200, ×2 margin):
/// exp relative 3.8e-6, exp2 relative 1.5e-7, log absolute 8.9e-6, rsqrt
/// relative 1.2e-7, sigmoid absolute 9.2e-8 / relative 1.8e-6 (≤ 1, so
/// absolute ≤ 1.8e-6), tanh absolute 7.6e-6.
/// `sin cos erf expm1 pow` are within 1.5 ulp of the f32 result, `log1p` within
/// 1.0 (LANGUAGE.md "Math functions"; the interpreter rounds the f64 value
/// once): `ext_ulp`, `log1p_ulp` in ulps, used with a factor-2 margin; a
/// subnormal result's ulp is absolute ([`SUBNORMAL_ABS`]).
pub const FN_ERR: [(&str, f64); 8] = [
    ("exp_rel", 8e-6),
    ("exp2_rel", 4e-7),
    ("log_abs", 2e-5),
    ("rsqrt_rel", 4e-7),
    ("sigmoid_abs", 4e-6),
    ("tanh_abs", 2e-5),
    ("ext_ulp", 1.5),
    ("log1p_ulp", 1.0),
];

/// The math functions the generator calls (`sqrt` alone where values must be exact).
pub const MATH_FNS: &[&str] = &[
    "exp", "exp2", "log", "sqrt", "rsqrt", "sigmoid", "tanh", "sin", "cos", "erf", "log1p",
    "expm1", "pow",
];

/// Two ulps of the smallest subnormal f32 (2^-148): the absolute part of a
/// bound stated in ulps of the result.
const SUBNORMAL_ABS: f64 = 2.8e-45;

fn fn_err(name: &str) -> f64 {
    FN_ERR.iter().find(|(n, _)| *n == name).unwrap().1
}

const ULP32: f64 = 1.0 / 8388608.0; // 2^-23

/// Whether kernels use float `%` (off until code generation had its own
/// exact `fmod`: it called libdevice's `__nv_fmodf`, which ptxas could not
/// resolve; regression case tests/integration-tests/differential/float_rem.tile).
pub const FLOAT_REM: bool = true;

/// Element types of the language the generator uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dt {
    I1,
    I32,
    I64,
    F16,
    Bf16,
    F32,
}

impl Dt {
    pub fn name(self) -> &'static str {
        match self {
            Dt::I1 => "i1",
            Dt::I32 => "i32",
            Dt::I64 => "i64",
            Dt::F16 => "f16",
            Dt::Bf16 => "bf16",
            Dt::F32 => "f32",
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, Dt::F16 | Dt::Bf16 | Dt::F32)
    }
    pub fn is_int(self) -> bool {
        matches!(self, Dt::I32 | Dt::I64)
    }
    /// One ulp relative to the value (the spacing at 1.0).
    pub fn ulp(self) -> f64 {
        match self {
            Dt::F16 => 1.0 / 1024.0,
            Dt::Bf16 => 1.0 / 128.0,
            _ => ULP32,
        }
    }
    fn bits(self) -> u32 {
        match self {
            Dt::I64 => 64,
            _ => 32,
        }
    }
    /// The largest finite magnitude (floats).
    fn max_finite(self) -> f64 {
        match self {
            Dt::F16 => 65504.0,
            _ => 3.0e38,
        }
    }
}

/// Value shapes: the program's `[BM, BN]` tile, one value per row `[BM, 1]`,
/// per column `[1, BN]`, or a scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sh {
    Full,
    Row,
    Col,
    Scalar,
}

/// How far apart the interpreter's and the GPU's value may be:
/// `|gpu - interp| <= e + r·|v|`, with `|v| <= m` (floats; `m` infinite when unbounded).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cls {
    pub m: f64,
    pub e: f64,
    pub r: f64,
}

impl Cls {
    const EXACT_UNBOUNDED: Cls = Cls {
        m: f64::INFINITY,
        e: 0.0,
        r: 0.0,
    };
    fn exact(m: f64) -> Cls {
        Cls { m, e: 0.0, r: 0.0 }
    }
    pub fn is_exact(&self) -> bool {
        self.e == 0.0 && self.r == 0.0
    }
    /// The whole error as an absolute bound (infinite when unbounded).
    fn abs_err(&self) -> f64 {
        if self.r == 0.0 {
            self.e
        } else {
            self.e + self.r * self.m
        }
    }
}

/// What the differential test compares for one output parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSpec {
    pub param: String,
    /// `None`: equal values (integers bit for bit; floats equal as numbers, NaN
    /// matching NaN); `Some((abs, rel))`: `|got - want| <= abs + rel·max(|got|, |want|)`.
    pub tol: Option<(f64, f64)>,
}

/// One generated kernel.
#[derive(Clone, Debug)]
pub struct Generated {
    pub name: String,
    pub source: String,
    pub outputs: Vec<OutputSpec>,
    /// `(BM, BN)` of each configuration of the tune block.
    pub configs: Vec<(i64, i64)>,
}

/// The comment line that carries the outputs' tolerances in the source
/// (`// outputs: y0 exact, y1 abs 1.5e-5 rel 7.9e-3`), so a test holding only
/// the text (a regression case, a pack's kernel regenerated) can compare.
pub fn outputs_line(outputs: &[OutputSpec]) -> String {
    let parts: Vec<String> = outputs
        .iter()
        .map(|o| match o.tol {
            None => format!("{} exact", o.param),
            Some((a, r)) => format!("{} abs {a:e} rel {r:e}", o.param),
        })
        .collect();
    format!("// outputs: {}", parts.join(", "))
}

/// The output specifications of [`outputs_line`] in `source`, if it has one.
pub fn parse_outputs(source: &str) -> Option<Vec<OutputSpec>> {
    let line = source
        .lines()
        .find_map(|l| l.trim().strip_prefix("// outputs:"))?;
    line.split(',')
        .map(|part| {
            let w: Vec<&str> = part.split_whitespace().collect();
            match w.as_slice() {
                [p, "exact"] => Some(OutputSpec {
                    param: p.to_string(),
                    tol: None,
                }),
                [p, "abs", a, "rel", r] => Some(OutputSpec {
                    param: p.to_string(),
                    tol: Some((a.parse().ok()?, r.parse().ok()?)),
                }),
                _ => None,
            }
        })
        .collect()
}

/// `fz_<seed>_<index>`, the name [`generate`] gives.
pub fn kernel_name(seed: u64, index: u64) -> String {
    format!("fz_{seed}_{index}")
}

/// The `(seed, index)` of a generated kernel's name.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("fz_")?;
    let (s, i) = rest.split_once('_')?;
    Some((s.parse().ok()?, i.parse().ok()?))
}

#[derive(Clone, Debug)]
struct Val {
    text: String,
    dt: Dt,
    sh: Sh,
    cls: Cls,
    /// Known at compile time (a literal or constants only).
    konst: bool,
    /// One value for the whole tile (a scalar, or a broadcast of one): a
    /// float division by it (or by a row or column broadcast to a tile) is a
    /// multiplication by the reciprocal on the GPU.
    splat: bool,
    /// Made by a broadcast of fewer values (`fit`'s `broadcast_to`), which
    /// the GPU divides by as by a splat.
    bcast: bool,
}

struct Gen {
    rng: StdRng,
    /// Variables in scope: (name, value description).
    env: Vec<Val>,
    inputs: [Dt; 3],
    /// y0's element type (a prologue may pass an input tile through y0).
    out0: Dt,
    bm_max: i64,
    bn_max: i64,
    dot_ok: bool,
    fresh: usize,
    body: String,
    indent: usize,
}

/// The kernel `index` of the stream `seed`.
pub fn generate(seed: u64, index: u64) -> Generated {
    let mix = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = StdRng::seed_from_u64(mix);
    let dts = [Dt::I32, Dt::I64, Dt::F16, Dt::Bf16, Dt::F32];
    let pick_dt = |rng: &mut StdRng| dts[rng.random_range(0..dts.len())];
    let inputs = [pick_dt(&mut rng), pick_dt(&mut rng), pick_dt(&mut rng)];
    let outs = [pick_dt(&mut rng), pick_dt(&mut rng)];
    // Tile sizes: powers of two from 1; at most 1024 elements (PTX size: 5000
    // kernels make about 140 MB of packs, 19 MB gzipped).
    let p2 = |rng: &mut StdRng, max_log: u32| 1i64 << rng.random_range(0..=max_log);
    let mut configs = Vec::new();
    let big = rng.random_range(0..4) == 0; // tiles for `dot`
    let n_configs = rng.random_range(1..=2);
    while configs.len() < n_configs {
        let (bm, bn) = if big {
            (16 << rng.random_range(0..2), 16 << rng.random_range(0..3))
        } else {
            (p2(&mut rng, 5), p2(&mut rng, 6))
        };
        // A second configuration differs in one tile dimension only, so the
        // tune block's product has two points (pack size: about 3.5 KB of
        // PTX + TIR, gzipped, per configuration).
        let differs_in_one = configs
            .first()
            .is_none_or(|&(m0, n0): &(i64, i64)| (m0 == bm) != (n0 == bn));
        if bm * bn <= 1024 && differs_in_one {
            configs.push((bm, bn));
        }
    }
    let warps = [1, 2, 4, 8][rng.random_range(0..4)];
    let bm_max = configs.iter().map(|c| c.0).max().unwrap();
    let bn_max = configs.iter().map(|c| c.1).max().unwrap();
    let dot_ok = configs.iter().all(|&(m, n)| m >= 16 && n >= 16);
    let name = kernel_name(seed, index);
    let mut g = Gen {
        rng,
        env: Vec::new(),
        inputs,
        out0: outs[0],
        bm_max,
        bn_max,
        dot_ok,
        fresh: 0,
        body: String::new(),
        indent: 1,
    };
    g.prologue();
    let n_stmts = g.rng.random_range(1..=5);
    for _ in 0..n_stmts {
        g.statement(2);
    }
    // y0: elementwise.
    let v0 = g.expr(outs[0], Sh::Full, 4, false);
    let v0 = g.fit(v0, outs[0], Sh::Full);
    g.line(&format!("store(y0 + off, {}, mask);", v0.text));
    // y1: one of the four layouts.
    let sh1 = [Sh::Full, Sh::Row, Sh::Col, Sh::Scalar][g.rng.random_range(0..4)];
    let v1 = g.expr(outs[1], sh1, 4, false);
    let v1 = g.fit(v1, outs[1], sh1);
    let st = match sh1 {
        Sh::Full => format!("store(y1 + off, {}, mask);", v1.text),
        Sh::Row => format!("store(y1 + r * n + pn, {}, r < m);", v1.text),
        // i32 columns: every row of programs adds into row 0 (integer
        // atomics commute, so the result is the same in any order).
        Sh::Col if outs[1] == Dt::I32 && g.rng.random_range(0..2) == 0 => {
            format!("atomic_add(y1 + c, {}, c < n);", v1.text)
        }
        Sh::Col => format!("store(y1 + pm * n + c, {}, c < n);", v1.text),
        Sh::Scalar => format!("store(y1 + pm * n + pn, {});", v1.text),
    };
    g.line(&st);
    let outputs: Vec<OutputSpec> = [(v0, outs[0]), (v1, outs[1])]
        .iter()
        .enumerate()
        .map(|(i, (v, dt))| OutputSpec {
            param: format!("y{i}"),
            tol: if v.cls.is_exact() {
                None
            } else {
                // Rounding to the stored type once more cannot be told apart
                // from the value's own rounding: add one ulp of the output type.
                Some((v.cls.e, v.cls.r + dt.ulp()))
            },
        })
        .collect();
    let list = |f: fn(&(i64, i64)) -> i64| {
        let mut v: Vec<i64> = configs.iter().map(f).collect();
        v.sort();
        v.dedup();
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The tune block is a product: keep exactly the generated pairs' product.
    let bms = list(|c| c.0);
    let bns = list(|c| c.1);
    let mut configs_all = Vec::new();
    for bm in bms.split(", ") {
        for bn in bns.split(", ") {
            configs_all.push((bm.parse().unwrap(), bn.parse().unwrap()));
        }
    }
    let source = format!(
        "// Generated by tile_testkit::progen (seed {seed}, index {index}).\n{}\n\
         kernel {name}<const BM: i32, const BN: i32>(x0: *{}, x1: *{}, x2: *{}, y0: *{}, y1: *{}, m: i32, n: i32, q: i32, s: i32, f: f32) {{\n{}}}\n\n\
         tune {name} {{ key: [], BM: [{bms}], BN: [{bns}], warps: [{warps}] }}\n",
        outputs_line(&outputs),
        inputs[0].name(),
        inputs[1].name(),
        inputs[2].name(),
        outs[0].name(),
        outs[1].name(),
        g.body
    );
    Generated {
        name,
        source,
        outputs,
        configs: configs_all,
    }
}

/// The shape of `a op b`.
fn bcast(a: Sh, b: Sh) -> Sh {
    match (a, b) {
        (x, y) if x == y => x,
        (Sh::Scalar, x) | (x, Sh::Scalar) => x,
        _ => Sh::Full,
    }
}

fn input_bound(dt: Dt) -> Cls {
    match dt {
        Dt::F16 => Cls::exact(F16_INPUT_MAX),
        Dt::F32 | Dt::Bf16 => Cls::exact(F_INPUT_MAX),
        _ => Cls::EXACT_UNBOUNDED,
    }
}

/// Result class of an arithmetic op on floats of type `dt`; `None` when unbounded.
fn combine(op: &str, a: Cls, b: Cls, dt: Dt) -> Option<Cls> {
    let m = match op {
        "+" | "-" => a.m + b.m,
        "*" => a.m * b.m,
        _ => f64::INFINITY,
    };
    if a.is_exact() && b.is_exact() {
        return Some(Cls::exact(m));
    }
    let (ea, eb) = (a.abs_err(), b.abs_err());
    let e = match op {
        "+" | "-" => ea + eb,
        "*" => ea * b.m + eb * a.m + ea * eb,
        "max" => ea.max(eb),
        _ => f64::INFINITY,
    };
    let m = if op == "max" { a.m.max(b.m) } else { m };
    e.is_finite().then_some(Cls { m, e, r: dt.ulp() })
}

impl Gen {
    fn line(&mut self, s: &str) {
        let _ = writeln!(self.body, "{}{s}", "    ".repeat(self.indent));
    }

    fn name(&mut self, p: &str) -> String {
        self.fresh += 1;
        format!("{p}{}", self.fresh)
    }

    #[allow(clippy::too_many_arguments)]
    fn bind(&mut self, name: &str, text: &str, dt: Dt, sh: Sh, cls: Cls, splat: bool, bcast: bool) {
        self.line(&format!("let {name} = {text};"));
        self.env.push(Val {
            text: name.into(),
            dt,
            sh,
            cls,
            konst: false,
            splat,
            bcast,
        });
    }

    fn prologue(&mut self) {
        self.line("let pm = program_id(0);");
        self.line("let pn = program_id(1);");
        self.line("let r = pm * BM + arange(0, BM)[:, None];");
        self.line("let c = pn * BN + arange(0, BN)[None, :];");
        self.line("let mask = (r < m) & (c < n);");
        self.line("let off = r * n + c;");
        self.line("let np = num_programs(1);");
        for (v, sh) in [
            ("pm", Sh::Scalar),
            ("pn", Sh::Scalar),
            ("m", Sh::Scalar),
            ("n", Sh::Scalar),
            ("s", Sh::Scalar),
            ("np", Sh::Scalar),
            ("r", Sh::Row),
            ("c", Sh::Col),
        ] {
            self.env.push(Val {
                text: v.into(),
                dt: Dt::I32,
                sh,
                cls: Cls::EXACT_UNBOUNDED,
                konst: false,
                splat: sh == Sh::Scalar,
                bcast: false,
            });
        }
        self.env.push(Val {
            text: "f".into(),
            dt: Dt::F32,
            sh: Sh::Scalar,
            cls: Cls::exact(F_INPUT_MAX),
            konst: false,
            splat: true,
            bcast: false,
        });
        self.env.push(Val {
            text: "mask".into(),
            dt: Dt::I1,
            sh: Sh::Full,
            cls: Cls::EXACT_UNBOUNDED,
            konst: false,
            splat: false,
            bcast: false,
        });
        // One full tile of each input; sometimes a row or a column too.
        for i in 0..3 {
            let dt = self.inputs[i];
            let other = self.literal_text(dt);
            let cls = input_bound(dt);
            let t = format!("load(x{i} + off, mask, {other})");
            self.bind(&format!("a{i}"), &t, dt, Sh::Full, cls, false, false);
            match self.rng.random_range(0..4) {
                0 => {
                    let t = format!("load(x{i} + r * n, r < m, {other})");
                    self.bind(&format!("ar{i}"), &t, dt, Sh::Row, cls, false, false);
                }
                1 => {
                    let t = format!("load(x{i} + c, c < n, {other})");
                    self.bind(&format!("ac{i}"), &t, dt, Sh::Col, cls, false, false);
                }
                _ => {}
            }
        }
        // Sometimes an input tile of y0's type goes through y0 and comes back
        // reversed within the program's block, so each thread loads elements
        // other threads stored (the code generator must order them:
        // lower/global_order.rs); y0's own store overwrites it at the end.
        let through = (0..3).find(|&i| self.inputs[i] == self.out0);
        if let (Some(i), 0) = (through, self.rng.random_range(0..2)) {
            let dt = self.out0;
            let other = self.literal_text(dt);
            self.line(&format!("store(y0 + off, a{i}, mask);"));
            self.line("let rr = pm * BM + (BM - 1 - arange(0, BM))[:, None];");
            self.line("let rc = pn * BN + (BN - 1 - arange(0, BN))[None, :];");
            let t = format!("load(y0 + rr * n + rc, (rr < m) & (rc < n), {other})");
            self.bind("back", &t, dt, Sh::Full, input_bound(dt), false, false);
        }
    }

    /// A small literal of `dt` (an `other` value or an operand); magnitudes ≤ 8.
    fn literal_text(&mut self, dt: Dt) -> String {
        if dt.is_float() {
            ["0.0", "1.0", "-1.0", "0.5", "2.5", "-3.0", "8.0", "0.125"]
                [self.rng.random_range(0..8)]
            .into()
        } else {
            ["0", "1", "-1", "2", "3", "7", "-8", "5"][self.rng.random_range(0..8)].into()
        }
    }

    fn literal(&mut self, dt: Dt) -> Val {
        let t = self.literal_text(dt);
        let dt = if dt == Dt::I1 { Dt::I32 } else { dt };
        Val {
            text: format!("({t} as {})", dt.name()),
            dt,
            sh: Sh::Scalar,
            cls: Cls::exact(8.0),
            konst: true,
            splat: true,
            bcast: false,
        }
    }

    /// `v` converted to `dt` and broadcast to `sh` (which `v`'s shape must fit into).
    fn fit(&mut self, v: Val, dt: Dt, sh: Sh) -> Val {
        let v = self.cast(v, dt);
        if v.sh == sh {
            return v;
        }
        let shape = match sh {
            Sh::Full => "[BM, BN]",
            Sh::Row => "[BM, 1]",
            Sh::Col => "[1, BN]",
            Sh::Scalar => unreachable!("nothing is narrowed to a scalar"),
        };
        let text = if v.sh == Sh::Scalar {
            format!("full({shape}, {}, {})", v.text, dt.name())
        } else {
            format!("broadcast_to({}, {shape})", v.text)
        };
        Val {
            text,
            sh,
            bcast: v.sh != Sh::Scalar,
            ..v
        }
    }

    fn cast(&mut self, v: Val, dt: Dt) -> Val {
        if v.dt == dt {
            return v;
        }
        let cls = if dt.is_float() {
            let m = if v.dt.is_float() {
                v.cls.m
            } else if v.dt == Dt::I1 {
                1.0
            } else {
                2f64.powi(v.dt.bits() as i32 - 1)
            };
            if v.cls.is_exact() {
                Cls::exact(m)
            } else {
                Cls {
                    m,
                    e: v.cls.e,
                    r: v.cls.r + dt.ulp(),
                }
            }
        } else {
            Cls::EXACT_UNBOUNDED
        };
        // f16 overflows near 65504: an inexact value must stay well inside.
        let ok = v.cls.is_exact() || (dt.is_float() && cls.m < dt.max_finite() / 2.0);
        if !ok || (!dt.is_float() && !v.cls.is_exact()) {
            // Never reached by construction (callers ask for exact operands
            // where integers come out); a safe leaf instead.
            return self.leaf(dt, v.sh, true);
        }
        Val {
            text: format!("({} as {})", v.text, dt.name()),
            dt,
            sh: v.sh,
            cls,
            konst: v.konst,
            splat: v.splat,
            bcast: false,
        }
    }

    /// A leaf: a variable, an index, a parameter or a literal, as `dt` and `sh`.
    fn leaf(&mut self, dt: Dt, sh: Sh, exact: bool) -> Val {
        let fits = |v: &Val| {
            let shape_ok = v.sh == sh || v.sh == Sh::Scalar || (sh == Sh::Full);
            let cls_ok = !exact || v.cls.is_exact();
            let cast_ok = v.cls.is_exact() || (dt.is_float() && v.dt.is_float());
            shape_ok && cls_ok && cast_ok && (dt != Dt::I1 || v.cls.is_exact())
        };
        let mut cands: Vec<Val> = self.env.iter().filter(|v| fits(v)).cloned().collect();
        // Mostly values of the shape asked for (the loaded tiles), else anything that broadcasts.
        let same: Vec<Val> = cands.iter().filter(|v| v.sh == sh).cloned().collect();
        if !same.is_empty() && self.rng.random_range(0..4) != 0 {
            cands = same;
        }
        if cands.is_empty() || (sh == Sh::Scalar && self.rng.random_range(0..4) == 0) {
            let l = self.literal(dt);
            return if dt == Dt::I1 {
                Val {
                    text: format!("({} > 0)", l.text),
                    dt: Dt::I1,
                    ..l
                }
            } else {
                self.fit(l, dt, sh)
            };
        }
        let v = cands[self.rng.random_range(0..cands.len())].clone();
        if dt == Dt::I1 && v.dt != Dt::I1 {
            let z = if v.dt.is_float() { "0.0" } else { "0" };
            let t = Val {
                text: format!("({} > {z})", v.text),
                dt: Dt::I1,
                cls: Cls::EXACT_UNBOUNDED,
                ..v
            };
            return self.fit(t, Dt::I1, sh);
        }
        self.fit(v, dt, sh)
    }

    /// Operand shapes whose broadcast is `sh`.
    fn split(&mut self, sh: Sh) -> (Sh, Sh) {
        let any = [Sh::Full, Sh::Row, Sh::Col, Sh::Scalar];
        let pick = |rng: &mut StdRng, from: &[Sh]| from[rng.random_range(0..from.len())];
        match sh {
            Sh::Full => match self.rng.random_range(0..4) {
                0 => (Sh::Row, Sh::Col),
                1 => (Sh::Col, Sh::Row),
                2 => (Sh::Full, pick(&mut self.rng, &any)),
                _ => (pick(&mut self.rng, &any), Sh::Full),
            },
            Sh::Row | Sh::Col => {
                if self.rng.random_range(0..2) == 0 {
                    (sh, pick(&mut self.rng, &[sh, Sh::Scalar]))
                } else {
                    (Sh::Scalar, sh)
                }
            }
            Sh::Scalar => (Sh::Scalar, Sh::Scalar),
        }
    }

    /// A value of type `dt` and shape `sh`; `exact`: computed identically on
    /// the interpreter and the GPU (no approximate function, no float sum).
    fn expr(&mut self, dt: Dt, sh: Sh, depth: u32, exact: bool) -> Val {
        if depth == 0 || self.rng.random_range(0..5) == 0 {
            return self.leaf(dt, sh, exact);
        }
        let d = depth - 1;
        if dt == Dt::I1 {
            return self.predicate(sh, d);
        }
        let v = match self.rng.random_range(0..20) {
            0..=6 => self.arith(dt, sh, d, exact),
            7 => {
                let a = self.expr(dt, sh, d, exact);
                let op = if self.rng.random_range(0..2) == 0 {
                    "-"
                } else {
                    "abs"
                };
                let text = if op == "-" {
                    format!("(-{})", a.text)
                } else {
                    format!("abs({})", a.text)
                };
                Some(Val { text, ..a })
            }
            8 | 9 => {
                let c = self.expr(Dt::I1, sh, d, true);
                let (sa, sb) = self.split(sh);
                let a = self.expr(dt, sa, d, exact);
                let b = self.expr(dt, sb, d, exact);
                self.binary_cls("max", &a, &b, dt).map(|cls| Val {
                    text: format!("where({}, {}, {})", c.text, a.text, b.text),
                    dt,
                    sh: bcast(c.sh, bcast(a.sh, b.sh)),
                    cls,
                    konst: c.konst && a.konst && b.konst,
                    splat: c.splat && a.splat && b.splat,
                    bcast: false,
                })
            }
            10 if dt.is_float() && self.rng.random_range(0..2) == 0 => {
                // fma(a, b, c): one rounding on both engines (an f32 fma,
                // then the type's rounding), bounded as a product and an add.
                let (sa, sb) = self.split(sh);
                let a = self.expr(dt, sa, d, exact);
                let b = self.expr(dt, sb, d, exact);
                let c = self.expr(dt, sh, d, exact);
                combine("*", a.cls, b.cls, dt)
                    .and_then(|p| combine("+", p, c.cls, dt))
                    .map(|cls| Val {
                        text: format!("fma({}, {}, {})", a.text, b.text, c.text),
                        dt,
                        sh: bcast(c.sh, bcast(a.sh, b.sh)),
                        cls,
                        // Never folded at compile time.
                        konst: false,
                        splat: a.splat && b.splat && c.splat,
                        bcast: false,
                    })
            }
            10 | 11 => {
                let (sa, sb) = self.split(sh);
                let a = self.expr(dt, sa, d, exact);
                let b = self.expr(dt, sb, d, exact);
                let f = ["maximum", "minimum"][self.rng.random_range(0..2)];
                self.binary_cls("max", &a, &b, dt).map(|cls| Val {
                    text: format!("{f}({}, {})", a.text, b.text),
                    dt,
                    sh: bcast(a.sh, b.sh),
                    cls,
                    konst: a.konst && b.konst,
                    splat: a.splat && b.splat,
                    bcast: false,
                })
            }
            12 | 13 => {
                // A cast from another type.
                let dts = [Dt::I32, Dt::I64, Dt::F16, Dt::Bf16, Dt::F32];
                let from = dts[self.rng.random_range(0..dts.len())];
                let from_exact = exact || !dt.is_float() || !from.is_float();
                let a = self.expr(from, sh, d, from_exact);
                Some(self.cast(a, dt))
            }
            14 | 15 if dt.is_float() => self.math(dt, sh, d, exact),
            16 | 17 if sh != Sh::Full => self.reduce(dt, sh, d, exact),
            18 if sh == Sh::Full && self.dot_ok && dt.is_float() => Some(self.dot(dt)),
            _ => self.arith(dt, sh, d, exact),
        };
        match v {
            Some(v) if v.dt == dt && (!exact || v.cls.is_exact()) && bcast(v.sh, sh) == sh => {
                self.fit(v, dt, sh)
            }
            _ => self.leaf(dt, sh, exact),
        }
    }

    fn binary_cls(&self, op: &str, a: &Val, b: &Val, dt: Dt) -> Option<Cls> {
        if dt.is_float() {
            combine(op, a.cls, b.cls, dt)
        } else {
            Some(Cls::EXACT_UNBOUNDED)
        }
    }

    /// `a op b` with both operands of `dt`.
    fn arith(&mut self, dt: Dt, sh: Sh, d: u32, exact: bool) -> Option<Val> {
        let ops: &[&str] = if dt.is_float() && FLOAT_REM {
            &["+", "-", "*", "*", "/", "%", "+"]
        } else if dt.is_float() {
            &["+", "-", "*", "*", "/", "+"]
        } else {
            &["+", "-", "*", "/", "%", "&", "|", "^", "<<", ">>"]
        };
        let op = ops[self.rng.random_range(0..ops.len())];
        let (sa, sb) = self.split(sh);
        let a = self.expr(dt, sa, d, exact);
        let mut b = if (op == "<<" || op == ">>") && self.rng.random_range(0..2) == 0 {
            // A constant amount inside the width (a constant outside is E0038).
            let k = self.rng.random_range(0..dt.bits());
            Val {
                text: format!("{k}"),
                dt,
                sh: Sh::Scalar,
                cls: Cls::EXACT_UNBOUNDED,
                konst: true,
                splat: true,
                bcast: false,
            }
        } else if (op == "/" || op == "%") && !dt.is_float() && self.rng.random_range(0..3) == 0 {
            // A constant divisor (never 0: that is E0039).
            let k = [1, 2, 3, 7, -1, -4][self.rng.random_range(0..6)];
            Val {
                text: format!("({k})"),
                dt,
                sh: Sh::Scalar,
                cls: Cls::EXACT_UNBOUNDED,
                konst: true,
                splat: true,
                bcast: false,
            }
        } else {
            self.expr(dt, sb, d, exact)
        };
        let guarded = matches!(op, "/" | "%" | "<<" | ">>") && !dt.is_float();
        if (a.konst && b.konst) || (guarded && b.konst && !safe_const(&b.text)) {
            // Two constants fold at compile time, where overflow and zero
            // divisors are errors; a constant divisor 0 or shift amount out of
            // range is one too (E0039, E0038): make it a run-time value.
            b = self.leaf_runtime(dt, b.sh);
        }
        let cls = if dt.is_float() {
            match op {
                "/" | "%" => {
                    if !(a.cls.is_exact() && b.cls.is_exact()) {
                        return None;
                    }
                    let out = bcast(a.sh, b.sh);
                    if op == "/" && (b.splat || b.bcast || b.sh != out) && out != Sh::Scalar {
                        // x / a broadcast divisor (a splat, a row or a
                        // column): multiplied by the reciprocal (≤ 2 ulp).
                        if exact {
                            return None;
                        }
                        Cls {
                            m: f64::INFINITY,
                            e: 0.0,
                            r: 4.0 * ULP32 + dt.ulp(),
                        }
                    } else {
                        Cls::exact(if op == "%" { a.cls.m } else { f64::INFINITY })
                    }
                }
                _ => combine(op, a.cls, b.cls, dt)?,
            }
        } else {
            Cls::EXACT_UNBOUNDED
        };
        let out_sh = bcast(a.sh, b.sh);
        let v = Val {
            text: format!("({} {op} {})", a.text, b.text),
            dt,
            sh: out_sh,
            cls,
            konst: false,
            splat: a.splat && b.splat,
            bcast: false,
        };
        Some(self.fit(v, dt, sh))
    }

    /// A run-time (non-constant) scalar or tile of `dt`.
    fn leaf_runtime(&mut self, dt: Dt, sh: Sh) -> Val {
        let p = ["m", "n", "pm", "pn", "s"][self.rng.random_range(0..5)];
        let v = Val {
            text: p.into(),
            dt: Dt::I32,
            sh: Sh::Scalar,
            cls: Cls::EXACT_UNBOUNDED,
            konst: false,
            splat: true,
            bcast: false,
        };
        let sh = if sh == Sh::Scalar { Sh::Scalar } else { sh };
        self.fit(v, dt, sh)
    }

    /// An `i1` value: a comparison of exact values, or a combination of masks.
    fn predicate(&mut self, sh: Sh, d: u32) -> Val {
        match self.rng.random_range(0..5) {
            0 if d > 0 => {
                let (sa, sb) = self.split(sh);
                let a = self.predicate(sa, d - 1);
                let b = self.predicate(sb, d - 1);
                let op = ["&", "|", "^", "&&", "||"][self.rng.random_range(0..5)];
                // `&& ||` take scalar `i1` only.
                let op = if (op == "&&" || op == "||") && sh != Sh::Scalar {
                    "&"
                } else {
                    op
                };
                let v = Val {
                    text: format!("({} {op} {})", a.text, b.text),
                    dt: Dt::I1,
                    sh: bcast(a.sh, b.sh),
                    cls: Cls::EXACT_UNBOUNDED,
                    konst: false,
                    splat: a.splat && b.splat,
                    bcast: false,
                };
                self.fit(v, Dt::I1, sh)
            }
            1 if d > 0 => {
                let a = self.predicate(sh, d - 1);
                Val {
                    text: format!("(!{})", a.text),
                    ..a
                }
            }
            _ => {
                let dts = [Dt::I32, Dt::I64, Dt::F16, Dt::Bf16, Dt::F32];
                let dt = dts[self.rng.random_range(0..dts.len())];
                let (sa, sb) = self.split(sh);
                let a = self.expr(dt, sa, d, true);
                let mut b = self.expr(dt, sb, d, true);
                if a.konst && b.konst {
                    b = self.leaf_runtime(dt, sb);
                }
                let op = ["<", "<=", ">", ">=", "==", "!="][self.rng.random_range(0..6)];
                let v = Val {
                    text: format!("({} {op} {})", a.text, b.text),
                    dt: Dt::I1,
                    sh: bcast(a.sh, b.sh),
                    cls: Cls::EXACT_UNBOUNDED,
                    konst: false,
                    splat: a.splat && b.splat,
                    bcast: false,
                };
                self.fit(v, Dt::I1, sh)
            }
        }
    }

    /// One statement: a binding, a loop, or an `if`.
    fn statement(&mut self, depth: u32) {
        let dts = [Dt::I32, Dt::I64, Dt::F16, Dt::Bf16, Dt::F32];
        let dt = dts[self.rng.random_range(0..dts.len())];
        let shs = [Sh::Full, Sh::Full, Sh::Row, Sh::Col, Sh::Scalar];
        let sh = shs[self.rng.random_range(0..shs.len())];
        match self.rng.random_range(0..8) {
            0..=3 => {
                let v = self.expr(dt, sh, 3, false);
                let name = self.name("v");
                self.bind(&name, &v.text.clone(), v.dt, v.sh, v.cls, v.splat, v.bcast);
                if let Some(b) = self.env.last_mut() {
                    b.konst = v.konst;
                }
            }
            4 | 5 if depth > 0 => {
                // A loop-carried accumulator (exact: its error would grow with the trips).
                let acc = self.name("acc");
                let init = self.expr(dt, sh, 2, true);
                let init = self.fit(init, dt, sh);
                self.line(&format!("let mut {acc} = {};", init.text));
                let j = self.name("j");
                let header = match self.rng.random_range(0..3) {
                    0 => format!("for {j} in 0..q {{"),
                    1 => format!("for {j} in 0..q * 3 step 2 {{"),
                    _ => format!("for {j} in static 0..{} {{", self.rng.random_range(1..4)),
                };
                self.line(&header);
                self.indent += 1;
                let depth_env = self.env.len();
                self.env.push(Val {
                    text: j.clone(),
                    dt: Dt::I32,
                    sh: Sh::Scalar,
                    cls: Cls::EXACT_UNBOUNDED,
                    konst: header.contains("static"),
                    splat: true,
                    bcast: false,
                });
                if self.rng.random_range(0..2) == 0 {
                    // A load shifted by the induction variable, masked to stay inside the row.
                    let i = self.rng.random_range(0..3);
                    let idt = self.inputs[i];
                    let other = self.literal_text(idt);
                    let t = format!("load(x{i} + off + {j}, (r < m) & (c + {j} < n), {other})");
                    let name = self.name("w");
                    self.bind(&name, &t, idt, Sh::Full, input_bound(idt), false, false);
                }
                let e = self.expr(dt, sh, 2, true);
                let op = if dt.is_float() {
                    ["+", "maximum", "minimum"][self.rng.random_range(0..3)]
                } else {
                    ["+", "^", "*", "maximum"][self.rng.random_range(0..4)]
                };
                let e = self.fit(e, dt, sh);
                let upd = if op.len() > 1 {
                    format!("{acc} = {op}({acc}, {});", e.text)
                } else {
                    format!("{acc} = {acc} {op} {};", e.text)
                };
                self.line(&upd);
                self.env.truncate(depth_env);
                self.indent -= 1;
                self.line("}");
                self.env.push(Val {
                    text: acc,
                    dt,
                    sh,
                    cls: if dt.is_float() {
                        Cls::exact(f64::INFINITY)
                    } else {
                        Cls::EXACT_UNBOUNDED
                    },
                    konst: false,
                    splat: true,
                    bcast: false,
                });
            }
            6 if depth > 0 => {
                let var = self.name("t");
                let init = self.expr(dt, sh, 2, false);
                let init = self.fit(init, dt, sh);
                let cond = self.expr(Dt::I1, Sh::Scalar, 2, true);
                self.line(&format!("let mut {var} = {};", init.text));
                self.line(&format!("if {} {{", cond.text));
                self.indent += 1;
                let e1 = self.expr(dt, sh, 2, false);
                let e1 = self.fit(e1, dt, sh);
                self.line(&format!("{var} = {};", e1.text));
                self.indent -= 1;
                self.line("} else {");
                self.indent += 1;
                let e2 = self.expr(dt, sh, 2, false);
                let e2 = self.fit(e2, dt, sh);
                self.line(&format!("{var} = {};", e2.text));
                self.indent -= 1;
                self.line("}");
                let mut cls = init.cls;
                for c in [e1.cls, e2.cls] {
                    cls = Cls {
                        m: cls.m.max(c.m),
                        e: cls.e.max(c.e),
                        r: cls.r.max(c.r),
                    };
                }
                self.env.push(Val {
                    text: var,
                    dt,
                    sh,
                    cls,
                    konst: false,
                    splat: true,
                    bcast: false,
                });
            }
            _ => {
                let v = self.expr(dt, sh, 3, false);
                let name = self.name("v");
                self.bind(&name, &v.text.clone(), v.dt, v.sh, v.cls, v.splat, v.bcast);
                if let Some(b) = self.env.last_mut() {
                    b.konst = v.konst;
                }
            }
        }
    }
}

/// A constant divisor or shift amount the checker accepts and the generator
/// wrote itself (`(3)`, `(-1)`, `5`: never 0, shifts below 32).
fn safe_const(text: &str) -> bool {
    let t = text.trim_start_matches('(').trim_end_matches(')');
    t.parse::<i64>()
        .is_ok_and(|k| k != 0 && (-8..32).contains(&k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_a_pure_function_of_seed_and_index() {
        for i in 0..50 {
            let a = generate(7, i);
            let b = generate(7, i);
            assert_eq!(a.source, b.source);
            assert_eq!(a.outputs, b.outputs);
            assert_eq!(parse_name(&a.name), Some((7, i)));
        }
        assert_ne!(generate(7, 0).source, generate(8, 0).source);
        // The constructs whose code generation the differential test is for
        // all turn up in a few hundred programs.
        let sources: Vec<String> = (0..300).map(|i| generate(11, i).source).collect();
        for construct in ["fma(", "where(", "dot(", "sum(", "broadcast_to(", "exp2("] {
            let n = sources.iter().filter(|s| s.contains(construct)).count();
            assert!(n >= 3, "`{construct}` in {n} of 300 programs");
        }
        for i in 0..50 {
            let g = generate(3, i);
            assert_eq!(
                parse_outputs(&g.source).as_ref(),
                Some(&g.outputs),
                "{}",
                g.source
            );
        }
    }
}
