//! The `mhc-train` reference trainer (placeholder).
