//! Range checks for [`JobConfig`]; each message names the dotted key and the allowed range.

use super::job::*;
pub use crate::error::ParamsError;
use crate::nmf::NmfLoss;

fn range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
    what: &str,
) -> Result<(), ParamsError> {
    if v < lo || v > hi {
        return Err(ParamsError::new(
            key.to_string(),
            format!("`{key}` = {v} is out of range: must be in [{lo}, {hi}] ({what})"),
        ));
    }
    Ok(())
}

fn positive(key: &str, v: f64, what: &str) -> Result<(), ParamsError> {
    if !(v.is_finite() && v > 0.0) {
        return Err(ParamsError::new(
            key.to_string(),
            format!("`{key}` = {v} is out of range: must be a finite number > 0 ({what})"),
        ));
    }
    Ok(())
}

fn non_negative(key: &str, v: f64, what: &str) -> Result<(), ParamsError> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(ParamsError::new(
            key.to_string(),
            format!("`{key}` = {v} is out of range: must be a finite number ≥ 0 ({what})"),
        ));
    }
    Ok(())
}

fn widths(key: &str, v: &[usize], allow_empty: bool) -> Result<(), ParamsError> {
    if v.is_empty() && !allow_empty {
        return Err(ParamsError::new(
            key.to_string(),
            format!("`{key}` must list at least one layer width, e.g. [64]"),
        ));
    }
    for &w in v {
        range(key, w, 1, 65536, "layer widths")?;
    }
    Ok(())
}

/// Validate every field; `Err` holds the message.
pub fn validate(c: &JobConfig) -> Result<(), ParamsError> {
    name(c)?;
    data(&c.data)?;
    nnmf(c)?;
    cnn(c)?;
    classifier(&c.classifier)?;
    diffusion(&c.diffusion)?;
    attack(&c.attack)?;
    threat(c)?;
    checks(&c.attack)?;
    certify(c)
}

/// `certify.*`: sample sizes up to 100,000 draws per point, a level in (0, ½), and the
/// feature threat model (the certificate is an L2 radius in feature space).
fn certify(c: &JobConfig) -> Result<(), ParamsError> {
    let k = &c.certify;
    range(
        "certify.n0",
        k.n0,
        1,
        100_000,
        "draws choosing the top class; 100 in Cohen et al.",
    )?;
    range(
        "certify.n",
        k.n,
        1,
        100_000,
        "draws bounding its probability; 1,000 by default, up to 100,000",
    )?;
    if !(k.alpha > 0.0 && k.alpha < 0.5) {
        return Err(ParamsError::new(
            "certify.alpha".to_string(),
            format!(
                "`certify.alpha` = {} is out of range: must be in (0, 0.5) (failure probability of each certificate; 0.001 in Cohen et al.)",
                k.alpha
            ),
        ));
    }
    if k.enabled && c.attack.threat == Threat::Pixel {
        return Err(ParamsError::new(
            "certify.enabled".to_string(),
            "the certificate is an L2 radius around the feature vector (the defence adds its \
             noise there); an image-space radius would need a Lipschitz bound of the image → \
             feature map, which diffnmf does not have. Certify with `attack.threat: feature`, \
             or turn `certify.enabled` off for pixel-space runs"
                .into(),
        ));
    }
    Ok(())
}

/// What the pixel-space threat model needs: an NNMF block it can differentiate exactly,
/// and the image box (always [0, 1]).
fn threat(c: &JobConfig) -> Result<(), ParamsError> {
    if c.attack.threat != Threat::Pixel {
        return Ok(());
    }
    if c.features.nnmf && c.nnmf.loss != NmfLoss::Frobenius {
        return Err(ParamsError::new(
            "nnmf.loss".to_string(),
            "`attack.threat: pixel` differentiates the NNMF projection of the image exactly, \
             which is implemented for `nnmf.loss: frobenius` only; use frobenius, or \
             `features.nnmf: false`, or `attack.threat: feature`"
                .into(),
        ));
    }
    if c.attack.bounds == BoxKind::TrainRange {
        return Err(ParamsError::new(
            "attack.box".to_string(),
            "`attack.box: train_range` is a box on the feature vector; with \
             `attack.threat: pixel` the attacked images are always kept in [0, 1] — drop \
             `attack.box` (or set it to `unit`)"
                .into(),
        ));
    }
    Ok(())
}

