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
