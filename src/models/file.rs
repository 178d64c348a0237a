//! `models.h5`: writing ([`image`], bytes built in memory like every HDF5 file of the crate,
//! see [`crate::results::h5`]) and reading ([`read`]) the layout of `docs/results.md`.
//! Every read error names the file and the field (`cnn/block0/kernel`, …) and says what to do.

use super::*;
use crate::diffusion::Schedule;
use crate::error::{Error, Result};
use crate::nn::cnn::{CnnArch, ConvBlock};
use crate::nn::layers::BN_EPS;
use crate::nn::mlp::{Activation, Dense};
use crate::results::h5::{attr, attr_str, build_image, ds, open_diagnosed, strings, write_curves};
use crate::results::Curve;
use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type, Location};
use ndarray::{Array1, Array2};
use serde::de::DeserializeOwned;
use std::path::Path;

fn put_dense(g: &Group, name: &str, d: &Dense<f32>) -> hdf5::Result<()> {
    let l = g.create_group(name)?;
    ds(&l, "w", &d.w)?;
    ds(&l, "b", &d.b)
}

fn put_mlp(f: &hdf5::File, name: &str, m: &Mlp<f32>) -> hdf5::Result<Group> {
    let g = f.create_group(name)?;
    attr_str(&g, "activation", &name_of(&m.act))?;
    attr(&g, "layers", m.layers.len() as u64)?;
    for (i, l) in m.layers.iter().enumerate() {
        put_dense(&g, &format!("layer{i}"), l)?;
    }
    Ok(g)
}

fn put_cnn(f: &hdf5::File, c: &Cnn<f32>) -> hdf5::Result<()> {
    let g = f.create_group("cnn")?;
    let a = &c.arch;
    ds(
        &g,
        "channels",
        &Array1::from_iter(a.channels.iter().map(|&v| v as u64)),
    )?;
    attr(&g, "height", a.height as u64)?;
    attr(&g, "width", a.width as u64)?;
    attr(&g, "feature_dim", a.feature_dim as u64)?;
    attr(&g, "classes", a.classes as u64)?;
    attr(&g, "bn_eps", BN_EPS)?;
    for (i, b) in c.blocks.iter().enumerate() {
        let bg = g.create_group(&format!("block{i}"))?;
        ds(&bg, "kernel", &b.w)?;
        ds(&bg, "gamma", &b.gamma)?;
        ds(&bg, "beta", &b.beta)?;
        ds(&bg, "running_mean", &b.running_mean)?;
        ds(&bg, "running_var", &b.running_var)?;
    }
    put_dense(&g, "fc1", &c.fc1)?;
    put_dense(&g, "fc2", &c.fc2)
}

