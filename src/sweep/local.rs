//! The local executor: `jobs` worker threads take cells from one queue (in execution order)
//! and run them with one shared rayon pool of `threads` threads and one shared stage cache;
//! one progress bar for the sweep plus a status line per finished cell. A cell that fails
//! or panics is recorded (`error.txt`) and the sweep goes on; a cell claimed by another
//! live process (a second sweep on the same folder) is skipped. SIGINT / SIGTERM / SIGUSR2
//! stop at once ([`crate::signals`]): each running cell records the interruption in its
//! `error.txt` and drops its claim and temporary files, `cells.csv` is refreshed, finished
//! cells are kept, and `--resume` continues.

use super::cell::{run_one, stats_line, Outcome};
use super::expand::Cell;
use crate::cache::StageCache;
use crate::error::Result;
use crate::results::paths;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Rewrites `cells.csv` from the files (shared with the signal action, hence owned).
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// What a local run executes, and how.
pub struct LocalRun<'a> {
    /// The sweep folder.
    pub dir: &'a Path,
    pub cells: &'a [Cell],
    /// The cells to run: positions into `cells`, in execution order.
    pub order: &'a [usize],
    /// Cells run at once (clamped to 1..=order.len()).
    pub jobs: usize,
    /// Threads of the shared rayon pool.
    pub threads: usize,
    /// Labels status lines.
    pub describe: &'a (dyn Fn(&Cell) -> String + Sync),
    /// Called after every finished cell (under the report lock) and by the signal action.
    pub refresh: Refresh,
}

/// Outcome of a local run.
#[derive(Debug, Default)]
pub struct LocalReport {
    pub done: usize,
    pub failed: Vec<String>,
    /// Cells skipped because another live process holds their claim: `(id, holder)`.
    pub busy: Vec<(String, String)>,
    pub stats: String,
    pub wall_s: f64,
}

fn say(bar: &ProgressBar, msg: String) {
    if bar.is_hidden() {
        eprintln!("{msg}");
    } else {
        bar.println(msg);
    }
}

/// A lock that a panicking holder does not poison for the others (the data stays usable:
/// every holder leaves it consistent between statements).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Log = Arc<Mutex<Option<std::fs::File>>>;
type Running = Arc<Mutex<BTreeSet<String>>>;

fn append(log: &Log, line: String) {
    if let Some(f) = lock(log).as_mut() {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Run `run.order` of `run.cells` in `run.dir`, `run.jobs` at a time.
pub fn run_local(run: &LocalRun) -> Result<LocalReport> {
    let t0 = Instant::now();
    let jobs = run.jobs.clamp(1, run.order.len().max(1));
    let cache = StageCache::new(paths::sweep_cache(run.dir));
    let bar = progress_bar(run.order.len());
    say(
        &bar,
        format!(
            "[sweep] {} cells to run, {jobs} at a time, {} threads",
            run.order.len(),
            run.threads
        ),
    );
    let w = Workers::new(run, cache, bar);
    // Runs after the running cells' own actions (newer actions run first).
    let _sig = on_interrupt(&w);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| w.work());
        }
    });
    w.bar.finish_and_clear();
    let mut rep = w.report.into_inner().unwrap_or_else(|e| e.into_inner());
    rep.stats = stats_line(&w.cache);
    rep.wall_s = t0.elapsed().as_secs_f64();
    Ok(rep)
}

/// The sweep log (`sweep.log`), appended to; None when it cannot be opened.
fn open_log(dir: &Path) -> Log {
    Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths::sweep_log(dir))
            .ok(),
    ))
}

/// The progress bar of the sweep.
fn progress_bar(n: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "sweep [{bar:30}] {pos}/{len} cells {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// The signal action of the run: the running cells recorded as interrupted in the sweep
/// log, `cells.csv` refreshed, one line on how to continue.
fn on_interrupt(w: &Workers) -> crate::signals::Guard {
    let (bar, log, running, refresh) = (
        w.bar.clone(),
        w.log.clone(),
        w.running.clone(),
        w.run.refresh.clone(),
    );
    crate::signals::on_signal(move |sig| {
        bar.abandon();
        let r = running.lock().map(|r| r.clone()).unwrap_or_default();
        for id in &r {
            append(
                &log,
                format!("interrupted {id} by {}\n", crate::signals::name(sig)),
            );
        }
        refresh();
        eprintln!(
            "\n[sweep] interrupted by {}: {} running cell(s) recorded as interrupted; finished cells are kept. Continue with `diffnmf sweep <file> --resume`.",
            crate::signals::name(sig),
            r.len()
        );
        None
    })
}

/// The state the worker threads share: one queue, one cache, one bar, one log, one report.
struct Workers<'a> {
    run: &'a LocalRun<'a>,
    cache: StageCache,
    bar: ProgressBar,
    /// The sweep log (`sweep.log`; None when it cannot be opened).
    log: Log,
    /// Ids of the cells being run now.
    running: Running,
    /// Next position of `run.order` to take.
    next: AtomicUsize,
    report: Mutex<LocalReport>,
}

impl<'a> Workers<'a> {
    fn new(run: &'a LocalRun<'a>, cache: StageCache, bar: ProgressBar) -> Self {
        Workers {
            run,
            cache,
            bar,
            log: open_log(run.dir),
            running: Arc::new(Mutex::new(BTreeSet::new())),
            next: AtomicUsize::new(0),
            report: Mutex::new(LocalReport::default()),
        }
    }

    /// One worker: take cells from the queue until it is empty.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(&pos) = self.run.order.get(i) else {
                break;
            };
            self.run_cell(&self.run.cells[pos]);
        }
    }

    fn run_cell(&self, c: &Cell) {
        lock(&self.running).insert(c.id.clone());
        append(
            &self.log,
            format!("started {} pid {}\n", c.id, std::process::id()),
        );
        self.bar.set_message(c.id.clone());
        let r = run_one(self.run.dir, &c.id, &self.cache, self.run.threads);
        lock(&self.running).remove(&c.id);
        let mut rep = lock(&self.report);
        self.record(&mut rep, c, r);
        (self.run.refresh)(); // cells.csv, under the report lock (one writer at a time)
        drop(rep);
        self.bar.inc(1);
    }

    /// How cell `c` ended: into the report, the sweep log and a status line.
    fn record(&self, rep: &mut LocalReport, c: &Cell, r: Result<Outcome>) {
        let (log, bar, label) = (&self.log, &self.bar, (self.run.describe)(c));
        match r {
            Ok(Outcome::Done(s)) => {
                rep.done += 1;
                append(log, format!("finished {} {s:.2}s\n", c.id));
                say(bar, format!("[cell] {} {label} done in {s:.1}s", c.id));
            }
            Ok(Outcome::AlreadyDone) => {
                rep.done += 1;
                say(
                    bar,
                    format!("[cell] {} {label} was finished by another process", c.id),
                );
            }
            Ok(Outcome::Busy(m)) => {
                append(
                    log,
                    format!("skipped {} (claimed by {})\n", c.id, m.describe()),
                );
                say(
                    bar,
                    format!(
                        "[cell] {} {label} skipped: claimed by {}",
                        c.id,
                        m.describe()
                    ),
                );
                rep.busy.push((c.id.clone(), m.describe()));
            }
            Err(e) => {
                rep.failed.push(c.id.clone());
                append(log, format!("failed {}\n", c.id));
                say(bar, format!("[cell] {} {label} FAILED: {e}", c.id));
            }
        }
    }
}
