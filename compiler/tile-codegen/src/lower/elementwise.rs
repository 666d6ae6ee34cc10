//! Scalar arithmetic on one register (constants, unary and binary ops,
//! comparisons, casts; 16-bit floats computed in f32) and the elementwise TIR
//! ops built from it, each operand read in the result's layout.

use super::{scalar_ty, Lower};
use crate::emit::{Emitter, V};
use crate::math::{self, Arith, Step};
use crate::CodegenError;
use std::collections::HashMap;
use tile_ir::{BinaryOp, CmpOp, Const, Op, Scalar, Span, UnaryOp, ValueId};

fn float_attr(x: f64, s: Scalar) -> String {
    let t = scalar_ty(s);
    if x.is_finite() {
        format!("{x:.17e} : {t}")
    } else {
        let bits: u64 = match s {
            Scalar::F32 => (x as f32).to_bits() as u64,
            Scalar::BF16 => half::bf16::from_f64(x).to_bits() as u64,
            Scalar::F16 => half::f16::from_f64(x).to_bits() as u64,
            _ => 0,
        };
        format!("0x{bits:X} : {t}")
    }
}

impl<'c, 'k> Lower<'c, 'k> {
    /// A constant of the result's element type (i64 for pointer-typed ones).
    pub(super) fn constant_value(&mut self, c: Const, r: ValueId) -> Result<Vec<V>, CodegenError> {
        let s = self.kernel.ty(r).scalar_elem().unwrap_or(Scalar::I64);
        Ok(vec![self.constant(c, s)?])
    }

    /// `program_id`/`num_programs` along `axis`: the `gpu` op `name` (block
    /// id or grid size) as i32.
    pub(super) fn grid_index(&mut self, name: &str, axis: u8) -> Result<Vec<V>, CodegenError> {
        let dim = ["x", "y", "z"][(axis as usize).min(2)];
        let index = self.e.ty("index");
        let i32t = self.e.ty("i32");
        let v = self.e.op1(
            name,
            &[],
            index,
            &[("dimension", &format!("#gpu<dim {dim}>"))],
        )?;
        Ok(vec![self.e.op1("arith.index_cast", &[v], i32t, &[])?])
    }

    /// `arange` from `start`: each register is its own coordinate plus `start`.
    pub(super) fn arange(&mut self, start: i64, r: ValueId) -> Result<Vec<V>, CodegenError> {
        let l = self.layout(r);
        let st = self.e.i32(start)?;
        let mut out = Vec::new();
        for reg in 0..l.num_regs() {
            let c = self.coords(&l, reg)?;
            out.push(self.e.binop("arith.addi", c[0], st)?);
        }
        Ok(out)
    }

    /// A scalar repeated: remembered as a splat, so that any layout reads it for free.
    pub(super) fn splat(&mut self, v: ValueId, r: ValueId) -> Result<Vec<V>, CodegenError> {
        let s = self.regs(v)?[0];
        self.splats.insert(r, s);
        Ok(vec![s; self.layout(r).num_regs()])
    }

    pub(super) fn elementwise_unary(
        &mut self,
        op: UnaryOp,
        v: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s = self.kernel.ty(v).scalar_elem().unwrap();
        let lr = self.layout(r);
        let regs = self.regs_in(v, &lr, span)?;
        regs.iter().map(|&x| self.unary(op, s, x)).collect()
    }

    /// Whether `a / b` divides a float tile by a value broadcast to its
    /// shape: one value (a splat) or fewer values than the tile has
    /// elements (`l[:, None]`, a row statistic: a broadcast of a smaller
    /// tile).
    pub(super) fn divides_by_broadcast(&self, a: ValueId, b: ValueId) -> bool {
        let k = self.kernel;
        if k.ty(a).is_scalar() || !k.ty(a).scalar_elem().is_some_and(|s| s.is_float()) {
            return false;
        }
        self.splats.contains_key(&b)
            || matches!(self.defs.get(&b).map(|i| &i.op),
                Some(Op::Broadcast(src)) if k.ty(*src).numel() < k.ty(b).numel())
    }

