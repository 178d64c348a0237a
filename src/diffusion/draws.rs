//! The defended model's evaluation contract over draws, once for every backend: points are
//! evaluated in chunks of `m` points × `draws` passes (each point's rows consecutive); per
//! point the attack sees the **last** draw's loss and logits, the prediction of the
//! probabilities averaged over all draws, and the gradient averaged over draws
//! (`docs/apgd.md` Q1). The CPU [`super::model::Defended`] and the CUDA defence run the
//! passes; this module prepares their inputs and reduces their outputs.

use super::fast::{block_mean, ChunkOut};
use super::model::softmax;
use crate::attack::{Loss, ModelEval};
use crate::metrics::argmax;
use ndarray::{s, Array1, Array2, ArrayView2, Axis};

/// The inputs of one chunk: rows `start..end` of the batch, each repeated `draws` times,
/// with their labels and (targeted losses) targets repeated alike.
pub(crate) struct DrawRows {
    pub rep: Array2<f32>,
    pub y: Vec<usize>,
    pub targets: Option<Vec<usize>>,
}

impl DrawRows {
    pub(crate) fn new(
        x: ArrayView2<f32>,
        y: &[usize],
        loss: Loss<'_>,
        rows: std::ops::Range<usize>,
        draws: usize,
    ) -> Self {
        DrawRows {
            rep: repeat_rows(x.slice(s![rows.clone(), ..]), draws),
            y: y[rows.clone()]
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c, draws))
                .collect(),
            targets: loss.targets_for(rows, draws),
        }
    }

    /// `loss` with this chunk's repeated targets.
    pub(crate) fn loss<'a>(&'a self, loss: Loss<'a>) -> Loss<'a> {
        loss.with_targets(self.targets.as_deref())
    }
}

/// Each row of `x` repeated `r` times consecutively.
pub fn repeat_rows(x: ArrayView2<f32>, r: usize) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((x.nrows() * r, x.ncols()));
    for (i, row) in x.rows().into_iter().enumerate() {
        for e in 0..r {
            out.row_mut(i * r + e).assign(&row);
        }
    }
    out
}

/// The defence's noise for points `ids` × `draws` passes: row `i·draws + e` holds
/// `noise_len` standard normals of the stream `(key, ids[i], e)`, so a point's noise does not
/// depend on the batch it is in.
pub fn noise(ids: &[u64], draws: usize, key: u64, noise_len: usize) -> Array2<f32> {
    let mut out = Vec::with_capacity(ids.len() * draws * noise_len);
    for &id in ids {
        for e in 0..draws {
            crate::normal::extend_normal_f32(&mut row_rng(key, id, e), noise_len, &mut out);
        }
    }
    Array2::from_shape_vec((ids.len() * draws, noise_len), out).expect("rows × noise_len")
}

/// [`noise`] with the rows filled in parallel (identical values), for large device chunks.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub fn noise_par(ids: &[u64], draws: usize, key: u64, noise_len: usize) -> Array2<f32> {
    use rayon::prelude::*;
    let mut out = Array2::<f32>::zeros((ids.len() * draws, noise_len));
    let flat = out.as_slice_mut().expect("standard layout");
    flat.par_chunks_mut(noise_len.max(1))
        .enumerate()
        .for_each(|(r, row)| fill_row(key, ids[r / draws], r % draws, row));
    out
}

/// The noise of one point `id` for the draws `draws` (row `j` is draw `draws.start + j` of
/// the stream `(key, id, draw)`, as in [`noise`]).
pub fn noise_range(
    id: u64,
    draws: std::ops::Range<usize>,
    key: u64,
    noise_len: usize,
) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((draws.len(), noise_len));
    for (j, e) in draws.enumerate() {
        let mut row = out.row_mut(j);
        fill_row(key, id, e, row.as_slice_mut().expect("contiguous"));
    }
    out
}

/// The generator of draw `draw` of point `id` under `key`.
fn row_rng(key: u64, id: u64, draw: usize) -> crate::rng::Rng {
    crate::rng::stream(key, &[id, draw as u64])
}

fn fill_row(key: u64, id: u64, draw: usize, row: &mut [f32]) {
    crate::normal::fill_normal_f32(&mut row_rng(key, id, draw), row);
}

/// One chunk reduced to its points.
pub(crate) struct PointsOut {
    loss: Array1<f32>,
    logits: Array2<f32>,
    pred: Vec<usize>,
    grad: Option<Array2<f32>>,
}

/// Reduce the `m · draws` rows of `out` to the `m` points they belong to.
pub(crate) fn reduce(out: ChunkOut, draws: usize) -> PointsOut {
    let m = out.loss.len() / draws;
    let k = out.logits.ncols();
    let p = softmax(out.logits.view());
    let mut loss = Array1::<f32>::zeros(m);
    let mut logits = Array2::<f32>::zeros((m, k));
    let mut pred = vec![0; m];
    for i in 0..m {
        let last = i * draws + draws - 1;
        loss[i] = out.loss[last];
        logits.row_mut(i).assign(&out.logits.row(last));
        let mean = p
            .slice(s![i * draws..(i + 1) * draws, ..])
            .mean_axis(Axis(0))
            .expect("draws ≥ 1");
        pred[i] = argmax(mean.view());
    }
    let grad = out.grad.map(|g| block_mean(g.view(), draws));
    PointsOut {
        loss,
        logits,
        pred,
        grad,
    }
}

