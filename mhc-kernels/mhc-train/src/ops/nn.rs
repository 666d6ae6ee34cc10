//! Model layers: embedding, RMSNorm, attention, GELU, cross-entropy, AdamW.

use super::{check, elements, int, k, pick, AdamW, Ops, OpsError, Out, COL_BLOCKS};
use tile_runtime::blas::GemmOp;
use tile_runtime::{Buffer, Scalar};

impl Ops {
    /// out[r, :] = wte[tokens[r], :] (+ wpe[r % t, :] with `wpe`) for `rows`
    /// tokens (i32) in [0, vocab); tables [vocab, c] and [t, c]. A token
    /// outside [0, vocab) gives a NaN row (the loss turns non-finite).
    #[allow(clippy::too_many_arguments)]
    pub fn embed_fwd(
        &self,
        tokens: &Buffer,
        wte: &Buffer,
        wpe: Option<&Buffer>,
        out: &mut Buffer,
        rows: usize,
        t: usize,
        vocab: usize,
        c: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "embed_fwd";
        check(OP, "tokens", tokens, Scalar::I32, &[rows])?;
        check(OP, "wte", wte, Scalar::F32, &[vocab, c])?;
        if let Some(wpe) = wpe {
            if t == 0 || !rows.is_multiple_of(t) {
                return Err(OpsError::Shape {
                    op: OP,
                    message: format!("{rows} rows are not whole sequences of {t}"),
                });
            }
            check(OP, "wpe", wpe, Scalar::F32, &[t, c])?;
        }
        check(OP, "out", out, Scalar::F32, &[rows, c])?;
        if rows == 0 || c == 0 {
            return Ok(());
        }
        let block = pick(&COL_BLOCKS, c);
        let a = k::EmbedFwd {
            tokens,
            wte,
            wpe: wpe.unwrap_or(wte),
            out,
            V: int(OP, vocab)?,
            T: int(OP, t.max(1))?,
            C: int(OP, c)?,
            nan: f32::NAN,
        };
        let pos = wpe.is_some() as i64;
        self.launch(
            k::EmbedFwdMeta {
                BLOCK: block,
                POS: pos,
            },
            4,
            [rows, c.div_ceil(block as usize), 1],
            a,
        )
    }

    /// dwte[v, :] (+)= Σ over rows r with tokens[r] = v of dout[r, :]
    /// (dout [tokens.len(), c], dwte [vocab, c]); deterministic. The rows
    /// are grouped by token here on the host (a counting sort of `tokens`,
    /// which the host has: it uploaded them), so each program reads only its
    /// token's rows. Tokens outside [0, vocab) contribute nothing (the
    /// forward made their rows NaN).
    pub fn embed_bwd(
        &self,
        tokens: &[i32],
        dout: &Buffer,
        dwte: &mut Buffer,
        vocab: usize,
        c: usize,
        mode: Out,
    ) -> Result<(), OpsError> {
        const OP: &str = "embed_bwd";
        let rows = tokens.len();
        check(OP, "dout", dout, Scalar::F32, &[rows, c])?;
        check(OP, "dwte", dwte, Scalar::F32, &[vocab, c])?;
        if vocab == 0 || c == 0 {
            return Ok(());
        }
        int(OP, rows)?;
        let (grouped, starts) = group_rows_by_token(tokens, vocab);
        let device = self.device();
        // (At least one element each: an empty buffer is no valid pointer.)
        let grouped = device.upload(if grouped.is_empty() {
            &[0]
        } else {
            &grouped[..]
        })?;
        let starts = device.upload(&starts)?;
        let bc = if c <= 32 { 32 } else { 128 };
        let a = k::EmbedBwd {
            rows: &grouped,
            starts: &starts,
            dout,
            dwte,
            C: int(OP, c)?,
            accumulate: mode.flag(),
        };
        self.launch(
            k::EmbedBwdMeta { BR: 16, BC: bc },
            4,
            [vocab, c.div_ceil(bc as usize), 1],
            a,
        )
    }

    /// dwpe[p, :] (+)= Σ over sequences of dout[s·t + p, :]: the position
    /// table's gradient (dout [rows, c], rows a multiple of `t`).
    pub fn embed_pos_bwd(
        &self,
        dout: &Buffer,
        dwpe: &mut Buffer,
        rows: usize,
        t: usize,
        c: usize,
        mode: Out,
    ) -> Result<(), OpsError> {
        if t == 0 || !rows.is_multiple_of(t) {
            return Err(OpsError::Shape {
                op: "embed_pos_bwd",
                message: format!("{rows} rows are not whole sequences of {t}"),
            });
        }
        self.col_sum(
            dout,
            rows / t,
            elements("embed_pos_bwd", &[t, c])?,
            dwpe,
            mode,
        )
    }

