//! Glue: elementwise arithmetic, casts, head permutes, residual streams.

use super::{check, check_span, elements, int, k, pick, Ops, OpsError, Out, COL_BLOCKS};
use mhc::launch::PackKernel;
use tile_runtime::{Buffer, Scalar};

impl Ops {
    /// Launch a flat elementwise kernel over n elements (nothing for n = 0);
    /// `build` makes its meta-parameters and arguments from its `BLOCK`.
    pub(super) fn elementwise<K: PackKernel>(
        &self,
        n: usize,
        build: impl FnOnce(i64) -> Result<(K::Meta, K), OpsError>,
    ) -> Result<(), OpsError> {
        if n == 0 {
            return Ok(());
        }
        let block = self.elementwise_block(n);
        let (meta, args) = build(block)?;
        self.launch(meta, 4, [n.div_ceil(block as usize), 1, 1], args)
    }

    /// out = a + b over n elements.
    pub fn add(&self, a: &Buffer, b: &Buffer, out: &mut Buffer, n: usize) -> Result<(), OpsError> {
        const OP: &str = "add";
        check(OP, "a", a, Scalar::F32, &[n])?;
        check(OP, "b", b, Scalar::F32, &[n])?;
        check(OP, "out", out, Scalar::F32, &[n])?;
        self.elementwise(n, |block| {
            Ok((
                k::VecAddMeta { BLOCK: block },
                k::VecAdd {
                    a,
                    b,
                    out,
                    n: n as i64,
                },
            ))
        })
    }

    /// y += alpha · x over n elements.
    pub fn axpy(&self, alpha: f32, x: &Buffer, y: &mut Buffer, n: usize) -> Result<(), OpsError> {
        const OP: &str = "axpy";
        check(OP, "x", x, Scalar::F32, &[n])?;
        check(OP, "y", y, Scalar::F32, &[n])?;
        self.elementwise(n, |block| {
            Ok((
                k::VecAxpyMeta { BLOCK: block },
                k::VecAxpy {
                    x,
                    y,
                    n: n as i64,
                    alpha,
                },
            ))
        })
    }

    /// x *= alpha over n elements.
    pub fn scale(&self, x: &mut Buffer, alpha: f32, n: usize) -> Result<(), OpsError> {
        const OP: &str = "scale";
        check(OP, "x", x, Scalar::F32, &[n])?;
        self.elementwise(n, |block| {
            Ok((
                k::VecScaleMeta { BLOCK: block },
                k::VecScale {
                    x,
                    n: n as i64,
                    alpha,
                },
            ))
        })
    }

    /// x[0..n] = std · N(0, 1), drawn on the device from (seed, stream, index)
    /// alone (Philox4x32-10 and a sum of 12 uniforms: `kernels/model/init.tile`),
    /// so the values do not depend on the device, the block size or what else
    /// was drawn; distinct `stream`s give independent tensors.
    pub fn init_normal(
        &self,
        x: &mut Buffer,
        n: usize,
        std: f32,
        seed: u64,
        stream: u32,
    ) -> Result<(), OpsError> {
        self.init_normal_part(x, n, 0, std, seed, stream)
    }

    /// x[0..n] = elements `first..first + n` of what [`Ops::init_normal`]
    /// draws for a tensor of (seed, stream): a part of a tensor, drawn alone.
    pub fn init_normal_part(
        &self,
        x: &mut Buffer,
        n: usize,
        first: u64,
        std: f32,
        seed: u64,
        stream: u32,
    ) -> Result<(), OpsError> {
        const OP: &str = "init_normal";
        check(OP, "x", x, Scalar::F32, &[n])?;
        let first = i64::try_from(first).map_err(|_| OpsError::Shape {
            op: OP,
            message: format!("first element {first} exceeds i64"),
        })?;
        self.elementwise(n, |block| {
            Ok((
                k::InitNormalMeta { BLOCK: block },
                k::InitNormal {
                    x,
                    n: n as i64,
                    first,
                    std,
                    key0: (seed & 0xffff_ffff) as i64,
                    key1: (seed >> 32) as i64,
                    stream: stream as i64,
                },
            ))
        })
    }

