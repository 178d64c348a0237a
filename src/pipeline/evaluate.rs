//! Clean and robust evaluation: Clean_Base, Clean_Def, and per ε Robust_Base and Robust_Def
//! under the `transfer` and `adaptive` protocols, plus the sanity checks of
//! `shared/specs/EVALUATION.md` that the data at hand can answer.
//!
//! Budgets are processed in increasing order and the ε-balls are nested, so a point whose
//! adversarial example was scored as misclassified at a smaller ε keeps that example (it is
//! feasible at every larger ε) and is not attacked again; only points still robust are
//! attacked. This is the worst case per sample over all attacks run, makes robust accuracy
//! non-increasing in ε by construction, and skips work that cannot change a result.
//! The defence is always scored on fresh purification passes (`attack.score_passes`) whose
//! noise is keyed by the sample id — identical for the clean and every robust evaluation,
//! independent of the noise the attack saw — so ε = 0 reproduces the clean rows exactly.

use super::stages::Trained;
use super::Timings;
use crate::attack::apgd::{attack_suite, ApgdParams};
use crate::attack::{AttackModel, BoxConstraint};
use crate::backend::DeviceCtx;
use crate::config::{BoxKind, JobConfig, Protocol};
use crate::diffusion::model::{BaseModel, Defended};
use crate::error::Result;
use crate::metrics::{self, argmax};
use crate::progress::log;
use crate::results::ScenarioResult;
use crate::rng::{key, tag};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// What the evaluation produced.
pub struct Evaluation {
    pub scenarios: Vec<ScenarioResult>,
    pub checks: Vec<(String, bool, String)>,
}

fn scenario(
    name: &'static str,
    protocol: &'static str,
    eps: f64,
    y: &[usize],
    proba: &Array2<f64>,
    single: Option<&Array2<u16>>,
) -> ScenarioResult {
    let m = metrics::compute(y, proba.view());
    let single_pass_accuracy = single
        .map(|s| {
            s.axis_iter(Axis(1))
                .map(|col| {
                    col.iter()
                        .zip(y)
                        .filter(|(p, t)| **p as usize == **t)
                        .count() as f64
                        / y.len() as f64
                })
                .collect()
        })
        .unwrap_or_default();
    ScenarioResult {
        scenario: name,
        protocol,
        eps,
        metrics: m,
        proba: proba.mapv(|v| v as f32),
        single_pass_accuracy,
        grad_evals: 0,
        fooled_by: vec![],
    }
}

/// Per-protocol state carried across increasing ε.
struct Carry {
    adv: Array2<f32>,
    broken: Vec<bool>,
}

impl Carry {
    fn new(x: ArrayView2<f32>, y: &[usize], clean_proba: &Array2<f64>) -> Self {
        let broken = clean_proba
            .rows()
            .into_iter()
            .zip(y)
            .map(|(r, &t)| argmax(r) != t)
            .collect();
        Carry {
            adv: x.to_owned(),
            broken,
        }
    }
    fn todo(&self) -> Vec<usize> {
        (0..self.broken.len())
            .filter(|&i| !self.broken[i])
            .collect()
    }
}

fn bounds(kind: BoxKind, z_train: &Array2<f32>) -> BoxConstraint {
    match kind {
        BoxKind::None => BoxConstraint::None,
        BoxKind::Unit => BoxConstraint::Unit,
        BoxKind::TrainRange => BoxConstraint::Range {
            lo: z_train.fold_axis(Axis(0), f32::INFINITY, |a, &b| a.min(b)),
            hi: z_train.fold_axis(Axis(0), f32::NEG_INFINITY, |a, &b| a.max(b)),
        },
    }
}

/// Attack the `todo` rows of `carry.adv`'s clean points; returns new adversarial rows,
/// gradient evaluations and fooled-by counts.
#[allow(clippy::too_many_arguments)]
fn attack_rows<M: AttackModel>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    todo: &[usize],
    cfg: &JobConfig,
    eps: f64,
    eot: usize,
    seed: u64,
    b: &BoxConstraint,
    early_stop: bool,
) -> (Array2<f32>, u64, Vec<(String, usize)>) {
    let xs = x.select(Axis(0), todo);
    let ys: Vec<usize> = todo.iter().map(|&i| y[i]).collect();
    let is: Vec<u64> = todo.iter().map(|&i| ids[i]).collect();
    let p = ApgdParams {
        eps: eps as f32,
        n_iter: cfg.attack.iterations,
        loss: cfg.attack.losses[0],
        eot,
        restarts: cfg.attack.restarts,
        rho: 0.75,
        bounds: b.clone(),
        seed,
        early_stop,
    };
    let out = attack_suite(model, xs.view(), &ys, &is, &cfg.attack.losses, &p);
    let counts = cfg
        .attack
        .losses
        .iter()
        .map(|l| {
            (
                l.name().to_string(),
                out.fooled_by.iter().filter(|f| **f == Some(*l)).count(),
            )
        })
        .collect();
    (out.adv, out.grad_evals, counts)
}