    /// y = x / sqrt(mean(x²) + eps) · w per row of x [rows, n]; rstd[r] = the
    /// row's 1/rms, kept for the backward. y is f32, or bf16 (rounded once).
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_fwd(
        &self,
        x: &Buffer,
        w: &Buffer,
        y: &mut Buffer,
        rstd: &mut Buffer,
        rows: usize,
        n: usize,
        eps: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "rmsnorm_fwd";
        check(OP, "x", x, Scalar::F32, &[rows, n])?;
        let (half, n32) = check_norm_fwd(OP, w, y, rstd, rows, n)?;
        if half {
            return self.launch_rows(rows, n, |block| {
                Ok((
                    k::RmsnormFwdToBf16Meta { BLOCK: block },
                    k::RmsnormFwdToBf16 {
                        x,
                        w,
                        y,
                        rstd,
                        n: n32,
                        eps,
                    },
                ))
            });
        }
        self.launch_rows(rows, n, |block| {
            Ok((
                k::RmsnormFwdMeta { BLOCK: block },
                k::RmsnormFwd {
                    x,
                    w,
                    y,
                    rstd,
                    n: n32,
                    eps,
                },
            ))
        })
    }

    /// [`Ops::rmsnorm_fwd`] of `x = a + b`, with x written too: a plain
    /// residual's sum and the next site's norm in one kernel (a and x
    /// [rows, n] f32, x not sharing memory with a or b). b is the sublayer's
    /// output: f32 with an f32 y, bf16 (as autocast's GEMMs give it) with a
    /// bf16 y.
    #[allow(clippy::too_many_arguments)]
    pub fn add_rmsnorm_fwd(
        &self,
        a: &Buffer,
        b: &Buffer,
        x: &mut Buffer,
        w: &Buffer,
        y: &mut Buffer,
        rstd: &mut Buffer,
        rows: usize,
        n: usize,
        eps: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "add_rmsnorm_fwd";
        for (name, t) in [("a", a), ("x", &*x)] {
            check(OP, name, t, Scalar::F32, &[rows, n])?;
        }
        let (half, n32) = check_norm_fwd(OP, w, y, rstd, rows, n)?;
        let b_type = if half { Scalar::BF16 } else { Scalar::F32 };
        check(OP, "b", b, b_type, &[rows, n])?;
        if half {
            return self.launch_rows(rows, n, |block| {
                Ok((
                    k::AddRmsnormFwdToBf16Meta { BLOCK: block },
                    k::AddRmsnormFwdToBf16 {
                        a,
                        b,
                        x,
                        w,
                        y,
                        rstd,
                        n: n32,
                        eps,
                    },
                ))
            });
        }
        self.launch_rows(rows, n, |block| {
            Ok((
                k::AddRmsnormFwdMeta { BLOCK: block },
                k::AddRmsnormFwd {
                    a,
                    b,
                    x,
                    w,
                    y,
                    rstd,
                    n: n32,
                    eps,
                },
            ))
        })
    }

