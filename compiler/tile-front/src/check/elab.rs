//! Elaboration of one kernel specialisation: AST → typed TIR.
//!
//! Values during checking are [`Val`]s: untyped literals stay literals until an
//! operand or context gives them a type (Triton's "weak" literal typing); typed
//! values carry their TIR value and, for scalars known at compile time (meta-
//! parameters and arithmetic on them), the constant.
//!
//! Errors are pushed to `diags` and signalled with [`Reported`]; a statement that
//! fails poisons the names it binds, so later uses stay silent instead of cascading.

use super::builtins;
use super::types::{broadcast_shapes, literal_meets, promote, shape_str};
use super::{find_fn, find_kernel, scalar_type};
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::passes::consteval;
use crate::syntax::ast::{self, BinOp, Block, Expr, ExprKind, FnDef, Stmt, StmtKind, UnOp};
use std::collections::HashMap;
use tile_ir::{
    self as tir, BinaryOp, CmpOp, Const, Elem, Inst, Op, Scalar, Span, Type, UnaryOp, ValueId,
};

/// The error was already reported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reported;
pub(crate) type R<T> = Result<T, Reported>;

/// Largest number of elements in one tile.
pub(crate) const MAX_NUMEL: u64 = 1 << 20;
/// Deepest helper inlining and expression nesting (after inlining) accepted.
const MAX_HELPER_DEPTH: usize = 16;
const MAX_EXPR_DEPTH: u32 = 400;
/// Longest `static` loop the unroll pass is asked to expand.
const MAX_UNROLL: i64 = 4096;
/// Most instructions that unrolling may create, and most values in one kernel
/// (helpers calling helpers can grow a kernel exponentially).
const MAX_UNROLLED_INSTS: i64 = 1 << 20;
const MAX_VALUES: usize = 1 << 20;

/// A value during checking.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// An untyped integer literal (or compile-time arithmetic on literals).
    Int(i64),
    /// An untyped float literal.
    Float(f64),
    Typed(TV),
    /// The "value" of a statement-like expression (store, `if` without value).
    Unit,
}

/// A typed TIR value, with its constant when it is a compile-time scalar.
#[derive(Clone, Debug)]
pub(crate) struct TV {
    pub id: ValueId,
    pub ty: Type,
    pub konst: Option<Const>,
}

impl TV {
    pub fn elem(&self) -> Option<Scalar> {
        self.ty.scalar_elem()
    }
}

struct Binding {
    /// `None` once poisoned by an error.
    val: Option<Val>,
    mutable: bool,
    span: Span,
}

/// The scopes of one kernel or helper body: helpers see only their own names.
#[derive(Default)]
struct Frame {
    scopes: Vec<HashMap<String, Binding>>,
}

pub(crate) struct Cx<'m> {
    module: &'m ast::Module,
    values: Vec<Type>,
    blocks: Vec<Vec<Inst>>,
    frames: Vec<Frame>,
    calls: Vec<String>,
    depth: u32,
    /// Product of the trip counts of the enclosing `static` loops.
    unroll: i64,
    /// Set once the kernel outgrew [`MAX_VALUES`] (reported once).
    too_big: bool,
    pub diags: Diagnostics,
}

