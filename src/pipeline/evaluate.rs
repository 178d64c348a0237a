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
use crate::config::{AttackVersion, BoxKind, JobConfig, Threat};
use crate::diffusion::cuda::CudaDefended;
use crate::diffusion::model::{BaseModel, Defended};
use crate::error::{Error, Result};
use crate::metrics;
use crate::progress::log;
use crate::results::{AdversarialImages, Check, Protocol, Scenario, ScenarioResult, Timing};
use crate::rng::{key, tag};
use ndarray::{Array1, ArrayView2, Axis};

/// What the evaluation produced.
pub struct Evaluation {
    pub scenarios: Vec<ScenarioResult>,
    pub checks: Vec<Check>,
    /// Pixel threat model: the adversarial images of the first points.
    pub adversarial: Option<AdversarialImages>,
    /// `certify.enabled`: certificates and smoothed predictions.
    pub certification: Option<crate::certify::curve::Certification>,
}

/// Adversarial images kept per pixel-space run (one point per class first).
const ADVERSARIAL_POINTS: usize = 8;

/// A result row from a tracker: metrics on repeat 0's worst probabilities.
pub(super) fn row(
    name: Scenario,
    protocol: Protocol,
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
) -> Result<(u64, Vec<(String, usize)>)> {
    let (mut evals, mut fooled) = (0, vec![]);
    for (si, s) in steps.iter().enumerate() {
        let q = ApgdParams {
            seed: key(pb.seed, &[si as u64]),
            ..pb.clone()
        };
        let o = run_plan(base, x, y, ids, std::slice::from_ref(s), &q)?;
        evals += o.evals;
        fooled.extend(fooled_counts(&o));
        for (rows, cand) in candidates(&o) {
            let sb = score_all(base_s, rows, cand, ids)?;
            base_w.iter_mut().for_each(|w| w.offer(&sb));
            let sd = score_all(def_s, rows, cand, ids)?;
            def_w.iter_mut().for_each(|w| w.offer(&sd));
        }
    }
    Ok((evals, fooled))
}

/// The two trackers of one defence protocol at one ε: carried across ε (the reported row)
/// and fresh at this ε (`fresh_accuracy`).
struct Pair {
    carried: Worst,
    fresh: Worst,
}

impl Pair {
    fn new(carried: Worst, clean: &Worst) -> Self {
        Pair {
            carried,
            fresh: clean.clone(),
        }
    }

    fn offer(&mut self, s: &Scored<'_>) {
        self.carried.offer(s);
        self.fresh.offer(s);
    }
}

/// The feature-space models of one evaluation: the base model, the model the adaptive
/// attack differentiates (the CPU or CUDA defence), and both scorers.
#[derive(Clone, Copy)]
pub(super) struct Models<'a> {
    pub base: &'a dyn AttackModel,
    pub attack_def: &'a dyn AttackModel,
    pub bs: &'a dyn Scorer,
    pub ds: &'a DefScorer<'a>,
}

/// What one evaluation attacks and scores with: the attacked points (feature vectors, or
/// images under the pixel threat model), the feature vectors of the clean points, and the
/// models and scorers on the attacked space.
pub(super) struct Ctx<'a> {
    pub cfg: &'a JobConfig,
    pub x: ArrayView2<'a, f32>,
    /// The clean points' z-scored features (single-pass accuracies of Clean_Def).
    pub clean_z: ArrayView2<'a, f32>,
    pub y: &'a [usize],
    pub ids: &'a [u64],
    pub base: &'a dyn AttackModel,
    pub attack_def: &'a dyn AttackModel,
    pub bs: &'a dyn Scorer,
    pub ds: &'a dyn Scorer,
    /// The defence's feature-space scorer (its passes and key).
    pub def: &'a DefScorer<'a>,
    pub bounds: BoxConstraint,
    pub want_t: bool,
    pub want_a: bool,
}

impl<'a> Ctx<'a> {
    /// The paper's threat model: the attacked points are the evaluated feature vectors,
    /// boxed by `attack.bounds`.
    fn feature(cfg: &'a JobConfig, tr: &'a Trained, m: Models<'a>) -> Self {
        let protocols = &cfg.attack.protocols;
        Ctx {
            cfg,
            x: tr.eval.z.view(),
            clean_z: tr.eval.z.view(),
            y: &tr.eval.y,
            ids: &tr.eval.ids,
            base: m.base,
            attack_def: m.attack_def,
            bs: m.bs,
            ds: m.ds,
            def: m.ds,
            bounds: bounds(cfg.attack.bounds, &tr.train_range),
            want_t: protocols.contains(&crate::config::Protocol::Transfer),
            want_a: protocols.contains(&crate::config::Protocol::Adaptive),
        }
    }
}

