//! Builtin functions: argument checking and elaboration to TIR.

use super::elab::{broadcast_mismatch, plural, Cx, Reported, Val, R, TV};
use super::types::{broadcast_shapes, literal_meets, promote, shape_str};
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{BinOp, Expr, ExprKind};
use tile_ir::consteval;
use tile_ir::{BinaryOp, Const, Elem, Op, ReduceOp, Scalar, Span, Type, UnaryOp};

/// Every builtin name (helpers may not reuse them).
pub const BUILTINS: &[&str] = &[
    "program_id",
    "num_programs",
    "arange",
    "zeros",
    "full",
    "load",
    "store",
    "atomic_add",
    "where",
    "exp",
    "exp2",
    "log",
    "sqrt",
    "rsqrt",
    "sigmoid",
    "tanh",
    "sin",
    "cos",
    "erf",
    "log1p",
    "expm1",
    "pow",
    "fma",
    "abs",
    "maximum",
    "minimum",
    "sum",
    "max",
    "min",
    "dot",
    "reshape",
    "trans",
    "broadcast_to",
    "cdiv",
];

pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

/// The closest of `candidates` to `name` within two edits (and not `name`
/// itself), for "did you mean" hints: builtins, helpers, variables,
/// meta-parameters, tune keys.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
                cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    }
    if name.len() > 40 {
        return None;
    }
    // No guess for one- or two-letter names (`z` is one edit from every other
    // letter), one edit for three letters.
    let limit = match name.chars().count() {
        0..=2 => return None,
        3 => 1,
        _ => 2,
    };
    candidates
        .into_iter()
        .filter(|c| *c != name && c.len() <= 40)
        .map(|c| (dist(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// Elaborate a builtin call; `None` when `name` is not a builtin.
pub(super) fn call(cx: &mut Cx, name: &str, args: &[Expr], span: Span) -> Option<R<Val>> {
    let r = match name {
        "program_id" | "num_programs" => grid(cx, name, args, span),
        "arange" => arange(cx, args, span),
        "zeros" | "full" => fill(cx, name, args, span),
        "load" => load(cx, args, span),
        "store" | "atomic_add" => store(cx, name, args, span),
        "where" => where_(cx, args, span),
        "exp" | "exp2" | "log" | "sqrt" | "rsqrt" | "sigmoid" | "tanh" | "sin" | "cos" | "erf"
        | "log1p" | "expm1" | "abs" => math(cx, name, args, span),
        "pow" => pow(cx, args, span),
        "fma" => fma(cx, args, span),
        "maximum" | "minimum" => minmax(cx, name, args, span),
        "sum" | "max" | "min" => reduce(cx, name, args, span),
        "dot" => dot(cx, args, span),
        "reshape" | "broadcast_to" => reshape(cx, name, args, span),
        "trans" => trans(cx, args, span),
        "cdiv" => cdiv(cx, args, span),
        _ => return None,
    };
    Some(r)
}

fn arity(
    cx: &mut Cx,
    name: &str,
    args: &[Expr],
    min: usize,
    max: usize,
    usage: &str,
    span: Span,
) -> R<()> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return cx.err(
            Diagnostic::new(
                Code::ArgCount,
                format!(
                    "`{name}` takes {want} argument{}, but {} were given",
                    plural(max),
                    args.len()
                ),
                span,
            )
            .with_label("wrong number of arguments")
            .with_hint(format!("usage: `{usage}`")),
        );
    }
    Ok(())
}

/// A compile-time integer argument.
fn const_int(cx: &mut Cx, e: &Expr, what: &str) -> R<i64> {
    match cx.expr(e)? {
        Val::Int(i) => Ok(i),
        Val::Typed(TV {
            konst: Some(k), ty, ..
        }) if ty.is_scalar() && ty.scalar_elem().is_some_and(|s| s.is_int()) => {
            Ok(consteval::as_i64(k))
        }
        v => {
            let found = cx.describe(&v);
            cx.err(
                Diagnostic::new(
                    Code::NotConst,
                    format!("{what} must be a compile-time integer, found `{found}`"),
                    e.span,
                )
                .with_label("not known at compile time")
                .with_hint(
                    "use literals, meta-parameters (`const` parameters) and arithmetic on them",
                ),
            )
        }
    }
}

/// `[a, b, …]` of compile-time integers (or one integer for a 1-D shape).
fn shape_arg(cx: &mut Cx, e: &Expr) -> R<Vec<u32>> {
    let items: Vec<&Expr> = match &e.kind {
        ExprKind::List(items) => items.iter().collect(),
        _ => vec![e],
    };
    let mut out = Vec::new();
    for it in items {
        let v = const_int(cx, it, "a shape dimension")?;
        if !(1..=(1 << 20)).contains(&v) {
            return cx.err(
                Diagnostic::new(
                    Code::BadArgument,
                    format!("shape dimension {v} is out of range"),
                    it.span,
                )
                .with_label("must be 1 to 1048576"),
            );
        }
        out.push(v as u32);
    }
    cx.check_shape(&out, e.span)?;
    Ok(out)
}

fn dtype_arg(cx: &mut Cx, e: &Expr) -> R<Scalar> {
    if let ExprKind::Name(n) = &e.kind {
        if let Some(s) = Scalar::from_name(n) {
            return Ok(s);
        }
    }
    cx.err(
        Diagnostic::new(Code::BadArgument, "expected a dtype", e.span)
            .with_label("not a dtype")
            .with_hint("one of i1, i32, i64, f16, bf16, f32"),
    )
}

fn value(cx: &mut Cx, e: &Expr) -> R<TV> {
    let v = cx.expr(e)?;
    cx.with_default_type(v, e.span)
}

fn axis_of(cx: &mut Cx, e: &Expr, rank: usize, what: &str) -> R<u32> {
    let a = const_int(cx, e, what)?;
    axis_in_range(cx, a, e, rank, what)
}

/// The axis argument of `max(x, axis)` / `min(x, axis)`: a value that is not
/// a compile-time integer (`max(v, 0.0)`) is most likely meant as the
/// elementwise `maximum(v, 0.0)`.
fn reduce_minmax_axis(cx: &mut Cx, name: &str, e: &Expr, rank: usize) -> R<u32> {
    let v = cx.expr(e)?;
    let a = match &v {
        Val::Int(i) => Some(*i),
        Val::Typed(TV {
            konst: Some(k), ty, ..
        }) if ty.is_scalar() && ty.scalar_elem().is_some_and(|s| s.is_int()) => {
            Some(consteval::as_i64(*k))
        }
        _ => None,
    };
    let Some(a) = a else {
        let found = cx.describe(&v);
        let elementwise = if name == "max" { "maximum" } else { "minimum" };
        return cx.err(
            Diagnostic::new(
                Code::NotConst,
                format!("`{name}(x, axis)` is a reduction: its second argument is the axis, found `{found}`"),
                e.span,
            )
            .with_label("expected a compile-time axis")
            .with_hint(format!(
                "for the elementwise {elementwise} of two values use `{elementwise}(a, b)`"
            )),
        );
    };
    axis_in_range(cx, a, e, rank, "reduction axis")
}

fn axis_in_range(cx: &mut Cx, a: i64, e: &Expr, rank: usize, what: &str) -> R<u32> {
    let r = rank as i64;
    let a2 = if a < 0 { a + r } else { a };
    if !(0..r).contains(&a2) {
        return cx.err(
            Diagnostic::new(
                Code::BadAxis,
                format!("{what} {a} is out of range for a tile of rank {rank}"),
                e.span,
            )
            .with_label(format!("must be in {}..{rank}", -r)),
        );
    }
    Ok(a2 as u32)
}

fn grid(cx: &mut Cx, name: &str, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, name, args, 1, 1, &format!("{name}(axis)"), span)?;
    let a = const_int(cx, &args[0], "the grid axis")?;
    if !(0..=2).contains(&a) {
        return cx.err(
            Diagnostic::new(
                Code::BadAxis,
                format!("grid axis {a} is out of range"),
                args[0].span,
            )
            .with_label("must be 0, 1 or 2"),
        );
    }
    let op = if name == "program_id" {
        Op::ProgramId(a as u8)
    } else {
        Op::NumPrograms(a as u8)
    };
    Ok(Val::Typed(cx.emit(op, Type::scalar(Scalar::I32), span)))
}