fn fill(f: &hdf5::File, m: &Models) -> hdf5::Result<()> {
    let p = &m.provenance;
    attr_str(f, "schema", SCHEMA)?;
    attr(f, "schema_version", SCHEMA_VERSION)?;
    attr_str(f, "job_name", &p.job_name)?;
    attr_str(f, "config_yaml", &p.config_yaml)?;
    attr(f, "seed", p.seed)?;
    attr_str(f, "diffnmf_version", &p.diffnmf_version)?;
    attr_str(f, "git_revision", &p.git_revision)?;
    attr_str(f, "platform", &p.platform)?;
    attr_str(f, "device", &p.device)?;
    attr_str(f, "data_content", &p.data_content)?;
    attr(f, "height", m.image_shape.0 as u64)?;
    attr(f, "width", m.image_shape.1 as u64)?;
    attr(f, "num_classes", m.num_classes as u64)?;
    if let Some(c) = &m.cnn {
        put_cnn(f, c)?;
    }
    if let Some(n) = &m.nnmf {
        let g = f.create_group("nnmf")?;
        ds(&g, "basis", &n.model.basis)?;
        attr_str(&g, "loss", &name_of(&n.model.loss))?;
        attr_str(&g, "mode", &name_of(&n.mode))?;
        attr(&g, "k", n.k as u64)?;
        attr(&g, "max_iter", n.model.max_iter as u64)?;
        attr(&g, "tol", n.model.tol)?;
        attr_str(&g, "device", &n.device)?;
        ds(&g, "objective", &Array1::from(n.objective.clone()))?;
        attr(&g, "iterations", n.iterations as u64)?;
        attr(&g, "converged", n.converged)?;
    }
    let g = f.create_group("features")?;
    let names: Vec<&str> = m.blocks.iter().map(|b| b.0.as_str()).collect();
    ds(&g, "blocks", &strings(&names))?;
    ds(
        &g,
        "block_dims",
        &Array1::from_iter(m.blocks.iter().map(|b| b.1 as u64)),
    )?;
    ds(&g, "mean", &m.scaler.mean)?;
    ds(&g, "std", &m.scaler.std)?;
    ds(&g, "train_min", &m.train_range.0)?;
    ds(&g, "train_max", &m.train_range.1)?;
    put_mlp(f, "classifier", &m.classifier)?;
    let d = &m.denoiser;
    let g = put_mlp(f, "denoiser", &d.mlp)?;
    ds(&g, "time_embedding", &d.emb)?;
    attr_str(&g, "prediction", &name_of(&d.predict))?;
    let g = f.create_group("schedule")?;
    attr(&g, "steps", d.sched.steps() as u64)?;
    attr(&g, "t_star", m.t_star as u64)?;
    attr(&g, "passes", m.passes as u64)?;
    ds(&g, "beta", &Array1::from(d.sched.beta.clone()))?;
    ds(&g, "alpha_bar", &Array1::from(d.sched.alpha_bar.clone()))?;
    ds(&g, "sigma", &Array1::from(d.sched.sigma.clone()))?;
    let g = f.create_group("eval")?;
    attr_str(&g, "split", &m.eval.split)?;
    attr_str(&g, "features_sha256", &m.eval.features_sha256)?;
    ds(&g, "ids", &Array1::from(m.eval.ids.clone()))?;
    ds(&g, "labels", &Array1::from(m.eval.labels.clone()))?;
    write_curves(&f.create_group("curves")?, &m.curves)?;
    // Last, so that a reader sees it only in a file whose every part was written.
    attr(f, "complete", true)
}

/// The bytes of `models.h5` for `m` (`path` names errors).
pub fn image(path: &Path, m: &Models) -> Result<Vec<u8>> {
    build_image(path, |f| fill(f, m))
}

/// Reads fields of one open file, naming the file and the field in every error.
struct Reader<'a> {
    path: &'a Path,
    f: hdf5::File,
}

const FIX: &str = "models.h5 is written by `diffnmf run` (and each sweep cell) beside result.h5; rerun the job to get a complete one";