/// The clean rows and the clean scores every robust tracker starts from.
struct Clean<'a> {
    base: Scored<'a>,
    def: Scored<'a>,
    wb: Worst,
    wd: Worst,
    /// `certify.enabled`: the clean points' certificates and smoothed predictions.
    cert: Option<super::certified::CleanCert>,
}

/// The evaluation's state after the last finished ε (what a checkpoint holds).
struct Carried {
    /// Index of the next ε to evaluate.
    next: usize,
    /// No ε > 0 has been attacked yet (no smaller-ε adaptive candidates to warm-start from).
    first_pos: bool,
    rows: Vec<ScenarioResult>,
    /// Robust_Base, transfer, adaptive and worst-case trackers carried across ε.
    base: Worst,
    transfer: Worst,
    adaptive: Worst,
    worst: Worst,
    /// `certify.enabled`: PREDICT on each finished ε's worst-case examples.
    smoothed: Vec<crate::certify::curve::SmoothedAtEps>,
    timings: Vec<Timing>,
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
    let base = BaseModel { clf: &tr.clf };
    check_classes(cfg, base.num_classes())?;
    let def = Defended::of(&tr.den, &tr.clf, cfg.diffusion.t_star);
    let bs = BaseScorer(&base);
    let ds = DefScorer {
        def: &def,
        passes: cfg.diffusion.passes,
        repeats: cfg.attack.score_repeats,
        key: key(cfg.seed, &[tag("score")]),
    };
    with_attack_model(cfg, tr, ctx, &def, |attack_def| {
        let m = Models {
            base: &base,
            attack_def,
            bs: &bs,
            ds: &ds,
        };
        match cfg.attack.threat {
            Threat::Feature => run_all(&Ctx::feature(cfg, tr, m), t, ckpt),
            Threat::Pixel => super::pixel::evaluate(cfg, tr, m, t, ckpt),
        }
    })
}

/// Call `f` with the model the adaptive attack differentiates: the CUDA defence when a
/// CUDA device was selected, else `def` (scoring is always on the CPU defence).
fn with_attack_model<R>(
    cfg: &JobConfig,
    tr: &Trained,
    ctx: &DeviceCtx,
    def: &Defended,
    f: impl FnOnce(&dyn AttackModel) -> Result<R>,
) -> Result<R> {
    match ctx.cuda() {
        Some(be) => f(&CudaDefended::of(
            be,
            &tr.den,
            &tr.clf,
            cfg.diffusion.t_star,
        )?),
        None => f(def),
    }
}

/// The clean rows, every ε in ascending order (continued from a checkpoint when one
/// matches), then the whole-run checks.
pub(super) fn run_all(
    e: &Ctx<'_>,
    t: &mut Timings,
    ckpt: Option<&std::path::Path>,
) -> Result<Evaluation> {
    let (cfg, y) = (e.cfg, e.y);
    let all: Vec<usize> = (0..y.len()).collect();
    let clean = clean_scores(e, &all, t)?;
    let rows = clean_rows(e, &clean);
    let mut eps_list = cfg.attack.eps.clone();
    eps_list.sort_by(f64::total_cmp);
    eps_list.dedup();
    let mut cx = CheckCtx::new(cfg, y, e.ids);
    let fp = checkpoint::fingerprint(cfg, &[&clean.base.proba, &clean.def.proba]);
    let mut st = Carried {
        next: 0,
        first_pos: true,
        rows,
        base: clean.wb.clone(),
        transfer: clean.wd.clone(),
        adaptive: clean.wd.clone(),
        worst: clean.wd.clone(),
        smoothed: vec![],
        timings: vec![],
    };
    if let Some(saved) = ckpt.and_then(|p| checkpoint::load(p, &fp, y)) {
        log(format!(
            "[checkpoint] continuing the evaluation at ε index {} of {} ({} finished ε values loaded)",
            saved.next,
            eps_list.len(),
            saved.next
        ));
        t.0.extend(saved.timings.iter().cloned());
        st = restore(saved, &mut cx);
    }
    for (ei, &eps) in eps_list.iter().enumerate().skip(st.next) {
        let mark = t.0.len();
        eval_eps(e, &clean, &mut st, &mut cx, t, ei, eps)?;
        st.next = ei + 1;
        if let Some(path) = ckpt {
            st.timings.extend(t.0[mark..].iter().cloned());
            save_checkpoint(path, &fp, &st, &cx);
        }
    }
    let grads = checks::input_gradients(cfg, e.attack_def, e.x, y, e.ids, cx.subset())?;
    let mut checks = cx.finish(&st.rows, &clean.def, grads, e.want_t && e.want_a);
    let largest = eps_list.last().copied().unwrap_or(0.0);
    let adversarial = (cfg.attack.threat == Threat::Pixel && largest > 0.0)
        .then(|| adversarial_images(e, &clean, &st, largest));
    let certification = clean.cert.map(|c| {
        let (cert, more) = super::certified::finish(e, c, std::mem::take(&mut st.smoothed));
        checks.extend(more);
        cert
    });
    Ok(Evaluation {
        scenarios: st.rows,
        checks,
        adversarial,
        certification,
    })
}

