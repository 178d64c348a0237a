//! The commands `diffnmf sweep`, `cell` and `status`, as steps: a sweep is *planned* (sweep
//! file loaded, grid expanded, folder and execution order fixed; [`Plan`]), its folder
//! *prepared* (refused when it already holds a started sweep and `--resume` is missing;
//! `cells.csv` refreshed; the cells left to run chosen), then *executed* by the local
//! executor or submitted to Slurm, and *summarised* on stderr. `cell` runs one cell (a Slurm
//! array task); `status` combines the files with Slurm's state and rewrites the status
//! column of `cells.csv`. Output goes to stdout (listings, job ids) and stderr (progress).

use super::error::{Result, SweepError};
use super::expand::{self, Cell};
use super::layout::{self, Status};
use super::local::{self, LocalReport, LocalRun};
use super::slurm::{self, ArrayLimit, ArrayPart, Submitted};
use super::spec::{self, SweepSpec};
use super::status::{self, CellStatus};
use super::{cell, CellOptions, Executor, Order, StatusOptions, SweepOptions};
use crate::backend;
use crate::cache::StageCache;
use crate::results::paths;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `done 3, running 1, pending 4, failed 0 (of 8)`.
pub fn counts(st: &[Status]) -> String {
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

fn status_counts(st: &[CellStatus]) -> String {
    counts(&st.iter().map(|s| s.status).collect::<Vec<_>>())
}

/// A sweep ready to run: its spec, its cells (index order), its folder and execution order.
pub struct Plan {
    pub spec: SweepSpec,
    pub cells: Vec<Cell>,
    /// The sweep folder, absolute.
    pub dir: PathBuf,
    /// Positions into `cells`, in execution order.
    pub order: Vec<usize>,
    /// The diffnmf binary the Slurm tasks run.
    pub exe: PathBuf,
}

impl Plan {
    /// Load the sweep file, expand the grid, fix the folder and the execution order.
    pub fn new(o: &SweepOptions) -> Result<Plan> {
        let spec = spec::load_sweep(&o.file, &o.set)?;
        let cells = expand::expand(&spec)?;
        let dir = layout::absolute(
            &o.out
                .clone()
                .unwrap_or_else(|| paths::sweep_default_dir(&spec.name)),
        )?;
        let order = match o.order {
            Order::Owners => expand::owners_first(&cells),
            Order::Index => (0..cells.len()).collect(),
        };
        let exe = std::env::current_exe().map_err(SweepError::CurrentExe)?;
        Ok(Plan {
            spec,
            cells,
            dir,
            order,
            exe,
        })
    }

    /// `nnmf.k=8 attack.eps=0.5 seed=1`: the label of a cell in status lines.
    pub fn describe(&self, c: &Cell) -> String {
        expand::describe(&self.spec, &c.values, c.seed)
    }

    /// Cell ids in index order.
    pub fn ids(&self) -> Vec<String> {
        self.cells.iter().map(|c| c.id.clone()).collect()
    }

    /// Cell indices in execution order.
    fn indices(&self, positions: &[usize]) -> Vec<usize> {
        positions.iter().map(|&i| self.cells[i].index).collect()
    }
}

/// `diffnmf sweep`: plan, then print (`dry_run`) or prepare the folder and execute.
pub fn run_sweep(o: &SweepOptions) -> Result<()> {
    let plan = Plan::new(o)?;
    if o.dry_run {
        return print_dry_run(&plan);
    }
    let todo = prepare(&plan, o.resume)?;
    // A Slurm sweep whose aggregation job was refused still needs one.
    let aggregate_only = o.executor == Executor::Slurm && slurm::aggregation_missing(&plan.dir);
    if todo.is_empty() && !aggregate_only {
        eprintln!("[sweep] nothing to do");
        return Ok(());
    }
    match o.executor {
        Executor::Slurm => submit_to_slurm(&plan, o, &todo),
        Executor::Local => run_locally(&plan, o, &todo),
    }
}

/// The dry run: every cell, the execution order and the array scripts, on stdout.
fn print_dry_run(plan: &Plan) -> Result<()> {
    // One buffered writer: 100,000 cells print in well under a second.
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    write_cells(&mut w, plan).map_err(SweepError::Print)?;
    let limit = slurm::array_limit(&plan.spec.slurm)?;
    let s = &plan.spec;
    let in_order = plan.indices(&plan.order);
    let parts = slurm::plan_submission(
        &s.slurm, &s.name, &plan.exe, &plan.dir, 0, &in_order, limit.max,
    )?;
    write_arrays(&mut w, &parts, &limit).map_err(SweepError::Print)
}

fn write_cells(w: &mut impl Write, plan: &Plan) -> std::io::Result<()> {
    writeln!(
        w,
        "# sweep `{}`: {} cells, folder {}",
        plan.spec.name,
        plan.cells.len(),
        plan.dir.display()
    )?;
    for c in &plan.cells {
        writeln!(w, "{:>5} {} {}", c.index, c.id, plan.describe(c))?;
    }
    writeln!(w, "# execution order: {:?}", plan.order)
}

fn write_arrays(
    w: &mut impl Write,
    parts: &[ArrayPart],
    limit: &ArrayLimit,
) -> std::io::Result<()> {
    let sizes: Vec<String> = parts.iter().map(|p| p.cells.len().to_string()).collect();
    writeln!(
        w,
        "# {} array(s) of {} tasks (at most {} per array: {})",
        parts.len(),
        sizes.join(" + "),
        limit.max,
        limit.source
    )?;
    for p in parts {
        writeln!(
            w,
            "# {} (task i runs the cell on line i of {}):",
            p.script.display(),
            p.map.display()
        )?;
        w.write_all(p.body.as_bytes())?;
    }
    w.flush()
}

/// Refuse a folder that already holds this sweep, started, unless `resume`; create (or
/// reuse) the folder and refresh `cells.csv`. Returns the cells to run (positions into
/// `plan.cells`, execution order): neither done nor active.
fn prepare(plan: &Plan, resume: bool) -> Result<Vec<usize>> {
    let dir = &plan.dir;
    let ids = plan.ids();
    if !resume && paths::cells_csv(dir).exists() {
        let st = status::cell_statuses(dir, &ids);
        let started = st.iter().any(|s| s.status != Status::Pending || s.active);
        if started || !slurm::submissions(dir).is_empty() {
            return Err(SweepError::AlreadyStarted {
                dir: dir.clone(),
                counts: status_counts(&st),
            });
        }
    }
    layout::prepare(dir, &plan.spec, &plan.cells)?;
    let st = status::cell_statuses(dir, &ids);
    let statuses: Vec<Status> = st.iter().map(|s| s.status).collect();
    layout::write_cells_csv(dir, &plan.spec, &plan.cells, &statuses)?;
    let todo: Vec<usize> = plan
        .order
        .iter()
        .copied()
        .filter(|&i| st[i].status != Status::Done && !st[i].active)
        .collect();
    eprintln!(
        "[sweep] `{}`: {} cells in {} ({}); {} to run",
        plan.spec.name,
        plan.cells.len(),
        dir.display(),
        counts(&statuses),
        todo.len()
    );
    Ok(todo)
}

/// Submit `todo` as the next submission; print the array ids (stdout) and a summary.
fn submit_to_slurm(plan: &Plan, o: &SweepOptions, todo: &[usize]) -> Result<()> {
    let todo_idx = plan.indices(todo);
    let resume = resume_command(o, &plan.dir);
    let s = &plan.spec;
    let sub = slurm::submit(&s.slurm, &s.name, &plan.exe, &plan.dir, &todo_idx, &resume)?;
    for (id, _) in &sub.arrays {
        println!("{id}");
    }
    eprintln!("{}", submitted_line(&sub, &plan.dir));
    Ok(())
}

/// The command line that continues this submission (quoted, for error messages).
fn resume_command(o: &SweepOptions, dir: &Path) -> String {
    let mut resume = format!(
        "diffnmf sweep {} --executor slurm --out {} --resume",
        slurm::sh_quote(&o.file.display().to_string()),
        slurm::sh_quote(&dir.display().to_string())
    );
    for s in &o.set {
        resume.push_str(&format!(" --set {}", slurm::sh_quote(s)));
    }
    resume
}

/// Up to 4 ids in full; more as `n ids first … last` (all are in slurm/jobs.txt).
fn span(ids: &[String]) -> String {
    match ids {
        [a, .., b] if ids.len() > 4 => format!("{} ids {a} … {b}", ids.len()),
        _ => ids.join(":"),
    }
}

/// The `[sweep] submitted …` line.
fn submitted_line(sub: &Submitted, dir: &Path) -> String {
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
        format!(
            "[sweep] submitted the missing aggregation job {}{waits}; follow with `diffnmf status {}`",
            sub.aggregate_id,
            dir.display()
        )
    } else {
        format!(
            "[sweep] submitted array job(s) {arrays} (at most {} tasks per array: {}) and aggregation job {}{waits}; follow with `diffnmf status {}`",
            sub.limit.max,
            sub.limit.source,
            sub.aggregate_id,
            dir.display()
        )
    }
}

