//! Cell status: the files on disk combined with Slurm's own state. Slurm states come from
//! `squeue` (`-t all`, which keeps finished jobs for `MinJobAge`), then `sacct` where
//! accounting exists, then the line Slurm writes into a task's log when it kills it
//! ([`log_state`]); the job ids are the submissions recorded in `slurm/jobs.txt`, and each
//! submission's map file says which cell each array index ran. A complete `result.h5`
//! always wins; a Slurm job that is still active comes next; a claim (`running` marker) is
//! believed only while its process can be alive: a claim whose job Slurm reports ended
//! (TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL, …), whose local process is gone or whose
//! heartbeat stopped is stale, and `--resume` redoes the cell.

use super::claim::Liveness;
use super::layout::{disk_state, DiskState, Status};
use super::slurm::submissions;
use crate::results::paths;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Parse `JOBID|STATE` lines of squeue/sacct for array `array_id` into task → state.
/// Handles `A_7`, aggregated `A_[2-4,6]` / `A_[5-9%2]` rows and `CANCELLED by 0`.
pub fn parse_states(text: &str, array_id: &str) -> HashMap<usize, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((jid, state)) = line.trim().split_once('|') else {
            continue;
        };
        let state = state.split_whitespace().next().unwrap_or("").to_string();
        let Some(rest) = jid.strip_prefix(array_id).and_then(|r| r.strip_prefix('_')) else {
            continue;
        };
        let rest = rest.split('.').next().unwrap_or("");
        if let Some(ranges) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let ranges = ranges.split('%').next().unwrap_or("");
            for part in ranges.split(',') {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    for t in a..=b {
                        out.entry(t).or_insert_with(|| state.clone());
                    }
                }
            }
        } else if let Ok(t) = rest.parse::<usize>() {
            out.insert(t, state);
        }
    }
    out
}

fn query(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).to_string())
}

/// Task states of one array: squeue first (current), then sacct for tasks squeue no longer
/// knows. Empty when neither answers (no Slurm here).
pub fn array_states(array_id: &str) -> HashMap<usize, String> {
    let mut st = query(
        "squeue",
        &["-h", "-t", "all", "-j", array_id, "-o", "%i|%T"],
    )
    .map(|t| parse_states(&t, array_id))
    .unwrap_or_default();
    if let Some(t) = query(
        "sacct",
        &["-n", "-P", "-X", "-j", array_id, "-o", "JobID,State"],
    ) {
        for (k, v) in parse_states(&t, array_id) {
            st.entry(k).or_insert(v);
        }
    }
    st
}

/// Whether the state of a job/task is Slurm's (still) active.
pub fn is_active(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "CONFIGURING"
            | "COMPLETING"
            | "REQUEUED"
            | "RESIZING"
            | "SUSPENDED"
            | "STAGE_OUT"
            | "SIGNALING"
            | "REQUEUE_HOLD"
            | "REQUEUE_FED"
    )
}

/// A cell's status with the Slurm detail used by `--resume`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellStatus {
    pub status: Status,
    /// Pending or running in Slurm, or running locally: `--resume` leaves it alone.
    pub active: bool,
    /// Slurm state / error line / marker, for display.
    pub detail: String,
}

/// The state Slurm wrote into a task's log when it ended the task itself (for clusters
/// without accounting, once `squeue` has forgotten the job): `*** JOB … CANCELLED AT … DUE
/// TO TIME LIMIT ***`, `… DUE TO PREEMPTION`, `… CANCELLED AT …`, `oom-kill` events,
/// `DUE TO NODE FAILURE`.
pub fn log_state(text: &str) -> Option<&'static str> {
    let has = |p: &str| text.contains(p);
    if has("DUE TO TIME LIMIT") {
        Some("TIMEOUT")
    } else if has("DUE TO PREEMPTION") {
        Some("PREEMPTED")
    } else if has("DUE TO NODE FAILURE") {
        Some("NODE_FAIL")
    } else if has("oom-kill event") || has("oom_kill event") || has("Out Of Memory") {
        Some("OUT_OF_MEMORY")
    } else if has("CANCELLED AT") {
        Some("CANCELLED")
    } else {
        None
    }
}

