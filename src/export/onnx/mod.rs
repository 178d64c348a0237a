//! ONNX files of the trained networks (opset 17, dynamic batch dimension `batch`; names and
//! shapes in `docs/onnx.md`): [`cnn_model`], [`classifier_model`], [`denoiser_model`].
//! [`proto`] encodes the protobuf messages, [`graph`] builds the graphs.

pub mod graph;
pub mod proto;
#[cfg(test)]
mod tests;

use crate::config::Prediction;
use crate::diffusion::denoiser::Denoiser;
use crate::nn::cnn::Cnn;
use crate::nn::layers::BN_EPS;
use crate::nn::mlp::{Activation, Dense, Mlp};
use graph::Graph;
use proto::{attr, dtype};

/// `x·w + b` as a Gemm node.
fn dense(g: &mut Graph, x: &str, d: &Dense<f32>, stem: &str, out: Option<&str>) -> String {
    let (i, o) = d.w.dim();
    let w = g.f32(
        &format!("{stem}_w"),
        &[i, o],
        d.w.as_standard_layout().as_slice().unwrap(),
    );
    let b = g.f32(&format!("{stem}_b"), &[o], d.b.as_slice().unwrap());
    g.node("Gemm", &[x, &w, &b], vec![], out)
}

fn activation(g: &mut Graph, x: &str, act: Activation) -> String {
    match act {
        Activation::Relu => g.node("Relu", &[x], vec![], None),
        Activation::Silu => {
            let s = g.node("Sigmoid", &[x], vec![], None);
            g.node("Mul", &[x, &s], vec![], None)
        }
    }
}

/// The MLP layers on `x`, the last one writing `out`.
fn mlp(g: &mut Graph, x: &str, m: &Mlp<f32>, stem: &str, out: &str) {
    let n = m.layers.len();
    let mut h = x.to_string();
    for (i, l) in m.layers.iter().enumerate() {
        if i > 0 {
            h = activation(g, &h, m.act);
        }
        let last = i + 1 == n;
        h = dense(g, &h, l, &format!("{stem}{i}"), last.then_some(out));
    }
}

/// `cnn.onnx`: `image` `[batch, 1, H, W]` → `features` `[batch, feature_dim]` (after the
/// feature layer's ReLU) and `logits` `[batch, classes]`.
pub fn cnn_model(cnn: &Cnn<f32>) -> Vec<u8> {
    let a = &cnn.arch;
    let mut g = Graph::new("diffnmf_cnn");
    g.input("image", dtype::FLOAT, &[1, a.height, a.width]);
    let mut x = "image".to_string();
    let mut cin = 1;
    let nb = cnn.blocks.len();
    for (i, b) in cnn.blocks.iter().enumerate() {
        let cout = b.w.ncols();
        // Our kernel row (ky·3 + kx)·c_in + ci, column co → ONNX [co, ci, ky, kx].
        let mut k = vec![0f32; cout * cin * 9];
        for co in 0..cout {
            for ci in 0..cin {
                for t in 0..9 {
                    k[(co * cin + ci) * 9 + t] = b.w[[t * cin + ci, co]];
                }
            }
        }
        let w = g.f32(&format!("conv{i}_w"), &[cout, cin, 3, 3], &k);
        let conv = g.node(
            "Conv",
            &[&x, &w],
            vec![
                attr::ints("kernel_shape", &[3, 3]),
                attr::ints("pads", &[1, 1, 1, 1]),
                attr::ints("strides", &[1, 1]),
            ],
            None,
        );
        let v = |g: &mut Graph, n: &str, a: &ndarray::Array1<f32>| {
            g.f32(&format!("bn{i}_{n}"), &[cout], a.as_slice().unwrap())
        };
        let (s, bb, m, var) = (
            v(&mut g, "gamma", &b.gamma),
            v(&mut g, "beta", &b.beta),
            v(&mut g, "mean", &b.running_mean),
            v(&mut g, "var", &b.running_var),
        );
        let bn = g.node(
            "BatchNormalization",
            &[&conv, &s, &bb, &m, &var],
            vec![attr::float("epsilon", BN_EPS as f32)],
            None,
        );
        x = g.node("Relu", &[&bn], vec![], None);
        if i + 1 < nb {
            x = g.node(
                "MaxPool",
                &[&x],
                vec![
                    attr::ints("kernel_shape", &[2, 2]),
                    attr::ints("strides", &[2, 2]),
                ],
                None,
            );
        }
        cin = cout;
    }
    // fc1 reads the last block's output in NHWC order.
    let nhwc = g.node(
        "Transpose",
        &[&x],
        vec![attr::ints("perm", &[0, 2, 3, 1])],
        None,
    );
    let flat = g.node("Flatten", &[&nhwc], vec![attr::int("axis", 1)], None);
    let pre = dense(&mut g, &flat, &cnn.fc1, "fc1", None);
    let feats = g.node("Relu", &[&pre], vec![], Some("features"));
    dense(&mut g, &feats, &cnn.fc2, "fc2", Some("logits"));
    g.output("features", &[a.feature_dim]);
    g.output("logits", &[a.classes]);
    g.model("diffnmf CNN: image [batch,1,H,W] (pixels/255) -> features (feature layer after ReLU), logits")
}

/// `classifier.onnx`: `z` `[batch, D]` (z-scored hybrid vector) → `logits` `[batch, classes]`.
pub fn classifier_model(m: &Mlp<f32>) -> Vec<u8> {
    let mut g = Graph::new("diffnmf_classifier");
    g.input("z", dtype::FLOAT, &[m.input_dim()]);
    mlp(&mut g, "z", m, "layer", "logits");
    g.output("logits", &[m.output_dim()]);
    g.model("diffnmf classifier: z-scored hybrid features z -> class logits")
}

/// Output name of `denoiser.onnx` for a prediction type.
pub fn denoiser_output(p: Prediction) -> &'static str {
    match p {
        Prediction::Noise => "eps",
        Prediction::X0 => "x0",
    }
}

/// `denoiser.onnx`: `x_t` `[batch, D]` and `t` int64 `[batch]` (step 0…T) → `eps` or `x0`
/// `[batch, D]`: the MLP on `[x_t, time_embedding[t]]`.
pub fn denoiser_model(den: &Denoiser) -> Vec<u8> {
    let d = den.mlp.output_dim();
    let (rows, td) = den.emb.dim();
    let mut g = Graph::new("diffnmf_denoiser");
    g.input("x_t", dtype::FLOAT, &[d]);
    g.input("t", dtype::INT64, &[]);
    let table = g.f32(
        "time_embedding",
        &[rows, td],
        den.emb.as_standard_layout().as_slice().unwrap(),
    );
    let e = g.node("Gather", &[&table, "t"], vec![attr::int("axis", 0)], None);
    let input = g.node("Concat", &["x_t", &e], vec![attr::int("axis", 1)], None);
    let out = denoiser_output(den.predict);
    mlp(&mut g, &input, &den.mlp, "layer", out);
    g.output(out, &[d]);
    g.model("diffnmf denoiser: x_t [batch,D], t int64 [batch] -> predicted noise (eps) or clean features (x0)")
}
