//! The errors of `diffnmf bench`: a library error of a benchmarked stage, an unknown stage
//! name, an I/O error on a named file, or a re-spawned child that failed.

use std::path::{Path, PathBuf};

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Lib(#[from] crate::Error),
    #[error("unknown bench stage `{stage}`; choose from {choices}")]
    UnknownStage { stage: String, choices: String },
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: writing the PNG failed: {error}", path.display())]
    Png {
        path: PathBuf,
        error: png::EncodingError,
    },
    /// A re-spawned `diffnmf` (thread scaling, whole pipeline) failed or wrote nonsense.
    #[error("{0}")]
    Child(String),
    /// The embedded data is not what the benchmarks assume.
    #[error("{0}")]
    Data(String),
}

/// Result alias of the bench module.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        BenchError::Io {
            path: path.as_ref().to_path_buf(),
            error: source,
        }
    }
}