fn name(c: &JobConfig) -> Result<(), ParamsError> {
    if c.name.is_empty()
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        return Err(ParamsError::new("name".to_string(), format!(
            "`name` = {:?} must be non-empty and use only letters, digits, '-', '_' and '.' (it names the output folder)",
            c.name
        )));
    }
    Ok(())
}

fn data(d: &DataConfig) -> Result<(), ParamsError> {
    match d.format {
        DataFormat::Embedded => {}
        DataFormat::Idx => {
            if d.images.is_none() || d.labels.is_none() {
                return Err(ParamsError::new("data.format".to_string(), "`data.format` = idx needs `data.images` and `data.labels` (paths to IDX files, raw or .gz)".into()));
            }
        }
        DataFormat::Folder => {
            if d.root.is_none() {
                return Err(ParamsError::new("data.format".to_string(), "`data.format` = folder needs `data.root` (a folder with one sub-folder of images per class)".into()));
            }
        }
    }
    let (h, w) = d.size.hw();
    range("data.size", h, 4, 1024, "image height in pixels")?;
    range("data.size", w, 4, 1024, "image width in pixels")?;
    if let Some(k) = d.classes {
        range(
            "data.classes",
            k,
            2,
            256,
            "number of classes; labels are 0..classes-1, stored as bytes",
        )?;
    }
    for (i, f) in d.split.iter().enumerate() {
        if !(f.is_finite() && *f > 0.0 && *f < 1.0) {
            return Err(ParamsError::new(
                format!("data.split[{i}]"),
                format!("`data.split[{i}]` = {f} must be in (0, 1) (train/val/test fractions)"),
            ));
        }
    }
    let s: f64 = d.split.iter().sum();
    if (s - 1.0).abs() > 1e-6 {
        return Err(ParamsError::new(
            "data.split".to_string(),
            format!("`data.split` fractions sum to {s}, must sum to 1 (e.g. [0.7, 0.15, 0.15])"),
        ));
    }
    Ok(())
}

fn nnmf(c: &JobConfig) -> Result<(), ParamsError> {
    let (h, w) = c.data.size.hw();
    range("nnmf.k", c.nnmf.k, 1, 4096, "number of NNMF components")?;
    // Every image is resized to `data.size`, so the pixel count is known here.
    if c.features.nnmf && c.nnmf.k > h * w {
        return Err(ParamsError::new(
            "nnmf.k".to_string(),
            format!(
                "`nnmf.k` = {} exceeds the {} pixels of a {h}×{w} image (`data.size`): NNMF \
             needs k ≤ the pixel count; lower `nnmf.k` to at most {} or raise `data.size`",
                c.nnmf.k,
                h * w,
                h * w
            ),
        ));
    }
    range(
        "nnmf.max_iter",
        c.nnmf.max_iter,
        1,
        1_000_000,
        "multiplicative-update iterations",
    )?;
    non_negative(
        "nnmf.tol",
        c.nnmf.tol,
        "relative objective decrease; 0 runs all iterations",
    )
}

fn cnn(c: &JobConfig) -> Result<(), ParamsError> {
    widths("cnn.channels", &c.cnn.channels, false)?;
    range(
        "cnn.feature_dim",
        c.cnn.feature_dim,
        1,
        65536,
        "width of the CNN feature layer",
    )?;
    range("cnn.epochs", c.cnn.epochs, 1, 10_000, "training epochs")?;
    range(
        "cnn.batch_size",
        c.cnn.batch_size,
        1,
        1 << 20,
        "minibatch size",
    )?;
    positive("cnn.lr", c.cnn.lr, "Adam learning rate")?;
    non_negative(
        "cnn.weight_decay",
        c.cnn.weight_decay,
        "decoupled weight decay",
    )?;
    range(
        "cnn.augment_shift",
        c.cnn.augment_shift,
        0,
        64,
        "pixels of random translation",
    )?;
    if !c.features.cnn && !c.features.nnmf {
        return Err(ParamsError::new(
            "features".to_string(),
            "`features.cnn` and `features.nnmf` are both false: enable at least one feature family"
                .into(),
        ));
    }
    Ok(())
}

fn classifier(c: &ClassifierConfig) -> Result<(), ParamsError> {
    widths("classifier.hidden", &c.hidden, true)?;
    range("classifier.epochs", c.epochs, 1, 100_000, "training epochs")?;
    range(
        "classifier.batch_size",
        c.batch_size,
        1,
        1 << 20,
        "minibatch size",
    )?;
    positive("classifier.lr", c.lr, "Adam learning rate")?;
    non_negative(
        "classifier.weight_decay",
        c.weight_decay,
        "decoupled weight decay",
    )
}

