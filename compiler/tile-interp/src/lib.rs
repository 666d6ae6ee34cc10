//! CPU interpreter of Tile IR: the semantic reference that GPU kernels are
//! tested against, the CPU backend (`Device::cpu()` in the runtime wraps it),
//! and a debugging mode (out-of-bounds reports with source locations, traces).
//!
//! [`run`] executes a [`tir::Kernel`] over a launch grid: one *program
//! instance* per grid point, in parallel (rayon), each running the kernel body
//! once on whole tiles. Tiles are flat row-major vectors of their element type
//! and every op is one tight loop over a whole tile.
//!
//! # Semantics (beyond the doc comments of [`tir::Op`])
//!
//! - **Floats.** f32 ops compute in f32. bf16/f16 tiles hold exactly
//!   representable values; every op producing bf16/f16 computes in f32 and
//!   rounds the result once to nearest even (as the GPU does). `max`/`min` are
//!   IEEE maxNum/minNum (a NaN operand yields the other). Transcendentals use
//!   Rust's f32 functions: `exp`, `exp2`, `ln`, `sqrt`, `rsqrt = 1/sqrt(x)`,
//!   `tanh`, `sigmoid = 1/(1+exp(-x))`; `sin cos erf log1p expm1 pow`
//!   compute in f64 and round once to f32 ([`math`]; `pow` has C's `powf`
//!   special values).
//! - **Integers** wrap (two's complement). Division truncates toward zero and
//!   the remainder has the dividend's sign. A zero divisor is no error: as on
//!   RISC-V, `x / 0 == -1` and `x % 0 == x` (masked-off lanes of a tile
//!   routinely divide by the zero a masked load returned); `MIN / -1` wraps to
//!   `MIN` and `MIN % -1 == 0`.
//!   Shift amounts are read as unsigned; an amount ≥ the bit width gives 0
//!   (`shl`) or the sign fill (`shr`), like PTX.
//! - **Casts** follow [`tir::Op::Cast`]; int → float rounds once to nearest
//!   even (bf16/f16 through a round-to-odd f64 and f32, i64 included).
//! - **Reductions.** `sum` of floats accumulates in f32 (bf16/f16 inputs too,
//!   rounded once at the end) in a fixed *tree order*: with `m` rows left and
//!   `h = ceil(m/2)`, row `i` += row `i + h` for `i < m - h`, until one row is
//!   left (for a power of two: the upper half is added onto the lower half,
//!   repeatedly). Integer sums wrap; `max`/`min` are maxNum/minNum.
//! - **dot** accumulates in f32: bf16/f16 operands convert exactly; f32
//!   operands are first rounded to tf32 ([`round_tf32`]: 10 significand bits,
//!   nearest even) as tensor cores do. Each output element adds its products to
//!   `acc` in order k = 0, 1, …; products are exact, so this equals a chain of
//!   fused multiply-adds.
//! - **Memory.** A pointer is (kernel parameter, element offset); `add_ptr`
//!   adds i32/i64 offsets. An unmasked access outside its buffer
//!   (offset < 0 or ≥ length) is an [`InterpError::OutOfBounds`] raised before
//!   the op touches memory. Within one store, lanes writing the same element
//!   write in row-major order (the last wins); across program instances such
//!   writes race, as on a GPU (one value wins, the interpreter stays sound).
//!   `atomic_add` is a true atomic read-modify-write per element (a CAS loop for
//!   floats; bf16/f16 sums round to nearest even).
//! - **Loops** run `iv = lb, lb+step, … < ub` (step must be positive when the
//!   loop runs at all: [`InterpError::BadStep`]); `unroll` loops run the same.
//! - **Errors.** When several program instances fail, the one with the lowest
//!   linear id (`x + gx * (y + gy * z)`) is reported; no input makes the
//!   interpreter panic.

mod buffer;
mod exec;
pub mod math;
mod report;
mod value;

pub use buffer::Buffer;
pub use value::round_tf32;

use exec::Program;
use half::{bf16, f16};
use rayon::prelude::*;
use tile_ir::{self as tir, Elem, Span, ValueId};
use value::{Base, Data};

/// A kernel argument: a buffer for a pointer parameter, a number for a scalar one.
/// Scalar kinds must match the parameter's type exactly.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    Buffer(&'a Buffer),
    I32(i32),
    I64(i64),
    F32(f32),
    F16(f16),
    BF16(bf16),
    Bool(bool),
}

