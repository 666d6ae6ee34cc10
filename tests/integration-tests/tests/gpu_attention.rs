//! Attention for training on the GPU (dsl-examples/attention_bwd.tile from
//! the examples pack): every packed config of the forward with lse, delta,
//! dK/dV and dQ, run as the chain training runs them, at ragged sequence
//! lengths, causal and not, against the f64 reference of
//! `tile_testkit::attention` within the bounds derived there (the same the
//! interpreter is held to in tile-interp's interp_attention). Fresh random
//! inputs (seed printed), outputs NaN-poisoned.
#![cfg(feature = "gpu")]

use half::bf16;
use rand::SeedableRng;
use tile_runtime::{Arg, Buffer, Config, Device, Pack, Scalar};
use tile_testkit::attention::{check_head, Outputs, Shape};
use tile_testkit::*;

const HEADS: usize = 2;

fn meta(c: &Config, name: &str) -> i64 {
    c.meta.iter().find(|(m, _)| m == name).map_or(0, |x| x.1)
}

/// The packed configs of `kernel` with head dimension `d` (and `causal`
/// where the kernel has it).
fn configs(pack: &Pack, kernel: &str, d: i64, causal: i64) -> Vec<Config> {
    let kp = pack
        .manifest()
        .kernel(kernel)
        .unwrap_or_else(|| panic!("`{kernel}` is not in the examples pack"));
    kp.variants
        .iter()
        .map(|v| v.config.clone())
        .filter(|c| {
            meta(c, "D") == d && (kernel == "attention_bwd_delta" || meta(c, "CAUSAL") == causal)
        })
        .collect()
}

fn bf16_buf(dev: &Device, v: &[bf16]) -> Buffer {
    dev.upload(v).unwrap()
}

fn nan_buf(dev: &Device, s: Scalar, n: usize) -> Buffer {
    match s {
        Scalar::BF16 => dev.upload(&vec![bf16::NAN; n]).unwrap(),
        _ => dev.upload(&vec![f32::NAN; n]).unwrap(),
    }
}

fn read(dev: &Device, b: &Buffer) -> Vec<f64> {
    match b.dtype() {
        Scalar::BF16 => dev
            .download::<bf16>(b)
            .unwrap()
            .iter()
            .map(|x| x.to_f64())
            .collect(),
        _ => dev
            .download::<f32>(b)
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect(),
    }
}

