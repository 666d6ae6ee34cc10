//! Checking: item-level resolution ([`check_items`]) and elaboration of one kernel
//! specialisation to typed TIR ([`elaborate`]).
//!
//! Elaboration does name resolution, type and shape inference and checking in one
//! walk over the AST, emitting TIR as it goes:
//! - meta-parameters are substituted by their values (compile-time constants);
//! - every broadcast becomes explicit (`Splat`, `ExpandDims`, `Broadcast`);
//! - helper `fn`s are inlined at each call site (the "inline pass" of the design:
//!   TIR has no call op), so helpers are generic over the shapes of their arguments;
//! - mutable variables become SSA values threaded through `For` iter-args and `If` results;
//! - `if` on a compile-time condition selects its branch at compile time.

mod builtins;
mod elab;
mod types;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::syntax::ast::{self, Item, KernelDef};
use std::collections::HashMap;
use tile_ir::{self as tir, Scalar, Span};

pub use elab::elaborate;

/// Kernels of a module, in source order.
pub fn kernels(m: &ast::Module) -> impl Iterator<Item = &KernelDef> {
    m.items.iter().filter_map(|it| match it {
        Item::Kernel(k) => Some(k),
        _ => None,
    })
}

pub fn find_kernel<'m>(m: &'m ast::Module, name: &str) -> Option<&'m KernelDef> {
    kernels(m).find(|k| k.name.name == name)
}

pub(crate) fn find_fn<'m>(m: &'m ast::Module, name: &str) -> Option<&'m ast::FnDef> {
    m.items.iter().find_map(|it| match it {
        Item::Fn(f) if f.name.name == name => Some(f),
        _ => None,
    })
}

fn find_tune<'m>(m: &'m ast::Module, name: &str) -> Option<&'m ast::TuneDef> {
    m.items.iter().find_map(|it| match it {
        Item::Tune(t) if t.kernel.name == name => Some(t),
        _ => None,
    })
}

/// A meta-parameter default: an integer literal (already folded by the parser for `-N`).
fn meta_default(m: &ast::MetaParam) -> Option<i64> {
    match m.default.as_ref().map(|e| &e.kind) {
        Some(ast::ExprKind::Int(v)) => Some(*v),
        _ => None,
    }
}

/// `(name, default)` of each meta-parameter.
pub fn meta_params(k: &KernelDef) -> Vec<(String, Option<i64>)> {
    k.metas
        .iter()
        .map(|m| (m.name.name.clone(), meta_default(m)))
        .collect()
}

/// The tune space of `kernel`, from its `tune` block.
pub fn tune_space(m: &ast::Module, kernel: &str) -> Option<tir::TuneSpace> {
    let t = find_tune(m, kernel)?;
    let mut space = tir::TuneSpace::default();
    for e in &t.entries {
        let ints = || {
            e.values.iter().filter_map(|v| {
                if let ast::TuneValue::Int(i, _) = v {
                    Some(*i)
                } else {
                    None
                }
            })
        };
        match e.name.name.as_str() {
            "key" => {
                space.key = e
                    .values
                    .iter()
                    .filter_map(|v| {
                        if let ast::TuneValue::Name(n) = v {
                            Some(n.name.clone())
                        } else {
                            None
                        }
                    })
                    .collect()
            }
            "warps" => space.warps = ints().map(|w| w as u32).collect(),
            "grid" => {
                if let Some(k) = find_kernel(m, kernel) {
                    let mut d = Diagnostics::new();
                    let axes: Option<Vec<_>> = e
                        .values
                        .iter()
                        .map(|v| match v {
                            ast::TuneValue::Expr(x) => grid_expr(k, x, &mut d),
                            _ => None,
                        })
                        .collect();
                    space.grid = axes.filter(|a| d.is_empty() && (1..=3).contains(&a.len()));
                }
            }
            name => space.params.push((name.to_string(), ints().collect())),
        }
    }
    Some(space)
}

/// Element type named by a type expression (`None` for pointers or unknown names).
fn scalar_type(t: &ast::TypeExpr) -> Result<tir::Type, Diagnostic> {
    let s = Scalar::from_name(&t.name.name).ok_or_else(|| unknown_type(&t.name))?;
    Ok(tir::Type {
        elem: if t.ptr {
            tir::Elem::Ptr(s)
        } else {
            tir::Elem::Scalar(s)
        },
        shape: vec![],
    })
}

fn unknown_type(name: &ast::Ident) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownType,
        format!("unknown type `{}`", name.name),
        name.span,
    )
    .with_label("not a type")
    .with_hint("the types are i1, i32, i64, f16, bf16, f32 and pointers to them, e.g. `*bf16`")
}