impl Reader<'_> {
    fn err(&self, field: &str, msg: impl std::fmt::Display) -> Error {
        Error::Results {
            path: self.path.to_path_buf(),
            msg: format!("field `{field}`: {msg}; {FIX}"),
        }
    }
    fn has(&self, group: &str) -> bool {
        self.f.link_exists(group)
    }
    fn group(&self, name: &str) -> Result<Group> {
        self.f.group(name).map_err(|e| self.err(name, e))
    }
    fn attr<T: H5Type>(&self, loc: &Location, field: &str, name: &str) -> Result<T> {
        loc.attr(name)
            .and_then(|a| a.read_scalar::<T>())
            .map_err(|e| self.err(field, e))
    }
    fn usize(&self, loc: &Location, field: &str, name: &str) -> Result<usize> {
        Ok(self.attr::<u64>(loc, field, name)? as usize)
    }
    fn string(&self, loc: &Location, field: &str, name: &str) -> Result<String> {
        Ok(self.attr::<VarLenUnicode>(loc, field, name)?.to_string())
    }
    fn parse<T: DeserializeOwned>(&self, loc: &Location, field: &str, name: &str) -> Result<T> {
        let s = self.string(loc, field, name)?;
        serde_yaml_ng::from_str(&s).map_err(|e| self.err(field, format!("`{s}`: {e}")))
    }
    fn vec1<T: H5Type>(&self, g: &Group, field: &str, name: &str) -> Result<Array1<T>> {
        g.dataset(name)
            .and_then(|d| d.read_1d::<T>())
            .map_err(|e| self.err(field, e))
    }
    fn mat(&self, g: &Group, field: &str, name: &str) -> Result<Array2<f32>> {
        g.dataset(name)
            .and_then(|d| d.read_2d::<f32>())
            .map_err(|e| self.err(field, e))
    }
    /// The dense layer in group `name` of `g`; errors name it as `field`.
    fn dense(&self, g: &Group, name: &str, field: &str) -> Result<Dense<f32>> {
        let l = g.group(name).map_err(|e| self.err(field, e))?;
        let (w, b) = (
            self.mat(&l, &format!("{field}/w"), "w")?,
            self.vec1::<f32>(&l, &format!("{field}/b"), "b")?,
        );
        if w.ncols() != b.len() {
            return Err(self.err(
                field,
                format!(
                    "w is {}×{} but b has {} entries",
                    w.nrows(),
                    w.ncols(),
                    b.len()
                ),
            ));
        }
        Ok(Dense { w, b })
    }
    fn mlp(&self, name: &str) -> Result<Mlp<f32>> {
        let g = self.group(name)?;
        let act: Activation = self.parse(&g, &format!("{name}/activation"), "activation")?;
        let n = self.usize(&g, &format!("{name}/layers"), "layers")?;
        let mut layers: Vec<Dense<f32>> = vec![];
        for i in 0..n {
            let l = self.dense(&g, &format!("layer{i}"), &format!("{name}/layer{i}"))?;
            if let Some(prev) = layers.last() {
                if prev.w.ncols() != l.w.nrows() {
                    return Err(self.err(
                        &format!("{name}/layer{i}/w"),
                        format!("{} inputs after a layer of {}", l.w.nrows(), prev.w.ncols()),
                    ));
                }
            }
            layers.push(l);
        }
        if layers.is_empty() {
            return Err(self.err(name, "no layers"));
        }
        Ok(Mlp { layers, act })
    }
    fn cnn(&self) -> Result<Cnn<f32>> {
        let g = self.group("cnn")?;
        let eps: f64 = self.attr(&g, "cnn/bn_eps", "bn_eps")?;
        if eps != BN_EPS {
            return Err(self.err(
                "cnn/bn_eps",
                format!("{eps}, but this diffnmf's BatchNorm uses {BN_EPS}"),
            ));
        }
        let channels: Vec<usize> = self
            .vec1::<u64>(&g, "cnn/channels", "channels")?
            .iter()
            .map(|&c| c as usize)
            .collect();
        let arch = CnnArch {
            channels: channels.clone(),
            feature_dim: self.usize(&g, "cnn/feature_dim", "feature_dim")?,
            height: self.usize(&g, "cnn/height", "height")?,
            width: self.usize(&g, "cnn/width", "width")?,
            classes: self.usize(&g, "cnn/classes", "classes")?,
        };
        let flat = arch
            .flat_dim()
            .map_err(|e| self.err("cnn", format!("invalid architecture: {e}")))?;
        let mut blocks = vec![];
        let mut cin = 1;
        for (i, &cout) in channels.iter().enumerate() {
            blocks.push(self.conv_block(&g, i, cin, cout)?);
            cin = cout;
        }
        let fc1 = self.dense(&g, "fc1", "cnn/fc1")?;
        let fc2 = self.dense(&g, "fc2", "cnn/fc2")?;
        if fc1.w.dim() != (flat, arch.feature_dim)
            || fc2.w.dim() != (arch.feature_dim, arch.classes)
        {
            return Err(self.err(
                "cnn/fc1",
                format!(
                    "fc1 {:?} / fc2 {:?} do not fit the architecture ({flat} → {} → {})",
                    fc1.w.dim(),
                    fc2.w.dim(),
                    arch.feature_dim,
                    arch.classes
                ),
            ));
        }
        Ok(Cnn {
            arch,
            blocks,
            fc1,
            fc2,
        })
    }
    /// Convolution block `i` of the `cnn` group `g`, mapping `cin` to `cout` channels.
    fn conv_block(&self, g: &Group, i: usize, cin: usize, cout: usize) -> Result<ConvBlock<f32>> {
        let f = |n: &str| format!("cnn/block{i}/{n}");
        let bg = g
            .group(&format!("block{i}"))
            .map_err(|e| self.err(&f(""), e))?;
        let w = self.mat(&bg, &f("kernel"), "kernel")?;
        if w.dim() != (9 * cin, cout) {
            return Err(self.err(
                &f("kernel"),
                format!("shape {:?}, expected {:?}", w.dim(), (9 * cin, cout)),
            ));
        }
        let v = |n: &str| -> Result<Array1<f32>> {
            let a = self.vec1::<f32>(&bg, &f(n), n)?;
            if a.len() != cout {
                return Err(self.err(&f(n), format!("{} entries, expected {cout}", a.len())));
            }
            Ok(a)
        };
        Ok(ConvBlock {
            w,
            gamma: v("gamma")?,
            beta: v("beta")?,
            running_mean: v("running_mean")?,
            running_var: v("running_var")?,
        })
    }
    fn nnmf(&self) -> Result<NnmfModels> {
        let g = self.group("nnmf")?;
        Ok(NnmfModels {
            model: NmfModel {
                basis: self.mat(&g, "nnmf/basis", "basis")?,
                loss: self.parse(&g, "nnmf/loss", "loss")?,
                max_iter: self.usize(&g, "nnmf/max_iter", "max_iter")?,
                tol: self.attr(&g, "nnmf/tol", "tol")?,
            },
            mode: self.parse(&g, "nnmf/mode", "mode")?,
            k: self.usize(&g, "nnmf/k", "k")?,
            device: self.string(&g, "nnmf/device", "device")?,
            objective: self
                .vec1::<f64>(&g, "nnmf/objective", "objective")?
                .to_vec(),
            iterations: self.usize(&g, "nnmf/iterations", "iterations")?,
            converged: self.attr(&g, "nnmf/converged", "converged")?,
        })
    }
    fn curves(&self) -> Result<Vec<Curve>> {
        let g = self.group("curves")?;
        let mut out = vec![];
        for group in g.member_names().map_err(|e| self.err("curves", e))? {
            let sub = g.group(&group).map_err(|e| self.err("curves", e))?;
            for name in sub.member_names().map_err(|e| self.err("curves", e))? {
                let field = format!("curves/{group}/{name}");
                out.push(Curve {
                    group: group.clone(),
                    name: name.clone(),
                    values: self.vec1::<f64>(&sub, &field, &name)?.to_vec(),
                });
            }
        }
        Ok(out)
    }
}

