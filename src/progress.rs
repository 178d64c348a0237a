//! Progress reporting for long stages: an indicatif bar on a terminal, and plain
//! `[progress] stage: i/n (p%) elapsed eta` lines every few seconds otherwise (Slurm logs,
//! CI). Also owns the crate's log line helper [`log`], which clears the visible bar (if
//! any) while it prints, so log lines and a bar never share a terminal line.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

/// The bars drawn on the terminal now, newest last, with the id of their [`Progress`].
static VISIBLE: Mutex<Vec<(u64, ProgressBar)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Run `f` with the newest visible bar cleared (indicatif `suspend`), or plainly when none.
fn with_bar_suspended(f: impl FnOnce()) {
    let bar = VISIBLE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last()
        .map(|b| b.1.clone());
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

/// Silence all progress output and log lines (tests).
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Print one log line to stderr (the visible bar, if any, is cleared and redrawn after).
pub fn log(msg: impl AsRef<str>) {
    if !quiet() {
        with_bar_suspended(|| eprintln!("{}", msg.as_ref()));
    }
}

/// Print a warning to stderr even when log lines are silenced (a local sweep silences the
/// cells' stage logs; a rebuilt cache entry or an ignored checkpoint must still be seen).
pub fn warn(msg: impl AsRef<str>) {
    with_bar_suspended(|| eprintln!("{}", msg.as_ref()));
}

/// A progress reporter for one stage. Cheap to `inc` from many threads.
pub struct Progress {
    id: u64,
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    start: Instant,
    state: Mutex<(u64, Instant)>,
    every: Duration,
}

impl Progress {
    /// A reporter for `total` units of work named `label`.
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        let label = label.into();
        let bar = if quiet() {
            None
        } else {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if b.is_hidden() {
                None
            } else {
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>18} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
                    )
                    .unwrap()
                    .progress_chars("=> "),
                );
                b.set_prefix(label.clone());
                Some(b)
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = &bar {
            VISIBLE
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((id, b.clone()));
        }
        let now = Instant::now();
        Progress {
            id,
            bar,
            label,
            total,
            start: now,
            state: Mutex::new((0, now)),
            every: Duration::from_secs(5),
        }
    }

    /// Advance by `n` units.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
            return;
        }
        if quiet() {
            return;
        }
        let mut st = self.state.lock().unwrap();
        st.0 += n;
        if st.1.elapsed() >= self.every {
            st.1 = Instant::now();
            self.plain_line(st.0, "");
        }
    }

    /// Set a short status message (e.g. the current loss).
    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(b) = &self.bar {
            b.set_message(msg.into());
        }
    }

    fn plain_line(&self, pos: u64, msg: &str) {
        let el = self.start.elapsed().as_secs_f64();
        let frac = if self.total > 0 {
            pos as f64 / self.total as f64
        } else {
            1.0
        };
        let eta = if frac > 0.0 { el / frac - el } else { 0.0 };
        eprintln!(
            "[progress] {}: {}/{} ({:.0}%) elapsed {:.1}s eta {:.1}s {}",
            self.label,
            pos,
            self.total,
            100.0 * frac,
            el,
            eta,
            msg
        );
    }

    /// No longer a visible bar for [`log`] to suspend.
    fn forget(&self) {
        if self.bar.is_some() {
            let mut v = VISIBLE.lock().unwrap_or_else(|e| e.into_inner());
            v.retain(|b| b.0 != self.id);
        }
    }

    /// Finish, printing one summary line with `msg`.
    pub fn finish(self, msg: impl AsRef<str>) {
        let el = self.start.elapsed().as_secs_f64();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.forget();
        log(format!(
            "{}: done in {:.1}s {}",
            self.label,
            el,
            msg.as_ref()
        ));
    }
}

impl Drop for Progress {
    /// A reporter dropped without [`Progress::finish`] (an error mid-stage) leaves no bar
    /// behind for [`log`].
    fn drop(&mut self) {
        self.forget();
    }
}
