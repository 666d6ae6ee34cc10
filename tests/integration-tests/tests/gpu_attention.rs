//! Attention for training on the GPU (dsl-examples/attention_bwd.tile from
//! the examples pack): every packed config of the forward with lse, delta,
//! dK/dV and dQ, run as the chain training runs them, at ragged sequence
//! lengths, causal and not, against the f64 reference of
//! `tile_testkit::attention` within the bounds derived there (the same the
//! interpreter is held to in tile-interp's interp_attention), then the same
//! with the fused backward (dQ added atomically). Fresh random inputs (seed
//! printed), outputs NaN-poisoned.
#![cfg(feature = "gpu")]

use half::bf16;
use rand::SeedableRng;
use tile_runtime::{Arg, Buffer, Config, Device, Pack, RawArg, Scalar};
use tile_testkit::attention::{check_head, head_major, token_major, Outputs, Shape};
use tile_testkit::*;

// Two sequences of two heads, in the kernels' token-major layout.
const BATCH: usize = 2;
const HEADS: usize = 2;
const SLICES: usize = BATCH * HEADS;

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
            let per_row = matches!(
                kernel,
                "attention_bwd_delta" | "attention_bwd_prep" | "attention_bwd_dq_cast"
            );
            meta(c, "D") == d && (per_row || meta(c, "CAUSAL") == causal)
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
                let n = SLICES * seq * d;
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
                let qkv = bf16_buf(&dev, &token_major(&[&q[..], &k, &v], BATCH, HEADS, shape));
                let dob = bf16_buf(&dev, &token_major(&[&d_o[..]], BATCH, HEADS, shape));
                let heads = |x: &[f64], slots: usize, slot: usize| {
                    head_major(x, slots, slot, BATCH, HEADS, shape)
                };
                let slices = SLICES as u32;
                let fwd = configs(&pack, "attention_lse", d as i64, causal);
                let delta_c = configs(&pack, "attention_bwd_delta", d as i64, causal);
                let dkdv = configs(&pack, "attention_bwd_dkdv", d as i64, causal);
                let dq = configs(&pack, "attention_bwd_dq", d as i64, causal);
                let prep = configs(&pack, "attention_bwd_prep", d as i64, causal);
                let bwd = configs(&pack, "attention_bwd_fused", d as i64, causal);
                let cast = configs(&pack, "attention_bwd_dq_cast", d as i64, causal);
                let all = [&fwd, &delta_c, &dkdv, &dq, &prep, &bwd, &cast];
                assert!(all.iter().all(|c| !c.is_empty()));
                // Every config of every kernel at least once, the others cycled.
                let count = all.iter().map(|c| c.len()).max().unwrap_or(0);
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
                        nan_buf(&dev, Scalar::F32, SLICES * seq),
                    );
                    let scalars = || {
                        [
                            Arg::I32(seq as i32),
                            Arg::I32(HEADS as i32),
                            Arg::F32(scale as f32),
                        ]
                    };
                    let bm = meta(cf, "BM") as usize;
                    let mut a = vec![Arg::Buffer(&qkv), Arg::Buffer(&o), Arg::Buffer(&lse)];
                    a.extend(scalars());
                    dev.launch(
                        &load("attention_lse", cf),
                        [seq.div_ceil(bm) as u32, slices, 1],
                        &a,
                    )
                    .unwrap();
                    // The deterministic backward (delta, dK/dV, dQ), then the
                    // fused one (prep, dK/dV with dQ added atomically, the cast).
                    for fused in [false, true] {
                        let delta = nan_buf(&dev, Scalar::F32, SLICES * seq);
                        // dK/dV and dQ write their columns of one dqkv.
                        let dqkv = nan_buf(&dev, Scalar::BF16, 3 * n);
                        let ins = || {
                            vec![
                                Arg::Buffer(&qkv),
                                Arg::Buffer(&dob),
                                Arg::Buffer(&lse),
                                Arg::Buffer(&delta),
                                Arg::Buffer(&dqkv),
                            ]
                        };
                        let grid = |c: &Config, m: &str| {
                            [seq.div_ceil(meta(c, m) as usize) as u32, slices, 1]
                        };
                        let what = if fused {
                            let (cp, cb, cc) = (
                                &prep[r % prep.len()],
                                &bwd[r % bwd.len()],
                                &cast[r % cast.len()],
                            );
                            let acc = nan_buf(&dev, Scalar::F32, n);
                            dev.launch(
                                &load("attention_bwd_prep", cp),
                                grid(cp, "BM"),
                                &[
                                    Arg::Buffer(&o),
                                    Arg::Buffer(&dob),
                                    Arg::Buffer(&delta),
                                    Arg::Buffer(&acc),
                                    Arg::I32(seq as i32),
                                    Arg::I32(HEADS as i32),
                                ],
                            )
                            .unwrap();
                            let mut a = ins();
                            a.push(Arg::Buffer(&acc));
                            a.extend(scalars());
                            dev.launch(&load("attention_bwd_fused", cb), grid(cb, "BN"), &a)
                                .unwrap();
                            dev.launch(
                                &load("attention_bwd_dq_cast", cc),
                                grid(cc, "BM"),
                                &[
                                    Arg::Buffer(&acc),
                                    Arg::Buffer(&dqkv),
                                    Arg::I32(seq as i32),
                                    Arg::I32(HEADS as i32),
                                ],
                            )
                            .unwrap();
                            format!(
                                "{what}, fused [{}] [{}] [{}]",
                                tile_runtime::describe(cp),
                                tile_runtime::describe(cb),
                                tile_runtime::describe(cc)
                            )
                        } else {
                            dev.launch(
                                &load("attention_bwd_delta", cd),
                                grid(cd, "BM"),
                                &[
                                    Arg::Buffer(&o),
                                    Arg::Buffer(&dob),
                                    Arg::Buffer(&delta),
                                    Arg::I32(seq as i32),
                                    Arg::I32(HEADS as i32),
                                ],
                            )
                            .unwrap();
                            let mut a = ins();
                            a.extend(scalars());
                            dev.launch(&load("attention_bwd_dkdv", ckv), grid(ckv, "BN"), &a)
                                .unwrap();
                            dev.launch(&load("attention_bwd_dq", cq), grid(cq, "BM"), &a)
                                .unwrap();
                            what.clone()
                        };
                        dev.synchronize().unwrap();
                        let (o_got, lse_got, delta_got) = (
                            heads(&read(&dev, &o), 1, 0),
                            read(&dev, &lse),
                            read(&dev, &delta),
                        );
                        let dqkv_got = read(&dev, &dqkv);
                        let (dq_got, dk_got, dv_got) = (
                            heads(&dqkv_got, 3, 0),
                            heads(&dqkv_got, 3, 1),
                            heads(&dqkv_got, 3, 2),
                        );
                        let got = Outputs {
                            o: &o_got,
                            lse: &lse_got,
                            delta: &delta_got,
                            dq: &dq_got,
                            dk: &dk_got,
                            dv: &dv_got,
                        };
                        for hd in 0..SLICES {
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
                        eprintln!("ok {what}");
                    }
                    runs += 1;
                }
            }
        }
    }
    eprintln!("{runs} attention training chains matched the f64 reference");
}

