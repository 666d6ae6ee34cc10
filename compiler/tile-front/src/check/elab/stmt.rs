//! Statements and blocks: `let`, assignment (compound assignment included),
//! and the scope a block opens.

use super::{BindKind, Cx, Reported, Val, R};
use crate::check::scalar_type;
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{self, BinOp, Block, Expr, ExprKind, Stmt, StmtKind};
use std::collections::HashMap;
use tile_ir::{Elem, Scalar, Span};

impl<'m> Cx<'m> {
    /// A block in a new scope; its value is the tail expression's (or Unit).
    pub fn block(&mut self, b: &Block) -> R<Val> {
        self.frame().scopes.push(HashMap::new());
        for s in &b.stmts {
            // An error in one statement does not stop the others from being checked.
            let _ = self.stmt(s);
        }
        let v = match &b.tail {
            Some(t) => self.expr(t),
            None => Ok(Val::Unit),
        };
        self.frame().scopes.pop();
        v
    }

    pub(super) fn stmt(&mut self, s: &Stmt) -> R<()> {
        match &s.kind {
            StmtKind::Let {
                mutable,
                name,
                ty,
                init,
            } => {
                let v = self
                    .expr(init)
                    .and_then(|v| self.let_value(v, ty.as_ref(), *mutable, init.span));
                let ok = v.is_ok();
                self.bind(name, v.ok(), *mutable);
                if ok {
                    Ok(())
                } else {
                    Err(Reported)
                }
            }
            StmtKind::Assign { target, op, value } => self.assign(target, *op, value, s.span),
            StmtKind::For {
                var,
                is_static,
                start,
                end,
                step,
                body,
            } => self.for_loop(var, *is_static, start, end, step.as_ref(), body, s.span),
            StmtKind::Expr(e) => {
                if let ExprKind::If {
                    cond,
                    then_block,
                    else_branch,
                } = &e.kind
                {
                    self.if_expr(cond, then_block, else_branch.as_deref(), e.span, false)
                        .map(|_| ())
                } else {
                    self.expr(e).map(|_| ())
                }
            }
            StmtKind::Error => Err(Reported),
        }
    }

    pub(super) fn let_value(
        &mut self,
        v: Val,
        ty: Option<&ast::TypeExpr>,
        mutable: bool,
        span: Span,
    ) -> R<Val> {
        if let Val::Unit = v {
            return self.no_value(span);
        }
        if let Some(t) = ty {
            let want = match scalar_type(t) {
                Ok(w) => w,
                Err(d) => return self.err(d),
            };
            return match (&v, want.elem) {
                (Val::Int(_) | Val::Float(_), Elem::Scalar(s)) => {
                    self.materialize(&v, s, span).map(Val::Typed)
                }
                (Val::Typed(tv), e) if tv.ty.elem == e => Ok(v),
                _ => {
                    let found = self.describe(&v);
                    self.err(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!("expected `{}`, found `{found}`", t.name.name),
                            span,
                        )
                        .with_label(format!("this is `{found}`"))
                        .with_secondary(t.span, "expected because of this annotation")
                        .with_hint("convert explicitly with `as`"),
                    )
                }
            };
        }
        if mutable {
            // A mutable variable flows through SSA joins, so it needs a type now.
            return Ok(Val::Typed(self.with_default_type(v, span)?));
        }
        Ok(v)
    }

    pub(super) fn assign(
        &mut self,
        target: &ast::Ident,
        op: Option<BinOp>,
        value: &Expr,
        span: Span,
    ) -> R<()> {
        let rhs = self.expr(value);
        let Some((_, b)) = self.lookup(&target.name) else {
            return self.undefined(target);
        };
        if !b.mutable {
            let (decl, kind) = (b.span, b.kind);
            let n = &target.name;
            let (what, declared, hint) = match kind {
                BindKind::Let => (
                    "immutable variable",
                    "declared immutable here",
                    format!("declare it with `let mut {n}`"),
                ),
                BindKind::Param => (
                    "parameter",
                    "parameters are immutable",
                    format!(
                        "copy it into a mutable variable and assign to that: `let mut p{n} = {n};`"
                    ),
                ),
                BindKind::LoopVar => (
                    "loop variable",
                    "the loop sets it on each iteration",
                    format!(
                        "copy it into a mutable variable and assign to that: `let mut {n}2 = {n};`"
                    ),
                ),
                BindKind::Meta => (
                    "meta-parameter",
                    "a compile-time constant",
                    format!(
                        "copy it into a mutable variable and assign to that: `let mut {n}2 = {n};`"
                    ),
                ),
            };
            return self.err(
                Diagnostic::new(
                    Code::ImmutableAssign,
                    if kind == BindKind::Let {
                        format!("cannot assign twice to {what} `{n}`")
                    } else {
                        format!("cannot assign to {what} `{n}`")
                    },
                    target.span,
                )
                .with_label("cannot assign")
                .with_secondary(decl, declared)
                .with_hint(hint),
            );
        }
        let Some(Val::Typed(cur)) = b.val.clone() else {
            return Err(Reported);
        };
        let rhs = rhs?;
        let new = match op {
            Some(op) => self.binary(
                op,
                Val::Typed(cur.clone()),
                rhs,
                span,
                target.span,
                value.span,
            )?,
            None => rhs,
        };
        let new = match new {
            Val::Unit => return self.no_value(value.span),
            Val::Typed(tv) => tv,
            lit => {
                // A literal takes the variable's element type and shape.
                let e = cur.elem().unwrap_or(Scalar::I32);
                let t = self.materialize(&lit, e, value.span)?;
                self.broadcast(t, &cur.ty.shape, value.span)
            }
        };
        if let Some((_, b)) = self.lookup(&target.name) {
            b.val = Some(Val::Typed(new));
        }
        Ok(())
    }
}
