//! Summing f32 buffers across the ranks of a data-parallel job (one thread per
//! rank, each with its own [`Device`]), in place.
//!
//! A [`Collective`] is one rank's handle. Two kinds behave the same to the
//! caller, so the training code is identical for both:
//!
//! - [`Collective::nccl`]: NCCL's all-reduce (through cudarc's NCCL bindings,
//!   loaded at run time) on a stream of its own, so the reduction of one
//!   group of buffers overlaps whatever the device computes next.
//!   [`Collective::reduce_ready`] enqueues, [`Collective::finish`] orders the
//!   compute stream after every reduction enqueued so far.
//! - [`Collective::host`]: a stand-in on the host for any device (the CPU
//!   interpreter, or GPUs without NCCL): each rank downloads its buffers, the
//!   ranks meet in a [`HostGroup`], the sum is taken in rank order 0, 1, …,
//!   R−1 (so every rank gets the same bits, run after run) and uploaded.
//!   It reduces synchronously inside `reduce_ready`; `finish` has nothing left
//!   to do.
//!
//! Every rank must hand over the same buffers (same lengths) in the same order.
//! A [`HostGroup`] also carries the small host exchanges of a job (losses,
//! flags: [`HostGroup::all_reduce_f64`]) and its failure signal:
//! [`HostGroup::abort`] makes every rank waiting in, or later entering, an
//! exchange return an error instead of waiting for a rank that is gone.
//!
//! NCCL reads its environment when it starts; [`nccl_prepare`] sets
//! `NCCL_NVLS_ENABLE=0` (NVLink SHARP multicast stays off) and must run before
//! the rank threads start (see its doc).

use crate::{Buffer, Device, Element, RuntimeError, Scalar, Storage};
use cudarc::driver::{sys as cu, CudaEvent, CudaStream, DevicePtrMut};
use cudarc::nccl::{result as nccl, sys as nccl_sys};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};

fn coll_err(message: impl Into<String>) -> RuntimeError {
    RuntimeError::Collective(message.into())
}

/// What one rank contributes to one exchange.
enum Part {
    F32(Vec<Vec<f32>>),
    F64(Vec<f64>),
}

impl Part {
    fn shape(&self) -> String {
        match self {
            Part::F32(bufs) => format!(
                "f32 buffers of lengths {:?}",
                bufs.iter().map(Vec::len).collect::<Vec<_>>()
            ),
            Part::F64(v) => format!("{} f64 values", v.len()),
        }
    }
}

/// Elementwise sum in rank order: `((p0 + p1) + p2) + …`.
fn sum_in_rank_order(mut parts: Vec<Part>) -> Result<Part, String> {
    let first = parts.remove(0);
    let shape = first.shape();
    let mismatch = |r: usize, p: &Part| {
        format!(
            "the ranks disagree on what to reduce: rank 0 gave {shape}, rank {r} gave {}",
            p.shape()
        )
    };
    match first {
        Part::F32(mut acc) => {
            for (i, p) in parts.iter().enumerate() {
                match p {
                    Part::F32(bufs)
                        if bufs.len() == acc.len()
                            && bufs.iter().zip(&acc).all(|(a, b)| a.len() == b.len()) =>
                    {
                        for (a, b) in acc.iter_mut().zip(bufs) {
                            for (x, y) in a.iter_mut().zip(b) {
                                *x += *y;
                            }
                        }
                    }
                    p => return Err(mismatch(i + 1, p)),
                }
            }
            Ok(Part::F32(acc))
        }
        Part::F64(mut acc) => {
            for (i, p) in parts.iter().enumerate() {
                match p {
                    Part::F64(v) if v.len() == acc.len() => {
                        for (x, y) in acc.iter_mut().zip(v) {
                            *x += *y;
                        }
                    }
                    p => return Err(mismatch(i + 1, p)),
                }
            }
            Ok(Part::F64(acc))
        }
    }
}

struct Round {
    /// Completed exchanges.
    generation: u64,
    /// This round's contributions, by rank.
    parts: Vec<Option<Part>>,
    /// The sum of the last completed round.
    result: Option<Arc<Part>>,
    /// Why the group stopped (the first reason given).
    aborted: Option<String>,
}

