//! Device time per kernel and per phase: while a [`Profiler`] is attached to
//! a [`KernelSet`](crate::kernels::KernelSet), every launch through it (and
//! every operation a caller times with [`Profiler::time`], such as a cuBLAS
//! GEMM) runs between two [`Mark`]s: CUDA events on a GPU, the wall clock
//! on the CPU. Nothing waits until [`Profiler::take`], so the device runs
//! ahead of the host as it does unprofiled; each launch costs two event
//! records more.

use std::collections::BTreeMap;
use std::sync::Mutex;
use tile_runtime::{Device, Mark, RuntimeError};

/// One timed operation, waiting to be read.
struct Span {
    name: String,
    phase: &'static str,
    start: Mark,
    end: Mark,
}

/// Collects [`Span`]s; see the module documentation.
pub struct Profiler {
    phase: Mutex<&'static str>,
    spans: Mutex<Vec<Span>>,
}

/// The device time of one operation in one phase, over everything recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub phase: &'static str,
    pub name: String,
    pub calls: usize,
    pub ms: f64,
}

impl Default for Profiler {
    fn default() -> Self {
        Profiler::new()
    }
}

impl Profiler {
    pub fn new() -> Profiler {
        Profiler {
            phase: Mutex::new("other"),
            spans: Mutex::new(Vec::new()),
        }
    }

    /// What the operations recorded from now on belong to (`forward`,
    /// `backward`, `optimiser`, …).
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().expect("profiler phase") = phase;
    }

    /// Run `f` between two marks on `device`, recorded under `name`.
    pub fn time<R, E: From<RuntimeError>>(
        &self,
        device: &Device,
        name: &str,
        f: impl FnOnce() -> Result<R, E>,
    ) -> Result<R, E> {
        let start = device.mark()?;
        let r = f()?;
        let end = device.mark()?;
        let phase = *self.phase.lock().expect("profiler phase");
        self.spans.lock().expect("profiler spans").push(Span {
            name: name.to_string(),
            phase,
            start,
            end,
        });
        Ok(r)
    }

    /// Wait for everything recorded and sum it by (phase, name), the
    /// costliest first; the record starts over.
    pub fn take(&self) -> Result<Vec<Timing>, RuntimeError> {
        let spans = std::mem::take(&mut *self.spans.lock().expect("profiler spans"));
        let mut sums: BTreeMap<(&'static str, String), (usize, f64)> = BTreeMap::new();
        for s in spans {
            let ms = s.end.ms_since(&s.start)? as f64;
            let e = sums.entry((s.phase, s.name)).or_default();
            e.0 += 1;
            e.1 += ms;
        }
        let mut out: Vec<Timing> = sums
            .into_iter()
            .map(|((phase, name), (calls, ms))| Timing {
                phase,
                name,
                calls,
                ms,
            })
            .collect();
        out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(out)
    }
}

/// A Markdown report of `timings` over `steps` steps of `wall_ms` each
/// (median wall time): per phase, then the `top` costliest operations, each
/// in milliseconds per step and as a share of the wall time of a step. The
/// gap between the wall time and the device time summed is where the device
/// waited for the host.
pub fn report(timings: &[Timing], steps: usize, wall_ms: f64, top: usize) -> String {
    let steps = steps.max(1) as f64;
    let share = |ms: f64| 100.0 * ms / steps / wall_ms.max(f64::MIN_POSITIVE);
    let mut phases: BTreeMap<&str, f64> = BTreeMap::new();
    for t in timings {
        *phases.entry(t.phase).or_default() += t.ms;
    }
    let busy: f64 = phases.values().sum();
    let mut s = format!(
        "| phase | device ms per step | share of the step ({wall_ms:.2} ms wall) |\n|---|---|---|\n"
    );
    let mut by_time: Vec<_> = phases.into_iter().collect();
    by_time.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (phase, ms) in by_time {
        s += &format!("| {phase} | {:.3} | {:.1}% |\n", ms / steps, share(ms));
    }
    s += &format!(
        "| (device idle: waiting for the host) | {:.3} | {:.1}% |\n\n",
        (wall_ms - busy / steps).max(0.0),
        (100.0 - share(busy)).max(0.0)
    );
    s += "| operation | phase | calls per step | device ms per step | share of the step |\n|---|---|---|---|---|\n";
    for t in timings.iter().take(top) {
        s += &format!(
            "| {} | {} | {:.0} | {:.3} | {:.1}% |\n",
            t.name,
            t.phase,
            t.calls as f64 / steps,
            t.ms / steps,
            share(t.ms)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_sum_by_phase_and_name() {
        let d = Device::cpu();
        let p = Profiler::new();
        p.set_phase("forward");
        for _ in 0..3 {
            p.time(&d, "a", || {
                std::thread::sleep(std::time::Duration::from_millis(2));
                Ok::<_, RuntimeError>(())
            })
            .unwrap();
        }
        p.set_phase("backward");
        p.time(&d, "a", || Ok::<_, RuntimeError>(())).unwrap();
        let t = p.take().unwrap();
        assert_eq!(t.len(), 2);
        let fwd = t.iter().find(|t| t.phase == "forward").unwrap();
        assert_eq!((fwd.name.as_str(), fwd.calls), ("a", 3));
        assert!(fwd.ms >= 6.0, "{t:?}");
        assert_eq!(t[0].phase, "forward", "costliest first: {t:?}");
        assert!(p.take().unwrap().is_empty(), "take starts over");
        let r = report(&t, 1, 10.0, 5);
        assert!(
            r.contains("| forward |") && r.contains("| a | forward | 3 |"),
            "{r}"
        );
    }
}