fn arange(cx: &mut Cx, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, "arange", args, 2, 2, "arange(start, end)", span)?;
    let s = const_int(cx, &args[0], "the start of `arange`")?;
    let e = const_int(cx, &args[1], "the end of `arange`")?;
    let n = e.saturating_sub(s);
    if n <= 0 || i32::try_from(s).is_err() || i32::try_from(e).is_err() {
        return cx.err(
            Diagnostic::new(
                Code::BadArgument,
                format!("`arange({s}, {e})` is empty or out of the i32 range"),
                span,
            )
            .with_label("needs start < end, both i32"),
        );
    }
    if n > (1 << 20) {
        return cx.err(Diagnostic::new(
            Code::NotPowerOfTwo,
            format!("`arange` of {n} elements is too large"),
            span,
        ));
    }
    cx.check_shape(&[n as u32], span)?;
    Ok(Val::Typed(cx.emit(
        Op::Arange { start: s, end: e },
        Type::tile(Scalar::I32, vec![n as u32]),
        span,
    )))
}

fn fill(cx: &mut Cx, name: &str, args: &[Expr], span: Span) -> R<Val> {
    let (shape_e, val_e, dt_e) = if name == "zeros" {
        arity(cx, name, args, 2, 2, "zeros(shape, dtype)", span)?;
        (&args[0], None, &args[1])
    } else {
        arity(cx, name, args, 3, 3, "full(shape, value, dtype)", span)?;
        (&args[0], Some(&args[1]), &args[2])
    };
    let shape = shape_arg(cx, shape_e);
    let dt = dtype_arg(cx, dt_e);
    let (shape, dt) = (shape?, dt?);
    let v = match val_e {
        None => cx.konst(Const::Int(0), dt, span),
        Some(e) => {
            let v = cx.expr(e)?;
            if let Val::Typed(t) = &v {
                if !t.ty.is_scalar() || matches!(t.ty.elem, Elem::Ptr(_)) {
                    let d = t.ty.to_string();
                    return cx.err(
                        Diagnostic::new(
                            Code::BadArgument,
                            format!("the value of `full` must be a number, found `{d}`"),
                            e.span,
                        )
                        .with_label("not a scalar number"),
                    );
                }
            }
            let v = match v {
                Val::Float(f) if dt.is_int() => {
                    Val::Typed(cx.konst(Const::Float(f), Scalar::F32, e.span))
                }
                v => v,
            };
            cx.materialize(&v, dt, e.span)?
        }
    };
    Ok(Val::Typed(cx.broadcast(v, &shape, span)))
}

