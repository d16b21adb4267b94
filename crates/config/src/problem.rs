//! Problems found while loading or validating a configuration, each with the
//! path of the setting and where it came from.

use std::fmt;

/// Where a problematic value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Not tied to a place: a default value, or a check run on a `Config`
    /// built in code (what the validation returns before the loader
    /// locates it).
    Unknown,
    /// A configuration file. `line` and `column` are 1-based and absent when
    /// the setting is not written in the file (a default that fails a check
    /// across settings, or an unreadable file).
    File {
        /// The file name, as given to the loader.
        name: String,
        /// Line and column of the setting (its key) in the file.
        position: Option<(usize, usize)>,
    },
    /// A `PERFGATE_…` environment variable.
    Env {
        /// The variable's name.
        var: String,
    },
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the setting, e.g. `routes[1].cache.default_ttl`; empty
    /// for problems with the whole document (a syntax error).
    pub path: String,
    /// Why the value is rejected, written for the operator.
    pub reason: String,
    /// Where the value came from.
    pub origin: Origin,
}

impl Problem {
    /// A problem not (yet) tied to a place.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
            origin: Origin::Unknown,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::Unknown => {}
            Origin::File {
                name,
                position: Some((line, col)),
            } => write!(f, "{name}:{line}:{col}: ")?,
            Origin::File {
                name,
                position: None,
            } => write!(f, "{name}: ")?,
            Origin::Env { var } => write!(f, "{var}: ")?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.reason)
    }
}

/// Every problem that made a configuration unusable (never empty when
/// returned by the loader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems, file problems in line order first, then those from the
    /// environment, then the rest.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    /// One problem per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
