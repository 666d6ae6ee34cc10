//! Helpers shared by the mHC tests: random sites, uploads, NaN-filled
//! outputs, tolerance checks.
#![allow(dead_code)]

use half::bf16;
use mhc::kernels::KernelSet;
use mhc::layer::LayerError;
use mhc::layer::{Layer, Mixing, Params, Saved, SiteConfig};
use mhc::reference::{finite_difference, Site, Wrt};
use mhc::stack::{default_block_len, Stack, Sublayer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tile_runtime::{Buffer, Device, Scalar};

#[allow(unused_imports)]
pub use tile_testkit::{download, gpu_or_skip, nan_buffer, packs_dir as pack_dir};

/// A fresh random seed (or `$TILE_TEST_SEED`), printed.
pub fn seed() -> u64 {
    tile_testkit::seed("")
}

pub fn cpu_kernels() -> Arc<KernelSet> {
    Arc::new(KernelSet::from_sources(Arc::new(Device::cpu())).expect("embedded sources compile"))
}

pub fn round_bf16(v: Vec<f32>) -> Vec<f64> {
    v.into_iter().map(|x| bf16::from_f32(x).to_f64()).collect()
}

pub fn gaussian(rng: &mut StdRng, len: usize, std: f32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos() * std
        })
        .collect()
}

pub fn upload_bf16(dev: &Device, v: &[f64]) -> Buffer {
    let h: Vec<bf16> = v.iter().map(|x| bf16::from_f64(*x)).collect();
    dev.upload(&h).unwrap()
}

/// A random site: inputs far from the plain-residual initialisation (α ≈ 1,
/// random biases) so every coefficient path is exercised.
pub fn random_site(mixing: Mixing, t: usize, n: usize, c: usize, rng: &mut StdRng) -> Site {
    let cfg = SiteConfig::new(mixing, n, c);
    let r = cfg.coeffs();
    let phi_std = 1.0 / (cfg.proj_cols() as f32).sqrt();
    Site {
        kind: mixing,
        t,
        n,
        c,
        x: round_bf16(gaussian(rng, t * n * c, 1.0)),
        y: round_bf16(gaussian(rng, t * c, 1.0)),
        phi: gaussian(rng, cfg.proj_rows() * cfg.proj_cols(), phi_std)
            .into_iter()
            .map(f64::from)
            .collect(),
        alpha: [0.0; 3].map(|_| rng.random_range(0.5..1.5)),
        b: gaussian(rng, r, 0.5).into_iter().map(f64::from).collect(),
        iters: 20,
        eps: 1e-6,
    }
}

pub fn params(dev: &Device, s: &Site) -> Params {
    let f = |v: &[f64]| {
        dev.upload(&v.iter().map(|x| *x as f32).collect::<Vec<f32>>())
            .unwrap()
    };
    Params {
        proj: f(&s.phi),
        alpha: f(&s.alpha),
        b: f(&s.b),
    }
}

pub fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Checks `got` against `want` elementwise: |got − want| ≤ rel·|want| + abs_of_max·max|want|.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64, abs_of_max: f64) {
    assert_close_plus(what, got, want, rel, abs_of_max, &[]);
}

/// [`assert_close`] with `extra[i]` added to element i's tolerance (none
/// where `extra` is shorter).
pub fn assert_close_plus(
    what: &str,
    got: &[f64],
    want: &[f64],
    rel: f64,
    abs_of_max: f64,
    extra: &[f64],
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = max_abs(want);
    let mut worst = (0.0, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = rel * w.abs() + abs_of_max * scale + extra.get(i).copied().unwrap_or(0.0);
        assert!(
            err <= tol && g.is_finite(),
            "{what}[{i}]: got {g}, want {w} (|err| {err:.3e} > tol {tol:.3e})"
        );
        if err > worst.0 {
            worst = (err, i);
        }
    }
    eprintln!(
        "{what}: max |err| {:.2e} at {} (scale {scale:.2e})",
        worst.0, worst.1
    );
}

/// A site's inputs uploaded to the device of a kernel set.
pub struct Run {
    pub ks: Arc<KernelSet>,
    pub site: Site,
    pub layer: Layer,
    pub x: Buffer,
    pub y: Buffer,
    pub p: Params,
}

