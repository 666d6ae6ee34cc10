//! A stack of hyper-connection sites with block recompute.
//!
//! Without recompute the forward keeps, per site, its input streams `x_l`
//! (`T·n·C` bf16) besides the small per-token tensors ([`Saved`]) and the
//! sublayer output `y_l`. With recompute it keeps `x_l` only at the first site
//! of each block of `block_len` sites; the backward of a block first rebuilds
//! the block's `x_l` and `h_in_l` from its first input with the same `post` and
//! `pre_apply` kernels as the forward, so the values are bit-identical.
//! `block_len` defaults to round(sqrt(n·L/(n+2))), which minimises
//! `L/L_r·nTC + L_r·(n+1)TC`-style memory (mhc-spec.md).

use crate::layer::{Grads, Layer, LayerError, Params, Saved};
use tile_runtime::{Buffer, Scalar};

type Result<T> = std::result::Result<T, LayerError>;

/// The recompute block length that minimises activation memory for `sites` sites of `n` streams.
pub fn default_block_len(n: usize, sites: usize) -> usize {
    ((n * sites) as f64 / (n + 2) as f64)
        .sqrt()
        .round()
        .max(1.0) as usize
}

/// The sublayer F of each site: forward `h_in → y` and backward `dy → ∂L/∂h_in`
/// (given the site's `h_in` again, recomputed when the stack recomputes).
pub trait Sublayer {
    fn forward(&mut self, site: usize, h_in: &Buffer) -> Result<Buffer>;
    fn backward(&mut self, site: usize, h_in: &Buffer, dy: &Buffer) -> Result<Buffer>;
}

/// What the forward keeps for one site.
struct Kept {
    saved: Saved,
    y: Buffer,
    /// The site's input streams: every site without recompute, block starts with it.
    x: Option<Buffer>,
    /// `h_in`, kept only without recompute (the sublayer's backward needs it).
    h_in: Option<Buffer>,
}

/// L sites, each a [`Layer`] with its parameters.
pub struct Stack {
    pub layers: Vec<Layer>,
    /// `None`: keep every site's input (no recompute).
    pub block_len: Option<usize>,
    kept: Vec<Kept>,
    t: usize,
}

impl Stack {
    pub fn new(layers: Vec<Layer>, block_len: Option<usize>) -> Result<Stack> {
        if block_len == Some(0) {
            return Err(LayerError::Shape(
                "the recompute block length must be at least 1".into(),
            ));
        }
        Ok(Stack {
            layers,
            block_len,
            kept: Vec::new(),
            t: 0,
        })
    }

    fn is_block_start(&self, site: usize) -> bool {
        match self.block_len {
            None => true,
            Some(b) => site.is_multiple_of(b),
        }
    }

    /// Forward through every site from the streams `x0` (`[T, n, C]` bf16); returns the last streams.
    pub fn forward(
        &mut self,
        params: &[Params],
        x0: Buffer,
        t: usize,
        f: &mut dyn Sublayer,
    ) -> Result<Buffer> {
        if params.len() != self.layers.len() {
            return Err(LayerError::Shape(format!(
                "{} parameter sets for {} sites",
                params.len(),
                self.layers.len()
            )));
        }
        self.kept.clear();
        self.t = t;
        let mut x = x0;
        for (l, layer) in self.layers.iter().enumerate() {
            let (h_in, saved) = layer.pre(&params[l], &x, t)?;
            let y = f.forward(l, &h_in)?;
            let x_next = layer.post(&saved, &x, &y)?;
            let keep_x = self.is_block_start(l);
            self.kept.push(Kept {
                saved,
                y,
                x: keep_x.then_some(x),
                h_in: self.block_len.is_none().then_some(h_in),
            });
            x = x_next;
        }
        Ok(x)
    }

    /// The input streams the forward kept for `site` (every site without recompute).
    pub fn kept_input(&self, site: usize) -> Option<&Buffer> {
        self.kept.get(site).and_then(|k| k.x.as_ref())
    }

    /// The `h_in` the forward kept for `site` (without recompute).
    pub fn kept_h_in(&self, site: usize) -> Option<&Buffer> {
        self.kept.get(site).and_then(|k| k.h_in.as_ref())
    }

    /// The coefficients the forward computed for `site` (until the backward).
    pub fn saved(&self, site: usize) -> Option<&Saved> {
        self.kept.get(site).map(|k| &k.saved)
    }

