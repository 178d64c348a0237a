//! Device selection, the opened device handles, and the CPU thread budget.
//!
//! The CPU (ndarray + rayon) is the reference implementation. `device: cuda` needs a binary
//! built with `--features cuda` *and* a driver at run time; `auto` picks CUDA only when both
//! hold and says which device it chose. Dispatch happens once per experiment.
//!
//! The seam: [`cuda`] holds only device primitives (context and stream, kernel modules,
//! copies, launch helpers, the GEMM, typed errors). Each op's CUDA side lives beside its CPU
//! side in the algorithm module (`nmf::cuda`, `diffusion::cuda`, `attack::apgd::cuda`,
//! `nn::cuda`), so this module depends on no algorithm. Without the `cuda` feature, [`cuda`]
//! is a stand-in (`cuda_off.rs`) whose `CudaBackend` has no values: [`DeviceCtx::cuda`] is then
//! always `None` and callers need no `#[cfg]` (candle's dummy-backend pattern).

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_off.rs"]
pub mod cuda;

use crate::error::{Error, Result};
use crate::progress::log;

/// The configured device (`device:` in a job).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DevicePref {
    Cpu,
    Cuda,
    Auto,
}

/// The device an experiment runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA device (ordinal); only constructed in `cuda` builds with a driver present.
    Cuda(usize),
}

impl Device {
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(i) => format!("cuda:{i}"),
        }
    }
}

/// Whether a CUDA driver is usable from this binary (always false without the feature).
pub fn cuda_available() -> bool {
    cuda::driver_present()
}

/// Resolve the configured preference to a device.
pub fn select(pref: DevicePref) -> Result<Device> {
    match pref {
        DevicePref::Cpu => Ok(Device::Cpu),
        DevicePref::Cuda => {
            if !cfg!(feature = "cuda") {
                return Err(Error::CudaNotCompiled);
            }
            if !cuda_available() {
                return Err(Error::Cuda(
                    "no CUDA driver (libcuda.so) or no GPU found on this machine; run on a GPU node or set `device: cpu`".into(),
                ));
            }
            Ok(Device::Cuda(0))
        }
        DevicePref::Auto => {
            if cfg!(feature = "cuda") && cuda_available() {
                log("device auto: using cuda:0 (driver and GPU found)");
                return Ok(Device::Cuda(0));
            }
            let why = if !cfg!(feature = "cuda") {
                "binary built without the `cuda` feature"
            } else {
                "no CUDA driver or GPU found"
            };
            log(format!("device auto: using cpu ({why})"));
            Ok(Device::Cpu)
        }
    }
}

/// The opened device handles of one experiment (dispatch happens once, here).
#[derive(Clone, Debug)]
pub struct DeviceCtx {
    pub device: Device,
    cuda: Option<cuda::CudaBackend>,
}

impl DeviceCtx {
    /// Open the selected device.
    pub fn open(device: Device) -> Result<Self> {
        let cuda = match device {
            Device::Cuda(i) => Some(cuda::CudaBackend::new(i)?),
            Device::Cpu => None,
        };
        Ok(DeviceCtx { device, cuda })
    }

    /// The CPU-only context.
    pub fn cpu() -> Self {
        DeviceCtx {
            device: Device::Cpu,
            cuda: None,
        }
    }

    /// The open CUDA backend, if this context runs on a GPU.
    pub fn cuda(&self) -> Option<&cuda::CudaBackend> {
        self.cuda.as_ref()
    }

    /// Whether this context runs on a GPU.
    pub fn is_cuda(&self) -> bool {
        self.cuda.is_some()
    }
}

/// Threads to use: `--threads` if given, else `SLURM_CPUS_PER_TASK` when set, else all cores.
/// `--threads 0` and a `SLURM_CPUS_PER_TASK` that is not a positive integer are errors
/// (silently using all cores of a shared node instead would oversubscribe it).
pub fn thread_count(cli: Option<usize>) -> Result<usize> {
    thread_count_from(cli, std::env::var("SLURM_CPUS_PER_TASK").ok().as_deref())
}

