//! Expressions: dispatch over the AST, names, literal materialisation,
//! broadcasting and shape limits, casts and indexing (`x[:, None]`).

use super::{Cx, Reported, Val, MAX_EXPR_DEPTH, MAX_NUMEL, MAX_VALUES, R, TV};
use crate::check::builtins;
use crate::check::types::shape_str;
use crate::check::{find_fn, scalar_type};
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{self, Expr, ExprKind};
use tile_ir::consteval;
use tile_ir::{Const, Elem, Op, Scalar, Span, Type};

impl<'m> Cx<'m> {
    pub fn expr(&mut self, e: &Expr) -> R<Val> {
        if self.depth >= MAX_EXPR_DEPTH {
            return self.err(Diagnostic::new(
                Code::TooDeep,
                "expression nesting too deep after inlining helpers",
                e.span,
            ));
        }
        if self.values.len() > MAX_VALUES {
            if !std::mem::replace(&mut self.too_big, true) {
                return self.err(
                    Diagnostic::new(Code::TooDeep, format!("the kernel grew past {MAX_VALUES} values while inlining helpers"), e.span)
                        .with_label("while checking this")
                        .with_hint("helpers that call other helpers several times grow exponentially; use loops"),
                );
            }
            return Err(Reported);
        }
        self.depth += 1;
        let r = self.expr_inner(e);
        self.depth -= 1;
        r
    }

    pub(super) fn expr_inner(&mut self, e: &Expr) -> R<Val> {
        match &e.kind {
            ExprKind::Int(v) => Ok(Val::Int(*v)),
            ExprKind::Float(v) => Ok(Val::Float(*v)),
            ExprKind::Bool(b) => Ok(Val::Typed(self.konst(Const::Bool(*b), Scalar::I1, e.span))),
            ExprKind::Name(n) => match self.lookup(n) {
                Some((_, b)) => b.val.clone().ok_or(Reported),
                None => self.undefined(&ast::Ident {
                    name: n.clone(),
                    span: e.span,
                }),
            },
            ExprKind::Unary(op, x) => {
                let v = self.expr(x)?;
                self.unary(*op, v, e.span)
            }
            ExprKind::Binary(op, a, b) => {
                let va = self.expr(a);
                let vb = self.expr(b);
                self.binary(*op, va?, vb?, e.span, a.span, b.span)
            }
            ExprKind::Cast(x, t) => {
                let v = self.expr(x)?;
                self.cast(v, t, e.span)
            }
            ExprKind::Call { callee, args } => self.call(callee, args, e.span),
            ExprKind::Index { base, items } => {
                let v = self.expr(base)?;
                self.index(v, items, e.span)
            }
            ExprKind::List(_) => self.err(
                Diagnostic::new(
                    Code::BadArgument,
                    "a list is only allowed as a shape or permutation argument",
                    e.span,
                )
                .with_label("not a value")
                .with_hint("e.g. `zeros([16, 16], f32)` or `reshape(x, [4, 8])`"),
            ),
            ExprKind::If {
                cond,
                then_block,
                else_branch,
            } => self.if_expr(cond, then_block, else_branch.as_deref(), e.span, true),
            ExprKind::Block(b) => self.block(b),
            ExprKind::Error => Err(Reported),
        }
    }

    pub(super) fn undefined<T>(&mut self, name: &ast::Ident) -> R<T> {
        let mut d = Diagnostic::new(
            Code::UndefinedName,
            format!("cannot find `{}` in this scope", name.name),
            name.span,
        )
        .with_label("not found in this scope");
        if matches!(name.name.as_str(), "return" | "break" | "continue") {
            d = Diagnostic::new(
                Code::UndefinedName,
                format!("`{}` is not part of the language: there is no early exit", name.name),
                name.span,
            )
            .with_label("not a keyword")
            .with_hint(
                "guard the work instead: mask the accesses (`let m = offs < n; store(y + offs, v, m);`) or put it in `if cond { … }`; a helper returns the value of its last expression",
            );
        } else if Scalar::from_name(&name.name).is_some() {
            d = d.with_hint(
                "a type name is only a value as a dtype argument, e.g. `zeros([16], f32)`",
            );
        } else if find_fn(self.module, &name.name).is_some() || builtins::is_builtin(&name.name) {
            d = d.with_hint(format!(
                "`{}` is a function: call it with `{}(…)`",
                name.name, name.name
            ));
        } else if self.frames.len() > 1 && self.bound_outside_helper(&name.name) {
            d = d.with_hint(
                "helpers see only their own parameters and locals: pass the value as an argument",
            );
        } else if let Some(s) = self.closest_visible(&name.name) {
            d = d.with_hint(format!("did you mean `{s}`?"));
        } else if self.frames.len() > 1 {
            d = d.with_hint(
                "helpers see only their own parameters and locals: pass the value as an argument",
            );
        }
        self.err(d)
    }

