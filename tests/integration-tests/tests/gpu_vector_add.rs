//! Vector add from `dsl-examples/vector_add.tile`, compiled through the whole
//! pipeline into the examples pack, run on the GPU against a CPU computation.
#![cfg(feature = "gpu")]

use half::bf16;
use rand::SeedableRng;
use tile_runtime::{Arg, Config};
use tile_testkit::*;

/// Sizes: one element, a ragged size, exact multiples, and a large ragged one.
const SIZES: [usize; 5] = [1, 1000, 4096, 3 * 4096 + 17, (1 << 22) + 3];

#[test]
fn gpu_vector_add_f32_and_bf16_match_the_cpu() {
    let Some(dev) = gpu_or_skip("gpu_vector_add_f32_and_bf16_match_the_cpu") else {
        return;
    };
    let pack = examples_pack();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for name in ["vector_add", "vector_add_bf16"] {
        for variant in &pack.kernel(name).unwrap().variants {
            let cfg: &Config = &variant.config;
            let block = cfg.meta.iter().find(|(n, _)| n == "BLOCK").unwrap().1 as usize;
            let k = pack.load_kernel(&dev, name, cfg).unwrap();
            for n in SIZES {
                let a = random_f32(&mut rng, n, -4.0, 4.0);
                let b = random_f32(&mut rng, n, -4.0, 4.0);
                let grid = [n.div_ceil(block) as u32, 1, 1];
                let got: Vec<f32>;
                let want: Vec<f32>;
                if name == "vector_add" {
                    let (ba, bb) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
                    let bc = dev.upload(&vec![f32::NAN; n]).unwrap();
                    dev.launch(
                        &k,
                        grid,
                        &[
                            Arg::Buffer(&ba),
                            Arg::Buffer(&bb),
                            Arg::Buffer(&bc),
                            Arg::I32(n as i32),
                        ],
                    )
                    .unwrap();
                    got = dev.download::<f32>(&bc).unwrap();
                    want = a.iter().zip(&b).map(|(x, y)| x + y).collect();
                } else {
                    let a: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
                    let b: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
                    let (ba, bb) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
                    let bc = dev.upload(&vec![bf16::NAN; n]).unwrap();
                    dev.launch(
                        &k,
                        grid,
                        &[
                            Arg::Buffer(&ba),
                            Arg::Buffer(&bb),
                            Arg::Buffer(&bc),
                            Arg::I32(n as i32),
                        ],
                    )
                    .unwrap();
                    got = dev
                        .download::<bf16>(&bc)
                        .unwrap()
                        .iter()
                        .map(|x| x.to_f32())
                        .collect();
                    // f32 sum rounded once to bf16: bit-exact on the GPU.
                    want = a
                        .iter()
                        .zip(&b)
                        .map(|(x, y)| bf16::from_f32(x.to_f32() + y.to_f32()).to_f32())
                        .collect();
                }
                let bad = mismatches(&got, &want, 0.0, 0.0);
                assert!(
                    bad.is_empty(),
                    "{name} [{}] n={n}: {} mismatches, first at {}: got {} want {}",
                    tile_runtime::describe(cfg),
                    bad.len(),
                    bad[0],
                    got[bad[0]],
                    want[bad[0]]
                );
                eprintln!("ok {name} [{}] n={n}", tile_runtime::describe(cfg));
            }
        }
    }
}

/// [`tile_runtime::HostCopy::wait`] waits for the copy it was given, on a
/// device with one stream (the trainer's single-device run reads its losses
/// so). About 10 ms of additions are queued ahead of each copy, so a wait
/// that returns at once reads what the memory held before: zeros, then the
/// previous round's sums.
#[test]
fn gpu_host_copy_waits_for_the_queued_work() {
    let Some(dev) = gpu_or_skip("gpu_host_copy_waits_for_the_queued_work") else {
        return;
    };
    let pack = examples_pack();
    let variant = &pack.kernel("vector_add").unwrap().variants[0];
    let block = variant
        .config
        .meta
        .iter()
        .find(|(n, _)| n == "BLOCK")
        .unwrap()
        .1 as usize;
    let k = pack
        .load_kernel(&dev, "vector_add", &variant.config)
        .unwrap();
    let n = 1usize << 24;
    // A random quarter in [1, 250): with the at most 601 additions of 1.0
    // below, every sum stays under 2^10 with two fraction bits, so exact in
    // f32 (24 bits) and equal to `start + count` computed at once.
    let start = rand::random_range(4..1000) as f32 / 4.0;
    let ones = dev.upload(&vec![1.0f32; n]).unwrap();
    let x = [
        dev.upload(&vec![start; n]).unwrap(),
        dev.upload(&vec![f32::NAN; n]).unwrap(),
    ];
    let head = 64usize;
    let mut front = dev.upload(&vec![f32::NAN; head]).unwrap();
    let mut host = dev.host_copy(head * 4).unwrap();
    let add = |src: &tile_runtime::Buffer, dst: &tile_runtime::Buffer, len: usize| {
        let grid = [len.div_ceil(block) as u32, 1, 1];
        dev.launch(
            &k,
            grid,
            &[
                Arg::Buffer(src),
                Arg::Buffer(&ones),
                Arg::Buffer(dst),
                Arg::I32(len as i32),
            ],
        )
        .unwrap();
    };
    let (rounds, adds) = (3, 200);
    let mut done = 0;
    for round in 1..=rounds {
        for _ in 0..adds {
            add(&x[done % 2], &x[(done + 1) % 2], n);
            done += 1;
        }
        // The first `head` sums, one addition more, into a small buffer.
        add(&x[done % 2], &front, head);
        dev.copy_to_host(&front, &mut host).unwrap();
        let got: Vec<f32> = host.wait().unwrap();
        let want = start + (round * adds + 1) as f32;
        assert!(
            got.iter().all(|&v| v == want),
            "round {round}: the host read {:?}… before the copy was done (want {want})",
            &got[..4]
        );
        // The next round's last addition overwrites `front`.
        front = dev.upload(&vec![f32::NAN; head]).unwrap();
    }
}
