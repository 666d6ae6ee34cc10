//! Checkpoints: every parameter and its AdamW moments as f32 safetensors, with
//! the model and training settings and the next step in the header metadata.
//! Written to a temporary file and renamed, so a crash or a failed step never
//! leaves a torn checkpoint; validated on load (format, settings, names,
//! shapes, dtypes) before anything is used.

use super::config::{ModelConfig, TrainConfig};
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Identifies the layout of the tensors and metadata.
const FORMAT: &str = "mhc-train checkpoint 1";

/// One named f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Everything a run needs to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// The next step to run (steps `0..step` are done).
    pub step: u64,
    pub tensors: Vec<Tensor>,
}

/// The checkpoint file of a run directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

impl Checkpoint {
    /// Write atomically: a temporary file in the same directory, synced, then renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes: Vec<Vec<u8>> = self
            .tensors
            .iter()
            .map(|t| t.data.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views = self
            .tensors
            .iter()
            .zip(&bytes)
            .map(|(t, b)| {
                Ok((
                    t.name.as_str(),
                    TensorView::new(Dtype::F32, t.shape.clone(), b)?,
                ))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("model".to_string(), serde_json::to_string(&self.model)?),
            ("train".to_string(), serde_json::to_string(&self.train)?),
            ("step".to_string(), self.step.to_string()),
        ]);
        let data = safetensors::serialize(views, Some(meta))?;
        let tmp = path.with_extension("safetensors.tmp");
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write checkpoint `{}`", tmp.display()))?;
        f.write_all(&data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move checkpoint into `{}`", path.display()))?;
        Ok(())
    }

    /// Read and check the file's own consistency; [`Checkpoint::check_against`]
    /// checks it against the run that wants to resume from it.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let what = || format!("checkpoint `{}`", path.display());
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", what()))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", what()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| anyhow!("{} has no metadata", what()))?;
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| anyhow!("{} lacks the metadata entry `{k}`", what()))
        };
        if get("format")? != FORMAT {
            bail!(
                "{} has format `{}`, expected `{FORMAT}`",
                what(),
                get("format")?
            );
        }
        let model: ModelConfig = serde_json::from_str(get("model")?)
            .with_context(|| format!("{}: unreadable model settings", what()))?;
        let train: TrainConfig = serde_json::from_str(get("train")?)
            .with_context(|| format!("{}: unreadable training settings", what()))?;
        let step: u64 = get("step")?
            .parse()
            .with_context(|| format!("{}: unreadable step", what()))?;
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                bail!(
                    "{}: tensor `{name}` is {:?}, expected F32",
                    what(),
                    view.dtype()
                );
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.push(Tensor {
                name,
                shape: view.shape().to_vec(),
                data,
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Checkpoint {
            model,
            train,
            step,
            tensors,
        })
    }

    /// Refuse to resume a different run: settings must match exactly.
    pub fn check_against(&self, model: &ModelConfig, train: &TrainConfig) -> Result<()> {
        if &self.model != model {
            bail!(
                "the checkpoint's model settings differ from this run's:\n  checkpoint: {}\n  this run:   {}",
                serde_json::to_string(&self.model)?,
                serde_json::to_string(model)?
            );
        }
        if &self.train != train {
            bail!(
                "the checkpoint's training settings differ from this run's (resume with the \
                 same flags):\n  checkpoint: {}\n  this run:   {}",
                serde_json::to_string(&self.train)?,
                serde_json::to_string(train)?
            );
        }
        if self.step > train.steps {
            bail!(
                "the checkpoint is at step {}, past --steps {}",
                self.step,
                train.steps
            );
        }
        Ok(())
    }

    /// Take the tensor `name`, which must have `shape`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let i = self
            .tensors
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| anyhow!("the checkpoint lacks tensor `{name}`"))?;
        let t = self.tensors.swap_remove(i);
        if t.shape != shape {
            bail!(
                "checkpoint tensor `{name}` has shape {:?}, the model needs {shape:?}",
                t.shape
            );
        }
        Ok(t.data)
    }

    /// The tensor `name`, which must have `shape`, left in place (every rank
    /// of a data-parallel run reads the same checkpoint).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&[f32]> {
        let t = self
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| anyhow!("the checkpoint lacks tensor `{name}`"))?;
        if t.shape != shape {
            bail!(
                "checkpoint tensor `{name}` has shape {:?}, the model needs {shape:?}",
                t.shape
            );
        }
        Ok(&t.data)
    }

    /// After [`Checkpoint::get`] of every name in `used`: a tensor not among
    /// them is a mismatch.
    pub fn check_used(&self, used: &std::collections::HashSet<String>) -> Result<()> {
        if let Some(t) = self.tensors.iter().find(|t| !used.contains(&t.name)) {
            bail!(
                "the checkpoint has tensor `{}`, which this model does not",
                t.name
            );
        }
        Ok(())
    }

    /// After every expected tensor was taken: anything left is a mismatch.
    pub fn finish(&self) -> Result<()> {
        if let Some(t) = self.tensors.first() {
            bail!(
                "the checkpoint has tensor `{}`, which this model does not",
                t.name
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::ResidualMode;

    fn sample() -> Checkpoint {
        Checkpoint {
            model: ModelConfig {
                vocab: 256,
                layers: 1,
                width: 8,
                heads: 2,
                context: 4,
                mlp_ratio: 4,
                residual: ResidualMode::Mhc,
                streams: 4,
            },
            train: TrainConfig {
                steps: 10,
                batch: 2,
                lr: 1e-3,
                min_lr: 1e-4,
                warmup: 2,
                weight_decay: 0.1,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                clip: 1.0,
                seed: 3,
                eval_every: 5,
                eval_batches: 1,
                checkpoint_every: 0,
                dynamic_lr_scale: 0.1,
                site_weight_decay: true,
            },
            step: 7,
            tensors: vec![
                Tensor {
                    name: "a".into(),
                    shape: vec![2, 3],
                    data: vec![1.0, -2.0, 3.5, 0.0, 1e-30, 7.0],
                },
                Tensor {
                    name: "b".into(),
                    shape: vec![1],
                    data: vec![f32::MAX],
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_validation() {
        let dir = std::env::temp_dir().join(format!("mhc-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = checkpoint_path(&dir);
        let ck = sample();
        ck.save(&path).unwrap();
        assert!(!path.with_extension("safetensors.tmp").exists());
        let mut back = Checkpoint::load(&path).unwrap();
        assert_eq!(back, ck);
        back.check_against(&ck.model, &ck.train).unwrap();
        let mut other = ck.model.clone();
        other.width = 16;
        assert!(back
            .check_against(&other, &ck.train)
            .unwrap_err()
            .to_string()
            .contains("model settings"));
        assert!(back
            .take("a", &[3, 2])
            .unwrap_err()
            .to_string()
            .contains("shape"));
        let mut back = Checkpoint::load(&path).unwrap();
        back.take("a", &[2, 3]).unwrap();
        assert!(back.finish().unwrap_err().to_string().contains("`b`"));
        // A torn file is refused with a clear message.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(Checkpoint::load(&path)
            .unwrap_err()
            .to_string()
            .contains("not a valid safetensors"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
