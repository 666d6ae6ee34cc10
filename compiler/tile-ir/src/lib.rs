//! `tile-ir`: the typed Tile IR (TIR), the contract between the front end, the passes, the
//! interpreter and code generation.
//!
//! A [`Kernel`] is one *specialisation* of a source kernel: every meta-parameter
//! already has its value, helper functions are already inlined, so every tile
//! shape is a concrete list of powers of two.
//!
//! Invariants (checked by [`verify`]):
//! - SSA: every [`ValueId`] is defined exactly once (as a kernel parameter, a
//!   block argument or an instruction result) before it is used, and its type
//!   is `kernel.values[id]`.
//! - Elementwise operands have *identical* shapes: the checker makes every
//!   broadcast explicit with [`Op::Splat`], [`Op::ExpandDims`] and [`Op::Broadcast`].
//! - Tile dimensions are powers of two; scalars have the empty shape.
//! - `For` and `If` bodies end with exactly one [`Op::Yield`] whose operands
//!   match the op's results in number and type; no other block holds a `Yield`.
//! - The IR holds no layout information: distributing tiles over threads is the
//!   business of code generation alone.
//!
//! The text form is [`print_kernel`]'s; [`parse_kernel`] reads it back (file
//! tests, `.tir` inputs), and [`consteval`] gives constants their meaning.
//!
//! Beside the IR this crate holds what every stage shares: source spans
//! ([`span`]), the launch ABI ([`launch`]) and the pack file format ([`pack`]).
//! It depends on no other crate of the compiler.

pub mod aliasing;
pub mod builder;
pub mod consteval;
pub mod expr;
pub mod launch;
pub mod pack;
mod parser;
mod printer;
pub mod span;
mod verify;

pub use span::{SourceFile, Span};

pub use parser::{parse_kernel, ParseError};
pub use printer::print_kernel;
pub use verify::{verify, VerifyError};

use std::fmt;

/// Element types of tiles and scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Scalar {
    I1,
    I32,
    I64,
    F16,
    BF16,
    F32,
}

impl Scalar {
    pub fn is_float(self) -> bool {
        matches!(self, Scalar::F16 | Scalar::BF16 | Scalar::F32)
    }
    pub fn is_int(self) -> bool {
        matches!(self, Scalar::I1 | Scalar::I32 | Scalar::I64)
    }
    /// Size in bytes in memory (i1 is stored as one byte).
    pub fn size_bytes(self) -> usize {
        match self {
            Scalar::I1 => 1,
            Scalar::F16 | Scalar::BF16 => 2,
            Scalar::I32 | Scalar::F32 => 4,
            Scalar::I64 => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Scalar::I1 => "i1",
            Scalar::I32 => "i32",
            Scalar::I64 => "i64",
            Scalar::F16 => "f16",
            Scalar::BF16 => "bf16",
            Scalar::F32 => "f32",
        }
    }
    pub fn from_name(s: &str) -> Option<Scalar> {
        Some(match s {
            "i1" | "bool" => Scalar::I1,
            "i32" => Scalar::I32,
            "i64" => Scalar::I64,
            "f16" => Scalar::F16,
            "bf16" => Scalar::BF16,
            "f32" => Scalar::F32,
            _ => return None,
        })
    }
}

/// The element of a tile: a number or a global-memory pointer to numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Elem {
    Scalar(Scalar),
    Ptr(Scalar),
}

/// A value's type: element and shape (empty for a scalar).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Type {
    pub elem: Elem,
    pub shape: Vec<u32>,
}