/// Check kernel `name` with meta-parameter values `meta` and build its TIR.
pub fn elaborate(
    m: &ast::Module,
    name: &str,
    meta: &[(String, i64)],
) -> Result<tir::Kernel, Diagnostics> {
    let Some(k) = find_kernel(m, name) else {
        let known: Vec<String> = super::kernels(m)
            .map(|k| format!("`{}`", k.name.name))
            .collect();
        let mut d = Diagnostic::new(
            Code::UnknownKernel,
            format!("no kernel named `{name}`"),
            Span::default(),
        );
        if !known.is_empty() {
            d = d.with_hint(format!("the file defines {}", known.join(", ")));
        }
        return Err(d.into());
    };
    let mut cx = Cx {
        module: m,
        values: Vec::new(),
        blocks: vec![Vec::new()],
        frames: vec![],
        calls: vec![],
        depth: 0,
        unroll: 1,
        too_big: false,
        diags: Diagnostics::new(),
    };
    cx.frames.push(Frame {
        scopes: vec![HashMap::new()],
    });

    // Meta-parameters: given values, else defaults.
    for (n, _) in meta {
        if !k.metas.iter().any(|mp| &mp.name.name == n) {
            cx.diags.push(
                Diagnostic::new(
                    Code::MetaParam,
                    format!("kernel `{name}` has no meta-parameter `{n}`"),
                    k.name.span,
                )
                .with_label("this kernel")
                .with_hint(format!("its meta-parameters are: {}", meta_list(k))),
            );
        }
    }
    let mut params = Vec::new();
    for p in &k.params {
        let Some(ty) = p.ty.as_ref().and_then(|t| scalar_type(t).ok()) else {
            cx.bind(&p.name, None, false);
            continue;
        };
        let id = cx.new_value(ty.clone());
        params.push(tir::Param {
            name: p.name.name.clone(),
            value: id,
            ty: ty.clone(),
        });
        cx.bind(
            &p.name,
            Some(Val::Typed(TV {
                id,
                ty,
                konst: None,
            })),
            false,
        );
    }
    let mut meta_vals = Vec::new();
    for mp in &k.metas {
        let given = meta
            .iter()
            .rev()
            .find(|(n, _)| *n == mp.name.name)
            .map(|(_, v)| *v);
        let Some(v) = given.or_else(|| super::meta_default(mp)) else {
            cx.diags.push(
                Diagnostic::new(
                    Code::MetaParam,
                    format!("no value for meta-parameter `{}`", mp.name.name),
                    mp.name.span,
                )
                .with_label("needs a value")
                .with_hint(format!(
                    "give one with `-D {}=…`, a tune block, or a default `= …`",
                    mp.name.name
                )),
            );
            cx.bind(&mp.name, None, false);
            continue;
        };
        let s = Scalar::from_name(&mp.ty.name.name).unwrap_or(Scalar::I32);
        if s == Scalar::I32 && i32::try_from(v).is_err() {
            cx.diags.push(Diagnostic::new(
                Code::MetaParam,
                format!("value {v} of `{}` does not fit in i32", mp.name.name),
                mp.name.span,
            ));
        }
        meta_vals.push((mp.name.name.clone(), v));
        let tv = cx.konst(Const::Int(v), s, mp.name.span);
        cx.bind(&mp.name, Some(Val::Typed(tv)), false);
    }

    if cx.diags.is_empty() {
        if let Ok(v) = cx.block(&k.body) {
            if !matches!(v, Val::Unit) {
                if let Some(t) = &k.body.tail {
                    cx.diags.push(
                        Diagnostic::new(Code::NoValue, "a kernel returns nothing", t.span)
                            .with_label("this value is unused")
                            .with_hint("write results with `store`; end the expression with `;`"),
                    );
                }
            }
        }
    }
    if !cx.diags.is_empty() {
        return Err(dedup(cx.diags));
    }
    let insts = cx.blocks.pop().unwrap_or_default();
    Ok(tir::Kernel {
        name: name.to_string(),
        params,
        meta: meta_vals,
        body: tir::Block {
            args: vec![],
            insts,
        },
        values: cx.values,
    })
}

