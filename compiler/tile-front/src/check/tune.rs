//! Tune blocks: their checks (E0031) and the [`tir::TuneSpace`] they
//! describe — candidate values, warps, the launch grid (`grid:`) and the
//! conditions that pair choices (`where:`).

use super::{builtins, find_kernel};
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::syntax::ast::{self, Item, KernelDef};
use std::collections::HashMap;
use tile_ir::launch::{GridExpr, TuneCond};
use tile_ir::{self as tir, Span};

fn find_tune<'m>(m: &'m ast::Module, name: &str) -> Option<&'m ast::TuneDef> {
    m.items.iter().find_map(|it| match it {
        Item::Tune(t) if t.kernel.name == name => Some(t),
        _ => None,
    })
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
            "stages" => space.stages = ints().map(|w| w as u32).collect(),
            "ctas" => space.ctas = ints().map(|w| w as u32).collect(),
            "grid" => {
                if let Some(k) = find_kernel(m, kernel) {
                    space.grid = converted(e, |x, d| grid_expr(k, x, d))
                        .filter(|a| (1..=3).contains(&a.len()));
                }
            }
            "where" => {
                if let Some(k) = find_kernel(m, kernel) {
                    space.constraints =
                        converted(e, |x, d| tune_cond(k, t, x, d)).unwrap_or_default();
                }
            }
            name => space.params.push((name.to_string(), ints().collect())),
        }
    }
    Some(space)
}

/// Most configurations one tune block may describe.
const MAX_CONFIGS: u64 = 10_000;

