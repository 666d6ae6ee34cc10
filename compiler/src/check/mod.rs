//! check (placeholder).
