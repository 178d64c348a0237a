//! The per-cell claim: the `running` marker, created atomically (`O_EXCL`) by whoever
//! computes the cell, refreshed by a heartbeat, removed when the cell ends (normally, by
//! error, by panic or by signal).
//!
//! Marker text: `<host> <pid> start=<ticks> boot=<boot id> job=<slurm job|-> since=<unix s>`.
//! A marker is judged ([`liveness`]):
//! * on this host: alive iff the boot id matches and process `pid` exists with the same
//!   start time (a reused pid is not the same process);
//! * on another host: unverifiable from here — alive while its heartbeat (the file's mtime,
//!   refreshed every [`HEARTBEAT`]) is younger than [`STALE_AFTER`]; the Slurm state of its
//!   job decides when Slurm knows it ([`super::status`]).
//!
//! Two sweeps (or a resubmitted task) on one directory never compute a cell twice: the
//! second finds a live claim and skips the cell; a stale claim is taken over with a rename
//! (only one taker wins) followed by a fresh exclusive create.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

/// How often a claim's mtime is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A marker from another host whose heartbeat is older than this is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(600);

/// A parsed `running` marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub host: String,
    pub pid: u32,
    pub start: Option<u64>,
    pub boot: Option<String>,
    /// Slurm job of the claimant (`<array>_<task>` or `<job>`), if it ran under Slurm.
    pub job: Option<String>,
    /// `SLURM_RESTART_COUNT` of the claimant (requeues of the same job count up).
    pub restart: Option<u32>,
}