/// Read a `models.h5`. Errors name the file and the field: not HDF5 or truncated, another
/// schema or schema version, a missing or malformed field, shapes that do not fit together.
pub fn read(path: &Path) -> Result<Models> {
    let f = open_diagnosed(path, "a models.h5", FIX)?;
    let r = Reader { path, f };
    r.header()?;
    let provenance = r.provenance()?;
    let cnn = if r.has("cnn") { Some(r.cnn()?) } else { None };
    let nnmf = if r.has("nnmf") { Some(r.nnmf()?) } else { None };
    let features = r.features()?;
    let dim = features.scaler.mean.len();
    let classifier = r.mlp("classifier")?;
    let denoiser = r.denoiser()?;
    r.widths(dim, &classifier, &denoiser)?;
    let eval = r.eval()?;
    let root: &Location = &r.f;
    let sg = r.group("schedule")?;
    let models = Models {
        image_shape: (
            r.usize(root, "height", "height")?,
            r.usize(root, "width", "width")?,
        ),
        num_classes: r.usize(root, "num_classes", "num_classes")?,
        t_star: r.usize(&sg, "schedule/t_star", "t_star")?,
        passes: r.usize(&sg, "schedule/passes", "passes")?,
        curves: r.curves()?,
        provenance,
        cnn,
        nnmf,
        blocks: features.blocks,
        scaler: features.scaler,
        train_range: features.train_range,
        classifier,
        denoiser,
        eval,
    };
    consistent(&r, &models)?;
    Ok(models)
}