    /// Division by a broadcast value (a reduction's normalisation): one
    /// reciprocal per distinct divisor register of the thread, then a
    /// multiply per element, which is within 2 ulp of f32 division (the
    /// math is f32 for 16-bit floats). A row statistic broadcast into an
    /// accumulator layout takes the row's register (`broadcast`), so
    /// attention's `acc / l[:, None]` is a reciprocal a row, not a division
    /// an element.
    pub(super) fn divide_by_broadcast(
        &mut self,
        a: ValueId,
        b: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s = self.kernel.ty(a).scalar_elem().unwrap();
        let lr = self.layout(r);
        let ra = self.regs_in(a, &lr, span)?;
        // A splat's registers are its one value (`regs_in`): one reciprocal.
        let rb = self.regs_in(b, &lr, span)?;
        let one = self.f32(1.0)?;
        let mut rcps: HashMap<usize, V> = HashMap::new();
        ra.iter()
            .zip(&rb)
            .map(|(&x, &d)| {
                let rcp = match rcps.get(&(d.ptr as usize)) {
                    Some(&v) => v,
                    None => {
                        let w = self.widen(d, s)?;
                        let v = self.e.binop("arith.divf", one, w)?;
                        rcps.insert(d.ptr as usize, v);
                        v
                    }
                };
                let x = self.widen(x, s)?;
                let y = self.e.binop("arith.mulf", x, rcp)?;
                self.narrow(y, s)
            })
            .collect()
    }

    pub(super) fn elementwise_binary(
        &mut self,
        op: BinaryOp,
        a: ValueId,
        b: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s = self.kernel.ty(a).scalar_elem().unwrap();
        let lr = self.layout(r);
        let (ra, rb) = (self.regs_in(a, &lr, span)?, self.regs_in(b, &lr, span)?);
        let yc = self.int_const_of(b);
        ra.iter()
            .zip(&rb)
            .map(|(&x, &y)| self.binary(op, s, x, y, yc))
            .collect()
    }

    pub(super) fn elementwise_compare(
        &mut self,
        op: CmpOp,
        a: ValueId,
        b: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s = self.kernel.ty(a).scalar_elem();
        let lr = self.layout(r);
        let (ra, rb) = (self.regs_in(a, &lr, span)?, self.regs_in(b, &lr, span)?);
        ra.iter()
            .zip(&rb)
            .map(|(&x, &y)| self.compare(op, s, x, y))
            .collect()
    }

    pub(super) fn elementwise_select(
        &mut self,
        cond: ValueId,
        a: ValueId,
        b: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let lr = self.layout(r);
        let rc = self.regs_in(cond, &lr, span)?;
        let (ra, rb) = (self.regs_in(a, &lr, span)?, self.regs_in(b, &lr, span)?);
        (0..ra.len())
            .map(|i| self.e.select(rc[i], ra[i], rb[i]))
            .collect()
    }

    /// `a · b + c` rounded once: `fma.rn.f32` (16-bit floats widened, the
    /// result rounded to their type), as the interpreter's `mul_add`.
    pub(super) fn elementwise_fma(
        &mut self,
        [a, b, c]: [ValueId; 3],
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s = self.kernel.ty(r).scalar_elem().unwrap();
        let lr = self.layout(r);
        let ra = self.regs_in(a, &lr, span)?;
        let rb = self.regs_in(b, &lr, span)?;
        let rc = self.regs_in(c, &lr, span)?;
        let f32t = self.e.ty("f32");
        (0..ra.len())
            .map(|i| {
                let x = self.widen(ra[i], s)?;
                let y = self.widen(rb[i], s)?;
                let z = self.widen(rc[i], s)?;
                let v = self.e.call_intrinsic("llvm.fma.f32", &[x, y, z], f32t)?;
                self.narrow(v, s)
            })
            .collect()
    }

    pub(super) fn elementwise_cast(
        &mut self,
        v: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let from = self.kernel.ty(v).scalar_elem().unwrap();
        let to = self.kernel.ty(r).scalar_elem().unwrap();
        let lr = self.layout(r);
        let regs = self.regs_in(v, &lr, span)?;
        regs.iter().map(|&x| self.cast(x, from, to)).collect()
    }