    /// Backward of [`Ops::rmsnorm_fwd`]: dx (+)= ∂L/∂x and dw (+)= Σ_rows dy·x·rstd
    /// (deterministic), from x, w, the saved rstd and dy. A bf16 run's
    /// form: dy in bf16 (a GEMM's input gradient as autocast rounds it) and
    /// `dx16`, written with dx after the step rounded (the next GEMMs'
    /// operand); an f32 run's: dy in f32, no `dx16`.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_bwd(
        &self,
        x: &Buffer,
        w: &Buffer,
        rstd: &Buffer,
        dy: &Buffer,
        dx: &mut Buffer,
        dx_mode: Out,
        dx16: Option<&mut Buffer>,
        dw: &mut Buffer,
        dw_mode: Out,
        rows: usize,
        n: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "rmsnorm_bwd";
        check(OP, "x", x, Scalar::F32, &[rows, n])?;
        check(OP, "w", w, Scalar::F32, &[n])?;
        check(OP, "rstd", rstd, Scalar::F32, &[rows])?;
        let half = dx16.is_some();
        let dy_type = if half { Scalar::BF16 } else { Scalar::F32 };
        if dy.dtype() != dy_type {
            return Err(OpsError::Shape {
                op: OP,
                message: format!(
                    "`dy` is a {} buffer; it must be bf16 exactly when `dx16` is given \
                     (a bf16 run's form)",
                    dy.dtype().name()
                ),
            });
        }
        check(OP, "dy", dy, dy_type, &[rows, n])?;
        check(OP, "dx", dx, Scalar::F32, &[rows, n])?;
        check(OP, "dw", dw, Scalar::F32, &[n])?;
        let (n32, accumulate) = (int(OP, n)?, dx_mode.flag());
        if let Some(dx16) = dx16 {
            check(OP, "dx16", dx16, Scalar::BF16, &[rows, n])?;
            self.launch_rows(rows, n, |block| {
                Ok((
                    k::RmsnormBwdBf16Meta { BLOCK: block },
                    k::RmsnormBwdBf16 {
                        x,
                        w,
                        dy,
                        rstd,
                        dx,
                        dx16,
                        n: n32,
                        accumulate,
                    },
                ))
            })?;
        } else {
            self.launch_rows(rows, n, |block| {
                Ok((
                    k::RmsnormBwdMeta { BLOCK: block },
                    k::RmsnormBwd {
                        x,
                        w,
                        dy,
                        rstd,
                        dx,
                        n: n32,
                        accumulate,
                    },
                ))
            })?;
        }
        self.column_reduce(OP, rows, n, dw, dw_mode, |out, pass| {
            let (br, bc) = (pass.br, pass.bc);
            let (rows, n, rows_per_prog, accumulate) =
                (pass.rows, pass.n, pass.rows_per_prog, pass.accumulate);
            if half {
                return self.launch(
                    k::RmsnormDwFromBf16Meta { BR: br, BC: bc },
                    4,
                    pass.grid,
                    k::RmsnormDwFromBf16 {
                        x,
                        dy,
                        rstd,
                        out,
                        rows,
                        n,
                        rows_per_prog,
                        accumulate,
                    },
                );
            }
            self.launch(
                k::RmsnormDwMeta { BR: br, BC: bc },
                4,
                pass.grid,
                k::RmsnormDw {
                    x,
                    dy,
                    rstd,
                    out,
                    rows,
                    n,
                    rows_per_prog,
                    accumulate,
                },
            )
        })
    }

    /// Causal softmax of attention scores S [bh, t, t] (row r is query
    /// position r % t): P = softmax(scale·S) over keys ≤ the query, 0 above
    /// the diagonal. `s` and `p` may not alias (see [`Ops::attention_fwd`] for
    /// the fused-buffer path).
    pub fn attn_softmax_fwd(
        &self,
        s: &Buffer,
        p: &mut Buffer,
        bh: usize,
        t: usize,
        scale: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "attn_softmax_fwd";
        check(OP, "s", s, Scalar::F32, &[bh, t, t])?;
        check(OP, "p", p, Scalar::F32, &[bh, t, t])?;
        self.softmax_fwd_launch(s, p, bh, t, scale)
    }

    /// In-place safe: each program reads its row before writing it, element
    /// by element in the same layout.
    fn softmax_fwd_launch(
        &self,
        s: &Buffer,
        p: &Buffer,
        bh: usize,
        t: usize,
        scale: f32,
    ) -> Result<(), OpsError> {
        self.launch_rows(bh * t, t, |block| {
            Ok((
                k::AttnSoftmaxFwdMeta { BLOCK: block },
                k::AttnSoftmaxFwd {
                    s,
                    p,
                    T: int("attn_softmax_fwd", t)?,
                    scale,
                },
            ))
        })
    }

    /// Backward of [`Ops::attn_softmax_fwd`]: dS = scale · P ⊙ (dP − rowsum(P ⊙ dP)),
    /// 0 above the diagonal.
    pub fn attn_softmax_bwd(
        &self,
        p: &Buffer,
        dp: &Buffer,
        ds: &mut Buffer,
        bh: usize,
        t: usize,
        scale: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "attn_softmax_bwd";
        check(OP, "p", p, Scalar::F32, &[bh, t, t])?;
        check(OP, "dp", dp, Scalar::F32, &[bh, t, t])?;
        check(OP, "ds", ds, Scalar::F32, &[bh, t, t])?;
        self.softmax_bwd_launch(p, dp, ds, bh, t, scale)
    }

    /// In-place safe in `dp`/`ds` like the forward.
    fn softmax_bwd_launch(
        &self,
        p: &Buffer,
        dp: &Buffer,
        ds: &Buffer,
        bh: usize,
        t: usize,
        scale: f32,
    ) -> Result<(), OpsError> {
        self.launch_rows(bh * t, t, |block| {
            Ok((
                k::AttnSoftmaxBwdMeta { BLOCK: block },
                k::AttnSoftmaxBwd {
                    p,
                    dp,
                    ds,
                    T: int("attn_softmax_bwd", t)?,
                    scale,
                },
            ))
        })
    }

    /// Causal attention on per-head matrices q, k, v [bh, t, d]:
    /// P = causal_softmax(scale·q·kᵀ) (kept in `p` [bh, t, t] for the
    /// backward), o = P·v [bh, t, d]. Two batched GEMMs around the softmax
    /// kernel, which runs in place on `p`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_fwd(
        &self,
        q: &Buffer,
        k: &Buffer,
        v: &Buffer,
        p: &mut Buffer,
        o: &mut Buffer,
        bh: usize,
        t: usize,
        d: usize,
        scale: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "attention_fwd";
        for (name, b) in [("q", q), ("k", k), ("v", v), ("o", &*o)] {
            check(OP, name, b, Scalar::F32, &[bh, t, d])?;
        }
        check(OP, "p", p, Scalar::F32, &[bh, t, t])?;
        if bh * t == 0 {
            return Ok(());
        }
        self.gemm(&GemmOp::new(t, t, d).trans_b(true).batched(bh), q, k, p)?;
        self.softmax_fwd_launch(p, p, bh, t, scale)?;
        self.gemm(&GemmOp::new(t, d, t).batched(bh), p, v, o)
    }

    /// Backward of [`Ops::attention_fwd`] from the saved `p` and do [bh, t, d]:
    /// dq, dk, dv [bh, t, d] (overwritten). `ds` [bh, t, t] is workspace.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bwd(
        &self,
        q: &Buffer,
        k: &Buffer,
        v: &Buffer,
        p: &Buffer,
        d_o: &Buffer,
        dq: &mut Buffer,
        dk: &mut Buffer,
        dv: &mut Buffer,
        ds: &mut Buffer,
        bh: usize,
        t: usize,
        d: usize,
        scale: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "attention_bwd";
        for (name, b) in [
            ("q", q),
            ("k", k),
            ("v", v),
            ("do", d_o),
            ("dq", &*dq),
            ("dk", &*dk),
            ("dv", &*dv),
        ] {
            check(OP, name, b, Scalar::F32, &[bh, t, d])?;
        }
        check(OP, "p", p, Scalar::F32, &[bh, t, t])?;
        check(OP, "ds", ds, Scalar::F32, &[bh, t, t])?;
        if bh * t == 0 {
            return Ok(());
        }
        // dv = Pᵀ·do, dP = do·vᵀ (into ds), dS in place, dq = dS·k, dk = dSᵀ·q.
        self.gemm(&GemmOp::new(t, d, t).trans_a(true).batched(bh), p, d_o, dv)?;
        self.gemm(&GemmOp::new(t, t, d).trans_b(true).batched(bh), d_o, v, ds)?;
        self.softmax_bwd_launch(p, ds, ds, bh, t, scale)?;
        self.gemm(&GemmOp::new(t, d, t).batched(bh), ds, k, dq)?;
        self.gemm(&GemmOp::new(t, d, t).trans_a(true).batched(bh), ds, q, dk)
    }

    /// Whether [`Ops::flash_attention_fwd`] has kernels for head dimension
    /// `d` (the `D` values of flash_attention.tile's tune blocks, which the
    /// GPU pack holds); other head dimensions go through
    /// [`Ops::attention_fwd`].
    pub fn has_flash_attention(d: usize) -> bool {
        matches!(d, 64 | 128)
    }

    /// Causal attention without the scores, FlashAttention-2 style
    /// (`attention_lse` of flash_attention.tile), on the token-major tensors
    /// the model's GEMMs read and write, so no head is split or merged:
    /// `qkv` [batch·t, 3·heads·d] (bf16; q, k, v side by side, head h at
    /// columns h·d of each) → `o` [batch·t, heads·d] (bf16) and each query's
    /// log-sum-exp `lse` [batch·heads, t] (f32), all the backward keeps.
    /// Math in f32, dots in bf16 with f32 accumulation.
    #[allow(clippy::too_many_arguments)]
    pub fn flash_attention_fwd(
        &self,
        qkv: &Buffer,
        o: &mut Buffer,
        lse: &mut Buffer,
        batch: usize,
        t: usize,
        heads: usize,
        d: usize,
        scale: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "flash_attention_fwd";
        let f = FlashShape::new(OP, batch, t, heads, d)?;
        check(OP, "qkv", qkv, Scalar::BF16, &[f.rows, 3 * f.width])?;
        check(OP, "o", o, Scalar::BF16, &[f.rows, f.width])?;
        check(OP, "lse", lse, Scalar::F32, &[f.bh, t])?;
        if f.rows * heads == 0 {
            return Ok(());
        }
        let (bm, bn) = (FLASH_FWD_BM, FLASH_BN);
        self.launch(
            k::AttentionLseMeta {
                BM: bm,
                BN: bn,
                D: f.d,
                CAUSAL: 1,
            },
            FLASH_FWD_WARPS,
            [t.div_ceil(bm as usize), f.bh, 1],
            k::AttentionLse {
                qkv,
                o,
                lse,
                seq: f.seq,
                heads: f.heads,
                scale,
            },
        )
    }

    /// Backward of [`Ops::flash_attention_fwd`] from its `qkv`, `o` and
    /// `lse` and the output's gradient `d_o` [batch·t, heads·d] (bf16):
    /// `dqkv` [batch·t, 3·heads·d] (bf16, dq, dk, dv side by side as qkv
    /// holds q, k, v; overwritten), the QKV projection's output gradient.
    /// `delta` [batch·heads, t] (f32) is workspace: rowsum(dO ∘ O). Without
    /// `dq_acc`, no atomics (every element has one writer, so the gradients
    /// are bit-reproducible); with it ([batch·t, heads·d] f32 workspace),
    /// one pass over the keys that adds dQ into it atomically
    /// (`attention_bwd_fused`: five dots per block pair instead of seven).
    #[allow(clippy::too_many_arguments)]
    pub fn flash_attention_bwd(
        &self,
        qkv: &Buffer,
        o: &Buffer,
        lse: &Buffer,
        d_o: &Buffer,
        delta: &mut Buffer,
        dqkv: &mut Buffer,
        dq_acc: Option<&mut Buffer>,
        batch: usize,
        t: usize,
        heads: usize,
        d: usize,
        scale: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "flash_attention_bwd";
        let f = FlashShape::new(OP, batch, t, heads, d)?;
        for (name, b) in [("qkv", qkv), ("dqkv", &*dqkv)] {
            check(OP, name, b, Scalar::BF16, &[f.rows, 3 * f.width])?;
        }
        for (name, b) in [("o", o), ("do", d_o)] {
            check(OP, name, b, Scalar::BF16, &[f.rows, f.width])?;
        }
        check(OP, "lse", lse, Scalar::F32, &[f.bh, t])?;
        check(OP, "delta", delta, Scalar::F32, &[f.bh, t])?;
        if let Some(acc) = &dq_acc {
            check(OP, "dq_acc", acc, Scalar::F32, &[f.rows, f.width])?;
        }
        if f.rows * heads == 0 {
            return Ok(());
        }
        let (seq, heads) = (f.seq, f.heads);
        let (dq_bm, dkdv_bm, dkdv_bn, warps) = flash_bwd_tiles(f.d);
        let blocks = |b: i64| [t.div_ceil(b as usize), f.bh, 1];
        if let Some(dq_acc) = dq_acc {
            // delta and dq_acc zeroed; dK, dV and dQ's sums; dQ in bf16.
            // dK/dV's tiles (at d = 64, 128 keys on 8 warps would leave
            // dQ's 64 × 64 dot without a warpgroup grid: it is on 4 warps).
            let rows = k::AttentionBwdPrepMeta {
                BM: FLASH_BWD_BM,
                D: f.d,
            };
            self.launch(
                rows,
                4,
                blocks(FLASH_BWD_BM),
                k::AttentionBwdPrep {
                    o,
                    d_o,
                    delta,
                    dq_acc,
                    seq,
                    heads,
                },
            )?;
            self.launch(
                k::AttentionBwdFusedMeta {
                    BM: FLASH_BWD_BM,
                    BN: dkdv_bn,
                    D: f.d,
                    CAUSAL: 1,
                },
                warps,
                blocks(dkdv_bn),
                k::AttentionBwdFused {
                    qkv,
                    d_o,
                    lse,
                    delta,
                    dqkv,
                    dq_acc,
                    seq,
                    heads,
                    scale,
                },
            )?;
            return self.launch(
                k::AttentionBwdDqCastMeta {
                    BM: FLASH_BWD_BM,
                    D: f.d,
                },
                4,
                blocks(FLASH_BWD_BM),
                k::AttentionBwdDqCast {
                    dq_acc,
                    dqkv,
                    seq,
                    heads,
                },
            );
        }
        self.launch(
            k::AttentionBwdDeltaMeta {
                BM: FLASH_BWD_BM,
                D: f.d,
            },
            4,
            blocks(FLASH_BWD_BM),
            k::AttentionBwdDelta {
                o,
                d_o,
                delta,
                seq,
                heads,
            },
        )?;
        let delta = &*delta;
        // dK/dV steps over queries dkdv_bm at a time, dQ over keys
        // FLASH_BN at a time; they write disjoint columns of dqkv.
        self.launch(
            k::AttentionBwdDkdvMeta {
                BM: dkdv_bm,
                BN: dkdv_bn,
                D: f.d,
                CAUSAL: 1,
            },
            warps,
            blocks(dkdv_bn),
            k::AttentionBwdDkdv {
                qkv,
                d_o,
                lse,
                delta,
                dqkv,
                seq,
                heads,
                scale,
            },
        )?;
        self.launch(
            k::AttentionBwdDqMeta {
                BM: dq_bm,
                BN: FLASH_BN,
                D: f.d,
                CAUSAL: 1,
            },
            warps,
            blocks(dq_bm),
            k::AttentionBwdDq {
                qkv,
                d_o,
                lse,
                delta,
                dqkv,
                seq,
                heads,
                scale,
            },
        )
    }

    /// y = GELU(x) (tanh approximation) over n elements; y is f32, or bf16
    /// (rounded once); a bf16 x (a GEMM's bf16 output) gives a bf16 y.
    pub fn gelu_fwd(&self, x: &Buffer, y: &mut Buffer, n: usize) -> Result<(), OpsError> {
        const OP: &str = "gelu_fwd";
        if x.dtype() == Scalar::BF16 {
            check(OP, "x", x, Scalar::BF16, &[n])?;
            check(OP, "y", y, Scalar::BF16, &[n])?;
            return self.elementwise(n, |block| {
                Ok((
                    k::GeluFwdBf16Meta { BLOCK: block },
                    k::GeluFwdBf16 { x, y, n: n as i64 },
                ))
            });
        }
        check(OP, "x", x, Scalar::F32, &[n])?;
        if y.dtype() == Scalar::BF16 {
            check(OP, "y", y, Scalar::BF16, &[n])?;
            return self.elementwise(n, |block| {
                Ok((
                    k::GeluFwdToBf16Meta { BLOCK: block },
                    k::GeluFwdToBf16 { x, y, n: n as i64 },
                ))
            });
        }
        check(OP, "y", y, Scalar::F32, &[n])?;
        self.elementwise(n, |block| {
            Ok((
                k::GeluFwdMeta { BLOCK: block },
                k::GeluFwd { x, y, n: n as i64 },
            ))
        })
    }

    /// dx = GELU'(x) · dy, recomputed from x; dx is f32, or bf16 (rounded
    /// once); a bf16 x gives a bf16 dx.
    pub fn gelu_bwd(
        &self,
        x: &Buffer,
        dy: &Buffer,
        dx: &mut Buffer,
        n: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "gelu_bwd";
        check(OP, "dy", dy, Scalar::F32, &[n])?;
        if x.dtype() == Scalar::BF16 {
            check(OP, "x", x, Scalar::BF16, &[n])?;
            check(OP, "dx", dx, Scalar::BF16, &[n])?;
            return self.elementwise(n, |block| {
                Ok((
                    k::GeluBwdBf16Meta { BLOCK: block },
                    k::GeluBwdBf16 {
                        x,
                        dy,
                        dx,
                        n: n as i64,
                    },
                ))
            });
        }
        check(OP, "x", x, Scalar::F32, &[n])?;
        if dx.dtype() == Scalar::BF16 {
            check(OP, "dx", dx, Scalar::BF16, &[n])?;
            return self.elementwise(n, |block| {
                Ok((
                    k::GeluBwdToBf16Meta { BLOCK: block },
                    k::GeluBwdToBf16 {
                        x,
                        dy,
                        dx,
                        n: n as i64,
                    },
                ))
            });
        }
        check(OP, "dx", dx, Scalar::F32, &[n])?;
        self.elementwise(n, |block| {
            Ok((
                k::GeluBwdMeta { BLOCK: block },
                k::GeluBwd {
                    x,
                    dy,
                    dx,
                    n: n as i64,
                },
            ))
        })
    }

    /// [`Ops::gelu_bwd`] on bf16 x and dy with a bf16 dx, and GELU's output
    /// y = GELU(x) (bf16, as [`Ops::gelu_fwd`] of a bf16 x gives it) made
    /// again in the same pass, for a backward that did not keep it.
    pub fn gelu_bwd_regen(
        &self,
        x: &Buffer,
        dy: &Buffer,
        dx: &mut Buffer,
        y: &mut Buffer,
        n: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "gelu_bwd_regen";
        check(OP, "x", x, Scalar::BF16, &[n])?;
        check(OP, "dy", dy, Scalar::BF16, &[n])?;
        check(OP, "dx", dx, Scalar::BF16, &[n])?;
        check(OP, "y", y, Scalar::BF16, &[n])?;
        self.elementwise(n, |block| {
            Ok((
                k::GeluBwdRegenBf16Meta { BLOCK: block },
                k::GeluBwdRegenBf16 {
                    x,
                    dy,
                    dx,
                    y,
                    n: n as i64,
                },
            ))
        })
    }

    /// Cross-entropy of logits [rows, vocab] against i32 targets: loss[r] =
    /// logsumexp(logits[r]) − logits[r, target]; with `dlogits`, also
    /// dlogits = (softmax − onehot) · grad_scale (1/rows for the mean loss,
    /// whose value [`Ops::sum`] gives with scale 1/rows). A target outside
    /// [0, vocab) gives NaN loss and gradient for its row.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy(
        &self,
        logits: &Buffer,
        targets: &Buffer,
        loss: &mut Buffer,
        dlogits: Option<&mut Buffer>,
        rows: usize,
        vocab: usize,
        grad_scale: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "cross_entropy";
        check(OP, "logits", logits, Scalar::F32, &[rows, vocab])?;
        check(OP, "targets", targets, Scalar::I32, &[rows])?;
        check(OP, "loss", loss, Scalar::F32, &[rows])?;
        if let Some(d) = &dlogits {
            check(OP, "dlogits", d, Scalar::F32, &[rows, vocab])?;
        }
        let grad = dlogits.is_some() as i64;
        let d: &Buffer = match &dlogits {
            Some(d) => d,
            // GRAD = 0 never stores through it.
            None => logits,
        };
        self.launch_rows(rows, vocab, |block| {
            Ok((
                k::CrossEntropyMeta {
                    BLOCK: block,
                    GRAD: grad,
                },
                k::CrossEntropy {
                    logits,
                    targets,
                    loss,
                    dlogits: d,
                    V: int(OP, vocab)?,
                    grad_scale,
                    nan: f32::NAN,
                },
            ))
        })
    }

    /// One AdamW step (1-based `step`, for the bias corrections) on n
    /// parameters `p` with gradient `g` and moments `m`, `v`. `stats` holds
    /// the step's loss and the gradients' squared global norm (written on
    /// the device): the gradient is scaled to a norm of at most `clip` (when
    /// `clip` > 0), and nothing changes when either is not finite. With
    /// `p16` (bf16 [n]), p's bf16 copy is written in the same pass: p after
    /// the step, rounded (skipped or not).
    #[allow(clippy::too_many_arguments)]
    pub fn adamw(
        &self,
        p: &mut Buffer,
        g: &Buffer,
        m: &mut Buffer,
        v: &mut Buffer,
        p16: Option<&mut Buffer>,
        n: usize,
        hp: &AdamW,
        step: u64,
        stats: &Buffer,
        clip: f32,
    ) -> Result<(), OpsError> {
        const OP: &str = "adamw";
        for (name, b) in [("p", &*p), ("g", g), ("m", &*m), ("v", &*v)] {
            check(OP, name, b, Scalar::F32, &[n])?;
        }
        check(OP, "stats", stats, Scalar::F32, &[2])?;
        if let Some(p16) = &p16 {
            check(OP, "p16", p16, Scalar::BF16, &[n])?;
        }
        if step == 0 {
            return Err(OpsError::Shape {
                op: OP,
                message: "steps count from 1".into(),
            });
        }
        let exp = step.min(i32::MAX as u64) as i32;
        let bc1 = (1.0 - (hp.beta1 as f64).powi(exp)) as f32;
        let bc2 = (1.0 - (hp.beta2 as f64).powi(exp)) as f32;
        let (lr, beta1, beta2, eps, wd, n64) =
            (hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, n as i64);
        if let Some(p16) = p16 {
            let a = k::AdamwBf16 {
                p,
                g,
                m,
                v,
                p16,
                n: n64,
                lr,
                beta1,
                beta2,
                eps,
                wd,
                bc1,
                bc2,
                stats,
                clip,
            };
            return self.elementwise(n, |block| Ok((k::AdamwBf16Meta { BLOCK: block }, a)));
        }
        let a = k::Adamw {
            p,
            g,
            m,
            v,
            n: n64,
            lr,
            beta1,
            beta2,
            eps,
            wd,
            bc1,
            bc2,
            stats,
            clip,
        };
        self.elementwise(n, |block| Ok((k::AdamwMeta { BLOCK: block }, a)))
    }
}

