//! Sweeps: grid files, cells, the stage cache, local and Slurm executors, status and resume.
//!
//! Layout (paths in [`crate::results::paths`]): `<sweep dir>/sweep.yaml` (resolved),
//! `cells.csv` (`id,index,<axis keys…>,seed,status`), `cells/<id>/{result.h5, metrics.csv,
//! job.yaml}`, `cache/` (the shared [`crate::cache::StageCache`]),
//! `slurm/{array.sbatch, order.txt, array-part<k>.sbatch, order-part<k>.txt, aggregate.sbatch,
//! jobs.txt, resume-<n>[-part<k>].{txt,sbatch}, logs/%A_%a.out}` (arrays split at
//! `MaxArraySize`: [`slurm`]).
//! A cell is done iff `cells/<id>/result.h5` exists.
//!
//! **Grouping.** Every cell shares `<sweep dir>/cache`: a stage entry is built under a file
//! lock, so concurrent builders of one entry wait and at most one builds it (4 k × 4 ε × 3
//! seeds trains exactly 3 CNNs and 12 NNMF models). On top of that, cells execute in
//! *owners-first* order ([`expand::owners_first`]): one cell per distinct CNN first, then
//! one per remaining training group (NNMF + classifier + denoiser), then the cells that
//! only evaluate (e.g. the other ε values). Waiting on a lock holds a worker (or a Slurm
//! allocation) idle, so the cells that build shared stages start first; the cheaper cells
//! that reuse them follow and mostly hit the cache. One array task per cell (not one per
//! (k, seed)) keeps the expensive per-ε attacks parallel. Measured (debug build, 2 shared
//! cores, 3 k × 3 ε on jobs/smoke.yaml with heavier training, `--jobs 2`): index order
//! 6.4 / 6.7 s, owners-first 6.4 / 5.7 s: within noise on a tiny grid, and the stage counts
//! are identical (locks guarantee them); the order matters where a waiting task holds a
//! Slurm allocation. The real one-node cluster runs the 8-cell smoke array in ~6 s.

pub mod cache_admin;
pub mod cell;
pub mod claim;
pub mod expand;
pub mod layout;
pub mod local;
pub mod slurm;
pub mod spec;
pub mod status;

use crate::backend;
use crate::cache::StageCache;
use crate::results::paths;
use anyhow::{bail, Context};
use layout::Status;
use std::path::PathBuf;

/// Where a sweep runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    Local,
    Slurm,
}

/// Order in which cells execute.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Owners of shared stages first (default).
    Owners,
    /// Plain index order (for comparison).
    Index,
}

/// Arguments of `diffnmf sweep`.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// Sweep file (e.g. sweeps/rank_eps.yaml).
    pub file: PathBuf,
    /// local (this machine) or slurm (render and submit an sbatch job array).
    #[arg(long, value_enum, default_value = "local")]
    pub executor: Executor,
    /// Run (or resubmit) only the cells that are missing or failed.
    #[arg(long)]
    pub resume: bool,
    /// Print the cells and the sbatch script; run nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sweep folder (default results/<sweep name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a job key in every cell: --set attack.iterations=20 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Cells run at once by the local executor (default: min(threads, cells)).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Thread budget of the local executor (default: SLURM_CPUS_PER_TASK, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Execution order of the cells.
    #[arg(long, value_enum, default_value = "owners")]
    pub order: Order,
    /// Show every stage log line of every cell (interleaved).
    #[arg(long)]
    pub verbose: bool,
}

/// Arguments of `diffnmf cell` (one Slurm array task).
#[derive(clap::Args, Debug)]
pub struct CellArgs {
    /// Sweep folder.
    pub dir: PathBuf,
    /// Cell index (or array task index when --map is given).
    #[arg(long)]
    pub index: usize,
    /// Map file: line i holds the cell index of array task i.
    #[arg(long)]
    pub map: Option<PathBuf>,
    /// Threads (default: SLURM_CPUS_PER_TASK if set, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Arguments of `diffnmf status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Sweep folder.
    pub dir: PathBuf,
    /// Print only the counts.
    #[arg(long)]
    pub summary: bool,
    /// Also open every done cell's result.h5 and read its metrics (unreadable → failed).
    #[arg(long)]
    pub verify: bool,
}