/// The pointer argument of a memory op.
fn pointer(cx: &mut Cx, e: &Expr, op: &str) -> R<(TV, Scalar)> {
    let v = cx.expr(e)?;
    match v {
        Val::Typed(t) => {
            match t.ty.elem {
                Elem::Ptr(s) => Ok((t, s)),
                Elem::Scalar(_) => {
                    let d = t.ty.to_string();
                    let mut diag = Diagnostic::new(
                        Code::NotPointer,
                        format!("`{op}` needs a pointer, found `{d}`"),
                        e.span,
                    )
                    .with_label("not a pointer");
                    diag = match cx.shadowed_pointer(e) {
                    Some((at, param, n)) => diag
                        .with_secondary(at, format!("this `let` shadows the pointer parameter `{n}`"))
                        .with_secondary(param, "the pointer parameter")
                        .with_hint(format!("give the loaded value another name, e.g. `let {n}v = load({n} + …);`")),
                    None => diag.with_hint("pass a pointer parameter plus offsets, e.g. `x + offs`"),
                };
                    cx.err(diag)
                }
            }
        }
        other => {
            let d = cx.describe(&other);
            cx.err(
                Diagnostic::new(
                    Code::NotPointer,
                    format!("`{op}` needs a pointer, found `{d}`"),
                    e.span,
                )
                .with_label("not a pointer"),
            )
        }
    }
}

fn mask(cx: &mut Cx, e: &Expr, shape: &[u32]) -> R<TV> {
    let v = cx.expr(e)?;
    let t = match v {
        Val::Typed(t) if t.ty.elem == Elem::Scalar(Scalar::I1) => t,
        other => {
            let d = cx.describe(&other);
            return cx.err(
                Diagnostic::new(
                    Code::BadMask,
                    format!("a mask must be `i1`, found `{d}`"),
                    e.span,
                )
                .with_label("not i1")
                .with_hint("build masks with comparisons, e.g. `offs < n`"),
            );
        }
    };
    match broadcast_shapes(&t.ty.shape, shape) {
        Some(s) if s == shape => Ok(cx.broadcast(t, shape, e.span)),
        _ => {
            let d = shape_str(&t.ty.shape);
            cx.err(
                Diagnostic::new(
                    Code::BadMask,
                    format!(
                        "mask of shape {d} does not fit the pointer tile of shape {}",
                        shape_str(shape)
                    ),
                    e.span,
                )
                .with_label(format!("shape {d}")),
            )
        }
    }
}

