//! Cell status: the files on disk first, Slurm second. Slurm states come from `squeue`
//! (`-t all`, which keeps finished jobs for `MinJobAge`) and, where accounting exists, from
//! `sacct`; the job ids are the submissions recorded in `slurm/jobs.txt`, and each
//! submission's map file says which cell each array index ran.

use super::cell::map_index;
use super::layout::{disk_state, DiskState, Status};
use crate::results::paths;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// One submission from `slurm/jobs.txt`: `<array id> <aggregate id> <map file name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub array_id: String,
    pub aggregate_id: String,
    pub map: String,
}

/// The submissions recorded for a sweep, oldest first.
pub fn submissions(dir: &Path) -> Vec<Submission> {
    let text = std::fs::read_to_string(paths::slurm_jobs(dir)).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| Submission {
                array_id: f[0].into(),
                aggregate_id: f[1].into(),
                map: f[2].into(),
            })
        })
        .collect()
}

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

/// Status of every cell (ids in index order).
pub fn cell_statuses(dir: &Path, ids: &[String]) -> Vec<CellStatus> {
    // Latest submission that included each cell → its Slurm state (if any record).
    let mut slurm: HashMap<usize, Option<String>> = HashMap::new();
    for sub in submissions(dir) {
        let states = array_states(&sub.array_id);
        let map = paths::slurm_dir(dir).join(&sub.map);
        for task in 0.. {
            let Ok(cell) = map_index(&map, task) else {
                break;
            };
            slurm.insert(cell, states.get(&task).cloned());
        }
    }
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let disk = disk_state(dir, id);
            let sl = slurm.get(&i).cloned().flatten();
            decide(&disk, sl.as_deref())
        })
        .collect()
}

/// Combine the disk state and the Slurm state of a cell (`None`: no Slurm record).
pub fn decide(disk: &DiskState, slurm: Option<&str>) -> CellStatus {
    let cs = |status, active, detail: &str| CellStatus {
        status,
        active,
        detail: detail.to_string(),
    };
    if *disk == DiskState::Done {
        return cs(Status::Done, false, "");
    }
    match slurm {
        Some(s @ ("RUNNING" | "CONFIGURING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING")) => {
            return cs(Status::Running, true, s)
        }
        Some(s) if is_active(s) => return cs(Status::Pending, true, s),
        _ => {}
    }
    if let DiskState::Running(m) = disk {
        return cs(Status::Running, true, m);
    }
    match (slurm, disk) {
        (_, DiskState::Failed(e)) => cs(Status::Failed, false, e),
        (Some("COMPLETED"), _) => cs(Status::Failed, false, "COMPLETED without result.h5"),
        (Some(s), _) => cs(Status::Failed, false, s),
        (None, _) => cs(Status::Pending, false, ""),
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
}
