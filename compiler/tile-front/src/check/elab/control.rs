//! Control flow: `for` loops (static ones checked for unrolling limits) and
//! `if` (selected at compile time on a constant condition), with mutable
//! variables threaded through as loop-carried values and branch results.

use super::{BindKind, Cx, Reported, Val, MAX_UNROLL, MAX_UNROLLED_INSTS, R, TV};
use crate::check::types::promote;
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{self, Block, Expr, ExprKind, Stmt, StmtKind};
use std::collections::HashMap;
use tile_ir::consteval;
use tile_ir::{self as tir, Const, Inst, Op, Scalar, Span, Type, ValueId};

impl<'m> Cx<'m> {
    /// Integer scalar bounds of a loop, materialized to one common type.
    pub(super) fn loop_bounds(&mut self, vals: &[(Val, Span)]) -> R<(Scalar, Vec<TV>)> {
        let mut ity = Scalar::I32;
        let mut bad = false;
        for (v, sp) in vals {
            match v {
                Val::Int(i) if i32::try_from(*i).is_err() => ity = Scalar::I64,
                Val::Int(_) => {}
                Val::Typed(tv)
                    if tv.ty.is_scalar()
                        && matches!(tv.elem(), Some(Scalar::I32 | Scalar::I64)) =>
                {
                    ity = promote(ity, tv.elem().unwrap_or(Scalar::I32));
                }
                _ => {
                    let found = self.describe(v);
                    self.diags.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!("loop bounds must be integer scalars, found `{found}`"),
                            *sp,
                        )
                        .with_label("not an integer scalar"),
                    );
                    bad = true;
                }
            }
        }
        if bad {
            return Err(Reported);
        }
        let mut out = Vec::new();
        for (v, sp) in vals {
            out.push(self.materialize(v, ity, *sp)?);
        }
        Ok((ity, out))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn for_loop(
        &mut self,
        var: &ast::Ident,
        is_static: bool,
        start: &Expr,
        end: &Expr,
        step: Option<&Expr>,
        body: &Block,
        span: Span,
    ) -> R<()> {
        let lo = self.expr(start);
        let hi = self.expr(end);
        let st = match step {
            Some(e) => self.expr(e).map(|v| (v, e.span)),
            None => Ok((Val::Int(1), span)),
        };
        let (lo, hi, (st, st_span)) = (lo?, hi?, st?);
        let (ity, b) = self.loop_bounds(&[(lo, start.span), (hi, end.span), (st, st_span)])?;
        let step_const = b[2].konst.map(consteval::as_i64);
        if step_const.is_some_and(|s| s <= 0) {
            return self.err(
                Diagnostic::new(Code::ConstEval, "loop step must be positive", st_span)
                    .with_label("this step never reaches the end"),
            );
        }
        let mut static_trips = 1;
        if is_static {
            for (tv, sp) in b.iter().zip([start.span, end.span, st_span]) {
                if tv.konst.is_none() {
                    return self.err(
                        Diagnostic::new(
                            Code::NotConst,
                            "bounds of a `static` loop must be known at compile time",
                            sp,
                        )
                        .with_label("not a compile-time constant")
                        .with_hint(
                            "use literals and meta-parameters, or drop `static` for a runtime loop",
                        ),
                    );
                }
            }
            let (l, h, s) = (
                consteval::as_i64(b[0].konst.unwrap_or(Const::Int(0))),
                consteval::as_i64(b[1].konst.unwrap_or(Const::Int(0))),
                step_const.unwrap_or(1),
            );
            let trips = if h > l {
                (h - l) / s + i64::from((h - l) % s != 0)
            } else {
                0
            };
            static_trips = trips;
            if trips > MAX_UNROLL {
                return self.err(
                    Diagnostic::new(Code::ConstEval, format!("a `static` loop of {trips} iterations is too long to unroll (limit {MAX_UNROLL})"), span)
                        .with_hint("drop `static` for a runtime loop"),
                );
            }
        }
        let mut names = Vec::new();
        assigned_names(body, &mut names);
        let carried = self.carried(&names);
        let inits: Vec<TV> = carried.iter().map(|c| c.2.clone()).collect();

        let iv = self.new_value(Type::scalar(ity));
        let args: Vec<TV> = inits
            .iter()
            .map(|t| TV {
                id: self.new_value(t.ty.clone()),
                ty: t.ty.clone(),
                konst: None,
            })
            .collect();
        self.blocks.push(Vec::new());
        self.set_carried(&carried, &args);
        self.frame().scopes.push(HashMap::new());
        self.bind_kind(
            var,
            Some(Val::Typed(TV {
                id: iv,
                ty: Type::scalar(ity),
                konst: None,
            })),
            false,
            BindKind::LoopVar,
        );
        let outer_unroll = self.unroll;
        self.unroll = outer_unroll.saturating_mul(static_trips.max(1));
        let _ = self.block(body);
        self.unroll = outer_unroll;
        self.frame().scopes.pop();
        if is_static {
            // The unroll pass will copy the body once per iteration, inside
            // every copy of the enclosing static loops.
            let n = self.blocks.last().map(|b| count_insts(b)).unwrap_or(0);
            let total = n.saturating_mul(static_trips).saturating_mul(outer_unroll);
            if total > MAX_UNROLLED_INSTS {
                self.blocks.pop();
                return self.err(
                    Diagnostic::new(
                        Code::ConstEval,
                        format!("unrolling this `static` loop would create about {total} instructions (limit {MAX_UNROLLED_INSTS})"),
                        span,
                    )
                    .with_label("too much to unroll")
                    .with_hint("drop `static` here or in an enclosing loop"),
                );
            }
        }
        let finals = self.read_carried(&carried, &args);
        let mut yields = Vec::new();
        let mut changed = Vec::new();
        for ((c, arg), fin) in carried.iter().zip(&args).zip(finals) {
            let tv = match fin {
                Some(Val::Typed(tv)) if tv.ty == arg.ty => tv,
                Some(Val::Typed(tv)) => {
                    changed.push((c.0, c.1.clone()));
                    self.diags.push(
                        Diagnostic::new(
                            Code::LoopCarriedType,
                            format!("`{}` changes type in the loop: `{}` before, `{}` after an iteration", c.1, arg.ty, tv.ty),
                            span,
                        )
                        .with_label("in this loop")
                        .with_hint(type_change_hint(&c.1, &arg.ty, &tv.ty, "the loop")),
                    );
                    arg.clone()
                }
                _ => arg.clone(),
            };
            yields.push(tv.id);
        }
        self.emit_void(Op::Yield(yields), span);
        let insts = self.blocks.pop().unwrap_or_default();
        let mut body_args = vec![iv];
        body_args.extend(args.iter().map(|a| a.id));
        let results: Vec<TV> = inits
            .iter()
            .map(|t| TV {
                id: self.new_value(t.ty.clone()),
                ty: t.ty.clone(),
                konst: None,
            })
            .collect();
        self.push_inst(Inst {
            results: results.iter().map(|r| r.id).collect(),
            op: Op::For {
                lb: b[0].id,
                ub: b[1].id,
                step: b[2].id,
                init: inits.iter().map(|t| t.id).collect(),
                body: tir::Block {
                    args: body_args,
                    insts,
                },
                unroll: is_static,
            },
            span,
        });
        self.set_carried(&carried, &results);
        // After E0017 the variable has no good type: its later uses are
        // silenced rather than checked against the type before the loop
        // (which would report a second error with a misleading help).
        for (scope, name) in changed {
            self.poison(scope, &name);
        }
        Ok(())
    }

    /// Silence a binding whose value is wrong after an error already
    /// reported: later uses of the name report nothing.
    fn poison(&mut self, scope: usize, name: &str) {
        if let Some(b) = self.binding_at(scope, name) {
            b.val = None;
        }
    }

    /// `if` as statement (`want` false) or expression.
    pub fn if_expr(
        &mut self,
        cond: &Expr,
        then_block: &Block,
        else_branch: Option<&Expr>,
        span: Span,
        want: bool,
    ) -> R<Val> {
        let c = self.expr(cond)?;
        let c = match c {
            Val::Typed(tv) if tv.ty.is_scalar() && tv.elem() == Some(Scalar::I1) => tv,
            other => {
                let found = self.describe(&other);
                let hint = if matches!(&other, Val::Typed(t) if !t.ty.is_scalar()) {
                    "a tile condition selects per element: use `where(cond, a, b)`"
                } else {
                    "compare explicitly, e.g. `x != 0`"
                };
                return self.err(
                    Diagnostic::new(
                        Code::BadCondition,
                        format!("`if` condition must be a scalar `i1`, found `{found}`"),
                        cond.span,
                    )
                    .with_label("not a scalar i1")
                    .with_hint(hint),
                );
            }
        };
        // A compile-time condition picks its branch now (like `if constexpr`).
        if let Some(k) = c.konst {
            return if consteval::as_i64(k) != 0 {
                self.block(then_block)
            } else {
                match else_branch {
                    Some(e) => self.expr(e),
                    None => Ok(Val::Unit),
                }
            };
        }
        let mut names = Vec::new();
        assigned_names(then_block, &mut names);
        if let Some(e) = else_branch {
            let b = Block {
                stmts: vec![Stmt {
                    kind: StmtKind::Expr(e.clone()),
                    span: e.span,
                }],
                tail: None,
                span: e.span,
            };
            assigned_names(&b, &mut names);
        }
        let carried = self.carried(&names);
        let saved: Vec<TV> = carried.iter().map(|c| c.2.clone()).collect();

        self.blocks.push(Vec::new());
        let tv = self.block(then_block);
        let then_fin = self.read_carried(&carried, &saved);
        let then_insts = self.blocks.pop().unwrap_or_default();
        self.set_carried(&carried, &saved);

        self.blocks.push(Vec::new());
        let ev = match else_branch {
            Some(e) => self.expr(e),
            None => Ok(Val::Unit),
        };
        let else_fin = self.read_carried(&carried, &saved);
        let else_insts = self.blocks.pop().unwrap_or_default();
        self.set_carried(&carried, &saved);

        // The branch value, unified across branches.
        let (tv, ev) = (tv.unwrap_or(Val::Unit), ev.unwrap_or(Val::Unit));
        let value_ty: Option<Type> = if !want {
            None
        } else {
            match (&tv, &ev) {
                // Statement-like branches: an `if` in tail position without a value.
                (Val::Unit, Val::Unit) => None,
                (Val::Unit, _) | (_, Val::Unit) => {
                    if else_branch.is_none() {
                        return self.err(
                            Diagnostic::new(
                                Code::NoValue,
                                "an `if` without `else` has no value",
                                span,
                            )
                            .with_label("used as a value")
                            .with_hint("add an `else` branch"),
                        );
                    }
                    return self.err(
                        Diagnostic::new(
                            Code::NoValue,
                            "both branches of an `if` used as a value must end with a value",
                            span,
                        )
                        .with_label("a branch has no value"),
                    );
                }
                (Val::Typed(a), Val::Typed(b)) if a.ty != b.ty => {
                    return self.err(
                        Diagnostic::new(
                            Code::LoopCarriedType,
                            format!(
                                "`if` branches have different types: `{}` and `{}`",
                                a.ty, b.ty
                            ),
                            span,
                        )
                        .with_label("branches disagree")
                        .with_hint("convert one branch with `as`"),
                    );
                }
                (Val::Typed(a), _) | (_, Val::Typed(a)) => Some(a.ty.clone()),
                (Val::Float(_), _) | (_, Val::Float(_)) => Some(Type::scalar(Scalar::F32)),
                _ => Some(Type::scalar(Scalar::I32)),
            }
        };
        let mut result_tys: Vec<Type> = saved.iter().map(|t| t.ty.clone()).collect();
        for ((c, t), f) in carried
            .iter()
            .zip(&saved)
            .zip(then_fin.iter().zip(&else_fin))
        {
            for v in [f.0, f.1].into_iter().flatten() {
                if let Val::Typed(v) = v {
                    if v.ty != t.ty {
                        self.diags.push(
                            Diagnostic::new(
                                Code::LoopCarriedType,
                                format!(
                                    "`{}` changes type in a branch: `{}` before, `{}` after",
                                    c.1, t.ty, v.ty
                                ),
                                span,
                            )
                            .with_label("in this `if`")
                            .with_hint(type_change_hint(&c.1, &t.ty, &v.ty, "the `if`")),
                        );
                        self.poison(c.0, &c.1);
                        return Err(Reported);
                    }
                }
            }
        }
        if let Some(t) = &value_ty {
            result_tys.push(t.clone());
        }
        let mut bodies = Vec::new();
        for (insts, fin, val) in [(then_insts, then_fin, tv), (else_insts, else_fin, ev)] {
            self.blocks.push(insts);
            let mut ys: Vec<ValueId> = fin
                .iter()
                .zip(&saved)
                .map(|(v, s)| match v {
                    Some(Val::Typed(t)) => t.id,
                    _ => s.id,
                })
                .collect();
            if let Some(t) = &value_ty {
                let v = self.convert_to(val, t, span)?;
                ys.push(v.id);
            }
            self.emit_void(Op::Yield(ys), span);
            bodies.push(tir::Block {
                args: vec![],
                insts: self.blocks.pop().unwrap_or_default(),
            });
        }
        let results: Vec<TV> = result_tys
            .iter()
            .map(|t| TV {
                id: self.new_value(t.clone()),
                ty: t.clone(),
                konst: None,
            })
            .collect();
        let else_body = bodies.pop().unwrap_or_default();
        let then_body = bodies.pop().unwrap_or_default();
        self.push_inst(Inst {
            results: results.iter().map(|r| r.id).collect(),
            op: Op::If {
                cond: c.id,
                then_body,
                else_body,
            },
            span,
        });
        self.set_carried(&carried, &results[..carried.len()]);
        Ok(match value_ty {
            Some(_) => Val::Typed(results[carried.len()].clone()),
            None => Val::Unit,
        })
    }

    /// Convert a branch value to the unified type `t` (literals adapt; typed values already match).
    pub(super) fn convert_to(&mut self, v: Val, t: &Type, span: Span) -> R<TV> {
        match v {
            Val::Typed(tv) => Ok(tv),
            Val::Unit => self.no_value(span),
            lit => {
                let e = t.scalar_elem().unwrap_or(Scalar::F32);
                let tv = self.materialize(&lit, e, span)?;
                Ok(self.broadcast(tv, &t.shape, span))
            }
        }
    }
}

