//! Checkpoints: every parameter and its AdamW moments as f32 safetensors, with
//! the model and training settings and the next step in the header metadata.
//! Written to a temporary file and renamed, so a crash or a failed step never
//! leaves a torn checkpoint; validated on load (format, settings, names,
//! shapes, dtypes, each tensor's SHA-256) before anything is used.
//!
//! The file is written here, not by `safetensors::serialize`, so that the
//! same checkpoint always has the same bytes: the header's keys are sorted
//! (the metadata is a hash map there, in a random order per run).

use super::config::{ModelConfig, TrainConfig};
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tile_ir::pack::sha256_hex;

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
    /// The data the run trains on (`None` in checkpoints written before it
    /// was recorded: then it is not checked).
    pub data: Option<DataRecord>,
    pub tensors: Vec<Tensor>,
}

/// The data settings of a run: a resumed run must train on the same bytes
/// split the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// Where the bytes came from (`--data`'s path or the built-in corpus).
    pub source: String,
    /// SHA-256 of the whole file (or corpus), hex.
    pub sha256: String,
    pub val_fraction: f64,
}

/// The checkpoint file of a run directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

impl Checkpoint {
    /// The file's bytes: an 8-byte header length, the JSON header (keys in
    /// sorted order, padded with spaces to a multiple of 8) and the tensors'
    /// little-endian f32 data in the header's order.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<&Tensor> = self.tensors.iter().collect();
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let mut sums = BTreeMap::new();
        let mut header = BTreeMap::new();
        let mut payload = Vec::new();
        for t in &tensors {
            if t.shape.iter().product::<usize>() != t.data.len() {
                bail!(
                    "tensor `{}`: shape {:?} does not match its {} values",
                    t.name,
                    t.shape,
                    t.data.len()
                );
            }
            let bytes: Vec<u8> = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            sums.insert(t.name.clone(), sha256_hex(&bytes));
            let begin = payload.len();
            payload.extend_from_slice(&bytes);
            header.insert(
                t.name.clone(),
                serde_json::json!({
                    "dtype": "F32",
                    "shape": t.shape,
                    "data_offsets": [begin, payload.len()],
                }),
            );
        }
        let mut meta = BTreeMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("model".to_string(), serde_json::to_string(&self.model)?),
            ("train".to_string(), serde_json::to_string(&self.train)?),
            ("step".to_string(), self.step.to_string()),
            ("sha256".to_string(), serde_json::to_string(&sums)?),
        ]);
        if let Some(d) = &self.data {
            meta.insert("data".to_string(), serde_json::to_string(d)?);
        }
        header.insert("__metadata__".to_string(), serde_json::to_value(&meta)?);
        // A BTreeMap serialises in key order whatever serde_json's features.
        let mut json = serde_json::to_string(&header)?.into_bytes();
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + json.len() + payload.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Write atomically: a temporary file in the same directory, synced, then renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let data = self.to_bytes()?;
        let tmp = path.with_extension("safetensors.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write checkpoint `{}`", tmp.display()));
        }
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
        let data: Option<DataRecord> = meta
            .get("data")
            .map(|d| serde_json::from_str(d))
            .transpose()
            .with_context(|| format!("{}: unreadable data settings", what()))?;
        // Checkpoints written before the checksums existed have none.
        let sums: Option<BTreeMap<String, String>> = meta
            .get("sha256")
            .map(|d| serde_json::from_str(d))
            .transpose()
            .with_context(|| format!("{}: unreadable checksums", what()))?;
        if let Some(sums) = &sums {
            if sums.len() != st.len() {
                bail!(
                    "{} is corrupted: {} checksums for {} tensors",
                    what(),
                    sums.len(),
                    st.len()
                );
            }
        }
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                bail!(
                    "{}: tensor `{name}` is {:?}, expected F32",
                    what(),
                    view.dtype()
                );
            }
            if let Some(sums) = &sums {
                let want = sums.get(&name).ok_or_else(|| {
                    anyhow!("{} is corrupted: tensor `{name}` has no checksum", what())
                })?;
                if &sha256_hex(view.data()) != want {
                    bail!(
                        "{} is corrupted: tensor `{name}` does not match its SHA-256 checksum \
                         (the file was left as it is; resume from a good copy or start over)",
                        what()
                    );
                }
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
            data,
            tensors,
        })
    }

    /// Refuse to resume a different run: settings must match exactly.
    pub fn check_against(
        &self,
        model: &ModelConfig,
        train: &TrainConfig,
        data: &DataRecord,
    ) -> Result<()> {
        if let Some(d) = &self.data {
            if d.sha256 != data.sha256 {
                bail!(
                    "--data differs from the checkpoint's: it trained on {} (SHA-256 {}), this \
                     run reads {} (SHA-256 {}); resume with the same data",
                    d.source,
                    d.sha256,
                    data.source,
                    data.sha256
                );
            }
            if d.val_fraction != data.val_fraction {
                bail!(
                    "--val-fraction differs from the checkpoint's: {} there, {} here",
                    d.val_fraction,
                    data.val_fraction
                );
            }
        }
        let (a, b) = (
            serde_json::to_value(&self.train)?,
            serde_json::to_value(train)?,
        );
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            if let Some((k, v)) = a.iter().find(|(k, v)| b.get(*k) != Some(*v)) {
                bail!(
                    "--{} differs from the checkpoint's: {v} there, {} here (resume with the \
                     same flags)",
                    flag_name(k),
                    b.get(k).map_or("none".to_string(), |x| x.to_string())
                );
            }
        }
        let (a, b) = (
            serde_json::to_value(&self.model)?,
            serde_json::to_value(model)?,
        );
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            if let Some((k, v)) = a.iter().find(|(k, v)| b.get(*k) != Some(*v)) {
                bail!(
                    "the checkpoint's model settings differ from this run's: --{} is {v} there, \
                     {} here",
                    flag_name(k),
                    b.get(k).map_or("none".to_string(), |x| x.to_string())
                );
            }
        }
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