impl Run {
    pub fn new(ks: &Arc<KernelSet>, site: Site) -> Run {
        let dev = ks.device();
        let layer = Layer::new(ks.clone(), SiteConfig::new(site.kind, site.n, site.c)).unwrap();
        Run {
            x: upload_bf16(dev, &site.x),
            y: upload_bf16(dev, &site.y),
            p: params(dev, &site),
            ks: ks.clone(),
            layer,
            site,
        }
    }

    pub fn dev(&self) -> &Device {
        self.ks.device()
    }
}

/// [`Saved`] buffers filled with NaN.
pub fn nan_saved(layer: &Layer, t: usize) -> Saved {
    let s = layer.alloc_saved(t).unwrap();
    let dev = layer.kernels().device();
    Saved {
        t,
        z: nan_buffer(dev, Scalar::F32, s.z.len()),
        r: nan_buffer(dev, Scalar::F32, s.r.len()),
        h: nan_buffer(dev, Scalar::F32, s.h.len()),
    }
}

/// Every output of a site's forward and backward (outputs NaN-filled first,
/// parameter gradients accumulated onto zeros), downloaded as f64.
pub fn site_outputs(run: &Run, g_out: &[f64], g_h: &[f64]) -> Vec<(&'static str, Vec<f64>)> {
    let dev = run.dev();
    let (t, n, c) = (run.site.t, run.site.n, run.site.c);
    let r = n * n + 2 * n;
    let mut saved = nan_saved(&run.layer, t);
    let mut h_in = nan_buffer(dev, Scalar::BF16, t * c);
    run.layer
        .pre_into(&run.p, &run.x, &mut saved, &mut h_in)
        .unwrap();
    let mut x_out = nan_buffer(dev, Scalar::BF16, t * n * c);
    run.layer
        .post_into(&saved, &run.x, &run.y, &mut x_out)
        .unwrap();
    let mut g_x = nan_buffer(dev, Scalar::BF16, t * n * c);
    let mut dy = nan_buffer(dev, Scalar::BF16, t * c);
    let mut dh = nan_buffer(dev, Scalar::F32, t * r);
    let g_out = upload_bf16(dev, g_out);
    run.layer
        .post_backward_into(&saved, &run.x, &run.y, &g_out, &mut g_x, &mut dy, &mut dh)
        .unwrap();
    let mut grads = run.layer.zero_grads().unwrap();
    let g_h = upload_bf16(dev, g_h);
    run.layer
        .pre_backward(&run.p, &saved, &run.x, &g_h, &mut g_x, &mut dh, &mut grads)
        .unwrap();
    vec![
        ("z", download(dev, &saved.z)),
        ("r", download(dev, &saved.r)),
        ("h", download(dev, &saved.h)),
        ("h_in", download(dev, &h_in)),
        ("x_out", download(dev, &x_out)),
        ("dh", download(dev, &dh)),
        ("g_x", download(dev, &g_x)),
        ("dy", download(dev, &dy)),
        ("d_proj", download(dev, &grads.proj)),
        ("d_alpha", download(dev, &grads.alpha)),
        ("d_b", download(dev, &grads.b)),
    ]
}