    pub(super) fn constant(&mut self, c: Const, s: Scalar) -> Result<V, CodegenError> {
        let t = self.e.ty(scalar_ty(s));
        match (c, s) {
            (_, Scalar::I1) => self.e.bool(match c {
                Const::Bool(b) => b,
                Const::Int(i) => i != 0,
                Const::Float(f) => f != 0.0,
            }),
            (Const::Int(i), s) if s.is_int() => {
                self.e.constant(&format!("{i} : {}", scalar_ty(s)), t)
            }
            (Const::Float(f), s) if s.is_int() => self
                .e
                .constant(&format!("{} : {}", f as i64, scalar_ty(s)), t),
            (Const::Int(i), s) => self.e.constant(&float_attr(i as f64, s), t),
            (Const::Float(f), s) => self.e.constant(&float_attr(f, s), t),
            (Const::Bool(b), s) => self
                .e
                .constant(&format!("{} : {}", b as i64, scalar_ty(s)), t),
        }
    }

    pub(super) fn f32(&mut self, x: f64) -> Result<V, CodegenError> {
        let t = self.e.ty("f32");
        self.e.constant(&float_attr(x, Scalar::F32), t)
    }

    /// Widen a 16-bit float to f32 (identity for f32).
    pub(super) fn widen(&mut self, x: V, s: Scalar) -> Result<V, CodegenError> {
        if matches!(s, Scalar::F16 | Scalar::BF16) {
            let t = self.e.ty("f32");
            self.e.op1("arith.extf", &[x], t, &[])
        } else {
            Ok(x)
        }
    }

    /// An f32 rounded to `s` (f16 or bf16; other types unchanged). Through
    /// the NVVM conversion intrinsics, not `fptrunc`: LLVM's InstCombine
    /// turns `fptrunc(op(fpext a, fpext b))` into a 16-bit `op` (exact, by
    /// double rounding), and ptxas (12.9 to 13.4) pairs two such scalar
    /// ops into one `HMUL2`/`HADD2` wrongly when one operand register is
    /// rewritten under a predicate (`selp.b16`): a miscompile the
    /// differential test found (`differential/f16_mul_pair_with_select.tile`).
    /// 16-bit arithmetic thus stays in f32, which rounds identically.
    pub(super) fn narrow(&mut self, x: V, s: Scalar) -> Result<V, CodegenError> {
        let intrin = match s {
            Scalar::F16 => "llvm.nvvm.f2f16.rn",
            Scalar::BF16 => "llvm.nvvm.f2bf16.rn",
            _ => return Ok(x),
        };
        let t = self.e.ty(scalar_ty(s));
        // Exact: a 16-bit value widened and rounded back is itself.
        if let Some(v) = self.e.extended_from(x).filter(|&v| self.e.type_of(v) == t) {
            return Ok(v);
        }
        self.e.call_intrinsic(intrin, &[x], t)
    }

    pub(super) fn unary(&mut self, op: UnaryOp, s: Scalar, x: V) -> Result<V, CodegenError> {
        if s.is_int() {
            return match op {
                UnaryOp::Neg => {
                    let z = self.constant(Const::Int(0), s)?;
                    self.e.binop("arith.subi", z, x)
                }
                UnaryOp::Not => {
                    let m = self.constant(
                        if s == Scalar::I1 {
                            Const::Bool(true)
                        } else {
                            Const::Int(-1)
                        },
                        s,
                    )?;
                    self.e.binop("arith.xori", x, m)
                }
                UnaryOp::Abs => {
                    let z = self.constant(Const::Int(0), s)?;
                    let n = self.e.binop("arith.subi", z, x)?;
                    let c = self.e.cmpi("slt", x, z)?;
                    self.e.select(c, n, x)
                }
                _ => Err(CodegenError::Internal(format!("{op:?} on integers"))),
            };
        }
        let f32t = self.e.ty("f32");
        let x = self.widen(x, s)?;
        let y = match op {
            UnaryOp::Neg => self.e.op1("arith.negf", &[x], f32t, &[])?,
            UnaryOp::Not => return Err(CodegenError::Internal("not on floats".into())),
            // `llvm.intr.fabs` is illegal after convert-gpu-to-nvvm.
            UnaryOp::Abs => self.e.call_intrinsic("llvm.fabs.f32", &[x], f32t)?,
            UnaryOp::Exp => self.exp(x)?,
            UnaryOp::Exp2 => self
                .e
                .call_intrinsic("llvm.nvvm.ex2.approx.ftz.f32", &[x], f32t)?,
            UnaryOp::Log => {
                let l2 = self
                    .e
                    .call_intrinsic("llvm.nvvm.lg2.approx.ftz.f", &[x], f32t)?;
                let ln2 = self.f32(std::f64::consts::LN_2)?;
                self.e.binop("arith.mulf", l2, ln2)?
            }
            UnaryOp::Sqrt => self.e.call_intrinsic("llvm.nvvm.sqrt.rn.f", &[x], f32t)?,
            UnaryOp::Rsqrt => self
                .e
                .call_intrinsic("llvm.nvvm.rsqrt.approx.ftz.f", &[x], f32t)?,
            UnaryOp::Sigmoid => {
                let n = self.e.op1("arith.negf", &[x], f32t, &[])?;
                let ex = self.exp(n)?;
                let one = self.f32(1.0)?;
                let d = self.e.binop("arith.addf", one, ex)?;
                self.e.binop("arith.divf", one, d)?
            }
            UnaryOp::Tanh => self.e.op1(
                "llvm.inline_asm",
                &[x],
                f32t,
                &[
                    ("asm_string", "\"tanh.approx.f32 $0, $1;\""),
                    ("constraints", "\"=f,f\""),
                    ("tail_call_kind", "#llvm.tailcallkind<none>"),
                ],
            )?,
            UnaryOp::Sin => math::sin(&mut Mlir(&mut self.e), x)?,
            UnaryOp::Cos => math::cos(&mut Mlir(&mut self.e), x)?,
            UnaryOp::Erf => math::erf(&mut Mlir(&mut self.e), x)?,
            UnaryOp::Log1p => math::log1p(&mut Mlir(&mut self.e), x)?,
            UnaryOp::Expm1 => math::expm1(&mut Mlir(&mut self.e), x)?,
        };
        self.narrow(y, s)
    }

