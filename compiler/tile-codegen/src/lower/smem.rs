//! Shared memory: pointers and shared-window addresses into the one dynamic
//! buffer, the scratch area after the pipeline stages (its size recorded as
//! ops reserve it), barriers, and the element addresses of padded and
//! swizzled tiles.

use super::memory::LoadOne;
use super::{Lower, SCRATCH};
use crate::emit::V;
use crate::prefetch::SmemTile;
use crate::CodegenError;
use tile_ir::{Scalar, Span};

impl<'c, 'k> Lower<'c, 'k> {
    /// Pointer into dynamic shared memory at byte offset `off` (i32).
    pub(super) fn smem_ptr(&mut self, off: V) -> Result<V, CodegenError> {
        let p3 = self.e.ty("!llvm.ptr<3>");
        let base = self.e.op1(
            "llvm.mlir.addressof",
            &[],
            p3,
            &[("global_name", &format!("@{SCRATCH}"))],
        )?;
        self.e.op1(
            "llvm.getelementptr",
            &[base, off],
            p3,
            &[
                ("elem_type", "i8"),
                ("noWrapFlags", "0 : i32"),
                ("rawConstantIndices", "array<i32: -2147483648>"),
            ],
        )
    }

    /// Shared-window address (i32, as PTX's shared-space operands take it)
    /// of byte offset `off` of dynamic shared memory.
    pub(super) fn smem_addr(&mut self, off: V) -> Result<V, CodegenError> {
        let p = self.smem_ptr(off)?;
        let i32t = self.e.ty("i32");
        self.e.op1("llvm.ptrtoint", &[p], i32t, &[])
    }

    /// Shared-window address (i32) of the barrier of stage `stage` (i32),
    /// the barriers starting at byte `bars`.
    pub(super) fn barrier_addr(&mut self, bars: u32, stage: V) -> Result<V, CodegenError> {
        let c8 = self.e.i32(8)?;
        let o = self.e.binop("arith.muli", stage, c8)?;
        let base = self.e.i32(bars as i64)?;
        let o = self.e.binop("arith.addi", o, base)?;
        self.smem_addr(o)
    }

    /// Pointer into the scratch area at byte offset `off` (i32).
    pub(super) fn scratch_ptr(&mut self, off: V) -> Result<V, CodegenError> {
        let base = self.e.i32(self.scratch_base as i64)?;
        let off = self.e.binop("arith.addi", off, base)?;
        self.smem_ptr(off)
    }

    /// Notes that an op at `span` needs `bytes` of scratch (checked against
    /// the limit once the whole kernel is lowered).
    pub(super) fn reserve_scratch(&mut self, bytes: u32, span: Span) -> Result<(), CodegenError> {
        if bytes > self.scratch_bytes {
            self.scratch_bytes = bytes;
            self.scratch_span = span;
        }
        self.scratch_in_loop |= !self.pipe_bufs.is_empty();
        Ok(())
    }

    pub(super) fn barrier(&mut self) -> Result<(), CodegenError> {
        self.e.op("gpu.barrier", &[], &[], &[])?;
        Ok(())
    }

    /// Store/load one element of type `s` in scratch at element index `idx`.
    pub(super) fn scratch_store(&mut self, idx: V, x: V, s: Scalar) -> Result<(), CodegenError> {
        let p = self.scratch_elem_ptr(idx, s)?;
        // Pointers travel through shared memory as i64 (`s` is I64 for them).
        let x = if self.e.type_of(x).to_string().starts_with("!llvm.ptr") {
            let i64t = self.e.ty("i64");
            self.e.op1("llvm.ptrtoint", &[x], i64t, &[])?
        } else {
            x
        };
        LoadOne { e: &mut self.e }.store(p, x, s)
    }

    pub(super) fn scratch_load(
        &mut self,
        idx: V,
        s: Scalar,
        is_ptr: bool,
    ) -> Result<V, CodegenError> {
        let p = self.scratch_elem_ptr(idx, s)?;
        let v = LoadOne { e: &mut self.e }.load(p, s)?;
        if is_ptr {
            let pt = self.e.ty("!llvm.ptr<1>");
            self.e.op1("llvm.inttoptr", &[v], pt, &[])
        } else {
            Ok(v)
        }
    }

    /// Shared-memory address of element `idx` of a scratch array of `s`.
    pub(super) fn scratch_elem_ptr(&mut self, idx: V, s: Scalar) -> Result<V, CodegenError> {
        let sz = self.e.i32(s.size_bytes() as i64)?;
        let off = self.e.binop("arith.muli", idx, sz)?;
        self.scratch_ptr(off)
    }

    /// Shared-memory pointer to 16-bit element (row, col) of a matrix at byte
    /// offset `base` (i32) of shared memory, with row stride `ld` elements.
    pub(super) fn smem_elem_ptr(
        &mut self,
        base: V,
        ld: u32,
        row: V,
        col: V,
    ) -> Result<V, CodegenError> {
        let ldv = self.e.i32(ld as i64)?;
        let r = self.e.binop("arith.muli", row, ldv)?;
        let idx = self.e.binop("arith.addi", r, col)?;
        let two = self.e.i32(2)?;
        let off = self.e.binop("arith.muli", idx, two)?;
        let off = self.e.binop("arith.addi", off, base)?;
        self.smem_ptr(off)
    }

    /// Shared-memory pointer to 16-bit element (row, col) of a tile laid out
    /// as `tile` at byte offset `base` (i32).
    pub(super) fn tile_elem_ptr(
        &mut self,
        base: V,
        tile: SmemTile,
        row: V,
        col: V,
    ) -> Result<V, CodegenError> {
        let (rows, width) = match tile {
            SmemTile::Padded { ld } => return self.smem_elem_ptr(base, ld, row, col),
            SmemTile::Swizzled { rows, width } => (rows, width),
        };
        // (col / width) · (rows · width · 2) + row · width · 2 + (col % width) · 2,
        // then the 16-byte chunk bits XORed with the 128-byte row bits.
        let wshift = self.e.i32(width.trailing_zeros() as i64)?;
        let wmask = self.e.i32(width as i64 - 1)?;
        let atom_col = self.e.binop("arith.shrui", col, wshift)?;
        let in_col = self.e.binop("arith.andi", col, wmask)?;
        let atom_bytes = self.e.i32((rows * width * 2) as i64)?;
        let off = self.e.binop("arith.muli", atom_col, atom_bytes)?;
        let row_bytes = self.e.i32((width * 2) as i64)?;
        let r = self.e.binop("arith.muli", row, row_bytes)?;
        let off = self.e.binop("arith.addi", off, r)?;
        let one = self.e.i32(1)?;
        let c = self.e.binop("arith.shli", in_col, one)?;
        let off = self.e.binop("arith.addi", off, c)?;
        let (c7, c4) = (self.e.i32(7)?, self.e.i32(4)?);
        let chunks = self.e.i32((width / 8) as i64 - 1)?;
        let bits = self.e.binop("arith.shrui", off, c7)?;
        let bits = self.e.binop("arith.andi", bits, chunks)?;
        let bits = self.e.binop("arith.shli", bits, c4)?;
        let off = self.e.binop("arith.xori", off, bits)?;
        let off = self.e.binop("arith.addi", off, base)?;
        self.smem_ptr(off)
    }
}
