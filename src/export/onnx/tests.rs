//! The exported files run in an independent ONNX runtime (tract) and match our forward
//! passes, at two batch sizes (the batch dimension is dynamic).

use super::*;
use crate::diffusion::{time_embedding, Schedule};
use crate::nn::cnn::CnnArch;
use crate::rng::{fill_uniform, stream, Rng};
use ndarray::{Array1, Array2};
use tract_onnx::prelude::*;

fn runnable(bytes: &[u8]) -> TypedRunnableModel<TypedModel> {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract parses the file")
        .into_optimized()
        .expect("tract types and optimises it")
        .into_runnable()
        .expect("runnable")
}

fn run(m: &TypedRunnableModel<TypedModel>, inputs: Vec<Tensor>) -> Vec<Vec<f32>> {
    let out = m
        .run(inputs.into_iter().map(|t| t.into_tvalue()).collect())
        .expect("tract runs it");
    out.iter()
        .map(|t| t.as_slice::<f32>().expect("f32 output").to_vec())
        .collect()
}

fn max_diff(a: &[f32], b: &Array2<f32>) -> f32 {
    let a = ndarray::ArrayView2::from_shape(b.dim(), a).expect("output sizes");
    crate::testutil::max_abs_diff(a, b.view())
}

fn random(rng: &mut Rng, shape: (usize, usize), lo: f64, hi: f64) -> Array2<f32> {
    let mut a = Array2::<f32>::zeros(shape);
    fill_uniform(rng, a.as_slice_mut().unwrap(), lo, hi);
    a
}

fn vec1(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Array1<f32> {
    random(rng, (1, n), lo, hi).row(0).to_owned()
}

#[test]
fn cnn_onnx_matches_the_cnn_forward_pass() {
    let mut rng = stream(11, &[1]);
    // Non-square images, three blocks (two poolings), final map 3×2 with 5 channels: a
    // wrong kernel layout, padding or flatten order changes the outputs.
    let arch = CnnArch {
        channels: vec![3, 4, 5],
        feature_dim: 7,
        height: 12,
        width: 10,
        classes: 4,
    };
    let mut cnn = Cnn::<f32>::new(&arch, &mut rng).unwrap();
    for b in &mut cnn.blocks {
        let c = b.gamma.len();
        b.gamma = vec1(&mut rng, c, 0.5, 1.5);
        b.beta = vec1(&mut rng, c, -0.5, 0.5);
        b.running_mean = vec1(&mut rng, c, -0.3, 0.3);
        b.running_var = vec1(&mut rng, c, 0.2, 2.0);
    }
    let m = runnable(&cnn_model(&cnn));
    let mut worst = 0f32;
    for n in [1, 5] {
        let x = random(&mut rng, (n, 120), 0.0, 1.0);
        let (f, l) = cnn.features_and_logits(x.view());
        assert!(f.iter().any(|&v| v > 0.0), "some features are active");
        let t = Tensor::from_shape(&[n, 1, 12, 10], x.as_slice().unwrap()).unwrap();
        let out = run(&m, vec![t]);
        worst = worst.max(max_diff(&out[0], &f)).max(max_diff(&out[1], &l));
    }
    assert!(worst <= 1e-5, "max abs diff {worst:e}");
}

#[test]
fn classifier_onnx_matches_the_mlp_for_both_activations() {
    let mut rng = stream(12, &[1]);
    for act in [Activation::Relu, Activation::Silu] {
        let mlp = Mlp::<f32>::new(&[13, 9, 7, 3], act, &mut rng);
        let m = runnable(&classifier_model(&mlp));
        for n in [1, 6] {
            let z = random(&mut rng, (n, 13), -2.0, 2.0);
            let out = run(
                &m,
                vec![Tensor::from_shape(&[n, 13], z.as_slice().unwrap()).unwrap()],
            );
            let d = max_diff(&out[0], &mlp.forward(z.view()));
            assert!(d <= 1e-5, "{act:?}: max abs diff {d:e}");
        }
    }
}

#[test]
fn denoiser_onnx_matches_the_denoiser_at_every_kind_of_step() {
    let mut rng = stream(13, &[1]);
    let (d, steps, td) = (9, 20, 6);
    for predict in [Prediction::Noise, Prediction::X0] {
        let den = Denoiser {
            mlp: Mlp::new(&[d + td, 11, d], Activation::Silu, &mut rng),
            sched: Schedule::linear(steps, 1e-3, 0.1),
            emb: time_embedding(steps, td),
            predict,
        };
        let m = runnable(&denoiser_model(&den));
        for ts in [vec![0i64], vec![0, 1, 7, 19, 20]] {
            let n = ts.len();
            let x = random(&mut rng, (n, d), -2.0, 2.0);
            let input = Array2::from_shape_fn((n, d + td), |(i, j)| {
                if j < d {
                    x[[i, j]]
                } else {
                    den.emb[[ts[i] as usize, j - d]]
                }
            });
            let want = den.mlp.forward(input.view());
            let out = run(
                &m,
                vec![
                    Tensor::from_shape(&[n, d], x.as_slice().unwrap()).unwrap(),
                    Tensor::from_shape(&[n], &ts).unwrap(),
                ],
            );
            let diff = max_diff(&out[0], &want);
            assert!(diff <= 1e-5, "{predict:?} t={ts:?}: max abs diff {diff:e}");
        }
        let out_name = m.model().output_outlets().unwrap()[0];
        let label = m.model().node(out_name.node).name.clone();
        assert!(!label.is_empty());
    }
}

#[test]
fn files_declare_opset_17_and_a_named_batch_dimension() {
    let mut rng = stream(14, &[1]);
    let mlp = Mlp::<f32>::new(&[4, 3], Activation::Relu, &mut rng);
    let bytes = classifier_model(&mlp);
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .unwrap();
    assert!(proto
        .opset_import
        .iter()
        .any(|o| o.domain.is_empty() && o.version >= 13));
    assert_eq!(proto.ir_version, graph::IR_VERSION);
    let g = proto.graph.unwrap();
    let dims = |v: &tract_onnx::pb::ValueInfoProto| {
        use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
        use tract_onnx::pb::type_proto::Value;
        let Some(Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.clone()) else {
            panic!("tensor type")
        };
        t.shape
            .unwrap()
            .dim
            .into_iter()
            .map(|d| match d.value {
                Some(D::DimParam(p)) => p,
                Some(D::DimValue(n)) => n.to_string(),
                None => "?".into(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(dims(&g.input[0]), ["batch", "4"]);
    assert_eq!(dims(&g.output[0]), ["batch", "3"]);
    assert_eq!(g.output[0].name, "logits");
}
