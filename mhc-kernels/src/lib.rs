//! mHC (manifold-constrained hyper-connections): the kernel pack written in
//! `.tile`, its Rust API, and the `mhc-train` reference trainer.
//!
//! - [`kernels`]: loading pack kernels (compiled packs, or embedded sources on the CPU).
//! - [`layer`]: one mHC or HC site (`MhcLayer`): forward, backward, recompute.
//! - [`stack`]: a stack of sites with block recompute (bit-identical to storing).
//! - [`reference`]: the f64 reference of a site, the oracle of the tests.
//! - [`ops`]: the trainer's non-mHC operations (norms, attention softmax, GELU,
//!   cross-entropy, AdamW, GEMM) on a device.
//! - [`train`]: the trainer (`mhc-train`).

pub mod kernels;
pub mod layer;
pub mod ops;
pub mod reference;
pub mod stack;
pub mod train;

pub use layer::{Layer as MhcLayer, Mixing, SiteConfig};
