//! NNMF rank selection on the validation split only (`eval_split: val`; the test split is
//! never evaluated during the search), through a [`StageCache`] so stages that do not depend
//! on k (data, CNN) are fitted once.
//!
//! Searches over the candidate list `k_1 < … < k_n`:
//! - `grid`: every candidate at the full budget (n fits).
//! - `golden`: golden-section search over the candidate index, assuming objective(k) is
//!   unimodal; keeps a bracket `[lo, hi]`, probes two interior points at ≈ 0.382 / 0.618 of it
//!   and drops the side of the worse probe (ties drop the larger-k side), reusing probes
//!   through a memo, then evaluates what is left of the bracket (≤ 3 points). About
//!   `log_1.618(n) + 3` fits; if the curve is not unimodal it may miss the global maximum.
//! - `halving`: successive halving (η = 3): every candidate at budget 3^-R of the training
//!   epochs / NNMF iterations, keep the best third, triple the budget, …, until the last rung
//!   runs at the full budget. Total cost ≈ (R + 1) full fits instead of n.
//!
//! The chosen k is the best candidate evaluated at the full budget (ties: smaller k). Then
//! the chosen k runs once with `eval_split: test` → the paper's Table 2.

use super::objective::Objective;
use crate::cache::StageCache;
use crate::config::{load_job, JobConfig};
use crate::error::{Error, Result};
use crate::pipeline::{run_job_cached, RunOptions};
use crate::progress::log;
use crate::results::{h5, paths, write_atomic};
use hdf5::types::VarLenUnicode;
use ndarray::Array1;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Search strategy over the candidate ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    Grid,
    Halving,
    Golden,
}

impl Search {
    pub fn name(self) -> &'static str {
        match self {
            Search::Grid => "grid",
            Search::Halving => "halving",
            Search::Golden => "golden",
        }
    }
}

/// Parse `--k`: `8..128` (step 8), `8..128:16`, or a list `8,16,32`. Sorted, deduplicated.
pub fn parse_k(spec: &str) -> Result<Vec<usize>> {
    let bad = |m: &str| {
        Error::param(
            "--k",
            format!("`{spec}`: {m}; use a range `8..128`, `8..128:16` or a list `8,16,32` (k ≥ 1)"),
        )
    };
    let num = |s: &str| -> Result<usize> {
        s.trim()
            .parse::<usize>()
            .map_err(|_| bad(&format!("`{s}` is not a positive integer")))
    };
    let mut ks = if let Some((a, rest)) = spec.split_once("..") {
        let (b, step) = match rest.split_once(':') {
            Some((b, s)) => (num(b)?, num(s)?),
            None => (num(rest)?, 8),
        };
        let a = num(a)?;
        if step == 0 || b < a {
            return Err(bad("the range must be increasing with a positive step"));
        }
        (a..=b).step_by(step).collect::<Vec<_>>()
    } else {
        spec.split(',').map(num).collect::<Result<Vec<_>>>()?
    };
    ks.sort_unstable();
    ks.dedup();
    if ks.is_empty() || ks[0] == 0 {
        return Err(bad("k must be ≥ 1"));
    }
    Ok(ks)
}

/// One evaluated (k, budget).
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub order: usize,
    pub k: usize,
    pub rung: usize,
    /// Fraction of the training epochs / NNMF iterations used (1 = full).
    pub budget: f64,
    pub objective: f64,
}

/// Settings of one optimisation.
#[derive(Clone, Debug)]
pub struct OptimizeOptions {
    pub ks: Vec<usize>,
    pub objective: Objective,
    pub search: Search,
    pub overrides: Vec<String>,
    pub out: PathBuf,
    pub threads: usize,
    /// Run the chosen k on the test split afterwards (Table 2).
    pub final_run: bool,
}

/// Trace, choice, and the final test run's folder.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub trace: Vec<Evaluation>,
    pub chosen_k: usize,
    pub chosen_objective: f64,
    pub final_dir: Option<PathBuf>,
}

struct Evaluator<'a> {
    job: &'a Path,
    base: JobConfig,
    opts: &'a OptimizeOptions,
    cache: StageCache,
    trace: Vec<Evaluation>,
    memo: BTreeMap<(usize, u64), f64>,
}

