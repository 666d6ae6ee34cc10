//! Global memory: pointer arithmetic, loads, stores and atomics. Accesses
//! are vectorised up to 16 bytes where the axis analysis proves contiguity,
//! guarded at run time by alignment and the group's mask, with a per-element
//! path for ragged edges.

use super::{scalar_ty, Lower};
use crate::emit::{Emitter, V};
use crate::layout::Layout;
use crate::CodegenError;
use tile_ir::{Const, Elem, Scalar, Span, ValueId};

impl<'c, 'k> Lower<'c, 'k> {
    /// `ptr + offset` per element, both read in the result's layout.
    pub(super) fn add_ptr(
        &mut self,
        ptr: ValueId,
        offset: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let Elem::Ptr(pointee) = self.kernel.ty(ptr).elem else {
            return Err(CodegenError::Internal("add_ptr on a non-pointer".into()));
        };
        let lr = self.layout(r);
        let (rp, ro) = (
            self.regs_in(ptr, &lr, span)?,
            self.regs_in(offset, &lr, span)?,
        );
        (0..rp.len())
            .map(|i| self.gep(rp[i], ro[i], pointee))
            .collect()
    }

    /// `p + o` elements of `s` (a global pointer).
    pub(super) fn gep(&mut self, p: V, o: V, s: Scalar) -> Result<V, CodegenError> {
        elem_ptr(&mut self.e, p, o, s, 1)
    }

    pub(super) fn ptr_elem(&self, ptr: ValueId) -> Result<Scalar, CodegenError> {
        match self.kernel.ty(ptr).elem {
            Elem::Ptr(s) => Ok(s),
            _ => Err(CodegenError::Internal(
                "memory access through a non-pointer".into(),
            )),
        }
    }

    /// Vector width (elements) for accesses through `ptr`: 1 when not provably contiguous.
    pub(super) fn vector_width(&self, ptr: ValueId, s: Scalar) -> u32 {
        let run = self.layout(ptr).last_dim_run();
        if s == Scalar::I1 {
            return 1;
        }
        let contig = self.axis.get(&ptr).map(|a| a.contig).unwrap_or(1);
        let max_elems = 16 / s.size_bytes() as u32;
        contig.min(run).min(max_elems).max(1)
    }

    /// Groups of `v` consecutive registers along the last dimension.
    pub(super) fn groups(l: &Layout, v: u32) -> Vec<std::ops::Range<usize>> {
        let n = l.num_regs();
        (0..n)
            .step_by(v as usize)
            .map(|k| k..k + v as usize)
            .collect()
    }

    /// `ptr` is 16-byte-vector aligned for `v` elements of `s`.
    pub(super) fn aligned(&mut self, p: V, v: u32, s: Scalar) -> Result<V, CodegenError> {
        let i64t = self.e.ty("i64");
        let a = self.e.op1("llvm.ptrtoint", &[p], i64t, &[])?;
        let m = self.e.i64((v as usize * s.size_bytes()) as i64 - 1)?;
        let low = self.e.binop("arith.andi", a, m)?;
        let z = self.e.i64(0)?;
        self.e.cmpi("eq", low, z)
    }

