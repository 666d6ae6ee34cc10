//! Training data: a built-in deterministic synthetic corpus or any UTF-8 text
//! file, split into training and held-out validation bytes, and batches that
//! are a pure function of (seed, step) so that a resumed run sees exactly the
//! batches an uninterrupted one would.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// A small, stable PRNG (SplitMix64): the corpus and the batches must not
/// change with a dependency's version, or checkpoints would stop resuming exactly.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller), for parameter initialisation.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// The built-in corpus: sentences from a small grammar with agreement, plus
/// additions with correct sums. Byte-level structure (words, spaces,
/// punctuation) is learnt within a few hundred steps of a tiny model; the
/// arithmetic gives a bigger model something harder to learn.
pub fn synthetic_corpus(bytes: usize) -> Vec<u8> {
    const SUBJECTS: &[(&str, bool)] = &[
        ("the cat", false),
        ("a small dog", false),
        ("the old man", false),
        ("my sister", false),
        ("the birds", true),
        ("two children", true),
        ("the engineers", true),
        ("a tired student", false),
    ];
    const VERBS: &[(&str, &str)] = &[
        ("sees", "see"),
        ("likes", "like"),
        ("finds", "find"),
        ("carries", "carry"),
        ("draws", "draw"),
        ("watches", "watch"),
    ];
    const OBJECTS: &[&str] = &[
        "the red ball",
        "a green apple",
        "the river",
        "an open door",
        "the blue house",
        "a long letter",
        "the quiet garden",
    ];
    const PLACES: &[&str] = &[
        "in the morning",
        "near the station",
        "after dinner",
        "under the bridge",
        "every day",
    ];
    let mut rng = SplitMix64::new(0x6d68_635f_6461_7461);
    let mut text = String::with_capacity(bytes + 128);
    while text.len() < bytes {
        if rng.below(4) == 0 {
            let a = rng.below(50);
            let b = rng.below(50);
            text.push_str(&format!("{a} plus {b} is {}.\n", a + b));
            continue;
        }
        let (subject, plural) = SUBJECTS[rng.below(SUBJECTS.len())];
        let (singular_verb, plural_verb) = VERBS[rng.below(VERBS.len())];
        let verb = if plural { plural_verb } else { singular_verb };
        let object = OBJECTS[rng.below(OBJECTS.len())];
        text.push_str(subject);
        text.push(' ');
        text.push_str(verb);
        text.push(' ');
        text.push_str(object);
        if rng.below(2) == 0 {
            text.push(' ');
            text.push_str(PLACES[rng.below(PLACES.len())]);
        }
        text.push_str(".\n");
    }
    text.truncate(bytes);
    text.into_bytes()
}

/// Training and validation bytes.
pub struct Dataset {
    pub train: Vec<u8>,
    pub val: Vec<u8>,
    /// Where the bytes came from, for logs.
    pub source: String,
    /// SHA-256 of all the bytes (training and validation), hex.
    pub sha256: String,
}

/// Size of the built-in corpus: 1 MiB, far more than a short run consumes.
pub const SYNTHETIC_BYTES: usize = 1 << 20;

impl Dataset {
    /// The built-in corpus, or the UTF-8 text in `path`; the last
    /// `val_fraction` of the bytes is held out for validation.
    pub fn load(path: Option<&Path>, val_fraction: f64, context: usize) -> Result<Dataset> {
        let (bytes, source) = match path {
            None => (
                synthetic_corpus(SYNTHETIC_BYTES),
                "built-in synthetic corpus".to_string(),
            ),
            Some(p) => {
                let bytes = std::fs::read(p)
                    .with_context(|| format!("cannot read data file `{}`", p.display()))?;
                if let Err(e) = std::str::from_utf8(&bytes) {
                    bail!(
                        "data file `{}` is not UTF-8 text (invalid byte at offset {})",
                        p.display(),
                        e.valid_up_to()
                    );
                }
                (bytes, format!("`{}`", p.display()))
            }
        };
        if !(0.0..1.0).contains(&val_fraction) || val_fraction <= 0.0 {
            bail!("--val-fraction must be in (0, 1), got {val_fraction}");
        }
        let split = bytes.len() - (bytes.len() as f64 * val_fraction).round() as usize;
        let (train, val) = bytes.split_at(split);
        // A window is `context` inputs plus the next byte of each as targets.
        for (name, part) in [("training", train), ("validation", val)] {
            if part.len() < context + 1 {
                bail!(
                    "data from {source}: the {name} split has {} bytes, fewer than one window \
                     of context + 1 = {} bytes (use a bigger file, a smaller --context or \
                     another --val-fraction)",
                    part.len(),
                    context + 1
                );
            }
        }
        Ok(Dataset {
            train: train.to_vec(),
            val: val.to_vec(),
            source,
            sha256: tile_ir::pack::sha256_hex(&bytes),
        })
    }
}

/// One batch: `batch × context` input bytes and the bytes that follow each.
pub struct Batch {
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
}

/// Which windows a batch takes: random training windows keyed by (seed,
/// step), fixed validation windows keyed by (seed, index).
fn window_starts(len: usize, context: usize, batch: usize, key: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(key);
    (0..batch).map(|_| rng.below(len - context)).collect()
}

fn gather(data: &[u8], starts: &[usize], context: usize) -> Batch {
    let mut inputs = Vec::with_capacity(starts.len() * context);
    let mut targets = Vec::with_capacity(starts.len() * context);
    for &s in starts {
        inputs.extend(data[s..s + context].iter().map(|&b| b as i32));
        targets.extend(data[s + 1..s + context + 1].iter().map(|&b| b as i32));
    }
    Batch { inputs, targets }
}

impl Dataset {
    /// The training batch of `step` (the same for a resumed run).
    pub fn train_batch(&self, seed: u64, step: u64, batch: usize, context: usize) -> Batch {
        let key = seed ^ step.wrapping_mul(0xA24B_AED4_963E_E407);
        gather(
            &self.train,
            &window_starts(self.train.len(), context, batch, key),
            context,
        )
    }

    /// The `index`-th validation batch (fixed for the whole run).
    pub fn val_batch(&self, seed: u64, index: u64, batch: usize, context: usize) -> Batch {
        let key = !seed ^ index.wrapping_mul(0x9FB2_1C65_1E98_DF25);
        gather(
            &self.val,
            &window_starts(self.val.len(), context, batch, key),
            context,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_text() {
        let a = synthetic_corpus(10_000);
        assert_eq!(a, synthetic_corpus(10_000));
        assert_eq!(a.len(), 10_000);
        assert!(std::str::from_utf8(&a).is_ok());
    }

    #[test]
    fn batches_depend_on_step_only() {
        let d = Dataset::load(None, 0.1, 16).unwrap();
        let a = d.train_batch(1, 5, 4, 16);
        let b = d.train_batch(1, 5, 4, 16);
        let c = d.train_batch(1, 6, 4, 16);
        assert_eq!(a.inputs, b.inputs);
        assert_ne!(a.inputs, c.inputs);
        // Targets are the inputs shifted by one byte.
        assert_eq!(a.inputs[1..16], a.targets[..15]);
    }
}