impl Type {
    pub fn scalar(s: Scalar) -> Type {
        Type {
            elem: Elem::Scalar(s),
            shape: vec![],
        }
    }
    pub fn tile(s: Scalar, shape: Vec<u32>) -> Type {
        Type {
            elem: Elem::Scalar(s),
            shape,
        }
    }
    pub fn is_scalar(&self) -> bool {
        self.shape.is_empty()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }
    /// The numeric element type, `None` for pointers.
    pub fn scalar_elem(&self) -> Option<Scalar> {
        match self.elem {
            Elem::Scalar(s) => Some(s),
            Elem::Ptr(_) => None,
        }
    }
    pub fn with_shape(&self, shape: Vec<u32>) -> Type {
        Type {
            elem: self.elem,
            shape,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = match self.elem {
            Elem::Scalar(s) => s.name().to_string(),
            Elem::Ptr(s) => format!("*{}", s.name()),
        };
        if self.shape.is_empty() {
            write!(f, "{e}")
        } else {
            let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
            write!(f, "{e}[{}]", dims.join(", "))
        }
    }
}

/// An SSA value: an index into [`Kernel::values`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ValueId(pub u32);

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum UnaryOp {
    Neg,
    /// Logical/bitwise not (i1 and integers).
    Not,
    Exp,
    Exp2,
    Log,
    Sqrt,
    Rsqrt,
    Sigmoid,
    Tanh,
    Abs,
    /// Sine and cosine (radians); docs/LANGUAGE.md, "Math functions", for
    /// the GPU's accuracy.
    Sin,
    Cos,
    /// The error function.
    Erf,
    /// `ln(1 + x)`, accurate near 0.
    Log1p,
    /// `exp(x) - 1`, accurate near 0.
    Expm1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Float division, or integer division truncating toward zero.
    Div,
    /// Remainder with the sign of the dividend (C semantics).
    Rem,
    /// IEEE maxNum / minNum for floats (a NaN operand yields the other one).
    Max,
    Min,
    And,
    Or,
    Xor,
    Shl,
    /// Arithmetic shift right.
    Shr,
    /// `a` to the power `b` (floats only), with C's `powf` special values.
    Pow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

/// A compile-time constant.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Const {
    Int(i64),
    /// Stored as its bit pattern in packs: JSON has no infinities or NaNs.
    Float(#[serde(with = "f64_bits")] f64),
    Bool(bool),
}

mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(x.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

/// Operations. Result types live in [`Kernel::values`]; an op's semantics below
/// name the result `r`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// A scalar constant of the result's scalar type.
    Const(Const),
    /// Index of this program instance along grid axis 0, 1 or 2 (i32 scalar).
    ProgramId(u8),
    /// Number of program instances along grid axis 0, 1 or 2 (i32 scalar).
    NumPrograms(u8),
    /// `r[i] = start + i` for `i < end - start` (i32, 1-D).
    Arange {
        start: i64,
        end: i64,
    },
    /// A scalar repeated over the result's shape.
    Splat(ValueId),
    /// Insert a dimension of size 1 at `axis`.
    ExpandDims {
        value: ValueId,
        axis: u32,
    },
    /// Same rank; every dimension of the operand is 1 or equal to the result's.
    Broadcast(ValueId),
    /// Same element count, row-major order.
    Reshape(ValueId),
    /// Permute dimensions: `r.shape[i] = v.shape[perm[i]]`.
    Trans {
        value: ValueId,
        perm: Vec<u32>,
    },
    Unary(UnaryOp, ValueId),
    Binary(BinaryOp, ValueId, ValueId),
    /// Result is i1 with the operands' shape.
    Cmp(CmpOp, ValueId, ValueId),
    /// `r = cond ? a : b`, elementwise (all three shapes equal).
    Select {
        cond: ValueId,
        a: ValueId,
        b: ValueId,
    },
    /// `r = a · b + c` rounded once, elementwise (floats; all four shapes and
    /// types equal; 16-bit floats in f32, then rounded to the type).
    Fma {
        a: ValueId,
        b: ValueId,
        c: ValueId,
    },
    /// Convert to the result's element type: floats round to nearest even,
    /// float→int truncates toward zero (saturating, NaN → 0), ints sign-extend
    /// or truncate, i1 → number is 0/1, number → i1 is `!= 0`.
    Cast(ValueId),
    /// Pointer plus element offset (i32 or i64), elementwise.
    AddPtr {
        ptr: ValueId,
        offset: ValueId,
    },
    /// Masked-off lanes yield `other` (or zero when absent) and touch no memory.
    Load {
        ptr: ValueId,
        mask: Option<ValueId>,
        other: Option<ValueId>,
    },
    Store {
        ptr: ValueId,
        value: ValueId,
        mask: Option<ValueId>,
    },
    /// Atomic `*p += v` per unmasked element; the result is the old values
    /// (zero where masked off).
    AtomicAdd {
        ptr: ValueId,
        value: ValueId,
        mask: Option<ValueId>,
    },
    /// Reduce along `axis`, removing it (a 1-D tile reduces to a scalar).
    Reduce {
        op: ReduceOp,
        value: ValueId,
        axis: u32,
    },
    /// `r = a @ b + acc` with a: [M, K], b: [K, N], acc and r: [M, N] f32.
    /// a and b are bf16/f16 (or f32, computed as tf32).
    Dot {
        a: ValueId,
        b: ValueId,
        acc: ValueId,
    },
    /// `for iv in lb..ub step step` with loop-carried values. `body.args` are
    /// `[iv, carried...]`; the results are the carried values after the last
    /// iteration (`init` when the loop runs zero times). `unroll` marks a
    /// `static` loop, whose bounds are constants; the unroll pass removes it.
    For {
        lb: ValueId,
        ub: ValueId,
        step: ValueId,
        init: Vec<ValueId>,
        body: Block,
        unroll: bool,
    },
    /// Scalar i1 condition; both blocks yield the results.
    If {
        cond: ValueId,
        then_body: Block,
        else_body: Block,
    },
    /// Terminates a `For`/`If` body.
    Yield(Vec<ValueId>),
}

/// One instruction: an op, the values it defines and where it came from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Inst {
    pub results: Vec<ValueId>,
    pub op: Op,
    pub span: Span,
}

/// A straight-line list of instructions with arguments (used by `For` bodies).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    pub args: Vec<ValueId>,
    pub insts: Vec<Inst>,
}

