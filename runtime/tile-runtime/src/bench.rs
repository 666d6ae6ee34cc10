//! Timing protocol for GPU benchmarks: warm-up by time budget, an L2 flush
//! (zeroing a buffer twice the size of the largest L2 we target) before every
//! timed run, CUDA events around the run, median with p20/p80.

use crate::{Device, RuntimeError};

/// Bytes zeroed before each timed run: 2× the H200's 60 MB L2, rounded up.
const L2_FLUSH_BYTES: usize = 128 << 20;

#[derive(Clone, Debug)]
pub struct Timing {
    pub median_ms: f64,
    pub p20_ms: f64,
    pub p80_ms: f64,
    pub samples: usize,
}

/// Time `f` on `device`: `warmup_ms` of untimed runs, then up to `reps` timed
/// runs (at least 5) within `budget_ms`, each after an L2 flush.
pub fn time(
    device: &Device,
    warmup_ms: f64,
    reps: usize,
    budget_ms: f64,
    f: &mut dyn FnMut() -> Result<(), RuntimeError>,
) -> Result<Timing, RuntimeError> {
    let mut flush = device.alloc(crate::Scalar::I32, L2_FLUSH_BYTES / 4)?;
    let t0 = std::time::Instant::now();
    loop {
        f()?;
        device.synchronize()?;
        if t0.elapsed().as_secs_f64() * 1e3 >= warmup_ms {
            break;
        }
    }
    let mut times = Vec::new();
    let t1 = std::time::Instant::now();
    while times.len() < reps.max(5) {
        device.zero(&mut flush)?;
        times.push(device.time_ms(f)? as f64);
        if times.len() >= 5 && t1.elapsed().as_secs_f64() * 1e3 > budget_ms {
            break;
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    Ok(Timing {
        median_ms: q(0.5),
        p20_ms: q(0.2),
        p80_ms: q(0.8),
        samples: times.len(),
    })
}
