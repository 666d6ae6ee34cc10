//! TIR → TIR passes. [`optimize`] runs them as one straight list, verifying
//! the kernel after each pass in debug and test builds:
//!
//! 1. [`unroll`]: expand `static` loops;
//! 2. [`fold`]: constant folding (also removes `if` on constants);
//! 3. [`cse`]: common subexpression elimination;
//! 4. [`dce`]: dead code elimination;
//! 5. [`renumber`]: dense value numbers in definition order.
//!
//! Helper inlining, the "inline pass" of the design, happens during checking
//! (`check`): TIR has no call op.

pub mod cse;
pub mod dce;
pub mod fold;
pub mod renumber;
pub mod unroll;
mod util;

use tile_ir::{verify, Kernel, VerifyError};

/// Run the standard pipeline. An error means a pass (or the checker) produced
/// invalid TIR: a compiler bug.
pub fn optimize(kernel: &mut Kernel) -> Result<(), VerifyError> {
    check(kernel, "the checker")?;
    unroll::run(kernel);
    check(kernel, "unroll")?;
    fold::run(kernel);
    check(kernel, "fold")?;
    cse::run(kernel);
    check(kernel, "cse")?;
    // CSE merges constants, which may expose more folding.
    fold::run(kernel);
    check(kernel, "fold")?;
    dce::run(kernel);
    check(kernel, "dce")?;
    renumber::run(kernel);
    check(kernel, "renumber")?;
    if !cfg!(debug_assertions) {
        verify(kernel)?;
    }
    Ok(())
}

fn check(kernel: &Kernel, after: &str) -> Result<(), VerifyError> {
    if cfg!(debug_assertions) {
        verify(kernel).map_err(|e| VerifyError {
            kernel: e.kernel,
            message: format!("after {after}: {}", e.message),
        })?;
    }
    Ok(())
}