/// Item-level checks that do not depend on meta-parameter values: duplicate names,
/// parameter types, meta-parameter declarations and tune blocks.
pub fn check_items(m: &ast::Module) -> Diagnostics {
    let mut d = Diagnostics::new();
    let mut seen: HashMap<(u8, &str), Span> = HashMap::new();
    for it in &m.items {
        // Kernels and helpers share one namespace; tune blocks have their own.
        let (ns, name) = match it {
            Item::Kernel(k) => (0, &k.name),
            Item::Fn(f) => (0, &f.name),
            Item::Tune(t) => (1, &t.kernel),
        };
        if let Some(prev) = seen.get(&(ns, name.name.as_str())) {
            let what = if ns == 1 {
                "tune block for"
            } else {
                "definition of"
            };
            d.push(
                Diagnostic::new(
                    Code::DuplicateItem,
                    format!("duplicate {what} `{}`", name.name),
                    name.span,
                )
                .with_label("defined again here")
                .with_secondary(*prev, "first defined here"),
            );
        } else {
            seen.insert((ns, name.name.as_str()), name.span);
        }
        if let Item::Fn(f) = it {
            if builtins::is_builtin(&f.name.name) {
                d.push(
                    Diagnostic::new(
                        Code::DuplicateItem,
                        format!("helper `{}` has the name of a builtin", f.name.name),
                        f.name.span,
                    )
                    .with_label("shadows the builtin")
                    .with_hint("rename the helper"),
                );
            }
        }
    }
    for it in &m.items {
        match it {
            Item::Kernel(k) => check_kernel_header(k, &mut d),
            Item::Fn(f) => {
                check_unique_params(f.params.iter().map(|p| &p.name), &mut d);
                for t in f
                    .params
                    .iter()
                    .filter_map(|p| p.ty.as_ref())
                    .chain(f.ret.iter())
                {
                    if let Err(e) = scalar_type(t) {
                        d.push(e);
                    }
                }
            }
            Item::Tune(t) => check_tune(m, t, &mut d),
        }
    }
    d
}

fn check_unique_params<'a>(names: impl Iterator<Item = &'a ast::Ident>, d: &mut Diagnostics) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for n in names {
        if let Some(prev) = seen.insert(n.name.as_str(), n.span) {
            d.push(
                Diagnostic::new(
                    Code::DuplicateParam,
                    format!("parameter `{}` is declared twice", n.name),
                    n.span,
                )
                .with_label("declared again here")
                .with_secondary(prev, "first declared here"),
            );
        }
    }
}

fn check_kernel_header(k: &KernelDef, d: &mut Diagnostics) {
    check_unique_params(
        k.metas
            .iter()
            .map(|m| &m.name)
            .chain(k.params.iter().map(|p| &p.name)),
        d,
    );
    for m in &k.metas {
        match Scalar::from_name(&m.ty.name.name) {
            Some(Scalar::I32 | Scalar::I64) if !m.ty.ptr => {}
            Some(_) => d.push(
                Diagnostic::new(
                    Code::MetaParam,
                    format!("meta-parameter `{}` must be an integer", m.name.name),
                    m.ty.span,
                )
                .with_label("not i32 or i64")
                .with_hint("meta-parameters are compile-time integers: `const BLOCK: i32`"),
            ),
            None => d.push(unknown_type(&m.ty.name)),
        }
        if let Some(e) = &m.default {
            if meta_default(m).is_none() {
                d.push(
                    Diagnostic::new(
                        Code::MetaParam,
                        "a meta-parameter default must be an integer literal",
                        e.span,
                    )
                    .with_label("not an integer literal"),
                );
            }
        }
    }
    for p in &k.params {
        if let Some(t) = &p.ty {
            if let Err(e) = scalar_type(t) {
                d.push(e);
            }
        }
    }
}

/// Most configurations one tune block may describe.
const MAX_CONFIGS: u64 = 10_000;

