//! TEMPORARY STUB — replaced by the real config module.
pub mod types;
pub use types::*;
use std::path::Path;
#[derive(Debug)]
pub struct ConfigError { pub path: String, pub message: String }
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);
impl std::fmt::Display for ConfigErrors { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { for e in &self.0 { writeln!(f, "{}: {}", e.path, e.message)?; } Ok(()) } }
pub fn load(_path: &Path) -> Result<Config, ConfigErrors> { Err(ConfigErrors(vec![])) }
pub fn parse(_t: &str, _b: &Path) -> Result<Config, ConfigErrors> { Err(ConfigErrors(vec![])) }
pub fn format_duration(d: std::time::Duration) -> String { format!("{d:?}") }
