//! Attention in f64 for the tests of dsl-examples/attention_bwd.tile (the
//! interpreter's and the GPU's): one head's forward (P, O, the row
//! log-sum-exp), the exact gradients of L = Σ O ∘ dO, and per output the
//! bound the kernels' bf16 roundings and f32 arithmetic stay within.
#![allow(non_snake_case)]

/// Half a bf16 ulp, relative: one rounding to bf16.
pub const B: f64 = 1.0 / 256.0;
/// Slack for the f32 arithmetic around the bf16 roundings (exp, the GPU's
/// `ex2.approx` at 2^-22, sums of up to seq terms, lse): 2^-16 of the
/// magnitudes involved, far above their ~seq·2^-24 and far below B.
pub const F: f64 = 1.0 / 65536.0;

/// One head's sequence length and head dimension.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub seq: usize,
    pub d: usize,
}

/// One head's attention in f64, with what the backward and the bounds need.
pub struct Head {
    /// P (softmax rows), O, lse.
    pub p: Vec<Vec<f64>>,
    pub o: Vec<f64>,
    pub lse: Vec<f64>,
}

pub fn forward(q: &[f64], k: &[f64], v: &[f64], shape: Shape, causal: bool, scale: f64) -> Head {
    let Shape { seq: SEQ, d: D } = shape;
    let mut p = vec![vec![0.0; SEQ]; SEQ];
    let mut o = vec![0.0; SEQ * D];
    let mut lse = vec![0.0; SEQ];
    for i in 0..SEQ {
        let keys = if causal { i + 1 } else { SEQ };
        let s: Vec<f64> = (0..keys)
            .map(|j| (0..D).map(|c| q[i * D + c] * k[j * D + c]).sum::<f64>() * scale)
            .collect();
        let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let l: f64 = s.iter().map(|x| (x - mx).exp()).sum();
        lse[i] = mx + l.ln();
        for j in 0..keys {
            p[i][j] = (s[j] - lse[i]).exp();
        }
        for c in 0..D {
            o[i * D + c] = (0..keys).map(|j| p[i][j] * v[j * D + c]).sum();
        }
    }
    Head { p, o, lse }
}

/// Exact gradients of L = Σ O ∘ dO, and each output's bound for the
/// kernels' (bf16 P and dS before their dots, delta from the bf16 O, bf16
/// outputs, f32 arithmetic). The roundings of P and dS are independent per
/// term, each within B of its value (uniform: σ = B/√3): within 6σ of their
/// sum's spread, never past their worst case (`Bound::rounding`). Delta's
/// error e_i (from O's) is one number per query row: in dQ_i it is
/// e_i·|Σ_j P_ij K_j|, in dK_j at most Σ_i P_ij e_i |Q_i|. Plus F of every
/// term's magnitude and B of the output (its own rounding).
pub struct Grads {
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
    pub bq: Vec<f64>,
    pub bk: Vec<f64>,
    pub bv: Vec<f64>,
}

/// One output's error terms, accumulated over its sum.
#[derive(Clone, Copy, Default)]
pub struct Bound {
    /// Independent roundings: worst case and sum of squares.
    pub worst: f64,
    pub squares: f64,
    /// Correlated or systematic parts, and the F slack.
    pub other: f64,
}

impl Bound {
    pub fn rounding(&mut self, err: f64) {
        self.worst += err.abs();
        self.squares += err * err;
    }
    pub fn total(&self, value: f64) -> f64 {
        let sigma = (self.squares / 3.0).sqrt();
        (6.0 * sigma).min(self.worst) + self.other + B * value.abs() + 1e-12
    }
}

pub fn backward(
    h: &Head,
    [q, k, v, d_o]: [&[f64]; 4],
    o_err: &[f64],
    shape: Shape,
    scale: f64,
    with_delta: bool,
) -> Grads {
    let Shape { seq: SEQ, d: D } = shape;
    let z = || vec![0.0; SEQ * D];
    let zb = || vec![Bound::default(); SEQ * D];
    let (mut dq, mut dk, mut dv) = (z(), z(), z());
    let (mut bq, mut bk, mut bv) = (zb(), zb(), zb());
    for i in 0..SEQ {
        let delta: f64 = if with_delta {
            (0..D).map(|c| d_o[i * D + c] * h.o[i * D + c]).sum()
        } else {
            0.0
        };
        // delta from the kernel's O: off by at most Σ|dO|·(O's error), plus f32 sums.
        let e: f64 = (0..D)
            .map(|c| d_o[i * D + c].abs() * (o_err[i * D + c] + F * h.o[i * D + c].abs()))
            .sum();
        let mut pk = vec![0.0; D];
        for j in 0..SEQ {
            let p = h.p[i][j];
            if p == 0.0 {
                continue;
            }
            let dp: f64 = (0..D).map(|c| d_o[i * D + c] * v[j * D + c]).sum();
            let ds = p * (dp - delta);
            let slack = F * (ds.abs() + p * (dp.abs() + delta.abs()));
            for c in 0..D {
                let (qv, kv, dov) = (q[i * D + c], k[j * D + c], d_o[i * D + c]);
                dv[j * D + c] += p * dov;
                bv[j * D + c].rounding(B * p * dov);
                bv[j * D + c].other += F * (p * dov).abs();
                dk[j * D + c] += scale * ds * qv;
                bk[j * D + c].rounding(B * scale * ds * qv);
                bk[j * D + c].other += scale * (p * e + slack) * qv.abs();
                dq[i * D + c] += scale * ds * kv;
                bq[i * D + c].rounding(B * scale * ds * kv);
                bq[i * D + c].other += scale * slack * kv.abs();
                pk[c] += p * kv;
            }
        }
        for c in 0..D {
            bq[i * D + c].other += scale * e * pk[c].abs();
        }
    }
    let total = |b: &[Bound], g: &[f64]| b.iter().zip(g).map(|(b, g)| b.total(*g)).collect();
    Grads {
        bq: total(&bq, &dq),
        bk: total(&bk, &dk),
        bv: total(&bv, &dv),
        dq,
        dk,
        dv,
    }
}

