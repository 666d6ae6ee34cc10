//! Front end façade: source text → checked, optimised TIR (placeholder).
