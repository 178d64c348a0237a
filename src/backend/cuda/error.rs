//! Typed CUDA errors (driver, NVRTC compile with its log, missing kernel, shape checks) and
//! their conversion into [`crate::Error::Cuda`].

use super::kernels::KernelModule;

/// Everything that can go wrong on the CUDA side.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda could not be loaded or reports no device.
    #[error("no CUDA driver (libcuda.so) or no GPU found; run on a GPU node or set `device: cpu`")]
    NoDriver,
    /// libnvrtc.so.12 could not be loaded (needed to compile the kernels at run time).
    #[error("NVRTC (libnvrtc.so.12) not found; install the CUDA 12.9 NVRTC library (e.g. `pip install nvidia-cuda-nvrtc-cu12==12.9.86`) and add its lib folder to LD_LIBRARY_PATH")]
    NoNvrtc,
    /// A driver call failed.
    #[error("driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// NVRTC rejected a kernel module; `log` is NVRTC's program log.
    #[error("NVRTC failed to compile kernels/{}: {msg}\n{log}", module.file_name())]
    Compile {
        module: KernelModule,
        msg: String,
        log: String,
    },
    /// An operand has the wrong size for the kernel it is passed to.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
}

impl From<CudaError> for crate::Error {
    fn from(e: CudaError) -> Self {
        crate::Error::Cuda(e.to_string())
    }
}

/// `Result` of the CUDA layer.
pub type CudaResult<T> = std::result::Result<T, CudaError>;

/// Shape check helper: `Err(Shape)` unless `cond`.
pub(crate) fn ensure(cond: bool, op: &'static str, msg: impl FnOnce() -> String) -> CudaResult<()> {
    if cond {
        Ok(())
    } else {
        Err(CudaError::Shape { op, msg: msg() })
    }
}
