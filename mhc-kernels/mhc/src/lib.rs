//! mHC (manifold-constrained hyper-connections): the kernel pack written in
//! `.tile` (`mhc-kernels/kernels/`) and its Rust API. The reference trainer that
//! uses it is the crate `mhc-train`.
//!
//! - [`kernels`]: loading pack kernels (compiled packs, or embedded sources on the CPU).
//! - [`launch`]: typed launchers of every pack kernel, generated from the sources.
//! - [`layer`]: one mHC or HC site (`MhcLayer`): forward, backward, recompute.
//! - [`stack`]: a stack of sites with block recompute (bit-identical to storing).
//! - [`reference`](mod@reference): the f64 reference of a site, the oracle of the tests.

pub mod kernels;
pub mod launch;
pub mod layer;
pub mod profile;
pub mod reference;
pub mod stack;

pub use layer::{Layer as MhcLayer, Mixing, SiteConfig};