/// Run every scenario of the job.
pub fn evaluate(
    cfg: &JobConfig,
    tr: &Trained,
    t: &mut Timings,
    ctx: &DeviceCtx,
) -> Result<Evaluation> {
    let _ = ctx;
    let (x, y, ids) = (tr.z_test.view(), &tr.y_test[..], &tr.test_ids[..]);
    let base = BaseModel { clf: &tr.clf };
    let def = Defended::new(
        &tr.den.mlp,
        &tr.clf,
        &tr.den.sched,
        &tr.den.emb,
        cfg.diffusion.t_star,
        tr.den.predict,
    );
    let score_key = key(cfg.seed, &[tag("score")]);
    let passes = cfg.attack.score_passes;
    let score_def = |xa: ArrayView2<f32>| def.predict_proba(xa, ids, passes, score_key);

    let mut out = vec![];
    let clean_base = base.predict_proba(x);
    out.push(scenario("clean_base", "none", 0.0, y, &clean_base, None));
    let (clean_def, clean_single) = t.time("clean_def", || Ok(score_def(x)))?;
    out.push(scenario(
        "clean_def",
        "none",
        0.0,
        y,
        &clean_def,
        Some(&clean_single),
    ));
    log(format!(
        "clean accuracy: base {:.4}, defended {:.4} (R = {passes})",
        out[0].metrics.accuracy, out[1].metrics.accuracy
    ));

    let b = bounds(cfg.attack.bounds, &tr.z_train);
    let mut eps_list = cfg.attack.eps.clone();
    eps_list.sort_by(f64::total_cmp);
    eps_list.dedup();
    let mut base_c = Carry::new(x, y, &clean_base);
    let mut transfer_c = Carry::new(x, y, &clean_def);
    let mut adaptive_c = Carry::new(x, y, &clean_def);
    let want = |p: Protocol| cfg.attack.protocols.contains(&p);
    let mut broken_sets: Vec<(f64, Vec<bool>, Vec<bool>)> = vec![];

    for (ei, &eps) in eps_list.iter().enumerate() {
        // Robust_Base: APGD on the undefended classifier (deterministic, EOT 1).
        let todo = base_c.todo();
        let (mut evals, mut fooled) = (0, vec![]);
        if eps > 0.0 && !todo.is_empty() {
            let seed = key(cfg.seed, &[tag("attack-base"), ei as u64]);
            let (adv, ge, fb) = t.time(&format!("attack_base_eps{eps}"), || {
                Ok(attack_rows(
                    &base, x, y, ids, &todo, cfg, eps, 1, seed, &b, false,
                ))
            })?;
            for (r, &i) in todo.iter().enumerate() {
                base_c.adv.row_mut(i).assign(&adv.row(r));
            }
            (evals, fooled) = (ge, fb);
        }
        // Fresh base attack at this ε for every clean-correct point gives the transfer set.
        let base_proba = base.predict_proba(base_c.adv.view());
        for (i, r) in base_proba.rows().into_iter().enumerate() {
            base_c.broken[i] = argmax(r) != y[i];
        }
        let mut s = scenario("robust_base", "none", eps, y, &base_proba, None);
        s.grad_evals = evals;
        s.fooled_by = fooled;
        out.push(s);

        let mut transfer_broken = vec![false; y.len()];
        if want(Protocol::Transfer) {
            let todo = transfer_c.todo();
            for &i in &todo {
                transfer_c.adv.row_mut(i).assign(&base_c.adv.row(i));
            }
            let (p, single) = t.time(&format!("transfer_score_eps{eps}"), || {
                Ok(score_def(transfer_c.adv.view()))
            })?;
            for (i, r) in p.rows().into_iter().enumerate() {
                transfer_c.broken[i] = argmax(r) != y[i];
            }
            transfer_broken = transfer_c.broken.clone();
            out.push(scenario(
                "robust_def",
                "transfer",
                eps,
                y,
                &p,
                Some(&single),
            ));
        }
        let mut adaptive_broken = vec![false; y.len()];
        if want(Protocol::Adaptive) {
            let todo = adaptive_c.todo();
            let (mut evals, mut fooled) = (0, vec![]);
            if eps > 0.0 && !todo.is_empty() {
                let seed = key(cfg.seed, &[tag("attack-adaptive"), ei as u64]);
                let (adv, ge, fb) = t.time(&format!("attack_adaptive_eps{eps}"), || {
                    #[cfg(feature = "cuda")]
                    if let Some(be) = &ctx.cuda {
                        let cd = crate::backend::cuda::denoiser::CudaDefended::new(
                            be,
                            &tr.den.mlp,
                            &tr.clf,
                            &tr.den.sched,
                            &tr.den.emb,
                            cfg.diffusion.t_star,
                            tr.den.predict,
                        )
                        .map_err(|e| crate::Error::Cuda(e.to_string()))?;
                        return Ok(attack_rows(
                            &cd,
                            x,
                            y,
                            ids,
                            &todo,
                            cfg,
                            eps,
                            cfg.attack.eot,
                            seed,
                            &b,
                            true,
                        ));
                    }
                    Ok(attack_rows(
                        &def,
                        x,
                        y,
                        ids,
                        &todo,
                        cfg,
                        eps,
                        cfg.attack.eot,
                        seed,
                        &b,
                        true,
                    ))
                })?;
                for (r, &i) in todo.iter().enumerate() {
                    adaptive_c.adv.row_mut(i).assign(&adv.row(r));
                }
                (evals, fooled) = (ge, fb);
            }
            let (p, single) = t.time(&format!("adaptive_score_eps{eps}"), || {
                Ok(score_def(adaptive_c.adv.view()))
            })?;
            for (i, r) in p.rows().into_iter().enumerate() {
                adaptive_c.broken[i] = argmax(r) != y[i];
            }
            adaptive_broken = adaptive_c.broken.clone();
            let mut s = scenario("robust_def", "adaptive", eps, y, &p, Some(&single));
            s.grad_evals = evals;
            s.fooled_by = fooled;
            out.push(s);
        }
        let acc = |s: &str, p: &str| {
            out.iter()
                .rev()
                .find(|r| r.scenario == s && r.protocol == p && r.eps == eps)
                .map_or(f64::NAN, |r| r.metrics.accuracy)
        };
        log(format!(
            "eps {eps}: robust accuracy base {:.4}, defended transfer {:.4}, defended adaptive {:.4}",
            acc("robust_base", "none"),
            acc("robust_def", "transfer"),
            acc("robust_def", "adaptive")
        ));
        broken_sets.push((eps, transfer_broken, adaptive_broken));
    }
    let checks = sanity_checks(cfg, &out, &broken_sets);
    Ok(Evaluation {
        scenarios: out,
        checks,
    })
}