/// Σ over tokens of |each token's share| of the parameter gradients summed
/// over tokens: `d_alpha` (3 values) and, for mHC, `d_b` (one per
/// coefficient; empty for HC). Those sums cancel heavily (e.g. d_alpha[1] =
/// 2.85 from shares of magnitude 887 at n = 8), so two orders of the same f32
/// sums differ relative to these magnitudes, not to the result. `dh` is the
/// run's full ∂L/∂H (site_outputs' "dh"). The kernels sum a program's tokens
/// before anything leaves the chip, so each token's share comes from the
/// gates' backward of a one-token site (its sums are its shares).
pub fn gate_share_magnitudes(run: &Run, dh: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (dev, t) = (run.dev(), run.site.t);
    let mut saved = nan_saved(&run.layer, t);
    let mut h_in = nan_buffer(dev, Scalar::BF16, t * run.site.c);
    run.layer
        .pre_into(&run.p, &run.x, &mut saved, &mut h_in)
        .unwrap();
    let (z, r, h) = (
        download(dev, &saved.z),
        download(dev, &saved.r),
        download(dev, &saved.h),
    );
    let up = |v: &[f64]| {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        dev.upload(&v).unwrap()
    };
    fn token(v: &[f64], t: usize, k: usize) -> &[f64] {
        let l = v.len() / t;
        &v[k * l..(k + 1) * l]
    }
    let coeffs = dh.len() / t;
    let mut alpha = vec![0.0; 3];
    let mut b = vec![
        0.0;
        if run.site.kind == Mixing::Mhc {
            coeffs
        } else {
            0
        }
    ];
    for k in 0..t {
        let one = Saved {
            t: 1,
            z: up(token(&z, t, k)),
            r: up(token(&r, t, k)),
            h: up(token(&h, t, k)),
        };
        let g = run
            .layer
            .gates_backward(&run.p, &one, &up(token(dh, t, k)))
            .unwrap();
        // mHC: [db | dα] of the token's program; HC: the token's dα.
        let shares = download(dev, &g.shares);
        let (db, da) = shares.split_at(shares.len() - 3);
        for (m, v) in b.iter_mut().zip(db) {
            *m += v.abs();
        }
        for (m, v) in alpha.iter_mut().zip(da) {
            *m += v.abs();
        }
    }
    (alpha, b)
}

/// The sublayer stand-in F(h) = h (a device copy; its backward a copy too),
/// so the test isolates the stack's own recompute.
struct Copy<'d>(&'d Device);

impl Sublayer for Copy<'_> {
    fn forward(&mut self, _site: usize, h_in: &Buffer) -> Result<Buffer, LayerError> {
        let mut y = self.0.alloc(h_in.dtype(), h_in.len())?;
        self.0.copy(h_in, &mut y)?;
        Ok(y)
    }
    fn backward(
        &mut self,
        _site: usize,
        _h_in: &Buffer,
        dy: &Buffer,
    ) -> Result<Buffer, LayerError> {
        self.forward(0, dy)
    }
}

/// A 7-site stack with and without recompute (block 3) on the device of `ks`:
/// outputs, recomputed inputs and h_in, and every gradient bit-identical.
pub fn check_recompute(ks: &Arc<KernelSet>) {
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dev = ks.device();
    let (sites, t, n, c) = (7usize, 9usize, 4usize, 40usize);
    let block = default_block_len(n, sites);
    assert_eq!(block, 2, "round(sqrt(4·7/6))");
    for mixing in [Mixing::Mhc, Mixing::Hc] {
        let layers = || -> Vec<Layer> {
            (0..sites)
                .map(|_| Layer::new(ks.clone(), SiteConfig::new(mixing, n, c)).unwrap())
                .collect()
        };
        let mut plain = Stack::new(layers(), None).unwrap();
        let mut recompute = Stack::new(layers(), Some(3)).unwrap();
        let params: Vec<_> = plain
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| layer.init_params(seed.wrapping_add(l as u64), l).unwrap())
            .collect();
        let x0: Vec<bf16> = (0..t * n * c)
            .map(|_| bf16::from_f32(rng.random_range(-2.0..2.0)))
            .collect();
        let g: Vec<bf16> = (0..t * n * c)
            .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
            .collect();
        let mut results = Vec::new();
        for stack in [&mut plain, &mut recompute] {
            let out = stack
                .forward(&params, dev.upload(&x0).unwrap(), t, &mut Copy(dev))
                .unwrap();
            results.push((dev.download_bytes(&out).unwrap(), stack.activation_bytes()));
        }
        assert_eq!(results[0].0, results[1].0, "{mixing:?}: forward outputs");
        assert!(
            results[1].1 < results[0].1,
            "recompute keeps less: {} vs {}",
            results[1].1,
            results[0].1
        );
        eprintln!(
            "{mixing:?}: kept bytes {} stored, {} with recompute",
            results[0].1, results[1].1
        );
        // Recomputed inputs and h_in equal the stored ones, byte for byte.
        let rebuilt = recompute.recompute_block(3, 6).unwrap();
        for (k, (x, h_in)) in rebuilt.iter().enumerate() {
            let l = 3 + k;
            assert_eq!(
                dev.download_bytes(x).unwrap(),
                dev.download_bytes(plain.kept_input(l).unwrap()).unwrap(),
                "x of site {l}"
            );
            assert_eq!(
                dev.download_bytes(h_in).unwrap(),
                dev.download_bytes(plain.kept_h_in(l).unwrap()).unwrap(),
                "h_in of site {l}"
            );
        }
        let mut grads_of = Vec::new();
        for stack in [&mut plain, &mut recompute] {
            let mut grads: Vec<_> = stack
                .layers
                .iter()
                .map(|l| l.zero_grads().unwrap())
                .collect();
            let gx = stack
                .backward(&params, &mut grads, dev.upload(&g).unwrap(), &mut Copy(dev))
                .unwrap();
            let mut bytes = dev.download_bytes(&gx).unwrap();
            for gr in &grads {
                for b in [&gr.proj, &gr.alpha, &gr.b] {
                    bytes.extend(dev.download_bytes(b).unwrap());
                }
            }
            assert!(
                bytes.iter().any(|&b| b != 0),
                "gradients must not be all zero"
            );
            grads_of.push(bytes);
        }
        assert!(
            grads_of[0] == grads_of[1],
            "{mixing:?}: gradients differ between the stored and the recompute path"
        );
    }
}

