//! LLVM dialect → LLVM IR (MLIR's translation, into inkwell's context) → PTX
//! (LLVM's NVPTX back end through inkwell, after the pass pipeline of
//! `llvm_pipeline.txt`: O3 less what has nothing to do in a kernel).

use super::{Arch, CodegenError};
use inkwell::context::Context as LlvmContext;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetTriple,
};
use inkwell::OptimizationLevel;
use melior::ir::block::BlockLike;
use melior::ir::operation::OperationLike;
use melior::ir::{Location, Module, RegionLike};
use melior::Context;
use std::sync::Once;
use std::time::{Duration, Instant};

static INIT_NVPTX: Once = Once::new();

/// Registers the NVPTX target and sets LLVM's process-wide options:
///
/// - GVN without memory dependence analysis, for the back end's GVN runs
///   (`Aggressive` adds two, which `llvm_pipeline.txt` cannot reach).
///   Measured byte-identical PTX on every pack and 600 fuzz kernels, and
///   NVPTX's time on attention 128×64, D = 128 0.75 → 0.55 s: memory
///   dependence queries over the unrolled tile code were most of GVN's time,
///   and EarlyCSE with MemorySSA has already removed the redundant loads.
/// - Straight-line strength reduction without its poison-reuse guard
///   (LLVM 22): the guard asks `ScalarEvolution::canReuseInstruction` of
///   every candidate basis, and in a tile's unrolled address arithmetic
///   (hundreds of candidates a key) that was 21% of a whole attention build
///   (callgrind). The guard keeps a rewrite from reusing an instruction whose
///   poison-generating flags (nsw, nuw, disjoint, inbounds) a source asserted
///   without proof; our MLIR carries none, so every such flag in the IR that
///   reaches the back end was proven by LLVM for all executions of its
///   instruction, which dominates the one rewritten (LLVM 21 and earlier had
///   no guard at all).
fn init_nvptx() {
    Target::initialize_nvptx(&InitializationConfig::default());
    let args = [
        c"tilec".as_ptr(),
        c"-enable-gvn-memdep=false".as_ptr(),
        c"-enable-poison-reuse-guard=false".as_ptr(),
    ];
    // SAFETY: NUL-terminated strings that outlive the call; run once
    // (`INIT_NVPTX`), before any pass reads the option.
    unsafe {
        inkwell::llvm_sys::support::LLVMParseCommandLineOptions(
            args.len() as i32,
            args.as_ptr(),
            std::ptr::null(),
        );
    }
}

/// The optimisation pipeline in `PassBuilder` syntax: the file's lines that
/// are not comments, joined.
fn llvm_pipeline() -> String {
    include_str!("llvm_pipeline.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `gpu.module`'s contents as a plain `builtin.module`, which the LLVM IR
/// translation requires.
fn extract_gpu_module<'c>(
    ctx: &'c Context,
    module: &Module<'c>,
) -> Result<Module<'c>, CodegenError> {
    let out = Module::new(Location::unknown(ctx));
    let gpu_module = module
        .body()
        .first_operation()
        .ok_or_else(|| CodegenError::Internal("empty module".into()))?;
    let region = gpu_module
        .region(0)
        .map_err(|e| CodegenError::Internal(e.to_string()))?;
    let block = region
        .first_block()
        .ok_or_else(|| CodegenError::Internal("empty gpu.module".into()))?;
    let mut op = block.first_operation();
    while let Some(o) = op {
        let clone =
            unsafe { melior::ir::Operation::from_raw(mlir_sys::mlirOperationClone(o.to_raw())) };
        out.body().append_operation(clone);
        op = o.next_in_block();
    }
    Ok(out)
}

/// The kernel's tensor-map parameters: `count` from parameter `first` on.
#[derive(Clone, Copy)]
pub(crate) struct TensorMapParams<'a> {
    pub kernel: &'a str,
    pub first: u32,
    pub count: u32,
}