fn load(cx: &mut Cx, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, "load", args, 1, 3, "load(ptr, mask, other)", span)?;
    let (p, s) = pointer(cx, &args[0], "load")?;
    let shape = p.ty.shape.clone();
    let m = match args.get(1) {
        Some(e) => Some(mask(cx, e, &shape)?),
        None => None,
    };
    let other = match args.get(2) {
        None => None,
        Some(e) => {
            let v = cx.expr(e)?;
            let t = match v {
                Val::Int(_) | Val::Float(_) => {
                    cx.materialize(&v, s, e.span).map_err(|_| Reported)?
                }
                Val::Typed(t) if t.ty.elem == Elem::Scalar(s) => t,
                other => {
                    let d = cx.describe(&other);
                    return cx.err(
                        Diagnostic::new(
                            Code::BadOther,
                            format!(
                                "`other` must be `{}` like the loaded elements, found `{d}`",
                                s.name()
                            ),
                            e.span,
                        )
                        .with_label(format!("`{d}`"))
                        .with_hint(format!("convert it with `as {}`", s.name())),
                    );
                }
            };
            match broadcast_shapes(&t.ty.shape, &shape) {
                Some(b) if b == shape => Some(cx.broadcast(t, &shape, e.span)),
                _ => {
                    let d = shape_str(&t.ty.shape);
                    return cx.err(
                        Diagnostic::new(
                            Code::BadOther,
                            format!(
                                "`other` of shape {d} does not fit the loaded tile of shape {}",
                                shape_str(&shape)
                            ),
                            e.span,
                        )
                        .with_label(format!("shape {d}"))
                        .with_hint("use a scalar or a tile of the pointer's shape"),
                    );
                }
            }
        }
    };
    let ty = Type::tile(s, shape);
    Ok(Val::Typed(cx.emit(
        Op::Load {
            ptr: p.id,
            mask: m.map(|m| m.id),
            other: other.map(|o| o.id),
        },
        ty,
        span,
    )))
}

fn store(cx: &mut Cx, name: &str, args: &[Expr], span: Span) -> R<Val> {
    arity(
        cx,
        name,
        args,
        2,
        3,
        &format!("{name}(ptr, value, mask)"),
        span,
    )?;
    let (p, s) = pointer(cx, &args[0], name)?;
    let shape = p.ty.shape.clone();
    let v = cx.expr(&args[1])?;
    let vt = match v {
        Val::Unit => return cx.no_value(args[1].span),
        Val::Int(_) | Val::Float(_) => cx.materialize(&v, s, args[1].span)?,
        Val::Typed(t) if t.ty.elem == Elem::Scalar(s) => t,
        other => {
            let d = cx.describe(&other);
            return cx.err(
                Diagnostic::new(
                    Code::BadStoreValue,
                    format!(
                        "cannot {} `{d}` through a `*{}` pointer",
                        if name == "store" { "store" } else { "add" },
                        s.name()
                    ),
                    args[1].span,
                )
                .with_label(format!("this is `{d}`"))
                .with_secondary(args[0].span, format!("points to `{}`", s.name()))
                .with_hint(format!("convert the value with `as {}`", s.name())),
            );
        }
    };
    let vt = match broadcast_shapes(&vt.ty.shape, &shape) {
        Some(b) if b == shape => cx.broadcast(vt, &shape, args[1].span),
        _ => {
            let d = shape_str(&vt.ty.shape);
            return cx.err(
                Diagnostic::new(
                    Code::ShapeMismatch,
                    format!(
                        "value of shape {d} does not fit the pointer tile of shape {}",
                        shape_str(&shape)
                    ),
                    args[1].span,
                )
                .with_label(format!("shape {d}"))
                .with_secondary(args[0].span, format!("shape {}", shape_str(&shape))),
            );
        }
    };
    let m = match args.get(2) {
        Some(e) => Some(mask(cx, e, &shape)?),
        None => None,
    };
    if name == "store" {
        cx.emit_void(
            Op::Store {
                ptr: p.id,
                value: vt.id,
                mask: m.map(|m| m.id),
            },
            span,
        );
        Ok(Val::Unit)
    } else {
        if s == Scalar::I1 {
            return cx.err(Diagnostic::new(
                Code::BadStoreValue,
                "`atomic_add` does not support `i1`",
                span,
            ));
        }
        let ty = Type::tile(s, shape);
        Ok(Val::Typed(cx.emit(
            Op::AtomicAdd {
                ptr: p.id,
                value: vt.id,
                mask: m.map(|m| m.id),
            },
            ty,
            span,
        )))
    }
}