/// The state of one Slurm job or array task (`<id>` or `<array>_<task>`), or `None` when
/// neither squeue nor sacct knows it.
pub fn job_state(job: &str) -> Option<String> {
    let (array, task) = match job.split_once('_') {
        Some((a, t)) => (a, t.parse::<usize>().ok()?),
        None => {
            let q = |cmd, args: &[&str]| {
                query(cmd, args).and_then(|t| {
                    t.lines()
                        .next()
                        .and_then(|l| l.split_whitespace().next())
                        .map(str::to_string)
                })
            };
            return q("squeue", &["-h", "-t", "all", "-j", job, "-o", "%T"])
                .or_else(|| q("sacct", &["-n", "-P", "-X", "-j", job, "-o", "State"]));
        }
    };
    array_states(array).remove(&task)
}

/// Where a cell last ran under Slurm: `(array id, task)` of its latest submission.
type SlurmRecord = (String, usize);

/// Status of every cell (ids in index order).
pub fn cell_statuses(dir: &Path, ids: &[String]) -> Vec<CellStatus> {
    // Latest submission that included each cell, and the task states of every array.
    let mut record: HashMap<usize, SlurmRecord> = HashMap::new();
    let mut states: HashMap<String, HashMap<usize, String>> = HashMap::new();
    for sub in submissions(dir) {
        let st = array_states(&sub.array_id);
        let map = paths::slurm_dir(dir).join(&sub.map);
        if let Ok(text) = std::fs::read_to_string(&map) {
            for (task, line) in text.lines().enumerate() {
                if let Ok(cell) = line.trim().parse::<usize>() {
                    record.insert(cell, (sub.array_id.clone(), task));
                }
            }
        }
        states.insert(sub.array_id.clone(), st);
    }
    let lookup = |array: &str, task: usize| -> Option<String> {
        if let Some(s) = states.get(array).and_then(|m| m.get(&task)) {
            return Some(s.clone());
        }
        // Neither squeue nor sacct knows the task (any more): Slurm's own line in its log.
        let log = paths::slurm_logs(dir).join(format!("{array}_{task}.out"));
        let text = std::fs::read_to_string(log).ok()?;
        log_state(&text).map(str::to_string)
    };
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let disk = disk_state(dir, id);
            // The latest submission of the cell; a claim made under Slurm is judged by its
            // own job's state unless the latest submission is active (a resubmitted cell
            // pending behind an old stale claim is active: `--resume` stays idempotent).
            let latest = record.get(&i).and_then(|(a, t)| lookup(a, *t));
            let latest_active = latest.as_deref().is_some_and(is_active);
            let sl = match &disk {
                DiskState::Running(m, _) if m.job.is_some() && !latest_active => {
                    let j = m.job.as_deref().unwrap_or("");
                    match j
                        .split_once('_')
                        .and_then(|(a, t)| Some((a, t.parse().ok()?)))
                    {
                        Some((a, t)) if states.contains_key(a) => lookup(a, t),
                        _ => job_state(j),
                    }
                }
                _ => latest,
            };
            decide(&disk, sl.as_deref())
        })
        .collect()
}