/// Names assigned anywhere inside a block (candidates for loop-carried values).
fn assigned_names(b: &Block, out: &mut Vec<String>) {
    fn expr(e: &Expr, out: &mut Vec<String>) {
        match &e.kind {
            ExprKind::If {
                cond,
                then_block,
                else_branch,
            } => {
                expr(cond, out);
                assigned_names(then_block, out);
                if let Some(e) = else_branch {
                    expr(e, out);
                }
            }
            ExprKind::Block(b) => assigned_names(b, out),
            ExprKind::Unary(_, a) | ExprKind::Cast(a, _) | ExprKind::Index { base: a, .. } => {
                expr(a, out)
            }
            ExprKind::Binary(_, a, b) => {
                expr(a, out);
                expr(b, out);
            }
            ExprKind::Call { args, .. } | ExprKind::List(args) => {
                args.iter().for_each(|a| expr(a, out))
            }
            _ => {}
        }
    }
    for s in &b.stmts {
        match &s.kind {
            StmtKind::Assign { target, value, .. } => {
                if !out.contains(&target.name) {
                    out.push(target.name.clone());
                }
                expr(value, out);
            }
            StmtKind::Let { init, .. } => expr(init, out),
            StmtKind::For {
                body,
                start,
                end,
                step,
                ..
            } => {
                expr(start, out);
                expr(end, out);
                if let Some(s) = step {
                    expr(s, out);
                }
                assigned_names(body, out);
            }
            StmtKind::Expr(e) => expr(e, out),
            StmtKind::Error => {}
        }
    }
    if let Some(t) = &b.tail {
        expr(t, out);
    }
}