impl Arg<'_> {
    /// What the argument is, for messages (`f32`, `*bf16 buffer`).
    pub fn describe(&self) -> String {
        match self {
            Arg::Buffer(b) => format!("a *{} buffer", b.dtype().name()),
            Arg::I32(_) => "an i32".into(),
            Arg::I64(_) => "an i64".into(),
            Arg::F32(_) => "an f32".into(),
            Arg::F16(_) => "an f16".into(),
            Arg::BF16(_) => "a bf16".into(),
            Arg::Bool(_) => "an i1".into(),
        }
    }
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InterpError {
    #[error("kernel `{kernel}` takes {expected} arguments, got {got}")]
    ArgCount {
        kernel: String,
        expected: usize,
        got: usize,
    },
    #[error("kernel `{kernel}`: argument `{param}` must be {expected}, got {got}")]
    ArgKind {
        kernel: String,
        param: String,
        expected: String,
        got: String,
    },
    /// An unmasked load/store/atomic outside its buffer.
    #[error(
        "kernel `{kernel}`: out-of-bounds {op} in program {program_id:?}: element index {index} of {} (length {len}), tile element {lane}{}",
        param.as_deref().map(|p| format!("`{p}`")).unwrap_or_else(|| "a buffer".into()),
        at(span)
    )]
    OutOfBounds {
        kernel: String,
        /// `load`, `store` or `atomic_add`.
        op: &'static str,
        span: Span,
        program_id: [u32; 3],
        /// The offending element index (offset from the parameter's buffer start).
        index: i64,
        /// The buffer's length in elements.
        len: usize,
        /// The pointer parameter the access derives from.
        param: Option<String>,
        /// Row-major position of the offending element in the pointer tile.
        lane: usize,
    },
    /// A `for` loop that would run with a step ≤ 0.
    #[error(
        "kernel `{kernel}`: `for` loop with step {step} in program {program_id:?}{}",
        at(span)
    )]
    BadStep {
        kernel: String,
        span: Span,
        program_id: [u32; 3],
        step: i64,
    },
    /// TIR that breaks its invariants (the verifier should have caught it).
    #[error("kernel `{kernel}`: malformed TIR: {message}{}", at(span))]
    Malformed {
        kernel: String,
        span: Span,
        message: String,
    },
}

fn at(span: &Span) -> String {
    if *span == Span::default() {
        String::new()
    } else {
        format!(" (at bytes {}..{})", span.start, span.end)
    }
}

impl InterpError {
    /// The source span of the failing op, when there is one.
    pub fn span(&self) -> Option<Span> {
        match self {
            InterpError::OutOfBounds { span, .. }
            | InterpError::BadStep { span, .. }
            | InterpError::Malformed { span, .. } => Some(*span),
            _ => None,
        }
    }

    /// The failing program instance, for run-time errors.
    pub fn program_id(&self) -> Option<[u32; 3]> {
        match self {
            InterpError::OutOfBounds { program_id, .. }
            | InterpError::BadStep { program_id, .. } => Some(*program_id),
            _ => None,
        }
    }

    /// A rustc-style report against the kernel's source: message,
    /// `--> file:line:col`, the source line and a caret under the op.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        report::render(self, file_name, source)
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Run program instances in parallel (rayon). Default: true.
    pub parallel: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { parallel: true }
    }
}

/// One recorded value of a traced program instance (see [`trace`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEntry {
    pub value: ValueId,
    pub span: Span,
    pub ty: tir::Type,
    /// First elements, min/max/mean, NaN count.
    pub summary: String,
}

/// Run `kernel` over `grid` on `args` (program instances in parallel).
pub fn run(kernel: &tir::Kernel, grid: [u32; 3], args: &[Arg]) -> Result<(), InterpError> {
    run_with(kernel, grid, args, &Options::default())
}