/// A kernel parameter: a pointer or a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Param {
    pub name: String,
    pub value: ValueId,
    pub ty: Type,
}

/// One specialised kernel.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    /// Meta-parameter values this specialisation was made with, in declaration order.
    pub meta: Vec<(String, i64)>,
    pub body: Block,
    /// Type of every value, indexed by `ValueId`.
    pub values: Vec<Type>,
}

impl Kernel {
    pub fn ty(&self, v: ValueId) -> &Type {
        &self.values[v.0 as usize]
    }
    /// Allocate a fresh value of type `ty`.
    pub fn new_value(&mut self, ty: Type) -> ValueId {
        self.values.push(ty);
        ValueId(self.values.len() as u32 - 1)
    }
    /// The launch-facing signature.
    pub fn signature(&self) -> Signature {
        Signature {
            name: self.name.clone(),
            params: self
                .params
                .iter()
                .map(|p| match p.ty.elem {
                    Elem::Ptr(s) => ParamKind::Ptr(s),
                    Elem::Scalar(s) => ParamKind::Scalar(s),
                })
                .zip(self.params.iter().map(|p| p.name.clone()))
                .map(|(kind, name)| SigParam { name, kind })
                .collect(),
        }
    }
}

/// What a caller must pass to launch a kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    pub name: String,
    pub params: Vec<SigParam>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SigParam {
    pub name: String,
    pub kind: ParamKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ParamKind {
    Ptr(Scalar),
    Scalar(Scalar),
}

/// Whether `op` makes a tile of float zeros: a `splat` of a `const 0.0`
/// (`def` gives the op defining a value). A `dot` without an accumulator gets
/// one (the checker's), which the passes and code generation recognise.
pub fn is_zero_splat<'a>(op: &Op, def: impl Fn(ValueId) -> Option<&'a Op>) -> bool {
    let Op::Splat(x) = op else {
        return false;
    };
    matches!(def(*x), Some(Op::Const(Const::Float(z))) if *z == 0.0)
}

/// Whether `v` has all bits clear in every element: a `const` 0, +0.0 or
/// false, through `splat` and `broadcast` (`def` gives the op defining a
/// value). What `cp.async` and TMA write where a copy is masked off.
pub fn is_zero_bits<'a>(v: ValueId, def: &impl Fn(ValueId) -> Option<&'a Op>) -> bool {
    match def(v) {
        Some(Op::Const(Const::Int(i))) => *i == 0,
        Some(Op::Const(Const::Float(f))) => f.to_bits() == 0,
        Some(Op::Const(Const::Bool(b))) => !b,
        Some(Op::Splat(x) | Op::Broadcast(x)) => is_zero_bits(*x, def),
        _ => false,
    }
}

