//! `diffnmf export RUN --onnx DIR`, checked with an independent pure-Rust ONNX runtime
//! (tract): on the run's own evaluated points, cnn.onnx, classifier.onnx and denoiser.onnx
//! match our forward passes (max abs diff ≤ 1e-5; for the CNN, whose outputs reach ≈ 25,
//! relative to the largest output magnitude), and the exported pipeline (cnn.onnx
//! features ⊕ NNMF projection, z-scored, classifier.onnx) predicts the class `result.h5`
//! recorded for every point.
//!
//! The same check on the paper run (acceptance of issue 12, minutes):
//! `diffnmf run jobs/paper.yaml && diffnmf export results/paper --onnx out/onnx &&
//! cargo test --release --test onnx -- --ignored` (`DIFFNMF_ONNX_DIR` picks another export).

mod common;

#[path = "../src/testutil.rs"]
mod testutil;
use common::{bin, run_cheap, text};
use diffnmf::export::npy;
use diffnmf::models::file::read as read_models;
use diffnmf::results::h5::read_f32_2d;
use ndarray::{concatenate, Array2, Axis};
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

type Runnable = TypedRunnableModel<TypedModel>;

fn load(path: &Path) -> Runnable {
    tract_onnx::onnx()
        .model_for_path(path)
        .unwrap_or_else(|e| panic!("tract reads {}: {e}", path.display()))
        .into_typed()
        .expect("tract types it")
        .into_runnable()
        .expect("runnable")
}

fn run(m: &Runnable, inputs: Vec<Tensor>) -> Vec<Array2<f32>> {
    let out = m
        .run(inputs.into_iter().map(|t| t.into_tvalue()).collect())
        .expect("tract runs it");
    out.iter()
        .map(|t| {
            let s = t.shape();
            assert_eq!(s.len(), 2, "2-d output");
            Array2::from_shape_vec((s[0], s[1]), t.as_slice::<f32>().unwrap().to_vec()).unwrap()
        })
        .collect()
}

fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    testutil::max_abs_diff(a.view(), b.view())
}

/// `max |a − b| / max(1, max |b|)`: the abs diff, relative to the output's scale when that
/// exceeds 1.
fn scaled_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    let scale = b.iter().fold(1f32, |m, &v| m.max(v.abs()));
    max_diff(a, b) / scale
}