    pub(super) fn exp(&mut self, x: V) -> Result<V, CodegenError> {
        let f32t = self.e.ty("f32");
        let log2e = self.f32(std::f64::consts::LOG2_E)?;
        let t = self.e.binop("arith.mulf", x, log2e)?;
        self.e
            .call_intrinsic("llvm.nvvm.ex2.approx.ftz.f32", &[t], f32t)
    }

    /// The integer constant every element of `v` equals, when `v` is a
    /// constant or a splat/broadcast/reshape of one.
    pub(super) fn int_const_of(&self, v: ValueId) -> Option<i64> {
        let inst = self.defs.get(&v)?;
        match &inst.op {
            Op::Const(Const::Int(i)) => Some(*i),
            Op::Splat(x) | Op::Broadcast(x) | Op::Reshape(x) => self.int_const_of(*x),
            Op::ExpandDims { value, .. } => self.int_const_of(*value),
            _ => None,
        }
    }

    /// Integer `/`, `%`, `<<`, `>>` with the language's results where LLVM
    /// would give poison or undefined behaviour (docs/LANGUAGE.md, "Integer
    /// and float semantics"; the interpreter computes the same):
    /// `x / 0 == -1`, `x % 0 == x`, `MIN / -1 == MIN`, `MIN % -1 == 0`, a shift
    /// amount read as unsigned and ≥ the width gives 0 (`<<`) or the sign fill
    /// (`>>`). `y_const` is the divisor or shift amount when it is a known
    /// constant: a divisor other than 0 and -1 and an amount in `0..width`
    /// need no guard, so the plain instruction is emitted.
    /// `name` is the unguarded instruction (`arith.divsi`, `arith.remsi`,
    /// `arith.shli`, `arith.shrsi`).
    fn guarded_int(
        &mut self,
        op: BinaryOp,
        name: &str,
        s: Scalar,
        x: V,
        y: V,
        y_const: Option<i64>,
    ) -> Result<V, CodegenError> {
        let bits: i64 = if s == Scalar::I64 { 64 } else { 32 };
        let c = |me: &mut Self, v: i64| me.constant(Const::Int(v), s);
        match op {
            BinaryOp::Div | BinaryOp::Rem => {
                if y_const.is_some_and(|d| d != 0 && d != -1) {
                    return self.e.binop(name, x, y);
                }
                // Divide by 1 where the divisor is 0 or -1, then fix those up.
                let (zero, one, m1) = (c(self, 0)?, c(self, 1)?, c(self, -1)?);
                let is0 = self.e.cmpi("eq", y, zero)?;
                let ism1 = self.e.cmpi("eq", y, m1)?;
                let bad = self.e.binop("arith.ori", is0, ism1)?;
                let safe = self.e.select(bad, one, y)?;
                let q = self.e.binop(name, x, safe)?;
                if op == BinaryOp::Div {
                    // x / -1 == 0 - x (wrapping); x / 0 == -1.
                    let neg = self.e.binop("arith.subi", zero, x)?;
                    let q = self.e.select(ism1, neg, q)?;
                    self.e.select(is0, m1, q)
                } else {
                    // x % 1 == 0 == x % -1; x % 0 == x.
                    self.e.select(is0, x, q)
                }
            }
            BinaryOp::Shl | BinaryOp::Shr => {
                if y_const.is_some_and(|a| (0..bits).contains(&a)) {
                    return self.e.binop(name, x, y);
                }
                let last = c(self, bits - 1)?;
                if op == BinaryOp::Shr {
                    // An amount ≥ width (unsigned) shifts by width - 1: the sign fill.
                    let amt = self.e.binop("arith.minui", y, last)?;
                    return self.e.binop(name, x, amt);
                }
                let width = c(self, bits)?;
                let ok = self.e.cmpi("ult", y, width)?;
                let zero = c(self, 0)?;
                // The amount in range where `ok`, else anything: `select(ok,
                // y, 0)` for i32 (LLVM folds guard and select into PTX's
                // clamping `shl.b32`), `y & 63` for i64: NVPTX would fold
                // `select(y < 64, x << y, 0)` into one `shl.b64`, whose
                // amount is a u32 — the truncated `cvt.u32.u64` amount of a
                // `y` ≥ 2^32 (e.g. -19·2^32 from a float cast) shifts by
                // `y mod 2^32` instead of giving 0. The mask keeps the
                // select apart from the shift.
                let amt = if bits == 64 {
                    self.e.binop("arith.andi", y, last)?
                } else {
                    self.e.select(ok, y, zero)?
                };
                let r = self.e.binop(name, x, amt)?;
                self.e.select(ok, r, zero)
            }
            _ => Err(CodegenError::Internal(format!("{op:?} is not guarded"))),
        }
    }

