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
mod tune;
mod types;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::syntax::ast::{self, Item, KernelDef};
use std::collections::HashMap;
use tile_ir::{self as tir, Scalar, Span};

pub use elab::elaborate;
use tune::check_tune;
pub use tune::tune_space;

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
