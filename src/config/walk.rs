//! Reading a parsed TOML document by hand, collecting every error.
//!
//! serde's derive stops at the first problem; an operator fixing a file
//! wants all of them at once, each with its key path. So the document is
//! parsed to a `toml::Table` and each section is read through a [`Section`]
//! that knows its valid keys: reading a key checks its type, and
//! [`Section::finish`] reports every key nobody asked for as unknown, with a
//! "did you mean" when a known key is one or two edits away.

use std::time::Duration;

use toml::Value;

use super::duration::parse_duration;
use super::ConfigError;

/// Collects errors while the document is read.
#[derive(Default)]
pub(super) struct Errors(pub Vec<ConfigError>);

impl Errors {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// "a string", "an integer", … for messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// One TOML table with the keys it may contain.
pub(super) struct Section<'a> {
    pub path: String,
    pub table: &'a toml::Table,
    known: &'static [&'static str],
}

static EMPTY: std::sync::OnceLock<toml::Table> = std::sync::OnceLock::new();

impl<'a> Section<'a> {
    pub fn new(
        path: impl Into<String>,
        table: &'a toml::Table,
        known: &'static [&'static str],
    ) -> Self {
        Section {
            path: path.into(),
            table,
            known,
        }
    }

    /// The sub-table `key`; an absent key reads as an empty table so that
    /// defaults apply, a non-table is an error (and reads as empty too).
    pub fn section(
        &self,
        errors: &mut Errors,
        key: &str,
        known: &'static [&'static str],
    ) -> Section<'a> {
        let path = self.key(key);
        match self.table.get(key) {
            Some(Value::Table(table)) => Section::new(path, table, known),
            Some(other) => {
                errors.add(
                    &path,
                    format!("expected a table, found {}", describe(other)),
                );
                Section::new(path, empty_table(), known)
            }
            None => Section::new(path, empty_table(), known),
        }
    }

    pub fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    fn typed<T>(
        &self,
        errors: &mut Errors,
        key: &str,
        expected: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.table.get(key)?;
        let result = read(value);
        if result.is_none() {
            errors.add(
                self.key(key),
                format!("expected {expected}, found {}", describe(value)),
            );
        }
        result
    }

    pub fn str(&self, errors: &mut Errors, key: &str) -> Option<&'a str> {
        self.typed(errors, key, "a string", Value::as_str)
    }

    pub fn boolean(&self, errors: &mut Errors, key: &str) -> Option<bool> {
        self.typed(errors, key, "a boolean", Value::as_bool)
    }

    pub fn array(&self, errors: &mut Errors, key: &str) -> Option<&'a Vec<Value>> {
        self.typed(errors, key, "an array", Value::as_array)
    }

    /// An integer within `range`, else an error naming the range.
    pub fn int(
        &self,
        errors: &mut Errors,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let n = self.typed(errors, key, "an integer", Value::as_integer)?;
        if range.contains(&n) {
            Some(n)
        } else {
            errors.add(
                self.key(key),
                format!("{n} is out of range ({}..={})", range.start(), range.end()),
            );
            None
        }
    }

    /// A number, integer or float.
    pub fn number(&self, errors: &mut Errors, key: &str) -> Option<f64> {
        self.typed(errors, key, "a number", number)
    }

    pub fn duration(&self, errors: &mut Errors, key: &str) -> Option<Duration> {
        let text = self.typed(errors, key, "a duration string like \"10s\"", Value::as_str)?;
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(message) => {
                errors.add(self.key(key), message);
                None
            }
        }
    }

    /// A duration that must be above zero; `default` when absent.
    pub fn positive_duration(&self, errors: &mut Errors, key: &str, default: Duration) -> Duration {
        match self.duration(errors, key) {
            Some(d) if d.is_zero() => {
                errors.add(self.key(key), "must be greater than 0");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// Reports every key of this table that is not in `known`.
    pub fn finish(&self, errors: &mut Errors) {
        for key in self.table.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let message = match suggest(key, self.known) {
                Some(near) => format!("unknown key (did you mean \"{near}\"?)"),
                None => "unknown key".to_string(),
            };
            errors.add(self.key(key), message);
        }
    }
}

fn empty_table() -> &'static toml::Table {
    EMPTY.get_or_init(toml::Table::new)
}

pub(super) fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(n) => Some(*n as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

pub(super) fn expected(errors: &mut Errors, path: &str, what: &str, value: &Value) {
    errors.add(path, format!("expected {what}, found {}", describe(value)));
}

/// The known key closest to `key`, if it is at most two edits away.
fn suggest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("max_eror_rate", "max_error_rate"), 1);
        assert_eq!(edit_distance("windw", "window"), 1);
        assert_eq!(edit_distance("abc", "xyz"), 3);
        assert_eq!(suggest("treads", &["threads", "listen"]), Some("threads"));
        assert_eq!(suggest("zzzzzz", &["threads", "listen"]), None);
    }
}