    /// x[0..n] = value.
    pub fn fill(&self, x: &mut Buffer, value: f32, n: usize) -> Result<(), OpsError> {
        const OP: &str = "fill";
        check(OP, "x", x, Scalar::F32, &[n])?;
        self.elementwise(n, |block| {
            Ok((
                k::VecFillMeta { BLOCK: block },
                k::VecFill {
                    x,
                    n: n as i64,
                    value,
                },
            ))
        })
    }

    /// dst[dst_offset..][..n] = src[src_offset..][..n].
    pub fn copy(
        &self,
        src: &Buffer,
        src_offset: usize,
        dst: &mut Buffer,
        dst_offset: usize,
        n: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "copy";
        check_span(OP, "src", src, src_offset, n)?;
        check_span(OP, "dst", dst, dst_offset, n)?;
        let a = k::VecCopy {
            src,
            dst,
            n: n as i64,
            src_offset: src_offset as i64,
            dst_offset: dst_offset as i64,
        };
        self.elementwise(n, |block| Ok((k::VecCopyMeta { BLOCK: block }, a)))
    }

    /// dst (bf16) = src (f32), rounded to nearest even.
    pub fn cast_f32_bf16(&self, src: &Buffer, dst: &mut Buffer, n: usize) -> Result<(), OpsError> {
        const OP: &str = "cast_f32_bf16";
        check(OP, "src", src, Scalar::F32, &[n])?;
        check(OP, "dst", dst, Scalar::BF16, &[n])?;
        self.elementwise(n, |block| {
            Ok((
                k::CastF32Bf16Meta { BLOCK: block },
                k::CastF32Bf16 {
                    src,
                    dst,
                    n: n as i64,
                },
            ))
        })
    }

    /// dst (f32) = src (bf16), exact.
    pub fn cast_bf16_f32(&self, src: &Buffer, dst: &mut Buffer, n: usize) -> Result<(), OpsError> {
        const OP: &str = "cast_bf16_f32";
        check(OP, "src", src, Scalar::BF16, &[n])?;
        check(OP, "dst", dst, Scalar::F32, &[n])?;
        self.elementwise(n, |block| {
            Ok((
                k::CastBf16F32Meta { BLOCK: block },
                k::CastBf16F32 {
                    src,
                    dst,
                    n: n as i64,
                },
            ))
        })
    }

    /// The first n elements of `src` in a new buffer of dtype `to`: f32
    /// rounded to bf16 ([`Ops::cast_f32_bf16`]) or bf16 widened to f32
    /// ([`Ops::cast_bf16_f32`]); any other pair is refused by their checks.
    pub fn cast(&self, src: &Buffer, n: usize, to: Scalar) -> Result<Buffer, OpsError> {
        let mut dst = self.device().alloc_output(to, n)?;
        match to {
            Scalar::F32 => self.cast_bf16_f32(src, &mut dst, n)?,
            _ => self.cast_f32_bf16(src, &mut dst, n)?,
        }
        Ok(dst)
    }

    /// x[r, :] += b for x [rows, n], b [n].
    pub fn add_bias(
        &self,
        x: &mut Buffer,
        b: &Buffer,
        rows: usize,
        n: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "add_bias";
        check(OP, "x", x, Scalar::F32, &[rows, n])?;
        check(OP, "b", b, Scalar::F32, &[n])?;
        if rows * n == 0 {
            return Ok(());
        }
        let block = pick(&COL_BLOCKS, n);
        let a = k::AddBias {
            x,
            b,
            n: int(OP, n)?,
        };
        self.launch(
            k::AddBiasMeta { BLOCK: block },
            4,
            [rows, n.div_ceil(block as usize), 1],
            a,
        )
    }

    /// Slot `slot` of `src` [b, t, slots, h, d] → `dst` [b, h, t, d]: with
    /// slots = 3 the q, k or v of a fused qkv projection, with slots = 1 a
    /// [b, t, h·d] activation split into heads. `dst` is f32, or bf16 (the
    /// fused attention's operands: rounded on the way).
    #[allow(clippy::too_many_arguments)]
    pub fn split_heads(
        &self,
        src: &Buffer,
        dst: &mut Buffer,
        b: usize,
        t: usize,
        h: usize,
        d: usize,
        slots: usize,
        slot: usize,
    ) -> Result<(), OpsError> {
        self.permute("split_heads", src, dst, [b, t, h, d], slots, slot, true)
    }

