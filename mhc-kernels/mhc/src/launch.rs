//! Typed launchers of the pack kernels, generated at build time.
//!
//! `build.rs` parses every `mhc-kernels/kernels/<pack>/*.tile` with the
//! compiler's front end and generates, per pack, a module here (`mhc`,
//! `model`) and, per kernel (`mhc_post` say):
//!
//! - `MhcPostMeta`: its meta-parameters as `i64` fields named as in the source
//!   (`N`, `BC`);
//! - `MhcPost<'a>`: its arguments as fields named as in the source, in any
//!   order at the call site: pointers as `&'a Buffer`, `i32`/`i64`/`f32`
//!   scalars as those Rust types;
//! - `KernelSet::mhc_post(meta, warps, grid, args)`, the same as the generic
//!   [`KernelSet::run`].
//!
//! ```ignore
//! kernels.mhc_post(
//!     mhc::MhcPostMeta { N: 4, BC: 1024 },
//!     4,
//!     [t, c.div_ceil(1024), 1],
//!     mhc::MhcPost { x, y, h, xo: &out, C: c },
//! )?;
//! ```
//!
//! Renaming, adding or removing a kernel parameter in a `.tile` file thus
//! breaks `cargo check` at the call sites. Underneath, every launch goes
//! through [`KernelSet::launch`] (by name, with its run-time check of the
//! arguments against the loaded kernel's signature, which also checks the
//! buffers' element types). Code that picks the kernel at run time (the
//! `mhc-train` ops' helpers) is generic over [`PackKernel`].

use crate::kernels::{KernelError, KernelSet};
use tile_runtime::Arg;

/// A kernel's meta-parameter values (a generated `…Meta` struct).
pub trait MetaParams {
    /// `(name, value)` in declaration order.
    fn values(&self) -> Vec<(&'static str, i64)>;
}

/// A kernel's arguments (a generated argument struct): which kernel, its
/// meta-parameter type, and the arguments in the kernel's order.
pub trait PackKernel {
    type Meta: MetaParams;
    /// The kernel's name in its pack.
    const NAME: &'static str;
    fn args(&self) -> Vec<Arg<'_>>;
}

impl KernelSet {
    /// Launch the kernel of `args` specialised with `meta` and `warps` over
    /// `grid` (what every generated `KernelSet::<kernel>` method does).
    pub fn run<K: PackKernel>(
        &self,
        meta: K::Meta,
        warps: u32,
        grid: [u32; 3],
        args: K,
    ) -> Result<(), KernelError> {
        let meta = meta.values();
        self.launch(K::NAME, &meta, warps, grid, &args.args())
    }
}

include!(concat!(env!("OUT_DIR"), "/launchers.rs"));
