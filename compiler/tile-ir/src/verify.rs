//! TIR verifier: checks the invariants listed in the [`super`] module doc, plus
//! the typing rule of every op.

use super::{BinaryOp, Block, Const, Elem, Inst, Kernel, Op, Scalar, Type, UnaryOp, ValueId};

#[derive(Debug, thiserror::Error)]
#[error("invalid TIR in kernel `{kernel}`: {message}")]
pub struct VerifyError {
    pub kernel: String,
    pub message: String,
}

/// Check the invariants listed in the module doc.
pub fn verify(kernel: &Kernel) -> Result<(), VerifyError> {
    let mut v = Verifier {
        k: kernel,
        defined: vec![false; kernel.values.len()],
        scopes: vec![Vec::new()],
    };
    v.run().map_err(|message| VerifyError {
        kernel: kernel.name.clone(),
        message,
    })
}

struct Verifier<'k> {
    k: &'k Kernel,
    /// Defined anywhere so far (a value may be defined only once).
    defined: Vec<bool>,
    /// Values visible in each open block (for use-before-def and scoping).
    scopes: Vec<Vec<ValueId>>,
}

type VResult = Result<(), String>;

impl Verifier<'_> {
    fn run(&mut self) -> VResult {
        for p in &self.k.params {
            self.define(p.value)?;
            if *self.ty(p.value)? != p.ty {
                return Err(format!(
                    "parameter `{}` has type {} but {} is {}",
                    p.name,
                    p.ty,
                    p.value,
                    self.ty(p.value)?
                ));
            }
            if !p.ty.is_scalar() {
                return Err(format!("parameter `{}` is not a scalar or pointer", p.name));
            }
        }
        if !self.k.body.args.is_empty() {
            return Err("the kernel body has block arguments".into());
        }
        self.block(&self.k.body, None)
    }

    fn ty(&self, v: ValueId) -> Result<&Type, String> {
        self.k
            .values
            .get(v.0 as usize)
            .ok_or_else(|| format!("{v} is out of range"))
    }

    fn define(&mut self, v: ValueId) -> VResult {
        let t = self.ty(v)?.clone();
        if std::mem::replace(&mut self.defined[v.0 as usize], true) {
            return Err(format!("{v} is defined twice"));
        }
        if let Some(d) = t.shape.iter().find(|d| !d.is_power_of_two()) {
            return Err(format!(
                "{v} has type {t} with dimension {d}, not a power of two"
            ));
        }
        if let Some(s) = self.scopes.last_mut() {
            s.push(v);
        }
        Ok(())
    }

    fn visible(&self, v: ValueId) -> bool {
        self.scopes.iter().any(|s| s.contains(&v))
    }

    /// Verify a block; `yields` gives the types its `Yield` must have (None: no yield).
    fn block(&mut self, b: &Block, yields: Option<&[Type]>) -> VResult {
        for (i, inst) in b.insts.iter().enumerate() {
            let last = i + 1 == b.insts.len();
            if let Op::Yield(vs) = &inst.op {
                let Some(want) = yields else {
                    return Err("`yield` outside a `for`/`if` body".into());
                };
                if !last {
                    return Err("`yield` is not the last instruction of its block".into());
                }
                self.uses(inst)?;
                let got: Vec<Type> = vs
                    .iter()
                    .map(|v| self.ty(*v).cloned())
                    .collect::<Result<_, _>>()?;
                if got != want {
                    return Err(format!(
                        "`yield` has types {} but the op expects {}",
                        types(&got),
                        types(want)
                    ));
                }
                if !inst.results.is_empty() {
                    return Err("`yield` has results".into());
                }
                return Ok(());
            }
            self.inst(inst)?;
        }
        if yields.is_some() {
            return Err("a `for`/`if` body does not end with `yield`".into());
        }
        Ok(())
    }

    fn uses(&self, inst: &Inst) -> VResult {
        for v in inst.op.operands() {
            self.ty(v)?;
            if !self.visible(v) {
                return Err(format!(
                    "{v} is used before its definition (or outside its block)"
                ));
            }
        }
        Ok(())
    }

    fn inst(&mut self, inst: &Inst) -> VResult {
        self.uses(inst)?;
        let want_results = match &inst.op {
            Op::Store { .. } => 0,
            Op::For { init, .. } => init.len(),
            Op::If { .. } => inst.results.len(),
            _ => 1,
        };
        if inst.results.len() != want_results {
            return Err(format!(
                "{} has {} results, expected {want_results}",
                op_name(&inst.op),
                inst.results.len()
            ));
        }
        self.check_types(inst)
            .map_err(|e| format!("{}: {e}", op_name(&inst.op)))?;
        match &inst.op {
            Op::For { body, .. } => {
                let results: Vec<Type> = inst
                    .results
                    .iter()
                    .map(|r| self.ty(*r).cloned())
                    .collect::<Result<_, _>>()?;
                self.scopes.push(Vec::new());
                for a in &body.args {
                    self.define(*a)?;
                }
                self.block(body, Some(&results))?;
                self.scopes.pop();
            }
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                let results: Vec<Type> = inst
                    .results
                    .iter()
                    .map(|r| self.ty(*r).cloned())
                    .collect::<Result<_, _>>()?;
                for b in [then_body, else_body] {
                    if !b.args.is_empty() {
                        return Err("an `if` body has block arguments".into());
                    }
                    self.scopes.push(Vec::new());
                    self.block(b, Some(&results))?;
                    self.scopes.pop();
                }
            }
            _ => {}
        }
        for r in &inst.results {
            self.define(*r)?;
        }
        Ok(())
    }

    fn check_types(&self, inst: &Inst) -> VResult {
        let t = |v: &ValueId| self.ty(*v).cloned();
        let r = match inst.results.first() {
            Some(r) => Some(t(r)?),
            None => None,
        };
        let r = || r.clone().ok_or_else(|| "missing result".to_string());
        let num = |ty: &Type| -> Result<Scalar, String> {
            ty.scalar_elem()
                .ok_or_else(|| format!("expected numbers, found {ty}"))
        };
        let same = |a: &Type, b: &Type| -> VResult {
            if a == b {
                Ok(())
            } else {
                Err(format!("operand types differ: {a} vs {b}"))
            }
        };
        match &inst.op {
            Op::Const(c) => {
                let rt = r()?;
                let s = num(&rt)?;
                let ok = rt.is_scalar()
                    && match c {
                        Const::Bool(_) => s == Scalar::I1,
                        Const::Int(_) => s.is_int() && s != Scalar::I1,
                        Const::Float(_) => s.is_float(),
                    };
                if !ok {
                    return Err(format!("constant {c:?} of type {rt}"));
                }
            }
            Op::ProgramId(a) | Op::NumPrograms(a) => {
                if *a > 2 || r()? != Type::scalar(Scalar::I32) {
                    return Err("axis must be 0..=2 and the result i32".into());
                }
            }
            Op::Arange { start, end } => {
                let want = Type::tile(Scalar::I32, vec![(end - start).max(0) as u32]);
                if r()? != want || end <= start {
                    return Err(format!("result must be {want}"));
                }
            }
            Op::Splat(v) => {
                let (vt, rt) = (t(v)?, r()?);
                if !vt.is_scalar() || vt.elem != rt.elem {
                    return Err(format!("cannot splat {vt} to {rt}"));
                }
            }
            Op::ExpandDims { value, axis } => {
                let (vt, rt) = (t(value)?, r()?);
                let mut s = vt.shape.clone();
                if *axis as usize > s.len() {
                    return Err("axis out of range".into());
                }
                s.insert(*axis as usize, 1);
                if rt != vt.with_shape(s) {
                    return Err(format!("{vt} with axis {axis} does not give {rt}"));
                }
            }
            Op::Broadcast(v) => {
                let (vt, rt) = (t(v)?, r()?);
                let ok = vt.elem == rt.elem
                    && vt.shape.len() == rt.shape.len()
                    && vt
                        .shape
                        .iter()
                        .zip(&rt.shape)
                        .all(|(a, b)| a == b || *a == 1);
                if !ok {
                    return Err(format!("cannot broadcast {vt} to {rt}"));
                }
            }
            Op::Reshape(v) => {
                let (vt, rt) = (t(v)?, r()?);
                if vt.elem != rt.elem || vt.numel() != rt.numel() {
                    return Err(format!("cannot reshape {vt} to {rt}"));
                }
            }
            Op::Trans { value, perm } => {
                let (vt, rt) = (t(value)?, r()?);
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..vt.shape.len() as u32).collect::<Vec<_>>() {
                    return Err(format!("{perm:?} is not a permutation"));
                }
                let shape: Vec<u32> = perm.iter().map(|&i| vt.shape[i as usize]).collect();
                if rt != vt.with_shape(shape) {
                    return Err(format!("{vt} permuted by {perm:?} is not {rt}"));
                }
            }
            Op::Unary(op, v) => {
                let (vt, rt) = (t(v)?, r()?);
                same(&vt, &rt)?;
                let s = num(&vt)?;
                let ok = match op {
                    UnaryOp::Neg | UnaryOp::Abs => s != Scalar::I1,
                    UnaryOp::Not => s.is_int(),
                    _ => s.is_float(),
                };
                if !ok {
                    return Err(format!("{op:?} on {vt}"));
                }
            }
            Op::Binary(op, a, b) => {
                let (at, bt, rt) = (t(a)?, t(b)?, r()?);
                same(&at, &bt)?;
                same(&at, &rt)?;
                let s = num(&at)?;
                if *op == BinaryOp::Pow && !s.is_float() {
                    return Err(format!("{op:?} on {at}"));
                }
            }
            Op::Cmp(_, a, b) => {
                let (at, bt, rt) = (t(a)?, t(b)?, r()?);
                same(&at, &bt)?;
                num(&at)?;
                if rt != Type::tile(Scalar::I1, at.shape.clone()) {
                    return Err(format!("result must be i1 of shape {:?}", at.shape));
                }
            }
            Op::Fma { a, b, c } => {
                let (at, bt, ct, rt) = (t(a)?, t(b)?, t(c)?, r()?);
                same(&at, &bt)?;
                same(&at, &ct)?;
                same(&at, &rt)?;
                if !num(&at)?.is_float() {
                    return Err(format!("fma on {at}"));
                }
            }
            Op::Select { cond, a, b } => {
                let (ct, at, bt, rt) = (t(cond)?, t(a)?, t(b)?, r()?);
                same(&at, &bt)?;
                same(&at, &rt)?;
                if ct != Type::tile(Scalar::I1, at.shape.clone()) {
                    return Err(format!("condition {ct} does not match {at}"));
                }
            }
            Op::Cast(v) => {
                let (vt, rt) = (t(v)?, r()?);
                num(&vt)?;
                num(&rt)?;
                if vt.shape != rt.shape {
                    return Err(format!("cast changes the shape: {vt} to {rt}"));
                }
            }
            Op::AddPtr { ptr, offset } => {
                let (pt, ot, rt) = (t(ptr)?, t(offset)?, r()?);
                same(&pt, &rt)?;
                let ok = matches!(pt.elem, Elem::Ptr(_))
                    && matches!(ot.elem, Elem::Scalar(Scalar::I32 | Scalar::I64))
                    && ot.shape == pt.shape;
                if !ok {
                    return Err(format!("cannot offset {pt} by {ot}"));
                }
            }
            Op::Load { ptr, mask, other } => {
                let (pt, rt) = (t(ptr)?, r()?);
                let Elem::Ptr(s) = pt.elem else {
                    return Err(format!("{pt} is not a pointer"));
                };
                if rt != Type::tile(s, pt.shape.clone()) {
                    return Err(format!("loading {pt} gives {rt}"));
                }
                self.check_mask(mask, &pt)?;
                if let Some(o) = other {
                    same(&t(o)?, &rt)?;
                }
            }
            Op::Store { ptr, value, mask } | Op::AtomicAdd { ptr, value, mask } => {
                let (pt, vt) = (t(ptr)?, t(value)?);
                let Elem::Ptr(s) = pt.elem else {
                    return Err(format!("{pt} is not a pointer"));
                };
                if vt != Type::tile(s, pt.shape.clone()) {
                    return Err(format!("value {vt} does not fit {pt}"));
                }
                self.check_mask(mask, &pt)?;
                if matches!(inst.op, Op::AtomicAdd { .. }) {
                    same(&r()?, &vt)?;
                }
            }
            Op::Reduce { value, axis, .. } => {
                let (vt, rt) = (t(value)?, r()?);
                if *axis as usize >= vt.shape.len() {
                    return Err("axis out of range".into());
                }
                let mut s = vt.shape.clone();
                s.remove(*axis as usize);
                if rt != vt.with_shape(s) || num(&vt)? == Scalar::I1 {
                    return Err(format!("reducing {vt} along {axis} does not give {rt}"));
                }
            }
            Op::Dot { a, b, acc } => {
                let (at, bt, ct, rt) = (t(a)?, t(b)?, t(acc)?, r()?);
                let ok = at.shape.len() == 2
                    && bt.shape.len() == 2
                    && at.shape[1] == bt.shape[0]
                    && at.elem == bt.elem
                    && matches!(
                        at.elem,
                        Elem::Scalar(Scalar::BF16 | Scalar::F16 | Scalar::F32)
                    )
                    && ct == Type::tile(Scalar::F32, vec![at.shape[0], bt.shape[1]])
                    && rt == ct;
                if !ok {
                    return Err(format!("{at} x {bt} + {ct} -> {rt}"));
                }
            }
            Op::For {
                lb,
                ub,
                step,
                init,
                body,
                ..
            } => {
                let it = t(lb)?;
                if !it.is_scalar() || !matches!(it.elem, Elem::Scalar(Scalar::I32 | Scalar::I64)) {
                    return Err(format!("bounds must be i32/i64 scalars, found {it}"));
                }
                same(&it, &t(ub)?)?;
                same(&it, &t(step)?)?;
                if body.args.len() != init.len() + 1 {
                    return Err("body arguments must be [iv, carried...]".into());
                }
                same(&it, &t(&body.args[0])?)?;
                for ((a, i), res) in body.args[1..].iter().zip(init).zip(&inst.results) {
                    let (at, itt, rt) = (t(a)?, t(i)?, t(res)?);
                    same(&at, &itt)?;
                    same(&at, &rt)?;
                }
            }
            Op::If { cond, .. } => {
                if t(cond)? != Type::scalar(Scalar::I1) {
                    return Err("condition must be a scalar i1".into());
                }
            }
            Op::Yield(_) => {}
        }
        Ok(())
    }

    fn check_mask(&self, mask: &Option<ValueId>, pt: &Type) -> VResult {
        if let Some(m) = mask {
            let mt = self.ty(*m)?;
            if *mt != Type::tile(Scalar::I1, pt.shape.clone()) {
                return Err(format!("mask {mt} does not match {pt}"));
            }
        }
        Ok(())
    }
}

fn types(ts: &[Type]) -> String {
    format!(
        "({})",
        ts.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn op_name(op: &Op) -> String {
    let s = format!("{op:?}");
    s.split(['(', ' ', '{'])
        .next()
        .unwrap_or("op")
        .to_lowercase()
}