/// Promote two numeric operands to one element type and broadcast them together.
fn unify(cx: &mut Cx, a: Val, b: Val, sa: Span, sb: Span, span: Span) -> R<(TV, TV)> {
    let a = if matches!(
        (&a, &b),
        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_))
    ) {
        let k = matches!(a, Val::Float(_)) || matches!(b, Val::Float(_));
        let s = if k { Scalar::F32 } else { Scalar::I32 };
        Val::Typed(cx.materialize(&a, s, sa)?)
    } else {
        a
    };
    let elem_of = |v: &Val, other: &Val| -> Option<Scalar> {
        match (v, other) {
            (Val::Typed(t), _) => t.ty.scalar_elem(),
            (lit, Val::Typed(o)) => {
                o.ty.scalar_elem()
                    .map(|e| literal_meets(matches!(lit, Val::Float(_)), e))
            }
            _ => Some(Scalar::I32),
        }
    };
    let (Some(ea), Some(eb)) = (elem_of(&a, &b), elem_of(&b, &a)) else {
        return cx.err(
            Diagnostic::new(
                Code::BadPointerArith,
                "this operation does not take pointers",
                span,
            )
            .with_label("pointer operand"),
        );
    };
    let e = promote(ea, eb);
    let ta = cx.materialize(&a, e, sa)?;
    let tb = cx.materialize(&b, e, sb)?;
    let Some(shape) = broadcast_shapes(&ta.ty.shape, &tb.ty.shape) else {
        return cx.err(broadcast_mismatch(&ta.ty.shape, &tb.ty.shape, sa, sb, span));
    };
    let ta = cx.broadcast(ta, &shape, span);
    let tb = cx.broadcast(tb, &shape, span);
    Ok((ta, tb))
}

fn where_(cx: &mut Cx, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, "where", args, 3, 3, "where(cond, a, b)", span)?;
    let c = cx.expr(&args[0])?;
    let c = match c {
        Val::Typed(t) if t.ty.elem == Elem::Scalar(Scalar::I1) => t,
        other => {
            let d = cx.describe(&other);
            return cx.err(
                Diagnostic::new(
                    Code::BadCondition,
                    format!("the condition of `where` must be `i1`, found `{d}`"),
                    args[0].span,
                )
                .with_label("not i1")
                .with_hint("compare explicitly, e.g. `x > 0.0`"),
            );
        }
    };
    let a = cx.expr(&args[1])?;
    let b = cx.expr(&args[2])?;
    let (ta, tb) = unify(cx, a, b, args[1].span, args[2].span, span)?;
    let Some(shape) = broadcast_shapes(&c.ty.shape, &ta.ty.shape) else {
        let (cs, vs) = (shape_str(&c.ty.shape), shape_str(&ta.ty.shape));
        return cx.err(
            Diagnostic::new(
                Code::ShapeMismatch,
                format!(
                    "condition of shape {cs} and values of shape {vs} cannot be broadcast together"
                ),
                span,
            )
            .with_secondary(args[0].span, format!("shape {cs}")),
        );
    };
    let c = cx.broadcast(c, &shape, span);
    let ta = cx.broadcast(ta, &shape, span);
    let tb = cx.broadcast(tb, &shape, span);
    let ty = ta.ty.clone();
    Ok(Val::Typed(cx.emit(
        Op::Select {
            cond: c.id,
            a: ta.id,
            b: tb.id,
        },
        ty,
        span,
    )))
}

fn math(cx: &mut Cx, name: &str, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, name, args, 1, 1, &format!("{name}(x)"), span)?;
    let v = cx.expr(&args[0])?;
    let op = match name {
        "exp" => UnaryOp::Exp,
        "exp2" => UnaryOp::Exp2,
        "log" => UnaryOp::Log,
        "sqrt" => UnaryOp::Sqrt,
        "rsqrt" => UnaryOp::Rsqrt,
        "sigmoid" => UnaryOp::Sigmoid,
        "tanh" => UnaryOp::Tanh,
        "sin" => UnaryOp::Sin,
        "cos" => UnaryOp::Cos,
        "erf" => UnaryOp::Erf,
        "log1p" => UnaryOp::Log1p,
        "expm1" => UnaryOp::Expm1,
        _ => UnaryOp::Abs,
    };
    let t = match v {
        Val::Int(i) if op == UnaryOp::Abs => return Ok(Val::Int(i.wrapping_abs())),
        Val::Float(f) if op == UnaryOp::Abs => return Ok(Val::Float(f.abs())),
        Val::Float(_) => cx.materialize(&v, Scalar::F32, args[0].span)?,
        other => cx.with_default_type(other, args[0].span)?,
    };
    let ok = match t.ty.elem {
        Elem::Scalar(s) if op == UnaryOp::Abs => s != Scalar::I1,
        Elem::Scalar(s) => s.is_float(),
        Elem::Ptr(_) => false,
    };
    if !ok {
        let d = t.ty.to_string();
        return cx.err(
            Diagnostic::new(
                Code::FloatOnly,
                format!("`{name}` needs a float argument, found `{d}`"),
                args[0].span,
            )
            .with_label(format!("this is `{d}`"))
            .with_hint("convert it first, e.g. `x as f32`"),
        );
    }
    Ok(Val::Typed(cx.unary_op(op, t, span)))
}