    /// Bytes the forward keeps for the backward (every buffer held between the two).
    pub fn activation_bytes(&self) -> usize {
        let size = |b: &Buffer| b.len() * b.dtype().size_bytes();
        self.kept
            .iter()
            .map(|k| {
                size(&k.saved.z)
                    + size(&k.saved.r)
                    + size(&k.saved.h)
                    + size(&k.y)
                    + k.x.as_ref().map_or(0, size)
                    + k.h_in.as_ref().map_or(0, size)
            })
            .sum()
    }

    /// What [`Stack::activation_bytes`] will be after a forward of `sites`
    /// sites of `site` at `t` tokens, before anything is allocated (a
    /// trainer's memory plan): per site the [`Saved`] coefficients and the
    /// bf16 output y; the bf16 input streams at every block start (every
    /// site without recompute); `h_in` without recompute.
    pub fn planned_activation_bytes(
        site: &crate::layer::SiteConfig,
        t: usize,
        sites: usize,
        block_len: Option<usize>,
    ) -> usize {
        let (n, c) = (site.n, site.c);
        (0..sites)
            .map(|l| {
                let start = block_len.is_none_or(|b| l.is_multiple_of(b));
                site.saved_bytes(t)
                    + 2 * t * c
                    + if start { 2 * t * n * c } else { 0 }
                    + if block_len.is_none() { 2 * t * c } else { 0 }
            })
            .sum()
    }

    /// The inputs and `h_in` of sites `first..end` rebuilt from the kept input of `first`.
    pub fn recompute_block(&self, first: usize, end: usize) -> Result<Vec<(Buffer, Buffer)>> {
        let t = self.t;
        let dev = self.layers[first].kernels().device();
        let x_first = self.kept[first]
            .x
            .as_ref()
            .ok_or_else(|| LayerError::Shape(format!("site {first} kept no input")))?;
        let mut out: Vec<(Buffer, Buffer)> = Vec::with_capacity(end - first);
        for l in first..end {
            let layer = &self.layers[l];
            let c = layer.config().c;
            let x = if l == first {
                let mut copy = dev.alloc_output(Scalar::BF16, x_first.len())?;
                dev.copy(x_first, &mut copy)?;
                copy
            } else {
                let (x_prev, _) = &out[l - first - 1];
                self.layers[l - 1].post(&self.kept[l - 1].saved, x_prev, &self.kept[l - 1].y)?
            };
            let mut h_in = dev.alloc_output(Scalar::BF16, t * c)?;
            layer.apply_pre(&x, &self.kept[l].saved.h, &mut h_in, t)?;
            out.push((x, h_in));
        }
        Ok(out)
    }

    /// Backward from `g = ∂L/∂x_L`; adds parameter gradients into `grads` and
    /// returns ∂L/∂x0.
    pub fn backward(
        &mut self,
        params: &[Params],
        grads: &mut [Grads],
        g: Buffer,
        f: &mut dyn Sublayer,
    ) -> Result<Buffer> {
        let sites = self.layers.len();
        if self.kept.len() != sites || grads.len() != sites || params.len() != sites {
            return Err(LayerError::Shape(
                "backward needs a forward of the same stack first".into(),
            ));
        }
        let block = self.block_len.unwrap_or(1);
        let mut g = g;
        let mut end = sites;
        while end > 0 {
            let first = (end - 1) / block * block;
            let rebuilt = match self.block_len {
                Some(_) => Some(self.recompute_block(first, end)?),
                None => None,
            };
            for l in (first..end).rev() {
                let kept = &self.kept[l];
                let (x, h_in) = match &rebuilt {
                    Some(r) => (&r[l - first].0, &r[l - first].1),
                    None => (kept.x.as_ref().unwrap(), kept.h_in.as_ref().unwrap()),
                };
                let layer = &self.layers[l];
                let (mut g_x, dy, mut dh) = layer.post_backward(&kept.saved, x, &kept.y, &g)?;
                let g_h = f.backward(l, h_in, &dy)?;
                layer.pre_backward(
                    &params[l],
                    &kept.saved,
                    x,
                    &g_h,
                    &mut g_x,
                    &mut dh,
                    &mut grads[l],
                )?;
                g = g_x;
            }
            end = first;
        }
        self.kept.clear();
        Ok(g)
    }
}
