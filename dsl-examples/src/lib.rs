//! The example kernels under `dsl-examples/*.tile`, as paths for tests and benches.
use std::path::PathBuf;

/// Directory holding the example `.tile` files.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
