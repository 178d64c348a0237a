//! Crate-wide error type. The library modules return [`Result`] (or a module error that
//! wraps [`Error`], e.g. [`crate::bench::BenchError`]); only the command-line edge (`cli`,
//! `main`) uses `anyhow`.
//! Every variant that concerns a file names it, and every validation message says the fix.

use std::path::PathBuf;

/// All errors produced by the library, grouped by area.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // === configuration ===
    /// A YAML file could not be parsed or failed validation.
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    /// A job file's value is out of its allowed range (`config::validate`). The message
    /// is shown once (it is not also a `source` of the chain).
    #[error("{}: {error}", path.display())]
    Invalid { path: PathBuf, error: ParamsError },
    /// A parameter is out of its allowed range. `key` is the dotted config key.
    #[error("invalid value for `{key}`: {msg}")]
    Param { key: String, msg: String },

    // === data ===
    /// A data file is missing, truncated, or inconsistent.
    #[error("{}: {msg}", path.display())]
    Data { path: PathBuf, msg: String },

    // === numerics ===
    /// Shapes of two operands do not agree.
    #[error("{op}: shape mismatch {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
    },
    /// Training diverged (NaN/inf loss or weights).
    #[error("{stage}: training diverged at epoch {epoch} (loss = {loss}); lower the learning rate (`{lr_key}`)")]
    Diverged {
        stage: &'static str,
        epoch: usize,
        loss: f64,
        lr_key: &'static str,
    },
    /// A numeric routine failed (e.g. the SVD used for NNDSVD initialisation).
    #[error("{op}: {msg}")]
    Numeric { op: &'static str, msg: String },

    // === devices ===
    /// CUDA was requested but this binary was built without the `cuda` feature.
    #[error("device `cuda` requested but this binary was built without CUDA support; rebuild with `cargo build --release --features cuda`, or set `device: cpu`")]
    CudaNotCompiled,
    /// A CUDA driver/NVRTC error (same type with or without the feature).
    #[error("cuda: {0}")]
    Cuda(String),

    // === results / runner ===
    /// Writing or reading a result file failed.
    #[error("{}: {msg}", path.display())]
    Results { path: PathBuf, msg: String },
    /// A signal (SIGINT, SIGTERM, SIGHUP or SIGUSR2; `signals`) arrived before the cell
    /// started: it was not claimed and nothing of it was written.
    #[error("interrupted")]
    Interrupted,
    /// A panic (a bug) caught at a cell boundary, so that the rest of a sweep goes on.
    #[error("{what} panicked: {msg} (this is a bug in diffnmf; please report it with the cell's job.yaml)")]
    Panicked { what: String, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A configuration value out of its allowed range: the dotted key (`attack.eps[1]`) and a
/// message that names the key, the value, the allowed range and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct ParamsError {
    pub key: String,
    pub msg: String,
}

impl ParamsError {
    pub fn new(key: String, msg: String) -> Self {
        ParamsError { key, msg }
    }
}

/// Crate result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::Data`].
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// Shorthand for [`Error::Param`].
    pub fn param(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Param {
            key: key.into(),
            msg: msg.into(),
        }
    }
    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