fn counts(st: &[Status]) -> String {
    let n = |s| st.iter().filter(|&&x| x == s).count();
    format!(
        "done {}, running {}, pending {}, failed {} (of {})",
        n(Status::Done),
        n(Status::Running),
        n(Status::Pending),
        n(Status::Failed),
        st.len()
    )
}

pub fn run_sweep(a: SweepArgs) -> anyhow::Result<()> {
    let spec = spec::load_sweep(&a.file, &a.set)?;
    let cells = expand::expand(&spec)?;
    let dir = layout::absolute(
        &a.out
            .clone()
            .unwrap_or_else(|| paths::sweep_default_dir(&spec.name)),
    )?;
    let order = match a.order {
        Order::Owners => expand::owners_first(&cells),
        Order::Index => (0..cells.len()).collect(),
    };
    let desc = |c: &expand::Cell| expand::describe(&spec, &c.values, c.seed);
    let exe = std::env::current_exe().context("locating the diffnmf binary")?;
    if a.dry_run {
        // One buffered writer: 100,000 cells print in well under a second.
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        writeln!(
            w,
            "# sweep `{}`: {} cells, folder {}",
            spec.name,
            cells.len(),
            dir.display()
        )?;
        for c in &cells {
            writeln!(w, "{:>5} {} {}", c.index, c.id, desc(c))?;
        }
        writeln!(w, "# execution order: {:?}", order)?;
        let limit = slurm::array_limit(&spec.slurm)?;
        let in_order: Vec<usize> = order.iter().map(|&i| cells[i].index).collect();
        let parts =
            slurm::plan_submission(&spec.slurm, &spec.name, &exe, &dir, 0, &in_order, limit.max)?;
        let sizes: Vec<String> = parts.iter().map(|p| p.cells.len().to_string()).collect();
        writeln!(
            w,
            "# {} array(s) of {} tasks (at most {} per array: {})",
            parts.len(),
            sizes.join(" + "),
            limit.max,
            limit.source
        )?;
        for p in &parts {
            writeln!(
                w,
                "# {} (task i runs the cell on line i of {}):",
                p.script.display(),
                p.map.display()
            )?;
            w.write_all(p.body.as_bytes())?;
        }
        w.flush()?;
        return Ok(());
    }
    let ids: Vec<String> = cells.iter().map(|c| c.id.clone()).collect();
    if !a.resume && paths::cells_csv(&dir).exists() {
        let st = status::cell_statuses(&dir, &ids);
        let started = st.iter().any(|s| s.status != Status::Pending || s.active);
        if started || !slurm::submissions(&dir).is_empty() {
            bail!(
                "{} already holds this sweep ({}); pass --resume to continue it, or --out for a new folder",
                dir.display(),
                counts(&st.iter().map(|s| s.status).collect::<Vec<_>>())
            );
        }
    }
    layout::prepare(&dir, &spec, &cells)?;
    let st = status::cell_statuses(&dir, &ids);
    let statuses: Vec<Status> = st.iter().map(|s| s.status).collect();
    layout::write_cells_csv(&dir, &spec, &cells, &statuses)?;
    let todo: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| st[i].status != Status::Done && !st[i].active)
        .collect();
    eprintln!(
        "[sweep] `{}`: {} cells in {} ({}); {} to run",
        spec.name,
        cells.len(),
        dir.display(),
        counts(&statuses),
        todo.len()
    );
    // A Slurm sweep whose aggregation job was refused still needs one.
    let aggregate_only = a.executor == Executor::Slurm && slurm::aggregation_missing(&dir);
    if todo.is_empty() && !aggregate_only {
        eprintln!("[sweep] nothing to do");
        return Ok(());
    }
    match a.executor {
        Executor::Slurm => {
            let todo_idx: Vec<usize> = todo.iter().map(|&i| cells[i].index).collect();
            // The command line that continues this submission (quoted for error messages).
            let mut resume = format!(
                "diffnmf sweep {} --executor slurm --out {} --resume",
                slurm::sh_quote(&a.file.display().to_string()),
                slurm::sh_quote(&dir.display().to_string())
            );
            for s in &a.set {
                resume.push_str(&format!(" --set {}", slurm::sh_quote(s)));
            }
            let sub = slurm::submit(&spec.slurm, &spec.name, &exe, &dir, &todo_idx, &resume)?;
            for (id, _) in &sub.arrays {
                println!("{id}");
            }
            // Up to 4 ids in full; more as `first … last` (all are in slurm/jobs.txt).
            let span = |ids: &[String]| match ids {
                [a, .., b] if ids.len() > 4 => format!("{} ids {a} … {b}", ids.len()),
                _ => ids.join(":"),
            };
            let ids: Vec<String> = sub.arrays.iter().map(|(id, _)| id.clone()).collect();
            let arrays = if ids.len() > 4 {
                let tasks: usize = sub.arrays.iter().map(|(_, t)| t).sum();
                format!("{} ({tasks} tasks)", span(&ids))
            } else {
                let a: Vec<String> = sub
                    .arrays
                    .iter()
                    .map(|(id, t)| format!("{id} ({t} tasks)"))
                    .collect();
                a.join(", ")
            };
            let waits = if sub.waits_for.is_empty() {
                String::new()
            } else {
                format!(" (afterany:{})", span(&sub.waits_for))
            };
            if ids.is_empty() {
                eprintln!(
                    "[sweep] submitted the missing aggregation job {}{waits}; follow with `diffnmf status {}`",
                    sub.aggregate_id,
                    dir.display()
                );
            } else {
                eprintln!(
                    "[sweep] submitted array job(s) {arrays} (at most {} tasks per array: {}) and aggregation job {}{waits}; follow with `diffnmf status {}`",
                    sub.limit.max,
                    sub.limit.source,
                    sub.aggregate_id,
                    dir.display()
                );
            }
            Ok(())
        }
        Executor::Local => {
            let threads = backend::thread_count(a.threads)?;
            backend::init_threads(threads);
            let jobs = a.jobs.unwrap_or(threads).max(1);
            // GEMMs of concurrent cells share the cores: split matrixmultiply's threads.
            std::env::set_var(
                "MATMUL_NUM_THREADS",
                (threads / jobs.min(todo.len())).max(1).to_string(),
            );
            crate::progress::set_quiet(!a.verbose);
            crate::signals::install().context("installing the signal handlers")?;
            let refresh: local::Refresh = {
                let (dir, spec, cells, ids) =
                    (dir.clone(), spec.clone(), cells.clone(), ids.clone());
                // A verified-complete result stays complete: open each result.h5 once, not
                // once per finished cell (O(n) instead of O(n²) HDF5 opens per sweep).
                let done = std::sync::Mutex::new(vec![false; ids.len()]);
                std::sync::Arc::new(move || {
                    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
                    let st: Vec<Status> = ids
                        .iter()
                        .zip(done.iter_mut())
                        .map(|(id, d)| {
                            if *d {
                                return Status::Done;
                            }
                            let s = status::decide(&layout::disk_state(&dir, id), None).status;
                            *d = s == Status::Done;
                            s
                        })
                        .collect();
                    let _ = layout::write_cells_csv(&dir, &spec, &cells, &st);
                })
            };
            let rep = local::run_local(&dir, &cells, &todo, jobs, threads, &desc, refresh.clone())?;
            refresh();
            crate::progress::set_quiet(false);
            eprintln!("{}", rep.stats);
            eprintln!(
                "[sweep] {} cells done, {} failed, {} skipped (claimed by another process) in {:.1}s; results in {}",
                rep.done,
                rep.failed.len(),
                rep.busy.len(),
                rep.wall_s,
                dir.display()
            );
            for (id, by) in &rep.busy {
                eprintln!("[sweep] {id} skipped: being computed by {by}");
            }
            if !rep.failed.is_empty() {
                bail!(
                    "{} cell(s) failed (see cells/<id>/error.txt): {}; rerun with --resume",
                    rep.failed.len(),
                    rep.failed.join(", ")
                );
            }
            Ok(())
        }
    }
}

