//! Data-parallel training on one host: one thread per rank, rank r on GPU r
//! (or on the CPU interpreter), each with its own kernels, model and
//! optimiser built exactly as a single-device run builds them (same seed, so
//! the same initial parameters). Rank r takes sequences
//! `[r·B/R, (r+1)·B/R)` of every global batch of B sequences, and divides its
//! loss by the global batch's token count (`Model::set_global_batch`); the
//! gradients are summed over the ranks during the backward
//! (`Model::forward_backward` with a [`Collective`]), which gives the global
//! mean loss's gradient on every rank, so every rank applies the same update
//! to the same parameters.
//!
//! Scalars (losses, rank 0's gradient norm and interrupt flag, H_res samples)
//! go through the [`HostGroup`] in rank order, so every rank takes the same
//! decisions (stop, clip, non-finite). A rank that fails aborts the group:
//! the others return at their next exchange instead of waiting for it.

use super::run::{CollectiveChoice, DeviceChoice, Options, Summary};
use anyhow::{anyhow, bail, Context, Result};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tile_runtime::collective::{nccl_prepare, Collective, HostGroup, NcclId};
use tile_runtime::Device;

/// After one rank failed, how long the others get to notice and return. A
/// rank stuck in a GPU wait on an NCCL reduction its failed peer never joined
/// cannot notice; it is left behind (the process ends when `main` returns).
const GRACE: Duration = Duration::from_secs(60);

/// How gradients are summed over the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reduction {
    /// The host stand-in (rank-ordered sums through host memory).
    Host,
    /// NCCL all-reduce on a stream of its own.
    Nccl,
}

/// The validated layout of a run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub ranks: usize,
    /// The ranks run on GPUs (else on the CPU interpreter).
    pub gpu: bool,
    /// `None`: one rank and no collective, the single-device code path.
    pub reduction: Option<Reduction>,
    device: DeviceChoice,
}

impl Plan {
    /// Check `--ranks`, `--collective` and `--batch` against each other and
    /// against the machine.
    pub fn new(opts: &Options) -> Result<Plan> {
        let ranks = opts.ranks;
        if ranks == 0 {
            bail!("--ranks must be at least 1");
        }
        let batch = opts.train.batch;
        if !batch.is_multiple_of(ranks) {
            bail!(
                "--batch {batch} is not a multiple of --ranks {ranks}: every rank takes \
                 --batch / --ranks sequences of each step's batch"
            );
        }
        let gpu = match opts.device {
            DeviceChoice::Cpu => false,
            DeviceChoice::Gpu => true,
            DeviceChoice::Auto => Device::gpu_unavailable_reason().is_none(),
        };
        let reduction = match (opts.collective, gpu) {
            (CollectiveChoice::Auto, _) if ranks == 1 => None,
            (CollectiveChoice::Auto, true) | (CollectiveChoice::Nccl, true) => {
                Some(Reduction::Nccl)
            }
            (CollectiveChoice::Auto, false) | (CollectiveChoice::Host, _) => Some(Reduction::Host),
            (CollectiveChoice::Nccl, false) => bail!(
                "--collective nccl needs GPUs (--device gpu); on the CPU use --collective host"
            ),
        };
        if gpu && reduction.is_some() {
            let count = Device::gpu_count();
            if ranks > count {
                bail!(
                    "--ranks {ranks} needs {ranks} GPU{}, this machine has {count} (one rank per \
                     GPU; --device cpu runs the ranks on the CPU)",
                    if ranks == 1 { "" } else { "s" }
                );
            }
        }
        Ok(Plan {
            ranks,
            gpu,
            reduction,
            device: opts.device,
        })
    }

    /// The device of `rank`.
    pub fn open_device(&self, rank: usize) -> Result<Device> {
        match self.device {
            DeviceChoice::Cpu => Ok(Device::cpu()),
            // A single-device run falls back to the CPU, as it always did.
            DeviceChoice::Auto if self.reduction.is_none() => {
                Ok(Device::cuda(0).unwrap_or_else(|_| Device::cpu()))
            }
            DeviceChoice::Auto if !self.gpu => Ok(Device::cpu()),
            _ if rank == 0 => Device::cuda(0).context("--device gpu"),
            _ => Device::cuda(rank).with_context(|| format!("--device gpu, rank {rank}")),
        }
    }
}

