//! CUDA driver probing (feature `cuda`). cudarc panics in `CudaContext::new` when libcuda is
//! absent, so the library presence is checked first.

/// True when libcuda can be loaded and reports at least one device.
pub fn driver_present() -> bool {
    // SAFETY: only probes whether the dynamic library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return false;
    }
    cudarc::driver::CudaContext::device_count()
        .map(|n| n > 0)
        .unwrap_or(false)
}