pub fn run_cell(a: CellArgs) -> anyhow::Result<()> {
    let threads = backend::thread_count(a.threads)?;
    backend::init_threads(threads);
    let index = match &a.map {
        Some(m) => cell::map_index(m, a.index)?,
        None => a.index,
    };
    let ids = layout::read_cell_ids(&a.dir)?;
    let id = ids.get(index).with_context(|| {
        format!(
            "{}: no cell {index} (the sweep has {} cells)",
            a.dir.display(),
            ids.len()
        )
    })?;
    eprintln!(
        "[cell] {id} (cell {index}, task {}) on {} with {threads} threads",
        a.index,
        layout::hostname()
    );
    if layout::disk_state(&a.dir, id) == layout::DiskState::Done {
        eprintln!("[cell] {id} is already done; nothing to do");
        return Ok(());
    }
    crate::signals::install().context("installing the signal handlers")?;
    let cache = StageCache::new(paths::sweep_cache(&a.dir));
    let res = backend::in_pool(|| cell::run_one(&a.dir, id, &cache, threads));
    eprintln!("{}", cell::stats_line(&cache));
    match res.with_context(|| format!("cell {id} failed (written to cells/{id}/error.txt)"))? {
        cell::Outcome::Done(s) => eprintln!("[cell] {id} done in {s:.1}s"),
        cell::Outcome::AlreadyDone => eprintln!("[cell] {id} was finished by another process"),
        cell::Outcome::Busy(m) => eprintln!(
            "[cell] {id} is being computed by {}; nothing to do",
            m.describe()
        ),
    }
    Ok(())
}

