//! The CUDA backend (feature `cuda`): driver probing, one context + stream per backend,
//! the loaded-module cache, host↔device copies, launch helpers and the GEMM ([`gemm`]).
//! Device primitives only: each op's CUDA side lives beside its CPU side
//! (`crate::nmf::cuda`, `crate::diffusion::cuda` — the defended pipeline as an
//! `AttackModel` —, `crate::attack::apgd::cuda`, `crate::nn::cuda`), so nothing here
//! imports an algorithm module.
//!
//! cudarc loads libcuda / libnvrtc dynamically, so a `cuda` build runs anywhere; every entry
//! point checks the libraries first (cudarc panics when they are absent) and returns
//! [`CudaError::NoDriver`] / [`CudaError::NoNvrtc`] instead.

pub mod error;
pub mod gemm;
pub mod kernels;
#[cfg(test)]
mod tests;

pub use error::{CudaError, CudaResult};
pub use kernels::KernelModule;

use cudarc::driver::ValidAsZeroBits;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
};
use std::sync::{Arc, OnceLock};

/// True when libcuda can be loaded and reports at least one device.
pub fn driver_present() -> bool {
    // SAFETY: only probes whether the dynamic library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return false;
    }
    CudaContext::device_count().map(|n| n > 0).unwrap_or(false)
}

/// Threads per block of the elementwise kernels.
pub const BLOCK: u32 = 256;

/// A CUDA device with one stream and its loaded kernel modules.
#[derive(Clone)]
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Arc<[OnceLock<Arc<CudaModule>>; KernelModule::ALL.len()]>,
    sm_count: u32,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend(cuda:{})", self.ctx.ordinal())
    }
}

impl CudaBackend {
    /// Open device `ordinal`; a typed error (never a panic) when there is no driver.
    pub fn new(ordinal: usize) -> CudaResult<Self> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.new_stream()?;
        let sm_count = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )?
            .max(1) as u32;
        Ok(CudaBackend {
            ctx,
            stream,
            modules: Arc::new([const { OnceLock::new() }; KernelModule::ALL.len()]),
            sm_count,
        })
    }

    /// Device name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> String {
        self.ctx
            .name()
            .unwrap_or_else(|_| "unknown CUDA device".into())
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Number of streaming multiprocessors (sizes persistent grids).
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    /// Look up `name` in `module` (compiling and loading the module on first use).
    pub fn func(&self, module: KernelModule, name: &str) -> CudaResult<CudaFunction> {
        debug_assert!(
            module.kernel_names().contains(&name),
            "{name} is not in {module:?}::kernel_names()"
        );
        let slot = &self.modules[module as usize];
        let m = match slot.get() {
            Some(m) => m.clone(),
            None => {
                let ptx = kernels::ptx(module)?;
                let m = self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx))?;
                slot.get_or_init(|| m).clone()
            }
        };
        Ok(m.load_function(name)?)
    }

    /// Copy a host slice to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> CudaResult<CudaSlice<T>> {
        Ok(self.stream.clone_htod(host)?)
    }

    /// Copy a device buffer to the host (synchronises the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        dev: &CudaSlice<T>,
    ) -> CudaResult<Vec<T>> {
        Ok(self.stream.clone_dtoh(dev)?)
    }

    /// A zeroed device buffer of `len` elements (at least 1, so pointers are never null).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> CudaResult<CudaSlice<T>> {
        Ok(self.stream.alloc_zeros(len.max(1))?)
    }

    /// Wait for all queued work.
    pub fn synchronize(&self) -> CudaResult<()> {
        Ok(self.stream.synchronize()?)
    }

    /// In debug builds, synchronise after a launch so asynchronous errors surface at the op.
    pub(crate) fn debug_sync(&self) -> CudaResult<()> {
        if cfg!(debug_assertions) {
            self.synchronize()?;
        }
        Ok(())
    }

    /// Grid-stride launch over `n` elements: enough blocks to fill the card, capped.
    pub fn cfg_elems(&self, n: usize) -> LaunchConfig {
        let want = n.div_ceil(BLOCK as usize).max(1);
        let cap = (self.sm_count * 32) as usize;
        LaunchConfig {
            grid_dim: (want.min(cap) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}