    /// `x op y` on one register each. `y_const` is `y`'s value when it is a
    /// known integer constant (for [`guarded_int`](Self::guarded_int)).
    pub(super) fn binary(
        &mut self,
        op: BinaryOp,
        s: Scalar,
        x: V,
        y: V,
        y_const: Option<i64>,
    ) -> Result<V, CodegenError> {
        if s.is_int() {
            let name = match op {
                BinaryOp::Add => "arith.addi",
                BinaryOp::Sub => "arith.subi",
                BinaryOp::Mul => "arith.muli",
                BinaryOp::Div => "arith.divsi",
                BinaryOp::Rem => "arith.remsi",
                BinaryOp::Max => "arith.maxsi",
                BinaryOp::Min => "arith.minsi",
                BinaryOp::And => "arith.andi",
                BinaryOp::Or => "arith.ori",
                BinaryOp::Xor => "arith.xori",
                BinaryOp::Shl => "arith.shli",
                BinaryOp::Shr => "arith.shrsi",
                BinaryOp::Pow => return Err(CodegenError::Internal("pow on integers".into())),
            };
            if matches!(
                op,
                BinaryOp::Div | BinaryOp::Rem | BinaryOp::Shl | BinaryOp::Shr
            ) {
                return self.guarded_int(op, name, s, x, y, y_const);
            }
            return self.e.binop(name, x, y);
        }
        let (x, y) = (self.widen(x, s)?, self.widen(y, s)?);
        let f32t = self.e.ty("f32");
        let r = match op {
            BinaryOp::Add => self.e.binop("arith.addf", x, y)?,
            BinaryOp::Sub => self.e.binop("arith.subf", x, y)?,
            BinaryOp::Mul => self.e.binop("arith.mulf", x, y)?,
            BinaryOp::Div => self.e.binop("arith.divf", x, y)?,
            // Exact, without libdevice (`arith.remf` becomes a call of `__nv_fmodf`).
            BinaryOp::Rem => math::fmod(&mut Mlir(&mut self.e), x, y)?,
            BinaryOp::Max => self.e.op1(
                "llvm.intr.maxnum",
                &[x, y],
                f32t,
                &[("fastmathFlags", "#llvm.fastmath<none>")],
            )?,
            BinaryOp::Min => self.e.op1(
                "llvm.intr.minnum",
                &[x, y],
                f32t,
                &[("fastmathFlags", "#llvm.fastmath<none>")],
            )?,
            BinaryOp::Pow => math::pow(&mut Mlir(&mut self.e), x, y)?,
            _ => return Err(CodegenError::Internal(format!("{op:?} on floats"))),
        };
        self.narrow(r, s)
    }