fn sanity_checks(
    cfg: &JobConfig,
    out: &[ScenarioResult],
    broken: &[(f64, Vec<bool>, Vec<bool>)],
) -> Vec<(String, bool, String)> {
    let mut checks = vec![];
    let find = |s: &str, p: &str, e: f64| {
        out.iter().find(|r| {
            r.scenario == s
                && r.protocol == p
                && (r.protocol == "none" && s.starts_with("clean") || r.eps == e)
        })
    };
    if let Some(e0) = broken.iter().find(|b| b.0 == 0.0) {
        let mut ok = true;
        let cb = find("clean_base", "none", 0.0).unwrap();
        let cd = find("clean_def", "none", 0.0).unwrap();
        let mut detail = vec![];
        for (s, p, c) in [
            ("robust_base", "none", cb),
            ("robust_def", "transfer", cd),
            ("robust_def", "adaptive", cd),
        ] {
            if let Some(r) = find(s, p, e0.0) {
                let same = r.metrics.values() == c.metrics.values();
                ok &= same;
                detail.push(format!(
                    "{s}/{p} {}",
                    if same { "equal" } else { "differs" }
                ));
            }
        }
        checks.push(("eps0_equals_clean".into(), ok, detail.join(", ")));
    }
    for (s, p) in [
        ("robust_base", "none"),
        ("robust_def", "transfer"),
        ("robust_def", "adaptive"),
    ] {
        let accs: Vec<(f64, f64)> = out
            .iter()
            .filter(|r| r.scenario == s && r.protocol == p)
            .map(|r| (r.eps, r.metrics.accuracy))
            .collect();
        if accs.len() < 2 {
            continue;
        }
        let ok = accs.windows(2).all(|w| w[1].1 <= w[0].1 + 1e-12);
        let txt: Vec<String> = accs.iter().map(|(e, a)| format!("{e}:{a:.3}")).collect();
        checks.push((format!("monotone_in_eps[{s}/{p}]"), ok, txt.join(" ")));
        if let Some(last) = accs.last() {
            checks.push((
                format!("reaches_zero[{s}/{p}]"),
                last.1 <= 0.05,
                format!("accuracy {:.4} at the largest ε = {}", last.1, last.0),
            ));
        }
    }
    if cfg.attack.protocols.len() == 2 {
        let (mut masked, mut total) = (0usize, 0usize);
        for (_, tb, ab) in broken {
            masked += tb.iter().zip(ab).filter(|(t, a)| **t && !**a).count();
            total += tb.len();
        }
        checks.push((
            "adaptive_at_least_transfer_per_sample".into(),
            masked == 0,
            if masked == 0 {
                "every point broken by transfer is broken by the adaptive attack".into()
            } else {
                format!("{masked} (point, ε) pairs of {total} broken by transfer but not by the adaptive attack: gradient masking suspected")
            },
        ));
    }
    for r in out.iter().filter(|r| !r.single_pass_accuracy.is_empty()) {
        let v = Array1::from(r.single_pass_accuracy.clone());
        let mean = v.mean().unwrap_or(f64::NAN);
        let sd = v.std(1.0);
        if r.scenario == "robust_def" || r.scenario == "clean_def" {
            checks.push((
                format!("single_pass_spread[{}]", r.key()),
                true,
                format!(
                    "single-pass accuracy {mean:.4} ± {sd:.4} over {} fresh passes; averaged {:.4}",
                    v.len(),
                    r.metrics.accuracy
                ),
            ));
        }
    }
    checks
}
