//! Per-ε evaluation checkpoints: after every finished ε the evaluation's whole carried
//! state (the result rows so far, the four worst-case trackers carried across ε, the check
//! records, the timings of the finished ε) is written atomically to one file (sweep cells:
//! `cells/<id>/checkpoint.h5`). A restarted cell — requeued by Slurm after SIGUSR2, or
//! resumed after a kill — reloads it and continues at the next ε; the random streams are
//! keyed by (seed, ε index), so the continued run is bit-identical to an uninterrupted one
//! (tested in `tests/reliability.rs`).
//!
//! A checkpoint is used only when its fingerprint matches: the SHA-256 of the build (git
//! revision, version), the job's configuration and of the clean base and defended probabilities (which depend on every
//! trained model and on the scoring keys). Anything else — another config, retrained
//! models, an unreadable file — is logged and ignored (the evaluation starts at the first ε).

use super::worst::Worst;
use crate::cache::{load_store, save_store, Store};
use crate::config::JobConfig;
use crate::error::Result;
use crate::metrics;
use crate::results::{Check, ScenarioResult, Timing};
use ndarray::{Array2, Array3};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The evaluation state after the ε at index `next - 1` finished.
#[derive(Clone, Debug)]
pub struct EvalState {
    pub next: usize,
    pub first_pos: bool,
    pub rows: Vec<ScenarioResult>,
    /// Carried trackers: base, transfer, adaptive, worst.
    pub trackers: [Worst; 4],
    pub check_lines: Vec<Check>,
    pub masked: Vec<(f64, usize, usize)>,
    /// `certify.enabled`: PREDICT on each finished ε's worst-case examples.
    pub smoothed: Vec<crate::certify::curve::SmoothedAtEps>,
    /// Timings of the finished ε stages.
    pub timings: Vec<Timing>,
}

