//! Signals, the clean-up they trigger, and the test-only fault switch.
//!
//! `run`, `cell` and `sweep` call [`install`] once. One thread waits for SIGINT, SIGTERM and
//! SIGUSR2 and SIGHUP (Slurm sends SIGTERM on `scancel` and at the time limit, SIGUSR2 `<grace>` seconds
//! before it with `#SBATCH --signal=B:USR2@<grace>`). On the first signal it runs every
//! registered clean-up action, newest first (a cell writes `error.txt`, removes its
//! `running` marker and its temporary files; the local executor refreshes `cells.csv`), then
//! ends the process with the conventional code 128 + signal number (130, 143, 140) — or the
//! code an action asked for (a cell requeued by Slurm exits 0). The current stage is
//! abandoned, not finished: finished work is on disk already (stage-cache entries, per-ε
//! evaluation checkpoints, renamed result files), the rest is recomputed on `--resume`.
//!
//! The process ends with `_exit`, not `exit`: `exit` would run HDF5's `atexit` shutdown while
//! a worker thread may be inside an HDF5 call. The clean-up runs on its own thread and waits
//! for a result set being renamed into place ([`commit_lock`]); a second signal during the
//! clean-up ends the process at once.
//!
//! [`fault`] is a test-only switch (`DIFFNMF_FAULT=panic:<stage>` or
//! `stall:<stage>`) used by the reliability tests to panic or hang at a named stage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};

/// A clean-up action: gets the signal number, may return an exit code to use instead of
/// 128 + signal.
pub type Action = Box<dyn Fn(i32) -> Option<i32> + Send + Sync>;

static ACTIONS: Mutex<Vec<(u64, Action)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static CLEANING: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();
static STAGE: Mutex<String> = Mutex::new(String::new());
static COMMIT: Mutex<()> = Mutex::new(());

/// Removes its action when dropped (the work it protected has ended normally).
#[must_use = "the action is removed when the guard is dropped"]
pub struct Guard(u64);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut a) = ACTIONS.lock() {
            a.retain(|(id, _)| *id != self.0);
        }
    }
}

/// Register a clean-up action for the signals (until the guard is dropped).
pub fn on_signal(f: impl Fn(i32) -> Option<i32> + Send + Sync + 'static) -> Guard {
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    ACTIONS.lock().unwrap().push((id, Box::new(f)));
    Guard(id)
}

/// Signal name for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Record the stage now running (shown in `error.txt` when a signal arrives).
pub fn set_stage(stage: &str) {
    if let Ok(mut s) = STAGE.lock() {
        stage.clone_into(&mut s);
    }
}

/// The stage last recorded by [`set_stage`] (empty before the first).
pub fn stage() -> String {
    STAGE.lock().map(|s| s.clone()).unwrap_or_default()
}

/// Start the signal thread (idempotent). Errors only if the handlers cannot be installed.
pub fn install() -> std::io::Result<()> {
    let mut res = Ok(());
    INSTALL.call_once(|| {
        match signal_hook::iterator::Signals::new([
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGUSR2,
            libc::SIGHUP,
        ]) {
            Ok(mut sigs) => {
                std::thread::Builder::new()
                    .name("diffnmf-signals".into())
                    .spawn(move || {
                        // The clean-up runs on its own thread, so that this one keeps
                        // reading signals: a second one ends the process at once.
                        for sig in sigs.forever() {
                            if CLEANING.swap(true, Ordering::SeqCst) {
                                hard_exit(128 + sig);
                            }
                            let _ = std::thread::Builder::new()
                                .name("diffnmf-cleanup".into())
                                .spawn(move || handle(sig));
                        }
                    })
                    .map(|_| ())
                    .unwrap_or_else(|e| res = Err(e));
            }
            Err(e) => res = Err(e),
        }
    });
    res
}

/// Whether a signal's clean-up has started (new work must not start).
pub fn cleaning() -> bool {
    CLEANING.load(Ordering::SeqCst)
}

/// Held while a result set is being renamed into place (`results::write_all`); the clean-up
/// waits for it, so a signal never lands between removing the old `result.h5` and renaming
/// the new one.
pub fn commit_lock() -> std::sync::MutexGuard<'static, ()> {
    COMMIT.lock().unwrap_or_else(|e| e.into_inner())
}

fn handle(sig: i32) {
    let _commit = commit_lock();
    eprintln!(
        "\n[signal] {} received: abandoning the current stage, recording it, exiting",
        name(sig)
    );
    // Take the actions out so that a guard dropped by a worker thread meanwhile cannot block.
    let actions: Vec<(u64, Action)> = std::mem::take(&mut *ACTIONS.lock().unwrap());
    let mut code = 128 + sig;
    for (_, a) in actions.iter().rev() {
        if let Some(c) = a(sig) {
            code = c;
        }
    }
    hard_exit(code)
}

/// `_exit` (no atexit handlers: HDF5's would race worker threads). stdout is not flushed: a
/// worker may hold its lock on a full pipe; it is line-buffered, so little is lost.
pub fn hard_exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process immediately; no Rust state is touched afterwards.
    unsafe { libc::_exit(code) }
}

/// Test-only fault switch, checked at the start of every timed stage: with
/// `DIFFNMF_FAULT=panic:<stage>` the stage panics, with `stall:<stage>` it sleeps for an
/// hour (so that a test can signal a process at a known point). `<stage>` matches a stage
/// name or its prefix followed by `*` (e.g. `stall:attack_adaptive_eps0.5`, `panic:cnn*`).
pub fn fault(stage: &str) {
    let Ok(spec) = std::env::var("DIFFNMF_FAULT") else {
        return;
    };
    for item in spec.split(',') {
        let Some((what, pat)) = item.split_once(':') else {
            continue;
        };
        let hit = match pat.strip_suffix('*') {
            Some(prefix) => stage.starts_with(prefix),
            None => stage == pat,
        };
        if !hit {
            continue;
        }
        match what {
            "panic" => panic!("DIFFNMF_FAULT: injected panic at stage `{stage}`"),
            "stall" => {
                eprintln!("[fault] DIFFNMF_FAULT: stalling at stage `{stage}`");
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
            _ => {}
        }
    }
}

/// The message of a caught panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_remove_their_actions_and_panic_messages_are_read() {
        let before = ACTIONS.lock().unwrap().len();
        let g = on_signal(|_| None);
        assert_eq!(ACTIONS.lock().unwrap().len(), before + 1);
        drop(g);
        assert_eq!(ACTIONS.lock().unwrap().len(), before);
        let p = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "boom 7");
        let p = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "static");
        assert_eq!(name(libc::SIGUSR2), "SIGUSR2");
    }
}