/// Up to [`ADVERSARIAL_POINTS`] points to show: the first point of each class in
/// evaluation order, then the next points until there are enough.
fn shown_points(y: &[usize]) -> Vec<usize> {
    let m = y.len().min(ADVERSARIAL_POINTS);
    let mut pick: Vec<usize> = vec![];
    for (i, c) in y.iter().enumerate() {
        if pick.len() < m && !pick.iter().any(|&j| y[j] == *c) {
            pick.push(i);
        }
    }
    for i in 0..y.len() {
        if pick.len() < m && !pick.contains(&i) {
            pick.push(i);
        }
    }
    pick
}

/// The shown points' clean images and their reported candidates at the largest ε (the
/// carried Robust_Base and robust_def/worst trackers), with repeat 0's predictions.
fn adversarial_images(e: &Ctx<'_>, clean: &Clean<'_>, st: &Carried, eps: f64) -> AdversarialImages {
    let pick = shown_points(e.y);
    let pred = |p: &ndarray::Array2<f64>| -> Vec<u8> {
        pick.iter()
            .map(|&i| metrics::argmax(p.row(i)) as u8)
            .collect()
    };
    AdversarialImages {
        eps,
        ids: pick.iter().map(|&i| e.ids[i]).collect(),
        labels: pick.iter().map(|&i| e.y[i] as u8).collect(),
        clean: e.x.select(Axis(0), &pick),
        base: st.base.x.select(Axis(0), &pick),
        defence: st.worst.x.select(Axis(0), &pick),
        clean_base_pred: pred(&clean.wb.proba[0]),
        clean_def_pred: pred(&clean.wd.proba[0]),
        base_pred: pred(&st.base.proba[0]),
        defence_pred: pred(&st.worst.proba[0]),
    }
}

/// Base and defended scores of the clean points (the defended ones timed as `clean_def`).
fn clean_scores<'a: 's, 's>(e: &Ctx<'a>, all: &'s [usize], t: &mut Timings) -> Result<Clean<'s>> {
    let base = score_all(e.bs, all, e.x, e.ids)?;
    let def = t.time(Scenario::CleanDef.as_str(), || {
        score_all(e.ds, all, e.x, e.ids)
    })?;
    Ok(Clean {
        wb: Worst::new(e.y, &base),
        wd: Worst::new(e.y, &def),
        base,
        def,
        cert: super::certified::clean(e, t)?,
    })
}

/// Clean_Base and Clean_Def (with the accuracy of every single defence pass).
fn clean_rows(e: &Ctx<'_>, clean: &Clean<'_>) -> Vec<ScenarioResult> {
    let (y, n, passes) = (e.y, e.y.len(), e.cfg.diffusion.passes);
    let cb = row(Scenario::CleanBase, Protocol::None, 0.0, y, &clean.wb, None);
    let mut cd = row(Scenario::CleanDef, Protocol::None, 0.0, y, &clean.wd, None);
    cd.single_pass_accuracy = e
        .def
        .def
        .predict_proba(e.clean_z, e.ids, passes, key(e.def.key, &[0]))
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
    log(format!(
        "clean accuracy: base {:.4}, defended {:.4} (R = {passes}; {} scoring repeats {})",
        cb.metrics.accuracy,
        cd.metrics.accuracy,
        e.cfg.attack.score_repeats,
        checks::mean_sd(&cd.repeat_accuracy)
    ));
    vec![cb, cd]
}