/// The `features` group: blocks with their widths, z-score scaler and training range.
struct Features {
    blocks: Vec<(String, usize)>,
    scaler: Standardizer,
    train_range: (Array1<f32>, Array1<f32>),
}

impl Reader<'_> {
    /// The root's schema and schema version are this diffnmf's, and the file is complete.
    fn header(&self) -> Result<()> {
        let root: &Location = &self.f;
        let schema = self.string(root, "schema", "schema").map_err(|_| {
            self.err(
                "schema",
                format!(
                    "no root attribute `schema`: this is not a models.h5 (expected `{SCHEMA}`)"
                ),
            )
        })?;
        if schema != SCHEMA {
            return Err(self.err("schema", format!("`{schema}`, expected `{SCHEMA}`")));
        }
        let version: u32 = self.attr(root, "schema_version", "schema_version")?;
        if version != SCHEMA_VERSION {
            let by = self
                .string(root, "diffnmf_version", "diffnmf_version")
                .unwrap_or_else(|_| "?".into());
            return Err(Error::Results {
                path: self.path.to_path_buf(),
                msg: format!(
                    "field `schema_version`: {version}, but this diffnmf ({}) reads version {SCHEMA_VERSION}; use diffnmf {by}, which wrote it, or rerun the job with this version",
                    env!("CARGO_PKG_VERSION")
                ),
            });
        }
        if !self.attr::<bool>(root, "complete", "complete")? {
            return Err(self.err("complete", "false: the file was not finished"));
        }
        Ok(())
    }

    fn provenance(&self) -> Result<Provenance> {
        let root: &Location = &self.f;
        let s = |name: &str| self.string(root, name, name);
        Ok(Provenance {
            job_name: s("job_name")?,
            config_yaml: s("config_yaml")?,
            seed: self.attr(root, "seed", "seed")?,
            diffnmf_version: s("diffnmf_version")?,
            git_revision: s("git_revision")?,
            platform: s("platform")?,
            device: s("device")?,
            data_content: s("data_content")?,
        })
    }

    /// The `features` group, its widths checked against `features/mean`.
    fn features(&self) -> Result<Features> {
        let g = self.group("features")?;
        let names = g
            .dataset("blocks")
            .and_then(|d| d.read_1d::<VarLenUnicode>())
            .map_err(|e| self.err("features/blocks", e))?;
        let dims = self.vec1::<u64>(&g, "features/block_dims", "block_dims")?;
        if names.len() != dims.len() {
            return Err(self.err(
                "features/block_dims",
                format!("{} widths for {} blocks", dims.len(), names.len()),
            ));
        }
        let blocks: Vec<(String, usize)> = names
            .iter()
            .zip(dims.iter())
            .map(|(n, &d)| (n.to_string(), d as usize))
            .collect();
        let scaler = Standardizer {
            mean: self.vec1(&g, "features/mean", "mean")?,
            std: self.vec1(&g, "features/std", "std")?,
        };
        let train_range = (
            self.vec1(&g, "features/train_min", "train_min")?,
            self.vec1(&g, "features/train_max", "train_max")?,
        );
        let dim = scaler.mean.len();
        let total: usize = blocks.iter().map(|b| b.1).sum();
        for (field, n) in [
            ("features/block_dims", total),
            ("features/std", scaler.std.len()),
            ("features/train_min", train_range.0.len()),
            ("features/train_max", train_range.1.len()),
        ] {
            if n != dim {
                return Err(self.err(field, format!("{n} features, but features/mean has {dim}")));
            }
        }
        Ok(Features {
            blocks,
            scaler,
            train_range,
        })
    }

    /// The `denoiser` group (MLP, time embedding, prediction) and the `schedule` it was
    /// trained with (one row per step 0..=steps).
    fn denoiser(&self) -> Result<Denoiser> {
        let dg = self.group("denoiser")?;
        let mlp = self.mlp("denoiser")?;
        let emb = self.mat(&dg, "denoiser/time_embedding", "time_embedding")?;
        let predict = self.parse(&dg, "denoiser/prediction", "prediction")?;
        let sg = self.group("schedule")?;
        let beta = self.vec1::<f64>(&sg, "schedule/beta", "beta")?.to_vec();
        let sched = Schedule {
            alpha: beta.iter().map(|b| 1.0 - b).collect(),
            alpha_bar: self
                .vec1::<f64>(&sg, "schedule/alpha_bar", "alpha_bar")?
                .to_vec(),
            sigma: self.vec1::<f64>(&sg, "schedule/sigma", "sigma")?.to_vec(),
            beta,
        };
        let steps = self.usize(&sg, "schedule/steps", "steps")?;
        if sched.beta.len() != steps + 1
            || sched.alpha_bar.len() != steps + 1
            || sched.sigma.len() != steps + 1
            || emb.nrows() != steps + 1
        {
            return Err(self.err(
                "schedule",
                format!(
                    "beta/alpha_bar/sigma/time_embedding need {} rows (steps + 1)",
                    steps + 1
                ),
            ));
        }
        Ok(Denoiser {
            mlp,
            sched,
            emb,
            predict,
        })
    }

    /// The classifier takes, and the denoiser maps (beside the time features), the `dim`
    /// features of the hybrid vector.
    fn widths(&self, dim: usize, classifier: &Mlp<f32>, d: &Denoiser) -> Result<()> {
        let (dmlp, emb) = (&d.mlp, &d.emb);
        if classifier.input_dim() != dim
            || dmlp.output_dim() != dim
            || dmlp.input_dim() != dim + emb.ncols()
        {
            return Err(self.err(
                "classifier",
                format!(
                    "classifier takes {} features, denoiser maps {} → {}, but the hybrid vector has {dim} (+ {} time features)",
                    classifier.input_dim(),
                    dmlp.input_dim(),
                    dmlp.output_dim(),
                    emb.ncols()
                ),
            ));
        }
        Ok(())
    }

    fn eval(&self) -> Result<EvalRecord> {
        let eg = self.group("eval")?;
        Ok(EvalRecord {
            split: self.string(&eg, "eval/split", "split")?,
            ids: self.vec1::<u64>(&eg, "eval/ids", "ids")?.to_vec(),
            labels: self.vec1::<u8>(&eg, "eval/labels", "labels")?.to_vec(),
            features_sha256: self.string(&eg, "eval/features_sha256", "features_sha256")?,
        })
    }
}