    pub(super) fn load(
        &mut self,
        ptr: ValueId,
        mask: Option<ValueId>,
        other: Option<ValueId>,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s = self.ptr_elem(ptr)?;
        let t = self.e.ty(scalar_ty(s));
        let l = self.layout(r);
        let rp = self.regs_in(ptr, &l, span)?;
        let rm = mask.map(|m| self.regs_in(m, &l, span)).transpose()?;
        let ro = match other {
            Some(o) => Some(self.regs_in(o, &l, span)?),
            None if mask.is_some() => {
                let z = self.constant(Const::Int(0), s)?;
                Some(vec![z; rp.len()])
            }
            None => None,
        };
        self.order_global_access(ptr, &l, false)?;
        let v = self.vector_width(ptr, s);
        // Per-element path: masked elements read `other` and touch no memory.
        let scalar_path = |e: &mut Emitter<'c>, g: std::ops::Range<usize>| {
            let mut vals = Vec::new();
            for k in g {
                vals.push(match (&rm, &ro) {
                    (Some(m), Some(o)) => {
                        let (p, ok) = (rp[k], o[k]);
                        e.if_else(
                            m[k],
                            &[t],
                            &mut |e| Ok(vec![LoadOne { e }.load(p, s)?]),
                            &mut |_| Ok(vec![ok]),
                        )?[0]
                    }
                    _ => LoadOne { e }.load(rp[k], s)?,
                });
            }
            Ok::<_, CodegenError>(vals)
        };
        if v == 1 {
            return scalar_path(&mut self.e, 0..rp.len());
        }
        // Every group's vector load first (each an `if` with a trivial else,
        // which ptxas predicates), then the groups' slow paths: with each
        // slow path right after its group's load, ptxas issued the loads one
        // at a time (mhc_post_bwd's four 16-byte loads a thread).
        let vt = self.e.ty(&format!("vector<{v}x{}>", scalar_ty(s)));
        let groups = Self::groups(&l, v);
        let split = groups.len() > 1;
        let mut fast = Vec::new();
        let mut out = Vec::with_capacity(rp.len());
        for g in groups {
            let mut conds = vec![self.aligned(rp[g.start], v, s)?];
            if let Some(m) = &rm {
                conds.extend(m[g.clone()].iter().copied());
            }
            let cond = self.e.and_all(&conds)?.unwrap();
            let fill: Vec<V> = match &ro {
                Some(o) => o[g.clone()].to_vec(),
                None => vec![self.constant(Const::Int(0), s)?; g.len()],
            };
            let p0 = rp[g.start];
            let vals = self.e.if_else(
                cond,
                &vec![t; g.len()],
                &mut |e| {
                    let vec = e.op1(
                        "llvm.load",
                        &[p0],
                        vt,
                        &[
                            (
                                "alignment",
                                &format!("{} : i64", v as usize * s.size_bytes()),
                            ),
                            ("ordering", "0 : i64"),
                        ],
                    )?;
                    (0..v)
                        .map(|i| {
                            let idx = e.i32(i as i64)?;
                            e.op1("llvm.extractelement", &[vec, idx], t, &[])
                        })
                        .collect()
                },
                &mut |e| {
                    if split {
                        Ok(fill.clone())
                    } else {
                        scalar_path(e, g.clone())
                    }
                },
            )?;
            if split {
                fast.push((g, cond, vals));
            } else {
                out.extend(vals);
            }
        }
        for (g, cond, vals) in fast {
            out.extend(self.e.if_else(
                cond,
                &vec![t; g.len()],
                &mut |_| Ok(vals.clone()),
                &mut |e| scalar_path(e, g.clone()),
            )?);
        }
        Ok(out)
    }

    pub(super) fn store(
        &mut self,
        ptr: ValueId,
        value: ValueId,
        mask: Option<ValueId>,
        span: Span,
    ) -> Result<(), CodegenError> {
        let s = self.ptr_elem(ptr)?;
        let l = self.layout(ptr);
        let rp = self.regs(ptr)?;
        let rv = self.regs_in(value, &l, span)?;
        let rm = mask.map(|m| self.regs_in(m, &l, span)).transpose()?;
        self.order_global_access(ptr, &l, true)?;
        let owner = self.owner(&l);
        let v = self.vector_width(ptr, s);
        for g in Self::groups(&l, v) {
            let elem_conds: Vec<Option<V>> = g
                .clone()
                .map(|k| {
                    let mut c = Vec::new();
                    c.extend(owner);
                    if let Some(m) = &rm {
                        c.push(m[k]);
                    }
                    self.e.and_all(&c)
                })
                .collect::<Result<_, _>>()?;
            let scalar_path = |e: &mut Emitter<'c>| -> Result<(), CodegenError> {
                for (i, k) in g.clone().enumerate() {
                    let (p, x) = (rp[k], rv[k]);
                    match elem_conds[i] {
                        Some(c) => e.if_then(c, &mut |e| LoadOne { e }.store(p, x, s))?,
                        None => LoadOne { e }.store(p, x, s)?,
                    }
                }
                Ok(())
            };
            if v == 1 {
                scalar_path(&mut self.e)?;
                continue;
            }
            let mut conds = vec![self.aligned(rp[g.start], v, s)?];
            conds.extend(owner);
            if let Some(m) = &rm {
                conds.extend(m[g.clone()].iter().copied());
            }
            let cond = self.e.and_all(&conds)?.unwrap();
            let p0 = rp[g.start];
            let xs: Vec<V> = rv[g.clone()].to_vec();
            self.e.if_else(
                cond,
                &[],
                &mut |e| {
                    let vt = e.ty(&format!("vector<{v}x{}>", scalar_ty(s)));
                    let mut vec = e.op1("llvm.mlir.undef", &[], vt, &[])?;
                    for (i, &x) in xs.iter().enumerate() {
                        let idx = e.i32(i as i64)?;
                        vec = e.op1("llvm.insertelement", &[vec, x, idx], vt, &[])?;
                    }
                    e.op(
                        "llvm.store",
                        &[vec, p0],
                        &[],
                        &[
                            (
                                "alignment",
                                &format!("{} : i64", v as usize * s.size_bytes()),
                            ),
                            ("ordering", "0 : i64"),
                        ],
                    )?;
                    Ok(vec![])
                },
                &mut |e| {
                    scalar_path(e)?;
                    Ok(vec![])
                },
            )?;
        }
        Ok(())
    }

    /// `*p += v` per unmasked element, returning the old values. On sm_90
    /// an f32 add whose old values nothing reads goes out as one vector
    /// `red` per run of contiguous elements (two or four: a fused attention
    /// backward's dQ from its accumulator pairs) where the run is aligned
    /// and wholly unmasked, else one atomic per element.
    pub(super) fn atomic_add(
        &mut self,
        ptr: ValueId,
        value: ValueId,
        mask: Option<ValueId>,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s = self.ptr_elem(ptr)?;
        let (bin_op, ok) = match s {
            Scalar::F32 | Scalar::BF16 | Scalar::F16 => ("11 : i64", true),
            Scalar::I32 | Scalar::I64 => ("1 : i64", true),
            Scalar::I1 => ("1 : i64", false),
        };
        if !ok {
            return Err(CodegenError::Internal("atomic_add on i1".into()));
        }
        let t = self.e.ty(scalar_ty(s));
        let l = self.layout(ptr);
        let rp = self.regs(ptr)?;
        let rv = self.regs_in(value, &l, span)?;
        let rm = mask.map(|m| self.regs_in(m, &l, span)).transpose()?;
        self.order_global_access(ptr, &l, true)?;
        let owner = self.owner(&l);
        let zero = self.constant(Const::Int(0), s)?;
        let mut unread = true;
        tile_ir::walk_insts(&self.kernel.body, &mut |i| {
            unread &= !i.op.operands().contains(&r);
        });
        let v = match (s, self.arch) {
            (Scalar::F32, crate::Arch::Sm90) if unread => self.vector_width(ptr, s),
            _ => 1,
        };
        if v > 1 {
            self.reduce_add_vectors(v, &l, &rp, &rv, rm.as_deref(), owner)?;
            return Ok(vec![zero; rp.len()]);
        }
        let mut out = Vec::new();
        for k in 0..rp.len() {
            let mut c = Vec::new();
            c.extend(owner);
            if let Some(m) = &rm {
                c.push(m[k]);
            }
            let cond = self.e.and_all(&c)?;
            let (p, x) = (rp[k], rv[k]);
            let mut doit = |e: &mut Emitter<'c>| -> Result<Vec<V>, CodegenError> {
                Ok(vec![e.op1(
                    "llvm.atomicrmw",
                    &[p, x],
                    t,
                    &[("bin_op", bin_op), ("ordering", "2 : i64")],
                )?])
            };
            out.push(match cond {
                Some(c) => self
                    .e
                    .if_else(c, &[t], &mut doit, &mut |_| Ok(vec![zero]))?[0],
                None => doit(&mut self.e)?[0],
            });
        }
        Ok(out)
    }
}

