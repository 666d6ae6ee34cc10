//! mHC kernels (placeholder: see issue 8).