/// Cross-checks between the parts of a read [`Models`], so that a damaged or hand-edited
/// file is an error naming the field instead of a panic or a silently wrong export.
fn consistent(r: &Reader, m: &Models) -> Result<()> {
    feature_blocks(r, m)?;
    if m.classifier.output_dim() != m.num_classes {
        return Err(r.err(
            "classifier",
            format!(
                "{} outputs for {} classes",
                m.classifier.output_dim(),
                m.num_classes
            ),
        ));
    }
    let steps = m.denoiser.sched.steps();
    if m.t_star == 0 || m.t_star > steps || m.passes == 0 {
        return Err(r.err(
            "schedule/t_star",
            format!(
                "t_star {} and passes {} must be in 1..={steps} and ≥ 1",
                m.t_star, m.passes
            ),
        ));
    }
    let s = &m.scaler;
    if s.std.iter().any(|v| !(v.is_finite() && *v > 0.0)) || s.mean.iter().any(|v| !v.is_finite()) {
        return Err(r.err(
            "features/std",
            "z-score means must be finite and standard deviations finite and > 0",
        ));
    }
    if m.eval.labels.len() != m.eval.ids.len() {
        return Err(r.err(
            "eval/labels",
            format!(
                "{} labels for {} ids",
                m.eval.labels.len(),
                m.eval.ids.len()
            ),
        ));
    }
    Ok(())
}

