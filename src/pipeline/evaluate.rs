//! Clean and robust evaluation (`docs/evaluation.md`, `docs/attacks.md`):
//! Clean_Base, Clean_Def, and per ε Robust_Base and Robust_Def under the `transfer`,
//! `adaptive` and `worst` (per-sample worst over both) protocols, plus the sanity checks.
//!
//! Protocol at every ε > 0, every point attacked afresh:
//! * **base / transfer**: each attack of the preset on the undefended classifier, on every
//!   clean-correct point; its candidates are scored on the base model (Robust_Base) and on
//!   the defence (transfer).
//! * **adaptive**: the preset's cascade through the stochastic defence (EOT gradients,
//!   successes confirmed with independent noise), then warm-started APGD runs from each
//!   point's transfer candidate and from its smaller-ε adaptive candidate.
//! * Smaller-ε candidates stay candidates at larger ε (the balls are nested); they never
//!   replace the fresh attack. The per-ε results *without* carried candidates are kept as
//!   `fresh_accuracy` and the monotonicity check is run on them.
//! * Every candidate is scored `attack.score_repeats` times with R = `diffusion.passes`
//!   passes, each repeat with its own noise key (by sample id: ε = 0 reproduces the clean
//!   rows). A point's result is its worst candidate; metrics on repeat 0.

use super::checkpoint;
use super::checks::{self, CheckCtx};
use super::stages::Trained;
use super::worst::{score_all, BaseScorer, DefScorer, Scored, Scorer, Worst};
use super::Timings;
use crate::attack::apgd::ApgdParams;
use crate::attack::plan::{run_plan, PlanOutput, Step};
use crate::attack::square::SquareParams;
use crate::attack::{AttackModel, BoxConstraint, LossKind};
use crate::backend::DeviceCtx;
use crate::config::{AttackVersion, BoxKind, JobConfig, Protocol};
use crate::diffusion::model::{BaseModel, Defended};
use crate::error::{Error, Result};
use crate::metrics;
use crate::progress::log;
use crate::results::ScenarioResult;
use crate::rng::{key, tag};
use ndarray::{Array1, ArrayView2, Axis};

/// What the evaluation produced.
pub struct Evaluation {
    pub scenarios: Vec<ScenarioResult>,
    pub checks: Vec<(String, bool, String)>,
}

/// A result row from a tracker: metrics on repeat 0's worst probabilities.
pub(super) fn row(
    name: &'static str,
    protocol: &'static str,
    eps: f64,
    y: &[usize],
    w: &Worst,
    fresh: Option<&Worst>,
) -> ScenarioResult {
    // Metrics on exactly the stored (f32) probabilities, so that they can be recomputed
    // from `result.h5`.
    let proba = w.proba[0].mapv(|v| v as f32);
    ScenarioResult {
        scenario: name,
        protocol,
        eps,
        metrics: metrics::compute(y, proba.mapv(f64::from).view()),
        proba,
        single_pass_accuracy: vec![],
        repeat_accuracy: w.repeat_accuracy(),
        strict_accuracy: w.strict_accuracy(),
        fresh_accuracy: fresh.map_or(f64::NAN, |f| f.repeat_accuracy()[0]),
        grad_evals: 0,
        fooled_by: vec![],
    }
}

/// The feature box of `kind`; `train_range` is the per-feature (min, max) of the z-scored
/// training features ([`Trained::train_range`]).
pub(super) fn bounds(kind: BoxKind, train_range: &(Array1<f32>, Array1<f32>)) -> BoxConstraint {
    match kind {
        BoxKind::None => BoxConstraint::None,
        BoxKind::Unit => BoxConstraint::Unit,
        BoxKind::TrainRange => BoxConstraint::Range {
            lo: train_range.0.clone(),
            hi: train_range.1.clone(),
        },
    }
}

/// Square with `n_queries` queries, EOT and confirmation passes of the job (ε, box and
/// seed are set by [`run_plan`] from its APGD parameters).
pub(super) fn square_step<'a>(cfg: &JobConfig, n_queries: usize) -> Step<'a> {
    Step::Square(SquareParams {
        eps: 0.0,
        n_queries,
        p_init: 0.8,
        eot: cfg.attack.eot,
        confirm: cfg.diffusion.passes,
        bounds: BoxConstraint::None,
        seed: 0,
    })
}

/// The preset's attacks (without warm starts).
pub(super) fn preset_steps<'a>(cfg: &JobConfig, square_queries: usize) -> Vec<Step<'a>> {
    let a = &cfg.attack;
    let sq = || square_step(cfg, square_queries);
    match a.version {
        AttackVersion::Rand => a.losses.iter().map(|&l| Step::Apgd(l)).collect(),
        AttackVersion::Standard => vec![
            Step::Apgd(LossKind::Ce),
            Step::Targeted { n: a.targets },
            sq(),
        ],
        AttackVersion::Plus => vec![
            Step::Apgd(LossKind::Ce),
            Step::Apgd(LossKind::Dlr),
            Step::Targeted { n: a.targets },
            sq(),
        ],
    }
}