/// The fused backward's loop adds into dq_acc while copies of Q run ahead:
/// a launch that passes the same memory for both is refused before it runs
/// (the addresses are never dereferenced).
#[test]
fn gpu_fused_backward_refuses_dq_acc_over_qkv() {
    let Some(dev) = gpu_or_skip("gpu_fused_backward_refuses_dq_acc_over_qkv") else {
        return;
    };
    let pack = examples_pack();
    let c = &configs(&pack, "attention_bwd_fused", 64, 0)[0];
    let k = pack.load_kernel(&dev, "attention_bwd_fused", c).unwrap();
    let (b, f) = (Scalar::BF16, Scalar::F32);
    let at = |i: u64| 0x10_0000 * (i + 1);
    // qkv, d_o, lse, delta, dqkv apart; dq_acc over qkv.
    let mut args: Vec<RawArg> = [b, b, f, f, b]
        .iter()
        .enumerate()
        .map(|(i, &s)| RawArg::Ptr(s, at(i as u64)))
        .collect();
    args.extend([
        RawArg::Ptr(f, at(0)),
        RawArg::I32(64),
        RawArg::I32(1),
        RawArg::F32(0.125),
    ]);
    let e = unsafe { dev.launch_raw(&k, [1, 1, 1], &args, 0) }
        .expect_err("dq_acc over qkv must be refused")
        .to_string();
    assert!(
        e.contains("arguments `dq_acc` and `qkv` overlap"),
        "got: {e}"
    );
}
