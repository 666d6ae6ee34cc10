//! The trainer's operations on a device (placeholder).
