//! Aggregation across seeds, rank optimisation, plots and the paper-style report.
//!
//! - [`aggregate`]: read a sweep folder, statistics per (axis values, scenario, protocol, ε,
//!   metric) across seeds → `summary.csv`, `summary.h5`, `tables.md`.
//! - [`aggregate_certify`]: the certified cells' `certify.csv` across seeds
//!   (`summary_certify.csv`, a section of `tables.md`); [`certified`]: a run's `certify.png`.
//! - [`stats`]: mean, sample std, Student-t 95 % CI.
//! - [`plots`] / [`sweep_plots`]: PNG + SVG figures with an embedded font; [`adversarial`]:
//!   the clean | base attack | defence attack image grid of a pixel-space run.
//! - [`optimize`] / [`objective`]: choosing the NNMF rank on validation data only.
//! - [`report`]: `report.md` with the paper's tables beside ours and the sanity checks.

pub mod adversarial;
pub mod aggregate;
pub mod aggregate_certify;
pub mod certified;
pub mod objective;
pub mod optimize;
mod optimize_out;
pub mod plots;
#[allow(clippy::module_inception)]
pub mod report;
pub mod stats;
pub mod sweep_plots;