/// [`run`] with options.
pub fn run_with(
    kernel: &tir::Kernel,
    grid: [u32; 3],
    args: &[Arg],
    opts: &Options,
) -> Result<(), InterpError> {
    let (bufs, params) = bind(kernel, args)?;
    let total = grid.iter().map(|&g| g as usize).product::<usize>();
    let pid_of = |i: usize| {
        let (gx, gy) = (grid[0] as usize, grid[1] as usize);
        [
            (i % gx) as u32,
            ((i / gx) % gy) as u32,
            (i / (gx * gy)) as u32,
        ]
    };
    // Each worker keeps one value environment for all the program instances it
    // runs: the tiles of the previous instance stay allocated until overwritten,
    // so the allocator recycles their memory instead of returning it to the OS
    // (page faults dominated otherwise).
    let one = |env: &mut Vec<Option<Data>>, i: usize| {
        let mut p = Program::new(kernel, &bufs, &params, pid_of(i), grid);
        p.env = std::mem::take(env);
        let r = p.run();
        *env = p.env;
        r
    };
    let fresh = || vec![None; kernel.values.len()];
    if opts.parallel && total > 1 {
        match (0..total)
            .into_par_iter()
            .map_init(fresh, one)
            .find_map_first(Result::err)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    } else {
        let mut env = fresh();
        (0..total).try_for_each(|i| one(&mut env, i))
    }
}

/// What [`trace`] recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Every value the program instance defined, in order (loop iterations included).
    pub entries: Vec<TraceEntry>,
    /// The error that stopped it, if one did (the entries lead up to it).
    pub error: Option<InterpError>,
}

/// Debugging mode: run program instance `program_id` alone (no other instance
/// runs; its stores do happen) and record every value it defines.
pub fn trace(kernel: &tir::Kernel, grid: [u32; 3], args: &[Arg], program_id: [u32; 3]) -> Trace {
    let (bufs, params) = match bind(kernel, args) {
        Ok(b) => b,
        Err(e) => {
            return Trace {
                entries: vec![],
                error: Some(e),
            }
        }
    };
    let mut p = Program::new(kernel, &bufs, &params, program_id, grid);
    p.trace = Some(Vec::new());
    let error = p.run().err();
    Trace {
        entries: p.trace.take().unwrap_or_default(),
        error,
    }
}

/// Check `args` against the kernel's parameters: the buffer of each pointer
/// parameter and the value of every parameter.
fn bind<'a>(
    kernel: &tir::Kernel,
    args: &[Arg<'a>],
) -> Result<(Vec<Option<&'a Buffer>>, Vec<Data>), InterpError> {
    if args.len() != kernel.params.len() {
        return Err(InterpError::ArgCount {
            kernel: kernel.name.clone(),
            expected: kernel.params.len(),
            got: args.len(),
        });
    }
    let mut bufs = Vec::new();
    let mut vals = Vec::new();
    for (i, (p, a)) in kernel.params.iter().zip(args).enumerate() {
        let bad = |expected: String| InterpError::ArgKind {
            kernel: kernel.name.clone(),
            param: p.name.clone(),
            expected,
            got: a.describe(),
        };
        if !p.ty.is_scalar() {
            return Err(bad(format!(
                "a scalar or pointer (the parameter has tile type {})",
                p.ty
            )));
        }
        let (buf, val) = match (p.ty.elem, a) {
            (Elem::Ptr(s), Arg::Buffer(b)) if b.dtype() == s => (
                Some(*b),
                Data::Ptr {
                    base: Base::One(i as u32),
                    off: vec![0],
                },
            ),
            (Elem::Ptr(s), _) => return Err(bad(format!("a *{} buffer", s.name()))),
            (Elem::Scalar(tir::Scalar::I32), Arg::I32(x)) => (None, Data::I32(vec![*x])),
            (Elem::Scalar(tir::Scalar::I64), Arg::I64(x)) => (None, Data::I64(vec![*x])),
            (Elem::Scalar(tir::Scalar::F32), Arg::F32(x)) => (None, Data::F32(vec![*x])),
            (Elem::Scalar(tir::Scalar::F16), Arg::F16(x)) => (None, Data::F16(vec![*x])),
            (Elem::Scalar(tir::Scalar::BF16), Arg::BF16(x)) => (None, Data::BF16(vec![*x])),
            (Elem::Scalar(tir::Scalar::I1), Arg::Bool(x)) => (None, Data::I1(vec![*x])),
            (Elem::Scalar(s), _) => {
                let article = if matches!(
                    s,
                    tir::Scalar::I1
                        | tir::Scalar::I32
                        | tir::Scalar::I64
                        | tir::Scalar::F16
                        | tir::Scalar::F32
                ) {
                    "an"
                } else {
                    "a"
                };
                return Err(bad(format!("{article} {}", s.name())));
            }
        };
        bufs.push(buf);
        vals.push(val);
    }
    Ok((bufs, vals))
}