/// The carried state of a checkpoint (its check records go back into `cx`).
fn restore(saved: checkpoint::EvalState, cx: &mut CheckCtx<'_>) -> Carried {
    cx.restore(saved.check_lines, saved.masked);
    let [base, transfer, adaptive, worst] = saved.trackers;
    Carried {
        next: saved.next,
        first_pos: saved.first_pos,
        rows: saved.rows,
        base,
        transfer,
        adaptive,
        worst,
        smoothed: saved.smoothed,
        timings: saved.timings,
    }
}

/// Save the state after a finished ε; a failure only warns (a checkpoint is a shortcut
/// for a restart, never a reason to fail the run).
fn save_checkpoint(path: &std::path::Path, fp: &str, st: &Carried, cx: &CheckCtx<'_>) {
    let (check_lines, masked) = cx.state();
    let saved = checkpoint::EvalState {
        next: st.next,
        first_pos: st.first_pos,
        rows: st.rows.clone(),
        trackers: [
            st.base.clone(),
            st.transfer.clone(),
            st.adaptive.clone(),
            st.worst.clone(),
        ],
        check_lines,
        masked,
        smoothed: st.smoothed.clone(),
        timings: st.timings.clone(),
    };
    if let Err(e) = checkpoint::save(path, fp, &saved) {
        crate::progress::warn(format!(
            "[checkpoint] warning: could not save {} ({e}); a restart recomputes this ε",
            path.display()
        ));
    }
}

/// The trackers of one ε: Robust_Base fresh at this ε, and the transfer, adaptive and
/// worst-case pairs.
struct EpsTrackers {
    base_fresh: Worst,
    transfer: Pair,
    adaptive: Pair,
    worst: Pair,
}

/// Gradient evaluations and fooled counts per attack of one protocol at one ε.
#[derive(Default)]
struct Spent {
    evals: u64,
    fooled: Vec<(String, usize)>,
}

/// Attack at ε (index `ei`; at ε = 0 nothing is attacked and the rows are the clean
/// trackers'), push the
/// Robust_Base and Robust_Def rows and run the checks of this ε.
fn eval_eps(
    e: &Ctx<'_>,
    clean: &Clean<'_>,
    st: &mut Carried,
    cx: &mut CheckCtx<'_>,
    t: &mut Timings,
    ei: usize,
    eps: f64,
) -> Result<()> {
    let wd = &clean.wd;
    let mut k = EpsTrackers {
        base_fresh: clean.wb.clone(),
        transfer: Pair::new(std::mem::replace(&mut st.transfer, wd.clone()), wd),
        adaptive: Pair::new(std::mem::replace(&mut st.adaptive, wd.clone()), wd),
        worst: Pair::new(std::mem::replace(&mut st.worst, wd.clone()), wd),
    };
    let (mut base, mut adaptive) = (Spent::default(), Spent::default());
    if eps > 0.0 {
        base = attack_base(e, ei, eps, &mut st.base, &mut k, t)?;
        if e.want_a {
            adaptive = attack_adaptive(e, ei, eps, st.first_pos, &mut k, t)?;
        }
        st.first_pos = false;
    }
    push_rows(e, eps, st, &k, base, adaptive);
    if let (true, Some(c)) = (eps > 0.0, &clean.cert) {
        let adv = k.worst.carried.x.view();
        st.smoothed
            .push(super::certified::at_eps(e, c, eps, adv, t)?);
    }
    if eps > 0.0 && e.want_a {
        let env = checks::Attacked {
            bounds: &e.bounds,
            x: e.x,
            model: e.attack_def,
            scorer: e.ds,
        };
        t.time(&format!("checks_eps{eps}"), || {
            cx.at_eps(&env, eps, wd, &k.adaptive.fresh, &k.worst.carried)
        })?;
    }
    cx.record(eps, &k.transfer.carried, &k.adaptive.carried);
    st.transfer = k.transfer.carried;
    st.adaptive = k.adaptive.carried;
    st.worst = k.worst.carried;
    Ok(())
}

