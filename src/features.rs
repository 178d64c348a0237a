//! The hybrid feature vector: CNN features ⊕ NNMF coefficients, z-scored with training
//! statistics (mean and standard deviation per column).

use ndarray::{concatenate, Array1, Array2, ArrayView2, Axis};

/// Per-column z-scoring fitted on training rows.
#[derive(Clone, Debug)]
pub struct Standardizer {
    pub mean: Array1<f32>,
    pub std: Array1<f32>,
}

impl Standardizer {
    /// Fit on `x`; constant columns get std 1 (they map to 0).
    pub fn fit(x: ArrayView2<f32>) -> Self {
        let n = x.nrows().max(1) as f64;
        let mut mean = Array1::<f32>::zeros(x.ncols());
        let mut std = Array1::<f32>::ones(x.ncols());
        for (j, col) in x.axis_iter(Axis(1)).enumerate() {
            let m = col.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = col.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
            mean[j] = m as f32;
            let s = var.sqrt();
            std[j] = if s > 1e-8 { s as f32 } else { 1.0 };
        }
        Standardizer { mean, std }
    }

    /// `(x − mean) / std`.
    pub fn transform(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let mut out = x.to_owned();
        out -= &self.mean;
        out /= &self.std;
        out
    }
}

/// Concatenate feature blocks column-wise (all must have the same number of rows).
pub fn concat(parts: &[ArrayView2<f32>]) -> Array2<f32> {
    concatenate(Axis(1), parts).expect("feature blocks have equal row counts")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn zscore_uses_training_statistics() {
        let tr = array![[1.0f32, 5.0], [3.0, 5.0]];
        let s = Standardizer::fit(tr.view());
        let z = s.transform(tr.view());
        assert!((z[[0, 0]] + 1.0).abs() < 1e-6 && (z[[1, 0]] - 1.0).abs() < 1e-6);
        assert_eq!(z[[0, 1]], 0.0); // constant column
        let te = s.transform(array![[5.0f32, 6.0]].view());
        assert!((te[[0, 0]] - 3.0).abs() < 1e-6 && (te[[0, 1]] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn concat_joins_columns() {
        let a = array![[1.0f32], [2.0]];
        let b = array![[3.0f32, 4.0], [5.0, 6.0]];
        assert_eq!(
            concat(&[a.view(), b.view()]),
            array![[1.0, 3.0, 4.0], [2.0, 5.0, 6.0]]
        );
    }
}
