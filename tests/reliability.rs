//! Every way a cell can end is recorded (issue 11), on the real binary: a panicking cell
//! does not hang a local sweep; SIGTERM / SIGINT / SIGUSR2 leave `error.txt`, no claim and no
//! temporary file, with the conventional exit code; a cell stopped after some ε values
//! continues from its checkpoint, bit-identical to an uninterrupted run; stale claims (dead
//! or reused pids) are failed and redone by `--resume`; a live claim is never computed twice;
//! a truncated `result.h5` is not done.
//!
//! The faults are injected with the test-only switch `DIFFNMF_FAULT` (`crate::signals`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{bin, repo, text, CHEAP};

fn sweep_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nbase: {}\n{body}{CHEAP}",
            repo("jobs/smoke.yaml").display()
        ),
    )
    .unwrap();
    p
}

fn cell_dirs(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(out.join("cells"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Files whose name marks them temporary or a claim, anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if n.contains(".tmp.") || n == "running" || n.ends_with(".lock.tmp") {
                out.push(p);
            }
        }
    }
    out
}

/// `diffnmf sweep FILE --out OUT EXTRA…`, waited for.
fn sweep(file: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .args([
            "sweep",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap()
}

/// Wait for `child` with a deadline (a hang fails the test instead of hanging it).
fn wait_for(child: &mut Child, max: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > max {
            let _ = child.kill();
            panic!("process did not finish within {max:?} (hung)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Spawn with stderr to a file; returns the child and the file.
fn spawn(mut c: Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).unwrap();
    c.stdout(Stdio::null()).stderr(f).spawn().unwrap()
}

fn wait_log(child: &mut Child, log: &Path, needle: &str, max: Duration) {
    let t = Instant::now();
    while t.elapsed() < max {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "exited ({st}) before `{needle}` appeared:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "`{needle}` did not appear in {} within {max:?}:\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn kill(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[test]
fn a_panicking_cell_is_recorded_and_the_local_sweep_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let p = sweep_file(d.path(), "panicky", "axes:\n  attack.eps: [0.5, 3.0]\n");
    let out = d.path().join("panicky");
    let mut c = bin();
    c.args([
        "sweep",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "1",
    ])
    .env("DIFFNMF_FAULT", "panic:attack_base_eps3");
    let log = d.path().join("panic.log");
    let mut child = spawn(c, &log);
    let st = wait_for(&mut child, Duration::from_secs(300));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(1), "{log_text}");
    let dirs = cell_dirs(&out);
    assert_eq!(dirs.len(), 2);
    // ε = 0.5 finished, ε = 3 panicked and says so.
    assert!(dirs[0].join("result.h5").exists(), "{log_text}");
    let err = std::fs::read_to_string(dirs[1].join("error.txt")).unwrap();
    assert!(
        err.contains("panicked") && err.contains("injected panic at stage `attack_base_eps3`"),
        "{err}"
    );
    assert!(
        leftovers(&out.join("cells")).is_empty(),
        "{:?}",
        leftovers(&out)
    );
    let s = bin()
        .args(["status", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        text(&s).contains("done 1, running 0, pending 0, failed 1"),
        "{}",
        text(&s)
    );
    let r = sweep(&p, &out, &["--resume"]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(dirs[1].join("result.h5").exists());
}

/// SIGTERM / SIGINT / SIGUSR2 (without Slurm) in the middle of a local sweep's cell.
fn signal_case(sig: i32, code: i32, name: &str) {
    let d = tempfile::tempdir().unwrap();
    let p = sweep_file(d.path(), "sig", "");
    let out = d.path().join("sig");
    let mut c = bin();
    c.args(["sweep", p.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("DIFFNMF_FAULT", "stall:attack_base_eps3");
    let log = d.path().join("sig.log");
    let mut child = spawn(c, &log);
    wait_log(
        &mut child,
        &log,
        "stalling at stage",
        Duration::from_secs(300),
    );
    kill(&child, sig);
    let st = wait_for(&mut child, Duration::from_secs(30));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(code), "{name}: {log_text}");
    let cell = &cell_dirs(&out)[0];
    let err = std::fs::read_to_string(cell.join("error.txt")).unwrap();
    assert!(
        err.contains(&format!(
            "interrupted by {name} during stage `attack_base_eps3`"
        )),
        "{err}"
    );
    assert!(!cell.join("result.h5").exists());
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
    // Two ε values (0 and 0.5) finished before the signal: they are in the checkpoint.
    assert!(cell.join("checkpoint.h5").exists());
    let s = bin()
        .args(["status", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        text(&s).contains("failed") && text(&s).contains(&format!("interrupted by {name}")),
        "{}",
        text(&s)
    );
    let r = sweep(&p, &out, &["--resume", "--verbose"]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        text(&r).contains("[checkpoint] continuing the evaluation at ε index 2 of 3"),
        "{}",
        text(&r)
    );
    assert!(cell.join("result.h5").exists() && !cell.join("checkpoint.h5").exists());
}

#[test]
fn sigterm_is_recorded_and_resume_continues() {
    signal_case(libc::SIGTERM, 143, "SIGTERM");
}

#[test]
fn sigint_is_recorded_and_resume_continues() {
    signal_case(libc::SIGINT, 130, "SIGINT");
}

#[test]
fn sigusr2_without_slurm_is_recorded_and_resume_continues() {
    signal_case(libc::SIGUSR2, 140, "SIGUSR2");
}

#[test]
fn a_cell_continued_from_its_checkpoint_equals_an_uninterrupted_one() {
    let d = tempfile::tempdir().unwrap();
    let p = sweep_file(d.path(), "ck", "");
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    // Certified: the per-ε smoothed predictions travel in the checkpoint too.
    let cert = ["--set", "certify.enabled=true", "--set", "certify.n=100"];
    let o = sweep(&p, &a, &cert);
    assert!(o.status.success(), "{}", text(&o));
    let mut c = bin();
    c.args(["sweep", p.to_str().unwrap(), "--out", b.to_str().unwrap()])
        .args(cert)
        .env("DIFFNMF_FAULT", "stall:attack_base_eps3");
    let log = d.path().join("ck.log");
    let mut child = spawn(c, &log);
    wait_log(
        &mut child,
        &log,
        "stalling at stage",
        Duration::from_secs(300),
    );
    kill(&child, libc::SIGTERM);
    assert_eq!(
        wait_for(&mut child, Duration::from_secs(30)).code(),
        Some(143)
    );
    let r = sweep(
        &p,
        &b,
        &[&["--resume", "--verbose"][..], &cert[..]].concat(),
    );
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("[checkpoint] continuing"), "{}", text(&r));
    let ca_ = std::fs::read_to_string(cell_dirs(&a)[0].join("certify.csv")).unwrap();
    let cb_ = std::fs::read_to_string(cell_dirs(&b)[0].join("certify.csv")).unwrap();
    assert!(ca_.contains("consistency_checked,linf,3,"), "{ca_}");
    assert_eq!(ca_, cb_, "continued certification differs");
    let (ca, cb) = (&cell_dirs(&a)[0], &cell_dirs(&b)[0]);
    let ma = std::fs::read_to_string(ca.join("metrics.csv")).unwrap();
    let mb = std::fs::read_to_string(cb.join("metrics.csv")).unwrap();
    assert_eq!(ma, mb, "continued run differs from the uninterrupted one");
    let ta = std::fs::read_to_string(ca.join("tables.md")).unwrap();
    let tb = std::fs::read_to_string(cb.join("tables.md")).unwrap();
    // The tables hold the checks too: identical apart from timings (none are printed there).
    assert_eq!(ta, tb);
}

#[test]
fn stale_claims_are_failed_and_redone_live_ones_are_never_computed_twice() {
    let d = tempfile::tempdir().unwrap();
    let p = sweep_file(d.path(), "claims", "axes:\n  attack.eps: [0.5, 3.0]\n");
    let out = d.path().join("claims");
    // Prepare the folder with a first run, then fake the situations on the finished cells.
    let o = sweep(&p, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let dirs = cell_dirs(&out);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    // Cell 0: a claim of a dead process on this host (its result removed): stale.
    std::fs::remove_file(dirs[0].join("result.h5")).unwrap();
    let mut t = Command::new("true").spawn().unwrap();
    let dead = t.id();
    t.wait().unwrap();
    std::fs::write(dirs[0].join("running"), format!("{host} {dead}\n")).unwrap();
    // Cell 1: a live claim — this test process's own pid, with its start time.
    std::fs::remove_file(dirs[1].join("result.h5")).unwrap();
    let me = std::process::id();
    let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    std::fs::write(
        dirs[1].join("running"),
        format!("{host} {me} start={start}\n"),
    )
    .unwrap();
    let s = bin()
        .args(["status", out.to_str().unwrap()])
        .output()
        .unwrap();
    let st = text(&s);
    assert!(
        st.contains("stale claim") && st.contains(&format!("process {dead} is gone")),
        "{st}"
    );
    assert!(st.contains("running 1") && st.contains("failed 1"), "{st}");
    let r = sweep(&p, &out, &["--resume"]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(dirs[0].join("result.h5").exists(), "stale cell redone");
    assert!(
        !dirs[1].join("result.h5").exists(),
        "a live claim must not be computed twice"
    );
    // A second sweep process that reaches the claimed cell skips it (the cell command too).
    let c = bin()
        .args(["cell", out.to_str().unwrap(), "--index", "1"])
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", text(&c));
    assert!(text(&c).contains("is being computed by"), "{}", text(&c));
    assert!(!dirs[1].join("result.h5").exists());
    // A reused pid (same pid, other start time) is stale.
    std::fs::write(
        dirs[1].join("running"),
        format!("{host} {me} start={}\n", start + 1),
    )
    .unwrap();
    let c = bin()
        .args(["cell", out.to_str().unwrap(), "--index", "1"])
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", text(&c));
    assert!(dirs[1].join("result.h5").exists());
    assert!(leftovers(&out.join("cells")).is_empty());
}

#[test]
fn a_truncated_result_is_not_done_and_resume_redoes_it() {
    let d = tempfile::tempdir().unwrap();
    let p = sweep_file(d.path(), "trunc", "");
    let out = d.path().join("trunc");
    let o = sweep(&p, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let res = cell_dirs(&out)[0].join("result.h5");
    let bytes = std::fs::read(&res).unwrap();
    std::fs::write(&res, &bytes[..bytes.len() / 3]).unwrap();
    let s = bin()
        .args(["status", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(text(&s).contains("failed 1"), "{}", text(&s));
    assert!(text(&s).contains("not a complete result"), "{}", text(&s));
    let a = bin()
        .args(["aggregate", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !a.status.success(),
        "aggregate must not pass over a corrupt cell: {}",
        text(&a)
    );
    let r = sweep(&p, &out, &["--resume"]);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(std::fs::read(&res).unwrap().len(), bytes.len());
}

#[test]
fn run_on_sigterm_exits_143_and_leaves_an_earlier_result_untouched() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let cheap: Vec<String> = CHEAP
        .lines()
        .skip(1)
        .map(|l| l.trim().replacen(": ", "=", 1))
        .collect();
    let run = |fault: Option<&str>| {
        let mut c = bin();
        c.args(["run", "jobs/smoke.yaml", "--out", out.to_str().unwrap()]);
        for s in &cheap {
            c.args(["--set", s]);
        }
        if let Some(f) = fault {
            c.env("DIFFNMF_FAULT", f);
        }
        c
    };
    let o = run(None).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let before = std::fs::read(out.join("result.h5")).unwrap();
    let log = d.path().join("run.log");
    let mut child = spawn(run(Some("stall:attack_adaptive_eps0.5")), &log);
    wait_log(
        &mut child,
        &log,
        "stalling at stage",
        Duration::from_secs(300),
    );
    kill(&child, libc::SIGTERM);
    let st = wait_for(&mut child, Duration::from_secs(30));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(143), "{log_text}");
    assert!(
        log_text.contains("interrupted by SIGTERM during stage `attack_adaptive_eps0.5`"),
        "{log_text}"
    );
    assert_eq!(std::fs::read(out.join("result.h5")).unwrap(), before);
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}
