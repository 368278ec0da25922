//! Configuration: TOML text → validated [`Config`] in one step that reports
//! *every* error with its key path (`pools.green.backends[1]: invalid
//! address "x:y"`). A file with any error is rejected whole; nothing that
//! holds a `Config` needs to re-check it.
//!
//! - `walk`: reading the TOML tree, type checks, and unknown keys — found
//!   from the keys the readers asked for, so there is no list to drift
//! - `sections`: one reader per section, defaults and semantic rules
//!   (`server`, `pools`, `traffic`, `policy`)
//! - `duration`: `"250ms"` / `"5m"` / `"1h30m"`
//! - `size`: `32768` / `"32KiB"` / `"1MiB"`
//! - `types`: the validated types everyone else uses

mod duration;
mod sections;
mod size;
pub mod types;
mod walk;

use std::fmt;
use std::path::Path;

pub use duration::{format_duration, parse_duration, DurationError};
pub use size::{format_size, parse_size, SizeError};
pub use types::*;

/// One problem in a config file, located by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `pools.green.backends[1]`; empty for whole-file problems.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one file, in the order the file was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.0 {
            writeln!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a config file. Relative paths inside it resolve
/// against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("cannot read \"{}\": {e}", path.display()),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base)
}

/// Validates config text; `base_dir` anchors relative paths.
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let document: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let location = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            })
            .unwrap_or_default();
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("TOML syntax error at {location}{}", e.message()),
        }])
    })?;
    sections::read(&document, base_dir)
}

/// A percentage that is not a valid traffic share.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ShareError {
    #[error("{0} is not a percentage between 0 and 100")]
    OutOfRange(f64),
    #[error("{0} has more than two decimals (0.01 % is the finest step)")]
    TooFine(f64),
}

/// A percentage with at most two decimals → hundredths of a percent.
pub fn parse_share(percent: f64) -> Result<Share, ShareError> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(ShareError::OutOfRange(percent));
    }
    let units = (percent * 100.0).round();
    if (percent * 100.0 - units).abs() > 1e-6 {
        return Err(ShareError::TooFine(percent));
    }
    Ok(Share(units as u16))
}

#[cfg(test)]
mod tests;
