//! The local executor: `jobs` worker threads take cells from one queue (in execution order)
//! and run them with one shared rayon pool of `threads` threads and one shared stage cache;
//! one progress bar for the sweep plus a status line per finished cell. Ctrl-C stops at
//! once: finished cells are kept (their files were renamed into place when complete), the
//! running ones are discarded (markers and their temporary files removed) and
//! `--resume` continues.

use super::cell::{run_one, stats_line};
use super::expand::Cell;
use crate::cache::StageCache;
use crate::error::{Error, Result};
use crate::results::paths;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

/// Outcome of a local run.
#[derive(Debug, Default)]
pub struct LocalReport {
    pub done: usize,
    pub failed: Vec<String>,
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

fn append(log: &Mutex<Option<std::fs::File>>, line: String) {
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
    refresh: &(dyn Fn() + Sync),
) -> Result<LocalReport> {
    let t0 = Instant::now();
    let jobs = jobs.clamp(1, order.len().max(1));
    let _ = ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst));
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
    let log = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths::sweep_log(dir))
            .ok(),
    );
    let next = AtomicUsize::new(0);
    let finished_workers = AtomicUsize::new(0);
    let running: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let report = Mutex::new(LocalReport::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    if STOP.load(Ordering::SeqCst) {
                        break;
                    }
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
                    if STOP.load(Ordering::SeqCst) {
                        break; // being discarded by the main thread
                    }
                    running.lock().unwrap().remove(&c.id);
                    let mut rep = report.lock().unwrap();
                    match r {
                        Ok(s) => {
                            rep.done += 1;
                            append(&log, format!("finished {} {s:.2}s\n", c.id));
                            say(
                                &bar,
                                format!("[cell] {} {} done in {s:.1}s", c.id, describe(c)),
                            );
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
                }
                finished_workers.fetch_add(1, Ordering::SeqCst);
            });
        }
        while finished_workers.load(Ordering::SeqCst) < jobs {
            if STOP.load(Ordering::SeqCst) {
                let _guard = report.lock().unwrap();
                interrupted(dir, &bar, &running.lock().unwrap(), &log, refresh);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    bar.finish_and_clear();
    let mut rep = report.into_inner().unwrap();
    rep.stats = stats_line(&cache);
    rep.wall_s = t0.elapsed().as_secs_f64();
    if STOP.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    Ok(rep)
}

/// Ctrl-C: discard the running cells and exit (130) without waiting for them.
fn interrupted(
    dir: &Path,
    bar: &ProgressBar,
    running: &BTreeSet<String>,
    log: &Mutex<Option<std::fs::File>>,
    refresh: &(dyn Fn() + Sync),
) -> ! {
    bar.abandon();
    let pid = format!(".tmp.{}", std::process::id());
    for id in running {
        let cd = paths::cell_dir(dir, id);
        let _ = std::fs::remove_file(paths::cell_running(dir, id));
        if let Ok(rd) = std::fs::read_dir(&cd) {
            for e in rd.filter_map(|e| e.ok()) {
                if e.file_name().to_string_lossy().ends_with(&pid) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        append(log, format!("discarded {id}\n"));
    }
    refresh();
    eprintln!(
        "\n[sweep] interrupted: discarded {} running cell(s); finished cells are kept. Continue with `diffnmf sweep <file> --resume`.",
        running.len()
    );
    std::process::exit(130)
}
