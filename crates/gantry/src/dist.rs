//! Data-parallel training on torch's own distributed engine: c10d stores, process groups
//! (ProcessGroupGloo for CPU tensors, ProcessGroupNCCL for CUDA) and collectives of the libtorch
//! gantry links, reached through the C++ shim (`csrc/dist.cpp`). No transport of gantry's own.
//!
//! A job is described the way PyTorch jobs are: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT` in the environment (set by `gantry train --nproc N`, by torchrun,
//! or by a cluster scheduler's script). Rank 0 hosts the TCPStore, unless torchrun's agent does
//! (`TORCHELASTIC_USE_AGENT_STORE=True`). With no such environment, or `WORLD_SIZE=1`, a [`Comm`]
//! is a single process and every collective returns at once.
//!
//! Every collective is bounded by `train.collective_timeout_s`: a rank that died or hangs makes the
//! others fail with one line naming their own rank instead of waiting for ever.

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use std::ffi::{c_char, c_void, CStr, CString};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

extern "C" {
    fn gantry_set_torch_log_level(level: i32);
    fn gantry_dist_backends() -> i32;
    fn gantry_dist_store_new(
        host: *const c_char,
        port: i32,
        is_server: i32,
        world: i32,
        timeout_s: f64,
        prefix: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn gantry_dist_store_free(s: *mut c_void);
    fn gantry_dist_rendezvous(
        s: *mut c_void,
        rank: i32,
        world: i32,
        timeout_s: f64,
        missing: *mut i32,
    ) -> *mut c_char;
    #[allow(clippy::too_many_arguments)]
    fn gantry_dist_new(
        s: *mut c_void,
        host: *const c_char,
        rank: i32,
        world: i32,
        timeout_s: f64,
        nccl: i32,
        cuda_device: i32,
        iface: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn gantry_dist_free(g: *mut c_void);
    fn gantry_dist_all_reduce(g: *mut c_void, t: *const c_void, op: i32) -> *mut c_char;
    fn gantry_dist_broadcast(g: *mut c_void, t: *const c_void, root: i32) -> *mut c_char;
    fn gantry_dist_all_gather(
        g: *mut c_void,
        out: *const c_void,
        inp: *const c_void,
    ) -> *mut c_char;
    fn gantry_dist_gather(
        g: *mut c_void,
        out: *const c_void,
        inp: *const c_void,
        root: i32,
    ) -> *mut c_char;
    fn gantry_dist_barrier(g: *mut c_void) -> *mut c_char;
    fn gantry_dist_all_reduce_autograd(
        g: *mut c_void,
        x: *const c_void,
        out: *mut *mut c_void,
    ) -> *mut c_char;
}

/// Whether this build can join a process group of `kind` (`gloo` for CPU, `nccl` for CUDA).
pub fn has_backend(nccl: bool) -> bool {
    // SAFETY: a pure query of compile-time flags.
    let b = unsafe { gantry_dist_backends() };
    b & if nccl { 2 } else { 1 } != 0
}

/// A C++ error message (malloc'd) to a Rust string; frees it.
fn take_message(p: *mut c_char) -> String {
    // SAFETY: the shim returns strdup'ed, NUL-terminated strings.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: allocated by strdup (malloc).
    unsafe { libc_free(p as *mut c_void) };
    // c10 messages carry a C++ backtrace after the first line.
    s.lines().next().unwrap_or("").trim().to_string()
}

extern "C" {
    #[link_name = "free"]
    fn libc_free(p: *mut c_void);
}

/// Where the job's processes meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent hosts the store: every rank is a client.
    pub agent_store: bool,
    /// gloo's network interface (`GLOO_SOCKET_IFNAME`), when set.
    pub gloo_iface: Option<String>,
    /// torchrun's attempt number (`TORCHELASTIC_RESTART_COUNT`; 0 without torchrun): the store
    /// keys of each attempt are its own ([`JobEnv::store_prefix`]).
    pub restart_count: u64,
    /// torchrun's job id (`TORCHELASTIC_RUN_ID`), when set: scopes the store keys too.
    pub run_id: Option<String>,
}

impl JobEnv {
    /// Reads the torchrun variables; `None` when the process is not part of a job (no
    /// `WORLD_SIZE`, or `WORLD_SIZE=1`).
    pub fn from_env() -> Result<Option<JobEnv>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<JobEnv>> {
        let number = |key: &str| -> Result<Option<usize>> {
            var(key)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        Error::config(key, format!("{v:?} is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let Some(world) = number("WORLD_SIZE")? else {
            return Ok(None);
        };
        if world == 0 {
            return Err(Error::config(
                "WORLD_SIZE",
                "0 is not a number of processes (unset it, or give at least 1)",
            ));
        }
        if world == 1 {
            return Ok(None);
        }
        let rank = number("RANK")?
            .ok_or_else(|| Error::config("RANK", "WORLD_SIZE is set but RANK is not"))?;
        if rank >= world {
            return Err(Error::config(
                "RANK",
                format!("{rank} is not below WORLD_SIZE {world}"),
            ));
        }
        let local_rank = number("LOCAL_RANK")?.unwrap_or(rank);
        let restart_count = number("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0) as u64;
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let port = number("MASTER_PORT")?.unwrap_or(29500);
        let master_port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::config("MASTER_PORT", format!("{port} is not a TCP port")))?;
        Ok(Some(JobEnv {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True"),
            gloo_iface: var("GLOO_SOCKET_IFNAME").filter(|s| !s.is_empty()),
            restart_count,
            run_id: var("TORCHELASTIC_RUN_ID").filter(|s| !s.is_empty()),
        }))
    }

    /// The prefix of this attempt's keys in the job's store. torchrun's agent keeps its store
    /// across the restarts of a job (`--max-restarts`), and a new attempt that read the keys of
    /// the one before (the old ranks' addresses) would fail to connect; so each attempt has its
    /// own keys, as torch's elastic agent scopes its workers' (`/worker/attempt_N`).
    pub fn store_prefix(&self) -> String {
        match &self.run_id {
            Some(id) => format!("gantry/{id}/attempt_{}", self.restart_count),
            None => format!("gantry/attempt_{}", self.restart_count),
        }
    }
}

/// A c10d store (a `TCPStore` under this attempt's prefix); freed on drop.
struct StorePtr(*mut c_void);

// SAFETY: the store is created on one thread and then used from one thread at a time.
unsafe impl Send for StorePtr {}

impl Drop for StorePtr {
    fn drop(&mut self) {
        // SAFETY: created by gantry_dist_store_new, freed once.
        unsafe { gantry_dist_store_free(self.0) }
    }
}

/// `MASTER_ADDR`'s addresses, within `within` (a name service that does not answer is given up
/// on, not waited for).
fn resolve(
    host: &str,
    port: u16,
    within: Duration,
) -> std::result::Result<Vec<SocketAddr>, String> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(
            (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>()),
        );
    });
    match rx.recv_timeout(within.max(Duration::from_secs(1))) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!(
            "cannot resolve MASTER_ADDR={host}: it has no address"
        )),
        Ok(Err(e)) => Err(format!("cannot resolve MASTER_ADDR={host}: {e}")),
        Err(_) => Err(format!(
            "cannot resolve MASTER_ADDR={host}: no answer from the name service within {} s",
            within.as_secs_f64()
        )),
    }
}