fn diffusion(d: &DiffusionConfig) -> Result<(), ParamsError> {
    range("diffusion.steps", d.steps, 1, 100_000, "diffusion steps T")?;
    if !(d.beta_start.is_finite() && d.beta_start > 0.0 && d.beta_start < 1.0) {
        return Err(ParamsError::new(
            "diffusion.beta_start".to_string(),
            format!(
                "`diffusion.beta_start` = {} must be in (0, 1)",
                d.beta_start
            ),
        ));
    }
    if !(d.beta_end.is_finite() && d.beta_end >= d.beta_start && d.beta_end < 1.0) {
        return Err(ParamsError::new(
            "diffusion.beta_end".to_string(),
            format!(
                "`diffusion.beta_end` = {} must be in [beta_start = {}, 1)",
                d.beta_end, d.beta_start
            ),
        ));
    }
    range(
        "diffusion.t_star",
        d.t_star,
        1,
        d.steps,
        "purification depth; at most diffusion.steps",
    )?;
    range(
        "diffusion.passes",
        d.passes,
        1,
        10_000,
        "stochastic passes R averaged by the defence",
    )?;
    widths("diffusion.hidden", &d.hidden, false)?;
    range(
        "diffusion.time_dim",
        d.time_dim,
        2,
        4096,
        "sinusoidal timestep embedding width",
    )?;
    if !d.time_dim.is_multiple_of(2) {
        return Err(ParamsError::new(
            "diffusion.time_dim".to_string(),
            format!(
                "`diffusion.time_dim` = {} must be even (sin/cos pairs)",
                d.time_dim
            ),
        ));
    }
    range(
        "diffusion.epochs",
        d.epochs,
        1,
        100_000,
        "denoiser training epochs",
    )?;
    range(
        "diffusion.batch_size",
        d.batch_size,
        1,
        1 << 20,
        "minibatch size",
    )?;
    positive("diffusion.lr", d.lr, "Adam learning rate")
}

fn attack(a: &AttackConfig) -> Result<(), ParamsError> {
    if a.eps.is_empty() {
        return Err(ParamsError::new(
            "attack.eps".to_string(),
            "`attack.eps` must list at least one budget, e.g. [0, 0.1, 0.25]".into(),
        ));
    }
    for (i, e) in a.eps.iter().enumerate() {
        if !(e.is_finite() && *e >= 0.0) {
            return Err(ParamsError::new(
                format!("attack.eps[{i}]"),
                format!("`attack.eps[{i}]` = {e} is out of range: budgets must be finite and ≥ 0"),
            ));
        }
    }
    range(
        "attack.iterations",
        a.iterations,
        1,
        100_000,
        "APGD iterations N",
    )?;
    range("attack.restarts", a.restarts, 1, 1000, "APGD restarts")?;
    if a.losses.is_empty() {
        return Err(ParamsError::new(
            "attack.losses".to_string(),
            "`attack.losses` must list at least one of [ce, dlr]".into(),
        ));
    }
    range(
        "attack.eot",
        a.eot,
        1,
        10_000,
        "EOT draws per gradient for the adaptive attack",
    )?;
    if a.score_passes.is_some() {
        return Err(ParamsError::new("attack.score_passes".to_string(), "`attack.score_passes` was removed: the defence's R passes are `diffusion.passes` (used for scoring and for confirming an attack's success); set `attack.score_repeats` for the number of independent R-pass scorings".into()));
    }
    range(
        "attack.score_repeats",
        a.score_repeats,
        1,
        1000,
        "independent R-pass scorings of the final candidates",
    )?;
    range(
        "attack.warm_iterations",
        a.warm_iterations,
        0,
        100_000,
        "iterations of each warm-started APGD run, 0 = none",
    )?;
    range(
        "attack.square_queries",
        a.square_queries,
        1,
        1_000_000,
        "Square query budget",
    )?;
    range(
        "attack.targets",
        a.targets,
        1,
        1000,
        "APGD-T target classes",
    )
}