pub fn run_status(a: StatusArgs) -> anyhow::Result<()> {
    let csv = paths::cells_csv(&a.dir);
    let text = std::fs::read_to_string(&csv)
        .with_context(|| format!("reading {} (is this a sweep folder?)", csv.display()))?;
    let ids = layout::read_cell_ids(&a.dir)?;
    let mut st = status::cell_statuses(&a.dir, &ids);
    if a.verify {
        for (id, s) in ids.iter().zip(st.iter_mut()) {
            if s.status == Status::Done {
                if let Err(e) = crate::results::h5::read_metrics(&paths::cell_result(&a.dir, id)) {
                    s.status = Status::Failed;
                    s.detail = format!("result.h5 unreadable: {e}");
                }
            }
        }
    }
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (line, s) in lines.iter_mut().skip(1).zip(&st) {
        if let Some(cut) = line.rfind(',') {
            line.truncate(cut + 1);
            line.push_str(s.status.as_str());
        }
    }
    let new = lines.join("\n") + "\n";
    if new != text {
        crate::results::write_atomic(&csv, new.as_bytes())?;
    }
    if !a.summary {
        for (line, s) in lines.iter().skip(1).zip(&st) {
            let mut f = line.split(',');
            let id = f.next().unwrap_or("");
            println!("{id:<16} {:<8} {}", s.status.as_str(), s.detail);
        }
    }
    let statuses: Vec<Status> = st.iter().map(|s| s.status).collect();
    println!("{}: {}", a.dir.display(), counts(&statuses));
    let entries = layout::cache_entries(&a.dir);
    if !entries.is_empty() {
        let e: Vec<String> = entries.iter().map(|(s, n)| format!("{s}={n}")).collect();
        println!("[cache] entries on disk: {}", e.join(" "));
    }
    for s in slurm::submissions(&a.dir) {
        println!(
            "[slurm] array {} (map {}, submission {}), aggregation {}",
            s.array_id,
            s.map,
            s.submission,
            s.aggregate_id
                .as_deref()
                .unwrap_or("none (refused or interrupted; `sweep --resume` submits it)")
        );
    }
    Ok(())
}
