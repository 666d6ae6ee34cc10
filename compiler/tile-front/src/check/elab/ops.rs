//! Unary and binary operators: type promotion of typed operands, compile-time
//! arithmetic on untyped literals and constants, and pointer arithmetic.

use super::{broadcast_mismatch, Cx, Reported, Val, R, TV};
use crate::check::types::{broadcast_shapes, literal_meets, promote, shape_str};
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{BinOp, UnOp};
use tile_ir::consteval;
use tile_ir::{BinaryOp, CmpOp, Const, Elem, Op, Scalar, Span, Type, UnaryOp};

impl<'m> Cx<'m> {
    pub(super) fn unary(&mut self, op: UnOp, v: Val, span: Span) -> R<Val> {
        match (op, v) {
            (UnOp::Neg, Val::Int(i)) => Ok(Val::Int(i.wrapping_neg())),
            (UnOp::Neg, Val::Float(f)) => Ok(Val::Float(-f)),
            (UnOp::Not, Val::Int(i)) => Ok(Val::Int(!i)),
            (_, Val::Unit) => self.no_value(span),
            (op, Val::Typed(tv)) => {
                let ok = match (op, tv.ty.elem) {
                    (UnOp::Neg, Elem::Scalar(s)) => s != Scalar::I1,
                    (UnOp::Not, Elem::Scalar(s)) => s.is_int(),
                    _ => false,
                };
                if !ok {
                    let sym = if op == UnOp::Neg { "-" } else { "!" };
                    return self.err(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!("cannot apply `{sym}` to `{}`", tv.ty),
                            span,
                        )
                        .with_label("wrong operand type"),
                    );
                }
                let top = if op == UnOp::Neg {
                    UnaryOp::Neg
                } else {
                    UnaryOp::Not
                };
                Ok(Val::Typed(self.unary_op(top, tv, span)))
            }
            (UnOp::Not, Val::Float(_)) => self.err(Diagnostic::new(
                Code::TypeMismatch,
                "cannot apply `!` to a float",
                span,
            )),
        }
    }

    /// Emit a unary TIR op (folding compile-time scalars).
    pub fn unary_op(&mut self, op: UnaryOp, tv: TV, span: Span) -> TV {
        let s = tv.elem().unwrap_or(Scalar::F32);
        if let (Some(k), true) = (tv.konst, tv.ty.is_scalar()) {
            if let Some(c) = consteval::unary(op, k, s) {
                return self.konst(c, s, span);
            }
        }
        let ty = tv.ty.clone();
        self.emit(Op::Unary(op, tv.id), ty, span)
    }

    /// Binary operators, with Triton-like promotion and numpy-like broadcasting.
    pub fn binary(&mut self, op: BinOp, a: Val, b: Val, span: Span, sa: Span, sb: Span) -> R<Val> {
        if matches!(a, Val::Unit) {
            return self.no_value(sa);
        }
        if matches!(b, Val::Unit) {
            return self.no_value(sb);
        }
        // Two literals: compile-time arithmetic on untyped values.
        if !matches!(a, Val::Typed(_)) && !matches!(b, Val::Typed(_)) {
            return self.literal_binary(op, &a, &b, span);
        }
        let is_ptr = |v: &Val| matches!(v, Val::Typed(t) if matches!(t.ty.elem, Elem::Ptr(_)));
        if is_ptr(&a) || is_ptr(&b) {
            return self.pointer_binary(op, a, b, span, sa, sb);
        }
        let elem_of = |v: &Val, other: &Val| -> Scalar {
            match (v, other) {
                (Val::Typed(t), _) => t.elem().unwrap_or(Scalar::I32),
                (lit, Val::Typed(o)) => literal_meets(
                    matches!(lit, Val::Float(_)),
                    o.elem().unwrap_or(Scalar::I32),
                ),
                _ => Scalar::I32,
            }
        };
        let (ea, eb) = (elem_of(&a, &b), elem_of(&b, &a));
        let mut elem = promote(ea, eb);
        let kind = match op {
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                if elem == Scalar::I1 {
                    elem = Scalar::I32;
                }
                None
            }
            BinOp::And | BinOp::Or => (ea != Scalar::I1 || eb != Scalar::I1)
                .then_some("`i1` operands (compare first, e.g. `x != 0`)"),
            BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor => {
                (!elem.is_int()).then_some("integer or `i1` operands")
            }
            BinOp::Shl | BinOp::Shr => {
                (!elem.is_int() || elem == Scalar::I1).then_some("integer operands")
            }
            _ => None,
        };
        if let Some(need) = kind {
            let (da, db) = (self.describe(&a), self.describe(&b));
            return self.err(
                Diagnostic::new(
                    Code::TypeMismatch,
                    format!("`{}` needs {need}, found `{da}` and `{db}`", op.symbol()),
                    span,
                )
                .with_secondary(sa, format!("`{da}`"))
                .with_secondary(sb, format!("`{db}`")),
            );
        }
        let ta = self.materialize(&a, elem, sa)?;
        let tb = self.materialize(&b, elem, sb)?;
        if elem.is_int() && elem != Scalar::I1 {
            // Before broadcasting, while a constant scalar operand is still known.
            if let Some(bop) = int_binary_op(op) {
                self.check_int_binary(bop, elem, ta.konst, tb.konst, span)?;
            }
        }
        let Some(shape) = broadcast_shapes(&ta.ty.shape, &tb.ty.shape) else {
            return self.err(broadcast_mismatch(&ta.ty.shape, &tb.ty.shape, sa, sb, span));
        };
        let ta = self.broadcast(ta, &shape, span);
        let tb = self.broadcast(tb, &shape, span);
        if let Some(c) = op.comparison() {
            if let (Some(x), Some(y)) = (ta.konst, tb.konst) {
                return Ok(Val::Typed(self.konst(
                    consteval::cmp(c, x, y, elem),
                    Scalar::I1,
                    span,
                )));
            }
            let ty = Type::tile(Scalar::I1, shape);
            return Ok(Val::Typed(self.emit(Op::Cmp(c, ta.id, tb.id), ty, span)));
        }
        let bop = match op {
            BinOp::Add => BinaryOp::Add,
            BinOp::Sub => BinaryOp::Sub,
            BinOp::Mul => BinaryOp::Mul,
            BinOp::Div => BinaryOp::Div,
            BinOp::Rem => BinaryOp::Rem,
            BinOp::And | BinOp::BitAnd => BinaryOp::And,
            BinOp::Or | BinOp::BitOr => BinaryOp::Or,
            BinOp::BitXor => BinaryOp::Xor,
            BinOp::Shl => BinaryOp::Shl,
            _ => BinaryOp::Shr,
        };
        self.binary_op(bop, ta, tb, span).map(Val::Typed)
    }

    /// Emit a binary TIR op on same-typed operands (folding compile-time scalars).
    pub fn binary_op(&mut self, op: BinaryOp, a: TV, b: TV, span: Span) -> R<TV> {
        let s = a.elem().unwrap_or(Scalar::I32);
        if s.is_int() && s != Scalar::I1 {
            self.check_int_binary(op, s, a.konst, b.konst, span)?;
        }
        if let (Some(x), Some(y)) = (a.konst, b.konst) {
            match consteval::binary(op, x, y, s) {
                Some(c) if s.is_float() && !consteval::as_f64(c).is_finite() => {
                    let (x, y) = (consteval::as_f64(x), consteval::as_f64(y));
                    return self.float_not_finite(op, x, y, s, span);
                }
                Some(c) => return Ok(self.konst(c, s, span)),
                None if s.is_int() && matches!(op, BinaryOp::Div | BinaryOp::Rem) => {
                    return self.err(
                        Diagnostic::new(
                            Code::ConstEval,
                            "division by zero in a compile-time expression",
                            span,
                        )
                        .with_label("divides by zero"),
                    );
                }
                None => {}
            }
        }
        let ty = a.ty.clone();
        Ok(self.emit(Op::Binary(op, a.id, b.id), ty, span))
    }

    /// The compile-time errors of integer `op` on operands of type `s` whose
    /// constant values are known where `x`/`y` are `Some` (docs/LANGUAGE.md,
    /// "Integer and float semantics"): folding that overflows the type
    /// (E0033), a constant shift amount outside `0..width` (E0038), a
    /// run-time value divided by a constant zero (E0039).
    fn check_int_binary(
        &mut self,
        op: BinaryOp,
        s: Scalar,
        x: Option<Const>,
        y: Option<Const>,
        span: Span,
    ) -> R<()> {
        let bits: i64 = if s == Scalar::I64 { 64 } else { 32 };
        let y = y.map(consteval::as_i64);
        if let (BinaryOp::Shl | BinaryOp::Shr, Some(amt)) = (op, y) {
            if !(0..bits).contains(&amt) {
                let sym = if op == BinaryOp::Shl { "<<" } else { ">>" };
                return self.err(
                    Diagnostic::new(
                        Code::ShiftRange,
                        format!("shift amount {amt} is out of range for `{}`", s.name()),
                        span,
                    )
                    .with_label(format!("`{sym} {amt}` on a {bits}-bit integer"))
                    .with_hint(format!(
                        "a shift amount must be in 0..{bits}; widen the operand (`as i64`) or shift by less"
                    )),
                );
            }
        }
        let Some(yv) = y else { return Ok(()) };
        let Some(xv) = x.map(consteval::as_i64) else {
            if matches!(op, BinaryOp::Div | BinaryOp::Rem) && yv == 0 {
                let what = if op == BinaryOp::Div {
                    "division"
                } else {
                    "remainder"
                };
                return self.err(
                    Diagnostic::new(
                        Code::DivByZero,
                        format!("{what} of a run-time value by a constant zero"),
                        span,
                    )
                    .with_label("the divisor is always 0")
                    .with_hint("at run time `x / 0` is -1 and `x % 0` is x; divide by a non-zero value (check the meta-parameter's value)"),
                );
            }
            return Ok(());
        };
        let (lo, hi) = if bits == 32 {
            (i32::MIN as i128, i32::MAX as i128)
        } else {
            (i64::MIN as i128, i64::MAX as i128)
        };
        let (a, b) = (xv as i128, yv as i128);
        let (sym, r) = match op {
            BinaryOp::Add => ("+", a + b),
            BinaryOp::Sub => ("-", a - b),
            BinaryOp::Mul => ("*", a * b),
            BinaryOp::Div if b != 0 => ("/", a / b),
            _ => return Ok(()),
        };
        if (lo..=hi).contains(&r) {
            return Ok(());
        }
        self.err(
            Diagnostic::new(
                Code::ConstEval,
                format!(
                    "integer overflow in a compile-time expression: {xv} {sym} {yv} does not fit in `{}`",
                    s.name()
                ),
                span,
            )
            .with_label(format!("= {r}, out of range for `{}`", s.name()))
            .with_hint("compute in `i64` (`x as i64`) or use smaller values"),
        )
    }

    pub(super) fn literal_binary(&mut self, op: BinOp, a: &Val, b: &Val, span: Span) -> R<Val> {
        let ce = |cx: &mut Self, what: &str| -> R<Val> {
            cx.err(
                Diagnostic::new(
                    Code::ConstEval,
                    format!("{what} in a compile-time expression"),
                    span,
                )
                .with_label("here"),
            )
        };
        if let (Val::Int(x), Val::Int(y)) = (a, b) {
            let (x, y) = (*x, *y);
            let r = match op {
                BinOp::Add => x.checked_add(y),
                BinOp::Sub => x.checked_sub(y),
                BinOp::Mul => x.checked_mul(y),
                BinOp::Div | BinOp::Rem if y == 0 => return ce(self, "division by zero"),
                BinOp::Div => x.checked_div(y),
                BinOp::Rem => x.checked_rem(y),
                BinOp::BitAnd => Some(x & y),
                BinOp::BitOr => Some(x | y),
                BinOp::BitXor => Some(x ^ y),
                BinOp::Shl => u32::try_from(y).ok().and_then(|y| x.checked_shl(y)),
                BinOp::Shr => u32::try_from(y).ok().and_then(|y| x.checked_shr(y)),
                BinOp::And | BinOp::Or => {
                    return self.err(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!(
                                "`{}` needs `i1` operands, found integer literals",
                                op.symbol()
                            ),
                            span,
                        )
                        .with_hint("use `true`/`false` or a comparison"),
                    )
                }
                _ => {
                    let c = cmp_of(op);
                    return Ok(Val::Typed(self.konst(
                        consteval::cmp(c, Const::Int(x), Const::Int(y), Scalar::I64),
                        Scalar::I1,
                        span,
                    )));
                }
            };
            return match r {
                Some(v) => Ok(Val::Int(v)),
                None => ce(self, "integer overflow"),
            };
        }
        let f = |v: &Val| match v {
            Val::Int(i) => *i as f64,
            Val::Float(f) => *f,
            _ => 0.0,
        };
        let (x, y) = (f(a), f(b));
        let bop = match op {
            BinOp::Add => Some(BinaryOp::Add),
            BinOp::Sub => Some(BinaryOp::Sub),
            BinOp::Mul => Some(BinaryOp::Mul),
            BinOp::Div => Some(BinaryOp::Div),
            BinOp::Rem => Some(BinaryOp::Rem),
            _ => None,
        };
        let r = match op {
            BinOp::Add => x + y,
            BinOp::Sub => x - y,
            BinOp::Mul => x * y,
            BinOp::Div => x / y,
            BinOp::Rem => x % y,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let c = cmp_of(op);
                return Ok(Val::Typed(self.konst(
                    consteval::cmp(c, Const::Float(x), Const::Float(y), Scalar::F32),
                    Scalar::I1,
                    span,
                )));
            }
            _ => {
                return self.err(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        format!(
                            "`{}` needs integer operands, found a float literal",
                            op.symbol()
                        ),
                        span,
                    )
                    .with_label("float operand"),
                )
            }
        };
        // A literal becomes f32 (or a narrower float type) where it is used:
        // it must be finite there.
        if let (Some(bop), false) = (bop, (r as f32).is_finite()) {
            return self.float_not_finite(bop, x, y, Scalar::F32, span);
        }
        Ok(Val::Float(r))
    }

    /// E0033 for compile-time float arithmetic `x op y` whose result in `s`
    /// is an infinity or NaN (docs/LANGUAGE.md, "Integer and float semantics":
    /// the language has no infinite or NaN constants).
    fn float_not_finite<T>(&mut self, op: BinaryOp, x: f64, y: f64, s: Scalar, span: Span) -> R<T> {
        // Every float type is at most f32: show the operands as f32.
        let (x, y) = (x as f32, y as f32);
        let expr = match op {
            BinaryOp::Add => format!("{x:?} + {y:?}"),
            BinaryOp::Sub => format!("{x:?} - {y:?}"),
            BinaryOp::Mul => format!("{x:?} * {y:?}"),
            BinaryOp::Div => format!("{x:?} / {y:?}"),
            BinaryOp::Rem => format!("{x:?} % {y:?}"),
            other => format!("{other:?}({x:?}, {y:?})").to_lowercase(),
        };
        let (message, label) = match op {
            BinaryOp::Div if y == 0.0 && x == 0.0 => (
                "constant division of zero by zero gives NaN".to_string(),
                format!("`{expr}` is NaN"),
            ),
            BinaryOp::Div if y == 0.0 => (
                "constant division by zero gives an infinity".to_string(),
                format!("`{expr}` is {}inf", if x < 0.0 { "-" } else { "" }),
            ),
            BinaryOp::Rem if y == 0.0 => (
                "constant remainder by zero gives NaN".to_string(),
                format!("`{expr}` is NaN"),
            ),
            _ => (
                format!("compile-time float arithmetic overflows `{}`", s.name()),
                format!("`{expr}` is out of the `{}` range", s.name()),
            ),
        };
        self.err(
            Diagnostic::new(Code::ConstEval, message, span)
                .with_label(label)
                .with_hint(NO_INFINITY_HINT),
        )
    }

    /// `ptr + int`, `int + ptr`, `ptr - int`: elementwise pointer offsets.
    pub(super) fn pointer_binary(
        &mut self,
        op: BinOp,
        a: Val,
        b: Val,
        span: Span,
        sa: Span,
        sb: Span,
    ) -> R<Val> {
        let is_ptr = |v: &Val| matches!(v, Val::Typed(t) if matches!(t.ty.elem, Elem::Ptr(_)));
        let bad = |cx: &mut Self, msg: String| -> R<Val> {
            cx.err(
                Diagnostic::new(Code::BadPointerArith, msg, span)
                    .with_label("pointer operation")
                    .with_hint("pointers only take integer offsets: `p + offs` or `p - offs`"),
            )
        };
        let (p, off, soff) = match (is_ptr(&a), is_ptr(&b), op) {
            (true, true, _) => {
                return bad(
                    self,
                    format!("cannot apply `{}` to two pointers", op.symbol()),
                )
            }
            (true, false, BinOp::Add | BinOp::Sub) => (a, b, sb),
            (false, true, BinOp::Add) => (b, a, sa),
            _ => return bad(self, format!("cannot apply `{}` to a pointer", op.symbol())),
        };
        let Val::Typed(p) = p else {
            return Err(Reported);
        };
        let off = match off {
            Val::Int(i) => self.with_default_type(Val::Int(i), soff)?,
            Val::Typed(t) if matches!(t.elem(), Some(Scalar::I32 | Scalar::I64)) => t,
            other => {
                let d = self.describe(&other);
                return bad(
                    self,
                    format!("pointer offsets must be i32 or i64, found `{d}`"),
                );
            }
        };
        let off = if op == BinOp::Sub {
            self.unary_op(UnaryOp::Neg, off, soff)
        } else {
            off
        };
        let Some(shape) = broadcast_shapes(&p.ty.shape, &off.ty.shape) else {
            return self.err(
                Diagnostic::new(
                    Code::ShapeMismatch,
                    format!(
                        "pointer shape {} and offset shape {} cannot be broadcast together",
                        shape_str(&p.ty.shape),
                        shape_str(&off.ty.shape)
                    ),
                    span,
                )
                .with_hint("add axes with `x[:, None]` / `x[None, :]`"),
            );
        };
        let p = self.broadcast(p, &shape, span);
        let off = self.broadcast(off, &shape, span);
        let ty = p.ty.clone();
        Ok(Val::Typed(self.emit(
            Op::AddPtr {
                ptr: p.id,
                offset: off.id,
            },
            ty,
            span,
        )))
    }
}

/// The comparison of an operator its caller knows to be one.
fn cmp_of(op: BinOp) -> CmpOp {
    op.comparison().unwrap_or(CmpOp::Ge)
}

/// The integer TIR op of an arithmetic or shift operator (not comparisons or
/// bitwise ops, which cannot overflow or fault).
fn int_binary_op(op: BinOp) -> Option<BinaryOp> {
    Some(match op {
        BinOp::Add => BinaryOp::Add,
        BinOp::Sub => BinaryOp::Sub,
        BinOp::Mul => BinaryOp::Mul,
        BinOp::Div => BinaryOp::Div,
        BinOp::Rem => BinaryOp::Rem,
        BinOp::Shl => BinaryOp::Shl,
        BinOp::Shr => BinaryOp::Shr,
        _ => return None,
    })
}

/// The help of every "constant gives an infinity or NaN" error.
const NO_INFINITY_HINT: &str = "there are no infinite or NaN constants; for a masked-off or \
     \"minus infinity\" start value use a large finite one such as `-1.0e30`";