    pub(super) fn compare(
        &mut self,
        op: CmpOp,
        s: Option<Scalar>,
        x: V,
        y: V,
    ) -> Result<V, CodegenError> {
        match s {
            Some(s) if s.is_float() => {
                let (x, y) = (self.widen(x, s)?, self.widen(y, s)?);
                let pred = match op {
                    CmpOp::Eq => "oeq",
                    CmpOp::Ne => "une",
                    CmpOp::Lt => "olt",
                    CmpOp::Le => "ole",
                    CmpOp::Gt => "ogt",
                    CmpOp::Ge => "oge",
                };
                self.e.cmpf(pred, x, y)
            }
            Some(_) => {
                let pred = match op {
                    CmpOp::Eq => "eq",
                    CmpOp::Ne => "ne",
                    CmpOp::Lt => "slt",
                    CmpOp::Le => "sle",
                    CmpOp::Gt => "sgt",
                    CmpOp::Ge => "sge",
                };
                self.e.cmpi(pred, x, y)
            }
            None => {
                // Pointers compare as addresses.
                let i64t = self.e.ty("i64");
                let xi = self.e.op1("llvm.ptrtoint", &[x], i64t, &[])?;
                let yi = self.e.op1("llvm.ptrtoint", &[y], i64t, &[])?;
                self.compare(op, Some(Scalar::I64), xi, yi)
            }
        }
    }

    /// An i32/i64 `x` rounded to odd at 24 significant bits (cut to 24
    /// bits toward -inf, then the last kept bit set where bits were cut: the
    /// odd one of the two neighbours), so that it converts to f32 exactly
    /// and f32 → bf16 rounds once to nearest even, as an int → bf16 cast
    /// must (docs/LANGUAGE.md). `sitofp` to f32 and then to bf16 rounds
    /// twice (i32 16777217·2^7 + 1 …); `sitofp` straight to bf16 is
    /// `cvt.rn.bf16.s32` on sm_90 but promoted through f32 on sm_80.
    fn round_to_odd_24(&mut self, x: V, s: Scalar) -> Result<V, CodegenError> {
        let bits: i64 = if s == Scalar::I64 { 64 } else { 32 };
        let c = |me: &mut Self, v: i64| me.constant(Const::Int(v), s);
        let t = self.e.ty(scalar_ty(s));
        // |x| - (x < 0): the significant bits of x, one fewer only for a
        // negative power of two (exact anyway).
        let sh = c(self, bits - 1)?;
        let sign = self.e.binop("arith.shrsi", x, sh)?;
        let mag = self.e.binop("arith.xori", x, sign)?;
        let lz = self
            .e
            .op1("llvm.intr.ctlz", &[mag], t, &[("is_zero_poison", "false")])?;
        let keep = c(self, bits - 24)?;
        let cut = self.e.binop("arith.subi", keep, lz)?;
        let zero = c(self, 0)?;
        let cut = self.e.binop("arith.maxsi", cut, zero)?;
        let one = c(self, 1)?;
        let ulp = self.e.binop("arith.shli", one, cut)?;
        let low = self.e.binop("arith.subi", ulp, one)?;
        let dropped = self.e.binop("arith.andi", x, low)?;
        let inexact = self.e.cmpi("ne", dropped, zero)?;
        let kept = self.e.binop("arith.xori", x, dropped)?;
        let odd = self.e.select(inexact, ulp, zero)?;
        self.e.binop("arith.ori", kept, odd)
    }

    /// An i32/i64 `x` clamped to ±65520, which f16 rounds to ±inf like any
    /// larger magnitude: the f32 conversion then cannot overflow f16 unseen.
    /// LLVM's InstCombine folds `fpext(sitofp x to half)` into `sitofp x
    /// to float` when the known bits of x leave at most 11 significant bits
    /// (`v << 27`), ignoring f16's exponent range: the sum of such a cast
    /// was finite on the GPU where f16 gives ±inf.
    fn clamp_to_f16_range(&mut self, x: V, s: Scalar) -> Result<V, CodegenError> {
        let hi = self.constant(Const::Int(65520), s)?;
        let lo = self.constant(Const::Int(-65520), s)?;
        let x = self.e.binop("arith.minsi", x, hi)?;
        self.e.binop("arith.maxsi", x, lo)
    }