/// Make the tensor-map parameters `__grid_constant__` maps by value: `byval`
/// 128-byte arrays, 64-byte aligned, `nvvm.grid_constant` (so that taking
/// their address gives a generic address of the parameter itself, which TMA
/// reads, rather than a local copy). MLIR's GPU-to-NVVM conversion drops
/// `llvm.byval`, so the attributes go on here, in LLVM IR.
fn mark_tensor_maps(
    llctx: &LlvmContext,
    llmod: &inkwell::module::Module,
    maps: TensorMapParams,
) -> Result<(), CodegenError> {
    use inkwell::attributes::{Attribute, AttributeLoc};
    use inkwell::types::AnyType;
    if maps.count == 0 {
        return Ok(());
    }
    let f = llmod.get_function(maps.kernel).ok_or_else(|| {
        CodegenError::Internal(format!("no function `{}` in the LLVM module", maps.kernel))
    })?;
    let bytes = tile_ir::launch::TENSOR_MAP_BYTES as u32;
    let array = llctx.i8_type().array_type(bytes).as_any_type_enum();
    let byval = llctx.create_type_attribute(Attribute::get_named_enum_kind_id("byval"), array);
    let align = llctx.create_enum_attribute(
        Attribute::get_named_enum_kind_id("align"),
        tile_ir::launch::TENSOR_MAP_ALIGN as u64,
    );
    let grid_constant = llctx.create_string_attribute("nvvm.grid_constant", "");
    for i in maps.first..maps.first + maps.count {
        for a in [byval, align, grid_constant] {
            f.add_attribute(AttributeLoc::Param(i), a);
        }
    }
    Ok(())
}

/// Translate the lowered module to LLVM IR and PTX. Returns (LLVM IR after the optimisation pipeline, PTX).
/// The wall time of each step is pushed to `timings` as `("llvm-to-ptx", step, t)`.
pub(crate) fn to_ptx(
    ctx: &Context,
    module: &Module,
    maps: TensorMapParams,
    arch: Arch,
    keep_ir: bool,
    timings: &mut Vec<(&'static str, &'static str, Duration)>,
) -> Result<(String, String), CodegenError> {
    let mut t = Instant::now();
    let mut step = |name: &'static str| {
        timings.push(("llvm-to-ptx", name, t.elapsed()));
        t = Instant::now();
    };
    INIT_NVPTX.call_once(init_nvptx);
    let plain = extract_gpu_module(ctx, module)?;
    let llctx = LlvmContext::create();
    let raw = unsafe {
        mlir_sys::mlirTranslateModuleToLLVMIR(plain.as_operation().to_raw(), llctx.raw() as _)
    };
    if raw.is_null() {
        return Err(CodegenError::Internal(
            "MLIR → LLVM IR translation failed".into(),
        ));
    }
    let llmod = unsafe { inkwell::module::Module::new(raw as _) };
    mark_tensor_maps(&llctx, &llmod, maps)?;
    step("translate-to-llvm-ir");
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let target = Target::from_triple(&triple).map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let tm = target
        .create_target_machine(
            &triple,
            arch.target(),
            arch.ptx_features(),
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| {
            CodegenError::Llvm(format!("no NVPTX target machine for {}", arch.target()))
        })?;
    llmod.set_triple(&triple);
    llmod.set_data_layout(&tm.get_target_data().get_data_layout());
    llmod
        .verify()
        .map_err(|e| CodegenError::Llvm(format!("LLVM IR does not verify: {e}")))?;
    step("target-machine+verify");
    llmod
        .run_passes(&llvm_pipeline(), &tm, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    step("llvm-optimise");
    let mut llvm_ir = String::new();
    if keep_ir {
        llvm_ir = llmod.print_to_string().to_string();
        step("print-llvm-ir");
    }
    let buf = tm
        .write_to_memory_buffer(&llmod, FileType::Assembly)
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let ptx = String::from_utf8_lossy(buf.as_slice())
        .trim_end_matches('\0')
        .to_string();
    step("nvptx-codegen");
    Ok((llvm_ir, crate::ptxas_defects::avoid_ptxas_defects(&ptx)))
}
