//! syntax (placeholder).