    pub(super) fn cast(&mut self, x: V, from: Scalar, to: Scalar) -> Result<V, CodegenError> {
        if from == to {
            return Ok(x);
        }
        let tt = self.e.ty(scalar_ty(to));
        let f32t = self.e.ty("f32");
        match (from.is_float(), to.is_float()) {
            (true, true) => {
                let w = self.widen(x, from)?;
                self.narrow(w, to)
            }
            (false, false) => {
                if from == Scalar::I1 {
                    self.e.op1("arith.extui", &[x], tt, &[])
                } else if to == Scalar::I1 {
                    let z = self.constant(Const::Int(0), from)?;
                    self.e.cmpi("ne", x, z)
                } else if to.size_bytes() > from.size_bytes() {
                    self.e.op1("arith.extsi", &[x], tt, &[])
                } else {
                    self.e.op1("arith.trunci", &[x], tt, &[])
                }
            }
            (false, true) => {
                let name = if from == Scalar::I1 {
                    "arith.uitofp"
                } else {
                    "arith.sitofp"
                };
                let x = match (from, to) {
                    (Scalar::I1, _) | (_, Scalar::F32) => x,
                    (_, Scalar::BF16) => self.round_to_odd_24(x, from)?,
                    _ => self.clamp_to_f16_range(x, from)?,
                };
                let f = self.e.op1(name, &[x], f32t, &[])?;
                self.cast(f, Scalar::F32, to)
            }
            (true, false) => {
                let w = self.widen(x, from)?;
                if to == Scalar::I1 {
                    let z = self.f32(0.0)?;
                    return self.e.cmpf("une", w, z);
                }
                let intrin = format!("llvm.fptosi.sat.{}.f32", scalar_ty(to));
                self.e.call_intrinsic(&intrin, &[w], tt)
            }
        }
    }
}

/// [`Arith`] as MLIR ops on one f32 register: the `math` functions (`sin cos
/// erf log1p expm1 pow`) are emitted through it. Only correctly rounded
/// instructions (`fma.rn`, `add.rn`, `div.rn`, …), no libdevice.
struct Mlir<'a, 'c>(&'a mut Emitter<'c>);

impl Mlir<'_, '_> {
    fn f(&mut self, name: &str, args: &[V]) -> Result<V, CodegenError> {
        let t = self.0.ty("f32");
        self.0.op1(name, args, t, &[])
    }
    fn i(&mut self, name: &str, args: &[V]) -> Result<V, CodegenError> {
        let t = self.0.ty("i32");
        self.0.op1(name, args, t, &[])
    }
    fn llvm_f(&mut self, name: &str, args: &[V]) -> Result<V, CodegenError> {
        let t = self.0.ty("f32");
        self.0
            .op1(name, args, t, &[("fastmathFlags", "#llvm.fastmath<none>")])
    }
}