fn argmax(r: ndarray::ArrayView1<f32>) -> usize {
    r.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// Every check on one export folder `dir` of the run in `run_dir`.
fn check_export(run_dir: &Path, dir: &Path) {
    let m = read_models(&run_dir.join("models.h5")).unwrap();
    let (shape, px) = npy::read::<f32>(&dir.join("eval_images.npy")).unwrap();
    let (n, h, w) = (shape[0], shape[2], shape[3]);
    assert_eq!((h, w), m.image_shape);
    assert_eq!(n, m.eval.ids.len(), "every evaluated point is exported");
    let x = Array2::from_shape_vec((n, h * w), px.clone()).unwrap();

    // cnn.onnx: features and logits of the run's own test images.
    let mut blocks = vec![];
    for (name, _) in &m.blocks {
        blocks.push(match name.as_str() {
            "cnn" => {
                let cnn = m.cnn.as_ref().expect("cnn block has a cnn");
                let t = Tensor::from_shape(&[n, 1, h, w], &px).unwrap();
                let out = run(&load(&dir.join("cnn.onnx")), vec![t]);
                let (f, l) = cnn.features_and_logits(x.view());
                // Features reach |f| ≈ 25 on trained weights, where one f32 ulp is 2e-6 and
                // the two runtimes' summation orders differ by a few ulps: the bound is 1e-5
                // absolute for outputs within ±1 and relative to the output's largest
                // magnitude above that. The f64 forward pass
                // tells whose rounding it is.
                let (f64_, l64) = cnn.cast::<f64>().features_and_logits(x.mapv(f64::from).view());
                for (what, ours, theirs, exact) in
                    [("features", &f, &out[0], &f64_), ("logits", &l, &out[1], &l64)]
                {
                    let d = scaled_diff(theirs, ours);
                    eprintln!(
                        "cnn.onnx {what}: max abs diff {:e} vs ours, scaled {d:e}; vs f64: tract {:e}, ours {:e}",
                        max_diff(theirs, ours),
                        max_diff(theirs, &exact.mapv(|v| v as f32)),
                        max_diff(ours, &exact.mapv(|v| v as f32)),
                    );
                    assert!(d <= 1e-5, "cnn.onnx {what} vs Cnn::features_and_logits: {d:e}");
                }
                out[0].clone()
            }
            "nnmf" => m.nnmf.as_ref().unwrap().model.transform(x.view()).unwrap(),
            other => panic!("unknown block {other}"),
        });
    }
    let views: Vec<_> = blocks.iter().map(|b| b.view()).collect();
    let z = m
        .scaler
        .transform(concatenate(Axis(1), &views).unwrap().view())
        .as_standard_layout()
        .to_owned();

    // classifier.onnx on those z-scored hybrid vectors.
    let d_in = z.ncols();
    let logits = run(
        &load(&dir.join("classifier.onnx")),
        vec![Tensor::from_shape(&[n, d_in], z.as_slice().unwrap()).unwrap()],
    )
    .remove(0);
    let d = max_diff(&logits, &m.classifier.forward(z.view()));
    eprintln!("classifier.onnx: max abs diff {d:e}");
    assert!(d <= 1e-5, "classifier.onnx vs Mlp::forward: {d:e}");

    // The run's clean (undefended) predictions, from result.h5, on every point.
    let p = read_f32_2d(
        &run_dir.join("result.h5"),
        "scenarios/clean_base_none_eps0/proba",
    )
    .unwrap();
    assert_eq!(p.nrows(), n);
    let bad: Vec<usize> = (0..n)
        .filter(|&i| argmax(logits.row(i)) != argmax(p.row(i)))
        .collect();
    assert!(
        bad.is_empty(),
        "points whose ONNX class differs from result.h5: {bad:?}"
    );
    let (rs, rp) = npy::read::<f32>(&dir.join("reference_clean_base_proba.npy")).unwrap();
    assert_eq!(rs, [n, p.ncols()]);
    assert_eq!(
        rp,
        p.iter().copied().collect::<Vec<_>>(),
        "reference proba is result.h5's"
    );

    // denoiser.onnx on real noised features at every step 0..=T in turn.
    let den = &m.denoiser;
    let steps = den.sched.steps();
    let rows = n.min(64);
    let ts: Vec<i64> = (0..rows).map(|i| (i * 7 % (steps + 1)) as i64).collect();
    let xt = Array2::from_shape_fn((rows, d_in), |(i, j)| {
        let ab = den.sched.alpha_bar[ts[i] as usize];
        (ab.sqrt() as f32) * z[[i, j]] + ((1.0 - ab).sqrt() as f32) * z[[(i + 1) % n, j]]
    });
    let input = Array2::from_shape_fn((rows, d_in + den.emb.ncols()), |(i, j)| {
        if j < d_in {
            xt[[i, j]]
        } else {
            den.emb[[ts[i] as usize, j - d_in]]
        }
    });
    let out = run(
        &load(&dir.join("denoiser.onnx")),
        vec![
            Tensor::from_shape(&[rows, d_in], xt.as_slice().unwrap()).unwrap(),
            Tensor::from_shape(&[rows], &ts).unwrap(),
        ],
    );
    let d = max_diff(&out[0], &den.mlp.forward(input.view()));
    eprintln!("denoiser.onnx: max abs diff {d:e} ({rows} rows, t = 0…{steps})");
    assert!(d <= 1e-5, "denoiser.onnx vs the denoiser MLP: {d:e}");

    // pipeline.json names everything the files do not hold.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("pipeline.json")).unwrap()).unwrap();
    assert_eq!(json["format"], "diffnmf-onnx-pipeline");
    assert_eq!(json["zscore_mean"].as_array().unwrap().len(), d_in);
    assert_eq!(json["schedule"]["t_star"], m.t_star as u64);
    assert_eq!(json["schedule"]["passes"], m.passes as u64);
    if let Some(nn) = &m.nnmf {
        let basis = json["nnmf"]["basis"].as_array().unwrap();
        assert_eq!(basis.len(), nn.model.components());
        assert_eq!(json["nnmf"]["max_iter"], nn.model.max_iter as u64);
    }
}

#[test]
fn exported_onnx_files_match_our_forward_passes_and_the_run_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    run_cheap(&run_dir);
    let dir = tmp.path().join("onnx");
    let o = bin()
        .arg("export")
        .arg(&run_dir)
        .arg("--onnx")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    check_export(&run_dir, &dir);

    // No models.h5: a clear error naming it, and nothing written.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = tmp.path().join("nothing");
    let o = bin()
        .arg("export")
        .arg(&empty)
        .arg("--onnx")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("models.h5"), "{}", text(&o));
    assert!(!out.exists(), "a failed export writes nothing");
}

/// The paper run's export (see the module docs for the commands).
#[test]
#[ignore = "needs `diffnmf run jobs/paper.yaml` and `diffnmf export results/paper --onnx out/onnx` first"]
fn the_paper_run_export_agrees_with_its_result_h5() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("DIFFNMF_ONNX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("out/onnx"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("pipeline.json")).unwrap()).unwrap();
    let job = json["job_name"].as_str().unwrap();
    check_export(&root.join("results").join(job), &dir);
}