/// One rank's part in a data-parallel run.
pub(super) struct Rank {
    pub rank: usize,
    pub ranks: usize,
    group: Arc<HostGroup>,
    reduction: Reduction,
    nccl_id: Option<NcclId>,
    collective: Option<Collective>,
}

impl Rank {
    /// Sum `values` over the ranks in rank order (every rank gets the same
    /// bits); also a barrier.
    pub fn share(&self, values: &[f64]) -> Result<Vec<f64>> {
        Ok(self.group.all_reduce_f64(self.rank, values)?)
    }

    /// Once this rank is set up: wait for the others (a rank that failed to
    /// set up aborts the group, so nobody waits in NCCL's initialisation for
    /// it), then join the collective.
    pub fn connect(&mut self, device: &Arc<Device>) -> Result<()> {
        self.share(&[0.0])?;
        self.collective = Some(match self.reduction {
            Reduction::Host => Collective::host(self.group.clone(), self.rank, device.clone()),
            Reduction::Nccl => {
                let id = self.nccl_id.expect("an NCCL id for an NCCL run");
                Collective::nccl(device.clone(), self.rank, self.ranks, id)
                    .with_context(|| format!("rank {}: joining NCCL", self.rank))?
            }
        });
        Ok(())
    }

    pub fn collective(&mut self) -> Result<&mut Collective> {
        self.collective
            .as_mut()
            .ok_or_else(|| anyhow!("rank {}: not connected", self.rank))
    }

    /// After the last step: wait for every rank, then shut the collective down.
    pub fn close(&mut self) -> Result<()> {
        self.share(&[0.0])?;
        if let Some(c) = self.collective.take() {
            c.close()?;
        }
        Ok(())
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The body of one rank: builds everything on its device and trains.
pub(super) type RankBody = dyn Fn(Rank) -> Result<Summary> + Send + Sync;

/// Run `body` on `plan.ranks` threads; rank 0's summary, or the first
/// failure's error.
pub(super) fn run_ranks(plan: &Plan, body: Arc<RankBody>) -> Result<Summary> {
    let ranks = plan.ranks;
    let reduction = plan
        .reduction
        .ok_or_else(|| anyhow!("a data-parallel run without a collective"))?;
    // The environment is set here, on the calling thread, before any rank
    // thread exists (see `nccl_prepare`).
    let nccl_id = match reduction {
        Reduction::Nccl => Some(nccl_prepare().context("starting NCCL (--collective nccl)")?),
        Reduction::Host => None,
    };
    let group = HostGroup::new(ranks);
    let first_failure: Arc<Mutex<Option<usize>>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    for rank in 0..ranks {
        let ctx = Rank {
            rank,
            ranks,
            group: group.clone(),
            reduction,
            nccl_id,
            collective: None,
        };
        let (body, rank_group, first, tx) = (
            body.clone(),
            group.clone(),
            first_failure.clone(),
            tx.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("rank {rank}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| body(ctx)))
                    .unwrap_or_else(|p| {
                        Err(anyhow!("rank {rank} panicked: {}", panic_message(&*p)))
                    });
                if let Err(e) = &result {
                    first
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(rank);
                    rank_group.abort(format!("rank {rank} failed: {e:#}"));
                }
                let _ = tx.send((rank, result));
            });
        if let Err(e) = spawned {
            group.abort("a rank thread could not be started");
            return Err(anyhow!(e).context(format!("starting the thread of rank {rank}")));
        }
    }
    drop(tx);
    let mut results: Vec<Option<Result<Summary>>> = (0..ranks).map(|_| None).collect();
    let mut stuck = false;
    for _ in 0..ranks {
        let failed = first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let received = if failed {
            rx.recv_timeout(GRACE).ok()
        } else {
            rx.recv().ok()
        };
        match received {
            Some((rank, result)) => results[rank] = Some(result),
            None => {
                stuck = true;
                break;
            }
        }
    }
    let failed = *first_failure.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rank) = failed {
        let err = match results[rank].take() {
            Some(Err(e)) => e,
            _ => anyhow!("rank {rank} failed"),
        };
        if stuck {
            let left: Vec<usize> = (0..ranks).filter(|&r| results[r].is_none()).collect();
            return Err(anyhow!(
                "{err:#}\n(ranks {left:?} did not stop within {} s of this failure and were left \
                 behind)",
                GRACE.as_secs()
            ));
        }
        return Err(err);
    }
    match results[0].take() {
        Some(r) => r,
        None => Err(anyhow!("rank 0 returned nothing")),
    }
}
