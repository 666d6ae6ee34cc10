//! tile-runtime (placeholder).