/// The command-line flag of a setting's field name.
fn flag_name(field: &str) -> String {
    match field {
        "eps" => "adam-eps".to_string(),
        f => f.replace('_', "-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::ResidualMode;

    fn data_record() -> DataRecord {
        DataRecord {
            source: "`a.txt`".into(),
            sha256: sha256_hex(b"abc"),
            val_fraction: 0.1,
        }
    }

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
                precision: Default::default(),
                attention_backward: Default::default(),
                mlp_gemm: Default::default(),
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
            data: Some(data_record()),
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
        back.check_against(&ck.model, &ck.train, &data_record())
            .unwrap();
        let mut other = ck.model.clone();
        other.width = 16;
        assert!(back
            .check_against(&other, &ck.train, &data_record())
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

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mhc-ckpt-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Issue 22.1: one flipped bit inside a tensor is refused, naming the
    /// file and the tensor, and the file is left as it was.
    #[test]
    fn a_flipped_bit_is_refused() {
        let dir = temp("flip");
        let path = checkpoint_path(&dir);
        sample().save(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // The last tensor's ("b", f32::MAX) last byte: flip its lowest bit.
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("corrupted")
                && err.contains("`b`")
                && err.contains("checkpoint.safetensors"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 22.8: the same checkpoint always has the same bytes.
    #[test]
    fn the_same_checkpoint_has_the_same_bytes() {
        let dir = temp("bytes");
        let ck = sample();
        let mut files = Vec::new();
        for i in 0..4 {
            let path = dir.join(format!("c{i}.safetensors"));
            ck.save(&path).unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(files[0], ck.to_bytes().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 22.2: other data or another split is refused, naming the flag.
    #[test]
    fn other_data_or_settings_are_refused() {
        let ck = sample();
        let mut d = data_record();
        d.sha256 = sha256_hex(b"abd");
        let err = ck.check_against(&ck.model, &ck.train, &d).unwrap_err();
        assert!(err.to_string().contains("--data differs"), "{err}");
        let mut d = data_record();
        d.val_fraction = 0.5;
        let err = ck.check_against(&ck.model, &ck.train, &d).unwrap_err();
        assert!(err.to_string().contains("--val-fraction differs"), "{err}");
        let mut t = ck.train.clone();
        t.eps = 1e-6;
        let err = ck.check_against(&ck.model, &t, &data_record()).unwrap_err();
        assert!(err.to_string().contains("--adam-eps differs"), "{err}");
        // A checkpoint from before the data was recorded is not checked.
        let old = Checkpoint {
            data: None,
            ..ck.clone()
        };
        let mut d = data_record();
        d.sha256.clear();
        old.check_against(&ck.model, &ck.train, &d).unwrap();
    }
}