impl Evaluator<'_> {
    /// Overrides that make a validation run of rank k at `budget`.
    fn overrides(&self, k: usize, budget: f64) -> Vec<String> {
        let mut ov = self.opts.overrides.clone();
        let obj_eps = self.opts.objective.eps();
        // Keep the job's smaller budgets too: the attack warm-starts across ascending ε.
        let max_e = obj_eps.last().copied().unwrap_or(0.0);
        let mut eps: Vec<f64> = self
            .base
            .attack
            .eps
            .iter()
            .copied()
            .filter(|&e| e <= max_e)
            .collect();
        eps.extend(obj_eps);
        eps.sort_by(f64::total_cmp);
        eps.dedup();
        if eps.is_empty() {
            eps.push(0.0);
        }
        let eps: Vec<String> = eps.iter().map(|e| format!("{e:?}")).collect();
        ov.push(format!("attack.eps=[{}]", eps.join(",")));
        ov.push(format!(
            "attack.protocols=[{}]",
            self.opts
                .objective
                .protocols()
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(",")
        ));
        ov.push(format!("nnmf.k={k}"));
        ov.push("eval_split=val".into());
        // The attack-strength checks only add report lines (they never change a row, and
        // hence the objective); candidates skip them.
        ov.push("attack.checks.enabled=false".into());
        if budget < 1.0 {
            let c = &self.base;
            let scale = |n: usize| ((n as f64 * budget).ceil() as usize).max(1);
            ov.push(format!("nnmf.max_iter={}", scale(c.nnmf.max_iter)));
            ov.push(format!("cnn.epochs={}", scale(c.cnn.epochs)));
            ov.push(format!("classifier.epochs={}", scale(c.classifier.epochs)));
            ov.push(format!("diffusion.epochs={}", scale(c.diffusion.epochs)));
        }
        ov
    }

    fn eval(&mut self, k: usize, budget: f64, rung: usize) -> Result<f64> {
        if let Some(&v) = self.memo.get(&(k, budget.to_bits())) {
            return Ok(v);
        }
        let job = load_job(self.job, &self.overrides(k, budget))?;
        let name = if budget < 1.0 {
            format!("k{k}_b{budget:.4}")
        } else {
            format!("k{k}")
        };
        let run = RunOptions {
            out: Some(self.opts.out.join("search").join(name)),
            threads: self.opts.threads,
            checkpoint: None,
        };
        let (res, _) = run_job_cached(&job, &run, Some(&self.cache))?;
        let v = self.opts.objective.value(&res.scenarios)?;
        log(format!(
            "optimize-rank: k = {k} (budget {budget:.3}): validation objective {v:.5}"
        ));
        self.memo.insert((k, budget.to_bits()), v);
        self.trace.push(Evaluation {
            order: self.trace.len(),
            k,
            rung,
            budget,
            objective: v,
        });
        Ok(v)
    }
}

/// Evaluation callback of the searches: `(k, budget, rung) → objective`.
pub type EvalFn<'a> = dyn FnMut(usize, f64, usize) -> Result<f64> + 'a;

/// Golden-section search over the candidate index (see the module docs).
pub fn golden(ev: &mut EvalFn, ks: &[usize]) -> Result<()> {
    let mut memo: BTreeMap<usize, f64> = BTreeMap::new();
    let mut f = |i: usize| -> Result<f64> {
        if let Some(&v) = memo.get(&i) {
            return Ok(v);
        }
        let v = ev(ks[i], 1.0, 0)?;
        memo.insert(i, v);
        Ok(v)
    };
    let (mut lo, mut hi) = (0usize, ks.len() - 1);
    while hi - lo > 2 {
        let span = (hi - lo) as f64;
        let m1 = lo + (0.381_966 * span).round() as usize;
        let mut m2 = lo + (0.618_034 * span).round() as usize;
        if m2 <= m1 {
            m2 = m1 + 1;
        }
        let (f1, f2) = (f(m1)?, f(m2)?);
        if f1 < f2 {
            lo = m1;
        } else {
            hi = m2;
        }
    }
    for i in lo..=hi {
        f(i)?;
    }
    Ok(())
}

/// Successive halving with η = 3 over training budgets (see the module docs).
pub fn halving(ev: &mut EvalFn, ks: &[usize]) -> Result<()> {
    const ETA: usize = 3;
    let mut rungs = 0;
    while ks.len() / ETA.pow(rungs as u32 + 1) >= 1 {
        rungs += 1;
    }
    let mut alive: Vec<usize> = ks.to_vec();
    for r in 0..=rungs {
        let budget = (ETA as f64).powi(r as i32 - rungs as i32);
        let mut scored = vec![];
        for &k in &alive {
            scored.push((ev(k, budget, r)?, k));
        }
        // Best first; ties prefer the smaller k.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let keep = alive.len().div_ceil(ETA).max(1);
        alive = scored.into_iter().take(keep).map(|s| s.1).collect();
        alive.sort_unstable();
    }
    Ok(())
}