/// Fingerprint of (configuration, clean base probabilities, clean defended probabilities).
pub fn fingerprint(cfg: &JobConfig, clean: &[&[Array2<f64>]]) -> String {
    let mut h = Sha256::new();
    // The build too: another diffnmf version may compute the remaining ε differently.
    h.update(super::git_revision().as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(serde_yaml_ng::to_string(cfg).unwrap_or_default().as_bytes());
    for set in clean {
        for p in set.iter() {
            h.update((p.nrows() as u64).to_le_bytes());
            h.update((p.ncols() as u64).to_le_bytes());
            for v in p.iter() {
                h.update(v.to_le_bytes());
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

const TRACKERS: [&str; 4] = ["base", "transfer", "adaptive", "worst"];

fn put_worst(st: &mut Store, name: &str, w: &Worst) {
    let (n, k) = w.proba[0].dim();
    st.vectors.insert(
        format!("{name}.shape"),
        vec![w.proba.len() as f64, n as f64, k as f64],
    );
    st.vectors.insert(
        format!("{name}.proba"),
        w.proba.iter().flat_map(|p| p.iter().copied()).collect(),
    );
    st.arrays
        .insert(format!("{name}.x"), w.x.as_standard_layout().into_owned());
    st.vectors.insert(
        format!("{name}.offered"),
        w.offered.iter().map(|&o| f64::from(o)).collect(),
    );
}

fn get_worst(st: &Store, name: &str, y: &[usize]) -> Result<Worst> {
    let sh = st.vector(&format!("{name}.shape"))?;
    let (r, n, k) = (sh[0] as usize, sh[1] as usize, sh[2] as usize);
    let flat = st.vector(&format!("{name}.proba"))?.clone();
    let p = Array3::from_shape_vec((r, n, k), flat).map_err(|e| bad(&e.to_string()))?;
    let proba = p.outer_iter().map(|a| a.to_owned()).collect();
    let offered = st
        .vector(&format!("{name}.offered"))?
        .iter()
        .map(|&o| o as u32)
        .collect();
    Worst::from_parts(y, proba, st.array(&format!("{name}.x"))?.clone(), offered)
        .ok_or_else(|| bad("tracker shapes do not match the test set"))
}

fn bad(msg: &str) -> crate::error::Error {
    crate::error::Error::Results {
        path: "<checkpoint>".into(),
        msg: msg.into(),
    }
}

/// Write `s` (atomically) with its fingerprint.
pub fn save(path: &Path, fp: &str, s: &EvalState) -> Result<()> {
    let mut st = Store::default();
    st.strings.insert("fingerprint".into(), fp.into());
    st.vectors.insert(
        "meta".into(),
        vec![s.next as f64, f64::from(u8::from(s.first_pos))],
    );
    for (i, r) in s.rows.iter().enumerate() {
        let p = format!("row{i:03}");
        st.strings
            .insert(format!("{p}.scenario"), r.scenario.as_str().into());
        st.strings
            .insert(format!("{p}.protocol"), r.protocol.as_str().into());
        st.arrays.insert(
            format!("{p}.proba"),
            r.proba.as_standard_layout().into_owned(),
        );
        st.vectors.insert(
            format!("{p}.num"),
            vec![
                r.eps,
                r.strict_accuracy,
                r.fresh_accuracy,
                r.grad_evals as f64,
            ],
        );
        st.vectors
            .insert(format!("{p}.single"), r.single_pass_accuracy.clone());
        st.vectors
            .insert(format!("{p}.repeat"), r.repeat_accuracy.clone());
        let names: Vec<&str> = r.fooled_by.iter().map(|f| f.0.as_str()).collect();
        st.strings
            .insert(format!("{p}.fooled_names"), names.join("\n"));
        st.vectors.insert(
            format!("{p}.fooled_counts"),
            r.fooled_by.iter().map(|f| f.1 as f64).collect(),
        );
    }
    for (name, w) in TRACKERS.iter().zip(&s.trackers) {
        put_worst(&mut st, name, w);
    }
    for (i, c) in s.check_lines.iter().enumerate() {
        st.strings
            .insert(format!("check{i:03}.name"), c.name.clone());
        st.strings
            .insert(format!("check{i:03}.detail"), c.detail.clone());
        st.vectors.insert(
            format!("check{i:03}.pass"),
            vec![f64::from(u8::from(c.passed))],
        );
    }
    st.vectors.insert(
        "masked".into(),
        s.masked
            .iter()
            .flat_map(|m| [m.0, m.1 as f64, m.2 as f64])
            .collect(),
    );
    super::certified::save(&mut st, &s.smoothed);
    let names: Vec<&str> = s.timings.iter().map(|t| t.stage.as_str()).collect();
    st.strings.insert("timings.names".into(), names.join("\n"));
    st.vectors.insert(
        "timings.seconds".into(),
        s.timings.iter().map(|t| t.seconds).collect(),
    );
    save_store(path, &st)
}

/// Load the checkpoint at `path` if it exists and matches `fp`; `y` are the test labels.
pub fn load(path: &Path, fp: &str, y: &[usize]) -> Option<EvalState> {
    if !path.exists() {
        return None;
    }
    let res = load_store(path).and_then(|st| {
        if st.string("fingerprint")? != fp {
            return Ok(None);
        }
        parse(&st, y).map(Some)
    });
    match res {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            crate::progress::warn(format!(
                "[checkpoint] {} belongs to another configuration or other models; starting the evaluation afresh",
                path.display()
            ));
            None
        }
        Err(e) => {
            crate::progress::warn(format!(
                "[checkpoint] {} is unreadable ({e}); starting the evaluation afresh",
                path.display()
            ));
            None
        }
    }
}

fn parse(st: &Store, y: &[usize]) -> Result<EvalState> {
    let meta = st.vector("meta")?;
    if meta.len() != 2 {
        return Err(bad("the header is incomplete"));
    }
    let mut rows = vec![];
    for i in 0.. {
        let p = format!("row{i:03}");
        if st.string(&format!("{p}.scenario")).is_err() {
            break;
        }
        rows.push(parse_row(st, &p, y)?);
    }
    let trackers = [
        get_worst(st, TRACKERS[0], y)?,
        get_worst(st, TRACKERS[1], y)?,
        get_worst(st, TRACKERS[2], y)?,
        get_worst(st, TRACKERS[3], y)?,
    ];
    let mut check_lines = vec![];
    for i in 0.. {
        let Ok(name) = st.string(&format!("check{i:03}.name")) else {
            break;
        };
        check_lines.push(Check::new(
            name.clone(),
            st.vector(&format!("check{i:03}.pass"))?.first() == Some(&1.0),
            st.string(&format!("check{i:03}.detail"))?.clone(),
        ));
    }
    let masked = st
        .vector("masked")?
        .chunks_exact(3)
        .map(|c| (c[0], c[1] as usize, c[2] as usize))
        .collect();
    Ok(EvalState {
        next: meta[0] as usize,
        first_pos: meta[1] > 0.5,
        rows,
        trackers,
        check_lines,
        masked,
        smoothed: super::certified::load(st)?,
        timings: parse_timings(st)?,
    })
}

/// The result row stored under the prefix `p` (`row007`).
fn parse_row(st: &Store, p: &str, y: &[usize]) -> Result<ScenarioResult> {
    let scenario = st
        .string(&format!("{p}.scenario"))?
        .parse()
        .map_err(|e| bad(&format!("{e}")))?;
    let protocol = st
        .string(&format!("{p}.protocol"))?
        .parse()
        .map_err(|e| bad(&format!("{e}")))?;
    let proba = st.array(&format!("{p}.proba"))?.clone();
    let num = st.vector(&format!("{p}.num"))?;
    if num.len() != 4 {
        return Err(bad("a row's numbers are incomplete"));
    }
    let names = st.string(&format!("{p}.fooled_names"))?;
    let counts = st.vector(&format!("{p}.fooled_counts"))?;
    let names: Vec<&str> = if names.is_empty() {
        vec![]
    } else {
        names.split('\n').collect()
    };
    Ok(ScenarioResult {
        scenario,
        protocol,
        eps: num[0],
        // As `evaluate::row` computes them: on the stored f32 probabilities.
        metrics: metrics::compute(y, proba.mapv(f64::from).view()),
        proba,
        single_pass_accuracy: st.vector(&format!("{p}.single"))?.clone(),
        repeat_accuracy: st.vector(&format!("{p}.repeat"))?.clone(),
        strict_accuracy: num[1],
        fresh_accuracy: num[2],
        grad_evals: num[3] as u64,
        fooled_by: names
            .iter()
            .zip(counts)
            .map(|(n, &c)| (n.to_string(), c as usize))
            .collect(),
    })
}

/// The timings of the finished ε values.
fn parse_timings(st: &Store) -> Result<Vec<Timing>> {
    let tn = st.string("timings.names")?;
    let ts = st.vector("timings.seconds")?;
    if tn.is_empty() {
        return Ok(vec![]);
    }
    Ok(tn
        .split('\n')
        .zip(ts)
        .map(|(stage, &seconds)| Timing {
            stage: stage.to_string(),
            seconds,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::worst::Scored;
    use crate::results::{Protocol, Scenario};
    use ndarray::array;

    #[test]
    fn round_trips_and_ignores_a_foreign_fingerprint() {
        let y = [0usize, 1];
        let x = array![[0.5f32, 1.0], [2.0, 3.0]];
        let rows = [0usize, 1];
        let p = array![[0.75, 0.25], [0.125, 0.875]];
        let w = Worst::new(
            &y,
            &Scored {
                rows: &rows,
                // A transposed (column-major) view: stored trackers may be non-standard.
                x: x.t(),
                proba: vec![p.clone(), p.clone()],
            },
        );
        let r = ScenarioResult {
            scenario: Scenario::RobustDef,
            protocol: Protocol::Worst,
            eps: 0.5,
            metrics: metrics::compute(&y, p.view()),
            proba: p.mapv(|v| v as f32),
            single_pass_accuracy: vec![],
            repeat_accuracy: vec![1.0, 0.5],
            strict_accuracy: 0.5,
            fresh_accuracy: f64::NAN,
            grad_evals: 123_456_789,
            fooled_by: vec![("apgd-ce".into(), 3), ("apgd-dlr".into(), 0)],
        };
        let st = EvalState {
            next: 2,
            first_pos: false,
            rows: vec![r],
            trackers: [w.clone(), w.clone(), w.clone(), w],
            check_lines: vec![Check::new("convergence", true, "ok at ε 0.5")],
            masked: vec![(0.5, 3, 2)],
            smoothed: vec![crate::certify::curve::SmoothedAtEps {
                eps: 0.5,
                pred: vec![Some(1), None],
                checked: 1,
                violations: vec![987_654_321],
            }],
            timings: vec![Timing {
                stage: "attack_base_eps0.5".into(),
                seconds: 1.25,
            }],
        };
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("checkpoint.h5");
        save(&path, "fp-a", &st).unwrap();
        let back = load(&path, "fp-a", &y).expect("matching fingerprint loads");
        assert_eq!((back.next, back.first_pos), (2, false));
        let (a, b) = (&st.rows[0], &back.rows[0]);
        assert_eq!(
            (b.scenario, b.protocol, b.eps),
            (Scenario::RobustDef, Protocol::Worst, 0.5)
        );
        assert_eq!(a.proba, b.proba);
        assert_eq!(a.grad_evals, b.grad_evals);
        assert_eq!(a.fooled_by, b.fooled_by);
        assert_eq!(a.repeat_accuracy, b.repeat_accuracy);
        assert!(b.fresh_accuracy.is_nan());
        assert_eq!(a.metrics.values(), b.metrics.values());
        assert_eq!(back.trackers[3].proba, st.trackers[3].proba);
        assert_eq!(back.trackers[3].x, st.trackers[3].x);
        assert_eq!(back.trackers[3].offered, st.trackers[3].offered);
        assert_eq!(back.check_lines, st.check_lines);
        assert_eq!(back.masked, st.masked);
        assert_eq!(back.smoothed, st.smoothed);
        assert_eq!(back.timings, st.timings);
        assert!(
            load(&path, "fp-b", &y).is_none(),
            "another config or other models"
        );
        std::fs::write(&path, b"not hdf5").unwrap();
        assert!(
            load(&path, "fp-a", &y).is_none(),
            "unreadable → start afresh"
        );
    }
}