    /// Whether `name` is bound in a frame below the current one (the kernel
    /// or a helper that called this one).
    fn bound_outside_helper(&self, name: &str) -> bool {
        let n = self.frames.len().saturating_sub(1);
        self.frames[..n]
            .iter()
            .any(|f| f.scopes.iter().any(|s| s.contains_key(name)))
    }

    /// The visible name (local, parameter, meta-parameter) closest to
    /// `name`, for "did you mean".
    fn closest_visible(&mut self, name: &str) -> Option<String> {
        let f = self.frame();
        let names: Vec<&str> = f
            .scopes
            .iter()
            .flat_map(|s| s.keys().map(String::as_str))
            .collect();
        builtins::closest(name, names).map(str::to_string)
    }

    pub fn no_value<T>(&mut self, span: Span) -> R<T> {
        let mut d = Diagnostic::new(Code::NoValue, "this expression has no value", span)
            .with_label("used as a value here");
        if let Some((_, semi, f)) = self.unit_calls.iter().find(|(c, _, _)| *c == span) {
            d = d
                .with_secondary(*semi, format!("this `;` ends `{f}` without a value"))
                .with_hint(format!(
                    "remove the `;` so that `{f}` returns the value of its last expression"
                ));
        }
        self.err(d)
    }

    /// How a value's type is shown in messages.
    pub fn describe(&self, v: &Val) -> String {
        match v {
            Val::Int(_) => "integer literal".into(),
            Val::Float(_) => "float literal".into(),
            Val::Typed(t) => t.ty.to_string(),
            Val::Unit => "()".into(),
        }
    }

