//! Descriptive statistics across seeds and Student-t quantiles (for 95 % confidence
//! intervals), implemented from the regularised incomplete beta function.

use crate::special::inc_beta;

/// n, mean, sample standard deviation, 95 % CI half-width (Student t, n − 1 dof), min, max.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (divisor n − 1); NaN when n < 2.
    pub std: f64,
    /// Half-width of the 95 % confidence interval of the mean; NaN when n < 2.
    pub ci95: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// Statistics of `v` (must not be empty).
    pub fn of(v: &[f64]) -> Stats {
        let n = v.len();
        assert!(n > 0, "Stats::of needs at least one value");
        let mean = v.iter().sum::<f64>() / n as f64;
        let (std, ci95) = if n >= 2 {
            let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
            let sd = (ss / (n - 1) as f64).sqrt();
            (
                sd,
                t_quantile(0.975, (n - 1) as f64) * sd / (n as f64).sqrt(),
            )
        } else {
            (f64::NAN, f64::NAN)
        };
        Stats {
            n,
            mean,
            std,
            ci95,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// CDF of Student's t distribution with `dof` degrees of freedom.
pub fn t_cdf(t: f64, dof: f64) -> f64 {
    let tail = 0.5 * inc_beta(dof / 2.0, 0.5, dof / (dof + t * t));
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// Quantile of Student's t distribution: the `t` with `t_cdf(t, dof) = p`, for p in (0, 1).
/// Found by bracketing and bisection on the CDF (to ~1e-12 relative).
pub fn t_quantile(p: f64, dof: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0 && dof > 0.0, "t_quantile({p}, {dof})");
    if p < 0.5 {
        return -t_quantile(1.0 - p, dof);
    }
    if p == 0.5 {
        return 0.0;
    }
    let mut hi = 1.0;
    while t_cdf(hi, dof) < p {
        hi *= 2.0;
        if hi > 1e12 {
            return f64::INFINITY;
        }
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, dof) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::special::ln_gamma;

    #[test]
    fn t_quantiles_match_published_tables() {
        // Two-sided 95 % (p = 0.975) and 99 % (p = 0.995) critical values from standard tables.
        for (p, dof, want) in [
            (0.975, 1.0, 12.706_204_736),
            (0.975, 2.0, 4.302_652_730),
            (0.975, 3.0, 3.182_446_305),
            (0.975, 4.0, 2.776_445_105),
            (0.975, 5.0, 2.570_581_836),
            (0.975, 10.0, 2.228_138_852),
            (0.975, 30.0, 2.042_272_456),
            (0.975, 100.0, 1.983_971_519),
            (0.995, 3.0, 5.840_909_310),
            (0.95, 9.0, 1.833_112_933),
            (0.975, 1e7, 1.959_963_985),
        ] {
            let got = t_quantile(p, dof);
            assert!(
                (got - want).abs() < 1e-6 * want,
                "t({p}, {dof}) = {got}, want {want}"
            );
            assert!((t_cdf(got, dof) - p).abs() < 1e-10);
            assert!((t_quantile(1.0 - p, dof) + got).abs() < 1e-9);
        }
    }

    #[test]
    fn two_dof_quantile_matches_closed_form() {
        for p in [0.6f64, 0.9, 0.975, 0.995] {
            let want = (2.0 * p - 1.0) * (2.0 / (4.0 * p * (1.0 - p))).sqrt();
            assert!((t_quantile(p, 2.0) - want).abs() < 1e-11 * want, "p = {p}");
        }
    }

    #[test]
    fn cdf_of_one_dof_is_cauchy_and_gamma_is_factorial() {
        for t in [-3.0, -0.5, 0.0, 0.7, 4.0] {
            let cauchy = 0.5 + f64::atan(t) / std::f64::consts::PI;
            assert!((t_cdf(t, 1.0) - cauchy).abs() < 1e-12, "t = {t}");
        }
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((inc_beta(2.0, 3.0, 0.4) - 0.5248).abs() < 1e-12);
    }

    #[test]
    fn stats_of_three_values() {
        let s = Stats::of(&[1.0, 2.0, 4.0]);
        assert_eq!((s.n, s.min, s.max), (3, 1.0, 4.0));
        assert!((s.mean - 7.0 / 3.0).abs() < 1e-15);
        let sd = ((1.0f64 - 7.0 / 3.0).powi(2)
            + (2.0f64 - 7.0 / 3.0).powi(2)
            + (4.0f64 - 7.0 / 3.0).powi(2))
            / 2.0;
        assert!((s.std - sd.sqrt()).abs() < 1e-14);
        assert!((s.ci95 - 4.302_652_730 * s.std / 3f64.sqrt()).abs() < 1e-8);
        let one = Stats::of(&[0.5]);
        assert!(one.std.is_nan() && one.ci95.is_nan() && one.mean == 0.5);
    }
}