/// `pow(a, b)`: operands promote and broadcast like `a * b`; the promoted
/// type must be a float (E0035).
fn pow(cx: &mut Cx, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, "pow", args, 2, 2, "pow(a, b)", span)?;
    let a = cx.expr(&args[0]);
    let b = cx.expr(&args[1]);
    let (a, b) = (a?, b?);
    let (ta, tb) = unify(cx, a, b, args[0].span, args[1].span, span)?;
    if !ta.ty.scalar_elem().is_some_and(Scalar::is_float) {
        let d = ta.ty.to_string();
        return cx.err(
            Diagnostic::new(
                Code::FloatOnly,
                format!("`pow` needs float arguments, found `{d}`"),
                span,
            )
            .with_label(format!("the arguments are `{d}`"))
            .with_hint("convert one of them first, e.g. `pow(x as f32, 3)` or `pow(2.0, n)`"),
        );
    }
    cx.binary_op(BinaryOp::Pow, ta, tb, span).map(Val::Typed)
}

/// `fma(a, b, c)`: `a * b + c` rounded once; the three promote and
/// broadcast as in `a * b + c`, to a float type (E0035).
fn fma(cx: &mut Cx, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, "fma", args, 3, 3, "fma(a, b, c)", span)?;
    let a = cx.expr(&args[0]);
    let b = cx.expr(&args[1]);
    let c = cx.expr(&args[2]);
    let (a, b, c) = (a?, b?, c?);
    let (sa, sb, sc) = (args[0].span, args[1].span, args[2].span);
    let (ta, tb) = unify(cx, a, b, sa, sb, span)?;
    let (ta, tc) = unify(cx, Val::Typed(ta), c, sa, sc, span)?;
    // c may have widened the type or the shape: b follows, then a.
    let (tb, tc) = unify(cx, Val::Typed(tb), Val::Typed(tc), sb, sc, span)?;
    let (ta, tc) = unify(cx, Val::Typed(ta), Val::Typed(tc), sa, sc, span)?;
    if !ta.ty.scalar_elem().is_some_and(Scalar::is_float) {
        let d = ta.ty.to_string();
        return cx.err(
            Diagnostic::new(
                Code::FloatOnly,
                format!("`fma` needs float arguments, found `{d}`"),
                span,
            )
            .with_label(format!("the arguments are `{d}`"))
            .with_hint("for integers write `a * b + c`; for floats convert one first, e.g. `fma(x as f32, y, z)`"),
        );
    }
    let ty = ta.ty.clone();
    Ok(Val::Typed(cx.emit(
        Op::Fma {
            a: ta.id,
            b: tb.id,
            c: tc.id,
        },
        ty,
        span,
    )))
}

fn minmax(cx: &mut Cx, name: &str, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, name, args, 2, 2, &format!("{name}(a, b)"), span)?;
    let a = cx.expr(&args[0]);
    let b = cx.expr(&args[1]);
    let (a, b) = (a?, b?);
    let (ta, tb) = unify(cx, a, b, args[0].span, args[1].span, span)?;
    if ta.ty.scalar_elem() == Some(Scalar::I1) {
        return cx.err(Diagnostic::new(
            Code::TypeMismatch,
            format!("`{name}` needs numbers, found `i1`"),
            span,
        ));
    }
    let op = if name == "maximum" {
        BinaryOp::Max
    } else {
        BinaryOp::Min
    };
    cx.binary_op(op, ta, tb, span).map(Val::Typed)
}