/// A site's forward on the device of `ks` against the f64 reference
/// (`mhc::reference`): coefficients, h_in, x_out, and Sinkhorn's row sums.
pub fn check_forward(
    ks: &Arc<KernelSet>,
    cases: &[(Mixing, usize, usize, usize)],
    rng: &mut StdRng,
) {
    for &(mixing, t, n, c) in cases {
        eprintln!("-- {mixing:?} T={t} n={n} C={c}");
        let site = random_site(mixing, t, n, c, rng);
        let run = Run::new(ks, site);
        let dev = run.dev();
        let mut saved = nan_saved(&run.layer, t);
        let mut h_in = nan_buffer(dev, Scalar::BF16, t * c);
        run.layer
            .pre_into(&run.p, &run.x, &mut saved, &mut h_in)
            .unwrap();
        let mut x_out = nan_buffer(dev, Scalar::BF16, t * n * c);
        run.layer
            .post_into(&saved, &run.x, &run.y, &mut x_out)
            .unwrap();
        let want = run.site.forward();
        // Coefficients are f32 from an f32 projection (bf16 hi+lo split of φ,
        // relative error ~2^-16) and f32 gates/Sinkhorn: 2e-5·|h| + 1e-5 of the largest.
        assert_close("h", &download(dev, &saved.h), &want.h, 2e-5, 1e-5);
        // bf16 outputs: one rounding (2^-9 relative, doubled for ties flipped by
        // f32-vs-f64 differences) plus the coefficients' error.
        assert_close(
            "h_in",
            &download(dev, &h_in),
            &want.h_in,
            2f64.powi(-8),
            1e-4,
        );
        assert_close(
            "x_out",
            &download(dev, &x_out),
            &want.x_out,
            2f64.powi(-8),
            1e-4,
        );
        if mixing == Mixing::Mhc {
            let h = download(dev, &saved.h);
            let r = n * n + 2 * n;
            let (mut row_dev, mut col_dev, mut col_vs_ref) = (0.0f64, 0.0f64, 0.0f64);
            for tok in 0..t {
                let res = &h[tok * r + 2 * n..(tok + 1) * r];
                let res_ref = &want.h[tok * r + 2 * n..(tok + 1) * r];
                for k in 0..n {
                    let row: f64 = (0..n).map(|i| res[k * n + i]).sum();
                    let col: f64 = (0..n).map(|j| res[j * n + k]).sum();
                    let col_ref: f64 = (0..n).map(|j| res_ref[j * n + k]).sum();
                    row_dev = row_dev.max((row - 1.0).abs());
                    col_dev = col_dev.max((col - 1.0).abs());
                    col_vs_ref = col_vs_ref.max((col - col_ref).abs());
                }
            }
            eprintln!(
                "Sinkhorn: max |row sum - 1| {row_dev:.2e}, max |column sum - 1| {col_dev:.2e} \
                 (f64 reference after the same 20 iterations: column sums within {col_vs_ref:.2e})"
            );
            assert!(
                row_dev <= 1e-5,
                "rows of H_res must sum to 1 within 1e-5, got {row_dev:e}"
            );
            // Columns sum to 1 only as far as 20 iterations converge (the last
            // step normalises rows): they must match the f64 iteration's sums.
            assert!(
                col_vs_ref <= 1e-5,
                "column sums differ from the f64 iteration's by {col_vs_ref:e}"
            );
        }
    }
}