/// [`thread_count`] with the environment variable's value passed in (for tests).
fn thread_count_from(cli: Option<usize>, slurm: Option<&str>) -> Result<usize> {
    match cli {
        Some(0) => Err(Error::param(
            "--threads",
            "--threads 0: the thread count must be a positive integer (≥ 1); pass e.g. \
             `--threads 4`, or leave it out to use SLURM_CPUS_PER_TASK or all cores",
        )),
        Some(n) => Ok(n),
        None => match slurm {
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Error::param(
                    "SLURM_CPUS_PER_TASK",
                    format!(
                        "SLURM_CPUS_PER_TASK={v} is not a positive integer; unset it, set it \
                         to the CPUs per task (e.g. 8), or pass `--threads N`"
                    ),
                )),
            },
            None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        },
    }
}

/// Size rayon's global pool and matrixmultiply's GEMM threads. Call once, early.
pub fn init_threads(n: usize) {
    // matrixmultiply reads MATMUL_NUM_THREADS lazily on its first threaded GEMM.
    std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
}

/// Run `f` on a worker thread of rayon's global pool and wait for it. Parallel loops started
/// from a worker run in place; started from the main thread, each one is handed to the pool
/// and the main thread sleeps until it finishes (measured ≈ 0.1 ms per loop, which was most of
/// a CNN training step). Call after [`init_threads`], for one top-level job per process:
/// never for several concurrent jobs that take locks (a worker waiting inside one job may
/// steal another job's whole body, which then blocks on a lock its own stack holds).
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut out = None;
    rayon::scope(|_| out = Some(f()));
    out.expect("the scope ran the closure")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_pool_runs_on_a_worker() {
        let (inside, v) = in_pool(|| (rayon::current_thread_index().is_some(), 41 + 1));
        assert!(inside);
        assert_eq!(v, 42);
    }

    #[test]
    fn cpu_always_available_and_cuda_errors_cleanly() {
        assert_eq!(select(DevicePref::Cpu).unwrap(), Device::Cpu);
        if !cuda_available() {
            assert_eq!(select(DevicePref::Auto).unwrap(), Device::Cpu);
        }
        // Each build gives the one outcome its situation calls for, with the fix in the text.
        match (
            cfg!(feature = "cuda"),
            cuda_available(),
            select(DevicePref::Cuda),
        ) {
            (false, _, Err(e @ Error::CudaNotCompiled)) => {
                assert!(e.to_string().contains("--features cuda"), "{e}")
            }
            (true, false, Err(e @ Error::Cuda(_))) => {
                assert!(e.to_string().contains("device: cpu"), "{e}")
            }
            (true, true, Ok(d)) => assert_eq!(d, Device::Cuda(0)),
            (built, driver, r) => {
                panic!("select(cuda) with feature {built}, driver {driver}: {r:?}")
            }
        }
    }

    #[test]
    fn a_cpu_context_has_no_gpu_and_a_gpu_context_needs_a_cuda_build_with_a_driver() {
        assert!(DeviceCtx::cpu().cuda().is_none() && !DeviceCtx::cpu().is_cuda());
        assert!(!DeviceCtx::open(Device::Cpu).unwrap().is_cuda());
        match (cfg!(feature = "cuda"), DeviceCtx::open(Device::Cuda(0))) {
            (false, Err(e @ Error::CudaNotCompiled)) => {
                assert!(e.to_string().contains("--features cuda"), "{e}")
            }
            (true, Err(e)) if !cuda_available() => {
                assert!(e.to_string().contains("device: cpu"), "{e}")
            }
            (true, Ok(c)) if cuda_available() => assert!(c.is_cuda()),
            (built, r) => panic!(
                "open(cuda:0) with feature {built}: {:?}",
                r.map(|c| c.device)
            ),
        }
    }

    #[test]
    fn explicit_threads_win() {
        assert_eq!(thread_count(Some(3)).unwrap(), 3);
        assert_eq!(thread_count_from(Some(3), Some("abc")).unwrap(), 3);
        assert_eq!(thread_count_from(None, Some(" 6 ")).unwrap(), 6);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(
            thread_count_from(None, None).unwrap(),
            cores,
            "default: all cores"
        );
    }

    #[test]
    fn zero_and_garbage_thread_counts_are_errors() {
        let e = thread_count_from(Some(0), None).unwrap_err().to_string();
        assert!(e.contains("--threads") && e.contains("positive"), "{e}");
        for v in ["abc", "0", "", "-2", "1.5"] {
            let e = thread_count_from(None, Some(v)).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "SLURM_CPUS_PER_TASK={v} is not a positive integer"
                )),
                "{e}"
            );
        }
    }
}