fn reduce(cx: &mut Cx, name: &str, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, name, args, 1, 2, &format!("{name}(x, axis)"), span)?;
    let t = value(cx, &args[0])?;
    if t.ty.is_scalar() {
        return cx.err(
            Diagnostic::new(
                Code::BadAxis,
                format!("`{name}` reduces a tile, found the scalar `{}`", t.ty),
                args[0].span,
            )
            .with_label("a scalar")
            .with_hint(if name == "max" || name == "min" {
                "for two values use `maximum(a, b)` / `minimum(a, b)`"
            } else {
                "a scalar needs no reduction"
            }),
        );
    }
    match t.ty.elem {
        Elem::Scalar(s) if s != Scalar::I1 => {}
        _ => {
            let d = t.ty.to_string();
            return cx.err(
                Diagnostic::new(
                    Code::TypeMismatch,
                    format!("`{name}` needs a tile of numbers, found `{d}`"),
                    args[0].span,
                )
                .with_hint("convert an i1 tile with `as i32`"),
            );
        }
    }
    let op = match name {
        "sum" => ReduceOp::Sum,
        "max" => ReduceOp::Max,
        _ => ReduceOp::Min,
    };
    let axes: Vec<u32> = match args.get(1) {
        Some(e) if name != "sum" => vec![reduce_minmax_axis(cx, name, e, t.ty.shape.len())?],
        Some(e) => vec![axis_of(cx, e, t.ty.shape.len(), "reduction axis")?],
        // Without an axis: reduce everything to a scalar.
        None => vec![0; t.ty.shape.len()],
    };
    let mut cur = t;
    for axis in axes {
        let mut shape = cur.ty.shape.clone();
        shape.remove(axis as usize);
        let ty = cur.ty.with_shape(shape);
        cur = cx.emit(
            Op::Reduce {
                op,
                value: cur.id,
                axis,
            },
            ty,
            span,
        );
    }
    Ok(Val::Typed(cur))
}

fn dot(cx: &mut Cx, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, "dot", args, 2, 3, "dot(a, b, acc)", span)?;
    let a = value(cx, &args[0]);
    let b = value(cx, &args[1]);
    let (a, b) = (a?, b?);
    let bad = |cx: &mut Cx, msg: String, sp: Span, label: String| -> R<Val> {
        cx.err(
            Diagnostic::new(Code::BadDot, msg, sp)
                .with_label(label)
                .with_hint("dot takes a: [M, K] and b: [K, N] of bf16, f16 or f32 (the same), acc: [M, N] f32, with M, N, K >= 16"),
        )
    };
    for (t, e) in [(&a, &args[0]), (&b, &args[1])] {
        if t.ty.shape.len() != 2 {
            return bad(
                cx,
                format!("`dot` needs 2-D tiles, found `{}`", t.ty),
                e.span,
                format!("rank {}", t.ty.shape.len()),
            );
        }
        if !matches!(
            t.ty.scalar_elem(),
            Some(Scalar::BF16 | Scalar::F16 | Scalar::F32)
        ) {
            return bad(
                cx,
                format!("`dot` inputs must be bf16, f16 or f32, found `{}`", t.ty),
                e.span,
                "wrong element type".into(),
            );
        }
    }
    if a.ty.elem != b.ty.elem {
        return bad(
            cx,
            format!(
                "`dot` inputs must have the same element type, found `{}` and `{}`",
                a.ty, b.ty
            ),
            span,
            "mixed inputs".into(),
        );
    }
    let (m, k, k2, n) = (a.ty.shape[0], a.ty.shape[1], b.ty.shape[0], b.ty.shape[1]);
    if k != k2 {
        return bad(
            cx,
            format!(
                "`dot` inner dimensions differ: {} x {}",
                shape_str(&a.ty.shape),
                shape_str(&b.ty.shape)
            ),
            span,
            format!("K = {k} vs {k2}"),
        );
    }
    if m < 16 || n < 16 || k < 16 {
        return bad(
            cx,
            format!("`dot` needs M, N, K >= 16, found M={m}, N={n}, K={k}"),
            span,
            "too small for the tensor cores".into(),
        );
    }
    let out = Type::tile(Scalar::F32, vec![m, n]);
    let acc = match args.get(2) {
        None => {
            let z = cx.konst(Const::Float(0.0), Scalar::F32, span);
            cx.broadcast(z, &out.shape, span)
        }
        Some(e) => {
            let v = cx.expr(e)?;
            let t = match v {
                Val::Int(_) | Val::Float(_) => {
                    let z = cx.materialize(&v, Scalar::F32, e.span)?;
                    cx.broadcast(z, &out.shape, e.span)
                }
                other => cx.with_default_type(other, e.span)?,
            };
            if t.ty != out {
                return bad(
                    cx,
                    format!("`dot` accumulator must be `{out}`, found `{}`", t.ty),
                    e.span,
                    format!("expected `{out}`"),
                );
            }
            t
        }
    };
    Ok(Val::Typed(cx.emit(
        Op::Dot {
            a: a.id,
            b: b.id,
            acc: acc.id,
        },
        out,
        span,
    )))
}

