//! Calls: builtins first, then helper `fn`s, inlined at each call site in a
//! fresh frame (TIR has no call op).

use super::{plural, BindKind, Binding, Cx, Frame, Reported, Val, MAX_HELPER_DEPTH, R};
use crate::check::builtins;
use crate::check::{find_fn, find_kernel, scalar_type};
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{self, Expr, FnDef};
use std::collections::HashMap;
use tile_ir::{Elem, Span};

impl<'m> Cx<'m> {
    pub(super) fn call(&mut self, callee: &ast::Ident, args: &[Expr], span: Span) -> R<Val> {
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
            } else {
                let helpers = self.module.items.iter().filter_map(|i| match i {
                    ast::Item::Fn(f) => Some(f.name.name.as_str()),
                    _ => None,
                });
                let names = builtins::BUILTINS.iter().copied().chain(helpers);
                if let Some(s) = builtins::closest(&callee.name, names) {
                    d = d.with_hint(format!("did you mean `{s}`?"));
                }
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
    pub(super) fn inline_helper(
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
                    kind: BindKind::Param,
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
        if matches!((&f.ret, &v), (None, Val::Unit)) && f.body.tail.is_none() {
            // `fn f(x) { x * 2.0; }`: the `;` discards the value.
            if let Some(ast::Stmt {
                kind: ast::StmtKind::Expr(e),
                span: st,
            }) = f.body.stmts.last()
            {
                let unit_builtin =
                    matches!(&e.kind, ast::ExprKind::Call { callee, .. } if callee.name == "store");
                if st.end > e.span.end && !unit_builtin {
                    let semi = Span {
                        start: st.end - 1,
                        end: st.end,
                    };
                    self.unit_calls.push((span, semi, f.name.name.clone()));
                }
            }
        }
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
