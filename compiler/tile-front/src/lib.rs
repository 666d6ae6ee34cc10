//! `tile-front`: the front end of the `.tile` language.
//!
//! Pipeline (one module per stage): `syntax` (source → AST, nom) → `check`
//! (AST → typed Tile IR, one specialisation per meta-parameter assignment) →
//! `passes` (TIR → TIR). `frontend` strings them together and is the entry
//! point the rest of the tool chain uses; `diag` renders every error.
//! Depends on `tile-ir` only: nothing here knows about MLIR, LLVM or CUDA.

pub mod check;
pub mod diag;
pub mod frontend;
pub mod passes;
pub mod syntax;

pub use tile_ir::{SourceFile, Span};