/// APGD parameters of the preset (`plus`: 5 restarts).
pub(super) fn params(cfg: &JobConfig, eps: f64, b: &BoxConstraint, seed: u64) -> ApgdParams {
    let a = &cfg.attack;
    ApgdParams {
        eps: eps as f32,
        n_iter: a.iterations,
        loss: LossKind::Ce,
        eot: a.eot,
        restarts: if a.version == AttackVersion::Plus {
            a.restarts.max(5)
        } else {
            a.restarts
        },
        rho: crate::attack::apgd::RHO,
        bounds: b.clone(),
        seed,
        early_stop: true,
        confirm: cfg.diffusion.passes,
    }
}

/// Typed errors for presets the model cannot support (instead of a panic in the attack).
pub(crate) fn check_classes(cfg: &JobConfig, k: usize) -> Result<()> {
    let a = &cfg.attack;
    let dlr = a.version == AttackVersion::Plus
        || a.version == AttackVersion::Rand && a.losses.contains(&LossKind::Dlr);
    if dlr && k < 3 {
        return Err(Error::param(
            "attack.losses",
            format!("the DLR loss needs ≥ 3 classes and this dataset has {k}; use `attack.losses: [ce]`"),
        ));
    }
    if a.version != AttackVersion::Rand && k < 4 {
        return Err(Error::param(
            "attack.version",
            format!(
                "`{}` runs APGD-T, which needs ≥ 4 classes (this dataset has {k}); use `rand`",
                a.version.name()
            ),
        ));
    }
    Ok(())
}

/// Candidates of every step of a plan, as `(rows, points)`.
fn candidates(o: &PlanOutput) -> impl Iterator<Item = (&[usize], ArrayView2<'_, f32>)> {
    o.steps.iter().map(|s| (&s.rows[..], s.adv.view()))
}

fn fooled_counts(o: &PlanOutput) -> Vec<(String, usize)> {
    o.steps
        .iter()
        .map(|s| (s.name.clone(), s.fooled.iter().filter(|&&f| f).count()))
        .collect()
}