/// Each element's bound for the forward's output O (`p as bf16` before the
/// second dot, then O's own rounding), the part of delta's error it causes.
pub fn output_bounds(h: &Head, v: &[f64], shape: Shape) -> Vec<f64> {
    let Shape { seq: SEQ, d: D } = shape;
    (0..SEQ * D)
        .map(|x| {
            let (i, c) = (x / D, x % D);
            let mut b = Bound::default();
            for j in 0..SEQ {
                let pv = h.p[i][j] * v[j * D + c];
                b.rounding(B * pv);
                b.other += F * pv.abs();
            }
            b.total(h.o[x])
        })
        .collect()
}

/// What the training chain wrote, all heads: O, lse, delta, dQ, dK, dV.
pub struct Outputs<'a> {
    pub o: &'a [f64],
    pub lse: &'a [f64],
    pub delta: &'a [f64],
    pub dq: &'a [f64],
    pub dk: &'a [f64],
    pub dv: &'a [f64],
}

/// Checks head `hd` of a chain's outputs against the f64 reference of its
/// inputs `[q, k, v, dO]` (that head's): every element within its bound
/// (lse: f32 max, exp sums and a log; delta: f32 sums of D products of the
/// kernel's own bf16 O, exact in f64). Returns the reference and its
/// gradients, for further checks.
pub fn check_head(
    what: &str,
    hd: usize,
    [q, k, v, d_o]: [&[f64]; 4],
    got: &Outputs,
    shape: Shape,
    causal: bool,
    scale: f64,
) -> (Head, Vec<f64>, Grads) {
    let Shape { seq, d } = shape;
    let h = forward(q, k, v, shape, causal, scale);
    let o_err = output_bounds(&h, v, shape);
    let off = hd * seq * d;
    for (x, bound) in o_err.iter().enumerate() {
        let g = got.o[off + x];
        assert!(
            (g - h.o[x]).abs() <= *bound,
            "{what} O[{hd}, {x}]: {g} vs {} (bound {bound:.2e})",
            h.o[x]
        );
    }
    for i in 0..seq {
        let (g, w) = (got.lse[hd * seq + i], h.lse[i]);
        assert!(
            (g - w).abs() <= F * (1.0 + w.abs()),
            "{what} lse[{hd}, {i}]: {g} vs {w}"
        );
        let terms = (0..d).map(|c| d_o[i * d + c] * got.o[off + i * d + c]);
        let (want, mag) = terms.fold((0.0, 0.0), |(s, m), t: f64| (s + t, m + t.abs()));
        let g = got.delta[hd * seq + i];
        assert!(
            (g - want).abs() <= F * mag + 1e-12,
            "{what} delta[{hd}, {i}]: {g} vs {want}"
        );
    }
    let r = backward(&h, [q, k, v, d_o], &o_err, shape, scale, true);
    for (name, got, want, bound) in [
        ("dQ", got.dq, &r.dq, &r.bq),
        ("dK", got.dk, &r.dk, &r.bk),
        ("dV", got.dv, &r.dv, &r.bv),
    ] {
        for x in 0..seq * d {
            let g = got[off + x];
            assert!(
                (g - want[x]).abs() <= bound[x],
                "{what} {name}[{hd}, {x}]: {g} vs f64 {} (bound {:.2e})",
                want[x],
                bound[x]
            );
        }
    }
    (h, o_err, r)
}

/// The kernels' token-major layout: per-head tensors `xs`, each
/// [batch·heads, seq, d] (slice b·heads + h), side by side in one
/// [batch·seq, xs.len()·heads·d] tensor, head h at columns h·d of each
/// (q, k, v as the QKV projection writes them; one tensor: o, dO).
pub fn token_major<T: Copy + Default>(
    xs: &[&[T]],
    batch: usize,
    heads: usize,
    shape: Shape,
) -> Vec<T> {
    let mut out = vec![T::default(); batch * shape.seq * xs.len() * heads * shape.d];
    for (slot, x) in xs.iter().enumerate() {
        for (i, &v) in x.iter().enumerate() {
            out[token_index(i, xs.len(), slot, heads, shape)] = v;
        }
    }
    out
}

/// Tensor `slot` of a token-major tensor of `slots` (see [`token_major`]),
/// per head: [batch·heads, seq, d].
pub fn head_major<T: Copy>(
    x: &[T],
    slots: usize,
    slot: usize,
    batch: usize,
    heads: usize,
    shape: Shape,
) -> Vec<T> {
    (0..batch * heads * shape.seq * shape.d)
        .map(|i| x[token_index(i, slots, slot, heads, shape)])
        .collect()
}

/// Where element `i` of per-head tensor `slot` ([batch·heads, seq, d])
/// lies in the token-major tensor of `slots` (see [`token_major`]).
fn token_index(i: usize, slots: usize, slot: usize, heads: usize, shape: Shape) -> usize {
    let (t, d) = (shape.seq, shape.d);
    let (bh, r, e) = (i / (t * d), i / d % t, i % d);
    let (b, h) = (bh / heads, bh % heads);
    ((b * t + r) * slots + slot) * heads * d + h * d + e
}