/// Choose k on validation data, write `optimize.h5` / `optimize.csv`, then (optionally) run
/// the chosen k on the test split and write `table2.md`.
pub fn optimize(job_path: &Path, opts: &OptimizeOptions) -> Result<Outcome> {
    let base = load_job(job_path, &opts.overrides)?.config;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let mut ev = Evaluator {
        job: job_path,
        base,
        opts,
        cache: StageCache::new(opts.out.join("cache")),
        trace: vec![],
        memo: BTreeMap::new(),
    };
    {
        let mut f = |k: usize, b: f64, r: usize| ev.eval(k, b, r);
        match opts.search {
            Search::Grid => {
                for &k in &opts.ks {
                    f(k, 1.0, 0)?;
                }
            }
            Search::Golden => golden(&mut f, &opts.ks)?,
            Search::Halving => halving(&mut f, &opts.ks)?,
        }
    }
    let best = ev
        .trace
        .iter()
        .filter(|e| e.budget >= 1.0)
        .min_by(|a, b| b.objective.total_cmp(&a.objective).then(a.k.cmp(&b.k)))
        .cloned()
        .expect("every search evaluates at least one candidate at the full budget");
    log(format!(
        "optimize-rank: chose k = {} (validation objective {} = {:.5}) after {} fits",
        best.k,
        opts.objective.spec,
        best.objective,
        ev.trace.len()
    ));
    let mut outcome = Outcome {
        trace: ev.trace.clone(),
        chosen_k: best.k,
        chosen_objective: best.objective,
        final_dir: None,
    };
    write_trace(opts, &outcome)?;
    super::optimize_out::objective_plot(opts, &outcome)?;
    if opts.final_run {
        let mut ov = opts.overrides.clone();
        ov.push(format!("nnmf.k={}", best.k));
        ov.push("eval_split=test".into());
        let job = load_job(job_path, &ov)?;
        let dir = opts.out.join(paths::OPTIMIZE_FINAL);
        let run = RunOptions {
            out: Some(dir.clone()),
            threads: opts.threads,
            checkpoint: None,
        };
        let (res, _) = run_job_cached(&job, &run, Some(&ev.cache))?;
        let md = super::optimize_out::table2_md(opts, &outcome, &res);
        write_atomic(&opts.out.join(paths::TABLE2_MD), md.as_bytes())?;
        outcome.final_dir = Some(dir);
    }
    Ok(outcome)
}

/// `optimize.csv` and `optimize.h5` (search trace and choice).
fn write_trace(opts: &OptimizeOptions, o: &Outcome) -> Result<()> {
    let mut csv = String::from("order,k,rung,budget,objective\n");
    for e in &o.trace {
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            e.order, e.k, e.rung, e.budget, e.objective
        ));
    }
    write_atomic(&opts.out.join(paths::OPTIMIZE_CSV), csv.as_bytes())?;
    let path = opts.out.join(paths::OPTIMIZE_H5);
    let s = |v: &str| -> VarLenUnicode { v.replace('\0', " ").parse().expect("no NUL") };
    // Built in memory and written atomically (a full disk is an error, never a crash).
    let inner = |f: &hdf5::File| -> hdf5::Result<()> {
        f.new_attr::<u64>()
            .create("chosen_k")?
            .write_scalar(&(o.chosen_k as u64))?;
        f.new_attr::<f64>()
            .create("chosen_objective")?
            .write_scalar(&o.chosen_objective)?;
        f.new_attr::<VarLenUnicode>()
            .create("objective")?
            .write_scalar(&s(&opts.objective.spec))?;
        f.new_attr::<VarLenUnicode>()
            .create("search")?
            .write_scalar(&s(opts.search.name()))?;
        f.new_attr::<VarLenUnicode>()
            .create("eval_split")?
            .write_scalar(&s("val"))?;
        f.new_attr::<VarLenUnicode>()
            .create("overrides")?
            .write_scalar(&s(&opts.overrides.join(" ")))?;
        let ks: Array1<u64> = opts.ks.iter().map(|&k| k as u64).collect();
        f.new_dataset_builder()
            .with_data(&ks)
            .create("candidates")?;
        let g = f.create_group("trace")?;
        let col_u = |name: &str, v: Array1<u64>| {
            g.new_dataset_builder()
                .with_data(&v)
                .create(name)
                .map(|_| ())
        };
        col_u("order", o.trace.iter().map(|e| e.order as u64).collect())?;
        col_u("k", o.trace.iter().map(|e| e.k as u64).collect())?;
        col_u("rung", o.trace.iter().map(|e| e.rung as u64).collect())?;
        let col_f = |name: &str, v: Array1<f64>| {
            g.new_dataset_builder()
                .with_data(&v)
                .create(name)
                .map(|_| ())
        };
        col_f("budget", o.trace.iter().map(|e| e.budget).collect())?;
        col_f("objective", o.trace.iter().map(|e| e.objective).collect())?;
        Ok(())
    };
    h5::write_file(&path, inner)
}

