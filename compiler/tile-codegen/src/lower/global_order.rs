//! Order between a program's own loads and stores of global memory.
//!
//! A program runs on a CTA's threads, each holding the elements of a tile
//! that its layout gives it, and the language says that a program's loads
//! see its earlier stores (the interpreter runs it so). Where a load may
//! read an element that another thread of the program stored before it, or
//! a store may overwrite one that another thread has yet to load, nothing in
//! the GPU orders the two threads. So before such an access the lowering
//! puts a CTA barrier, which orders the CTA's global accesses before it
//! against those after it. A load and a store through the same pointer tile
//! in the same layout need none (each element stays with one thread, in
//! program order: the in-place update `store(p, f(load(p)))`), and any
//! barrier of the lowering (a conversion, a reduction, a staged `dot`
//! operand) orders what came before it.
//!
//! Not ordered, for now: two stores (or atomic adds) to one element from
//! different threads (the final value is either; tiles stored through
//! different pointers are almost always disjoint, and ordering every such
//! pair put barriers into most mHC kernels); accesses through different
//! pointer parameters, taken to be of different buffers as the software
//! pipeline takes them (`tile_ir::aliasing`); and, inside a loop, a pointer
//! tile that moves by less than its extent from one iteration to the next
//! while other threads hold the overlapping elements (two accesses through
//! one pointer value are taken to be one thread's in every iteration).

use super::Lower;
use crate::layout::Layout;
use crate::CodegenError;
use tile_ir::{self as tir, Op, ValueId};

/// One global access of a program, as the ordering sees it.
#[derive(Clone, Debug)]
pub(super) struct GlobalAccess {
    /// The pointer parameter the address is an offset from (None: unknown,
    /// which may be any).
    param: Option<usize>,
    ptr: ValueId,
    /// The layout the access spreads its elements in (a load's result's, a
    /// store's pointer's).
    layout: Layout,
    write: bool,
}

impl GlobalAccess {
    /// Whether `later` may touch, from another thread, an element `self`
    /// touched, with a write among the two.
    fn conflicts(&self, later: &GlobalAccess) -> bool {
        (self.write != later.write)
            && match (self.param, later.param) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
            && !(self.ptr == later.ptr && self.layout == later.layout)
    }
}

impl<'c, 'k> Lower<'c, 'k> {
    fn global_access(&self, ptr: ValueId, layout: Layout, write: bool) -> GlobalAccess {
        GlobalAccess {
            param: self.pointer_params.pointer_param(ptr),
            ptr,
            layout,
            write,
        }
    }

    fn global_access_of(&self, inst: &tir::Inst) -> Option<GlobalAccess> {
        Some(match &inst.op {
            Op::Load { ptr, .. } => {
                self.global_access(*ptr, self.layout(*inst.results.first()?), false)
            }
            Op::Store { ptr, .. } | Op::AtomicAdd { ptr, .. } => {
                self.global_access(*ptr, self.layout(*ptr), true)
            }
            _ => return None,
        })
    }

    /// Every global access of `insts`, nested blocks included.
    pub(super) fn global_accesses(&self, insts: &[tir::Inst]) -> Vec<GlobalAccess> {
        let mut out = Vec::new();
        for inst in insts {
            tir::walk_inst(inst, &mut |i| out.extend(self.global_access_of(i)));
        }
        out
    }

    /// Called right before a load, store or atomic add through `ptr` emits
    /// its memory instructions (after any conversion of its operands, whose
    /// barrier would order it too), its elements spread in `layout`: a
    /// barrier first when an access since the last barrier conflicts with it.
    pub(super) fn order_global_access(
        &mut self,
        ptr: ValueId,
        layout: &Layout,
        write: bool,
    ) -> Result<(), CodegenError> {
        let a = self.global_access(ptr, layout.clone(), write);
        if self.global_pending.iter().any(|p| p.conflicts(&a)) {
            self.barrier()?;
        }
        self.global_pending.push(a);
        Ok(())
    }

    /// Before a block that runs after what is pending (a loop's first
    /// iteration, or its next one: `accesses` are the block's): a barrier
    /// when any of them conflicts with a pending access. `tma` when the
    /// block's loads may be TMA copies, which read through the async proxy:
    /// the stores are then fenced for it before the barrier.
    pub(super) fn order_before_block(
        &mut self,
        accesses: &[GlobalAccess],
        tma: bool,
    ) -> Result<(), CodegenError> {
        if self
            .global_pending
            .iter()
            .any(|p| accesses.iter().any(|a| p.conflicts(a)))
        {
            if tma {
                self.e
                    .inline_asm("fence.proxy.async.global;", "", &[], &[])?;
            }
            self.barrier()?;
        }
        Ok(())
    }
}