/// The meeting point of the ranks of one job (threads of one process): sums
/// in rank order, and an abort that releases every waiting rank.
pub struct HostGroup {
    ranks: usize,
    round: Mutex<Round>,
    wake: Condvar,
}

impl HostGroup {
    pub fn new(ranks: usize) -> Arc<HostGroup> {
        Arc::new(HostGroup {
            ranks: ranks.max(1),
            round: Mutex::new(Round {
                generation: 0,
                parts: (0..ranks.max(1)).map(|_| None).collect(),
                result: None,
                aborted: None,
            }),
            wake: Condvar::new(),
        })
    }

    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// The state survives a panicking rank: everything in it stays consistent
    /// between statements, and a panicking rank is reported through `abort`.
    fn lock(&self) -> MutexGuard<'_, Round> {
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop the group: every rank in, or later entering, an exchange gets an
    /// error carrying `reason` (the first reason given wins).
    pub fn abort(&self, reason: impl Into<String>) {
        let mut round = self.lock();
        if round.aborted.is_none() {
            round.aborted = Some(reason.into());
        }
        drop(round);
        self.wake.notify_all();
    }

    /// The reason of the first [`HostGroup::abort`], if any.
    pub fn aborted(&self) -> Option<String> {
        self.lock().aborted.clone()
    }

    /// Wait for every rank's contribution and return their sum.
    fn exchange(&self, rank: usize, part: Part) -> Result<Arc<Part>, RuntimeError> {
        if rank >= self.ranks {
            return Err(coll_err(format!(
                "rank {rank} in a group of {} ranks",
                self.ranks
            )));
        }
        let mut round = self.lock();
        if let Some(why) = &round.aborted {
            return Err(coll_err(format!("aborted: {why}")));
        }
        if round.parts[rank].is_some() {
            return Err(coll_err(format!("rank {rank} entered an exchange twice")));
        }
        round.parts[rank] = Some(part);
        let generation = round.generation;
        if round.parts.iter().all(Option::is_some) {
            let parts = round.parts.iter_mut().map(|p| p.take().unwrap()).collect();
            match sum_in_rank_order(parts) {
                Ok(sum) => {
                    let sum = Arc::new(sum);
                    round.result = Some(sum.clone());
                    round.generation += 1;
                    drop(round);
                    self.wake.notify_all();
                    Ok(sum)
                }
                Err(why) => {
                    round.aborted = Some(why.clone());
                    drop(round);
                    self.wake.notify_all();
                    Err(coll_err(why))
                }
            }
        } else {
            loop {
                round = self.wake.wait(round).unwrap_or_else(|e| e.into_inner());
                // The round this rank joined completed: its sum is the latest
                // result (the next round cannot complete without this rank).
                if round.generation != generation {
                    return Ok(round.result.clone().expect("a completed round has a sum"));
                }
                if let Some(why) = &round.aborted {
                    return Err(coll_err(format!("aborted: {why}")));
                }
            }
        }
    }

    /// Sum `values` over the ranks, in rank order (the same bits on every
    /// rank). Blocks until every rank has called it.
    pub fn all_reduce_f64(&self, rank: usize, values: &[f64]) -> Result<Vec<f64>, RuntimeError> {
        match &*self.exchange(rank, Part::F64(values.to_vec()))? {
            Part::F64(sum) => Ok(sum.clone()),
            Part::F32(_) => Err(coll_err("an f64 exchange met an f32 one")),
        }
    }

