//! `tilec`: the compiler of the `.tile` kernel language.
//!
//! Pipeline (one module per stage, stages share only data types):
//! `syntax` (source → AST) → `check` (AST → typed Tile IR, one specialisation per
//! meta-parameter assignment) → `passes` (TIR → TIR) → either `interp` (run TIR
//! on the CPU) or, with the `codegen` feature, `codegen` (TIR → MLIR → LLVM IR → PTX).
//! `frontend` strings the first three together; `driver` is the CLI.
//! See docs/ARCHITECTURE.md.

pub mod check;
pub mod diag;
pub mod driver;
pub mod frontend;
pub mod interp;
pub mod launch;
pub mod pack;
pub mod passes;
pub mod syntax;
pub mod tir;

#[cfg(feature = "codegen")]
pub mod codegen;

/// The compiler's version, recorded in packs and cache keys.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