/// Read `optimize.h5`: (chosen k, objective spec, trace).
pub fn read_trace(dir: &Path) -> Result<(usize, String, Vec<Evaluation>)> {
    let path = dir.join(paths::OPTIMIZE_H5);
    let inner = || -> hdf5::Result<(usize, String, Vec<Evaluation>)> {
        let f = h5::open_file(&path)?;
        let k = f.attr("chosen_k")?.read_scalar::<u64>()? as usize;
        let obj = f
            .attr("objective")?
            .read_scalar::<VarLenUnicode>()?
            .to_string();
        let g = f.group("trace")?;
        let u = |n: &str| g.dataset(n).and_then(|d| d.read_1d::<u64>());
        let x = |n: &str| g.dataset(n).and_then(|d| d.read_1d::<f64>());
        let (order, ks, rung, budget, objective) = (
            u("order")?,
            u("k")?,
            u("rung")?,
            x("budget")?,
            x("objective")?,
        );
        let trace = (0..ks.len())
            .map(|i| Evaluation {
                order: order[i] as usize,
                k: ks[i] as usize,
                rung: rung[i] as usize,
                budget: budget[i],
                objective: objective[i],
            })
            .collect();
        Ok((k, obj, trace))
    };
    inner().map_err(|e| Error::Results {
        path: path.clone(),
        msg: format!(
            "hdf5: {e}; run `diffnmf optimize-rank … --out {}` first",
            dir.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_ranges_and_lists() {
        assert_eq!(parse_k("8..32").unwrap(), vec![8, 16, 24, 32]);
        assert_eq!(parse_k("8..40:16").unwrap(), vec![8, 24, 40]);
        assert_eq!(parse_k("32,8,16,8").unwrap(), vec![8, 16, 32]);
        for b in ["0,8", "16..8", "8..32:0", "a,b", ""] {
            assert!(parse_k(b).is_err(), "{b}");
        }
    }

    /// Runs a search on a synthetic curve; returns (evaluations, best k at full budget).
    fn run(
        search: fn(&mut EvalFn, &[usize]) -> Result<()>,
        ks: &[usize],
        f: impl Fn(usize, f64) -> f64,
    ) -> (Vec<(usize, f64)>, usize) {
        let mut seen = vec![];
        let mut ev = |k: usize, b: f64, _r: usize| {
            seen.push((k, b));
            Ok(f(k, b))
        };
        search(&mut ev, ks).unwrap();
        let best = seen
            .iter()
            .filter(|e| e.1 >= 1.0)
            .max_by(|a, b| f(a.0, a.1).total_cmp(&f(b.0, b.1)).then(b.0.cmp(&a.0)))
            .unwrap()
            .0;
        (seen, best)
    }

    #[test]
    fn golden_finds_the_peak_of_unimodal_curves_with_fewer_fits() {
        let ks = parse_k("8..128").unwrap();
        for peak in [8.0, 20.0, 47.0, 64.0, 100.0, 128.0] {
            let f = |k: usize, _b: f64| -((k as f64 - peak).powi(2));
            let (seen, best) = run(golden, &ks, f);
            let want = *ks
                .iter()
                .min_by(|a, b| f(**b, 1.0).total_cmp(&f(**a, 1.0)).then(a.cmp(b)))
                .unwrap();
            assert_eq!(best, want, "peak {peak}: evaluated {seen:?}");
            assert!(
                seen.len() <= 9 && seen.len() < ks.len(),
                "{} fits for {} candidates",
                seen.len(),
                ks.len()
            );
        }
    }

    #[test]
    fn halving_keeps_the_best_third_and_ends_at_full_budget() {
        let ks = parse_k("8..72").unwrap(); // 9 candidates → budgets 1/9, 1/3, 1
                                            // Noisy at low budget but the order of the top candidates is kept.
        let f = |k: usize, b: f64| -((k as f64 - 40.0).abs()) * b.sqrt();
        let (seen, best) = run(halving, &ks, f);
        assert_eq!(best, 40);
        let at = |b: f64| seen.iter().filter(|e| (e.1 - b).abs() < 1e-12).count();
        assert_eq!(
            (at(1.0 / 9.0), at(1.0 / 3.0), at(1.0)),
            (9, 3, 1),
            "{seen:?}"
        );
    }
}