/// Opens the job's store: hosts it on rank 0 (unless torchrun's agent does), connects to it
/// otherwise, by `deadline`. c10d's client blocks for ever when whatever holds the port accepts
/// the connection but never answers, so the connection is made on a thread of its own and given
/// up on at the deadline (the thread then ends with the process, or frees the store if it ever
/// gets one).
fn open_store(
    env: &JobEnv,
    addrs: &[SocketAddr],
    timeout_s: f64,
    deadline: Instant,
) -> std::result::Result<StorePtr, String> {
    let server = env.rank == 0 && !env.agent_store;
    let (addr, port) = (env.master_addr.as_str(), env.master_port);
    let (host, prefix) = match (
        CString::new(env.master_addr.as_str()),
        CString::new(env.store_prefix()),
    ) {
        (Ok(h), Ok(p)) => (h, p),
        _ => return Err("MASTER_ADDR or TORCHELASTIC_RUN_ID contains NUL".into()),
    };
    // c10d counts its connection timeout in whole seconds.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    let world = env.world as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid C strings for the call's duration; `out` receives an owned pointer.
        let err = unsafe {
            gantry_dist_store_new(
                host.as_ptr(),
                i32::from(port),
                i32::from(server),
                world,
                left.as_secs_f64(),
                prefix.as_ptr(),
                &mut out,
            )
        };
        let result = if err.is_null() {
            Ok(StorePtr(out))
        } else {
            Err(take_message(err))
        };
        // Nobody listens once the deadline has passed: the store is then freed here.
        let _ = tx.send(result);
    });
    let whom = if env.agent_store {
        "is torchrun's agent running"
    } else {
        "is rank 0 started"
    };
    let unreachable = || {
        let answered = addrs
            .iter()
            .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(500)).is_ok());
        if answered {
            format!(
                "{addr}:{port} accepted the connection but did not answer as the job's store \
                 within {timeout_s} s: is another program holding MASTER_PORT={port}?"
            )
        } else {
            format!(
                "cannot reach the job's store at {addr}:{port} within {timeout_s} s ({whom}? \
                 every rank needs the same MASTER_ADDR and MASTER_PORT)"
            )
        }
    };
    match rx.recv_timeout(left + Duration::from_millis(500)) {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(msg))
            if server && (msg.contains("EADDRINUSE") || msg.contains("already in use")) =>
        {
            Err(format!(
                "port {port} (MASTER_PORT) is already in use on this machine, by another program \
                 or job: choose another MASTER_PORT"
            ))
        }
        Ok(Err(msg)) if !server && msg.contains("timed out") => Err(unreachable()),
        Ok(Err(msg)) => Err(format!(
            "cannot open the job's store at {addr}:{port} ({} processes): {msg}",
            env.world
        )),
        Err(_) => Err(unreachable()),
    }
}

