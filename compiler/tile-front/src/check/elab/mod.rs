//! Elaboration of one kernel specialisation: AST → typed TIR.
//!
//! Values during checking are [`Val`]s: untyped literals stay literals until an
//! operand or context gives them a type (Triton's "weak" literal typing); typed
//! values carry their TIR value and, for scalars known at compile time (meta-
//! parameters and arithmetic on them), the constant.
//!
//! Errors are pushed to `diags` and signalled with [`Reported`]; a statement that
//! fails poisons the names it binds, so later uses stay silent instead of cascading.
//!
//! This file holds the state ([`Cx`]: values, blocks, scopes) and the kernel
//! entry point; the walk itself is split by concern: `stmt` (blocks, `let`,
//! assignment), `control` (`for`, `if`, loop-carried values), `expr`
//! (expressions, names, literals, broadcasting, casts, indexing), `ops` (unary and
//! binary operators, literal and pointer arithmetic) and `call` (builtins and
//! helper inlining).

mod call;
mod control;
mod expr;
mod ops;
mod stmt;

use super::{find_kernel, scalar_type};
use crate::check::types::shape_str;
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::syntax::ast;
use std::collections::HashMap;
use tile_ir::consteval;
use tile_ir::{self as tir, Const, Inst, Op, Scalar, Span, Type, ValueId};

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
    kind: BindKind,
}

/// What introduced a name (for the help of E0016).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BindKind {
    Let,
    Param,
    Meta,
    LoopVar,
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
    /// Calls of helpers whose body ends in `expr;` (so they have no value):
    /// (the call's span, the `;`'s span, the helper), for the help of E0030.
    unit_calls: Vec<(Span, Span, String)>,
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
        unit_calls: Vec::new(),
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
            cx.bind_kind(&p.name, None, false, BindKind::Param);
            continue;
        };
        let id = cx.new_value(ty.clone());
        params.push(tir::Param {
            name: p.name.name.clone(),
            value: id,
            ty: ty.clone(),
        });
        cx.bind_kind(
            &p.name,
            Some(Val::Typed(TV {
                id,
                ty,
                konst: None,
            })),
            false,
            BindKind::Param,
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
            cx.bind_kind(&mp.name, None, false, BindKind::Meta);
            continue;
        };
        let s = Scalar::from_name(&mp.ty.name.name).unwrap_or(Scalar::I32);
        if s == Scalar::I32 && i32::try_from(v).is_err() {
            cx.diags.push(Diagnostic::new(
                Code::MetaParam,
                format!("value {v} of `{}` does not fit in i32", mp.name.name),
                mp.name.span,
            ));
            cx.bind_kind(&mp.name, None, false, BindKind::Meta);
            continue;
        }
        meta_vals.push((mp.name.name.clone(), v));
        let tv = cx.konst(Const::Int(v), s, mp.name.span);
        cx.bind_kind(&mp.name, Some(Val::Typed(tv)), false, BindKind::Meta);
    }

    // The body is checked even when a meta-parameter has no value: that
    // meta-parameter is poisoned (its uses stay silent), so every error that
    // does not depend on its value (an undefined name, a type error) is
    // reported together with the missing value.
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
        self.bind_kind(name, val, mutable, BindKind::Let);
    }

    fn bind_kind(&mut self, name: &ast::Ident, val: Option<Val>, mutable: bool, kind: BindKind) {
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
                    kind,
                },
            );
        }
    }

    /// A name in the pointer expression `e` (`x` in `x + offs`) whose
    /// innermost binding is a `let` that shadows a pointer parameter of the
    /// same name: (the `let`'s name span, the parameter's span, the name).
    pub fn shadowed_pointer(&mut self, e: &ast::Expr) -> Option<(Span, Span, String)> {
        let name = match &e.kind {
            ast::ExprKind::Name(n) => n.clone(),
            ast::ExprKind::Binary(_, a, b) => {
                return self
                    .shadowed_pointer(a)
                    .or_else(|| self.shadowed_pointer(b))
            }
            _ => return None,
        };
        let f = self.frame();
        let mut found = f.scopes.iter().rev().filter_map(|s| s.get(&name));
        let inner = found.next()?;
        if inner.kind != BindKind::Let {
            return None;
        }
        let param = found.find(|b| {
            b.kind == BindKind::Param
                && matches!(&b.val, Some(Val::Typed(t)) if matches!(t.ty.elem, tir::Elem::Ptr(_)))
        })?;
        Some((inner.span, param.span, name))
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
}

/// E0013 for two operands (at `sa` and `sb`) whose shapes `a` and `b` do
/// not broadcast together.
pub(crate) fn broadcast_mismatch(
    a: &[u32],
    b: &[u32],
    sa: Span,
    sb: Span,
    span: Span,
) -> Diagnostic {
    Diagnostic::new(
        Code::ShapeMismatch,
        format!(
            "shapes {} and {} cannot be broadcast together",
            shape_str(a),
            shape_str(b)
        ),
        span,
    )
    .with_secondary(sa, format!("shape {}", shape_str(a)))
    .with_secondary(sb, format!("shape {}", shape_str(b)))
    .with_hint("trailing dimensions must be equal or 1; add axes with `x[:, None]`")
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
