//! Diagnostics (placeholder).