/// The line for ranks that did not join in time.
fn not_joined(env: &JobEnv, missing: &[usize], timeout_s: f64) -> String {
    let (who, them) = match missing {
        [r] => (format!("rank {r} of {}", env.world), "is it"),
        _ => (
            format!(
                "ranks {} of {}",
                missing
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                env.world
            ),
            "are they",
        ),
    };
    format!(
        "{who} did not join within {timeout_s} s ({them} started? every rank needs \
         MASTER_ADDR={}, MASTER_PORT={} and WORLD_SIZE={})",
        env.master_addr, env.master_port, env.world
    )
}

/// The GPU index of a rank that sees `visible` GPUs: its `LOCAL_RANK`'s, as torchrun jobs
/// do, or the only one when the scheduler shows each rank its own GPU (`CUDA_VISIBLE_DEVICES`
/// per rank, e.g. Slurm's `--gpus-per-task=1`).
pub fn rank_gpu(local_rank: usize, visible: usize) -> Result<usize> {
    match visible {
        0 => Err(Error::config(
            "train.device",
            "cuda: no CUDA GPU is visible to this rank (use cpu)",
        )),
        1 => Ok(0),
        n if local_rank < n => Ok(local_rank),
        n => Err(Error::config(
            "LOCAL_RANK",
            format!(
                "{local_rank}, but this rank sees only {n} GPUs: show each rank one GPU \
                 (CUDA_VISIBLE_DEVICES) or all of the machine's"
            ),
        )),
    }
}

/// One process group (freed when the last [`Comm`] clone goes).
struct Group {
    ptr: *mut c_void,
}

