//! Stand-in for the CUDA backend in builds without the `cuda` feature.
//!
//! [`CudaBackend`] has no values, so `Option<CudaBackend>` is always `None`, and code that
//! matches on it compiles unchanged in both builds; every function taking a `&CudaBackend`
//! is unreachable here by construction (`match *be {}`), not by a runtime check.

/// A CUDA device; no value exists in a build without the `cuda` feature.
#[derive(Clone, Debug)]
pub enum CudaBackend {}

impl CudaBackend {
    /// Always [`crate::Error::CudaNotCompiled`] (the message says how to build with CUDA).
    pub fn new(_ordinal: usize) -> crate::Result<Self> {
        Err(crate::Error::CudaNotCompiled)
    }

    /// The device name (never called: there is no value to call it on).
    pub fn name(&self) -> String {
        match *self {}
    }
}

/// No CUDA driver is usable from a build without the feature.
pub fn driver_present() -> bool {
    false
}