/// Visit every instruction, nested blocks included, in program order.
pub fn walk_insts<'a>(block: &'a Block, f: &mut dyn FnMut(&'a Inst)) {
    for inst in &block.insts {
        walk_inst(inst, f);
    }
}

/// Visit `inst`, then every instruction of the blocks nested in it.
pub fn walk_inst<'a>(inst: &'a Inst, f: &mut dyn FnMut(&'a Inst)) {
    f(inst);
    match &inst.op {
        Op::For { body, .. } => walk_insts(body, f),
        Op::If {
            then_body,
            else_body,
            ..
        } => {
            walk_insts(then_body, f);
            walk_insts(else_body, f);
        }
        _ => {}
    }
}

impl Op {
    /// The values this op reads (not counting those read inside nested blocks).
    pub fn operands(&self) -> Vec<ValueId> {
        match self {
            Op::Const(_) | Op::ProgramId(_) | Op::NumPrograms(_) | Op::Arange { .. } => vec![],
            Op::Splat(v) | Op::Broadcast(v) | Op::Reshape(v) | Op::Cast(v) | Op::Unary(_, v) => {
                vec![*v]
            }
            Op::ExpandDims { value, .. } | Op::Trans { value, .. } | Op::Reduce { value, .. } => {
                vec![*value]
            }
            Op::Binary(_, a, b) | Op::Cmp(_, a, b) => vec![*a, *b],
            Op::Select { cond, a, b } => vec![*cond, *a, *b],
            Op::Fma { a, b, c } => vec![*a, *b, *c],
            Op::AddPtr { ptr, offset } => vec![*ptr, *offset],
            Op::Load { ptr, mask, other } => {
                let mut v = vec![*ptr];
                v.extend(mask.iter().chain(other.iter()).copied());
                v
            }
            Op::Store { ptr, value, mask } | Op::AtomicAdd { ptr, value, mask } => {
                let mut v = vec![*ptr, *value];
                v.extend(mask.iter().copied());
                v
            }
            Op::Dot { a, b, acc } => vec![*a, *b, *acc],
            Op::For {
                lb, ub, step, init, ..
            } => {
                let mut v = vec![*lb, *ub, *step];
                v.extend(init.iter().copied());
                v
            }
            Op::If { cond, .. } => vec![*cond],
            Op::Yield(vs) => vs.clone(),
        }
    }

    /// True for ops with effects beyond their results (never removed by DCE).
    pub fn has_side_effects(&self) -> bool {
        matches!(self, Op::Store { .. } | Op::AtomicAdd { .. } | Op::Yield(_))
    }
}

/// The autotuning space of a kernel, from its `tune` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TuneSpace {
    /// Runtime scalar parameters whose values select a tuned config.
    pub key: Vec<String>,
    /// Candidate values of each meta-parameter.
    pub params: Vec<(String, Vec<i64>)>,
    /// Candidate warp counts per CTA.
    pub warps: Vec<u32>,
    /// Candidate pipeline depths, like Triton's `num_stages`: the most
    /// shared-memory buffers a pipelined loop gets (fewer where they do not
    /// fit the compiler's budget); empty: 4. Fewer stages leave room for
    /// more CTAs a multiprocessor, which overlap one CTA's softmax with
    /// another's multiplies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<u32>,
    /// Candidate CTAs per multiprocessor that ptxas must make room for (like
    /// CUDA's `__launch_bounds__` minimum blocks): a register budget of
    /// 65536 / (ctas · 32 · warps) a thread, traded against spills; empty:
    /// the compiler's own choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ctas: Vec<u32>,
    /// The launch grid (up to three axes, x first) from the block's `grid:`
    /// entry; `None` when the kernel does not declare it (and in packs from
    /// before the entry existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<Vec<crate::launch::GridExpr>>,
    /// The block's `where:` conditions: a configuration is in the space only
    /// where all of them hold. Empty (and absent in packs) without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<crate::launch::TuneCond>,
}