fn reshape(cx: &mut Cx, name: &str, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, name, args, 2, 2, &format!("{name}(x, [dims])"), span)?;
    let t = value(cx, &args[0]);
    let shape = shape_arg(cx, &args[1]);
    let (t, shape) = (t?, shape?);
    if name == "reshape" {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        if n != t.ty.numel() as u64 {
            return cx.err(
                Diagnostic::new(
                    Code::BadReshape,
                    format!(
                        "cannot reshape {} ({} elements) to {} ({n} elements)",
                        shape_str(&t.ty.shape),
                        t.ty.numel(),
                        shape_str(&shape)
                    ),
                    span,
                )
                .with_label("element counts differ"),
            );
        }
        if t.ty.shape == shape {
            return Ok(Val::Typed(t));
        }
        let ty = t.ty.with_shape(shape);
        return Ok(Val::Typed(cx.emit(Op::Reshape(t.id), ty, span)));
    }
    match broadcast_shapes(&t.ty.shape, &shape) {
        Some(b) if b == shape => Ok(Val::Typed(cx.broadcast(t, &shape, span))),
        _ => cx.err(
            Diagnostic::new(
                Code::BadReshape,
                format!(
                    "cannot broadcast {} to {}",
                    shape_str(&t.ty.shape),
                    shape_str(&shape)
                ),
                span,
            )
            .with_label("incompatible shapes")
            .with_hint("each dimension must be 1 or equal to the target's"),
        ),
    }
}

fn trans(cx: &mut Cx, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, "trans", args, 1, 2, "trans(x, [perm])", span)?;
    let t = value(cx, &args[0])?;
    let rank = t.ty.shape.len();
    let perm: Vec<u32> = match args.get(1) {
        None if rank == 2 => vec![1, 0],
        None => {
            return cx.err(
                Diagnostic::new(
                    Code::BadReshape,
                    format!("`trans` without a permutation needs a 2-D tile, found rank {rank}"),
                    span,
                )
                .with_hint("give the permutation: `trans(x, [2, 0, 1])`"),
            )
        }
        Some(e) => {
            let items = match &e.kind {
                ExprKind::List(items) => items.clone(),
                _ => {
                    return cx.err(Diagnostic::new(
                        Code::BadArgument,
                        "the permutation must be a list like `[1, 0]`",
                        e.span,
                    ))
                }
            };
            let mut p = Vec::new();
            for it in &items {
                p.push(axis_of(cx, it, rank, "permutation axis")?);
            }
            let mut sorted = p.clone();
            sorted.sort_unstable();
            if sorted != (0..rank as u32).collect::<Vec<_>>() {
                return cx.err(Diagnostic::new(
                    Code::BadReshape,
                    format!("{:?} is not a permutation of 0..{rank}", p),
                    e.span,
                ));
            }
            p
        }
    };
    let shape: Vec<u32> = perm.iter().map(|&i| t.ty.shape[i as usize]).collect();
    let ty = t.ty.with_shape(shape);
    Ok(Val::Typed(cx.emit(
        Op::Trans { value: t.id, perm },
        ty,
        span,
    )))
}

fn cdiv(cx: &mut Cx, args: &[Expr], span: Span) -> R<Val> {
    arity(cx, "cdiv", args, 2, 2, "cdiv(a, b)", span)?;
    let a = cx.expr(&args[0]);
    let b = cx.expr(&args[1]);
    let (a, b) = (a?, b?);
    for (v, e) in [(&a, &args[0]), (&b, &args[1])] {
        let ok = match v {
            Val::Int(_) => true,
            Val::Typed(t) => {
                t.ty.scalar_elem()
                    .is_some_and(|s| s.is_int() && s != Scalar::I1)
            }
            _ => false,
        };
        if !ok {
            let d = cx.describe(v);
            return cx.err(
                Diagnostic::new(
                    Code::TypeMismatch,
                    format!("`cdiv` needs integers, found `{d}`"),
                    e.span,
                )
                .with_label("not an integer"),
            );
        }
    }
    // (a + b - 1) / b
    let s1 = cx.binary(BinOp::Add, a, b.clone(), span, args[0].span, args[1].span)?;
    let s2 = cx.binary(BinOp::Sub, s1, Val::Int(1), span, span, span)?;
    cx.binary(BinOp::Div, s2, b, span, span, args[1].span)
}