/// Whether a marker's process still runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// On another host with a fresh heartbeat: cannot be checked from here.
    Unverified,
    /// Certainly not running any more (the reason).
    Stale(String),
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`) of a process.
pub fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// How often this Slurm job was requeued (`SLURM_RESTART_COUNT`, absent on the first run).
pub fn slurm_restart() -> Option<u32> {
    std::env::var("SLURM_RESTART_COUNT")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The Slurm job this process runs in (`<array job>_<task>` for array tasks).
pub fn slurm_job() -> Option<String> {
    let v = |k| std::env::var(k).ok().filter(|s: &String| !s.is_empty());
    match (v("SLURM_ARRAY_JOB_ID"), v("SLURM_ARRAY_TASK_ID")) {
        (Some(a), Some(t)) => Some(format!("{a}_{t}")),
        _ => v("SLURM_JOB_ID"),
    }
}

impl Marker {
    /// The marker of this process.
    pub fn mine() -> Marker {
        let pid = std::process::id();
        Marker {
            host: crate::results::paths::hostname(),
            pid,
            start: start_time(pid),
            boot: boot_id(),
            job: slurm_job(),
            restart: slurm_job().map(|_| slurm_restart().unwrap_or(0)),
        }
    }

    pub fn render(&self) -> String {
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!(
            "{} {} start={} boot={} job={} restart={} since={since}\n",
            self.host,
            self.pid,
            self.start.map_or("-".into(), |s| s.to_string()),
            self.boot.as_deref().unwrap_or("-"),
            self.job.as_deref().unwrap_or("-"),
            self.restart.map_or("-".into(), |s| s.to_string()),
        )
    }

    /// Parse a marker (the old `host pid` form included); `None` if unreadable.
    pub fn parse(text: &str) -> Option<Marker> {
        let mut f = text.split_whitespace();
        let host = f.next()?.to_string();
        let pid = f.next()?.parse().ok()?;
        let mut m = Marker {
            host,
            pid,
            start: None,
            boot: None,
            job: None,
            restart: None,
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = (v != "-").then(|| v.to_string());
            match k {
                "start" => m.start = v.and_then(|s| s.parse().ok()),
                "boot" => m.boot = v,
                "job" => m.job = v,
                "restart" => m.restart = v.and_then(|s| s.parse().ok()),
                _ => {}
            }
        }
        Some(m)
    }

    /// `host pid (job J)` for messages.
    pub fn describe(&self) -> String {
        match &self.job {
            Some(j) => format!("{} pid {} (Slurm job {j})", self.host, self.pid),
            None => format!("{} pid {}", self.host, self.pid),
        }
    }
}

/// Judge a marker; `age` is the time since its last heartbeat.
pub fn liveness(m: &Marker, age: Option<Duration>) -> Liveness {
    if m.host == crate::results::paths::hostname() {
        if let (Some(b), Some(now)) = (&m.boot, boot_id()) {
            if *b != now {
                return Liveness::Stale(format!("{} rebooted since the claim", m.host));
            }
        }
        return match (start_time(m.pid), m.start) {
            (None, _) => Liveness::Stale(format!("process {} is gone", m.pid)),
            (Some(a), Some(b)) if a != b => {
                Liveness::Stale(format!("pid {} now belongs to another process", m.pid))
            }
            _ => Liveness::Alive,
        };
    }
    // The same Slurm job, requeued since the claim (node failure, preemption, USR2). Steps of
    // one allocation share the job id but not a lower restart count.
    if m.job.is_some()
        && m.job == slurm_job()
        && m.restart.unwrap_or(0) < slurm_restart().unwrap_or(0)
    {
        return Liveness::Stale("an earlier run of this very Slurm job (requeued)".into());
    }
    match age {
        Some(a) if a > STALE_AFTER => {
            Liveness::Stale(format!("no heartbeat from {} for {}s", m.host, a.as_secs()))
        }
        _ => Liveness::Unverified,
    }
}

/// Read a marker file: the marker and the age of its heartbeat.
pub fn read(path: &Path) -> Option<(Marker, Option<Duration>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    Some((
        Marker::parse(&text).unwrap_or(Marker {
            host: "?".into(),
            pid: 0,
            start: None,
            boot: None,
            job: None,
            restart: None,
        }),
        age,
    ))
}

/// A held claim: the heartbeat runs until it is released (dropped).
pub struct ClaimGuard {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    beat: Option<std::thread::JoinHandle<()>>,
}

impl ClaimGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.beat.take() {
            let _ = h.join();
        }
        release(&self.path);
    }
}

/// Remove the marker at `path` if it is this process's.
pub fn release(path: &Path) {
    if let Some((m, _)) = read(path) {
        let me = Marker::mine();
        if m.host == me.host && m.pid == me.pid {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The outcome of [`claim`].
pub enum Claim {
    Got(ClaimGuard),
    /// Someone else holds a live (or unverifiable) claim.
    Busy(Marker),
}

fn create(path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(Marker::mine().render().as_bytes())?;
    f.sync_all()
}

/// Claim the cell whose marker is `path`. `ended(job)` says whether Slurm reports the job of
/// a foreign marker as ended (`Some(true)`), active (`Some(false)`) or does not know it.
pub fn claim(path: &Path, ended: &dyn Fn(&str) -> Option<bool>) -> Result<Claim> {
    for _ in 0..5 {
        match create(path) {
            Ok(()) => return Ok(Claim::Got(start_heartbeat(path))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(Error::io(path, e));
            }
        }
        let Ok(raw) = std::fs::read_to_string(path) else {
            continue; // removed meanwhile: try again
        };
        let Some((m, age)) = read(path) else {
            continue;
        };
        // A job Slurm reports active keeps its claim even with a stopped heartbeat (a
        // suspended job, a long NFS stall).
        let job_active = || m.job.as_deref().and_then(ended) == Some(false);
        let stale = match liveness(&m, age) {
            Liveness::Stale(_) if m.host != crate::results::paths::hostname() && job_active() => {
                None
            }
            Liveness::Stale(why) => Some(why),
            Liveness::Alive => None,
            Liveness::Unverified => match m.job.as_deref().and_then(ended) {
                Some(true) => Some(format!(
                    "Slurm job {} ended",
                    m.job.as_deref().unwrap_or("")
                )),
                _ => None,
            },
        };
        let Some(why) = stale else {
            return Ok(Claim::Busy(m));
        };
        crate::progress::log(format!(
            "[claim] {}: taking over a stale claim of {} ({why})",
            path.display(),
            m.describe()
        ));
        // Move the judged marker aside; if what moved is not what was judged stale (another
        // taker replaced it with a live claim meanwhile), put it back (`link` never
        // overwrites) and judge again.
        let aside = path.with_file_name(format!(
            ".running.stale.{}.{}",
            crate::results::paths::hostname(),
            std::process::id()
        ));
        if std::fs::rename(path, &aside).is_ok() {
            if std::fs::read_to_string(&aside).ok().as_deref() != Some(raw.as_str()) {
                let _ = std::fs::hard_link(&aside, path);
            }
            let _ = std::fs::remove_file(&aside);
        }
    }
    Err(Error::Results {
        path: path.to_path_buf(),
        msg: "could not claim the cell (the marker kept changing); retry".into(),
    })
}

fn start_heartbeat(path: &Path) -> ClaimGuard {
    let (tx, rx) = mpsc::channel::<()>();
    let p = path.to_path_buf();
    let beat = std::thread::Builder::new()
        .name("diffnmf-heartbeat".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(HEARTBEAT) {
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) {
                    let _ = f.set_modified(SystemTime::now());
                }
            }
        })
        .ok();
    ClaimGuard {
        path: path.to_path_buf(),
        stop: Some(tx),
        beat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_old_markers_parse() {
        let m = Marker::mine();
        assert_eq!(Marker::parse(&m.render()).unwrap(), m);
        let old = Marker::parse("node7 1234\n").unwrap();
        assert_eq!((old.host.as_str(), old.pid, old.job), ("node7", 1234, None));
        assert!(Marker::parse("garbage").is_none());
    }

    #[test]
    fn liveness_detects_dead_reused_and_silent_markers() {
        let me = Marker::mine();
        assert_eq!(liveness(&me, None), Liveness::Alive);
        // A pid that is certainly gone: a child that has exited and been reaped.
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        let gone = Marker {
            pid: dead,
            ..me.clone()
        };
        assert!(
            matches!(liveness(&gone, None), Liveness::Stale(_)),
            "{gone:?}"
        );
        // Our own pid with another start time: a reused pid.
        let reused = Marker {
            start: me.start.map(|s| s + 1),
            ..me.clone()
        };
        assert!(matches!(liveness(&reused, None), Liveness::Stale(_)));
        let other = Marker {
            host: "some-other-node".into(),
            ..me.clone()
        };
        assert_eq!(
            liveness(&other, Some(Duration::from_secs(5))),
            Liveness::Unverified
        );
        assert!(matches!(
            liveness(&other, Some(STALE_AFTER + Duration::from_secs(1))),
            Liveness::Stale(_)
        ));
    }

    #[test]
    fn one_claim_wins_live_claims_block_stale_ones_are_taken_over() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("running");
        let never = |_: &str| None;
        let g = match claim(&p, &never).unwrap() {
            Claim::Got(g) => g,
            Claim::Busy(m) => panic!("busy {m:?}"),
        };
        // Our own live claim blocks a second claimant.
        assert!(matches!(claim(&p, &never).unwrap(), Claim::Busy(_)));
        drop(g);
        assert!(!p.exists(), "released on drop");
        // A foreign fresh claim blocks unless Slurm says its job ended.
        std::fs::write(&p, "other-node 42 job=77_3\n").unwrap();
        assert!(matches!(claim(&p, &never).unwrap(), Claim::Busy(_)));
        let ended = |j: &str| (j == "77_3").then_some(true);
        let g = match claim(&p, &ended).unwrap() {
            Claim::Got(g) => g,
            Claim::Busy(m) => panic!("busy {m:?}"),
        };
        assert_eq!(
            Marker::parse(&std::fs::read_to_string(&p).unwrap())
                .unwrap()
                .pid,
            std::process::id()
        );
        drop(g);
        // A dead local process's claim is taken over.
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        let host = crate::results::paths::hostname();
        std::fs::write(&p, format!("{host} {dead}\n")).unwrap();
        assert!(matches!(claim(&p, &never).unwrap(), Claim::Got(_)));
        let leftovers: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_silent_foreign_claim_is_kept_while_slurm_reports_its_job_active() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("running");
        std::fs::write(&p, "other-node 42 job=91_0\n").unwrap();
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let active = |_: &str| Some(false);
        assert!(matches!(claim(&p, &active).unwrap(), Claim::Busy(_)));
        let unknown = |_: &str| None;
        assert!(matches!(claim(&p, &unknown).unwrap(), Claim::Got(_)));
    }
}