    /// Sum each of `bufs` over the ranks, in rank order.
    pub fn all_reduce_f32(
        &self,
        rank: usize,
        bufs: Vec<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>, RuntimeError> {
        match &*self.exchange(rank, Part::F32(bufs))? {
            Part::F32(sum) => Ok(sum.clone()),
            Part::F64(_) => Err(coll_err("an f32 exchange met an f64 one")),
        }
    }
}

/// Set NCCL's environment (once per process) and make the job's NCCL id.
///
/// NCCL reads `NCCL_*` variables when it initialises; this sets
/// `NCCL_NVLS_ENABLE=0` first (NVLink SHARP multicast objects are not
/// available to us, and NCCL would otherwise try them on NVSwitch machines).
/// Setting a variable while other threads read the environment is a data race
/// in libc, so call this from the main thread before the rank threads (and
/// anything else that might call `getenv`) start.
pub fn nccl_prepare() -> Result<NcclId, RuntimeError> {
    nccl_env();
    NcclId::new()
}

/// Only the environment part of [`nccl_prepare`] (the same threading rule
/// applies): a binary calls it first thing in `main`, before any thread.
pub fn nccl_env() {
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        if std::env::var("NCCL_NVLS_ENABLE").as_deref() != Ok("0") {
            std::env::set_var("NCCL_NVLS_ENABLE", "0");
        }
    });
}

/// Whether NCCL's library can be loaded (cudarc looks for `libnccl.so` and
/// versioned names such as `libnccl.so.2`'s development symlink).
pub fn nccl_available() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { nccl_sys::is_culib_present() }
}

fn nccl_missing() -> RuntimeError {
    coll_err(
        "libnccl.so.2 not found: NCCL is loaded as `libnccl.so` (the libnccl-dev package's link \
         to libnccl.so.2); install libnccl2 and libnccl-dev, or put a libnccl.so on \
         LD_LIBRARY_PATH, or use --collective host",
    )
}