    /// The inverse of [`Ops::split_heads`]: `src` [b, h, t, d] (f32 or
    /// bf16) → slot `slot` of `dst` [b, t, slots, h, d] (f32; bf16 too for
    /// bf16 heads; other slots untouched).
    #[allow(clippy::too_many_arguments)]
    pub fn merge_heads(
        &self,
        src: &Buffer,
        dst: &mut Buffer,
        b: usize,
        t: usize,
        h: usize,
        d: usize,
        slots: usize,
        slot: usize,
    ) -> Result<(), OpsError> {
        self.permute("merge_heads", src, dst, [b, t, h, d], slots, slot, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn permute(
        &self,
        op: &'static str,
        src: &Buffer,
        dst: &mut Buffer,
        [b, t, h, d]: [usize; 4],
        slots: usize,
        slot: usize,
        split: bool,
    ) -> Result<(), OpsError> {
        if slot >= slots {
            return Err(OpsError::Shape {
                op,
                message: format!("slot {slot} of {slots}"),
            });
        }
        let (fused, heads) = (
            elements(op, &[b, t, slots, h, d])?,
            elements(op, &[b, h, t, d])?,
        );
        let (src_len, dst_len) = if split {
            (fused, heads)
        } else {
            (heads, fused)
        };
        // The per-head side may be bf16; the [b, t, slots, h, d] side is f32,
        // or also bf16 when merging bf16 heads.
        let per_head = if split { &*dst } else { src };
        let bf16 = per_head.dtype() == Scalar::BF16;
        let head_dtype = if bf16 { Scalar::BF16 } else { Scalar::F32 };
        let to_bf16 = !split && bf16 && dst.dtype() == Scalar::BF16;
        let (src_dtype, dst_dtype) = if split {
            (Scalar::F32, head_dtype)
        } else if to_bf16 {
            (Scalar::BF16, Scalar::BF16)
        } else {
            (head_dtype, Scalar::F32)
        };
        check(op, "src", src, src_dtype, &[src_len])?;
        check(op, "dst", dst, dst_dtype, &[dst_len])?;
        if heads == 0 {
            return Ok(());
        }
        // A program moves [HB, BLOCK] tiles: HB heads of D elements, about
        // 1–4 K elements a tile (kernels/model/attention.tile's tune blocks).
        let Some(&block) = [64i64, 128, 256, 1024].iter().find(|&&b| b as usize >= d) else {
            return Err(OpsError::Shape {
                op,
                message: format!("head dimension {d} is larger than the kernels' 1024"),
            });
        };
        let hb = if block <= 128 { 16 } else { 4 };
        let (tt, hh, dd, ss, slot) = (
            int(op, t)?,
            int(op, h)?,
            int(op, d)?,
            int(op, slots)?,
            int(op, slot)?,
        );
        // One program per token (kernels/model/attention.tile).
        let grid = [b * t, 1, 1];
        macro_rules! run {
            ($args:ident, $meta:ident) => {
                self.launch(
                    k::$meta {
                        BLOCK: block,
                        HB: hb,
                    },
                    4,
                    grid,
                    k::$args {
                        src,
                        dst,
                        T: tt,
                        H: hh,
                        D: dd,
                        S: ss,
                        slot,
                    },
                )
            };
        }
        match (split, bf16, to_bf16) {
            (true, false, _) => run!(SplitHeads, SplitHeadsMeta),
            (true, true, _) => run!(SplitHeadsBf16, SplitHeadsBf16Meta),
            (false, false, _) => run!(MergeHeads, MergeHeadsMeta),
            (false, true, false) => run!(MergeHeadsBf16, MergeHeadsBf16Meta),
            (false, true, true) => run!(MergeHeadsToBf16, MergeHeadsToBf16Meta),
        }
    }

    /// xs [t, n, c] (bf16) = n copies of x [t, c] (f32), rounded to bf16.
    pub fn streams_expand(
        &self,
        x: &Buffer,
        xs: &mut Buffer,
        t: usize,
        n: usize,
        c: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "streams_expand";
        check(OP, "x", x, Scalar::F32, &[t, c])?;
        check(OP, "xs", xs, Scalar::BF16, &[t, n, c])?;
        self.streams(OP, t, n, c, |block| {
            Ok((
                k::StreamsExpandMeta { BLOCK: block },
                k::StreamsExpand {
                    x,
                    xs,
                    n: int(OP, n)?,
                    C: int(OP, c)?,
                },
            ))
        })
    }

    /// Backward of [`Ops::streams_expand`]: dx [t, c] (f32) (+)= Σ_i dxs[t, i, :] (bf16).
    pub fn streams_expand_bwd(
        &self,
        dxs: &Buffer,
        dx: &mut Buffer,
        t: usize,
        n: usize,
        c: usize,
        mode: Out,
    ) -> Result<(), OpsError> {
        const OP: &str = "streams_expand_bwd";
        check(OP, "dxs", dxs, Scalar::BF16, &[t, n, c])?;
        check(OP, "dx", dx, Scalar::F32, &[t, c])?;
        self.streams(OP, t, n, c, |block| {
            Ok((
                k::StreamsExpandBwdMeta { BLOCK: block },
                k::StreamsExpandBwd {
                    dxs,
                    dx,
                    n: int(OP, n)?,
                    C: int(OP, c)?,
                    accumulate: mode.flag(),
                },
            ))
        })
    }

    /// x [t, c] (f32) = mean over the n streams of xs [t, n, c] (bf16).
    pub fn streams_collapse(
        &self,
        xs: &Buffer,
        x: &mut Buffer,
        t: usize,
        n: usize,
        c: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "streams_collapse";
        check(OP, "xs", xs, Scalar::BF16, &[t, n, c])?;
        check(OP, "x", x, Scalar::F32, &[t, c])?;
        self.streams(OP, t, n, c, |block| {
            Ok((
                k::StreamsCollapseMeta { BLOCK: block },
                k::StreamsCollapse {
                    xs,
                    x,
                    n: int(OP, n)?,
                    C: int(OP, c)?,
                },
            ))
        })
    }

    /// Backward of [`Ops::streams_collapse`]: dxs[t, i, :] (bf16) (+)= dx[t, :] / n.
    pub fn streams_collapse_bwd(
        &self,
        dx: &Buffer,
        dxs: &mut Buffer,
        t: usize,
        n: usize,
        c: usize,
        mode: Out,
    ) -> Result<(), OpsError> {
        const OP: &str = "streams_collapse_bwd";
        check(OP, "dx", dx, Scalar::F32, &[t, c])?;
        check(OP, "dxs", dxs, Scalar::BF16, &[t, n, c])?;
        self.streams(OP, t, n, c, |block| {
            Ok((
                k::StreamsCollapseBwdMeta { BLOCK: block },
                k::StreamsCollapseBwd {
                    dx,
                    dxs,
                    n: int(OP, n)?,
                    C: int(OP, c)?,
                    accumulate: mode.flag(),
                },
            ))
        })
    }

    /// Launch a stream kernel over [t, n, c] (one program per token and
    /// column block); `build` makes its meta-parameters and arguments
    /// (src, dst, n, c[, accumulate]) from its `BLOCK`.
    fn streams<K: PackKernel>(
        &self,
        op: &'static str,
        t: usize,
        n: usize,
        c: usize,
        build: impl FnOnce(i64) -> Result<(K::Meta, K), OpsError>,
    ) -> Result<(), OpsError> {
        if n == 0 {
            return Err(OpsError::Shape {
                op,
                message: "no streams (n = 0)".into(),
            });
        }
        if t * c == 0 {
            return Ok(());
        }
        let block = pick(&COL_BLOCKS, c);
        let (meta, args) = build(block)?;
        self.launch(meta, 4, [t, c.div_ceil(block as usize), 1], args)
    }
}