#[test]
fn gpu_attention_training_chain_matches_f64() {
    let Some(dev) = gpu_or_skip("gpu_attention_training_chain_matches_f64") else {
        return;
    };
    let pack = examples_pack();
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed("gpu_attention_training_chain_matches_f64: "));
    let mut runs = 0;
    for d in [64usize, 128] {
        for causal in [0i64, 1] {
            let seqs: &[usize] = if std::env::var_os("TILE_SANITIZER_RUN").is_some() {
                &[70]
            } else {
                &[64, 200]
            };
            for &seq in seqs {
                let shape = Shape { seq, d };
                let n = HEADS * seq * d;
                let scale = 1.0 / (d as f64).sqrt();
                // Q and K in [-2, 2]: a softmax with a few dominant keys per row.
                let (q, k, v, d_o) = (
                    random_bf16(&mut rng, n, -2.0, 2.0),
                    random_bf16(&mut rng, n, -2.0, 2.0),
                    random_bf16(&mut rng, n, -1.0, 1.0),
                    random_bf16(&mut rng, n, -1.0, 1.0),
                );
                let f = |x: &[bf16]| -> Vec<f64> { x.iter().map(|v| v.to_f64()).collect() };
                let (qf, kf, vf, dof) = (f(&q), f(&k), f(&v), f(&d_o));
                let (qb, kb, vb, dob) = (
                    bf16_buf(&dev, &q),
                    bf16_buf(&dev, &k),
                    bf16_buf(&dev, &v),
                    bf16_buf(&dev, &d_o),
                );
                let heads = HEADS as u32;
                let fwd = configs(&pack, "attention_lse", d as i64, causal);
                let delta_c = configs(&pack, "attention_bwd_delta", d as i64, causal);
                let dkdv = configs(&pack, "attention_bwd_dkdv", d as i64, causal);
                let dq = configs(&pack, "attention_bwd_dq", d as i64, causal);
                assert!(
                    !fwd.is_empty() && !delta_c.is_empty() && !dkdv.is_empty() && !dq.is_empty()
                );
                // Every config of every kernel at least once, the others cycled.
                let count = fwd.len().max(dkdv.len()).max(dq.len()).max(delta_c.len());
                for r in 0..count {
                    let (cf, cd, ckv, cq) = (
                        &fwd[r % fwd.len()],
                        &delta_c[r % delta_c.len()],
                        &dkdv[r % dkdv.len()],
                        &dq[r % dq.len()],
                    );
                    let what = format!(
                        "seq={seq} D={d} causal={causal} [{}] [{}] [{}] [{}]",
                        tile_runtime::describe(cf),
                        tile_runtime::describe(cd),
                        tile_runtime::describe(ckv),
                        tile_runtime::describe(cq)
                    );
                    let load = |name: &str, c: &Config| pack.load_kernel(&dev, name, c).unwrap();
                    let (o, lse) = (
                        nan_buf(&dev, Scalar::BF16, n),
                        nan_buf(&dev, Scalar::F32, HEADS * seq),
                    );
                    let scalars = || [Arg::I32(seq as i32), Arg::F32(scale as f32)];
                    let bm = meta(cf, "BM") as usize;
                    let mut a = vec![
                        Arg::Buffer(&qb),
                        Arg::Buffer(&kb),
                        Arg::Buffer(&vb),
                        Arg::Buffer(&o),
                        Arg::Buffer(&lse),
                    ];
                    a.extend(scalars());
                    dev.launch(
                        &load("attention_lse", cf),
                        [seq.div_ceil(bm) as u32, heads, 1],
                        &a,
                    )
                    .unwrap();
                    let delta = nan_buf(&dev, Scalar::F32, HEADS * seq);
                    let bm = meta(cd, "BM") as usize;
                    dev.launch(
                        &load("attention_bwd_delta", cd),
                        [seq.div_ceil(bm) as u32, heads, 1],
                        &[
                            Arg::Buffer(&o),
                            Arg::Buffer(&dob),
                            Arg::Buffer(&delta),
                            Arg::I32(seq as i32),
                        ],
                    )
                    .unwrap();
                    let (dk, dv, dqb) = (
                        nan_buf(&dev, Scalar::BF16, n),
                        nan_buf(&dev, Scalar::BF16, n),
                        nan_buf(&dev, Scalar::BF16, n),
                    );
                    let ins = || {
                        vec![
                            Arg::Buffer(&qb),
                            Arg::Buffer(&kb),
                            Arg::Buffer(&vb),
                            Arg::Buffer(&dob),
                            Arg::Buffer(&lse),
                            Arg::Buffer(&delta),
                        ]
                    };
                    let mut a = ins();
                    a.extend([Arg::Buffer(&dk), Arg::Buffer(&dv)]);
                    a.extend(scalars());
                    let bn = meta(ckv, "BN") as usize;
                    dev.launch(
                        &load("attention_bwd_dkdv", ckv),
                        [seq.div_ceil(bn) as u32, heads, 1],
                        &a,
                    )
                    .unwrap();
                    let mut a = ins();
                    a.push(Arg::Buffer(&dqb));
                    a.extend(scalars());
                    let bm = meta(cq, "BM") as usize;
                    dev.launch(
                        &load("attention_bwd_dq", cq),
                        [seq.div_ceil(bm) as u32, heads, 1],
                        &a,
                    )
                    .unwrap();
                    dev.synchronize().unwrap();
                    let (o_got, lse_got, delta_got) =
                        (read(&dev, &o), read(&dev, &lse), read(&dev, &delta));
                    let (dk_got, dv_got, dq_got) =
                        (read(&dev, &dk), read(&dev, &dv), read(&dev, &dqb));
                    let got = Outputs {
                        o: &o_got,
                        lse: &lse_got,
                        delta: &delta_got,
                        dq: &dq_got,
                        dk: &dk_got,
                        dv: &dv_got,
                    };
                    for hd in 0..HEADS {
                        let at = |x: &[f64]| x[hd * seq * d..(hd + 1) * seq * d].to_vec();
                        let (qh, kh, vh, doh) = (at(&qf), at(&kf), at(&vf), at(&dof));
                        check_head(
                            &what,
                            hd,
                            [&qh[..], &kh, &vh, &doh],
                            &got,
                            shape,
                            causal != 0,
                            scale,
                        );
                    }
                    runs += 1;
                    eprintln!("ok {what}");
                }
            }
        }
    }
    eprintln!("{runs} attention training chains matched the f64 reference");
}
