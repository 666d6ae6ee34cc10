//! Code generation: checked TIR → MLIR (melior) → LLVM IR → PTX (inkwell NVPTX).
//!
//! One entry point, [`compile`]. Stages: `lower` (TIR → gpu/scf/arith/llvm MLIR,
//! using `layout`, `axis` and `prefetch`), `mlir_passes` (the MLIR pass list), `ptx` (LLVM IR
//! and PTX). `emit` is the small melior helper the lowering builds with.

mod axis;
mod emit;
mod layout;
mod lower;
pub mod math;
mod mlir_passes;
mod prefetch;
mod ptx;
mod ptxas_defects;
mod tma;

use melior::dialect::DialectRegistry;
use melior::utility::{register_all_dialects, register_all_llvm_translations, register_all_passes};
use melior::Context;
use std::sync::Once;
use std::time::{Duration, Instant};
use tile_ir::{self as tir, Span};

#[doc(hidden)]
pub use emit::with_arith_integer_ops;
pub use mlir_passes::MLIR_PASSES;
pub use tile_ir::launch::{HostScalar, TmaOperand};

/// GPU architecture to generate code for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Arch {
    Sm80,
    #[default]
    Sm90,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90 => "sm_90",
        }
    }
    /// The LLVM/ptxas target: sm_90 code is built for sm_90a, whose `wgmma`
    /// the tensor-core path uses (the pack still files it under `sm_90`; it
    /// runs on compute capability 9.0 exactly, i.e. H100/H200).
    pub fn target(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90 => "sm_90a",
        }
    }
    /// PTX ISA 8.1 on sm_90 for `red.global.add.v2/v4.f32`; every other
    /// instruction comes out as under 8.0 (the packs differed only in their
    /// `.version` line when it was raised, session 26).
    fn ptx_features(self) -> &'static str {
        match self {
            Arch::Sm80 => "+ptx70",
            Arch::Sm90 => "+ptx81",
        }
    }
    /// Kernels for this target begin with `griddepcontrol.wait` (sm_90):
    /// the host may launch them with programmatic stream serialization, so
    /// that a grid's launch and first CTAs overlap the tail of the grid
    /// before it ([`Artifacts::waits_for_prior_grid`]).
    pub fn waits_for_prior_grid(self) -> bool {
        matches!(self, Arch::Sm90)
    }
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "sm_80" => Some(Arch::Sm80),
            "sm_90" => Some(Arch::Sm90),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub arch: Arch,
    /// Warps per CTA (1, 2, 4, 8 or 16).
    pub warps: u32,
    /// The most shared-memory buffers a pipelined loop gets (one of
    /// [`tir::PIPELINE_DEPTHS`]; it gets fewer where they do not fit the
    /// compiler's budget); `None`: 4.
    pub stages: Option<u32>,
    /// CTAs per multiprocessor ptxas must make room for (one of
    /// [`tir::CTAS_PER_SM`]: a register budget); `None`: the compiler's own
    /// choice (a budget for straight-line row kernels only).
    pub ctas: Option<u32>,
    /// Record the MLIR after every pass in [`Artifacts::pass_dumps`].
    pub dump_passes: bool,
    /// Keep the text of the intermediate stages ([`Artifacts::mlir`],
    /// [`Artifacts::mlir_lowered`], [`Artifacts::llvm_ir`]); printing them
    /// takes ~15% of a large kernel's compile, which packs do not need.
    pub keep_ir: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            arch: Arch::Sm90,
            warps: 4,
            stages: None,
            ctas: None,
            dump_passes: false,
            keep_ir: true,
        }
    }
}

/// Everything one compilation produced, stage by stage.
#[derive(Clone, Debug, Default)]
pub struct Artifacts {
    /// MLIR as built from TIR (gpu, scf, arith, llvm dialects).
    pub mlir: String,
    /// MLIR after the pass pipeline (llvm + nvvm dialects).
    pub mlir_lowered: String,
    /// LLVM IR after the optimisation pipeline.
    pub llvm_ir: String,
    pub ptx: String,
    /// (pass, IR after it), when [`Options::dump_passes`].
    pub pass_dumps: Vec<(String, String)>,
    /// Dynamic shared memory the kernel needs per CTA (bytes), given at launch.
    pub shared_bytes: u32,
    /// Tensors the host describes for the kernel's TMA copies: hidden
    /// parameters after the declared ones (`tile_ir::launch::hidden_params`).
    pub tma: Vec<TmaOperand>,
    /// The kernel waits at entry for the grid launched before it in the
    /// stream (`griddepcontrol.wait`), so the host may launch it as a
    /// programmatic dependent of that grid.
    pub waits_for_prior_grid: bool,
    /// Where the kernel moves data between threads through shared memory
    /// (besides its pipelined loads), in program order.
    pub moves: Vec<SharedMove>,
    /// Wall time per stage.
    pub timings: Vec<(&'static str, Duration)>,
    /// Wall time of every step inside the stages, in order: (stage of
    /// [`Artifacts::timings`], step — an MLIR pass, an LLVM step or the
    /// printing of a stage's IR, time).
    pub pass_timings: Vec<(&'static str, &'static str, Duration)>,
}

/// What a [`SharedMove`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveKind {
    /// A value read in another layout (a broadcast, reshape, transpose, or
    /// an operand whose layout differs from its producer's).
    Conversion,
    /// A reduction along an axis that warps share: their partial results
    /// meet in shared memory.
    CrossWarpReduction,
    /// A `dot` operand copied into shared memory for the tensor cores.
    StagedOperand,
}

