//! The job schema (`jobs/*.yaml`): every hyperparameter with its default, and validation with
//! messages that name the key and the allowed range.

use crate::attack::LossKind;
use crate::nmf::{NmfInit, NmfLoss, NmfMode, NmfSolver};
use crate::nn::mlp::Activation;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A whole experiment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JobConfig {
    pub name: String,
    pub seed: u64,
    pub device: DevicePref,
    /// Which split the scenarios are evaluated on (`val` for model selection, e.g. k).
    pub eval_split: EvalSplit,
    pub data: DataConfig,
    pub nnmf: NnmfConfig,
    pub cnn: CnnConfig,
    pub features: FeaturesConfig,
    pub classifier: ClassifierConfig,
    pub diffusion: DiffusionConfig,
    pub attack: AttackConfig,
    pub certify: CertifyConfig,
}

pub use crate::backend::DevicePref;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EvalSplit {
    Test,
    Val,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    Embedded,
    Idx,
    Folder,
}

/// `size: 28` (square) or `size: [h, w]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ImageSize {
    Square(usize),
    Rect([usize; 2]),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub format: DataFormat,
    pub images: Option<PathBuf>,
    pub labels: Option<PathBuf>,
    pub root: Option<PathBuf>,
    /// Number of classes the labels may name (labels `0..classes`); `None`: 10 for the
    /// embedded digits and IDX files (MNIST-style), the class folders for folder data.
    /// A label outside the range is an error before any work.
    pub classes: Option<usize>,
    pub size: ImageSize,
    pub split: [f64; 3],
    /// Seed of the stratified split (defaults to the job seed when absent).
    pub split_seed: Option<u64>,
    /// Use a seeded random subset of this many images (0 = all); for smoke runs.
    pub subset: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NnmfConfig {
    pub k: usize,
    pub mode: NmfMode,
    pub loss: NmfLoss,
    pub init: NmfInit,
    pub max_iter: usize,
    pub tol: f64,
    pub solver: NmfSolver,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CnnConfig {
    pub channels: Vec<usize>,
    pub feature_dim: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub patience: usize,
    pub lr_schedule: LrSchedule,
    pub augment_shift: usize,
}

/// Learning-rate schedule over the epochs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    Cosine,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    pub cnn: bool,
    pub nnmf: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub patience: usize,
    pub lr_schedule: LrSchedule,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    Noise,
    X0,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiffusionConfig {
    pub steps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub t_star: usize,
    pub passes: usize,
    pub predict: Prediction,
    pub hidden: Vec<usize>,
    pub time_dim: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BoxKind {
    None,
    Unit,
    TrainRange,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Transfer,
    Adaptive,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Transfer => "transfer",
            Protocol::Adaptive => "adaptive",
        }
    }
}

/// The attack's norm ball: L∞ (the only one implemented; `docs/apgd.md`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub enum Norm {
    Linf,
}

impl TryFrom<String> for Norm {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "linf" => Ok(Norm::Linf),
            _ => Err(format!(
                "`attack.norm` = {s:?}: only \"linf\" is implemented"
            )),
        }
    }
}

impl From<Norm> for String {
    fn from(n: Norm) -> String {
        match n {
            Norm::Linf => "linf".into(),
        }
    }
}

/// What the attacker perturbs: the z-scored hybrid feature vector (the paper's threat
/// model) or the image (`pixel`: an L∞ ball on the pixels in [0, 1], the whole pipeline
/// differentiated), `docs/evaluation.md`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub enum Threat {
    Feature,
    Pixel,
}

impl TryFrom<String> for Threat {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "feature" => Ok(Threat::Feature),
            "pixel" => Ok(Threat::Pixel),
            _ => Err(format!(
                "`attack.threat` = {s:?}: use \"feature\" (L∞ ball on the z-scored hybrid vector, the paper's threat model) or \"pixel\" (L∞ ball on the image in [0, 1])"
            )),
        }
    }
}

impl From<Threat> for String {
    fn from(t: Threat) -> String {
        t.name().into()
    }
}

impl Threat {
    /// The YAML and `result.h5` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Threat::Feature => "feature",
            Threat::Pixel => "pixel",
        }
    }

    /// The unit of `attack.eps` under this threat model (for table headings).
    pub fn eps_unit(self) -> &'static str {
        match self {
            Threat::Feature => "z-scored feature units",
            Threat::Pixel => "pixel units, images in [0, 1]",
        }
    }
}

/// AutoAttack-style presets of the attack cascade (`docs/attacks.md`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttackVersion {
    /// `attack.losses` (default APGD-CE, APGD-DLR), `attack.restarts` restarts, EOT.
    Rand,
    /// APGD-CE, APGD-T (9 targets), Square (`attack.square_queries`).
    Standard,
    /// APGD-CE and APGD-DLR with 5 restarts, APGD-T, Square.
    Plus,
}

impl AttackVersion {
    pub fn name(self) -> &'static str {
        match self {
            AttackVersion::Rand => "rand",
            AttackVersion::Standard => "standard",
            AttackVersion::Plus => "plus",
        }
    }
}