fn nccl_error(what: &str, e: nccl::NcclError) -> RuntimeError {
    // SAFETY: ncclGetErrorString returns a static string for any result code.
    let text = unsafe {
        let p = nccl_sys::ncclGetErrorString(e.0);
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    coll_err(format!("NCCL {what}: {:?} ({text})", e.0))
}

fn drv(e: cudarc::driver::DriverError) -> RuntimeError {
    RuntimeError::Cuda(e.to_string())
}

/// The id every rank of one NCCL job joins with (made once, by the main thread).
#[derive(Clone, Copy)]
pub struct NcclId(nccl_sys::ncclUniqueId);

impl NcclId {
    /// Call [`nccl_prepare`] instead, unless the environment is already set.
    pub fn new() -> Result<NcclId, RuntimeError> {
        if !nccl_available() {
            return Err(nccl_missing());
        }
        // cudarc panics when a symbol is missing (an NCCL too old for it).
        match std::panic::catch_unwind(nccl::get_uniqueid) {
            Ok(Ok(id)) => Ok(NcclId(id)),
            Ok(Err(e)) => Err(nccl_error("ncclGetUniqueId", e)),
            Err(_) => Err(coll_err(
                "the NCCL library could not be used (a missing symbol?)",
            )),
        }
    }
}

/// One rank's NCCL communicator and its own stream.
struct NcclRank {
    device: Arc<Device>,
    comm: nccl_sys::ncclComm_t,
    /// A non-blocking stream created here, wrapped without registering it as
    /// one of the context's streams (see `Collective::nccl`).
    stream: Arc<CudaStream>,
    /// Recorded on the compute stream before each group of reductions.
    ready: CudaEvent,
    /// Recorded on the communication stream by `finish`.
    done: CudaEvent,
    /// Reductions enqueued since the last `finish`.
    pending: bool,
    /// `close` ran: the communicator was finalised and destroyed.
    closed: bool,
}

// SAFETY: the communicator is a handle that NCCL lets any one thread use at
// a time; `&mut self` on every use keeps it to one (the type is not `Sync`).
unsafe impl Send for NcclRank {}

enum Kind {
    Host {
        group: Arc<HostGroup>,
        rank: usize,
        device: Arc<Device>,
    },
    Nccl(NcclRank),
}

/// One rank's handle for summing f32 buffers over the ranks, in place (see
/// the module doc).
pub struct Collective {
    kind: Kind,
    rank: usize,
    ranks: usize,
}

impl Collective {
    /// The host stand-in, on any device.
    pub fn host(group: Arc<HostGroup>, rank: usize, device: Arc<Device>) -> Collective {
        let ranks = group.ranks();
        Collective {
            kind: Kind::Host {
                group,
                rank,
                device,
            },
            rank,
            ranks,
        }
    }

    /// Join the NCCL job `id` as `rank` of `ranks` on a CUDA device. Blocks
    /// until every rank has joined. Call [`nccl_prepare`] first.
    pub fn nccl(
        device: Arc<Device>,
        rank: usize,
        ranks: usize,
        id: NcclId,
    ) -> Result<Collective, RuntimeError> {
        let Device::Cuda(d) = &*device else {
            return Err(coll_err("NCCL needs a CUDA device"));
        };
        if !nccl_available() {
            return Err(nccl_missing());
        }
        d.ctx.bind_to_thread().map_err(drv)?;
        // Synchronisation between the two streams is explicit (events in
        // `reduce_ready` and `finish`). The stream is made with the raw driver
        // call and wrapped as "borrowed" on purpose: `CudaContext::new_stream`
        // would switch the whole context into cudarc's multi-stream mode, in
        // which every kernel launch records and waits on per-buffer events (a
        // few driver calls per buffer argument of every launch). The compute
        // stream is the legacy default stream; this one is non-blocking, so
        // it does not serialise with it implicitly and the all-reduce can run
        // beside the rest of the backward.
        let raw = cudarc::driver::result::stream::create(
            cudarc::driver::result::stream::StreamKind::NonBlocking,
        )
        .map_err(drv)?;
        // SAFETY: `raw` belongs to this context and lives until `Drop`
        // destroys it, after the wrapper's last use.
        let stream = unsafe { d.ctx.wrap_borrowed_stream(raw) };
        let flags = Some(cu::CUevent_flags::CU_EVENT_DISABLE_TIMING);
        let ready = d.ctx.new_event(flags).map_err(drv)?;
        let done = d.ctx.new_event(flags).map_err(drv)?;
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: `comm` is written by NCCL on success; the id came from
        // ncclGetUniqueId and is shared by every rank of this job.
        let comm = unsafe {
            match nccl::comm_init_rank(comm.as_mut_ptr(), ranks as i32, id.0, rank as i32) {
                Ok(_) => comm.assume_init(),
                Err(e) => {
                    let _ = cudarc::driver::result::stream::destroy(raw);
                    return Err(nccl_error("ncclCommInitRank", e));
                }
            }
        };
        Ok(Collective {
            kind: Kind::Nccl(NcclRank {
                device,
                comm,
                stream,
                ready,
                done,
                pending: false,
                closed: false,
            }),
            rank,
            ranks,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn ranks(&self) -> usize {
        self.ranks
    }

    pub fn is_nccl(&self) -> bool {
        matches!(self.kind, Kind::Nccl(_))
    }

    /// Sum `bufs` (f32, written by work already issued on the device) over
    /// the ranks, in place. NCCL: enqueued on the communication stream after
    /// that work; the results are ordered before later compute only after
    /// [`Collective::finish`]. Host: done when this returns.
    pub fn reduce_ready(&mut self, bufs: &mut [&mut Buffer]) -> Result<(), RuntimeError> {
        if let Some(b) = bufs.iter().find(|b| b.dtype() != Scalar::F32) {
            return Err(coll_err(format!(
                "only f32 buffers are summed, got a {} buffer",
                b.dtype().name()
            )));
        }
        if bufs.is_empty() {
            return Ok(());
        }
        match &mut self.kind {
            Kind::Host {
                group,
                rank,
                device,
            } => {
                let mine = bufs
                    .iter()
                    .map(|b| device.download::<f32>(b))
                    .collect::<Result<Vec<_>, _>>()?;
                let sums = group.all_reduce_f32(*rank, mine)?;
                for (b, s) in bufs.iter_mut().zip(sums) {
                    device.write(b, &f32::to_bytes(&s))?;
                }
                Ok(())
            }
            Kind::Nccl(n) => n.reduce(bufs),
        }
    }

    /// Order the device's compute stream after every reduction so far.
    pub fn finish(&mut self) -> Result<(), RuntimeError> {
        match &mut self.kind {
            Kind::Host { .. } => Ok(()),
            Kind::Nccl(n) => n.finish(),
        }
    }

    /// Shut down cleanly once every rank is done (NCCL: finalise and destroy
    /// the communicator). Dropping a collective without closing it aborts the
    /// communicator instead, which never waits for the other ranks.
    pub fn close(mut self) -> Result<(), RuntimeError> {
        match &mut self.kind {
            Kind::Host { .. } => Ok(()),
            Kind::Nccl(n) => n.close(),
        }
    }
}

impl NcclRank {
    fn cuda(&self) -> &crate::cuda::CudaDevice {
        match &*self.device {
            Device::Cuda(d) => d,
            Device::Cpu => unreachable!("checked in Collective::nccl"),
        }
    }

    fn reduce(&mut self, bufs: &mut [&mut Buffer]) -> Result<(), RuntimeError> {
        let d = match &*self.device {
            Device::Cuda(d) => d,
            Device::Cpu => unreachable!("checked in Collective::nccl"),
        };
        // The gradients were written by kernels on the compute stream.
        self.ready.record(&d.stream).map_err(drv)?;
        self.stream.wait(&self.ready).map_err(drv)?;
        d.ctx.bind_to_thread().map_err(drv)?;
        let stream = self.stream.cu_stream() as nccl_sys::cudaStream_t;
        nccl::group_start().map_err(|e| nccl_error("ncclGroupStart", e))?;
        let mut first_err = None;
        // cudarc's tracking guards (no-ops unless the context is in
        // multi-stream mode, where they record correct events) are dropped
        // after the group is launched.
        let mut guards = Vec::with_capacity(bufs.len());
        for b in bufs.iter_mut() {
            let len = b.len();
            let Storage::Cuda(slice) = &mut b.storage else {
                first_err.get_or_insert(coll_err("a CPU buffer was given to NCCL"));
                continue;
            };
            let (ptr, guard) = slice.device_ptr_mut(&self.stream);
            guards.push(guard);
            // SAFETY: `ptr` is `len` f32 values of device memory on this
            // rank's device, alive until at least the next `finish` (the
            // caller's buffers outlive the step); in place is allowed.
            let r = unsafe {
                nccl::all_reduce(
                    ptr as *const std::ffi::c_void,
                    ptr as *mut std::ffi::c_void,
                    len,
                    nccl_sys::ncclDataType_t::ncclFloat32,
                    nccl_sys::ncclRedOp_t::ncclSum,
                    self.comm,
                    stream,
                )
            };
            if let Err(e) = r {
                first_err.get_or_insert(nccl_error("ncclAllReduce", e));
            }
        }
        let end = nccl::group_end();
        drop(guards);
        self.pending = true;
        if let Some(e) = first_err {
            return Err(e);
        }
        end.map_err(|e| nccl_error("ncclGroupEnd", e))?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), RuntimeError> {
        if !self.pending {
            return Ok(());
        }
        let d = self.cuda();
        self.done.record(&self.stream).map_err(drv)?;
        d.stream.wait(&self.done).map_err(drv)?;
        self.pending = false;
        Ok(())
    }

    fn close(&mut self) -> Result<(), RuntimeError> {
        self.finish()?;
        self.stream.synchronize().map_err(drv)?;
        // SAFETY: the communicator is valid and no operation is in flight.
        unsafe {
            nccl::comm_finalize(self.comm).map_err(|e| nccl_error("ncclCommFinalize", e))?;
            self.closed = true;
            nccl::comm_destroy(self.comm).map_err(|e| nccl_error("ncclCommDestroy", e))?;
        }
        Ok(())
    }
}

impl Drop for NcclRank {
    fn drop(&mut self) {
        let _ = self.cuda().ctx.bind_to_thread();
        if !self.closed {
            // SAFETY: the communicator is valid; abort never waits for peers.
            let _ = unsafe { nccl::comm_abort(self.comm) };
        }
        // SAFETY: the stream was created in `Collective::nccl`; the driver
        // releases it once its queued work (if any) is done.
        let _ = unsafe { cudarc::driver::result::stream::destroy(self.stream.cu_stream()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn host_group_sums_in_rank_order_with_the_same_bits_on_every_rank() {
        let ranks = 3;
        let lens = [1usize, 17, 1000];
        let mut rng = StdRng::seed_from_u64(11);
        // Values of mixed magnitude, so the summation order shows in the bits.
        let data: Vec<Vec<Vec<f32>>> = (0..ranks)
            .map(|_| {
                lens.iter()
                    .map(|&n| {
                        (0..n)
                            .map(|_| {
                                rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-4..4))
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let want: Vec<Vec<f32>> = (0..lens.len())
            .map(|b| {
                (0..lens[b])
                    .map(|i| {
                        let mut s = data[0][b][i];
                        for rank in &data[1..] {
                            s += rank[b][i];
                        }
                        s
                    })
                    .collect()
            })
            .collect();
        let group = HostGroup::new(ranks);
        let got: Vec<(Vec<Vec<f32>>, Vec<f64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..ranks)
                .map(|r| {
                    let (group, data) = (group.clone(), &data);
                    s.spawn(move || {
                        let device = Arc::new(Device::cpu());
                        let mut bufs: Vec<Buffer> =
                            data[r].iter().map(|v| device.upload(v).unwrap()).collect();
                        let mut c = Collective::host(group.clone(), r, device.clone());
                        // Two exchanges in a row: the rounds must not mix.
                        let (a, b) = bufs.split_at_mut(1);
                        c.reduce_ready(&mut [&mut a[0]]).unwrap();
                        c.reduce_ready(&mut b.iter_mut().collect::<Vec<_>>())
                            .unwrap();
                        c.finish().unwrap();
                        let scalars = group
                            .all_reduce_f64(r, &[r as f64, 0.1 * (r + 1) as f64])
                            .unwrap();
                        (
                            bufs.iter()
                                .map(|b| device.download::<f32>(b).unwrap())
                                .collect(),
                            scalars,
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (r, (bufs, scalars)) in got.iter().enumerate() {
            for (b, (g, w)) in bufs.iter().zip(&want).enumerate() {
                let same = g.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "rank {r}, buffer {b}: not the rank-ordered sum");
            }
            assert_eq!(scalars[0], 3.0);
            assert_eq!(
                scalars[1].to_bits(),
                ((0.1 + 0.2) + 0.30000000000000004f64).to_bits()
            );
        }
    }

    #[test]
    fn abort_releases_waiting_and_arriving_ranks() {
        let group = HostGroup::new(3);
        let results: Vec<Result<Vec<f64>, RuntimeError>> = std::thread::scope(|s| {
            let waiting: Vec<_> = (0..2)
                .map(|r| {
                    let group = group.clone();
                    s.spawn(move || group.all_reduce_f64(r, &[1.0]))
                })
                .collect();
            // Rank 2 fails instead of joining.
            std::thread::sleep(std::time::Duration::from_millis(50));
            group.abort("rank 2: out of memory");
            waiting.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("aborted") && e.contains("rank 2: out of memory"),
                "{e}"
            );
        }
        // A rank arriving later is refused at once, with the first reason.
        group.abort("a second reason");
        let e = group.all_reduce_f64(2, &[1.0]).unwrap_err().to_string();
        assert!(e.contains("out of memory"), "{e}");
        assert_eq!(group.aborted().as_deref(), Some("rank 2: out of memory"));
    }

    #[test]
    fn mismatched_contributions_are_an_error_for_every_rank() {
        let group = HostGroup::new(2);
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|r| {
                    let group = group.clone();
                    s.spawn(move || group.all_reduce_f64(r, &vec![0.0; r + 1]))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            assert!(r.unwrap_err().to_string().contains("disagree"));
        }
    }

    #[test]
    fn only_f32_buffers_are_reduced() {
        let device = Arc::new(Device::cpu());
        let mut b = device.upload(&[1i32, 2]).unwrap();
        let mut c = Collective::host(HostGroup::new(1), 0, device);
        let e = c.reduce_ready(&mut [&mut b]).unwrap_err().to_string();
        assert!(e.contains("only f32"), "{e}");
    }

    #[test]
    fn nccl_refuses_the_cpu() {
        // No NCCL call is made: the device check comes first.
        let id = NcclId(nccl_sys::ncclUniqueId { internal: [0; 128] });
        let e = Collective::nccl(Arc::new(Device::cpu()), 0, 1, id)
            .err()
            .expect("an error")
            .to_string();
        assert!(e.contains("CUDA device"), "{e}");
    }
}