fn check_tune(m: &ast::Module, t: &ast::TuneDef, d: &mut Diagnostics) {
    let configs = t
        .entries
        .iter()
        .filter(|e| e.name.name != "key" && e.name.name != "grid")
        .fold(1u64, |acc, e| {
            acc.saturating_mul(e.values.len().max(1) as u64)
        });
    if configs > MAX_CONFIGS {
        d.push(
            Diagnostic::new(
                Code::BadTune,
                format!("this tune block has {configs} configurations (limit {MAX_CONFIGS})"),
                t.kernel.span,
            )
            .with_label("too many configurations")
            .with_hint("tune fewer values at a time"),
        );
    }
    let Some(k) = find_kernel(m, &t.kernel.name) else {
        d.push(
            Diagnostic::new(
                Code::UnknownKernel,
                format!("tune block for unknown kernel `{}`", t.kernel.name),
                t.kernel.span,
            )
            .with_label("no kernel with this name"),
        );
        return;
    };
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for e in &t.entries {
        if let Some(prev) = seen.insert(e.name.name.as_str(), e.name.span) {
            d.push(
                Diagnostic::new(
                    Code::BadTune,
                    format!("`{}` appears twice in the tune block", e.name.name),
                    e.name.span,
                )
                .with_secondary(prev, "first here"),
            );
            continue;
        }
        let bad = |d: &mut Diagnostics, span: Span, msg: String| {
            d.push(Diagnostic::new(Code::BadTune, msg, span));
        };
        match e.name.name.as_str() {
            "key" => {
                for v in &e.values {
                    match v {
                        ast::TuneValue::Name(n) => {
                            let p = k.params.iter().find(|p| p.name.name == n.name);
                            match p.and_then(|p| p.ty.as_ref()) {
                                Some(ty) if !ty.ptr => {}
                                Some(_) => bad(
                                    d,
                                    n.span,
                                    format!(
                                        "key `{}` is a pointer; keys are scalar parameters",
                                        n.name
                                    ),
                                ),
                                None => {
                                    let mut x = Diagnostic::new(
                                        Code::BadTune,
                                        format!(
                                            "key `{}` is not a parameter of `{}`",
                                            n.name, k.name.name
                                        ),
                                        n.span,
                                    );
                                    let scalars = k.params.iter().filter_map(|p| {
                                        (!p.ty.as_ref().is_some_and(|t| t.ptr))
                                            .then_some(p.name.name.as_str())
                                    });
                                    if let Some(s) = builtins::closest(&n.name, scalars) {
                                        x = x.with_hint(format!("did you mean `{s}`?"));
                                    }
                                    d.push(x);
                                }
                            }
                        }
                        ast::TuneValue::Int(_, s) => {
                            bad(d, *s, "tune keys are parameter names, not numbers".into())
                        }
                        ast::TuneValue::Expr(_) => {}
                    }
                }
            }
            "warps" => {
                if e.values.is_empty() {
                    bad(d, e.span, "`warps` needs at least one value".into());
                }
                for v in &e.values {
                    match v {
                        ast::TuneValue::Int(w, s) => {
                            if !(1..=32).contains(w) || (*w as u64).count_ones() != 1 {
                                bad(
                                    d,
                                    *s,
                                    format!(
                                        "warp count {w} must be a power of two between 1 and 32"
                                    ),
                                );
                            }
                        }
                        ast::TuneValue::Name(n) => bad(d, n.span, "warp counts are numbers".into()),
                        ast::TuneValue::Expr(_) => {}
                    }
                }
            }
            "grid" => {
                if e.values.is_empty() || e.values.len() > 3 {
                    d.push(
                        Diagnostic::new(
                            Code::BadTune,
                            format!("`grid` has {} axes; it takes 1 to 3", e.values.len()),
                            e.span,
                        )
                        .with_label("x, y and z at most")
                        .with_hint("e.g. `grid: [cdiv(M, BM), cdiv(N, BN)]`; axes left out are 1"),
                    );
                }
                for v in &e.values {
                    if let ast::TuneValue::Expr(x) = v {
                        grid_expr(k, x, d);
                    }
                }
            }
            name => {
                if !k.metas.iter().any(|mp| mp.name.name == name) {
                    d.push(
                        Diagnostic::new(
                            Code::BadTune,
                            format!("`{name}` is not a meta-parameter of `{}`", k.name.name),
                            e.name.span,
                        )
                        .with_label("unknown meta-parameter")
                        .with_hint(
                            match builtins::closest(
                                name,
                                k.metas.iter().map(|mp| mp.name.name.as_str()),
                            ) {
                                Some(s) => format!("did you mean `{s}`? tune entries are `key`, `warps` and the kernel's `const` parameters"),
                                None => "tune entries are `key`, `warps` and the kernel's `const` parameters".to_string(),
                            },
                        ),
                    );
                }
                if e.values.is_empty() {
                    bad(d, e.span, format!("`{name}` needs at least one value"));
                }
                for v in &e.values {
                    if let ast::TuneValue::Name(n) = v {
                        bad(d, n.span, format!("values of `{name}` must be integers"));
                    }
                }
            }
        }
    }
}