impl std::fmt::Display for MoveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MoveKind::Conversion => "layout conversion",
            MoveKind::CrossWarpReduction => "reduction across warps",
            MoveKind::StagedOperand => "`dot` operand staged",
        })
    }
}

/// One op whose data goes through shared memory between two barriers: what
/// a fused kernel pays for where its layouts do not meet. Inside a loop it
/// is paid every iteration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedMove {
    /// The source of the op that needs it.
    pub span: Span,
    pub kind: MoveKind,
    /// Scratch bytes it uses.
    pub bytes: u32,
    /// How many runtime loops it is in (0: runs once).
    pub loop_depth: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("{what}")]
    Unsupported { what: String, span: Span },
    #[error("the kernel needs {bytes} bytes of shared memory, more than the {limit} available; use smaller tiles")]
    SharedMemory { bytes: u32, limit: u32, span: Span },
    #[error("warps must be 1, 2, 4, 8 or 16, got {0}")]
    Warps(u32),
    #[error(
        "stages must be between {lo} and {hi}, got {0}",
        lo = tir::PIPELINE_DEPTHS.start(),
        hi = tir::PIPELINE_DEPTHS.end()
    )]
    Stages(u32),
    #[error(
        "ctas must be between {lo} and {hi}, got {0}",
        lo = tir::CTAS_PER_SM.start(),
        hi = tir::CTAS_PER_SM.end()
    )]
    Ctas(u32),
    #[error("internal compiler error: {0}")]
    Internal(String),
    #[error("LLVM: {0}")]
    Llvm(String),
}

impl CodegenError {
    /// Source location of the error, when it has one.
    pub fn span(&self) -> Option<Span> {
        match self {
            CodegenError::Unsupported { span, .. } | CodegenError::SharedMemory { span, .. } => {
                Some(*span)
            }
            _ => None,
        }
    }
}

static INIT_PASSES: Once = Once::new();

/// The dialects the lowering builds ops of and the passes' input needs
/// (the passes load what they produce themselves). Loading every
/// registered dialect took 10–20 ms of each configuration's compile.
const DIALECTS: [&str; 6] = ["arith", "scf", "cf", "gpu", "llvm", "nvvm"];

fn new_context() -> Context {
    INIT_PASSES.call_once(register_all_passes);
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let ctx = Context::new();
    ctx.append_dialect_registry(&registry);
    for dialect in DIALECTS {
        ctx.get_or_load_dialect(dialect);
    }
    register_all_llvm_translations(&ctx);
    ctx
}

/// Compile one specialised kernel to PTX, keeping every intermediate stage.
pub fn compile(kernel: &tir::Kernel, opts: &Options) -> Result<Artifacts, CodegenError> {
    if !matches!(opts.warps, 1 | 2 | 4 | 8 | 16) {
        return Err(CodegenError::Warps(opts.warps));
    }
    if let Some(n) = opts.stages.filter(|n| !tir::PIPELINE_DEPTHS.contains(n)) {
        return Err(CodegenError::Stages(n));
    }
    if let Some(n) = opts.ctas.filter(|n| !tir::CTAS_PER_SM.contains(n)) {
        return Err(CodegenError::Ctas(n));
    }
    // Lowering relies on the verifier's invariants (result counts, types, shapes).
    tir::verify(kernel).map_err(|e| CodegenError::Internal(e.to_string()))?;
    let mut art = Artifacts::default();
    let t = Instant::now();
    let ctx = new_context();
    art.timings.push(("mlir-context", t.elapsed()));
    let t = Instant::now();
    let lower::Lowered {
        mut module,
        shared_bytes,
        tma,
        moves,
    } = lower::lower_to_mlir(&ctx, kernel, opts.warps, opts.stages, opts.ctas, opts.arch)?;
    art.shared_bytes = shared_bytes;
    art.waits_for_prior_grid = opts.arch.waits_for_prior_grid();
    art.tma = tma;
    art.moves = moves;
    art.pass_timings
        .push(("tir-to-mlir", "lower-to-mlir", t.elapsed()));
    if opts.keep_ir {
        let p = Instant::now();
        art.mlir = module.as_operation().to_string();
        art.pass_timings
            .push(("tir-to-mlir", "print-mlir", p.elapsed()));
    }
    art.timings.push(("tir-to-mlir", t.elapsed()));
    let t = Instant::now();
    mlir_passes::run_passes(
        &ctx,
        &mut module,
        opts.dump_passes.then_some(&mut art.pass_dumps),
        &mut art.pass_timings,
    )?;
    if opts.keep_ir {
        let p = Instant::now();
        art.mlir_lowered = module.as_operation().to_string();
        art.pass_timings
            .push(("mlir-passes", "print-mlir", p.elapsed()));
    }
    art.timings.push(("mlir-passes", t.elapsed()));
    let t = Instant::now();
    // The tensor maps follow the kernel's own parameters.
    let maps = ptx::TensorMapParams {
        kernel: &kernel.name,
        first: kernel.params.len() as u32,
        count: art.tma.len() as u32,
    };
    let (llvm_ir, ptx) = ptx::to_ptx(
        &ctx,
        &module,
        maps,
        opts.arch,
        opts.keep_ir,
        &mut art.pass_timings,
    )?;
    art.llvm_ir = llvm_ir;
    art.ptx = ptx;
    art.timings.push(("llvm-to-ptx", t.elapsed()));
    Ok(art)
}