/// The evaluation's own sanity checks (`docs/evaluation.md`), run on a stratified
/// subset of test points.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// Run the attack-strength checks at all.
    pub enabled: bool,
    /// Points of the stratified subset (≥ 200 recommended; all points if fewer).
    pub subset: usize,
    /// Budgets checked (`null`: every ε > 0 whose worst-case robust accuracy lies in
    /// [0.05, 0.90], where attack strength decides the number).
    pub eps: Option<Vec<f64>>,
    /// Convergence check: iterations × this factor …
    pub iterations_factor: f64,
    /// … and EOT draws × this factor must not lower robust accuracy by more than 1 point.
    pub eot_factor: f64,
    /// Query budget of the black-box Square check.
    pub square_queries: usize,
}

/// Certified L2 radii of the smoothed (majority-vote) defence (`docs/evaluation.md` §6):
/// Cohen et al.'s CERTIFY on every evaluated point, PREDICT on the clean points and on
/// every ε's worst-case adversarial examples.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CertifyConfig {
    /// Certify at all (`diffnmf certify` turns it on).
    pub enabled: bool,
    /// Noise draws that choose the top class.
    pub n0: usize,
    /// Noise draws that bound its probability (and PREDICT's votes).
    pub n: usize,
    /// Failure probability of each certificate and prediction.
    pub alpha: f64,
}

impl Default for CertifyConfig {
    fn default() -> Self {
        CertifyConfig {
            enabled: false,
            n0: 100,
            n: 1000,
            alpha: 0.001,
        }
    }
}

impl CertifyConfig {
    /// The procedures' parameters.
    pub fn params(&self) -> crate::certify::Params {
        crate::certify::Params {
            n0: self.n0,
            n: self.n,
            alpha: self.alpha,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AttackConfig {
    pub eps: Vec<f64>,
    pub norm: Norm,
    pub threat: Threat,
    pub iterations: usize,
    pub restarts: usize,
    pub losses: Vec<LossKind>,
    pub eot: usize,
    #[serde(rename = "box")]
    pub bounds: BoxKind,
    pub protocols: Vec<Protocol>,
    /// Removed: R is `diffusion.passes`. Kept only to give a clear error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_passes: Option<usize>,
    /// Independent R-pass scorings of every candidate (mean ± sd and strict accuracy).
    pub score_repeats: usize,
    /// Attack preset: rand | standard | plus.
    pub version: AttackVersion,
    /// Iterations of each warm-started APGD run (from the transfer candidate and from the
    /// smaller-ε adaptive candidate; 0 = no warm starts).
    pub warm_iterations: usize,
    /// Query budget of Square in the `standard` / `plus` presets.
    pub square_queries: usize,
    /// Target classes of APGD-T.
    pub targets: usize,
    /// Attack only the first N test points (0 = all).
    pub max_points: usize,
    pub checks: ChecksConfig,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            name: "job".into(),
            seed: 0,
            device: DevicePref::Cpu,
            eval_split: EvalSplit::Test,
            data: DataConfig::default(),
            nnmf: NnmfConfig::default(),
            cnn: CnnConfig::default(),
            features: FeaturesConfig::default(),
            classifier: ClassifierConfig::default(),
            diffusion: DiffusionConfig::default(),
            attack: AttackConfig::default(),
            certify: CertifyConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            format: DataFormat::Embedded,
            images: None,
            labels: None,
            root: None,
            classes: None,
            size: ImageSize::Square(28),
            split: [0.70, 0.15, 0.15],
            split_seed: None,
            subset: 0,
        }
    }
}

impl Default for NnmfConfig {
    fn default() -> Self {
        NnmfConfig {
            k: 32,
            mode: NmfMode::Global,
            loss: NmfLoss::Frobenius,
            init: NmfInit::Nndsvda,
            max_iter: 200,
            tol: 1e-4,
            solver: NmfSolver::Mu,
        }
    }
}

impl Default for CnnConfig {
    fn default() -> Self {
        CnnConfig {
            channels: vec![8, 16, 32],
            feature_dim: 64,
            epochs: 15,
            batch_size: 64,
            lr: 2e-3,
            weight_decay: 0.0,
            patience: 4,
            lr_schedule: LrSchedule::Cosine,
            augment_shift: 2,
        }
    }
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            cnn: true,
            nnmf: true,
        }
    }
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            hidden: vec![64],
            activation: Activation::Relu,
            epochs: 40,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 0.0,
            patience: 6,
            lr_schedule: LrSchedule::Constant,
        }
    }
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        DiffusionConfig {
            steps: 100,
            beta_start: 1e-4,
            beta_end: 0.02,
            t_star: 10,
            passes: 10,
            predict: Prediction::Noise,
            hidden: vec![128, 128],
            time_dim: 16,
            epochs: 40,
            batch_size: 128,
            lr: 1e-3,
        }
    }
}

impl Default for AttackConfig {
    fn default() -> Self {
        AttackConfig {
            eps: vec![0.0, 0.1, 0.25, 0.5, 1.0],
            norm: Norm::Linf,
            threat: Threat::Feature,
            iterations: 100,
            restarts: 1,
            losses: vec![LossKind::Ce, LossKind::Dlr],
            eot: 20,
            bounds: BoxKind::None,
            protocols: vec![Protocol::Transfer, Protocol::Adaptive],
            score_passes: None,
            score_repeats: 5,
            version: AttackVersion::Rand,
            warm_iterations: 50,
            square_queries: 5000,
            targets: 9,
            max_points: 0,
            checks: ChecksConfig::default(),
        }
    }
}

impl Default for ChecksConfig {
    fn default() -> Self {
        ChecksConfig {
            enabled: true,
            subset: 200,
            eps: None,
            iterations_factor: 2.0,
            eot_factor: 2.5,
            square_queries: 1000,
        }
    }
}