/// Robust_Base and transfer at ε: every attack of the preset on its own, on every
/// clean-correct point (the base model is deterministic: no EOT, no confirmation).
fn attack_base(
    e: &Ctx<'_>,
    ei: usize,
    eps: f64,
    base_carried: &mut Worst,
    k: &mut EpsTrackers,
    t: &mut Timings,
) -> Result<Spent> {
    let cfg = e.cfg;
    let seed = key(cfg.seed, &[tag("attack-base"), ei as u64]);
    let mut pb = params(cfg, eps, &e.bounds, seed);
    pb.eot = 1;
    pb.early_stop = false;
    let steps = preset_steps(cfg, cfg.attack.square_queries);
    t.time(&format!("attack_base_eps{eps}"), || {
        let mut dw: Vec<&mut Worst> = vec![&mut k.transfer.carried, &mut k.transfer.fresh];
        if e.want_t {
            dw.push(&mut k.worst.carried);
            dw.push(&mut k.worst.fresh);
        }
        let (evals, fooled) = transfer_eps(
            e.base,
            &steps,
            (e.x, e.y, e.ids),
            &pb,
            (e.bs, &mut [base_carried, &mut k.base_fresh]),
            (e.ds, &mut dw),
        )?;
        Ok(Spent { evals, fooled })
    })
}

/// The adaptive attack at ε: the preset's cascade through the defence, then the warm
/// starts from each point's transfer candidate and (after the first ε > 0) from its
/// smaller-ε adaptive candidate; every candidate scored into the adaptive and worst pairs.
fn attack_adaptive(
    e: &Ctx<'_>,
    ei: usize,
    eps: f64,
    first_pos: bool,
    k: &mut EpsTrackers,
    t: &mut Timings,
) -> Result<Spent> {
    let cfg = e.cfg;
    let p = params(
        cfg,
        eps,
        &e.bounds,
        key(cfg.seed, &[tag("attack-adaptive"), ei as u64]),
    );
    let mut steps = preset_steps(cfg, cfg.attack.square_queries);
    let wi = cfg.attack.warm_iterations;
    let transfer_x = k.transfer.carried.x.clone();
    let prev_adaptive = k.adaptive.carried.x.clone();
    if wi > 0 {
        steps.push(warm("warm-transfer", transfer_x.view(), wi));
        if !first_pos {
            steps.push(warm("warm-smaller-eps", prev_adaptive.view(), wi));
        }
    }
    let o = t.time(&format!("attack_adaptive_eps{eps}"), || {
        run_plan(e.attack_def, e.x, e.y, e.ids, &steps, &p)
    })?;
    t.time(&format!("adaptive_score_eps{eps}"), || {
        for (rows, cand) in candidates(&o) {
            let sd = score_all(e.ds, rows, cand, e.ids)?;
            k.adaptive.offer(&sd);
            k.worst.offer(&sd);
        }
        Ok(())
    })?;
    Ok(Spent {
        evals: o.evals,
        fooled: fooled_counts(&o),
    })
}

/// A warm-started APGD-CE step from `init`.
fn warm<'a>(name: &'static str, init: ArrayView2<'a, f32>, n_iter: usize) -> Step<'a> {
    Step::Warm {
        name,
        init,
        loss: LossKind::Ce,
        n_iter,
    }
}

/// Push this ε's Robust_Base and Robust_Def rows (transfer, adaptive when run, worst).
fn push_rows(
    e: &Ctx<'_>,
    eps: f64,
    st: &mut Carried,
    k: &EpsTrackers,
    base: Spent,
    adaptive: Spent,
) {
    let (y, out) = (e.y, &mut st.rows);
    let mut s = row(
        Scenario::RobustBase,
        Protocol::None,
        eps,
        y,
        &st.base,
        Some(&k.base_fresh),
    );
    s.grad_evals = base.evals;
    s.fooled_by = base.fooled;
    let base_acc = s.metrics.accuracy;
    out.push(s);
    let def_row = |p, pair: &Pair| {
        row(
            Scenario::RobustDef,
            p,
            eps,
            y,
            &pair.carried,
            Some(&pair.fresh),
        )
    };
    if e.want_t {
        out.push(def_row(Protocol::Transfer, &k.transfer));
    }
    if e.want_a {
        let mut s = def_row(Protocol::Adaptive, &k.adaptive);
        s.grad_evals = adaptive.evals;
        s.fooled_by = adaptive.fooled;
        out.push(s);
    }
    let w = def_row(Protocol::Worst, &k.worst);
    log(format!(
        "eps {eps}: robust accuracy base {base_acc:.4}, defended worst {:.4} {} (strict {:.4}; transfer {:.4}, adaptive {:.4})",
        w.metrics.accuracy,
        checks::mean_sd(&w.repeat_accuracy),
        w.strict_accuracy,
        k.transfer.carried.repeat_accuracy()[0],
        k.adaptive.carried.repeat_accuracy()[0],
    ));
    out.push(w);
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod protocol_tests;
