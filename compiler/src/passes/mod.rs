//! passes (placeholder).
