//! The executor: runs one program instance of a kernel over its blocks, with
//! memory operations on the argument buffers.

use super::buffer::{Buffer, Storage};
use super::value::{self, Base, Data, OpErr};
use super::{InterpError, TraceEntry};
use half::{bf16, f16};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use tile_ir::{Block, Elem, Inst, Kernel, Op, Scalar, Span, ValueId};

/// A checked memory access: pointer bases, offsets and mask.
type Access<'x> = (&'x Base, &'x [i64], Option<&'x [bool]>, Option<Contig>);

/// A run of consecutive offsets: lanes `lo..hi` are inside the buffer and lane
/// `lo` is element `e0` (see [`contiguous`]).
type Contig = (usize, usize, usize);

/// What a program instance sees: the kernel, its bound arguments, its id.
pub(crate) struct Program<'a> {
    pub kernel: &'a Kernel,
    /// The buffer of each pointer parameter (by parameter index).
    pub bufs: &'a [Option<&'a Buffer>],
    /// The value of every parameter, by parameter index.
    pub params: &'a [Data],
    pub pid: [u32; 3],
    pub grid: [u32; 3],
    pub env: Vec<Option<Data>>,
    /// Debug mode: record every defined value.
    pub trace: Option<Vec<TraceEntry>>,
}

impl<'a> Program<'a> {
    pub fn new(
        kernel: &'a Kernel,
        bufs: &'a [Option<&'a Buffer>],
        params: &'a [Data],
        pid: [u32; 3],
        grid: [u32; 3],
    ) -> Program<'a> {
        Program {
            kernel,
            bufs,
            params,
            pid,
            grid,
            env: Vec::new(),
            trace: None,
        }
    }

    pub fn run(&mut self) -> Result<(), InterpError> {
        self.env.resize(self.kernel.values.len(), None);
        for (i, p) in self.kernel.params.iter().enumerate() {
            self.set(p.value, self.params[i].clone(), Span::default())?;
        }
        let body = &self.kernel.body;
        match self.block(body)? {
            None => Ok(()),
            Some(_) => Err(self.malformed(Span::default(), "`yield` in the kernel body")),
        }
    }

    fn malformed(&self, span: Span, message: impl Into<String>) -> InterpError {
        InterpError::Malformed {
            kernel: self.kernel.name.clone(),
            span,
            message: message.into(),
        }
    }

    fn op_err(&self, span: Span, e: OpErr) -> InterpError {
        match e {
            OpErr::Malformed(m) => self.malformed(span, m),
        }
    }

    fn get(&self, v: ValueId, span: Span) -> Result<&Data, InterpError> {
        match self.env.get(v.0 as usize) {
            Some(Some(d)) => Ok(d),
            Some(None) => Err(self.malformed(span, format!("{v} is used before it is defined"))),
            None => Err(self.malformed(span, format!("{v} is not a value of the kernel"))),
        }
    }

    fn shape(&self, v: ValueId, span: Span) -> Result<&'a [u32], InterpError> {
        let k: &'a Kernel = self.kernel;
        match k.values.get(v.0 as usize) {
            Some(t) => Ok(&t.shape),
            None => Err(self.malformed(span, format!("{v} has no type"))),
        }
    }

    fn numel(&self, v: ValueId, span: Span) -> Result<usize, InterpError> {
        Ok(self.shape(v, span)?.iter().map(|&d| d as usize).product())
    }

    fn elem(&self, v: ValueId, span: Span) -> Result<Elem, InterpError> {
        match self.kernel.values.get(v.0 as usize) {
            Some(t) => Ok(t.elem),
            None => Err(self.malformed(span, format!("{v} has no type"))),
        }
    }

    fn scalar_ty(&self, v: ValueId, span: Span) -> Result<Scalar, InterpError> {
        match self.elem(v, span)? {
            Elem::Scalar(s) => Ok(s),
            Elem::Ptr(_) => {
                Err(self.malformed(span, format!("{v} is a pointer where a number is needed")))
            }
        }
    }

    /// Define `v`, checking the data against its declared type.
    fn set(&mut self, v: ValueId, d: Data, span: Span) -> Result<(), InterpError> {
        let n = self.numel(v, span)?;
        let ok = match (self.elem(v, span)?, d.scalar()) {
            (Elem::Scalar(s), Some(t)) => s == t,
            (Elem::Ptr(_), None) => true,
            _ => false,
        };
        if !ok || d.len() != n {
            let ty = &self.kernel.values[v.0 as usize];
            return Err(self.malformed(
                span,
                format!(
                    "{v} has type {ty} but the operation produced {} {} elements",
                    d.len(),
                    d.kind_name()
                ),
            ));
        }
        if let Some(t) = &mut self.trace {
            t.push(TraceEntry {
                value: v,
                span,
                ty: self.kernel.values[v.0 as usize].clone(),
                summary: summarize(&d),
            });
        }
        self.env[v.0 as usize] = Some(d);
        Ok(())
    }

    fn scalar_int(&self, v: ValueId, span: Span) -> Result<i64, InterpError> {
        let d = self.get(v, span)?;
        match (d.len(), d.int_at(0)) {
            (1, Some(x)) => Ok(x),
            _ => Err(self.malformed(span, format!("{v} is not an integer scalar"))),
        }
    }

    /// Run a block; `Some(values)` when it ended with a `yield`.
    fn block(&mut self, block: &'a Block) -> Result<Option<&'a [ValueId]>, InterpError> {
        for inst in &block.insts {
            if let Op::Yield(vs) = &inst.op {
                return Ok(Some(vs));
            }
            self.inst(inst)?;
        }
        Ok(None)
    }

    fn one_result(&self, inst: &Inst) -> Result<ValueId, InterpError> {
        match inst.results.as_slice() {
            [r] => Ok(*r),
            _ => Err(self.malformed(
                inst.span,
                format!("`{}` needs exactly one result", op_name(&inst.op)),
            )),
        }
    }

    fn inst(&mut self, inst: &'a Inst) -> Result<(), InterpError> {
        let span = inst.span;
        let d = match &inst.op {
            Op::Const(c) => {
                let r = self.one_result(inst)?;
                Data::constant(*c, self.scalar_ty(r, span)?, self.numel(r, span)?)
            }
            Op::ProgramId(a) | Op::NumPrograms(a) => {
                let Some(&x) = [self.pid, self.grid]
                    [matches!(inst.op, Op::NumPrograms(_)) as usize]
                    .get(*a as usize)
                else {
                    return Err(self.malformed(span, format!("grid axis {a}")));
                };
                Data::I32(vec![x as i32])
            }
            Op::Arange { start, end } => Data::I32((*start..*end).map(|i| i as i32).collect()),
            Op::Splat(v) => {
                let r = self.one_result(inst)?;
                let d = self.get(*v, span)?;
                if d.len() != 1 {
                    return Err(self.malformed(span, "splat of a tile"));
                }
                d.splat(self.numel(r, span)?)
            }
            Op::ExpandDims { value, .. } | Op::Reshape(value) => self.get(*value, span)?.clone(),
            Op::Broadcast(v) => {
                let r = self.one_result(inst)?;
                let (src, out) = (self.shape(*v, span)?, self.shape(r, span)?);
                value::broadcast(self.get(*v, span)?, src, out).map_err(|e| self.op_err(span, e))?
            }
            Op::Trans { value, perm } => {
                let src = self.shape(*value, span)?;
                value::transpose(self.get(*value, span)?, src, perm)
                    .map_err(|e| self.op_err(span, e))?
            }
            Op::Unary(op, v) => {
                value::unary(*op, self.get(*v, span)?).map_err(|e| self.op_err(span, e))?
            }
            Op::Binary(op, a, b) => value::binary(*op, self.get(*a, span)?, self.get(*b, span)?)
                .map_err(|e| self.op_err(span, e))?,
            Op::Cmp(op, a, b) => value::compare(*op, self.get(*a, span)?, self.get(*b, span)?)
                .map_err(|e| self.op_err(span, e))?,
            Op::Fma { a, b, c } => value::fma(
                self.get(*a, span)?,
                self.get(*b, span)?,
                self.get(*c, span)?,
            )
            .map_err(|e| self.op_err(span, e))?,
            Op::Select { cond, a, b } => value::select(
                self.get(*cond, span)?,
                self.get(*a, span)?,
                self.get(*b, span)?,
            )
            .map_err(|e| self.op_err(span, e))?,
            Op::Cast(v) => {
                let r = self.one_result(inst)?;
                let to = self.scalar_ty(r, span)?;
                value::cast(self.get(*v, span)?, to).map_err(|e| self.op_err(span, e))?
            }
            Op::AddPtr { ptr, offset } => self.add_ptr(*ptr, *offset, span)?,
            Op::Load { ptr, mask, other } => {
                let r = self.one_result(inst)?;
                let s = self.scalar_ty(r, span)?;
                self.load(*ptr, *mask, *other, s, span)?
            }
            Op::Store { ptr, value, mask } => {
                self.store(*ptr, *value, *mask, span)?;
                return Ok(());
            }
            Op::AtomicAdd { ptr, value, mask } => self.atomic_add(*ptr, *value, *mask, span)?,
            Op::Reduce { op, value, axis } => {
                let shape = self.shape(*value, span)?;
                value::reduce(*op, self.get(*value, span)?, shape, *axis)
                    .map_err(|e| self.op_err(span, e))?
            }
            Op::Dot { a, b, acc } => {
                let (sa, sb) = (self.shape(*a, span)?, self.shape(*b, span)?);
                let (&[m, k], &[k2, n]) = (sa, sb) else {
                    return Err(self.malformed(span, "dot operands must be 2-D"));
                };
                if k != k2 {
                    return Err(self.malformed(span, "dot inner dimensions differ"));
                }
                value::dot(
                    self.get(*a, span)?,
                    self.get(*b, span)?,
                    self.get(*acc, span)?,
                    m as usize,
                    k as usize,
                    n as usize,
                )
                .map_err(|e| self.op_err(span, e))?
            }
            Op::For {
                lb,
                ub,
                step,
                init,
                body,
                ..
            } => {
                return self.for_loop(inst, *lb, *ub, *step, init, body);
            }
            Op::If {
                cond,
                then_body,
                else_body,
            } => {
                let c = self.scalar_int(*cond, span)?;
                let body = if c != 0 { then_body } else { else_body };
                let ys = self.block(body)?.unwrap_or(&[]);
                return self.bind_results(inst, ys);
            }
            Op::Yield(_) => return Err(self.malformed(span, "`yield` outside the end of a block")),
        };
        let r = self.one_result(inst)?;
        self.set(r, d, span)
    }

    /// Define `inst.results` from the yielded values `ys`.
    fn bind_results(&mut self, inst: &Inst, ys: &[ValueId]) -> Result<(), InterpError> {
        if ys.len() != inst.results.len() {
            return Err(self.malformed(
                inst.span,
                format!(
                    "{} values yielded for {} results",
                    ys.len(),
                    inst.results.len()
                ),
            ));
        }
        for (r, y) in inst.results.iter().zip(ys) {
            let d = self.get(*y, inst.span)?.clone();
            self.set(*r, d, inst.span)?;
        }
        Ok(())
    }

    fn for_loop(
        &mut self,
        inst: &'a Inst,
        lb: ValueId,
        ub: ValueId,
        step: ValueId,
        init: &'a [ValueId],
        body: &'a Block,
    ) -> Result<(), InterpError> {
        let span = inst.span;
        let (lo, hi, st) = (
            self.scalar_int(lb, span)?,
            self.scalar_int(ub, span)?,
            self.scalar_int(step, span)?,
        );
        let Some((&iv, carried)) = body.args.split_first() else {
            return Err(self.malformed(span, "`for` body without an induction variable"));
        };
        if carried.len() != init.len() || inst.results.len() != init.len() {
            return Err(self.malformed(
                span,
                "`for` carried values, block arguments and results differ in number",
            ));
        }
        if lo < hi && st <= 0 {
            return Err(InterpError::BadStep {
                kernel: self.kernel.name.clone(),
                span,
                program_id: self.pid,
                step: st,
            });
        }
        let iv_ty = self.scalar_ty(iv, span)?;
        for (a, v) in carried.iter().zip(init) {
            let d = self.get(*v, span)?.clone();
            self.set(*a, d, span)?;
        }
        let mut i = lo;
        while i < hi {
            let ivd = if iv_ty == Scalar::I64 {
                Data::I64(vec![i])
            } else {
                Data::I32(vec![i as i32])
            };
            self.set(iv, ivd, span)?;
            let Some(ys) = self.block(body)? else {
                return Err(self.malformed(span, "`for` body does not end with `yield`"));
            };
            if ys.len() != carried.len() {
                return Err(self.malformed(span, "`for` body yields the wrong number of values"));
            }
            let next: Vec<Data> = ys
                .iter()
                .map(|y| self.get(*y, span).cloned())
                .collect::<Result<_, _>>()?;
            for (a, d) in carried.iter().zip(next) {
                self.set(*a, d, span)?;
            }
            match i.checked_add(st) {
                Some(n) => i = n,
                None => break,
            }
        }
        self.bind_results(inst, carried)
    }

    fn add_ptr(&self, ptr: ValueId, offset: ValueId, span: Span) -> Result<Data, InterpError> {
        let Data::Ptr { base, off } = self.get(ptr, span)? else {
            return Err(self.malformed(span, "add_ptr of a non-pointer"));
        };
        let o = self.get(offset, span)?;
        if o.len() != off.len() {
            return Err(self.malformed(span, "add_ptr operands of different sizes"));
        }
        let off = match o {
            Data::I32(x) => off
                .iter()
                .zip(x)
                .map(|(&p, &d)| p.wrapping_add(d as i64))
                .collect(),
            Data::I64(x) => off
                .iter()
                .zip(x)
                .map(|(&p, &d)| p.wrapping_add(d))
                .collect(),
            _ => {
                return Err(
                    self.malformed(span, format!("pointer offset of type {}", o.kind_name()))
                )
            }
        };
        Ok(Data::Ptr {
            base: base.clone(),
            off,
        })
    }

    /// The pointer tile and mask of a memory op, every unmasked element checked
    /// to be inside its buffer (which must hold `dtype`).
    fn check_access(
        &self,
        ptr: ValueId,
        mask: Option<ValueId>,
        dtype: Scalar,
        op: &'static str,
        span: Span,
    ) -> Result<Access<'_>, InterpError> {
        let Data::Ptr { base, off } = self.get(ptr, span)? else {
            return Err(self.malformed(span, format!("{op} through a non-pointer")));
        };
        let mask = match mask {
            None => None,
            Some(m) => match self.get(m, span)? {
                Data::I1(m) if m.len() == off.len() => Some(m.as_slice()),
                _ => {
                    return Err(
                        self.malformed(span, format!("{op} mask is not i1 of the pointer's shape"))
                    )
                }
            },
        };
        let buffer = |b: u32| -> Result<&Buffer, InterpError> {
            let Some(buf) = self.bufs.get(b as usize).copied().flatten() else {
                return Err(self.malformed(
                    span,
                    format!("pointer into parameter {b}, which is not a buffer"),
                ));
            };
            if buf.dtype() != dtype {
                return Err(self.malformed(
                    span,
                    format!(
                        "{op} of {} from a {} buffer",
                        dtype.name(),
                        buf.dtype().name()
                    ),
                ));
            }
            Ok(buf)
        };
        if let Base::One(b) = base {
            let buf = buffer(*b)?;
            let len = buf.len() as u64;
            let contig = contiguous(off, buf.len());
            // (a negative offset is a huge u64) branch-free first, to vectorise
            let out = |o: i64| o as u64 >= len;
            let bad = if let Some((lo, hi, _)) = contig {
                // consecutive offsets: only lanes outside lo..hi can be out of bounds
                let n = off.len();
                match mask {
                    None => (lo != 0 || hi != n).then_some(if lo > 0 { 0 } else { hi }),
                    Some(m) => (0..lo).chain(hi..n).find(|&l| m[l]),
                }
            } else {
                let any = match mask {
                    None => off.iter().fold(false, |a, &o| a | out(o)),
                    Some(m) => off
                        .iter()
                        .zip(m)
                        .fold(false, |a, (&o, &m)| a | (m & out(o))),
                };
                match (any, mask) {
                    (false, _) => None,
                    (true, None) => off.iter().position(|&o| out(o)),
                    (true, Some(m)) => off.iter().zip(m).position(|(&o, &m)| m && out(o)),
                }
            };
            return match bad {
                None => Ok((base, off, mask, contig)),
                Some(lane) => Err(InterpError::OutOfBounds {
                    kernel: self.kernel.name.clone(),
                    op,
                    span,
                    program_id: self.pid,
                    index: off[lane],
                    len: buf.len(),
                    param: self.kernel.params.get(*b as usize).map(|p| p.name.clone()),
                    lane,
                }),
            };
        }
        for (lane, &o) in off.iter().enumerate() {
            if mask.is_some_and(|m| !m[lane]) {
                continue;
            }
            let b = base.at(lane);
            let buf = buffer(b)?;
            if o < 0 || o as u64 >= buf.len() as u64 {
                return Err(InterpError::OutOfBounds {
                    kernel: self.kernel.name.clone(),
                    op,
                    span,
                    program_id: self.pid,
                    index: o,
                    len: buf.len(),
                    param: self.kernel.params.get(b as usize).map(|p| p.name.clone()),
                    lane,
                });
            }
        }
        Ok((base, off, mask, None))
    }

    fn load(
        &self,
        ptr: ValueId,
        mask: Option<ValueId>,
        other: Option<ValueId>,
        s: Scalar,
        span: Span,
    ) -> Result<Data, InterpError> {
        let (base, off, mask, contig) = self.check_access(ptr, mask, s, "load", span)?;
        let n = off.len();
        let other = match other {
            Some(o) => self.get(o, span)?.clone(),
            None => Data::zeros(s, n),
        };
        if other.len() != n || other.scalar() != Some(s) {
            return Err(self.malformed(span, "load `other` does not match the loaded tile"));
        }
        let bufs = self.bufs;
        let buf_at = |lane: usize| bufs[base.at(lane) as usize].unwrap();
        let on = |lane: usize| mask.is_none_or(|m| m[lane]);
        macro_rules! lanes {
            ($other:expr, $st:ident, $conv:expr) => {{
                let mut out = $other.clone();
                match base {
                    Base::One(b) => {
                        let Storage::$st(st) = &bufs[*b as usize].unwrap().storage else {
                            unreachable!()
                        };
                        if let Some((lo, hi, e0)) = contig {
                            // lanes outside lo..hi are masked off (checked)
                            let src = &st[e0..e0 + (hi - lo)];
                            match mask {
                                None => {
                                    for (r, a) in out[lo..hi].iter_mut().zip(src) {
                                        *r = $conv(a.load(Relaxed));
                                    }
                                }
                                Some(m) => {
                                    for ((r, a), &m) in
                                        out[lo..hi].iter_mut().zip(src).zip(&m[lo..hi])
                                    {
                                        let v = $conv(a.load(Relaxed));
                                        if m {
                                            *r = v;
                                        }
                                    }
                                }
                            }
                        } else {
                            match mask {
                                None => {
                                    for (r, &o) in out.iter_mut().zip(off) {
                                        *r = $conv(st[o as usize].load(Relaxed));
                                    }
                                }
                                Some(m) => {
                                    for ((r, &o), &m) in out.iter_mut().zip(off).zip(m) {
                                        if m {
                                            *r = $conv(st[o as usize].load(Relaxed));
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Base::Many(_) => {
                        for (lane, r) in out.iter_mut().enumerate() {
                            if on(lane) {
                                let Storage::$st(st) = &buf_at(lane).storage else {
                                    unreachable!()
                                };
                                *r = $conv(st[off[lane] as usize].load(Relaxed));
                            }
                        }
                    }
                }
                out
            }};
        }
        Ok(match &other {
            Data::F32(o) => Data::F32(lanes!(o, B32, f32::from_bits)),
            Data::I32(o) => Data::I32(lanes!(o, B32, |b: u32| b as i32)),
            Data::I64(o) => Data::I64(lanes!(o, B64, |b: u64| b as i64)),
            Data::BF16(o) => Data::BF16(lanes!(o, B16, bf16::from_bits)),
            Data::F16(o) => Data::F16(lanes!(o, B16, f16::from_bits)),
            Data::I1(o) => Data::I1(lanes!(o, B8, |b: u8| b != 0)),
            Data::Ptr { .. } => return Err(self.malformed(span, "load of pointers")),
        })
    }

    fn store(
        &self,
        ptr: ValueId,
        value: ValueId,
        mask: Option<ValueId>,
        span: Span,
    ) -> Result<(), InterpError> {
        let v = self.get(value, span)?;
        let Some(s) = v.scalar() else {
            return Err(self.malformed(span, "store of pointers"));
        };
        let (base, off, mask, contig) = self.check_access(ptr, mask, s, "store", span)?;
        if v.len() != off.len() {
            return Err(self.malformed(span, "stored value and pointer differ in shape"));
        }
        let bufs = self.bufs;
        macro_rules! lanes {
            ($vals:expr, $st:ident, $conv:expr) => {{
                match base {
                    Base::One(b) => {
                        let Storage::$st(st) = &bufs[*b as usize].unwrap().storage else {
                            unreachable!()
                        };
                        if let Some((lo, hi, e0)) = contig {
                            let dst = &st[e0..e0 + (hi - lo)];
                            match mask {
                                None => {
                                    for (a, &x) in dst.iter().zip(&$vals[lo..hi]) {
                                        a.store($conv(x), Relaxed);
                                    }
                                }
                                Some(m) => {
                                    for ((a, &x), &m) in
                                        dst.iter().zip(&$vals[lo..hi]).zip(&m[lo..hi])
                                    {
                                        if m {
                                            a.store($conv(x), Relaxed);
                                        }
                                    }
                                }
                            }
                        } else {
                            for (lane, (&o, &x)) in off.iter().zip($vals.iter()).enumerate() {
                                if mask.is_none_or(|m| m[lane]) {
                                    st[o as usize].store($conv(x), Relaxed);
                                }
                            }
                        }
                    }
                    Base::Many(_) => {
                        for (lane, (&o, &x)) in off.iter().zip($vals.iter()).enumerate() {
                            if mask.is_none_or(|m| m[lane]) {
                                let Storage::$st(st) =
                                    &bufs[base.at(lane) as usize].unwrap().storage
                                else {
                                    unreachable!()
                                };
                                st[o as usize].store($conv(x), Relaxed);
                            }
                        }
                    }
                }
            }};
        }
        match v {
            Data::F32(x) => lanes!(x, B32, f32::to_bits),
            Data::I32(x) => lanes!(x, B32, |a: i32| a as u32),
            Data::I64(x) => lanes!(x, B64, |a: i64| a as u64),
            Data::BF16(x) => lanes!(x, B16, bf16::to_bits),
            Data::F16(x) => lanes!(x, B16, f16::to_bits),
            Data::I1(x) => lanes!(x, B8, |a: bool| a as u8),
            Data::Ptr { .. } => unreachable!(),
        }
        Ok(())
    }

    fn atomic_add(
        &self,
        ptr: ValueId,
        value: ValueId,
        mask: Option<ValueId>,
        span: Span,
    ) -> Result<Data, InterpError> {
        let v = self.get(value, span)?;
        let Some(s) = v.scalar() else {
            return Err(self.malformed(span, "atomic_add of pointers"));
        };
        let (base, off, mask, _) = self.check_access(ptr, mask, s, "atomic_add", span)?;
        if v.len() != off.len() {
            return Err(self.malformed(span, "atomic_add value and pointer differ in shape"));
        }
        let bufs = self.bufs;
        macro_rules! lanes {
            ($vals:expr, $st:ident, $zero:expr, $rmw:expr) => {{
                let mut old = vec![$zero; off.len()];
                for (lane, (&o, &x)) in off.iter().zip($vals.iter()).enumerate() {
                    if mask.is_none_or(|m| m[lane]) {
                        let Storage::$st(st) = &bufs[base.at(lane) as usize].unwrap().storage
                        else {
                            unreachable!()
                        };
                        old[lane] = $rmw(&st[o as usize], x);
                    }
                }
                old
            }};
        }
        Ok(match v {
            Data::F32(x) => Data::F32(lanes!(
                x,
                B32,
                0.0f32,
                |a: &std::sync::atomic::AtomicU32, x: f32| {
                    let prev = a
                        .fetch_update(AcqRel, Acquire, |b| Some((f32::from_bits(b) + x).to_bits()))
                        .unwrap();
                    f32::from_bits(prev)
                }
            )),
            Data::BF16(x) => Data::BF16(lanes!(
                x,
                B16,
                bf16::ZERO,
                |a: &std::sync::atomic::AtomicU16, x: bf16| {
                    let prev = a
                        .fetch_update(AcqRel, Acquire, |b| {
                            Some(bf16::from_f32(bf16::from_bits(b).to_f32() + x.to_f32()).to_bits())
                        })
                        .unwrap();
                    bf16::from_bits(prev)
                }
            )),
            Data::F16(x) => Data::F16(lanes!(
                x,
                B16,
                f16::ZERO,
                |a: &std::sync::atomic::AtomicU16, x: f16| {
                    let prev = a
                        .fetch_update(AcqRel, Acquire, |b| {
                            Some(f16::from_f32(f16::from_bits(b).to_f32() + x.to_f32()).to_bits())
                        })
                        .unwrap();
                    f16::from_bits(prev)
                }
            )),
            Data::I32(x) => Data::I32(lanes!(
                x,
                B32,
                0i32,
                |a: &std::sync::atomic::AtomicU32, x: i32| a.fetch_add(x as u32, AcqRel) as i32
            )),
            Data::I64(x) => Data::I64(lanes!(
                x,
                B64,
                0i64,
                |a: &std::sync::atomic::AtomicU64, x: i64| a.fetch_add(x as u64, AcqRel) as i64
            )),
            Data::I1(_) => return Err(self.malformed(span, "atomic_add of i1")),
            Data::Ptr { .. } => unreachable!(),
        })
    }
}

/// For a pointer tile of consecutive offsets `o0, o0 + 1, …` into a buffer of
/// `len` elements: the lanes `lo..hi` that fall inside the buffer and the
/// element of lane `lo`. `None` when the offsets are not consecutive.
fn contiguous(off: &[i64], len: usize) -> Option<(usize, usize, usize)> {
    let o0 = *off.first()?;
    // fixed-size chunks, each checked branch-free (vectorises), with an early exit
    let mut next = o0;
    for c in off.chunks(64) {
        let mut ok = true;
        for (i, &o) in c.iter().enumerate() {
            ok &= o == next.wrapping_add(i as i64);
        }
        if !ok {
            return None;
        }
        next = next.wrapping_add(c.len() as i64);
    }
    let n = off.len() as i64;
    let lo = o0.saturating_neg().clamp(0, n);
    let hi = (len as i64).saturating_sub(o0).clamp(lo, n);
    if lo == hi {
        return Some((0, 0, 0));
    }
    Some((lo as usize, hi as usize, (o0 + lo) as usize))
}

pub(crate) fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Const(_) => "const",
        Op::ProgramId(_) => "program_id",
        Op::NumPrograms(_) => "num_programs",
        Op::Arange { .. } => "arange",
        Op::Splat(_) => "splat",
        Op::ExpandDims { .. } => "expand_dims",
        Op::Broadcast(_) => "broadcast",
        Op::Reshape(_) => "reshape",
        Op::Trans { .. } => "trans",
        Op::Unary(..) => "unary",
        Op::Binary(..) => "binary",
        Op::Cmp(..) => "cmp",
        Op::Select { .. } => "select",
        Op::Fma { .. } => "fma",
        Op::Cast(_) => "cast",
        Op::AddPtr { .. } => "add_ptr",
        Op::Load { .. } => "load",
        Op::Store { .. } => "store",
        Op::AtomicAdd { .. } => "atomic_add",
        Op::Reduce { .. } => "reduce",
        Op::Dot { .. } => "dot",
        Op::For { .. } => "for",
        Op::If { .. } => "if",
        Op::Yield(_) => "yield",
    }
}

/// A one-line summary of a value for traces: the first elements, and for
/// numeric tiles min/max/mean and the NaN count.
pub(crate) fn summarize(d: &Data) -> String {
    const SHOW: usize = 8;
    let n = d.len();
    if let Data::Ptr { base, off } = d {
        let first: Vec<String> = off.iter().take(SHOW).map(|o| o.to_string()).collect();
        let b = match base {
            Base::One(b) => format!("param {b}"),
            Base::Many(_) => "several params".into(),
        };
        return format!(
            "ptr into {b} + [{}{}]",
            first.join(", "),
            if n > SHOW { ", …" } else { "" }
        );
    }
    let vals: Vec<f64> = (0..n).map(|i| d.f64_at(i).unwrap_or(f64::NAN)).collect();
    let fmt = |x: f64| {
        if matches!(d, Data::I1(_)) {
            (x != 0.0).to_string()
        } else if d.scalar().is_some_and(|s| s.is_int()) {
            format!("{}", x as i64)
        } else {
            format!("{x:.6}")
        }
    };
    let first: Vec<String> = vals.iter().take(SHOW).map(|&x| fmt(x)).collect();
    let mut s = format!(
        "[{}{}]",
        first.join(", "),
        if n > SHOW { ", …" } else { "" }
    );
    if n > 1 {
        let nan = vals.iter().filter(|x| x.is_nan()).count();
        let fin: Vec<f64> = vals.iter().copied().filter(|x| !x.is_nan()).collect();
        if !fin.is_empty() {
            let min = fin.iter().copied().fold(f64::INFINITY, f64::min);
            let max = fin.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mean = fin.iter().sum::<f64>() / fin.len() as f64;
            s += &format!(" min {} max {} mean {mean:.6}", fmt(min), fmt(max));
        }
        if nan > 0 {
            s += &format!(" NaN {nan}");
        }
    }
    s
}
