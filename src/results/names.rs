//! The names of evaluated rows: the four [`Scenario`]s of the paper's table and the
//! [`Protocol`] under which a robust row was attacked. Every string written to or read from
//! `result.h5`, `metrics.csv`, `summary.csv` and checkpoints comes from [`Scenario::as_str`]
//! / [`Protocol::as_str`] and is read back with their `FromStr`.

use std::fmt;
use std::str::FromStr;

/// One of the paper's four scenarios (Clean/Robust × Base/Def).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    CleanBase,
    CleanDef,
    RobustBase,
    RobustDef,
}

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 4] = [
        Scenario::CleanBase,
        Scenario::CleanDef,
        Scenario::RobustBase,
        Scenario::RobustDef,
    ];

    /// The file spelling (`clean_base`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::CleanBase => "clean_base",
            Scenario::CleanDef => "clean_def",
            Scenario::RobustBase => "robust_base",
            Scenario::RobustDef => "robust_def",
        }
    }

    /// The paper's spelling (`Clean_Base`, …).
    pub fn title(self) -> &'static str {
        match self {
            Scenario::CleanBase => "Clean_Base",
            Scenario::CleanDef => "Clean_Def",
            Scenario::RobustBase => "Robust_Base",
            Scenario::RobustDef => "Robust_Def",
        }
    }

    /// Clean_Base or Clean_Def (no attack, ε = 0).
    pub fn is_clean(self) -> bool {
        matches!(self, Scenario::CleanBase | Scenario::CleanDef)
    }

    /// Robust_Base or Robust_Def.
    pub fn is_robust(self) -> bool {
        !self.is_clean()
    }
}

/// How a robust row's adversarial examples were made (`None` for clean rows and
/// Robust_Base; `Worst` is the per-sample worst over transfer and adaptive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    None,
    Transfer,
    Adaptive,
    Worst,
}

impl Protocol {
    /// Every protocol, in table order of the checks.
    pub const ALL: [Protocol; 4] = [
        Protocol::None,
        Protocol::Transfer,
        Protocol::Adaptive,
        Protocol::Worst,
    ];

    /// The file spelling (`none`, `transfer`, `adaptive`, `worst`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::None => "none",
            Protocol::Transfer => "transfer",
            Protocol::Adaptive => "adaptive",
            Protocol::Worst => "worst",
        }
    }
}

impl From<crate::config::Protocol> for Protocol {
    fn from(p: crate::config::Protocol) -> Self {
        match p {
            crate::config::Protocol::Transfer => Protocol::Transfer,
            crate::config::Protocol::Adaptive => Protocol::Adaptive,
        }
    }
}

/// A name that is not one of the known spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{got}` (expected one of: {expected})")]
pub struct UnknownName {
    pub what: &'static str,
    pub got: String,
    pub expected: String,
}

fn parse<T: Copy>(
    what: &'static str,
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|&v| name(v) == s)
        .ok_or_else(|| UnknownName {
            what,
            got: s.to_string(),
            expected: all.iter().map(|&v| name(v)).collect::<Vec<_>>().join(", "),
        })
}

impl FromStr for Scenario {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        parse("scenario", s, &Scenario::ALL, Scenario::as_str)
    }
}

impl FromStr for Protocol {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        parse("protocol", s, &Protocol::ALL, Protocol::as_str)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_match_the_files() {
        // The spellings documented in docs/results.md (the `scenario` and `protocol` rows
        // of the metrics.csv table), which users and scripts rely on.
        let doc = include_str!("../../docs/results.md");
        let line = |key: &str| {
            doc.lines()
                .find(|l| l.starts_with(&format!("| {key} |")))
                .unwrap_or_else(|| panic!("docs/results.md has no `{key}` row"))
                .to_string()
        };
        let (sl, pl) = (line("scenario"), line("protocol"));
        for s in Scenario::ALL {
            assert!(sl.contains(&format!("`{}`", s.as_str())), "{s}");
        }
        for p in Protocol::ALL {
            assert!(pl.contains(&format!("`{}`", p.as_str())), "{p}");
        }
    }

    #[test]
    fn parse_round_trips_and_rejects_unknown() {
        for s in Scenario::ALL {
            assert_eq!(s.as_str().parse::<Scenario>(), Ok(s));
        }
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
        }
        let e = "robust".parse::<Scenario>().unwrap_err();
        assert!(e
            .to_string()
            .contains("clean_base, clean_def, robust_base, robust_def"));
        assert!("Worst".parse::<Protocol>().is_err());
        assert!(Scenario::RobustDef.is_robust() && Scenario::CleanDef.is_clean());
    }
}
