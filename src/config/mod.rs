//! Loading job YAML with `--set key=value` overrides and validation. Every error names the
//! file (or the `--set` argument), the key, and the allowed range.

mod job;
pub mod validate;

pub use job::*;

use crate::error::{Error, Result};
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

/// A loaded, overridden and validated job together with its origin.
#[derive(Clone, Debug)]
pub struct LoadedJob {
    pub config: JobConfig,
    pub path: PathBuf,
    /// The resolved configuration as YAML text (stored in results).
    pub resolved_yaml: String,
}

/// Read `path`, apply `overrides` (`key=value`, dotted keys, YAML values), validate.
pub fn load_job(path: &Path, overrides: &[String]) -> Result<LoadedJob> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let cfg = parse_job(path, &text, overrides)?;
    let resolved_yaml = serde_yaml_ng::to_string(&cfg).map_err(|e| cfg_err(path, e.to_string()))?;
    Ok(LoadedJob {
        config: cfg,
        path: path.to_path_buf(),
        resolved_yaml,
    })
}

/// Parse job text (for tests and embedded jobs); `path` is only used in messages.
pub fn parse_job(path: &Path, text: &str, overrides: &[String]) -> Result<JobConfig> {
    let raw: Value =
        serde_yaml_ng::from_str(text).map_err(|e| cfg_err(path, format!("invalid YAML: {e}")))?;
    if !matches!(raw, Value::Mapping(_) | Value::Null) {
        return Err(cfg_err(
            path,
            "a job file must be a YAML mapping of keys to values",
        ));
    }
    let mut cfg: JobConfig = if raw.is_null() {
        JobConfig::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| {
            cfg_err(
                path,
                format!("{e} (see jobs/paper.yaml for every key with its default)"),
            )
        })?
    };
    let has_name = raw.as_mapping().is_some_and(|m| m.contains_key("name"));
    if !has_name {
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            cfg.name = stem.to_string();
        }
    }
    if !overrides.is_empty() {
        cfg = apply_overrides(path, cfg, overrides)?;
    }
    validate::validate(&cfg).map_err(|error| Error::Invalid {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(cfg)
}

fn cfg_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Apply `key=value` overrides onto a config; keys must exist in the schema.
pub fn apply_overrides(path: &Path, cfg: JobConfig, overrides: &[String]) -> Result<JobConfig> {
    let mut tree = serde_yaml_ng::to_value(&cfg).map_err(|e| cfg_err(path, e.to_string()))?;
    for ov in overrides {
        let (key, val) = ov.split_once('=').ok_or_else(|| {
            cfg_err(
                path,
                format!("--set `{ov}`: expected key=value, e.g. --set nnmf.k=48"),
            )
        })?;
        let key = key.trim();
        let value: Value = serde_yaml_ng::from_str(val).map_err(|e| {
            cfg_err(
                path,
                format!("--set {key}: value `{val}` is not valid YAML: {e}"),
            )
        })?;
        set_path(&mut tree, key, value).map_err(|m| cfg_err(path, format!("--set {key}: {m}")))?;
    }
    serde_yaml_ng::from_value(tree)
        .map_err(|e| cfg_err(path, format!("after --set overrides: {e}")))
}

/// Set a dotted key in a YAML tree; every component must already exist.
pub fn set_path(tree: &mut Value, key: &str, value: Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = tree;
    for (i, part) in parts.iter().enumerate() {
        let map: &mut Mapping = cur
            .as_mapping_mut()
            .ok_or_else(|| format!("`{}` is not a section", parts[..i].join(".")))?;
        let k = Value::String(part.to_string());
        if !map.contains_key(&k) {
            let known: Vec<String> = map
                .keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect();
            let prefix = parts[..i].join(".");
            return Err(format!(
                "unknown key `{key}`; known keys{}: {}",
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!(" under `{prefix}`")
                },
                known.join(", ")
            ));
        }
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        cur = map.get_mut(&k).unwrap();
    }
    Err("empty key".into())
}

#[cfg(test)]
mod tests;