/// Robust_Base and transfer at one ε: every attack of `steps` on its own on the base model,
/// fresh at this ε on every clean-correct point (the base model is deterministic: no EOT,
/// no confirmation); each candidate is scored by the base scorer into the `base` trackers
/// and by the defence's scorer into the `def` trackers. Returns gradient evaluations and
/// fooled counts per attack.
pub(super) fn transfer_eps(
    base: &dyn AttackModel,
    steps: &[Step<'_>],
    (x, y, ids): (ArrayView2<f32>, &[usize], &[u64]),
    pb: &ApgdParams,
    (base_s, base_w): (&dyn Scorer, &mut [&mut Worst]),
    (def_s, def_w): (&dyn Scorer, &mut [&mut Worst]),
) -> (u64, Vec<(String, usize)>) {
    let (mut evals, mut fooled) = (0, vec![]);
    for (si, s) in steps.iter().enumerate() {
        let q = ApgdParams {
            seed: key(pb.seed, &[si as u64]),
            ..pb.clone()
        };
        let o = run_plan(base, x, y, ids, std::slice::from_ref(s), &q);
        evals += o.evals;
        fooled.extend(fooled_counts(&o));
        for (rows, cand) in candidates(&o) {
            let sb = score_all(base_s, rows, cand, ids);
            base_w.iter_mut().for_each(|w| w.offer(&sb));
            let sd = score_all(def_s, rows, cand, ids);
            def_w.iter_mut().for_each(|w| w.offer(&sd));
        }
    }
    (evals, fooled)
}

/// The four trackers of one defence protocol (carried across ε and fresh at this ε).
struct Pair {
    carried: Worst,
    fresh: Worst,
}

impl Pair {
    fn offer(&mut self, s: &Scored<'_>) {
        self.carried.offer(s);
        self.fresh.offer(s);
    }
}

/// Run every scenario of the job. With `ckpt`, the state after every finished ε is saved
/// there and a matching saved state is continued from ([`super::checkpoint`]).
pub fn evaluate(
    cfg: &JobConfig,
    tr: &Trained,
    t: &mut Timings,
    ctx: &DeviceCtx,
    ckpt: Option<&std::path::Path>,
) -> Result<Evaluation> {
    let _ = ctx;
    let (x, y, ids) = (tr.z_test.view(), &tr.y_test[..], &tr.test_ids[..]);
    let n = y.len();
    let base = BaseModel { clf: &tr.clf };
    check_classes(cfg, base.num_classes())?;
    let def = Defended::new(
        &tr.den.mlp,
        &tr.clf,
        &tr.den.sched,
        &tr.den.emb,
        cfg.diffusion.t_star,
        tr.den.predict,
    );
    #[cfg(feature = "cuda")]
    let cuda_def = match &ctx.cuda {
        Some(be) => Some(
            crate::backend::cuda::denoiser::CudaDefended::new(
                be,
                &tr.den.mlp,
                &tr.clf,
                &tr.den.sched,
                &tr.den.emb,
                cfg.diffusion.t_star,
                tr.den.predict,
            )
            .map_err(|e| Error::Cuda(e.to_string()))?,
        ),
        None => None,
    };
    // The model the adaptive attack differentiates (CUDA when selected); scoring is CPU.
    let attack_def: &dyn AttackModel = {
        #[cfg(feature = "cuda")]
        {
            match &cuda_def {
                Some(c) => c,
                None => &def,
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            &def
        }
    };
    let passes = cfg.diffusion.passes;
    let bs = BaseScorer(&base);
    let ds = DefScorer {
        def: &def,
        passes,
        repeats: cfg.attack.score_repeats,
        key: key(cfg.seed, &[tag("score")]),
    };
    let all: Vec<usize> = (0..n).collect();

    let mut out = vec![];
    let clean_b = score_all(&bs, &all, x, ids);
    let clean_d = t.time("clean_def", || Ok(score_all(&ds, &all, x, ids)))?;
    let wb = Worst::new(y, &clean_b);
    let wd = Worst::new(y, &clean_d);
    out.push(row("clean_base", "none", 0.0, y, &wb, None));
    let mut cd = row("clean_def", "none", 0.0, y, &wd, None);
    let singles = def
        .predict_proba(x, ids, passes, key(ds.key, &[0]))
        .1
        .axis_iter(Axis(1))
        .map(|col| {
            col.iter()
                .zip(y)
                .filter(|(p, t)| **p as usize == **t)
                .count() as f64
                / n as f64
        })
        .collect();
    cd.single_pass_accuracy = singles;
    out.push(cd);
    log(format!(
        "clean accuracy: base {:.4}, defended {:.4} (R = {passes}; {} scoring repeats {})",
        out[0].metrics.accuracy,
        out[1].metrics.accuracy,
        cfg.attack.score_repeats,
        checks::mean_sd(&out[1].repeat_accuracy)
    ));

    let b = bounds(cfg.attack.bounds, &tr.train_range);
    let mut eps_list = cfg.attack.eps.clone();
    eps_list.sort_by(f64::total_cmp);
    eps_list.dedup();
    let want_t = cfg.attack.protocols.contains(&Protocol::Transfer);
    let want_a = cfg.attack.protocols.contains(&Protocol::Adaptive);
    let mut base_c = wb.clone();
    let (mut tr_c, mut ad_c, mut wo_c) = (wd.clone(), wd.clone(), wd.clone());
    let mut cx = CheckCtx::new(cfg, y, ids);
    let mut first_pos = true;
    let fp = checkpoint::fingerprint(cfg, &[&clean_b.proba, &clean_d.proba]);
    let mut start = 0;
    let mut eps_timings: Vec<(String, f64)> = vec![];
    if let Some(st) = ckpt.and_then(|p| checkpoint::load(p, &fp, y)) {
        log(format!(
            "[checkpoint] continuing the evaluation at ε index {} of {} ({} finished ε values loaded)",
            st.next,
            eps_list.len(),
            st.next
        ));
        start = st.next;
        first_pos = st.first_pos;
        out = st.rows;
        [base_c, tr_c, ad_c, wo_c] = st.trackers;
        cx.restore(st.check_lines, st.masked);
        t.0.extend(st.timings.iter().cloned());
        eps_timings = st.timings;
    }

    for (ei, &eps) in eps_list.iter().enumerate().skip(start) {
        let mark = t.0.len();
        let mut base_f = wb.clone();
        let mut tp = Pair {
            carried: tr_c,
            fresh: wd.clone(),
        };
        let mut ap = Pair {
            carried: ad_c,
            fresh: wd.clone(),
        };
        let mut wp = Pair {
            carried: wo_c,
            fresh: wd.clone(),
        };
        let (mut base_evals, mut base_fooled) = (0, vec![]);
        let (mut ad_evals, mut ad_fooled) = (0, vec![]);
        let prev_adaptive = ap.carried.x.clone();
        if eps > 0.0 {
            // Robust_Base and transfer: every attack of the preset on its own, on every
            // clean-correct point (the base model is deterministic: no EOT, no confirmation).
            let mut pb = params(
                cfg,
                eps,
                &b,
                key(cfg.seed, &[tag("attack-base"), ei as u64]),
            );
            pb.eot = 1;
            pb.early_stop = false;
            let steps = preset_steps(cfg, cfg.attack.square_queries);
            t.time(&format!("attack_base_eps{eps}"), || {
                let mut dw: Vec<&mut Worst> = vec![&mut tp.carried, &mut tp.fresh];
                if want_t {
                    dw.push(&mut wp.carried);
                    dw.push(&mut wp.fresh);
                }
                (base_evals, base_fooled) = transfer_eps(
                    &base,
                    &steps,
                    (x, y, ids),
                    &pb,
                    (&bs, &mut [&mut base_c, &mut base_f]),
                    (&ds, &mut dw),
                );
                Ok(())
            })?;
            if want_a {
                let seed = key(cfg.seed, &[tag("attack-adaptive"), ei as u64]);
                let p = params(cfg, eps, &b, seed);
                let mut steps = preset_steps(cfg, cfg.attack.square_queries);
                let wi = cfg.attack.warm_iterations;
                let transfer_x = tp.carried.x.clone();
                if wi > 0 {
                    steps.push(Step::Warm {
                        name: "warm-transfer",
                        init: transfer_x.view(),
                        loss: LossKind::Ce,
                        n_iter: wi,
                    });
                    if !first_pos {
                        steps.push(Step::Warm {
                            name: "warm-smaller-eps",
                            init: prev_adaptive.view(),
                            loss: LossKind::Ce,
                            n_iter: wi,
                        });
                    }
                }
                let o = t.time(&format!("attack_adaptive_eps{eps}"), || {
                    Ok(run_plan(attack_def, x, y, ids, &steps, &p))
                })?;
                ad_evals = o.evals;
                ad_fooled = fooled_counts(&o);
                t.time(&format!("adaptive_score_eps{eps}"), || {
                    for (rows, cand) in candidates(&o) {
                        let sd = score_all(&ds, rows, cand, ids);
                        ap.offer(&sd);
                        wp.offer(&sd);
                    }
                    Ok(())
                })?;
            }
            first_pos = false;
        }
        let mut s = row("robust_base", "none", eps, y, &base_c, Some(&base_f));
        s.grad_evals = base_evals;
        s.fooled_by = base_fooled;
        out.push(s);
        if want_t {
            out.push(row(
                "robust_def",
                "transfer",
                eps,
                y,
                &tp.carried,
                Some(&tp.fresh),
            ));
        }
        if want_a {
            let mut s = row(
                "robust_def",
                "adaptive",
                eps,
                y,
                &ap.carried,
                Some(&ap.fresh),
            );
            s.grad_evals = ad_evals;
            s.fooled_by = ad_fooled;
            out.push(s);
        }
        let w = row("robust_def", "worst", eps, y, &wp.carried, Some(&wp.fresh));
        log(format!(
            "eps {eps}: robust accuracy base {:.4}, defended worst {:.4} {} (strict {:.4}; transfer {:.4}, adaptive {:.4})",
            out.iter().rev().find(|r| r.scenario == "robust_base").map_or(f64::NAN, |r| r.metrics.accuracy),
            w.metrics.accuracy,
            checks::mean_sd(&w.repeat_accuracy),
            w.strict_accuracy,
            tp.carried.repeat_accuracy()[0],
            ap.carried.repeat_accuracy()[0],
        ));
        out.push(w);
        if eps > 0.0 && want_a {
            t.time(&format!("checks_eps{eps}"), || {
                cx.at_eps(eps, &b, x, attack_def, &ds, &wd, &ap.fresh, &wp.carried)
            })?;
        }
        cx.record(eps, &tp.carried, &ap.carried);
        tr_c = tp.carried;
        ad_c = ap.carried;
        wo_c = wp.carried;
        if let Some(path) = ckpt {
            eps_timings.extend(t.0[mark..].iter().cloned());
            let (check_lines, masked) = cx.state();
            let st = checkpoint::EvalState {
                next: ei + 1,
                first_pos,
                rows: out.clone(),
                trackers: [base_c.clone(), tr_c.clone(), ad_c.clone(), wo_c.clone()],
                check_lines,
                masked,
                timings: eps_timings.clone(),
            };
            // A checkpoint is a shortcut for a restart, never a reason to fail the run.
            if let Err(e) = checkpoint::save(path, &fp, &st) {
                crate::progress::warn(format!(
                    "[checkpoint] warning: could not save {} ({e}); a restart recomputes this ε",
                    path.display()
                ));
            }
        }
    }
    let grads = checks::input_gradients(cfg, attack_def, x, y, ids, cx.subset());
    let checks = cx.finish(&out, &clean_d, grads, want_t && want_a);
    Ok(Evaluation {
        scenarios: out,
        checks,
    })
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod protocol_tests;