// SAFETY: c10d backends are used from one thread at a time here (the training loop's); the
// pointer itself may move between threads.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: created by gantry_dist_new, freed once.
        unsafe { gantry_dist_free(self.ptr) }
    }
}

/// This process's place in a data-parallel job, and its collectives. `Comm::single()` (world 1)
/// makes every collective a no-op, so the training loop has one code path.
#[derive(Clone)]
pub struct Comm {
    group: Option<Arc<Group>>,
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    /// Where the process group's tensors must be (CPU for gloo, this rank's GPU for NCCL);
    /// tensors elsewhere are copied there and back.
    pub device: Device,
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Comm(rank {} of {})", self.rank, self.world)
    }
}

/// Buckets of at most this many bytes are all-reduced together (DDP's default is 25 MiB).
pub const BUCKET_BYTES: usize = 25 << 20;

impl Comm {
    pub fn single() -> Comm {
        Comm {
            group: None,
            rank: 0,
            world: 1,
            local_rank: 0,
            device: Device::Cpu,
        }
    }

    /// Joins the job `env` describes, with gloo (CPU) or NCCL (`device` CUDA: this rank's GPU,
    /// made the current device first; see [`rank_gpu`]).
    ///
    /// The rendezvous takes at most `timeout_s` on every rank (then a little for the process
    /// group's own connections), and a failure is one line that says which step failed: a
    /// `MASTER_ADDR` that does not resolve, a `MASTER_PORT` another program holds, a store that
    /// cannot be reached, the ranks that did not join.
    pub fn join(env: &JobEnv, device: DeviceSpec, timeout_s: f64) -> Result<Comm> {
        let (nccl, gpu) = match device {
            DeviceSpec::Cuda(i) => (true, i),
            DeviceSpec::Cpu => (false, 0),
        };
        // c10d logs each failed attempt with a C++ stack trace; the error below says it in one
        // line. `TORCH_CPP_LOG_LEVEL` (INFO, WARNING, ERROR), where set, keeps its say.
        if std::env::var_os("TORCH_CPP_LOG_LEVEL").is_none() {
            // SAFETY: sets an integer flag of libc10.
            unsafe { gantry_set_torch_log_level(3) };
        }
        let fail = |msg: String| Error::Dist {
            rank: env.rank,
            msg,
        };
        let joining = |msg: String| {
            fail(format!(
                "cannot join the job at {}:{} ({} processes): {msg}",
                env.master_addr, env.master_port, env.world
            ))
        };
        let timeout = Duration::from_secs_f64(timeout_s);
        let deadline = Instant::now() + timeout;
        let cstr =
            |s: &str| CString::new(s).map_err(|_| Error::config("MASTER_ADDR", "contains NUL"));
        let host = cstr(&env.master_addr)?;
        // Resolved here, so that a name that does not resolve says so at once (c10d retries it
        // as if the store were not up yet, for the whole timeout).
        let addrs = resolve(&env.master_addr, env.master_port, timeout).map_err(fail)?;
        let store = open_store(env, &addrs, timeout_s, deadline).map_err(fail)?;

        let mut missing = vec![0i32; env.world];
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: a live store; `missing` has `world` entries.
        let err = unsafe {
            gantry_dist_rendezvous(
                store.0,
                env.rank as i32,
                env.world as i32,
                left.as_secs_f64(),
                missing.as_mut_ptr(),
            )
        };
        if !err.is_null() {
            return Err(joining(take_message(err)));
        }
        let missing: Vec<usize> = (0..env.world).filter(|&r| missing[r] != 0).collect();
        if !missing.is_empty() {
            return Err(fail(not_joined(env, &missing, timeout_s)));
        }

        let iface = cstr(env.gloo_iface.as_deref().unwrap_or(""))?;
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: a live store and valid C strings for the call's duration; `out` receives an
        // owned pointer (the group keeps its own reference to the store).
        let err = unsafe {
            gantry_dist_new(
                store.0,
                host.as_ptr(),
                env.rank as i32,
                env.world as i32,
                timeout_s,
                i32::from(nccl),
                gpu as i32,
                iface.as_ptr(),
                &mut out,
            )
        };
        if !err.is_null() {
            return Err(joining(take_message(err)));
        }
        Ok(Comm {
            group: Some(Arc::new(Group { ptr: out })),
            rank: env.rank,
            world: env.world,
            local_rank: env.local_rank,
            device: if nccl { Device::Cuda(gpu) } else { Device::Cpu },
        })
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    pub fn distributed(&self) -> bool {
        self.world > 1
    }

    fn check(&self, what: &str, err: *mut c_char) -> Result<()> {
        if err.is_null() {
            Ok(())
        } else {
            Err(Error::Dist {
                rank: self.rank,
                msg: format!(
                    "{what} failed (another rank may have died or hung): {}",
                    take_message(err)
                ),
            })
        }
    }

    fn ptr(&self) -> Option<*mut c_void> {
        self.group.as_ref().map(|g| g.ptr)
    }

    /// In-place sum over ranks of a contiguous tensor.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        self.all_reduce(t, 0, "all-reduce")
    }

