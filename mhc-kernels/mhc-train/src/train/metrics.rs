//! Per-step metrics: the JSONL record, its file (truncated to the resumed step
//! on resume so a resumed run's file reads like an uninterrupted one), and the
//! Amax gain magnitudes of H_res (mhc-spec.md, "Metrics").

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Amax gain magnitudes of H_res, each the maximum over the sampled tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmaxGain {
    /// Per site (attention and MLP of each layer, in order): max row sum of |H_res|.
    pub sites_forward: Vec<f32>,
    /// Per site: max column sum of |H_res|.
    pub sites_backward: Vec<f32>,
    /// The product H_res(last site) ⋯ H_res(first site): max row sum.
    pub composite_forward: f32,
    /// The same product: max column sum.
    pub composite_backward: f32,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: u64,
    pub loss: f32,
    /// Only on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f32>,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f32,
    pub lr: f32,
    pub tokens_per_s: f64,
    /// GPU only: device memory in use after the forward (the activation peak), GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<f64>,
    /// Only for `hc` and `mhc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amax: Option<AmaxGain>,
}

fn max_row_sum(m: &[f64], n: usize) -> f64 {
    (0..n)
        .map(|i| (0..n).map(|j| m[i * n + j].abs()).sum::<f64>())
        .fold(0.0, f64::max)
}

fn max_col_sum(m: &[f64], n: usize) -> f64 {
    (0..n)
        .map(|j| (0..n).map(|i| m[i * n + j].abs()).sum::<f64>())
        .fold(0.0, f64::max)
}

/// Amax gains from `h_res[token][site]` (row-major n×n matrices, `x' = H x`).
pub fn amax_gain(h_res: &[Vec<Vec<f32>>], n: usize) -> AmaxGain {
    let sites = h_res.first().map_or(0, |t| t.len());
    let mut g = AmaxGain {
        sites_forward: vec![0.0; sites],
        sites_backward: vec![0.0; sites],
        composite_forward: 0.0,
        composite_backward: 0.0,
    };
    for token in h_res {
        let mut prod: Vec<f64> = (0..n * n).map(|k| f64::from(k / n == k % n)).collect();
        for (s, h) in token.iter().enumerate() {
            let h: Vec<f64> = h.iter().map(|&v| v as f64).collect();
            g.sites_forward[s] = g.sites_forward[s].max(max_row_sum(&h, n) as f32);
            g.sites_backward[s] = g.sites_backward[s].max(max_col_sum(&h, n) as f32);
            // Later sites multiply from the left.
            prod = (0..n * n)
                .map(|k| {
                    (0..n)
                        .map(|m| h[(k / n) * n + m] * prod[m * n + k % n])
                        .sum()
                })
                .collect();
        }
        g.composite_forward = g.composite_forward.max(max_row_sum(&prod, n) as f32);
        g.composite_backward = g.composite_backward.max(max_col_sum(&prod, n) as f32);
    }
    g
}

/// The metrics file of a run directory.
pub fn metrics_path(dir: &Path) -> PathBuf {
    dir.join("metrics.jsonl")
}

/// Read every record of a metrics file. A last line cut short (no final
/// newline, not a whole record: the process died while writing it) is
/// dropped; a bad line anywhere else is an error.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read metrics file `{}`", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let torn_tail = !text.ends_with('\n');
    let mut records = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(r) => records.push(r),
            Err(_) if torn_tail && i + 1 == lines.len() => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("`{}` line {}: not a metrics record", path.display(), i + 1)
                })
            }
        }
    }
    Ok(records)
}

/// Appends records to `metrics.jsonl`, one flushed line each.
pub struct MetricsWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsWriter {
    /// A new file, or (when resuming at `resume_step`) the existing one with
    /// the records of steps ≥ `resume_step` dropped: they are about to be
    /// recomputed.
    pub fn open(dir: &Path, resume_step: Option<u64>) -> Result<MetricsWriter> {
        let path = metrics_path(dir);
        let kept: Vec<Record> = match resume_step {
            Some(step) if path.exists() => read_records(&path)?
                .into_iter()
                .filter(|r| r.step < step)
                .collect(),
            _ => Vec::new(),
        };
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        let mut w = MetricsWriter { file, path };
        for r in &kept {
            w.write(r)?;
        }
        Ok(w)
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(r)?)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("cannot write `{}`", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amax_of_identity_is_one_and_products_compose() {
        let id = vec![1.0, 0.0, 0.0, 1.0];
        let g = amax_gain(&[vec![id.clone(), id]], 2);
        assert_eq!(g.composite_forward, 1.0);
        assert_eq!(g.sites_backward, vec![1.0, 1.0]);
        // [[2, 0], [1, 1]]: row sums 2, 2; column sums 3, 1. Its square is
        // [[4, 0], [3, 1]]: row sums 4, 4; column sums 7, 1.
        let a = vec![2.0, 0.0, 1.0, 1.0];
        let g = amax_gain(&[vec![a.clone(), a]], 2);
        assert_eq!((g.sites_forward[0], g.sites_backward[0]), (2.0, 3.0));
        assert_eq!((g.composite_forward, g.composite_backward), (4.0, 7.0));
    }

    #[test]
    fn composite_multiplies_later_sites_on_the_left() {
        // B·A ≠ A·B: A = [[1, 1], [0, 1]], B = [[1, 0], [2, 1]];
        // B·A = [[1, 1], [2, 3]] (row sums 2, 5); A·B = [[3, 1], [2, 1]] (4, 3).
        let a = vec![1.0, 1.0, 0.0, 1.0];
        let b = vec![1.0, 0.0, 2.0, 1.0];
        let g = amax_gain(&[vec![a, b]], 2);
        assert_eq!(g.composite_forward, 5.0);
    }

    fn record(step: u64) -> Record {
        Record {
            step,
            loss: 1.0,
            val_loss: None,
            grad_norm: 0.5,
            lr: 1e-3,
            tokens_per_s: 10.0,
            memory_gb: None,
            amax: None,
        }
    }

    /// Issue 22.7: a torn last line is dropped (and a resume keeps the
    /// records before its step); a bad line elsewhere is still an error.
    #[test]
    fn a_torn_last_line_is_tolerated() {
        let dir = std::env::temp_dir().join(format!("mhc-metrics-torn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = metrics_path(&dir);
        let whole: String = (0..3)
            .map(|s| serde_json::to_string(&record(s)).unwrap() + "\n")
            .collect();
        let torn = format!("{whole}{{\"step\":3,\"loss\":1.");
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(read_records(&path).unwrap().len(), 3);
        drop(MetricsWriter::open(&dir, Some(2)).unwrap());
        let kept = read_records(&path).unwrap();
        assert_eq!(kept.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 1]);
        std::fs::write(&path, format!("{{\"step\":0,\n{whole}")).unwrap();
        let err = read_records(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