impl Arith for Mlir<'_, '_> {
    type F = V;
    type I = V;
    type B = V;
    type E = CodegenError;
    fn cf(&mut self, x: f32) -> Result<V, CodegenError> {
        let t = self.0.ty("f32");
        self.0.constant(&format!("0x{:08X} : f32", x.to_bits()), t)
    }
    fn ci(&mut self, x: i32) -> Result<V, CodegenError> {
        self.0.i32(x as i64)
    }
    fn add(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.f("arith.addf", &[a, b])
    }
    fn sub(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.f("arith.subf", &[a, b])
    }
    fn mul(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.f("arith.mulf", &[a, b])
    }
    fn div(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.f("arith.divf", &[a, b])
    }
    fn fma(&mut self, a: V, b: V, c: V) -> Result<V, CodegenError> {
        // `llvm.intr.fma` would become a libdevice call in convert-gpu-to-nvvm.
        let t = self.0.ty("f32");
        self.0.call_intrinsic("llvm.fma.f32", &[a, b, c], t)
    }
    fn neg(&mut self, a: V) -> Result<V, CodegenError> {
        self.f("arith.negf", &[a])
    }
    fn abs(&mut self, a: V) -> Result<V, CodegenError> {
        // `llvm.intr.fabs` is illegal after convert-gpu-to-nvvm.
        let t = self.0.ty("f32");
        self.0.call_intrinsic("llvm.fabs.f32", &[a], t)
    }
    fn max(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.llvm_f("llvm.intr.maxnum", &[a, b])
    }
    fn min(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.llvm_f("llvm.intr.minnum", &[a, b])
    }
    fn lt(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.cmpf("olt", a, b)
    }
    fn eq(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.cmpf("oeq", a, b)
    }
    fn is_nan(&mut self, a: V) -> Result<V, CodegenError> {
        self.0.cmpf("uno", a, a)
    }
    fn sel(&mut self, c: V, a: V, b: V) -> Result<V, CodegenError> {
        self.0.select(c, a, b)
    }
    fn or(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.binop("arith.ori", a, b)
    }
    fn and(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.binop("arith.andi", a, b)
    }
    fn not(&mut self, a: V) -> Result<V, CodegenError> {
        let t = self.0.bool(true)?;
        self.0.binop("arith.xori", a, t)
    }
    fn xor_b(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.binop("arith.xori", a, b)
    }
    fn bits(&mut self, a: V) -> Result<V, CodegenError> {
        self.i("arith.bitcast", &[a])
    }
    fn bits_to_f(&mut self, a: V) -> Result<V, CodegenError> {
        self.f("arith.bitcast", &[a])
    }
    fn iadd(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.binop("arith.addi", a, b)
    }
    fn isub(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.binop("arith.subi", a, b)
    }
    fn iand(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.binop("arith.andi", a, b)
    }
    fn shl(&mut self, a: V, n: u32) -> Result<V, CodegenError> {
        let n = self.0.i32(n as i64)?;
        self.0.binop("arith.shli", a, n)
    }
    fn shr(&mut self, a: V, n: u32) -> Result<V, CodegenError> {
        let n = self.0.i32(n as i64)?;
        self.0.binop("arith.shrsi", a, n)
    }
    fn ieq(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.cmpi("eq", a, b)
    }
    fn ilt(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.cmpi("slt", a, b)
    }
    fn ult(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.cmpi("ult", a, b)
    }
    fn sel_i(&mut self, c: V, a: V, b: V) -> Result<V, CodegenError> {
        self.0.select(c, a, b)
    }
    fn ior(&mut self, a: V, b: V) -> Result<V, CodegenError> {
        self.0.binop("arith.ori", a, b)
    }
    fn inot(&mut self, a: V) -> Result<V, CodegenError> {
        let m = self.0.i32(-1)?;
        self.0.binop("arith.xori", a, m)
    }
    fn umul_wide(&mut self, a: V, b: V) -> Result<(V, V), CodegenError> {
        let t = self.0.ty("i32");
        let r = self.0.op("arith.mului_extended", &[a, b], &[t, t], &[])?;
        Ok((r[0], r[1]))
    }
    fn shl_v(&mut self, a: V, n: V) -> Result<V, CodegenError> {
        self.0.binop("arith.shli", a, n)
    }
    fn lshr_v(&mut self, a: V, n: V) -> Result<V, CodegenError> {
        self.0.binop("arith.shrui", a, n)
    }
    fn to_int(&mut self, a: V) -> Result<V, CodegenError> {
        let t = self.0.ty("i32");
        self.0.call_intrinsic("llvm.fptosi.sat.i32.f32", &[a], t)
    }
    fn to_float(&mut self, a: V) -> Result<V, CodegenError> {
        self.f("arith.sitofp", &[a])
    }
    fn repeat(&mut self, n: V, init: V, body: &mut Step<'_, Self>) -> Result<V, CodegenError> {
        let (lb, step) = (self.0.i32(0)?, self.0.i32(1)?);
        let (it, ft) = (self.0.ty("i32"), self.0.ty("f32"));
        let args = self.0.push_block(&[it, ft]);
        let r = body(self, args[1])?;
        self.0.op("scf.yield", &[r], &[], &[])?;
        let region = self.0.pop_region();
        let out = self
            .0
            .op_full("scf.for", &[lb, n, step, init], &[ft], &[], vec![region])?;
        Ok(out[0])
    }
}