/// A `grid:` axis as a [`tir::launch::GridExpr`]: integer literals, the
/// kernel's integer scalar parameters and meta-parameters, `+ - * /` and
/// `cdiv(a, b)`. Anything else is reported (E0031) and gives `None`.
fn grid_expr(k: &KernelDef, e: &ast::Expr, d: &mut Diagnostics) -> Option<tir::launch::GridExpr> {
    use tir::launch::GridExpr as G;
    const OPS: &str = "a grid axis is integer arithmetic (`+ - * /`, `cdiv(a, b)`) over the kernel's integer parameters, its meta-parameters and integer literals";
    let bad = |d: &mut Diagnostics, msg: String, label: &str, hint: String| {
        d.push(
            Diagnostic::new(Code::BadTune, msg, e.span)
                .with_label(label)
                .with_hint(hint),
        );
        None
    };
    let two = |d: &mut Diagnostics, a: &ast::Expr, b: &ast::Expr| {
        let a = grid_expr(k, a, d);
        let b = grid_expr(k, b, d);
        Some((Box::new(a?), Box::new(b?)))
    };
    match &e.kind {
        ast::ExprKind::Int(v) => Some(G::Const(*v)),
        ast::ExprKind::Name(n) => {
            if let Some(p) = k.params.iter().find(|p| p.name.name == *n) {
                return match &p.ty {
                    Some(t) if !t.ptr && matches!(t.name.name.as_str(), "i32" | "i64") => {
                        Some(G::Param(n.clone()))
                    }
                    Some(t) if t.ptr => bad(
                        d,
                        format!("grid axis uses `{n}`, a pointer parameter"),
                        "a pointer",
                        format!("{OPS}; pass the size the pointer covers as an `i32` parameter"),
                    ),
                    Some(t) => bad(
                        d,
                        format!("grid axis uses `{n}`, a `{}` parameter", t.name.name),
                        "not an integer",
                        OPS.to_string(),
                    ),
                    None => bad(
                        d,
                        format!("grid axis uses `{n}`, a parameter without a type"),
                        "not an integer",
                        OPS.to_string(),
                    ),
                };
            }
            if k.metas.iter().any(|m| m.name.name == *n) {
                return Some(G::Meta(n.clone()));
            }
            let names = k
                .params
                .iter()
                .filter(|p| p.ty.as_ref().is_some_and(|t| !t.ptr))
                .map(|p| p.name.name.as_str())
                .chain(k.metas.iter().map(|m| m.name.name.as_str()));
            let hint = match builtins::closest(n, names) {
                Some(s) => format!("did you mean `{s}`? {OPS}"),
                None => OPS.to_string(),
            };
            bad(
                d,
                format!(
                    "grid axis uses `{n}`, which is neither a parameter nor a meta-parameter of `{}`",
                    k.name.name
                ),
                "unknown name",
                hint,
            )
        }
        ast::ExprKind::Unary(ast::UnOp::Neg, a) => {
            Some(G::Sub(Box::new(G::Const(0)), Box::new(grid_expr(k, a, d)?)))
        }
        ast::ExprKind::Binary(op, a, b) => {
            let make: fn(Box<G>, Box<G>) -> G = match op {
                ast::BinOp::Add => G::Add,
                ast::BinOp::Sub => G::Sub,
                ast::BinOp::Mul => G::Mul,
                ast::BinOp::Div => G::Div,
                _ => {
                    return bad(
                        d,
                        format!("`{}` in a grid axis", op.symbol()),
                        "not allowed here",
                        OPS.to_string(),
                    )
                }
            };
            let (a, b) = two(d, a, b)?;
            Some(make(a, b))
        }
        ast::ExprKind::Call { callee, args } if callee.name == "cdiv" => {
            if args.len() != 2 {
                return bad(
                    d,
                    format!("`cdiv` takes 2 arguments, got {}", args.len()),
                    "in this grid axis",
                    "`cdiv(a, b)` is `a / b` rounded up".into(),
                );
            }
            let (a, b) = two(d, &args[0], &args[1])?;
            Some(G::Cdiv(a, b))
        }
        ast::ExprKind::Call { callee, .. } => bad(
            d,
            format!("call to `{}` in a grid axis", callee.name),
            "not allowed here",
            format!("the only function in a grid axis is `cdiv(a, b)`; {OPS}"),
        ),
        ast::ExprKind::Error => None,
        _ => bad(
            d,
            "this expression cannot be a grid axis".into(),
            "not allowed here",
            OPS.to_string(),
        ),
    }
}