/// Instructions in a list, nested blocks included.
fn count_insts(insts: &[Inst]) -> i64 {
    insts
        .iter()
        .map(|i| {
            1 + match &i.op {
                Op::For { body, .. } => count_insts(&body.insts),
                Op::If {
                    then_body,
                    else_body,
                    ..
                } => count_insts(&then_body.insts) + count_insts(&else_body.insts),
                _ => 0,
            }
        })
        .sum()
}

/// The help of E0017 for `name` going from type `before` to `after` inside
/// `place`: start from a value of the new type (the usual fix, e.g. a
/// `zeros` accumulator), or convert back with `as` where only the element
/// type changed.
fn type_change_hint(name: &str, before: &Type, after: &Type, place: &str) -> String {
    let start = match (&after.elem, after.shape.as_slice()) {
        (tir::Elem::Scalar(s), []) => Some(match s {
            Scalar::F32 => "0.0".to_string(),
            Scalar::I32 => "0".to_string(),
            Scalar::I1 => "false".to_string(),
            _ => format!("0 as {}", s.name()),
        }),
        (tir::Elem::Scalar(s), dims) => {
            let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            Some(format!("zeros([{}], {})", dims.join(", "), s.name()))
        }
        (tir::Elem::Ptr(_), _) => None,
    };
    let mut hint = match start {
        Some(v) => format!(
            "start `{name}` from a value of the type it gets in {place}: `let mut {name} = {v};`"
        ),
        None => format!("start `{name}` from a value of type `{after}`"),
    };
    if let (true, tir::Elem::Scalar(b)) = (before.shape == after.shape, &before.elem) {
        hint.push_str(&format!(
            ", or convert what is assigned back with `as {}`",
            b.name()
        ));
    }
    hint
}