    /// A literal (or typed value) as a typed value of element `s` (typed values are cast).
    pub fn materialize(&mut self, v: &Val, s: Scalar, span: Span) -> R<TV> {
        match v {
            Val::Int(i) => {
                if s == Scalar::I32 && i32::try_from(*i).is_err() {
                    return self.err(
                        Diagnostic::new(
                            Code::ConstEval,
                            format!("integer literal {i} does not fit in i32"),
                            span,
                        )
                        .with_hint("make the other operand i64 (`as i64`)"),
                    );
                }
                Ok(self.konst(Const::Int(*i), s, span))
            }
            Val::Float(f) => {
                if s.is_int() {
                    return self.err(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!("expected `{}`, found a float literal", s.name()),
                            span,
                        )
                        .with_label("float literal")
                        .with_hint("write an integer, or convert with `as`"),
                    );
                }
                let c = consteval::normalize(Const::Float(*f), s);
                if !consteval::as_f64(c).is_finite() {
                    return self.err(
                        Diagnostic::new(
                            Code::ConstEval,
                            format!("float literal {f:?} does not fit in `{}`", s.name()),
                            span,
                        )
                        .with_label(format!("an infinity in `{}`", s.name()))
                        .with_hint("use a smaller value, or compute in f32 (`x as f32`)"),
                    );
                }
                Ok(self.konst(Const::Float(*f), s, span))
            }
            Val::Typed(tv) => match tv.ty.elem {
                Elem::Scalar(_) => Ok(self.cast_elem(tv.clone(), s, span)),
                Elem::Ptr(_) => {
                    let d = tv.ty.to_string();
                    self.err(Diagnostic::new(
                        Code::TypeMismatch,
                        format!("expected `{}`, found pointer `{d}`", s.name()),
                        span,
                    ))
                }
            },
            Val::Unit => self.no_value(span),
        }
    }

    /// A value with its default type when it is a literal (i32, or i64 when too big; f32).
    pub fn with_default_type(&mut self, v: Val, span: Span) -> R<TV> {
        match v {
            Val::Int(i) => Ok(self.konst(
                Const::Int(i),
                if i32::try_from(i).is_ok() {
                    Scalar::I32
                } else {
                    Scalar::I64
                },
                span,
            )),
            Val::Float(f) => Ok(self.konst(Const::Float(f), Scalar::F32, span)),
            Val::Typed(t) => Ok(t),
            Val::Unit => self.no_value(span),
        }
    }

    /// Convert the element type (folding compile-time scalars).
    pub fn cast_elem(&mut self, tv: TV, s: Scalar, span: Span) -> TV {
        let Some(from) = tv.elem() else { return tv };
        if from == s {
            return tv;
        }
        if let (Some(k), true) = (tv.konst, tv.ty.is_scalar()) {
            return self.konst(consteval::cast(k, from, s), s, span);
        }
        let ty = Type {
            elem: Elem::Scalar(s),
            shape: tv.ty.shape.clone(),
        };
        self.emit(Op::Cast(tv.id), ty, span)
    }

    /// Broadcast to `shape` (the caller checked compatibility with [`broadcast_shapes`]).
    pub fn broadcast(&mut self, mut tv: TV, shape: &[u32], span: Span) -> TV {
        if tv.ty.shape == shape {
            return tv;
        }
        if tv.ty.is_scalar() {
            let ty = tv.ty.with_shape(shape.to_vec());
            return self.emit(Op::Splat(tv.id), ty, span);
        }
        while tv.ty.shape.len() < shape.len() {
            let mut s = tv.ty.shape.clone();
            s.insert(0, 1);
            let ty = tv.ty.with_shape(s);
            tv = self.emit(
                Op::ExpandDims {
                    value: tv.id,
                    axis: 0,
                },
                ty,
                span,
            );
        }
        if tv.ty.shape != shape {
            let ty = tv.ty.with_shape(shape.to_vec());
            tv = self.emit(Op::Broadcast(tv.id), ty, span);
        }
        tv
    }

    /// Check a tile shape: powers of two and not too many elements.
    pub fn check_shape(&mut self, shape: &[u32], span: Span) -> R<()> {
        if let Some(d) = shape.iter().find(|d| !d.is_power_of_two()) {
            return self.err(
                Diagnostic::new(
                    Code::NotPowerOfTwo,
                    format!("tile dimension {d} is not a power of two"),
                    span,
                )
                .with_label(format!("shape {}", shape_str(shape)))
                .with_hint("tile shapes are powers of two; mask the ragged edge instead"),
            );
        }
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        if n > MAX_NUMEL {
            return self.err(
                Diagnostic::new(
                    Code::NotPowerOfTwo,
                    format!("tile of {n} elements is too large (limit {MAX_NUMEL})"),
                    span,
                )
                .with_label(format!("shape {}", shape_str(shape))),
            );
        }
        Ok(())
    }

    pub(super) fn cast(&mut self, v: Val, t: &ast::TypeExpr, span: Span) -> R<Val> {
        let target = match scalar_type(t) {
            Ok(ty) => ty,
            Err(d) => return self.err(d),
        };
        let Elem::Scalar(s) = target.elem else {
            return self.err(
                Diagnostic::new(
                    Code::BadCast,
                    format!("cannot cast to pointer type `{}`", target),
                    t.span,
                )
                .with_label("pointer casts are not supported"),
            );
        };
        match v {
            Val::Int(i) => Ok(Val::Typed(self.konst(Const::Int(i), s, span))),
            Val::Float(f) => Ok(Val::Typed(self.konst(
                consteval::cast(Const::Float(f), Scalar::F32, s),
                s,
                span,
            ))),
            Val::Unit => self.no_value(span),
            Val::Typed(tv) => match tv.ty.elem {
                Elem::Ptr(_) => self.err(
                    Diagnostic::new(
                        Code::BadCast,
                        format!("cannot cast pointer `{}` to `{}`", tv.ty, s.name()),
                        span,
                    )
                    .with_label("a pointer"),
                ),
                Elem::Scalar(_) => Ok(Val::Typed(self.cast_elem(tv, s, span))),
            },
        }
    }

    pub(super) fn index(&mut self, v: Val, items: &[ast::IndexItem], span: Span) -> R<Val> {
        let Val::Typed(mut tv) = v else {
            return self.err(
                Diagnostic::new(Code::BadIndex, "only tiles can be indexed", span)
                    .with_label("not a tile"),
            );
        };
        let full = items
            .iter()
            .filter(|i| matches!(i, ast::IndexItem::Full(_)))
            .count();
        if full != tv.ty.shape.len() {
            return self.err(
                Diagnostic::new(
                    Code::BadIndex,
                    format!(
                        "index has {full} `:` but the tile has rank {}",
                        tv.ty.shape.len()
                    ),
                    span,
                )
                .with_label(format!("tile of shape {}", shape_str(&tv.ty.shape)))
                .with_hint("write one `:` per dimension and `None` where a new axis goes"),
            );
        }
        if tv.ty.is_scalar() {
            let shape = vec![1; items.len()];
            return Ok(Val::Typed(self.broadcast(tv, &shape, span)));
        }
        for (pos, it) in items.iter().enumerate() {
            if let ast::IndexItem::NewAxis(_) = it {
                let mut s = tv.ty.shape.clone();
                s.insert(pos, 1);
                let ty = tv.ty.with_shape(s);
                tv = self.emit(
                    Op::ExpandDims {
                        value: tv.id,
                        axis: pos as u32,
                    },
                    ty,
                    span,
                );
            }
        }
        Ok(Val::Typed(tv))
    }
}
