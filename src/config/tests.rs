use super::*;
use std::path::Path;

fn p() -> &'static Path {
    Path::new("jobs/test.yaml")
}

#[test]
fn defaults_validate_and_name_defaults_to_stem() {
    let c = parse_job(p(), "seed: 3\n", &[]).unwrap();
    assert_eq!(c.name, "test");
    assert_eq!(c.seed, 3);
    assert_eq!(c.nnmf.k, JobConfig::default().nnmf.k);
}

#[test]
fn unknown_key_names_file_key_and_line() {
    let e = parse_job(p(), "seed: 1\nnnmf:\n  kk: 3\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("jobs/test.yaml"), "{e}");
    assert!(e.contains("kk"), "{e}");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn malformed_yaml_is_reported() {
    let e = parse_job(p(), "seed: [1,\n", &[]).unwrap_err().to_string();
    assert!(
        e.contains("jobs/test.yaml") && e.contains("invalid YAML"),
        "{e}"
    );
}

#[test]
fn k_zero_and_negative_eps_rejected() {
    let e = parse_job(p(), "nnmf:\n  k: 0\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("nnmf.k") && (e.contains("[1,")), "{e}");
    let e = parse_job(p(), "attack:\n  eps: [0.1, -0.5]\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("attack.eps[1]") && e.contains("-0.5"), "{e}");
}

#[test]
fn overrides_apply_with_yaml_values() {
    let c = parse_job(
        p(),
        "",
        &[
            "nnmf.k=48".into(),
            "attack.eps=[0.1,0.25,0.5]".into(),
            "nnmf.mode=per_class".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.nnmf.k, 48);
    assert_eq!(c.attack.eps, vec![0.1, 0.25, 0.5]);
    assert_eq!(c.nnmf.mode, crate::nmf::NmfMode::PerClass);
}

#[test]
fn override_unknown_key_lists_known_keys() {
    let e = parse_job(p(), "", &["nnmf.rank=4".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("nnmf.rank") && e.contains("max_iter"), "{e}");
    let e = parse_job(p(), "", &["nnmf.k".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("key=value"), "{e}");
    let e = parse_job(p(), "", &["nnmf.k=abc".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--set") || e.contains("overrides"), "{e}");
}

#[test]
fn t_star_beyond_steps_rejected() {
    let e = parse_job(p(), "diffusion:\n  steps: 10\n  t_star: 11\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("diffusion.t_star"), "{e}");
}

#[test]
fn idx_needs_paths() {
    let e = parse_job(p(), "data:\n  format: idx\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.images"), "{e}");
}

#[test]
fn shipped_jobs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            load_job(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn k_above_pixel_count_and_bad_classes_rejected() {
    let e = parse_job(p(), "data:\n  size: 4\nnnmf:\n  k: 17\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nnmf.k") && e.contains("16 pixels") && e.contains("data.size"),
        "{e}"
    );
    // Exactly the pixel count is allowed, and k does not matter without NNMF features.
    assert!(parse_job(p(), "data:\n  size: 4\nnnmf:\n  k: 16\n", &[]).is_ok());
    assert!(parse_job(
        p(),
        "data:\n  size: 4\nnnmf:\n  k: 17\nfeatures:\n  nnmf: false\n",
        &[]
    )
    .is_ok());
    for bad in ["1", "257"] {
        let e = parse_job(p(), "", &[format!("data.classes={bad}")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.classes"), "{e}");
    }
    let c = parse_job(p(), "", &["data.classes=47".into()]).unwrap();
    assert_eq!(c.data.classes, Some(47));
}
