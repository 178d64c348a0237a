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
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Rewrites `cells.csv` from the files (shared with the signal action, hence owned).
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

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

type Log = Arc<Mutex<Option<std::fs::File>>>;

fn append(log: &Log, line: String) {
    if let Some(f) = log.lock().unwrap().as_mut() {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Run `order` (cell positions) of `cells` in `dir`; `describe(cell)` labels status lines.
pub fn run_local(
    dir: &Path,
    cells: &[Cell],
    order: &[usize],
    jobs: usize,
    threads: usize,
    describe: &(dyn Fn(&Cell) -> String + Sync),
    refresh: Refresh,
) -> Result<LocalReport> {
    let t0 = Instant::now();
    let jobs = jobs.clamp(1, order.len().max(1));
    let cache = StageCache::new(paths::sweep_cache(dir));
    let bar = ProgressBar::with_draw_target(Some(order.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "sweep [{bar:30}] {pos}/{len} cells {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    say(
        &bar,
        format!(
            "[sweep] {} cells to run, {jobs} at a time, {threads} threads",
            order.len()
        ),
    );
    let log: Log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths::sweep_log(dir))
            .ok(),
    ));
    let running: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
    // Runs after the running cells' own actions (newer actions run first).
    let _sig = {
        let (bar, log, running, refresh) =
            (bar.clone(), log.clone(), running.clone(), refresh.clone());
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
    };
    let next = AtomicUsize::new(0);
    let report = Mutex::new(LocalReport::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&pos) = order.get(i) else { break };
                let c = &cells[pos];
                running.lock().unwrap().insert(c.id.clone());
                append(
                    &log,
                    format!("started {} pid {}\n", c.id, std::process::id()),
                );
                bar.set_message(c.id.clone());
                let r = run_one(dir, &c.id, &cache, threads);
                running.lock().unwrap().remove(&c.id);
                let mut rep = report.lock().unwrap();
                match r {
                    Ok(Outcome::Done(s)) => {
                        rep.done += 1;
                        append(&log, format!("finished {} {s:.2}s\n", c.id));
                        say(
                            &bar,
                            format!("[cell] {} {} done in {s:.1}s", c.id, describe(c)),
                        );
                    }
                    Ok(Outcome::AlreadyDone) => {
                        rep.done += 1;
                        say(
                            &bar,
                            format!(
                                "[cell] {} {} was finished by another process",
                                c.id,
                                describe(c)
                            ),
                        );
                    }
                    Ok(Outcome::Busy(m)) => {
                        append(
                            &log,
                            format!("skipped {} (claimed by {})\n", c.id, m.describe()),
                        );
                        say(
                            &bar,
                            format!(
                                "[cell] {} {} skipped: claimed by {}",
                                c.id,
                                describe(c),
                                m.describe()
                            ),
                        );
                        rep.busy.push((c.id.clone(), m.describe()));
                    }
                    Err(e) => {
                        rep.failed.push(c.id.clone());
                        append(&log, format!("failed {}\n", c.id));
                        say(&bar, format!("[cell] {} {} FAILED: {e}", c.id, describe(c)));
                    }
                }
                refresh(); // cells.csv, under the report lock (one writer at a time)
                drop(rep);
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let mut rep = report.into_inner().unwrap();
    rep.stats = stats_line(&cache);
    rep.wall_s = t0.elapsed().as_secs_f64();
    Ok(rep)
}
