//! The rendered Slurm array script against `tests/golden/*.sbatch`, hostile strings in the
//! `slurm:` block (quoted or rejected), and the dry run. The real-cluster tests are in
//! `scripts/slurm-suite.sh` (they need root and Debian's slurm-wlm).

use diffnmf::sweep::slurm::{render_aggregate, render_sbatch, sh_quote};
use diffnmf::sweep::spec::{parse_sweep, SlurmSpec};
use std::path::Path;
use std::process::Command;

fn full_block() -> SlurmSpec {
    let spec = parse_sweep(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps/x.yaml"),
        "base: ../jobs/paper.yaml\nslurm:\n  partition: cpu\n  account: p_robust\n  qos: normal\n  time: \"02:00:00\"\n  cpus_per_task: 8\n  mem: 8G\n  gpus: 1\n  parallelism: 32\n  extra_sbatch: [\"--constraint=avx2\", \"--exclusive\"]\n  setup: [\"module load hdf5\", \"export OMP_NUM_THREADS=1\"]\n",
        &[],
    )
    .unwrap();
    spec.slurm
}

#[test]
fn array_script_matches_the_golden_file() {
    let s = full_block();
    let dir = Path::new("/scratch/alice/results/rank_eps");
    let got = render_sbatch(
        &s,
        "rank_eps",
        Path::new("/opt/diffnmf/bin/diffnmf"),
        dir,
        &dir.join("slurm/order.txt"),
        400,
    )
    .unwrap();
    let want = include_str!("golden/rank_eps_array.sbatch");
    assert_eq!(got, want, "rendered:\n{got}");
    assert!(got.contains("#SBATCH --array=0-399%32\n"));
    let agg = render_aggregate(&s, "rank_eps", Path::new("/opt/diffnmf/bin/diffnmf"), dir).unwrap();
    assert!(
        agg.contains("exec '/opt/diffnmf/bin/diffnmf' aggregate '/scratch/alice/results/rank_eps'")
    );
    assert!(!agg.contains("--array") && !agg.contains("--cpus-per-task"));
}

#[test]
fn hostile_values_are_quoted_or_rejected() {
    let hostile = [
        "$(touch /tmp/pwned)",
        "`id`",
        "a; rm -rf ~",
        "x && y",
        "a b",
    ];
    for h in hostile {
        let s = SlurmSpec {
            partition: Some(h.into()),
            account: Some(h.into()),
            ..Default::default()
        };
        let out = render_sbatch(
            &s,
            "n",
            Path::new("/bin/diffnmf"),
            Path::new("/d"),
            Path::new("/d/m"),
            2,
        )
        .unwrap();
        assert!(
            out.contains(&format!("#SBATCH --partition='{h}'\n")),
            "{out}"
        );
        assert!(out.contains(&format!("#SBATCH --account='{h}'\n")), "{out}");
    }
    // Single quotes cannot be expressed to sbatch's parser, control characters never.
    for bad in ["it's", "a\nb", "a\rb"] {
        let s = SlurmSpec {
            qos: Some(bad.into()),
            ..Default::default()
        };
        let e = render_sbatch(
            &s,
            "n",
            Path::new("/b"),
            Path::new("/d"),
            Path::new("/d/m"),
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("slurm.qos"), "{e}");
    }
    for bad in ["--c=$(x)'", "--a;b", "-p x"] {
        let s = SlurmSpec {
            extra_sbatch: vec![bad.into()],
            ..Default::default()
        };
        assert!(
            render_sbatch(
                &s,
                "n",
                Path::new("/b"),
                Path::new("/d"),
                Path::new("/d/m"),
                1
            )
            .is_err(),
            "{bad}"
        );
    }
    // Newlines are rejected at parse time, naming the key and the file.
    let e = parse_sweep(
        Path::new("evil.yaml"),
        "base: jobs/paper.yaml\nslurm:\n  setup: [\"ok\", \"a\\nrm -rf /\"]\n",
        &[],
    );
    let e = e.map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("slurm.setup") && e.contains("evil.yaml"), "{e}");
}

#[test]
fn paths_with_shell_metacharacters_survive_the_exec_line() {
    let dir = Path::new("/tmp/we ird/$(x)/`y`;z");
    let s = SlurmSpec::default();
    let out = render_sbatch(&s, "n", Path::new("/bin/echo"), dir, &dir.join("m"), 3).unwrap();
    let exec = out.lines().last().unwrap().to_string();
    // Run the exec line through bash with echo as the binary: the words come back intact.
    let o = Command::new("bash")
        .arg("-c")
        .arg(exec)
        .env("SLURM_ARRAY_TASK_ID", "2")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        printed.trim_end(),
        format!(
            "cell {} --index 2 --map {}",
            dir.display(),
            dir.join("m").display()
        )
    );
    assert!(out.contains("#SBATCH --array=0-2\n"));
    assert_eq!(sh_quote("a'b"), "'a'\\''b'");
}

#[test]
fn dry_run_prints_cells_and_script_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("dry");
    let o = Command::new(env!("CARGO_BIN_EXE_diffnmf"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "sweep",
            "sweeps/smoke.yaml",
            "--dry-run",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{t}");
    assert_eq!(t.lines().filter(|l| l.contains(" c000")).count(), 8, "{t}");
    assert!(
        t.contains("#SBATCH --array=0-7%4") && t.contains(" cell "),
        "{t}"
    );
    assert!(!out.exists());
}
