//! f64 reference of one mHC / HC site (../shared/mhc-spec.md), the oracle of the
//! kernel tests: the forward in f64 on the same (bf16-valued) inputs, and the
//! loss `L = <g_out, x'> + <g_h, h_in>` whose central finite differences check
//! the kernels' backward.

use crate::layer::Mixing;

/// One site's inputs, every value as f64 (bf16 inputs already rounded).
#[derive(Clone, Debug)]
pub struct Site {
    pub kind: Mixing,
    pub t: usize,
    pub n: usize,
    pub c: usize,
    /// [T, n, C]
    pub x: Vec<f64>,
    /// [T, C]
    pub y: Vec<f64>,
    /// mHC: [n²+2n, n·C]; HC: [n+2, C]
    pub phi: Vec<f64>,
    pub alpha: [f64; 3],
    /// [n²+2n]
    pub b: Vec<f64>,
    pub iters: usize,
    pub eps: f64,
}

/// The forward's values.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Coefficients per token, [T, n²+2n] in the pack's layout.
    pub h: Vec<f64>,
    /// [T, C]
    pub h_in: Vec<f64>,
    /// [T, n, C]
    pub x_out: Vec<f64>,
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Sinkhorn-Knopp of exp(m - max m), `iters` column-then-row normalisations.
pub fn sinkhorn(m: &[f64], n: usize, iters: usize, eps: f64) -> Vec<f64> {
    let mx = m.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut p: Vec<f64> = m.iter().map(|v| (v - mx).exp()).collect();
    for _ in 0..iters {
        for i in 0..n {
            let s: f64 = (0..n).map(|j| p[j * n + i]).sum::<f64>() + eps;
            (0..n).for_each(|j| p[j * n + i] /= s);
        }
        for j in 0..n {
            let s: f64 = p[j * n..(j + 1) * n].iter().sum::<f64>() + eps;
            p[j * n..(j + 1) * n].iter_mut().for_each(|v| *v /= s);
        }
    }
    p
}

impl Site {
    pub fn r_count(&self) -> usize {
        self.n * self.n + 2 * self.n
    }

    /// The coefficients of token `t`.
    fn coeffs(&self, t: usize) -> Vec<f64> {
        let (n, c) = (self.n, self.c);
        let r_count = self.r_count();
        let xt = &self.x[t * n * c..(t + 1) * n * c];
        let mut h = vec![0.0; r_count];
        match self.kind {
            Mixing::Mhc => {
                let k = n * c;
                let ss: f64 = xt.iter().map(|v| v * v).sum();
                let r = 1.0 / (ss / k as f64 + 1e-6).sqrt();
                let z: Vec<f64> = (0..r_count)
                    .map(|row| (0..k).map(|j| self.phi[row * k + j] * xt[j]).sum())
                    .collect();
                let m = |i: usize, g: usize| r * z[i] * self.alpha[g] + self.b[i];
                for i in 0..n {
                    h[i] = sigmoid(m(i, 0));
                    h[n + i] = 2.0 * sigmoid(m(n + i, 1));
                }
                let logits: Vec<f64> = (0..n * n).map(|i| m(2 * n + i, 2)).collect();
                h[2 * n..].copy_from_slice(&sinkhorn(&logits, n, self.iters, self.eps));
            }
            Mixing::Hc => {
                for i in 0..n {
                    let xi = &xt[i * c..(i + 1) * c];
                    let ss: f64 = xi.iter().map(|v| v * v).sum();
                    let r = 1.0 / (ss / c as f64 + 1e-6).sqrt();
                    let proj = |row: usize| -> f64 {
                        r * (0..c).map(|q| self.phi[row * c + q] * xi[q]).sum::<f64>()
                    };
                    h[i] = self.alpha[0] * proj(0).tanh() + self.b[i];
                    h[n + i] = self.alpha[1] * proj(1).tanh() + self.b[n + i];
                    for j in 0..n {
                        let at = 2 * n + j * n + i;
                        h[at] = self.alpha[2] * proj(2 + j).tanh() + self.b[at];
                    }
                }
            }
        }
        h
    }

    pub fn forward(&self) -> Forward {
        let (n, c) = (self.n, self.c);
        let r_count = self.r_count();
        let mut h = vec![0.0; self.t * r_count];
        let mut h_in = vec![0.0; self.t * c];
        let mut x_out = vec![0.0; self.t * n * c];
        for t in 0..self.t {
            let ht = self.coeffs(t);
            let xt = &self.x[t * n * c..(t + 1) * n * c];
            for q in 0..c {
                h_in[t * c + q] = (0..n).map(|i| ht[i] * xt[i * c + q]).sum();
                for j in 0..n {
                    let mix: f64 = (0..n).map(|i| ht[2 * n + j * n + i] * xt[i * c + q]).sum();
                    x_out[(t * n + j) * c + q] = mix + ht[n + j] * self.y[t * c + q];
                }
            }
            h[t * r_count..(t + 1) * r_count].copy_from_slice(&ht);
        }
        Forward { h, h_in, x_out }
    }

    /// `<g_out, x'> + <g_h, h_in>`: the scalar whose gradient the backward computes.
    pub fn loss(&self, g_out: &[f64], g_h: &[f64]) -> f64 {
        let f = self.forward();
        let a: f64 = f.x_out.iter().zip(g_out).map(|(a, b)| a * b).sum();
        let b: f64 = f.h_in.iter().zip(g_h).map(|(a, b)| a * b).sum();
        a + b
    }
}

/// Which input tensor a finite difference perturbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrt {
    X,
    Y,
    Phi,
    Alpha,
    B,
}

/// Central finite difference of [`Site::loss`] with respect to one element.
pub fn finite_difference(site: &Site, wrt: Wrt, index: usize, g_out: &[f64], g_h: &[f64]) -> f64 {
    let value = |s: &Site| match wrt {
        Wrt::X => s.x[index],
        Wrt::Y => s.y[index],
        Wrt::Phi => s.phi[index],
        Wrt::Alpha => s.alpha[index],
        Wrt::B => s.b[index],
    };
    let set = |s: &mut Site, v: f64| match wrt {
        Wrt::X => s.x[index] = v,
        Wrt::Y => s.y[index] = v,
        Wrt::Phi => s.phi[index] = v,
        Wrt::Alpha => s.alpha[index] = v,
        Wrt::B => s.b[index] = v,
    };
    let v0 = value(site);
    // f64 forward: truncation O(step²) and rounding O(1e-16 / step) both ≈ 1e-10 here.
    let step = 1e-5 * v0.abs().max(1.0);
    let mut s = site.clone();
    set(&mut s, v0 + step);
    let up = s.loss(g_out, g_h);
    set(&mut s, v0 - step);
    let down = s.loss(g_out, g_h);
    (up - down) / (2.0 * step)
}