fn meta_list(k: &ast::KernelDef) -> String {
    if k.metas.is_empty() {
        return "(none)".into();
    }
    k.metas
        .iter()
        .map(|m| format!("`{}`", m.name.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Drop repeats (a helper inlined twice reports its errors once).
fn dedup(d: Diagnostics) -> Diagnostics {
    let mut out = Diagnostics::new();
    for x in d {
        if !out
            .iter()
            .any(|y| y.code == x.code && y.span == x.span && y.message == x.message)
        {
            out.push(x);
        }
    }
    out
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

impl<'m> Cx<'m> {
    // ---- building TIR ----

    pub fn new_value(&mut self, ty: Type) -> ValueId {
        self.values.push(ty);
        ValueId(self.values.len() as u32 - 1)
    }

    fn push_inst(&mut self, inst: Inst) {
        if let Some(b) = self.blocks.last_mut() {
            b.push(inst);
        }
    }

    /// Emit a one-result op.
    pub fn emit(&mut self, op: Op, ty: Type, span: Span) -> TV {
        let id = self.new_value(ty.clone());
        self.push_inst(Inst {
            results: vec![id],
            op,
            span,
        });
        TV {
            id,
            ty,
            konst: None,
        }
    }

    /// Emit an op without results (store, yield).
    pub fn emit_void(&mut self, op: Op, span: Span) {
        self.push_inst(Inst {
            results: vec![],
            op,
            span,
        });
    }

    /// A scalar constant of type `s`.
    pub fn konst(&mut self, c: Const, s: Scalar, span: Span) -> TV {
        let c = consteval::normalize(c, s);
        let mut tv = self.emit(Op::Const(c), Type::scalar(s), span);
        tv.konst = Some(c);
        tv
    }

    pub fn err<T>(&mut self, d: Diagnostic) -> R<T> {
        self.diags.push(d);
        Err(Reported)
    }

    // ---- names ----

    fn frame(&mut self) -> &mut Frame {
        if self.frames.is_empty() {
            self.frames.push(Frame::default());
        }
        let n = self.frames.len() - 1;
        &mut self.frames[n]
    }

    fn bind(&mut self, name: &ast::Ident, val: Option<Val>, mutable: bool) {
        let f = self.frame();
        if f.scopes.is_empty() {
            f.scopes.push(HashMap::new());
        }
        if let Some(s) = f.scopes.last_mut() {
            s.insert(
                name.name.clone(),
                Binding {
                    val,
                    mutable,
                    span: name.span,
                },
            );
        }
    }

    /// (scope index, binding) of the innermost binding of `name` in the current frame.
    fn lookup(&mut self, name: &str) -> Option<(usize, &mut Binding)> {
        let f = self.frame();
        f.scopes
            .iter_mut()
            .enumerate()
            .rev()
            .find_map(|(i, s)| s.get_mut(name).map(|b| (i, b)))
    }

    fn binding_at(&mut self, scope: usize, name: &str) -> Option<&mut Binding> {
        self.frame()
            .scopes
            .get_mut(scope)
            .and_then(|s| s.get_mut(name))
    }

    /// Mutable, healthy bindings among `names`: the values a loop or branch carries.
    fn carried(&mut self, names: &[String]) -> Vec<(usize, String, TV)> {
        let mut out = Vec::new();
        for n in names {
            if let Some((scope, b)) = self.lookup(n) {
                if let (true, Some(Val::Typed(tv))) = (b.mutable, &b.val) {
                    out.push((scope, n.clone(), tv.clone()));
                }
            }
        }
        out
    }

    fn set_carried(&mut self, carried: &[(usize, String, TV)], vals: &[TV]) {
        for ((scope, n, _), v) in carried.iter().zip(vals) {
            if let Some(b) = self.binding_at(*scope, n) {
                b.val = Some(Val::Typed(v.clone()));
            }
        }
    }

    /// Current values of carried bindings (falling back to `fallback` where poisoned).
    fn read_carried(
        &mut self,
        carried: &[(usize, String, TV)],
        fallback: &[TV],
    ) -> Vec<Option<Val>> {
        carried
            .iter()
            .zip(fallback)
            .map(
                |((scope, n, _), fb)| match self.binding_at(*scope, n).map(|b| b.val.clone()) {
                    Some(Some(v)) => Some(v),
                    _ => Some(Val::Typed(fb.clone())),
                },
            )
            .collect()
    }

    // ---- statements ----

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

    fn stmt(&mut self, s: &Stmt) -> R<()> {
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

    fn let_value(
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

    fn assign(
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
            let decl = b.span;
            return self.err(
                Diagnostic::new(
                    Code::ImmutableAssign,
                    format!(
                        "cannot assign twice to immutable variable `{}`",
                        target.name
                    ),
                    target.span,
                )
                .with_label("cannot assign")
                .with_secondary(decl, "declared immutable here")
                .with_hint(format!("declare it with `let mut {}`", target.name)),
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

    /// Integer scalar bounds of a loop, materialized to one common type.
    fn loop_bounds(&mut self, vals: &[(Val, Span)]) -> R<(Scalar, Vec<TV>)> {
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
    fn for_loop(
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
        self.bind(
            var,
            Some(Val::Typed(TV {
                id: iv,
                ty: Type::scalar(ity),
                konst: None,
            })),
            false,
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
        for ((c, arg), fin) in carried.iter().zip(&args).zip(finals) {
            let tv = match fin {
                Some(Val::Typed(tv)) if tv.ty == arg.ty => tv,
                Some(Val::Typed(tv)) => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::LoopCarriedType,
                            format!("`{}` changes type in the loop: `{}` before, `{}` after an iteration", c.1, arg.ty, tv.ty),
                            span,
                        )
                        .with_label("in this loop")
                        .with_hint(format!("keep `{}` at type `{}` (convert with `as`, or start from a value of the final type)", c.1, arg.ty)),
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
        Ok(())
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
                            .with_hint(format!("keep `{}` at type `{}`", c.1, t.ty)),
                        );
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
    fn convert_to(&mut self, v: Val, t: &Type, span: Span) -> R<TV> {
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

    // ---- expressions ----

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

    fn expr_inner(&mut self, e: &Expr) -> R<Val> {
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

    fn undefined<T>(&mut self, name: &ast::Ident) -> R<T> {
        let mut d = Diagnostic::new(
            Code::UndefinedName,
            format!("cannot find `{}` in this scope", name.name),
            name.span,
        )
        .with_label("not found in this scope");
        if Scalar::from_name(&name.name).is_some() {
            d = d.with_hint(
                "a type name is only a value as a dtype argument, e.g. `zeros([16], f32)`",
            );
        } else if find_fn(self.module, &name.name).is_some() || builtins::is_builtin(&name.name) {
            d = d.with_hint(format!(
                "`{}` is a function: call it with `{}(…)`",
                name.name, name.name
            ));
        } else if self.frames.len() > 1 {
            d = d.with_hint(
                "helpers see only their own parameters and locals: pass the value as an argument",
            );
        }
        self.err(d)
    }

    pub fn no_value<T>(&mut self, span: Span) -> R<T> {
        self.err(
            Diagnostic::new(Code::NoValue, "this expression has no value", span)
                .with_label("used as a value here"),
        )
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

    fn unary(&mut self, op: UnOp, v: Val, span: Span) -> R<Val> {
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
        let Some(shape) = broadcast_shapes(&ta.ty.shape, &tb.ty.shape) else {
            return self.err(
                Diagnostic::new(
                    Code::ShapeMismatch,
                    format!(
                        "shapes {} and {} cannot be broadcast together",
                        shape_str(&ta.ty.shape),
                        shape_str(&tb.ty.shape)
                    ),
                    span,
                )
                .with_secondary(sa, format!("shape {}", shape_str(&ta.ty.shape)))
                .with_secondary(sb, format!("shape {}", shape_str(&tb.ty.shape)))
                .with_hint("trailing dimensions must be equal or 1; add axes with `x[:, None]`"),
            );
        };
        let ta = self.broadcast(ta, &shape, span);
        let tb = self.broadcast(tb, &shape, span);
        let cmp = match op {
            BinOp::Eq => Some(CmpOp::Eq),
            BinOp::Ne => Some(CmpOp::Ne),
            BinOp::Lt => Some(CmpOp::Lt),
            BinOp::Le => Some(CmpOp::Le),
            BinOp::Gt => Some(CmpOp::Gt),
            BinOp::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(c) = cmp {
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
        if let (Some(x), Some(y)) = (a.konst, b.konst) {
            match consteval::binary(op, x, y, s) {
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

    fn literal_binary(&mut self, op: BinOp, a: &Val, b: &Val, span: Span) -> R<Val> {
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
        Ok(Val::Float(r))
    }

    /// `ptr + int`, `int + ptr`, `ptr - int`: elementwise pointer offsets.
    fn pointer_binary(
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

    fn cast(&mut self, v: Val, t: &ast::TypeExpr, span: Span) -> R<Val> {
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

    fn index(&mut self, v: Val, items: &[ast::IndexItem], span: Span) -> R<Val> {
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

    fn call(&mut self, callee: &ast::Ident, args: &[Expr], span: Span) -> R<Val> {
        if let Some(r) = builtins::call(self, &callee.name, args, span) {
            return r;
        }
        let Some(f) = find_fn(self.module, &callee.name) else {
            let mut d = Diagnostic::new(
                Code::UnknownFunction,
                format!("cannot find function `{}`", callee.name),
                callee.span,
            )
            .with_label("not a builtin or helper");
            if find_kernel(self.module, &callee.name).is_some() {
                d = d
                    .with_hint("kernels cannot be called; move the shared code into a `fn` helper");
            } else if let Some(s) = builtins::suggest(&callee.name) {
                d = d.with_hint(format!("did you mean `{s}`?"));
            }
            return self.err(d);
        };
        let mut vals = Vec::new();
        let mut failed = false;
        for a in args {
            match self.expr(a) {
                Ok(v) => vals.push((v, a.span)),
                Err(_) => failed = true,
            }
        }
        if failed {
            return Err(Reported);
        }
        self.inline_helper(f, vals, callee, span)
    }

    /// Inline a helper call: bind the arguments in a fresh frame and check the body.
    fn inline_helper(
        &mut self,
        f: &'m FnDef,
        args: Vec<(Val, Span)>,
        callee: &ast::Ident,
        span: Span,
    ) -> R<Val> {
        if self.calls.contains(&f.name.name) {
            return self.err(
                Diagnostic::new(
                    Code::RecursiveHelper,
                    format!("helper `{}` calls itself", f.name.name),
                    callee.span,
                )
                .with_label("recursive call")
                .with_secondary(f.name.span, "helper defined here")
                .with_hint("helpers are inlined, so they cannot recurse; use a loop"),
            );
        }
        if self.calls.len() >= MAX_HELPER_DEPTH {
            return self.err(Diagnostic::new(
                Code::TooDeep,
                format!("helpers nested more than {MAX_HELPER_DEPTH} deep"),
                callee.span,
            ));
        }
        if args.len() != f.params.len() {
            return self.err(
                Diagnostic::new(
                    Code::ArgCount,
                    format!(
                        "`{}` takes {} argument{}, but {} were given",
                        f.name.name,
                        f.params.len(),
                        plural(f.params.len()),
                        args.len()
                    ),
                    span,
                )
                .with_secondary(f.name.span, "helper defined here"),
            );
        }
        let mut frame = Frame {
            scopes: vec![HashMap::new()],
        };
        for (p, (v, sp)) in f.params.iter().zip(args) {
            let v = match (&p.ty, v) {
                (_, Val::Unit) => return self.no_value(sp),
                (None, v) => v,
                (Some(t), v) => {
                    let want = match scalar_type(t) {
                        Ok(w) => w,
                        Err(d) => return self.err(d),
                    };
                    match (&v, want.elem) {
                        (Val::Int(_) | Val::Float(_), Elem::Scalar(s)) => {
                            Val::Typed(self.materialize(&v, s, sp)?)
                        }
                        (Val::Typed(tv), e) if tv.ty.elem == e => v,
                        _ => {
                            let found = self.describe(&v);
                            return self.err(
                                Diagnostic::new(
                                    Code::TypeMismatch,
                                    format!("argument `{}` of `{}` must have element type `{}`, found `{found}`", p.name.name, f.name.name, t.name.name),
                                    sp,
                                )
                                .with_label(format!("this is `{found}`"))
                                .with_secondary(p.span, "parameter declared here")
                                .with_hint("convert the argument with `as`"),
                            );
                        }
                    }
                }
            };
            frame.scopes[0].insert(
                p.name.name.clone(),
                Binding {
                    val: Some(v),
                    mutable: false,
                    span: p.name.span,
                },
            );
        }
        let first_diag = self.diags.len();
        self.frames.push(frame);
        self.calls.push(f.name.name.clone());
        let r = self.block(&f.body);
        self.calls.pop();
        self.frames.pop();
        // Errors inside the helper also point at the call that instantiated it.
        for d in self.diags.0.iter_mut().skip(first_diag) {
            if d.span.start >= f.span.start && d.span.end <= f.span.end && d.labels.len() < 4 {
                d.labels
                    .push((callee.span, format!("in this call to `{}`", f.name.name)));
            }
        }
        let v = r?;
        match (&f.ret, v) {
            (None, v) => Ok(v),
            (Some(_), Val::Unit) => self.err(
                Diagnostic::new(
                    Code::NoValue,
                    format!(
                        "helper `{}` declares a return type but ends without a value",
                        f.name.name
                    ),
                    f.body.span,
                )
                .with_hint("end the body with an expression without `;`"),
            ),
            (Some(t), v) => {
                let want = match scalar_type(t) {
                    Ok(w) => w,
                    Err(d) => return self.err(d),
                };
                match (&v, want.elem) {
                    (Val::Int(_) | Val::Float(_), Elem::Scalar(s)) => {
                        Ok(Val::Typed(self.materialize(&v, s, span)?))
                    }
                    (Val::Typed(tv), e) if tv.ty.elem == e => Ok(v),
                    _ => {
                        let found = self.describe(&v);
                        self.err(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                format!(
                                    "helper `{}` returns `{found}`, but declares `{}`",
                                    f.name.name, t.name.name
                                ),
                                t.span,
                            )
                            .with_label("declared return type")
                            .with_secondary(callee.span, "in this call"),
                        )
                    }
                }
            }
        }
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

fn cmp_of(op: BinOp) -> CmpOp {
    match op {
        BinOp::Eq => CmpOp::Eq,
        BinOp::Ne => CmpOp::Ne,
        BinOp::Lt => CmpOp::Lt,
        BinOp::Le => CmpOp::Le,
        BinOp::Gt => CmpOp::Gt,
        _ => CmpOp::Ge,
    }
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