fn checks(a: &AttackConfig) -> Result<(), ParamsError> {
    let ch = &a.checks;
    range(
        "attack.checks.subset",
        ch.subset,
        1,
        1 << 30,
        "points of the check subset",
    )?;
    range(
        "attack.checks.square_queries",
        ch.square_queries,
        1,
        1_000_000,
        "Square query budget of the black-box check",
    )?;
    if !(ch.iterations_factor.is_finite() && ch.iterations_factor >= 1.0) {
        return Err(ParamsError::new(
            "attack.checks.iterations_factor".to_string(),
            format!(
                "`attack.checks.iterations_factor` = {} must be ≥ 1 (2 in docs/evaluation.md)",
                ch.iterations_factor
            ),
        ));
    }
    if !(ch.eot_factor.is_finite() && ch.eot_factor >= 1.0) {
        return Err(ParamsError::new(
            "attack.checks.eot_factor".to_string(),
            format!(
                "`attack.checks.eot_factor` = {} must be ≥ 1 (2.5 in docs/evaluation.md)",
                ch.eot_factor
            ),
        ));
    }
    if let Some(list) = &ch.eps {
        for (i, e) in list.iter().enumerate() {
            if !a.eps.contains(e) {
                return Err(ParamsError::new(format!("attack.checks.eps[{i}]"), format!("`attack.checks.eps[{i}]` = {e} is not one of `attack.eps` ({:?}); the checks compare against that budget's result", a.eps)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(edit: impl FnOnce(&mut JobConfig)) -> ParamsError {
        let mut c = JobConfig::default();
        assert_eq!(validate(&c), Ok(()), "the defaults must be valid");
        edit(&mut c);
        validate(&c).unwrap_err()
    }

    #[test]
    fn certify_values_name_their_key() {
        for (edit, key) in [
            (
                Box::new(|c: &mut JobConfig| c.certify.n = 0) as Box<dyn FnOnce(&mut JobConfig)>,
                "certify.n",
            ),
            (
                Box::new(|c: &mut JobConfig| c.certify.n = 100_001),
                "certify.n",
            ),
            (Box::new(|c: &mut JobConfig| c.certify.n0 = 0), "certify.n0"),
            (
                Box::new(|c: &mut JobConfig| c.certify.alpha = 0.5),
                "certify.alpha",
            ),
            (
                Box::new(|c: &mut JobConfig| c.certify.alpha = f64::NAN),
                "certify.alpha",
            ),
            (
                Box::new(|c: &mut JobConfig| {
                    c.certify.enabled = true;
                    c.attack.threat = Threat::Pixel;
                }),
                "certify.enabled",
            ),
        ] {
            let e = err(edit);
            assert_eq!(e.key, key, "{e}");
        }
        let mut ok = JobConfig::default();
        ok.certify.enabled = true;
        ok.certify.n = 100_000;
        assert_eq!(validate(&ok), Ok(()));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = err(|c| c.nnmf.k = 0);
        assert_eq!(e.key, "nnmf.k", "{e}");
        let e = err(|c| c.attack.eps = vec![0.1, -0.5]);
        assert_eq!(e.key, "attack.eps[1]", "{e}");
        assert!(e.msg.contains("-0.5"), "{e}");
        let e = err(|c| c.attack.eps = vec![]);
        assert_eq!(e.key, "attack.eps", "{e}");
        let e = err(|c| c.diffusion.beta_end = f64::NAN);
        assert!(e.key.starts_with("diffusion."), "{e}");
        let e = err(|c| {
            c.features.cnn = false;
            c.features.nnmf = false;
        });
        assert_eq!(e.key, "features", "{e}");
        assert!(e.msg.contains("features.cnn"), "{e}");
    }

    #[test]
    fn unimplemented_threat_models_say_so_once() {
        let path = std::path::Path::new("j.yaml");
        for (yaml, want) in [
            (
                "attack:\n  threat: image\n",
                "use \"feature\" (L∞ ball on the z-scored hybrid vector",
            ),
            (
                "attack:\n  threat: pixel\nnnmf:\n  loss: kl\n",
                "implemented for `nnmf.loss: frobenius` only",
            ),
            (
                "attack:\n  threat: pixel\n  box: train_range\n",
                "always kept in [0, 1]",
            ),
            ("attack:\n  norm: l2\n", "only \"linf\" is implemented"),
        ] {
            let e = crate::config::parse_job(path, yaml, &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("j.yaml"), "{e}");
        }
        let e = crate::config::parse_job(path, "nnmf:\n  k: 0\n", &[]).unwrap_err();
        let chain = anyhow_free_chain(&e);
        assert_eq!(chain.matches("`nnmf.k` = 0").count(), 1, "{chain}");
    }

    /// The whole cause chain as the command line prints it (`: `-joined sources).
    fn anyhow_free_chain(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut src = e.source();
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        s
    }
}
