//! Stable text form of TIR (`--emit tir`, snapshot tests). Placeholder until the front end lands.
use super::Kernel;

/// Print a kernel as text.
pub fn print_kernel(kernel: &Kernel) -> String {
    format!("{kernel:#?}")
}