pub(super) fn check_tune(m: &ast::Module, t: &ast::TuneDef, d: &mut Diagnostics) {
    let configs = t
        .entries
        .iter()
        .filter(|e| !matches!(e.name.name.as_str(), "key" | "grid" | "where"))
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
            entry @ ("stages" | "ctas") => {
                let (range, what, plural) = if entry == "stages" {
                    (tir::PIPELINE_DEPTHS, "pipeline depth", "pipeline depths")
                } else {
                    (tir::CTAS_PER_SM, "CTA count", "CTA counts")
                };
                if e.values.is_empty() {
                    bad(d, e.span, format!("`{entry}` needs at least one value"));
                }
                for v in &e.values {
                    match v {
                        ast::TuneValue::Int(n, s)
                            if !u32::try_from(*n).is_ok_and(|n| range.contains(&n)) =>
                        {
                            let (lo, hi) = (range.start(), range.end());
                            bad(d, *s, format!("{what} {n} must be between {lo} and {hi}"))
                        }
                        ast::TuneValue::Int(..) | ast::TuneValue::Expr(_) => {}
                        ast::TuneValue::Name(n) => bad(d, n.span, format!("{plural} are numbers")),
                    }
                }
            }
            "where" => {
                if e.values.is_empty() {
                    bad(d, e.span, "`where` needs at least one condition".into());
                }
                for v in &e.values {
                    if let ast::TuneValue::Expr(x) = v {
                        tune_cond(k, t, x, d);
                    }
                }
                check_where_admits_some(m, t, e, d);
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
                                Some(s) => format!("did you mean `{s}`? tune entries are `key`, `warps`, `stages`, `ctas`, `grid`, `where` and the kernel's `const` parameters"),
                                None => "tune entries are `key`, `warps`, `stages`, `ctas`, `grid`, `where` and the kernel's `const` parameters".to_string(),
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

/// An E0031 error at `span` with its label and hint; `None` for the
/// conversion that found it.
fn reject<T>(d: &mut Diagnostics, span: Span, msg: String, label: &str, hint: String) -> Option<T> {
    d.push(
        Diagnostic::new(Code::BadTune, msg, span)
            .with_label(label)
            .with_hint(hint),
    );
    None
}

/// A `grid:` axis as a [`tir::launch::GridExpr`]: integer literals, the
/// kernel's integer scalar parameters and meta-parameters, `+ - * /` and
/// `cdiv(a, b)`. Anything else is reported (E0031) and gives `None`.
fn grid_expr(k: &KernelDef, e: &ast::Expr, d: &mut Diagnostics) -> Option<tir::launch::GridExpr> {
    use tir::launch::GridExpr as G;
    const OPS: &str = "a grid axis is integer arithmetic (`+ - * /`, `cdiv(a, b)`) over the kernel's integer parameters, its meta-parameters and integer literals";
    let bad = |d: &mut Diagnostics, msg: String, label: &str, hint: String| {
        reject(d, e.span, msg, label, hint)
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

/// Every value of an expression entry (`grid:`, `where:`) converted by
/// `convert`; `None` when any does not convert (the checker reports why).
fn converted<T>(
    e: &ast::TuneEntry,
    mut convert: impl FnMut(&ast::Expr, &mut Diagnostics) -> Option<T>,
) -> Option<Vec<T>> {
    let mut d = Diagnostics::new();
    let out: Option<Vec<T>> = e
        .values
        .iter()
        .map(|v| match v {
            ast::TuneValue::Expr(x) => convert(x, &mut d),
            _ => None,
        })
        .collect();
    out.filter(|_| d.is_empty())
}

/// After the conditions check: each evaluates for every configuration of the
/// block's product, and at least one configuration meets them all.
fn check_where_admits_some(
    m: &ast::Module,
    t: &ast::TuneDef,
    e: &ast::TuneEntry,
    d: &mut Diagnostics,
) {
    let Some(space) = tune_space(m, &t.kernel.name) else {
        return;
    };
    if space.constraints.is_empty() {
        return; // the conditions had errors, reported already
    }
    let all = tir::TuneSpace {
        constraints: vec![],
        ..space.clone()
    }
    .configs();
    for c in &all {
        if let Some((cond, why)) = space
            .constraints
            .iter()
            .find_map(|k| k.holds(&|n| c.value(n)).err().map(|why| (k, why)))
        {
            d.push(
                Diagnostic::new(
                    Code::BadTune,
                    format!("the condition `{cond}` cannot be evaluated: {why}"),
                    e.span,
                )
                .with_label(format!("at {}", c.describe()))
                .with_hint("keep divisors away from zero for every value the block lists"),
            );
            return;
        }
    }
    if space.configs().is_empty() {
        d.push(
            Diagnostic::new(
                Code::BadTune,
                format!(
                    "no configuration of the {} in this tune block meets its `where` conditions",
                    all.len()
                ),
                e.span,
            )
            .with_label("excludes every configuration")
            .with_hint("a configuration is compiled where every condition holds; loosen one"),
        );
    }
}

const WHERE_OPS: &str = "a `where` condition compares integer arithmetic (`+ - * /`) over the block's meta-parameters, `warps` and integer literals (`== != < <= > >=`), joined by `&&`, `||` and `!`";

/// A `where:` condition as a [`TuneCond`]. Anything else is reported
/// (E0031) and gives `None`.
fn tune_cond(
    k: &KernelDef,
    t: &ast::TuneDef,
    e: &ast::Expr,
    d: &mut Diagnostics,
) -> Option<TuneCond> {
    match &e.kind {
        ast::ExprKind::Binary(op @ (ast::BinOp::And | ast::BinOp::Or), a, b) => {
            let a = tune_cond(k, t, a, d);
            let b = tune_cond(k, t, b, d);
            let (a, b) = (Box::new(a?), Box::new(b?));
            Some(match op {
                ast::BinOp::And => TuneCond::And(a, b),
                _ => TuneCond::Or(a, b),
            })
        }
        ast::ExprKind::Binary(op, a, b) if op.comparison().is_some() => {
            let a = where_arith(k, t, a, d);
            let b = where_arith(k, t, b, d);
            Some(TuneCond::Cmp(op.comparison()?, a?, b?))
        }
        ast::ExprKind::Unary(ast::UnOp::Not, a) => {
            Some(TuneCond::Not(Box::new(tune_cond(k, t, a, d)?)))
        }
        _ => {
            d.push(
                Diagnostic::new(
                    Code::BadTune,
                    "a `where` condition must be a comparison",
                    e.span,
                )
                .with_label("not a comparison")
                .with_hint(format!("{WHERE_OPS}, e.g. `where: [BC == 128 * warps]`")),
            );
            None
        }
    }
}

/// One side of a `where:` comparison as a [`GridExpr`] over the block's
/// meta-parameters and `warps` (as `Meta`).
fn where_arith(
    k: &KernelDef,
    t: &ast::TuneDef,
    e: &ast::Expr,
    d: &mut Diagnostics,
) -> Option<GridExpr> {
    let bad = |d: &mut Diagnostics, msg: String, label: &str, hint: String| {
        reject(d, e.span, msg, label, hint)
    };
    let listed = |n: &str| {
        t.entries
            .iter()
            .any(|x| x.name.name == n && !matches!(n, "key" | "grid" | "where"))
    };
    match &e.kind {
        ast::ExprKind::Int(v) => Some(GridExpr::Const(*v)),
        ast::ExprKind::Name(n) if n == "warps" || listed(n) => Some(GridExpr::Meta(n.clone())),
        ast::ExprKind::Name(n) => {
            let (what, hint) = if k.params.iter().any(|p| p.name.name == *n) {
                (
                    format!("`{n}` is a run-time parameter"),
                    format!("{WHERE_OPS}; `key: [{n}]` tunes per value of `{n}` instead"),
                )
            } else if k.metas.iter().any(|m| m.name.name == *n) {
                (
                    format!("meta-parameter `{n}` is not in the tune block"),
                    format!("list its values (`{n}: [...]`) to use it in a condition"),
                )
            } else {
                let names = t
                    .entries
                    .iter()
                    .map(|x| x.name.name.as_str())
                    .filter(|n| !matches!(*n, "key" | "grid" | "where"))
                    .chain(["warps"]);
                (
                    format!("`{n}` is not a meta-parameter of `{}`", k.name.name),
                    match builtins::closest(n, names) {
                        Some(s) => format!("did you mean `{s}`? {WHERE_OPS}"),
                        None => WHERE_OPS.to_string(),
                    },
                )
            };
            bad(d, what, "not a tuned value", hint)
        }
        ast::ExprKind::Unary(ast::UnOp::Neg, a) => Some(GridExpr::Sub(
            Box::new(GridExpr::Const(0)),
            Box::new(where_arith(k, t, a, d)?),
        )),
        ast::ExprKind::Binary(op, a, b)
            if matches!(
                op,
                ast::BinOp::Add | ast::BinOp::Sub | ast::BinOp::Mul | ast::BinOp::Div
            ) =>
        {
            let a = where_arith(k, t, a, d);
            let b = where_arith(k, t, b, d);
            let (a, b) = (Box::new(a?), Box::new(b?));
            Some(match op {
                ast::BinOp::Add => GridExpr::Add(a, b),
                ast::BinOp::Sub => GridExpr::Sub(a, b),
                ast::BinOp::Mul => GridExpr::Mul(a, b),
                _ => GridExpr::Div(a, b),
            })
        }
        _ => bad(
            d,
            "not integer arithmetic".into(),
            "not allowed in a `where` condition",
            WHERE_OPS.to_string(),
        ),
    }
}
