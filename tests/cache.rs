//! Stage-cache keys on the data's content, not its path (issue 17), on the real binary: a
//! renamed data folder reuses every entry; one rewritten pixel rebuilds every stage;
//! `diffnmf cache ls|verify|gc` see, check and collect the entries.

mod common;

use common::{bin, folder_dataset, ok, repo, synthetic_image, write_png, CHEAP};
use std::path::{Path, PathBuf};

fn sweep_file(dir: &Path, name: &str, root: &Path) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nbase: {}\naxes:\n  nnmf.k: [4, 6]\n{CHEAP}  data.format: folder\n  data.root: {}\n",
            repo("jobs/smoke.yaml").display(),
            root.display()
        ),
    )
    .unwrap();
    p
}

/// Run the sweep `file` into `out` (whose cache is a copy of `cache_from`'s, if given) and
/// return its `[cache] stage builds:` line.
fn run(file: &Path, out: &Path, cache_from: Option<&Path>) -> String {
    if let Some(from) = cache_from {
        copy_dir(&from.join("cache"), &out.join("cache"));
    }
    let t = ok(bin()
        .args(["sweep", "--jobs", "1", "--threads", "1", "--out"])
        .arg(out)
        .arg(file));
    t.lines()
        .find(|l| l.contains("[cache] stage builds:"))
        .unwrap_or_else(|| panic!("no stage-builds line in:\n{t}"))
        .to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn h5_entries(dir: &Path) -> Vec<String> {
    let mut v = vec![];
    for s in std::fs::read_dir(dir.join("cache")).unwrap() {
        let s = s.unwrap();
        for f in std::fs::read_dir(s.path()).unwrap() {
            let n = f.unwrap().file_name().to_string_lossy().to_string();
            if n.ends_with(".h5") && !n.starts_with('.') {
                v.push(n.trim_end_matches(".h5").to_string());
            }
        }
    }
    v.sort();
    v
}

#[test]
fn keys_follow_content_not_paths_and_cache_commands_manage_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let digits = tmp.path().join("digits");
    folder_dataset(&digits, 4, 30);
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let all = "cnn=1 nnmf=2 classifier=2 denoiser=2";
    let none = "cnn=0 nnmf=0 classifier=0 denoiser=0";

    let first = run(&sweep_file(tmp.path(), "s1", &digits), &a, None);
    assert!(first.contains(all), "{first}");
    let built = h5_entries(&a);
    assert_eq!(built.len(), 7, "{built:?}");

    // The same content under another name (and another sweep folder): every entry reused.
    let moved = tmp.path().join("moved");
    std::fs::rename(&digits, &moved).unwrap();
    let s2 = sweep_file(tmp.path(), "s2", &moved);
    let again = run(&s2, &b, Some(&a));
    assert!(again.contains(none), "{again}");
    assert_eq!(h5_entries(&b), built);

    // One pixel of one image rewritten in place: every stage rebuilds.
    let mut px = synthetic_image(2, 7);
    px[100] = px[100].wrapping_add(1);
    write_png(&moved.join("2/007.png"), &px);
    let changed = run(&s2, &c, Some(&b));
    assert!(changed.contains(all), "{changed}");
    let now = h5_entries(&c);
    assert_eq!(now.len(), 14, "{now:?}");

    // ls: the 7 old entries are referenced by no cell, the 7 new ones are.
    let ls = ok(bin().args(["cache", "ls"]).arg(&c));
    assert!(
        ls.contains("14 entries") && ls.contains("7 referenced by no cell"),
        "{ls}"
    );
    for e in &built {
        let line = ls.lines().find(|l| l.contains(e.as_str())).unwrap();
        assert!(line.contains(" 0  "), "{line}");
    }
    assert!(ls.contains("k=4") && ls.contains("data=folder:"), "{ls}");

    // gc --dry-run removes nothing; gc removes exactly the old entries.
    let dry = ok(bin().args(["cache", "gc", "--dry-run"]).arg(&c));
    assert!(dry.contains("would remove 7 entries"), "{dry}");
    assert_eq!(h5_entries(&c).len(), 14);

    // While a cell is claimed by a live process (this test's own marker) gc refuses: that
    // process may be another build with other keys. --dry-run still answers.
    let cell = diffnmf::sweep::layout::read_cell_ids(&c).unwrap()[0].clone();
    let running = diffnmf::results::paths::cell_running(&c, &cell);
    std::fs::write(&running, diffnmf::sweep::claim::Marker::mine().render()).unwrap();
    let o = bin().args(["cache", "gc"]).arg(&c).output().unwrap();
    let t = common::text(&o);
    assert!(!o.status.success() && t.contains("are being run"), "{t}");
    assert_eq!(h5_entries(&c).len(), 14);
    ok(bin().args(["cache", "gc", "--dry-run"]).arg(&c));
    std::fs::remove_file(&running).unwrap();

    // An unreferenced entry whose lock is held (a build in progress) is kept; the lock file
    // is never removed.
    let held_name = built
        .iter()
        .find(|e| e.starts_with("denoiser-"))
        .unwrap()
        .clone();
    let held_lock = c.join("cache/denoiser").join(format!("{held_name}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&held_lock)
        .unwrap();
    lock.try_lock().unwrap();
    let gc = ok(bin().args(["cache", "gc"]).arg(&c));
    assert!(
        gc.contains("removed 6 entries")
            && gc.contains(&format!("kept denoiser/{held_name} (locked"))
            && gc.contains("kept 7 referenced and 1 locked"),
        "{gc}"
    );
    drop(lock);
    let gc = ok(bin().args(["cache", "gc"]).arg(&c));
    assert!(gc.contains("removed 1 entries"), "{gc}");
    assert!(held_lock.exists(), "gc removed a lock file");
    let left = h5_entries(&c);
    assert!(left.iter().all(|e| !built.contains(e)), "{left:?}");
    assert_eq!(left.len(), 7);

    // verify: all whole; a truncated entry is found and named; gc removes it.
    let v = ok(bin().args(["cache", "verify"]).arg(&c));
    assert!(v.contains("7 entries, 0 damaged"), "{v}");
    let victim = c.join("cache/classifier").join(
        left.iter()
            .find(|e| e.starts_with("classifier-"))
            .map(|e| format!("{e}.h5"))
            .unwrap(),
    );
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let o = bin().args(["cache", "verify"]).arg(&c).output().unwrap();
    let t = common::text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("DAMAGED classifier/") && t.contains("1 damaged"),
        "{t}"
    );
    let gc = ok(bin().args(["cache", "gc"]).arg(&c));
    assert!(
        gc.contains("damaged") && gc.contains("removed 1 entries"),
        "{gc}"
    );
    assert!(!victim.exists());

    // gc needs every cell's data: with the folder gone it refuses and removes nothing.
    std::fs::rename(&moved, tmp.path().join("gone")).unwrap();
    let o = bin().args(["cache", "gc"]).arg(&c).output().unwrap();
    let t = common::text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("cannot fingerprint the data of cell"), "{t}");
    assert_eq!(h5_entries(&c).len(), 6);
    // ls still lists, with unknown reference counts.
    let ls = ok(bin().args(["cache", "ls"]).arg(&c));
    assert!(
        ls.lines()
            .filter(|l| !l.starts_with('?') && l.contains(" ?  "))
            .count()
            == 6
            && ls.contains("? cannot fingerprint the data of cell"),
        "{ls}"
    );
}