/// Run `todo` with the local executor and summarise; failed cells make it an error.
fn run_locally(plan: &Plan, o: &SweepOptions, todo: &[usize]) -> Result<()> {
    let threads = backend::thread_count(o.threads)?;
    backend::init_threads(threads);
    let jobs = o.jobs.unwrap_or(threads).max(1);
    // GEMMs of concurrent cells share the cores: split matrixmultiply's threads.
    std::env::set_var(
        "MATMUL_NUM_THREADS",
        (threads / jobs.min(todo.len())).max(1).to_string(),
    );
    crate::progress::set_quiet(!o.verbose);
    crate::signals::install().map_err(SweepError::Signals)?;
    let refresh = csv_refresher(plan);
    let describe = |c: &Cell| plan.describe(c);
    let rep = local::run_local(&LocalRun {
        dir: &plan.dir,
        cells: &plan.cells,
        order: todo,
        jobs,
        threads,
        describe: &describe,
        refresh: refresh.clone(),
    })?;
    refresh();
    crate::progress::set_quiet(false);
    summarise_local(&rep, &plan.dir)
}

/// Rewrites `cells.csv` from the files. A verified-complete result stays complete: each
/// `result.h5` is opened until it is found done, not once per finished cell (O(n) instead
/// of O(n²) HDF5 opens per sweep).
fn csv_refresher(plan: &Plan) -> local::Refresh {
    let (dir, spec, cells, ids) = (
        plan.dir.clone(),
        plan.spec.clone(),
        plan.cells.clone(),
        plan.ids(),
    );
    let done = Mutex::new(vec![false; ids.len()]);
    Arc::new(move || {
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
}

fn summarise_local(rep: &LocalReport, dir: &Path) -> Result<()> {
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
        return Err(SweepError::CellsFailed {
            ids: rep.failed.clone(),
        });
    }
    Ok(())
}

/// `diffnmf cell`: run one cell of the sweep in `o.dir` (a Slurm array task).
pub fn run_cell(o: &CellOptions) -> Result<()> {
    let threads = backend::thread_count(o.threads)?;
    backend::init_threads(threads);
    let index = match &o.map {
        Some(m) => cell::map_index(m, o.index)?,
        None => o.index,
    };
    let ids = layout::read_cell_ids(&o.dir)?;
    let id = ids.get(index).ok_or_else(|| SweepError::NoSuchCell {
        dir: o.dir.clone(),
        index,
        cells: ids.len(),
    })?;
    eprintln!(
        "[cell] {id} (cell {index}, task {}) on {} with {threads} threads",
        o.index,
        layout::hostname()
    );
    if layout::disk_state(&o.dir, id) == layout::DiskState::Done {
        eprintln!("[cell] {id} is already done; nothing to do");
        return Ok(());
    }
    crate::signals::install().map_err(SweepError::Signals)?;
    let cache = StageCache::new(paths::sweep_cache(&o.dir));
    let res = backend::in_pool(|| cell::run_one(&o.dir, id, &cache, threads));
    eprintln!("{}", cell::stats_line(&cache));
    let outcome = res.map_err(|source| SweepError::CellFailed {
        id: id.clone(),
        source,
    })?;
    match outcome {
        cell::Outcome::Done(s) => eprintln!("[cell] {id} done in {s:.1}s"),
        cell::Outcome::AlreadyDone => eprintln!("[cell] {id} was finished by another process"),
        cell::Outcome::Busy(m) => eprintln!(
            "[cell] {id} is being computed by {}; nothing to do",
            m.describe()
        ),
    }
    Ok(())
}

/// `diffnmf status`: the status of every cell (from the files and Slurm), written into the
/// status column of `cells.csv` and printed with the cache and Slurm records.
pub fn run_status(o: &StatusOptions) -> Result<()> {
    let csv = paths::cells_csv(&o.dir);
    let text = std::fs::read_to_string(&csv).map_err(|source| SweepError::NotASweep {
        csv: csv.clone(),
        source,
    })?;
    let ids = layout::read_cell_ids(&o.dir)?;
    let mut st = status::cell_statuses(&o.dir, &ids);
    if o.verify {
        verify_done(&o.dir, &ids, &mut st);
    }
    let lines = with_statuses(&text, &st);
    let new = lines.join("\n") + "\n";
    if new != text {
        crate::results::write_atomic(&csv, new.as_bytes())?;
    }
    if !o.summary {
        for (line, s) in lines.iter().skip(1).zip(&st) {
            let id = line.split(',').next().unwrap_or("");
            println!("{id:<16} {:<8} {}", s.status.as_str(), s.detail);
        }
    }
    println!("{}: {}", o.dir.display(), status_counts(&st));
    print_records(&o.dir);
    Ok(())
}

/// Read every done cell's metrics: a result that does not read makes its cell failed.
fn verify_done(dir: &Path, ids: &[String], st: &mut [CellStatus]) {
    for (id, s) in ids.iter().zip(st.iter_mut()) {
        if s.status == Status::Done {
            if let Err(e) = crate::results::h5::read_metrics(&paths::cell_result(dir, id)) {
                s.status = Status::Failed;
                s.detail = format!("result.h5 unreadable: {e}");
            }
        }
    }
}

/// The lines of `cells.csv` text with the status column (the last) replaced by `st`.
fn with_statuses(text: &str, st: &[CellStatus]) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (line, s) in lines.iter_mut().skip(1).zip(st) {
        if let Some(cut) = line.rfind(',') {
            line.truncate(cut + 1);
            line.push_str(s.status.as_str());
        }
    }
    lines
}

/// The cache entries on disk and the recorded Slurm submissions of a sweep.
fn print_records(dir: &Path) {
    let entries = layout::cache_entries(dir);
    if !entries.is_empty() {
        let e: Vec<String> = entries.iter().map(|(s, n)| format!("{s}={n}")).collect();
        println!("[cache] entries on disk: {}", e.join(" "));
    }
    for s in slurm::submissions(dir) {
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
}
