//! The kernel modules (`kernels/*.cu`, embedded with `include_str!`, each prefixed with
//! `kernels/common.cuh`), their entry points, and the process-wide NVRTC → PTX cache.
//!
//! Kernels are compiled for the *virtual* architecture `compute_90` (NVRTC then emits PTX,
//! ISA 8.8 with the 12.9 library); the driver JIT-compiles the PTX for the actual card.
//! Compiling needs only libnvrtc, not a GPU, so CI can check every module.

use super::error::{CudaError, CudaResult};
use std::sync::OnceLock;

/// One `.cu` file under `kernels/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelModule {
    Gemm,
    Nmf,
    Denoiser,
    Apgd,
    Cnn,
}

/// Shared header prepended to every module.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

impl KernelModule {
    pub const ALL: [KernelModule; 5] = [
        KernelModule::Gemm,
        KernelModule::Nmf,
        KernelModule::Denoiser,
        KernelModule::Apgd,
        KernelModule::Cnn,
    ];

    /// File name under `kernels/`.
    pub fn file_name(self) -> &'static str {
        match self {
            KernelModule::Gemm => "gemm.cu",
            KernelModule::Nmf => "nmf.cu",
            KernelModule::Denoiser => "denoiser.cu",
            KernelModule::Apgd => "apgd.cu",
            KernelModule::Cnn => "cnn.cu",
        }
    }

    /// The module's own source (without the common header).
    pub fn source(self) -> &'static str {
        match self {
            KernelModule::Gemm => include_str!("../../../kernels/gemm.cu"),
            KernelModule::Nmf => include_str!("../../../kernels/nmf.cu"),
            KernelModule::Denoiser => include_str!("../../../kernels/denoiser.cu"),
            KernelModule::Apgd => include_str!("../../../kernels/apgd.cu"),
            KernelModule::Cnn => include_str!("../../../kernels/cnn.cu"),
        }
    }

    /// Every entry point the Rust side launches from this module.
    pub fn kernel_names(self) -> &'static [&'static str] {
        match self {
            KernelModule::Gemm => &["gemm_tiled_f32", "gemm_sum_splits_f32"],
            KernelModule::Nmf => &[
                "nmf_update_w_f32",
                "nmf_update_h_f32",
                "nmf_dot_partial_f32",
                "nmf_project_frob_f32",
            ],
            KernelModule::Denoiser => &[
                "denoise_start_f32",
                "denoise_step_fwd_f32",
                "mlp_fwd_f32",
                "mlp_bwd_f32",
            ],
            KernelModule::Apgd => &[
                "apgd_feasible_f32",
                "apgd_project_f32",
                "apgd_step_f32",
                "apgd_update_f32",
                "apgd_checkpoint_f32",
                "loss_ce_f32",
                "loss_dlr_f32",
            ],
            KernelModule::Cnn => &[
                "cnn_im2col3_f32",
                "cnn_bn_stats_f32",
                "cnn_bn_relu_fwd_f32",
                "cnn_maxpool2_fwd_f32",
            ],
        }
    }

    /// Header + module source, as handed to NVRTC.
    pub fn full_source(self) -> String {
        let own = self.source().replace("#include \"common.cuh\"", "");
        format!("{COMMON}\n#line 1 \"{}\"\n{own}", self.file_name())
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// True when libnvrtc can be loaded (cudarc panics on first use otherwise).
pub fn nvrtc_present() -> bool {
    // SAFETY: only probes whether the dynamic library can be loaded.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compile one module to PTX text (no caching).
pub fn compile(module: KernelModule) -> CudaResult<String> {
    if !nvrtc_present() {
        return Err(CudaError::NoNvrtc);
    }
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some("compute_90"),
        options: vec!["-std=c++17".into(), "-lineinfo".into()],
        name: Some(module.file_name().into()),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(module.full_source(), opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(e) => {
            let (msg, log) = match &e {
                cudarc::nvrtc::CompileError::CompileError { log, .. } => (
                    "compilation failed".to_string(),
                    log.to_string_lossy().into_owned(),
                ),
                other => (format!("{other:?}"), String::new()),
            };
            Err(CudaError::Compile { module, msg, log })
        }
    }
}

/// PTX of `module`, compiled once per process.
pub fn ptx(module: KernelModule) -> CudaResult<&'static str> {
    static CACHE: [OnceLock<String>; KernelModule::ALL.len()] =
        [const { OnceLock::new() }; KernelModule::ALL.len()];
    let slot = &CACHE[module.index()];
    if let Some(p) = slot.get() {
        return Ok(p.as_str());
    }
    let p = compile(module)?;
    Ok(slot.get_or_init(|| p).as_str())
}
