//! Shared memory: pointers and shared-window addresses into the one dynamic
//! buffer, the scratch area (what each op needs of it, and its addresses,
//! settled once the whole kernel is lowered), barriers, and the element
//! addresses of padded and swizzled tiles.

use super::memory::LoadOne;
use super::{Lower, SCRATCH};
use crate::emit::V;
use crate::prefetch::{Plan, SmemTile};
use crate::{CodegenError, MoveKind, SharedMove};
use std::rc::Rc;
use tile_ir::{Scalar, Span};

/// A tile staged at the start of scratch: its size and the alignment of its
/// start (bytes).
#[derive(Clone, Copy)]
pub(super) struct StagedTile {
    pub(super) bytes: u32,
    pub(super) align: u32,
}

/// Tiles staged together (a `dot`'s register operands), in order, each at
/// the next multiple of its alignment.
pub(super) type StagedTiles = Rc<[StagedTile]>;

/// Where each of `tiles` starts (byte offset in shared memory) when scratch
/// starts at `base`, and the bytes from `base` they take together.
fn place_tiles(base: u32, tiles: &[StagedTile]) -> (Vec<u32>, u32) {
    let mut next = 0;
    let mut starts = Vec::new();
    for t in tiles {
        let at = (base + next).next_multiple_of(t.align);
        next = at - base + t.bytes;
        starts.push(at);
    }
    (starts, next)
}

/// A byte offset in shared memory that depends on where scratch starts:
/// after the pipeline stages, or at 0 when it can share their memory, which
/// is known only once the whole kernel is lowered (`lower_to_mlir`).
#[derive(Clone)]
pub(super) enum ScratchAddr {
    /// The start of scratch.
    Start,
    /// The start of tile `i` of tiles staged together.
    Tile(StagedTiles, usize),
    /// A fixed offset (a pipelined loop's resident operand), wherever
    /// scratch starts.
    Fixed(u32),
}

/// What one op needs of scratch.
pub(super) enum ScratchNeed {
    Bytes(u32),
    Tiles(StagedTiles),
}

impl ScratchNeed {
    /// Bytes from the start of scratch, when it starts at `base`.
    fn bytes(&self, base: u32) -> u32 {
        match self {
            ScratchNeed::Bytes(n) => *n,
            ScratchNeed::Tiles(tiles) => place_tiles(base, tiles).1,
        }
    }
}

/// Where scratch goes in a kernel's shared memory.
#[derive(Clone, Copy)]
pub(super) struct ScratchPlace {
    /// Where scratch starts (bytes).
    pub(super) base: u32,
    /// The kernel's dynamic shared memory: stages and scratch.
    pub(super) shared_bytes: u32,
    /// The op needing the most scratch (for the error when it does not fit).
    pub(super) span: Span,
}

impl<'c, 'k> Lower<'c, 'k> {
    /// Where scratch goes, given what this lowering needs of it and the
    /// pipeline stages of `plan` (`lowered`: the lowering succeeded).
    /// Scratch follows the stages; when no pipelined loop uses scratch, it
    /// may share their memory instead (its users wait at a barrier before
    /// writing, after every loop has drained), e.g. a matmul's epilogue then
    /// needs no memory of its own.
    pub(super) fn scratch_place(&self, plan: &Plan, lowered: bool) -> ScratchPlace {
        let stages = plan.bytes.next_multiple_of(16);
        let after_stages = self.scratch_extent(stages).0;
        let shares = stages > 0 && after_stages > 0 && !self.scratch_in_loop && lowered;
        let base = if shares { 0 } else { stages };
        let (bytes, span) = self.scratch_extent(base);
        ScratchPlace {
            base,
            shared_bytes: (base + bytes).max(stages),
            span,
        }
    }

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
        let base = self.scratch_addr(ScratchAddr::Start)?;
        let off = self.e.binop("arith.addi", off, base)?;
        self.smem_ptr(off)
    }

    /// Scratch address `addr` as an i32 constant, its value set by
    /// [`place_scratch`](Self::place_scratch).
    pub(super) fn scratch_addr(&mut self, addr: ScratchAddr) -> Result<V, CodegenError> {
        let v = self.e.placeholder_i32()?;
        self.scratch_addrs.push((v, addr));
        Ok(v)
    }

    /// Notes that an op at `span` needs `need` of scratch to move data
    /// between threads (checked against the limit once the whole kernel is
    /// lowered, and reported as a [`SharedMove`]).
    pub(super) fn reserve_scratch(&mut self, need: ScratchNeed, kind: MoveKind, span: Span) {
        let shared_move = SharedMove {
            span,
            kind,
            bytes: need.bytes(0),
            loop_depth: self.loop_depth,
        };
        self.scratch_needs.push((need, shared_move));
        self.scratch_in_loop |= !self.pipe_bufs.is_empty();
    }

    /// The bytes of scratch the kernel needs when scratch starts at `base`,
    /// and the op needing the most (the first of equals; for the error when
    /// it does not fit).
    pub(super) fn scratch_extent(&self, base: u32) -> (u32, Span) {
        let mut most = (0, Span::default());
        for (need, shared_move) in &self.scratch_needs {
            let bytes = need.bytes(base);
            if bytes > most.0 {
                most = (bytes, shared_move.span);
            }
        }
        most
    }

    /// Sets every scratch address for scratch starting at `base`.
    pub(super) fn place_scratch(&mut self, base: u32) {
        for (v, addr) in std::mem::take(&mut self.scratch_addrs) {
            let at = match addr {
                ScratchAddr::Start => base,
                ScratchAddr::Tile(tiles, i) => place_tiles(base, &tiles).0[i],
                ScratchAddr::Fixed(at) => at,
            };
            self.e.set_constant(v, &format!("{at} : i32"));
        }
    }

    /// A CTA barrier. Shared memory is written after one (scratch may share
    /// a stage's memory), so every `wgmma` still reading it is waited for.
    pub(super) fn barrier(&mut self) -> Result<(), CodegenError> {
        self.wait_for_dots(self.unwaited.len())?;
        self.e.op("gpu.barrier", &[], &[], &[])?;
        // It also orders the CTA's global accesses before it against those after.
        self.global_pending.clear();
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
