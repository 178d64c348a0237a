//! The two confidence statements of randomised smoothing (Cohen, Rosenfeld & Kolter 2019):
//! the one-sided Clopper–Pearson lower bound of the top class's probability (CERTIFY) and
//! the two-sided binomial test at p = ½ between the two most frequent classes (PREDICT).
//! Both from the exact Beta/binomial relation, no normal approximation.

use crate::special::{beta_quantile, inc_beta};

/// One-sided `(1 − α)` lower confidence bound of a binomial proportion after `k` successes
/// in `n` trials (Clopper–Pearson): the α-quantile of Beta(k, n − k + 1), 0 when k = 0.
/// Cohen et al.'s `proportion_confint(k, n, alpha=2α, method="beta")[0]`.
pub fn clopper_pearson_lower(k: u64, n: u64, alpha: f64) -> f64 {
    assert!(k <= n && n > 0, "clopper_pearson_lower({k}, {n})");
    if k == 0 {
        return 0.0;
    }
    if k == n {
        // I_x(n, 1) = xⁿ: the quantile in closed form.
        return alpha.powf(1.0 / n as f64);
    }
    beta_quantile(alpha, k as f64, (n - k + 1) as f64)
}

/// P(X ≥ k) for X ~ Binomial(n, p), 1 ≤ k ≤ n: `I_p(k, n − k + 1)`.
pub fn binomial_upper_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    inc_beta(k as f64, (n - k + 1) as f64, p)
}

/// Two-sided p-value of `k` successes in `n` trials under p = ½ (SciPy's
/// `binomtest(k, n, 0.5).pvalue`): by symmetry `min(1, 2·P(X ≥ max(k, n − k)))`.
pub fn binomial_test_half(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let hi = k.max(n - k);
    if 2 * hi == n {
        return 1.0;
    }
    (2.0 * binomial_upper_tail(hi, n, 0.5)).min(1.0)
}
