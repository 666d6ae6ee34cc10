//! TIR → TIR passes. [`optimize`] runs them as one straight list ([`PASSES`]),
//! verifying the kernel after each pass in debug and test builds:
//!
//! 1. [`unroll`]: expand `static` loops;
//! 2. [`fold`]: constant folding (also removes `if` on constants);
//! 3. [`cse`]: common subexpression elimination;
//! 4. [`dot_acc`]: `x + dot(a, b)` accumulates into the dot;
//! 5. [`dce`]: dead code elimination;
//! 6. [`renumber`]: dense value numbers in definition order.
//!
//! Helper inlining, the "inline pass" of the design, happens during checking
//! (`check`): TIR has no call op.

pub mod cse;
pub mod dce;
pub mod dot_acc;
pub mod fold;
pub mod renumber;
pub mod unroll;
mod util;

use tile_ir::{verify, Kernel, VerifyError};

/// A TIR → TIR rewrite.
pub type Pass = fn(&mut Kernel);

/// The standard pipeline, in order, by name ([`optimize`] runs exactly this
/// list; file tests print the kernel after each entry). `fold` runs twice:
/// CSE merges constants, which may expose more folding.
pub const PASSES: &[(&str, Pass)] = &[
    ("unroll", unroll::run),
    ("fold", fold::run),
    ("cse", cse::run),
    ("dot_acc", dot_acc::run),
    ("fold", fold::run),
    ("dce", dce::run),
    ("renumber", renumber::run),
];

/// A pass of [`PASSES`] by name.
pub fn pass(name: &str) -> Option<Pass> {
    PASSES.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// Run the standard pipeline. An error means a pass (or the checker) produced
/// invalid TIR: a compiler bug.
pub fn optimize(kernel: &mut Kernel) -> Result<(), VerifyError> {
    check(kernel, "the checker")?;
    for (name, run) in PASSES {
        run(kernel);
        check(kernel, name)?;
    }
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