    /// In-place maximum over ranks.
    pub fn all_reduce_max(&self, t: &Tensor) -> Result<()> {
        self.all_reduce(t, 1, "all-reduce")
    }

    /// `t` itself when the group can work on it in place (contiguous, on the group's device),
    /// else a copy that [`Comm::write_back`] returns into `t`.
    fn staged(&self, t: &Tensor) -> (Tensor, bool) {
        if t.device() == self.device && t.is_contiguous() {
            (t.shallow_clone(), false)
        } else {
            (t.to_device(self.device).contiguous(), true)
        }
    }

    fn write_back(t: &Tensor, staged: &Tensor, copied: bool) {
        if copied {
            tch::no_grad(|| t.shallow_clone().copy_(staged));
        }
    }

    fn all_reduce(&self, t: &Tensor, op: i32, what: &str) -> Result<()> {
        let Some(g) = self.ptr() else { return Ok(()) };
        let (x, copied) = self.staged(t);
        // SAFETY: `x` is a live tensor; the shim writes into its storage only.
        let err = unsafe { gantry_dist_all_reduce(g, x.as_ptr() as *const c_void, op) };
        self.check(what, err)?;
        Self::write_back(t, &x, copied);
        Ok(())
    }

    /// In-place broadcast of `root`'s values.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        let Some(g) = self.ptr() else { return Ok(()) };
        let (x, copied) = self.staged(t);
        // SAFETY: as in all_reduce.
        let err = unsafe { gantry_dist_broadcast(g, x.as_ptr() as *const c_void, root as i32) };
        self.check("broadcast", err)?;
        Self::write_back(t, &x, copied);
        Ok(())
    }

    /// Every rank's `t` (`[n, ...]`, the same shape on every rank), concatenated in rank order.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let Some(g) = self.ptr() else {
            return Ok(t.shallow_clone());
        };
        let home = t.device();
        let t = t.to_device(self.device).contiguous();
        let mut size = t.size();
        size[0] *= self.world as i64;
        let out = Tensor::empty(size.as_slice(), (t.kind(), self.device));
        // SAFETY: both tensors live for the call; `out` is contiguous.
        let err = unsafe {
            gantry_dist_all_gather(
                g,
                out.as_ptr() as *const c_void,
                t.as_ptr() as *const c_void,
            )
        };
        self.check("all-gather", err)?;
        Ok(out.to_device(home))
    }

    /// Every rank's `t` (same shape on every rank), concatenated in rank order, on rank `root`
    /// only (`None` on the others): what `all_gather` does, without sending it everywhere.
    pub fn gather(&self, t: &Tensor, root: usize) -> Result<Option<Tensor>> {
        let Some(g) = self.ptr() else {
            return Ok(Some(t.shallow_clone()));
        };
        let home = t.device();
        let t = t.to_device(self.device).contiguous();
        let out = (self.rank == root).then(|| {
            let mut size = t.size();
            size[0] *= self.world as i64;
            Tensor::empty(size.as_slice(), (t.kind(), self.device))
        });
        let out_ptr = out
            .as_ref()
            .map_or(std::ptr::null(), |o| o.as_ptr() as *const c_void);
        // SAFETY: both tensors live for the call; `out`, where given, is contiguous.
        let err =
            unsafe { gantry_dist_gather(g, out_ptr, t.as_ptr() as *const c_void, root as i32) };
        self.check("gather", err)?;
        Ok(out.map(|o| o.to_device(home)))
    }

    pub fn barrier(&self) -> Result<()> {
        let Some(g) = self.ptr() else { return Ok(()) };
        // SAFETY: a live group.
        let err = unsafe { gantry_dist_barrier(g) };
        self.check("barrier", err)
    }

    /// The sum of `x` over ranks, differentiable: its backward all-reduces the gradients, so each
    /// rank's loss reaches every rank's input (synchronised BatchNorm statistics).
    pub fn sum_differentiable(&self, x: &Tensor) -> Result<Tensor> {
        let Some(g) = self.ptr() else {
            return Ok(x.shallow_clone());
        };
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: `x` is live; `out` receives a new at::Tensor that the returned Tensor owns.
        let err =
            unsafe { gantry_dist_all_reduce_autograd(g, x.as_ptr() as *const c_void, &mut out) };
        self.check("all-reduce", err)?;
        // SAFETY: `out` is a heap at::Tensor*, the representation tch's Tensor owns.
        Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
    }

    /// Averages `tensors` over ranks in place, flattened into buckets of at most
    /// [`BUCKET_BYTES`] per kind and device (gradients: DDP's bucketed all-reduce, done once the
    /// phase's backward pass is over). Undefined tensors are skipped; every rank must pass the
    /// same list. Returns the bytes all-reduced.
    pub fn average(&self, tensors: &[Tensor]) -> Result<usize> {
        if !self.distributed() {
            return Ok(0);
        }
        let scale = 1.0 / self.world as f64;
        let mut bytes = 0;
        let mut bucket: Vec<&Tensor> = Vec::new();
        let mut bucket_bytes = 0;
        let flush = |bucket: &mut Vec<&Tensor>| -> Result<()> {
            if bucket.is_empty() {
                return Ok(());
            }
            let mut flat = Tensor::cat(
                &bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(),
                0,
            );
            self.all_reduce_sum(&flat)?;
            let _ = flat.g_mul_scalar_(scale);
            let mut at = 0;
            tch::no_grad(|| {
                for t in bucket.iter() {
                    let n = t.numel() as i64;
                    t.shallow_clone()
                        .copy_(&flat.narrow(0, at, n).view(t.size().as_slice()));
                    at += n;
                }
            });
            bucket.clear();
            Ok(())
        };
        for t in tensors.iter().filter(|t| t.defined()) {
            let size = t.numel() * t.kind().elt_size_in_bytes();
            let same = bucket
                .last()
                .is_none_or(|b| b.kind() == t.kind() && b.device() == t.device());
            if !same || bucket_bytes + size > BUCKET_BYTES {
                flush(&mut bucket)?;
                bucket_bytes = 0;
            }
            bucket.push(t);
            bucket_bytes += size;
            bytes += size;
        }
        flush(&mut bucket)?;
        Ok(bytes)
    }

    /// Whether any rank raised `flag` (a stop request), so that every rank acts on the same step.
    pub fn any(&self, flag: bool) -> Result<bool> {
        if !self.distributed() {
            return Ok(flag);
        }
        let t = Tensor::from_slice(&[i32::from(flag)]);
        self.all_reduce_max(&t)?;
        Ok(t.int64_value(&[0]) > 0)
    }

    /// `result` if every rank succeeded; otherwise every rank returns an error (its own, or one
    /// saying another rank failed). Put before work that waits for all ranks, so that a rank that
    /// failed alone (its data, its files) does not leave the others waiting for the timeout.
    pub fn agree<T>(&self, result: Result<T>) -> Result<T> {
        if self.distributed() && self.any(result.is_err())? {
            return Err(result.err().unwrap_or_else(|| Error::Dist {
                rank: self.rank,
                msg: "another rank failed to start (its own error says why)".into(),
            }));
        }
        result
    }

    /// Rank 0's `text`, on every rank (at most 64 KiB).
    pub fn broadcast_text(&self, text: &str) -> Result<String> {
        if !self.distributed() {
            return Ok(text.to_string());
        }
        const MAX: usize = 64 << 10;
        let bytes = text.as_bytes();
        if bytes.len() > MAX {
            return Err(Error::config("path", format!("is longer than {MAX} bytes")));
        }
        let mut buf = vec![0u8; MAX + 8];
        buf[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        buf[8..8 + bytes.len()].copy_from_slice(bytes);
        let t = Tensor::from_slice(&buf);
        self.broadcast(&t, 0)?;
        let got = Vec::<u8>::try_from(&t).map_err(|e| Error::Torch(e.to_string()))?;
        let n = u64::from_le_bytes(got[..8].try_into().expect("8 bytes")) as usize;
        Ok(String::from_utf8_lossy(&got[8..8 + n.min(MAX)]).into_owned())
    }

    /// Overwrites `tensors` with rank 0's values (parameters and buffers at start, buffers before
    /// every step): one broadcast per dtype and bucket of tensors flattened together, not one per
    /// tensor (each collective is a wait).
    pub fn broadcast_all(&self, tensors: &[Tensor]) -> Result<()> {
        if !self.distributed() {
            return Ok(());
        }
        tch::no_grad(|| {
            let mut kinds: Vec<Kind> = Vec::new();
            for t in tensors.iter().filter(|t| t.defined()) {
                if !kinds.contains(&t.kind()) {
                    kinds.push(t.kind());
                }
            }
            // Buckets of at most 2^24 values, so the flat copy stays small next to the model.
            const BUCKET: i64 = 1 << 24;
            let mut buckets: Vec<Vec<&Tensor>> = Vec::new();
            for kind in kinds {
                let mut size = 0;
                let mut bucket = Vec::new();
                for t in tensors.iter().filter(|t| t.defined() && t.kind() == kind) {
                    if !bucket.is_empty() && size + t.numel() as i64 > BUCKET {
                        buckets.push(std::mem::take(&mut bucket));
                        size = 0;
                    }
                    size += t.numel() as i64;
                    bucket.push(t);
                }
                if !bucket.is_empty() {
                    buckets.push(bucket);
                }
            }
            for group in buckets {
                let flat = Tensor::cat(
                    &group
                        .iter()
                        .map(|t| t.to_device(self.device).reshape([-1]))
                        .collect::<Vec<_>>(),
                    0,
                );
                self.broadcast(&flat, 0)?;
                let mut at = 0;
                for t in group {
                    let n = t.numel() as i64;
                    t.shallow_clone()
                        .copy_(&flat.narrow(0, at, n).view(t.size().as_slice()));
                    at += n;
                }
            }
            Ok(())
        })
    }

    /// A fingerprint of `tensors` per rank, `[world, 2]` in f64 (sum and index-weighted sum of
    /// the values): equal rows mean the ranks hold the same state.
    pub fn fingerprints(&self, tensors: &[Tensor]) -> Result<Tensor> {
        let mut acc = [0f64; 2];
        tch::no_grad(|| {
            for (i, t) in tensors.iter().enumerate() {
                let v = t.to_kind(Kind::Double).reshape([-1]);
                acc[0] += v.sum(Kind::Double).double_value(&[]);
                let w =
                    Tensor::arange(v.numel() as i64, (Kind::Double, v.device())) + 1.0 + i as f64;
                acc[1] += (v * w).sum(Kind::Double).double_value(&[]);
            }
        });
        self.all_gather(&Tensor::from_slice(&acc).view([1, 2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Option<JobEnv>> {
        JobEnv::from_vars(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn reads_the_torchrun_environment() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        let e = env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world, e.local_rank), (3, 4, 1));
        assert_eq!((e.master_addr.as_str(), e.master_port), ("node0", 29400));
        assert!(e.agent_store);
        assert_eq!((e.restart_count, e.run_id.as_deref()), (0, None));
        assert_eq!(e.store_prefix(), "gantry/attempt_0");
        let bad = |vars: &[(&str, &str)], needle: &str| {
            let msg = env(vars).unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg}");
        };
        bad(
            &[("WORLD_SIZE", "2")],
            "RANK: WORLD_SIZE is set but RANK is not",
        );
        bad(
            &[("WORLD_SIZE", "2"), ("RANK", "2")],
            "RANK: 2 is not below WORLD_SIZE 2",
        );
        bad(&[("WORLD_SIZE", "two")], "WORLD_SIZE: \"two\"");
        bad(
            &[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "70000")],
            "MASTER_PORT: 70000",
        );
    }

    /// Each attempt of a torchrun job (`--max-restarts`) has its own keys in the agent's store,
    /// which outlives the attempt; jobs with a run id are kept apart too.
    #[test]
    fn store_keys_are_scoped_by_attempt_and_run() {
        let job = |count: &str, id: Option<&str>| {
            let mut vars = vec![
                ("WORLD_SIZE", "2"),
                ("RANK", "1"),
                ("TORCHELASTIC_RESTART_COUNT", count),
            ];
            vars.extend(id.map(|i| ("TORCHELASTIC_RUN_ID", i)));
            env(&vars).unwrap().unwrap()
        };
        let first = job("0", None);
        let second = job("1", None);
        assert_eq!(second.restart_count, 1);
        assert_eq!(first.store_prefix(), "gantry/attempt_0");
        assert_eq!(second.store_prefix(), "gantry/attempt_1");
        assert_ne!(first.store_prefix(), second.store_prefix());
        let run = job("3", Some("ab12"));
        assert_eq!(run.run_id.as_deref(), Some("ab12"));
        assert_eq!(run.store_prefix(), "gantry/ab12/attempt_3");
        assert_ne!(run.store_prefix(), job("3", Some("cd34")).store_prefix());
        let msg = env(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("TORCHELASTIC_RESTART_COUNT", "x"),
        ])
        .unwrap_err()
        .to_string();
        assert!(msg.contains("TORCHELASTIC_RESTART_COUNT"), "{msg}");
    }

    #[test]
    fn a_single_process_reduces_to_itself() {
        let c = Comm::single();
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        c.all_reduce_sum(&t).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.0, 2.0]);
        assert_eq!(c.average(&[t.shallow_clone()]).unwrap(), 0);
        assert!(c.any(true).unwrap() && !c.any(false).unwrap());
        assert_eq!(c.all_gather(&t).unwrap().size(), [2]);
    }

    /// A rank's GPU: its LOCAL_RANK's among all of a machine's GPUs, the only one when it is
    /// shown one (a scheduler's per-rank CUDA_VISIBLE_DEVICES), a clear refusal otherwise.
    #[test]
    fn a_rank_takes_its_local_gpu_or_the_only_one_it_sees() {
        assert_eq!(rank_gpu(3, 8).unwrap(), 3);
        assert_eq!(rank_gpu(0, 8).unwrap(), 0);
        assert_eq!(rank_gpu(5, 1).unwrap(), 0);
        let e = rank_gpu(4, 2).unwrap_err().to_string();
        assert!(e.contains("LOCAL_RANK") && e.contains("only 2 GPUs"), "{e}");
        let e = rank_gpu(0, 0).unwrap_err().to_string();
        assert!(e.contains("no CUDA GPU"), "{e}");
    }
}
