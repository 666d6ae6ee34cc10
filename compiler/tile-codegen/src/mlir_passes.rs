//! The MLIR pass list, in one place: structured control flow to CFG, then
//! the gpu/arith/cf/llvm-ish ops of the kernel to the LLVM and NVVM dialects.
//! (`convert-gpu-to-nvvm` also lowers arith and cf inside the gpu.module.)

use super::CodegenError;
use melior::ir::operation::OperationLike;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::parse_pass_pipeline;
use melior::Context;
use std::time::{Duration, Instant};

/// The passes, in order. Each entry is a textual pass pipeline anchored on the module.
pub const MLIR_PASSES: &[&str] = &[
    "builtin.module(convert-scf-to-cf)",
    "builtin.module(gpu.module(convert-gpu-to-nvvm{index-bitwidth=64}))",
    "builtin.module(reconcile-unrealized-casts)",
];

/// Run [`MLIR_PASSES`] on `module`. With `dumps`, record the IR after each pass.
/// The wall time of each pass (parsing its pipeline, running it and, in debug
/// builds, verifying the IR) is pushed to `timings` as `("mlir-passes", pass, t)`.
pub(crate) fn run_passes(
    ctx: &Context,
    module: &mut Module,
    mut dumps: Option<&mut Vec<(String, String)>>,
    timings: &mut Vec<(&'static str, &'static str, Duration)>,
) -> Result<(), CodegenError> {
    for pass in MLIR_PASSES {
        let t = Instant::now();
        let pm = PassManager::new(ctx);
        // MLIR verifies the IR after every pass by default: debug builds
        // check it once below (naming the pass), release builds trust the
        // lowering's own verifier run (lower/mod.rs) and skip the walk over
        // tens of thousands of ops.
        pm.enable_verifier(false);
        parse_pass_pipeline(pm.as_operation_pass_manager(), pass)
            .map_err(|e| CodegenError::Internal(format!("pass pipeline `{pass}`: {e}")))?;
        pm.run(module)
            .map_err(|e| CodegenError::Internal(format!("MLIR pass `{pass}` failed: {e}")))?;
        if cfg!(debug_assertions) && !module.as_operation().verify() {
            return Err(CodegenError::Internal(format!(
                "IR does not verify after `{pass}`"
            )));
        }
        timings.push(("mlir-passes", pass, t.elapsed()));
        if let Some(d) = dumps.as_deref_mut() {
            d.push((pass.to_string(), module.as_operation().to_string()));
        }
    }
    Ok(())
}