impl<'c, 'k> Lower<'c, 'k> {
    /// f32 `*p += x` (old values unread) in runs of `v` registers of layout
    /// `l`: `red.global.add.v{v}.f32` (sm_90, PTX ISA 8.1) where the run's
    /// start is aligned to it and no element is masked off, else a relaxed
    /// atomic per element that its mask keeps.
    fn reduce_add_vectors(
        &mut self,
        v: u32,
        l: &Layout,
        ptrs: &[V],
        vals: &[V],
        mask: Option<&[V]>,
        owner: Option<V>,
    ) -> Result<(), CodegenError> {
        let i64t = self.e.ty("i64");
        let regs: Vec<String> = (1..=v).map(|i| format!("${i}")).collect();
        let text = format!("red.global.add.v{v}.f32 [$0], {{{}}};", regs.join(", "));
        let constraints = format!("l{}", ",f".repeat(v as usize));
        for g in Self::groups(l, v) {
            let mut conds = vec![self.aligned(ptrs[g.start], v, Scalar::F32)?];
            conds.extend(owner);
            if let Some(m) = mask {
                conds.extend(m[g.clone()].iter().copied());
            }
            let cond = self.e.and_all(&conds)?.unwrap();
            let addr = self.e.op1("llvm.ptrtoint", &[ptrs[g.start]], i64t, &[])?;
            let mut ops = vec![addr];
            ops.extend(&vals[g.clone()]);
            self.e.if_else(
                cond,
                &[],
                &mut |e| {
                    e.inline_asm(&text, &constraints, &ops, &[])?;
                    Ok(vec![])
                },
                &mut |e| {
                    for k in g.clone() {
                        let mut c: Vec<V> = owner.into_iter().collect();
                        c.extend(mask.map(|m| m[k]));
                        let add = |e: &mut Emitter<'c>| -> Result<(), CodegenError> {
                            let t = e.ty("f32");
                            e.op1(
                                "llvm.atomicrmw",
                                &[ptrs[k], vals[k]],
                                t,
                                &[("bin_op", "11 : i64"), ("ordering", "2 : i64")],
                            )?;
                            Ok(())
                        };
                        match e.and_all(&c)? {
                            Some(c) => e.if_then(c, &mut |e| add(e))?,
                            None => add(e)?,
                        }
                    }
                    Ok(vec![])
                },
            )?;
        }
        Ok(())
    }
}

