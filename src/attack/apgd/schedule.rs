//! APGD checkpoint schedule (`docs/apgd.md` §3) and the per-sample step-size decision taken at a
//! checkpoint (§4.4), as pure functions shared by the attack loop and the tests.

/// Interval lengths of the checkpoint schedule for `n_iter` iterations, computed with the
/// reference's truncating `int(c · N)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// First interval `max(⌊0.22 N⌋, 1)`.
    pub first: usize,
    /// Minimal interval `max(⌊0.06 N⌋, 1)`.
    pub min: usize,
    /// Interval decrement `max(⌊0.03 N⌋, 1)`.
    pub decr: usize,
}

impl Schedule {
    pub fn new(n_iter: usize) -> Self {
        let f = |c: f64| ((c * n_iter as f64) as usize).max(1);
        Schedule {
            first: f(0.22),
            min: f(0.06),
            decr: f(0.03),
        }
    }

    /// The interval that follows one of length `k`.
    pub fn next(&self, k: usize) -> usize {
        k.saturating_sub(self.decr).max(self.min)
    }
}

/// Checkpoints as "number of iterations completed" (the §3 table).
pub fn checkpoints(n_iter: usize) -> Vec<usize> {
    let s = Schedule::new(n_iter);
    let (mut k, mut counter, mut out) = (s.first, 0, Vec::new());
    for i in 0..n_iter {
        counter += 1;
        if counter == k {
            out.push(i + 1);
            counter = 0;
            k = s.next(k);
        }
    }
    out
}

/// Whether a sample's step size is halved at the checkpoint after iteration `i` (0-based)
/// with interval length `k`.
///
/// `hist` is the sample's loss history (length `N`, slot `m` = loss of `x^(m+1)`, unfilled
/// slots 0). Condition 1: at most `rho·k` of the last `k` steps increased the loss
/// (`≤`, Q2), where an index `−1` wraps to `hist[N−1]` like Python (Q3). Condition 2:
/// the step was not halved at the previous checkpoint and the best loss did not improve
/// since (`l_best_last ≥ l_best`, Q9).
pub fn halve_step(
    hist: &[f32],
    i: usize,
    k: usize,
    rho: f32,
    l_best: f32,
    l_best_last: f32,
    reduced_last: bool,
) -> bool {
    let n = hist.len() as isize;
    let at = |j: isize| hist[j.rem_euclid(n) as usize];
    let i = i as isize;
    let increases = (0..k as isize)
        .filter(|&s| at(i - s) > at(i - s - 1))
        .count();
    let cond1 = increases as f64 <= k as f64 * rho as f64;
    let cond2 = !reduced_last && l_best_last >= l_best;
    cond1 || cond2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_table_of_the_spec() {
        let mut n20: Vec<usize> = vec![4, 7, 9];
        n20.extend(10..=20);
        let cases: [(usize, Vec<usize>); 6] = [
            (10, (2..=10).collect()),
            (20, n20),
            (50, vec![11, 21, 30, 38, 45]),
            (100, vec![22, 41, 57, 70, 80, 87, 93, 99]),
            (200, vec![44, 82, 114, 140, 160, 174, 186, 198]),
            (1000, vec![220, 410, 570, 700, 800, 870, 930, 990]),
        ];
        for (n, want) in cases {
            assert_eq!(checkpoints(n), want, "N = {n}");
        }
        assert_eq!(
            Schedule::new(100),
            Schedule {
                first: 22,
                min: 6,
                decr: 3
            }
        );
        assert_eq!(checkpoints(1), vec![1]);
    }

    /// Drive the bookkeeping of §4.3/§4.4 for one sample over a synthetic loss sequence
    /// (`seq[m]` = loss of `x^(m+1)`, `l0` = loss of the start) and return, for each
    /// checkpoint, whether the step was halved. No restore is simulated (the sequence is
    /// given), which is exactly what the decision function sees.
    fn simulate(l0: f32, seq: &[f32]) -> Vec<bool> {
        let n = seq.len();
        let s = Schedule::new(n);
        let mut hist = vec![0.0f32; n];
        let (mut l_best, mut l_last, mut red_last) = (l0, l0, true);
        let (mut k, mut counter, mut out) = (s.first, 0, vec![]);
        for (i, &l) in seq.iter().enumerate() {
            hist[i] = l;
            if l > l_best {
                l_best = l;
            }
            counter += 1;
            if counter == k {
                let fl = halve_step(&hist, i, k, 0.75, l_best, l_last, red_last);
                red_last = fl;
                l_last = l_best;
                out.push(fl);
                counter = 0;
                k = s.next(k);
            }
        }
        out
    }

    #[test]
    fn decreasing_or_flat_loss_halves_at_first_checkpoint() {
        let dec: Vec<f32> = (0..100).map(|i| 10.0 - 0.05 * i as f32).collect();
        assert!(simulate(10.5, &dec)[0]);
        let flat = vec![3.0f32; 100];
        assert!(simulate(3.0, &flat)[0]);
        // DLR-like negative flat loss: the wrapped comparison with 0 is no increase either.
        assert!(simulate(-0.5, &vec![-0.5f32; 100])[0]);
    }

    #[test]
    fn sawtooth_below_start_best_triggers_condition_two_at_second() {
        // Period 5: four increases then one drop (80 % increases), always below l0 = 10.
        let saw: Vec<f32> = (0..100).map(|i| 1.0 + (i % 5) as f32).collect();
        let fl = simulate(10.0, &saw);
        assert!(!fl[0], "no halving at the first checkpoint");
        assert!(fl[1], "condition 2 at the second checkpoint");
        // Condition 2 alone alternates: after a halving it is disabled once.
        assert!(!fl[2]);
    }

    #[test]
    fn improving_sawtooth_never_halves() {
        // Increases 90 % of the time and keeps beating the best: neither condition holds.
        let up: Vec<f32> = (0..100)
            .map(|i| 0.1 * (i + 1) as f32 - if i % 10 == 9 { 0.25 } else { 0.0 })
            .collect();
        assert!(simulate(-1.0, &up).iter().all(|&f| !f));
    }

    #[test]
    fn condition_one_boundary_is_inclusive() {
        // k = 4, rho = 0.75: exactly 3 increases (= 0.75 k) still halves (Q2).
        // (hist[0] = 0 is compared with the wrapped, unfilled hist[7] = 0: no increase.)
        let hist = [0.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
        assert!(halve_step(&hist, 3, 4, 0.75, 9.0, 0.0, true));
        // 4 increases: no halving.
        let hist = [1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
        assert!(!halve_step(&hist, 3, 4, 0.75, 9.0, 0.0, true));
    }
}