/// The CNN and the NNMF basis fit the file's image shape and class count, and the feature
/// blocks are theirs, in order, with their widths.
fn feature_blocks(r: &Reader, m: &Models) -> Result<()> {
    let (h, w) = m.image_shape;
    let mut want = vec![];
    if let Some(c) = &m.cnn {
        let a = &c.arch;
        if (a.height, a.width) != (h, w) || a.classes != m.num_classes {
            return Err(r.err(
                "cnn",
                format!(
                    "the CNN takes {}×{} images with {} classes, the file's root says {h}×{w} and {}",
                    a.height, a.width, a.classes, m.num_classes
                ),
            ));
        }
        want.push(("cnn".to_string(), a.feature_dim));
    }
    if let Some(n) = &m.nnmf {
        if n.model.basis.ncols() != h * w {
            return Err(r.err(
                "nnmf/basis",
                format!(
                    "{} columns, but {h}×{w} images have {} pixels",
                    n.model.basis.ncols(),
                    h * w
                ),
            ));
        }
        want.push(("nnmf".to_string(), n.model.components()));
    }
    if m.blocks != want {
        return Err(r.err(
            "features/blocks",
            format!(
                "{:?}, but the stored models give {want:?} (name, width) in this order",
                m.blocks
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Prediction;
    use crate::diffusion::time_embedding;
    use crate::nmf::{NmfLoss, NmfMode};
    use crate::rng::stream;

    fn sample() -> Models {
        let mut rng = stream(3, &[1]);
        let arch = CnnArch {
            channels: vec![2, 3],
            feature_dim: 4,
            height: 6,
            width: 4,
            classes: 3,
        };
        let cnn = Cnn::new(&arch, &mut rng).unwrap();
        let d = 4 + 5;
        let sched = Schedule::linear(7, 1e-3, 0.2);
        Models {
            provenance: Provenance {
                job_name: "t".into(),
                config_yaml: "name: t\n".into(),
                seed: 3,
                diffnmf_version: "0".into(),
                git_revision: "r".into(),
                platform: "p".into(),
                device: "cpu".into(),
                data_content: "c".into(),
            },
            image_shape: (6, 4),
            num_classes: 3,
            cnn: Some(cnn),
            nnmf: Some(NnmfModels {
                model: NmfModel {
                    basis: Array2::from_shape_fn((5, 24), |(i, j)| (i * 24 + j) as f32 / 7.0),
                    loss: NmfLoss::Kl,
                    max_iter: 9,
                    tol: 1e-4,
                },
                mode: NmfMode::PerClass,
                k: 5,
                device: "cpu".into(),
                objective: vec![3.0, 2.0],
                iterations: 2,
                converged: false,
            }),
            blocks: vec![("cnn".into(), 4), ("nnmf".into(), 5)],
            scaler: Standardizer {
                mean: Array1::from_shape_fn(d, |i| i as f32 * 0.5),
                std: Array1::from_shape_fn(d, |i| 1.0 + i as f32),
            },
            train_range: (Array1::from_elem(d, -2.5), Array1::from_elem(d, 3.5)),
            classifier: Mlp::new(&[d, 6, 3], Activation::Relu, &mut rng),
            denoiser: Denoiser {
                mlp: Mlp::new(&[d + 4, 8, d], Activation::Silu, &mut rng),
                emb: time_embedding(7, 4),
                sched,
                predict: Prediction::X0,
            },
            t_star: 3,
            passes: 2,
            curves: vec![Curve {
                group: "cnn".into(),
                name: "train_loss".into(),
                values: vec![1.0, 0.5],
            }],
            eval: EvalRecord {
                split: "val".into(),
                ids: vec![4, 9],
                labels: vec![1, 2],
                features_sha256: "ab".into(),
            },
        }
    }

    #[test]
    fn every_model_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("models.h5");
        let m = sample();
        std::fs::write(&p, image(&p, &m).unwrap()).unwrap();
        let r = read(&p).unwrap();
        let (c, rc) = (m.cnn.as_ref().unwrap(), r.cnn.as_ref().unwrap());
        assert_eq!(rc.arch.channels, c.arch.channels);
        assert_eq!((rc.arch.height, rc.arch.width), (6, 4));
        for (a, b) in c.blocks.iter().zip(&rc.blocks) {
            assert_eq!(a.w, b.w);
            assert_eq!(a.running_var, b.running_var);
        }
        assert_eq!(rc.fc1.w, c.fc1.w);
        assert_eq!(rc.fc2.b, c.fc2.b);
        let (n, rn) = (m.nnmf.as_ref().unwrap(), r.nnmf.as_ref().unwrap());
        assert_eq!(rn.model.basis, n.model.basis);
        assert_eq!(
            (rn.model.loss, rn.mode, rn.model.max_iter, rn.model.tol),
            (NmfLoss::Kl, NmfMode::PerClass, 9, 1e-4)
        );
        assert_eq!(r.blocks, m.blocks);
        assert_eq!(r.scaler.std, m.scaler.std);
        assert_eq!(r.train_range.1, m.train_range.1);
        assert_eq!(r.classifier.layers[1].w, m.classifier.layers[1].w);
        assert_eq!(r.classifier.act, Activation::Relu);
        assert_eq!(r.denoiser.mlp.act, Activation::Silu);
        assert_eq!(r.denoiser.predict, Prediction::X0);
        assert_eq!(r.denoiser.emb, m.denoiser.emb);
        assert_eq!(r.denoiser.sched.alpha_bar, m.denoiser.sched.alpha_bar);
        assert_eq!(r.denoiser.sched.alpha, m.denoiser.sched.alpha);
        assert_eq!((r.t_star, r.passes), (3, 2));
        assert_eq!(r.eval.ids, vec![4, 9]);
        assert_eq!(r.curves[0].values, vec![1.0, 0.5]);
    }

    #[test]
    fn another_schema_version_or_a_missing_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("models.h5");
        let bytes = build_image(&p, |f| {
            attr_str(f, "schema", SCHEMA)?;
            attr(f, "schema_version", SCHEMA_VERSION + 1)?;
            attr_str(f, "diffnmf_version", "9.9.9")
        })
        .unwrap();
        std::fs::write(&p, bytes).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("models.h5") && e.contains("schema_version") && e.contains("9.9.9"),
            "{e}"
        );
        // A complete file without the classifier group.
        let m = sample();
        let bytes = build_image(&p, |f| {
            fill(f, &m)?;
            f.unlink("classifier")
        })
        .unwrap();
        std::fs::write(&p, bytes).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("field `classifier`"), "{e}");
    }

    #[test]
    fn parts_that_do_not_fit_together_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("models.h5");
        let write = |m: &Models| {
            std::fs::write(&p, build_image(&p, |f| fill(f, m)).unwrap()).unwrap();
            read(&p).unwrap_err().to_string()
        };
        let mut m = sample();
        m.blocks.reverse();
        let e = write(&m);
        assert!(
            e.contains("field `features/blocks`") && e.contains("models.h5"),
            "{e}"
        );
        let mut m = sample();
        m.t_star = 8;
        assert!(write(&m).contains("field `schedule/t_star`"));
        let mut m = sample();
        m.image_shape = (4, 6);
        assert!(write(&m).contains("field `cnn`"));
        let mut m = sample();
        m.nnmf.as_mut().unwrap().model.basis = Array2::ones((5, 20));
        let e = write(&m);
        assert!(e.contains("field `nnmf/basis`"), "{e}");
        let mut m = sample();
        m.scaler.std[2] = 0.0;
        assert!(write(&m).contains("field `features/std`"));
    }
}