/// The pipeline depths a configuration's `stages` may name: a pipelined
/// loop needs a buffer being read and one being filled. The front end
/// checks tune blocks against it, code generation its options.
pub const PIPELINE_DEPTHS: std::ops::RangeInclusive<u32> = 2..=8;

/// The CTAs per multiprocessor a configuration's `ctas` may ask for (32 is
/// the hardware's most on every target from sm_80 on).
pub const CTAS_PER_SM: std::ops::RangeInclusive<u32> = 1..=32;

/// One point of a tune space: meta-parameter values, the warp count and,
/// when the tune block lists them, the pipeline depth.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub meta: Vec<(String, i64)>,
    pub warps: u32,
    /// The most shared-memory buffers a pipelined loop gets
    /// ([`TuneSpace::stages`]); `None`: the compiler's default bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<u32>,
    /// CTAs per multiprocessor ptxas must make room for ([`TuneSpace::ctas`]);
    /// `None`: the compiler's own choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctas: Option<u32>,
}

impl Config {
    /// The value of meta-parameter `name`, or of `warps`, `stages` or `ctas`.
    pub fn value(&self, name: &str) -> Option<i64> {
        match name {
            "warps" => Some(self.warps as i64),
            "stages" => self.stages.map(i64::from),
            "ctas" => self.ctas.map(i64::from),
            _ => self.meta.iter().find(|(m, _)| m == name).map(|(_, v)| *v),
        }
    }

    /// `BLOCK=1024, warps=4` (`, stages=2`, `, ctas=3` where it has them).
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.meta.iter().map(|(n, v)| format!("{n}={v}")).collect();
        parts.push(format!("warps={}", self.warps));
        if let Some(s) = self.stages {
            parts.push(format!("stages={s}"));
        }
        if let Some(c) = self.ctas {
            parts.push(format!("ctas={c}"));
        }
        parts.join(", ")
    }
}

impl TuneSpace {
    /// Whether `config` meets every `where:` condition (one that cannot be
    /// evaluated, say a division by zero, excludes it; the checker reports
    /// such blocks).
    pub fn admits(&self, config: &Config) -> bool {
        self.constraints
            .iter()
            .all(|c| c.holds(&|n| config.value(n)) == Ok(true))
    }

    /// Every config, in a stable order (cartesian product, last parameter
    /// fastest, then warps, stages, ctas last), less those the `where:`
    /// conditions exclude.
    pub fn configs(&self) -> Vec<Config> {
        let mut out = vec![Vec::new()];
        for (name, vals) in &self.params {
            let mut next = Vec::new();
            for prefix in &out {
                for v in vals {
                    let mut p: Vec<(String, i64)> = prefix.clone();
                    p.push((name.clone(), *v));
                    next.push(p);
                }
            }
            out = next;
        }
        let warps = if self.warps.is_empty() {
            vec![4]
        } else {
            self.warps.clone()
        };
        let stages: Vec<Option<u32>> = if self.stages.is_empty() {
            vec![None]
        } else {
            self.stages.iter().copied().map(Some).collect()
        };
        let ctas: Vec<Option<u32>> = if self.ctas.is_empty() {
            vec![None]
        } else {
            self.ctas.iter().copied().map(Some).collect()
        };
        let mut configs = Vec::new();
        for meta in &out {
            for &w in &warps {
                for &s in &stages {
                    for &c in &ctas {
                        configs.push(Config {
                            meta: meta.clone(),
                            warps: w,
                            stages: s,
                            ctas: c,
                        });
                    }
                }
            }
        }
        configs.retain(|c| self.admits(c));
        configs
    }
}

/// The fingerprint of the compiler this crate was built with: 16 hex digits of
/// the SHA-256 of the sources of `tile-ir`, `tile-front`, `tile-codegen` and
/// `tilec`'s library (see build.rs). Any change to them changes it.
pub const COMPILER_FINGERPRINT: &str = env!("TILE_COMPILER_FINGERPRINT");

/// The compiler's version as recorded in packs: the crate version and the
/// [`COMPILER_FINGERPRINT`], `0.1.0+1a2b3c4d5e6f7a8b`. A pack is read only by
/// a binary built from the same compiler sources (`pack::PackError::StaleCompiler`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "+",
    env!("TILE_COMPILER_FINGERPRINT")
);