/// Combine the disk state and the Slurm state of a cell (`None`: no Slurm record). A claim
/// whose job Slurm reports ended is stale, whatever the marker says.
pub fn decide(disk: &DiskState, slurm: Option<&str>) -> CellStatus {
    let cs = |status, active, detail: String| CellStatus {
        status,
        active,
        detail,
    };
    match disk {
        DiskState::Done => return cs(Status::Done, false, String::new()),
        DiskState::Corrupt(e) => {
            return cs(
                Status::Failed,
                false,
                format!("result.h5 is not a complete result: {e}"),
            )
        }
        _ => {}
    }
    match slurm {
        Some(s @ ("RUNNING" | "CONFIGURING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING")) => {
            return cs(Status::Running, true, s.into())
        }
        Some(s) if is_active(s) => return cs(Status::Pending, true, s.into()),
        _ => {}
    }
    let ended = |what: String| match slurm {
        Some(s) => format!("{s} ({what})"),
        None => what,
    };
    match disk {
        DiskState::Running(m, Liveness::Alive) => cs(
            Status::Running,
            true,
            format!("running on {}", m.describe()),
        ),
        DiskState::Running(m, Liveness::Unverified) => match slurm {
            Some(s) => cs(
                Status::Failed,
                false,
                format!(
                    "{s} (stale claim of {}: Slurm says the job ended)",
                    m.describe()
                ),
            ),
            None => cs(
                Status::Running,
                true,
                format!(
                    "running on {} (heartbeat fresh; not checkable from here)",
                    m.describe()
                ),
            ),
        },
        DiskState::Running(m, Liveness::Stale(why)) => cs(
            Status::Failed,
            false,
            ended(format!("stale claim of {}: {why}", m.describe())),
        ),
        DiskState::Failed(e) => cs(Status::Failed, false, ended(e.clone())),
        _ => match slurm {
            Some("COMPLETED") => cs(Status::Failed, false, "COMPLETED without result.h5".into()),
            Some(s) => cs(Status::Failed, false, s.into()),
            None => cs(Status::Pending, false, String::new()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_aggregated_and_cancelled_rows() {
        let t = "12_0|COMPLETED\n12_1|CANCELLED by 0\n12_[2-4,7%2]|PENDING\n13_0|FAILED\n12_5.batch|FAILED\n";
        let s = parse_states(t, "12");
        assert_eq!(s[&0], "COMPLETED");
        assert_eq!(s[&1], "CANCELLED");
        for t in [2, 3, 4, 7] {
            assert_eq!(s[&t], "PENDING");
        }
        assert_eq!(s[&5], "FAILED");
        assert!(!s.contains_key(&6));
        assert_eq!(s.len(), 7);
    }

    #[test]
    fn disk_wins_then_slurm_activity_then_failures() {
        let miss = DiskState::Missing;
        assert_eq!(
            decide(&DiskState::Done, Some("FAILED")).status,
            Status::Done
        );
        assert_eq!(decide(&miss, Some("RUNNING")).status, Status::Running);
        let p = decide(&DiskState::Failed("x".into()), Some("PENDING"));
        assert_eq!((p.status, p.active), (Status::Pending, true));
        assert_eq!(decide(&miss, Some("CANCELLED")).status, Status::Failed);
        assert_eq!(decide(&miss, Some("TIMEOUT")).status, Status::Failed);
        assert_eq!(decide(&miss, Some("COMPLETED")).status, Status::Failed);
        let m = decide(&miss, None);
        assert_eq!((m.status, m.active), (Status::Pending, false));
        assert_eq!(
            decide(&DiskState::Failed("e".into()), None).status,
            Status::Failed
        );
    }

    fn foreign() -> crate::sweep::claim::Marker {
        crate::sweep::claim::Marker {
            host: "node17".into(),
            pid: 4242,
            start: Some(1),
            boot: None,
            job: Some("88_3".into()),
            restart: None,
        }
    }

    #[test]
    fn a_claim_of_an_ended_job_is_stale_whatever_the_marker_says() {
        let m = foreign();
        let unverified = DiskState::Running(m.clone(), Liveness::Unverified);
        for s in [
            "TIMEOUT",
            "CANCELLED",
            "FAILED",
            "OUT_OF_MEMORY",
            "NODE_FAIL",
            "PREEMPTED",
        ] {
            let d = decide(&unverified, Some(s));
            assert_eq!((d.status, d.active), (Status::Failed, false), "{s}");
            assert!(d.detail.starts_with(s), "{}", d.detail);
            assert!(d.detail.contains("node17"), "{}", d.detail);
        }
        // Still running in Slurm, or no Slurm record: believed.
        assert_eq!(decide(&unverified, Some("RUNNING")).status, Status::Running);
        let u = decide(&unverified, None);
        assert_eq!((u.status, u.active), (Status::Running, true));
        // A stale local claim (dead pid) is failed even without Slurm.
        let stale = DiskState::Running(m.clone(), Liveness::Stale("process 4242 is gone".into()));
        let d = decide(&stale, None);
        assert_eq!((d.status, d.active), (Status::Failed, false));
        assert!(d.detail.contains("gone"));
        // A requeued task that is pending again is active (not redone by --resume).
        let d = decide(&stale, Some("PENDING"));
        assert_eq!((d.status, d.active), (Status::Pending, true));
        // A corrupt result is failed, never done.
        let c = decide(&DiskState::Corrupt("truncated".into()), Some("COMPLETED"));
        assert_eq!((c.status, c.active), (Status::Failed, false));
    }

    #[test]
    fn slurm_kill_lines_in_task_logs_are_read() {
        let t = "[cell] c001\nslurmstepd: error: *** JOB 93 ON n1 CANCELLED AT 2026-12-02T10:00:00 DUE TO TIME LIMIT ***\n";
        assert_eq!(log_state(t), Some("TIMEOUT"));
        assert_eq!(
            log_state("slurmstepd: error: *** JOB 93 ON n1 CANCELLED AT 2026-12-02T10:00:00 ***"),
            Some("CANCELLED")
        );
        assert_eq!(
            log_state("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=93.batch."),
            Some("OUT_OF_MEMORY")
        );
        assert_eq!(log_state("[cell] c001 done in 3.1s"), None);
    }
}
