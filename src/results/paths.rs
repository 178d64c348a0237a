//! Every path pattern of the result layout in one place.

use std::path::{Path, PathBuf};

/// Per-experiment HDF5 file.
pub const RESULT_H5: &str = "result.h5";
/// Per-experiment tidy metrics.
pub const METRICS_CSV: &str = "metrics.csv";
/// Per-experiment Markdown tables.
pub const TABLES_MD: &str = "tables.md";

/// Default output folder of a job: `results/<name>`.
pub fn default_out(job_name: &str) -> PathBuf {
    Path::new("results").join(job_name)
}

/// Temporary sibling used while writing `path` (`.<name>.tmp.<pid>`).
pub fn tmp_name(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("out");
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}