/// The checks a norm forward shares: the gain `w` [n], `y` [rows, n] in f32
/// or bf16, `rstd` [rows]; returns whether y is bf16, and n as the kernels'
/// i32.
fn check_norm_fwd(
    op: &'static str,
    w: &Buffer,
    y: &Buffer,
    rstd: &Buffer,
    rows: usize,
    n: usize,
) -> Result<(bool, i32), OpsError> {
    check(op, "w", w, Scalar::F32, &[n])?;
    let half = y.dtype() == Scalar::BF16;
    let y_type = if half { Scalar::BF16 } else { Scalar::F32 };
    check(op, "y", y, y_type, &[rows, n])?;
    check(op, "rstd", rstd, Scalar::F32, &[rows])?;
    Ok((half, int(op, n)?))
}

/// The fused attention's blocks (configs of flash_attention.tile's tune
/// blocks): queries per program of the forward and of the backward, keys per
/// step (and per dK/dV program).
const FLASH_FWD_BM: i64 = 128;
/// Two warpgroups of 64 queries each for the forward (one of 128 needs 176
/// registers a thread against 127, and twice the instructions a warp).
const FLASH_FWD_WARPS: u32 = 8;
const FLASH_BWD_BM: i64 = 64;
const FLASH_BN: i64 = 64;

