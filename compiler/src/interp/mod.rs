//! interp (placeholder).