/// A site's backward on the device of `ks` (`post_backward_into`,
/// `pre_backward`) against central finite differences of the f64 reference's
/// loss `<g_out, x'> + <g_h, h_in>`: dx, dy and the parameter gradients, 32
/// distinct coordinates of each (all of the small ones).
pub fn check_backward(
    ks: &Arc<KernelSet>,
    cases: &[(Mixing, usize, usize, usize)],
    rng: &mut StdRng,
) {
    // `TILE_TEST_SABOTAGE=mhc-drop-term`: a backward with the h_in term
    // dropped on purpose, which this check must reject (CPU and GPU tiers).
    let sabotaged = std::env::var("TILE_TEST_SABOTAGE")
        .is_ok_and(|v| v.split(',').any(|w| w == "mhc-drop-term"));
    let bad = backward_mismatches(ks, cases, rng, if sabotaged { 0.0 } else { 1.0 });
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The index ranges of a gradient that belong to the pre, post and residual
/// coefficients (φ's rows and b's entries), so a sample checks each of them:
/// a term that reaches only one group (the h_in term reaches only the pre
/// coefficients) cannot be missed by an unlucky draw. One range for the
/// gradients without groups.
fn coefficient_groups(wrt: Wrt, mixing: Mixing, n: usize, c: usize) -> Vec<std::ops::Range<usize>> {
    let r = n * n + 2 * n;
    let rows = |a: usize, b: usize, cols: usize| a * cols..b * cols;
    match (wrt, mixing) {
        (Wrt::B, _) => vec![0..n, n..2 * n, 2 * n..r],
        (Wrt::Phi, Mixing::Mhc) => vec![
            rows(0, n, n * c),
            rows(n, 2 * n, n * c),
            rows(2 * n, r, n * c),
        ],
        (Wrt::Phi, Mixing::Hc) => vec![rows(0, 1, c), rows(1, 2, c), rows(2, n + 2, c)],
        _ => std::iter::once(0..usize::MAX).collect(),
    }
}

/// Up to 32 distinct coordinates below `len`, drawn without replacement and
/// spread evenly over `groups` (all of them for the small tensors).
fn sample_coords(rng: &mut StdRng, len: usize, groups: &[std::ops::Range<usize>]) -> Vec<usize> {
    if len <= 32 {
        return (0..len).collect();
    }
    let per_group = 32_usize.div_ceil(groups.len());
    let mut idx = Vec::new();
    for g in groups {
        let g = g.start..g.end.min(len);
        let take = per_group.min(g.len());
        idx.extend(
            rand::seq::index::sample(rng, g.len(), take)
                .into_iter()
                .map(|i| g.start + i),
        );
    }
    idx
}

/// [`check_backward`]'s comparisons, returning the first mismatch of each
/// (case, gradient). `h_in_term` scales the upstream gradient of h_in that
/// the kernels get (the finite differences always use the true one): 1 is the
/// real check; 0 drops the h_in term of every gradient (a backward with one
/// term missing), 0.99 gets it 1% wrong.
pub fn backward_mismatches(
    ks: &Arc<KernelSet>,
    cases: &[(Mixing, usize, usize, usize)],
    rng: &mut StdRng,
    h_in_term: f64,
) -> Vec<String> {
    let mut bad = Vec::new();
    for &(mixing, t, n, c) in cases {
        eprintln!("-- {mixing:?} T={t} n={n} C={c}");
        let site = random_site(mixing, t, n, c, rng);
        let run = Run::new(ks, site);
        let dev = run.dev();
        let site = &run.site;
        let g_out = round_bf16(gaussian(rng, t * n * c, 1.0));
        let g_h = round_bf16(gaussian(rng, t * c, 1.0));
        let (h_in, saved) = run.layer.pre(&run.p, &run.x, t).unwrap();
        drop(h_in);
        let mut g_x = nan_buffer(dev, Scalar::BF16, t * n * c);
        let mut dy = nan_buffer(dev, Scalar::BF16, t * c);
        let mut dh = nan_buffer(dev, Scalar::F32, t * (n * n + 2 * n));
        let g_out_b = upload_bf16(dev, &g_out);
        run.layer
            .post_backward_into(&saved, &run.x, &run.y, &g_out_b, &mut g_x, &mut dy, &mut dh)
            .unwrap();
        // Gradients accumulate: start from random values and subtract them.
        let g0 = |len: usize, rng: &mut StdRng| gaussian(rng, len, 1.0);
        let (p0, a0, b0) = (g0(site.phi.len(), rng), g0(3, rng), g0(site.b.len(), rng));
        let mut grads = Params {
            proj: dev.upload(&p0).unwrap(),
            alpha: dev.upload(&a0).unwrap(),
            b: dev.upload(&b0).unwrap(),
        };
        let g_h_kernel: Vec<f64> = g_h.iter().map(|g| g * h_in_term).collect();
        let g_h_b = upload_bf16(dev, &g_h_kernel);
        run.layer
            .pre_backward(
                &run.p, &saved, &run.x, &g_h_b, &mut g_x, &mut dh, &mut grads,
            )
            .unwrap();
        let minus = |got: Vec<f64>, start: &[f32]| -> Vec<f64> {
            got.iter().zip(start).map(|(g, s)| g - *s as f64).collect()
        };
        let grads_of = [
            (Wrt::X, download(dev, &g_x)),
            (Wrt::Y, download(dev, &dy)),
            (Wrt::Phi, minus(download(dev, &grads.proj), &p0)),
            (Wrt::Alpha, minus(download(dev, &grads.alpha), &a0)),
            (Wrt::B, minus(download(dev, &grads.b), &b0)),
        ];
        for (wrt, got) in grads_of {
            let idx = sample_coords(rng, got.len(), &coefficient_groups(wrt, mixing, n, c));
            let fd: Vec<f64> = idx
                .iter()
                .map(|&i| finite_difference(site, wrt, i, &g_out, &g_h))
                .collect();
            let picked: Vec<f64> = idx.iter().map(|&i| got[i]).collect();
            // dx and dy are bf16 buffers (dx rounded after each of its three
            // accumulations: ≤ 3·2^-9 of its magnitude); φ, α, b are f32 sums of
            // f32 products with dz split into bf16 high+low parts (2^-16
            // relative), computed from coefficients with the forward's 2^-16
            // (φ split the same way), summed over at most K = T·n·C terms of
            // either sign: 8·2^-16 + 8·√K·2^-24 of the value and of the
            // largest gradient. 2^-16 (twice: operand and coefficient) applies
            // to each term, and the terms' absolute sum can be several times
            // the value and the largest gradient when they cancel (α's sum
            // over every token: 1.0e-4 relative seen in 60 runs, where 2·2^-16
            // is 3.1e-5), hence 8·2^-16; √K·2^-24 is the typical rounding walk
            // of partial sums up to the largest gradient, ×8 for larger
            // partial sums and a 4σ tail. A 1% wrong term is still ~20× over
            // (`backward_check_catches_a_dropped_or_wrong_term`). The f64
            // finite difference is good to ~1e-10.
            let param = 8.0 * 2f64.powi(-16) + 8.0 * ((t * n * c) as f64).sqrt() * 2f64.powi(-24);
            let (rel, abs) = match wrt {
                Wrt::X | Wrt::Y => (2f64.powi(-7), 4e-3),
                _ => (param, param),
            };
            let scale = max_abs(&got).max(max_abs(&fd));
            if let Some(((i, g), f)) = idx
                .iter()
                .zip(&picked)
                .zip(&fd)
                .find(|((_, g), f)| !((*g - *f).abs() <= rel * f.abs() + abs * scale))
            {
                let tol = rel * f.abs() + abs * scale;
                bad.push(format!(
                    "{mixing:?} T={t} n={n} C={c} d{wrt:?}[{i}]: kernel {g}, finite difference {f} (tol {tol:.2e})"
                ));
            }
            let worst = picked
                .iter()
                .zip(&fd)
                .map(|(g, f)| (g - f).abs())
                .fold(0.0, f64::max);
            eprintln!(
                "d{wrt:?}: {} coords, max |kernel - fd| {worst:.2e} (scale {scale:.2e})",
                idx.len()
            );
        }
    }
    bad
}