/// The backward's tiles for head dimension `d`: (queries per dQ program,
/// queries per step of the deterministic dK/dV kernel, keys per dK/dV
/// program, warps). At d = 128, two warpgroups share each loaded tile (dQ
/// over 128 queries, dK/dV over 128 keys, 8 warps): on the H200 the causal
/// forward + backward at 32 heads × 4096 × 128 took 2.02 ms against 2.86 ms
/// on 4 warps; at d = 64 the causal rows favour 4 warps (docs/BENCHMARKS.md,
/// session 17), and dK/dV steps over 32 queries (at the 86M trainer's
/// causal shape, batch 16: 0.207 ms against 0.233 for 64; H100, session 32).
fn flash_bwd_tiles(d: i64) -> (i64, i64, i64, u32) {
    if d >= 128 {
        (128, FLASH_BWD_BM, 128, 8)
    } else {
        (FLASH_BWD_BM, 32, FLASH_BN, 4)
    }
}

/// A fused attention's shape: its tensors' rows (batch·t) and width
/// (heads·d), the programs' head slices (batch·heads), and `t`, `heads`
/// and `d` as the kernels' arguments, for a head dimension they have. A
/// sequence starts at a 64-bit offset, so the tensors may pass 2³¹
/// elements; offsets inside one must not (t · 3 · heads · d < 2³¹).
struct FlashShape {
    rows: usize,
    width: usize,
    bh: usize,
    seq: i32,
    heads: i32,
    d: i64,
}