/// The evaluation of `n` points (`d` inputs, `k` classes) from its chunks, in order.
pub(crate) fn assemble(
    n: usize,
    d: usize,
    k: usize,
    want_grad: bool,
    parts: Vec<PointsOut>,
) -> ModelEval {
    let mut out = ModelEval {
        loss: Array1::zeros(n),
        logits: Array2::zeros((n, k)),
        pred: vec![0; n],
        grad: want_grad.then(|| Array2::zeros((n, d))),
    };
    let mut start = 0;
    for part in parts {
        let end = start + part.loss.len();
        out.loss.slice_mut(s![start..end]).assign(&part.loss);
        out.logits
            .slice_mut(s![start..end, ..])
            .assign(&part.logits);
        out.pred[start..end].copy_from_slice(&part.pred);
        if let (Some(all), Some(g)) = (out.grad.as_mut(), part.grad) {
            all.slice_mut(s![start..end, ..]).assign(&g);
        }
        start = end;
    }
    assert_eq!(start, n, "chunks cover every point once");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn draws_reduce_to_last_loss_mean_probability_and_mean_gradient() {
        // Point 0: draws vote class 0, 0, 1 (strongly) — the mean probability picks 0
        // although the last draw says 1; point 1: one draw.
        let out = ChunkOut {
            logits: array![[5.0, 0.0], [5.0, 0.0], [0.0, 1.0]],
            loss: array![0.1, 0.2, 0.3],
            grad: Some(array![[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]]),
        };
        let p = reduce(out, 3);
        assert_eq!(p.loss, array![0.3]);
        assert_eq!(p.logits, array![[0.0, 1.0]]);
        assert_eq!(p.pred, vec![0]);
        assert_eq!(p.grad.unwrap(), array![[3.0, 5.0]]);
        let one = ChunkOut {
            logits: array![[0.0, 2.0]],
            loss: array![0.7],
            grad: None,
        };
        let q = reduce(one, 1);
        assert_eq!(q.pred, vec![1]);
        // Chunks land in order; no gradient asked → none returned.
        let a = reduce(
            ChunkOut {
                logits: array![[1.0, 0.0], [1.0, 0.0]],
                loss: array![1.0, 2.0],
                grad: None,
            },
            2,
        );
        let ev = assemble(2, 2, 2, false, vec![a, q]);
        assert_eq!(ev.loss, array![2.0, 0.7]);
        assert_eq!(ev.pred, vec![0, 1]);
        assert_eq!(ev.logits, array![[1.0, 0.0], [0.0, 2.0]]);
        assert!(ev.grad.is_none());
    }

    #[test]
    fn parallel_noise_is_the_sequential_noise_and_keyed_per_point() {
        let ids = [7u64, 3, 11, 5, 9];
        let a = noise(&ids, 3, 42, 37);
        assert_eq!(a, noise_par(&ids, 3, 42, 37));
        // Point 3's rows are the same whatever batch it is in, and differ per draw and key.
        let b = noise(&ids[1..2], 3, 42, 37);
        assert_eq!(b, a.slice(s![3..6, ..]));
        assert_ne!(a.row(3), a.row(4));
        assert_ne!(noise(&ids, 3, 43, 37), a);
        // Standard normal: mean ≈ 0, variance ≈ 1 over the 555 values.
        let n = a.len() as f32;
        let mean = a.sum() / n;
        let var = a.mapv(|v| (v - mean) * (v - mean)).sum() / n;
        assert!(mean.abs() < 0.15 && (var - 1.0).abs() < 0.2, "{mean} {var}");
    }

    #[test]
    fn draw_rows_repeat_points_labels_and_targets() {
        let x = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let t = [2usize, 0, 1];
        let c = DrawRows::new(x.view(), &[0, 1, 2], Loss::DlrTargeted(&t), 1..3, 2);
        assert_eq!(
            c.rep,
            array![[3.0, 4.0], [3.0, 4.0], [5.0, 6.0], [5.0, 6.0]]
        );
        assert_eq!(c.y, vec![1, 1, 2, 2]);
        assert_eq!(c.targets, Some(vec![0, 0, 1, 1]));
        let u = DrawRows::new(x.view(), &[0, 1, 2], Loss::Ce, 0..1, 3);
        assert_eq!(u.targets, None);
        assert_eq!(u.rep.nrows(), 3);
    }

    /// The three ways to build a chunk's noise give the same rows.
    #[test]
    fn noise_builders_agree() {
        let ids = [3u64, 17, 5];
        let a = noise(&ids, 4, 99, 33);
        assert_eq!(a, noise_par(&ids, 4, 99, 33));
        for (i, &id) in ids.iter().enumerate() {
            let r = noise_range(id, 1..4, 99, 33);
            assert_eq!(r, a.slice(ndarray::s![i * 4 + 1..i * 4 + 4, ..]));
        }
        assert_ne!(a.row(0), a.row(1));
    }
}
