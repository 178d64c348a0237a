//! `models.h5` and `diffnmf evaluate`: a run keeps its models, re-evaluating them reproduces
//! the run's metrics exactly, evaluation-only overrides work, and bad input (a training key
//! overridden, a truncated file, a file that is not a models.h5) is a clear error that
//! writes nothing.

mod common;

use common::{bin, run_cheap, text};
use diffnmf::results::h5::read_f32_2d;
use std::path::Path;

fn evaluate(models: &Path, out: &Path, set: &[&str]) -> std::process::Output {
    let mut c = bin();
    c.arg("evaluate").arg(models).arg("--out").arg(out);
    for s in set {
        c.args(["--set", s]);
    }
    c.output().unwrap()
}

#[test]
fn evaluating_stored_models_reproduces_the_run_and_rejects_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_cheap(&run);
    let models = run.join("models.h5");
    assert!(models.is_file(), "run writes models.h5 beside result.h5");

    // Same configuration: metrics.csv byte-identical, every probability bit-identical.
    let again = tmp.path().join("again");
    let o = evaluate(&models, &again, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let a = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let b = std::fs::read_to_string(again.join("metrics.csv")).unwrap();
    assert!(a.lines().count() > 20, "metrics.csv has the robust rows");
    assert_eq!(a, b, "evaluate reproduces metrics.csv exactly");
    for key in [
        "clean_base_none_eps0",
        "clean_def_none_eps0",
        "robust_def_worst_eps0.5",
        "robust_def_adaptive_eps1",
    ] {
        let name = format!("scenarios/{key}/proba");
        let p = read_f32_2d(&run.join("result.h5"), &name).unwrap();
        let q = read_f32_2d(&again.join("result.h5"), &name).unwrap();
        assert_eq!(p, q, "{name} bit-identical");
    }

    // An evaluation-only override changes the evaluation, not the models.
    let eps = tmp.path().join("eps");
    let o = evaluate(&models, &eps, &["attack.eps=[0.3]", "diffusion.passes=3"]);
    assert!(o.status.success(), "{}", text(&o));
    let m = std::fs::read_to_string(eps.join("metrics.csv")).unwrap();
    assert!(m.contains("robust_def,worst,0.3,accuracy"), "{m}");
    assert!(!m.contains(",0.5,"), "only ε = 0.3 evaluated: {m}");
    let base = |csv: &str| {
        csv.lines()
            .find(|l| l.starts_with("clean_base,none,0,accuracy"))
            .map(str::to_string)
    };
    assert_eq!(base(&a), base(&m), "Clean_Base does not depend on R or ε");

    // A key that trains a model: configuration mismatch naming it, nothing written.
    let bad = tmp.path().join("bad");
    let o = evaluate(&models, &bad, &["nnmf.k=7"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("configuration mismatch in `nnmf.k`") && t.contains("models.h5"),
        "{t}"
    );
    assert!(!bad.exists(), "no output on a mismatch");

    // An output folder holding a run's models.h5 (here the run itself) is refused.
    let before = std::fs::read(run.join("result.h5")).unwrap();
    let o = evaluate(&models, &run, &["attack.eps=[0.3]"]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("models.h5") && t.contains("--out"),
        "{t}"
    );
    assert_eq!(
        before,
        std::fs::read(run.join("result.h5")).unwrap(),
        "run untouched"
    );

    // The seed trains every model too.
    let o = evaluate(&models, &bad, &["seed=5"]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("configuration mismatch in `seed`"),
        "{t}"
    );

    // A truncated models.h5, and a result.h5 passed as models.
    let bytes = std::fs::read(&models).unwrap();
    let cut = tmp.path().join("cut.h5");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = evaluate(&cut, &bad, &[]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("truncated"), "{t}");
    assert!(t.contains("cut.h5"), "the error names the file: {t}");
    let o = evaluate(&run.join("result.h5"), &bad, &[]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("not a models.h5") && t.contains("schema"),
        "{t}"
    );
    assert!(!bad.exists(), "no output on bad input");
}