impl FlashShape {
    fn new(
        op: &'static str,
        batch: usize,
        t: usize,
        heads: usize,
        d: usize,
    ) -> Result<FlashShape, OpsError> {
        if !Ops::has_flash_attention(d) {
            return Err(OpsError::Shape {
                op,
                message: format!(
                    "no fused attention kernel for head dimension {d} (only 64 and 128)"
                ),
            });
        }
        elements(op, &[batch, t, 3, heads, d])?;
        int(op, elements(op, &[t, 3, heads, d])?)?;
        Ok(FlashShape {
            rows: batch * t,
            width: heads * d,
            bh: batch * heads,
            seq: int(op, t)?,
            heads: int(op, heads)?,
            d: d as i64,
        })
    }
}

/// The rows of `tokens` grouped by token (a stable counting sort): rows with
/// token v are `grouped[starts[v]..starts[v + 1]]`, in increasing order;
/// tokens outside [0, vocab) are left out.
fn group_rows_by_token(tokens: &[i32], vocab: usize) -> (Vec<i32>, Vec<i32>) {
    let valid = |t: i32| usize::try_from(t).ok().filter(|&t| t < vocab);
    let mut starts = vec![0i32; vocab + 1];
    for &t in tokens {
        if let Some(t) = valid(t) {
            starts[t + 1] += 1;
        }
    }
    for v in 0..vocab {
        starts[v + 1] += starts[v];
    }
    let mut next: Vec<i32> = starts[..vocab].to_vec();
    let mut grouped = vec![0i32; starts[vocab] as usize];
    for (r, &t) in tokens.iter().enumerate() {
        if let Some(t) = valid(t) {
            grouped[next[t] as usize] = r as i32;
            next[t] += 1;
        }
    }
    (grouped, starts)
}

#[cfg(test)]
mod tests {
    use super::group_rows_by_token;

    #[test]
    fn rows_are_grouped_by_token_in_order_without_invalid_tokens() {
        let (grouped, starts) = group_rows_by_token(&[2, 0, 2, -1, 7, 1, 0, 2], 3);
        assert_eq!(starts, vec![0, 2, 3, 6]);
        assert_eq!(grouped, vec![1, 6, 5, 0, 2, 7]);
        let (grouped, starts) = group_rows_by_token(&[], 2);
        assert_eq!((grouped, starts), (vec![], vec![0, 0, 0]));
    }
}