/// `p + o` elements of `s`, `p` a pointer in address space `space` (1
/// global, 3 shared).
pub(super) fn elem_ptr(
    e: &mut Emitter<'_>,
    p: V,
    o: V,
    s: Scalar,
    space: u32,
) -> Result<V, CodegenError> {
    let pt = e.ty(&format!("!llvm.ptr<{space}>"));
    e.op1(
        "llvm.getelementptr",
        &[p, o],
        pt,
        &[
            ("elem_type", scalar_ty(s)),
            ("noWrapFlags", "0 : i32"),
            ("rawConstantIndices", "array<i32: -2147483648>"),
        ],
    )
}

/// Scalar memory accesses usable from closures that hold only the emitter.
pub(super) struct LoadOne<'a, 'c> {
    pub(super) e: &'a mut Emitter<'c>,
}

impl<'c> LoadOne<'_, 'c> {
    pub(super) fn load(&mut self, p: V, s: Scalar) -> Result<V, CodegenError> {
        let (st, bytes) = if s == Scalar::I1 {
            ("i8", 1)
        } else {
            (scalar_ty(s), s.size_bytes())
        };
        let t = self.e.ty(st);
        let v = self.e.op1(
            "llvm.load",
            &[p],
            t,
            &[
                ("alignment", &format!("{bytes} : i64")),
                ("ordering", "0 : i64"),
            ],
        )?;
        if s == Scalar::I1 {
            let z = self.e.constant("0 : i8", t)?;
            self.e.cmpi("ne", v, z)
        } else {
            Ok(v)
        }
    }

    pub(super) fn store(&mut self, p: V, x: V, s: Scalar) -> Result<(), CodegenError> {
        let (x, bytes) = if s == Scalar::I1 {
            let t = self.e.ty("i8");
            (self.e.op1("arith.extui", &[x], t, &[])?, 1)
        } else {
            (x, s.size_bytes())
        };
        self.e.op(
            "llvm.store",
            &[x, p],
            &[],
            &[
                ("alignment", &format!("{bytes} : i64")),
                ("ordering", "0 : i64"),
            ],
        )?;
        Ok(())
    }
}
