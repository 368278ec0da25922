//! Reading a parsed TOML document by hand, collecting every error.
//!
//! serde's derive stops at the first problem; an operator fixing a file
//! wants all of them at once, each with its key path. So the document is
//! parsed to a `toml::Table` and each table is read through a [`Section`]
//! that records every key its reader asks for. When the reader is done,
//! every key of the table that nobody asked for is reported as unknown
//! (with a "did you mean" when an asked-for key is one or two edits away).
//! The readers are the only list of valid keys: a key can't be accepted
//! without being read, nor read without being accepted.

use std::cell::RefCell;
use std::time::Duration;

use toml::Value;

use super::duration::parse_duration;
use super::size::{format_size, parse_size};
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

/// One TOML table being read, and the keys its reader has asked for so far.
pub(super) struct Section<'a> {
    pub path: String,
    table: &'a toml::Table,
    /// In the order first asked (that order breaks ties between suggestions).
    asked: RefCell<Vec<&'static str>>,
}

static EMPTY: std::sync::OnceLock<toml::Table> = std::sync::OnceLock::new();

impl<'a> Section<'a> {
    /// Runs `reader` over `table`, then reports each key of `table` that
    /// `reader` did not ask for. Those errors go where the table's errors
    /// begin, so a file's errors read top-down per table: unknown keys
    /// first, then the values.
    pub fn read<T>(
        errors: &mut Errors,
        path: impl Into<String>,
        table: &'a toml::Table,
        reader: impl FnOnce(&Section<'a>, &mut Errors) -> T,
    ) -> T {
        let section = Section {
            path: path.into(),
            table,
            asked: RefCell::new(Vec::new()),
        };
        let start = errors.0.len();
        let value = reader(&section, errors);
        let unknown = section.unknown_keys();
        errors.0.splice(start..start, unknown);
        value
    }

    /// Reads the sub-table `key` with `reader`; an absent key reads as an
    /// empty table so that defaults apply, a non-table is an error (and
    /// reads as empty too).
    pub fn section<T>(
        &self,
        errors: &mut Errors,
        key: &'static str,
        reader: impl FnOnce(&Section<'a>, &mut Errors) -> T,
    ) -> T {
        let path = self.key(key);
        let table = match self.raw(key) {
            Some(Value::Table(table)) => table,
            Some(other) => {
                errors.add(
                    &path,
                    format!("expected a table, found {}", describe(other)),
                );
                empty_table()
            }
            None => empty_table(),
        };
        Section::read(errors, path, table, reader)
    }

    pub fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Is `key` present? Only a question: it does not make `key` known
    /// (a reader must read a key's value for the key to be accepted).
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The value of `key` as written; asking makes `key` a known key.
    pub fn raw(&self, key: &'static str) -> Option<&'a Value> {
        let mut asked = self.asked.borrow_mut();
        if !asked.contains(&key) {
            asked.push(key);
        }
        self.table.get(key)
    }

    fn typed<T>(
        &self,
        errors: &mut Errors,
        key: &'static str,
        expected: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.raw(key)?;
        let result = read(value);
        if result.is_none() {
            errors.add(
                self.key(key),
                format!("expected {expected}, found {}", describe(value)),
            );
        }
        result
    }

    pub fn str(&self, errors: &mut Errors, key: &'static str) -> Option<&'a str> {
        self.typed(errors, key, "a string", Value::as_str)
    }

    pub fn boolean(&self, errors: &mut Errors, key: &'static str) -> Option<bool> {
        self.typed(errors, key, "a boolean", Value::as_bool)
    }

    pub fn array(&self, errors: &mut Errors, key: &'static str) -> Option<&'a Vec<Value>> {
        self.typed(errors, key, "an array", Value::as_array)
    }

    /// An integer within `range`, else an error naming the range.
    pub fn int(
        &self,
        errors: &mut Errors,
        key: &'static str,
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
    pub fn number(&self, errors: &mut Errors, key: &'static str) -> Option<f64> {
        self.typed(errors, key, "a number", number)
    }

    pub fn duration(&self, errors: &mut Errors, key: &'static str) -> Option<Duration> {
        let text = self.typed(errors, key, "a duration string like \"10s\"", Value::as_str)?;
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                errors.add(self.key(key), e.to_string());
                None
            }
        }
    }

    /// A size in bytes: a TOML integer, or a string like `"32KiB"`
    /// (`super::size`); within `range`, else an error naming the range.
    pub fn size(
        &self,
        errors: &mut Errors,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let bytes = match self.raw(key)? {
            Value::Integer(n) => u64::try_from(*n).ok(),
            Value::String(text) => match parse_size(text) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    errors.add(self.key(key), e.to_string());
                    return None;
                }
            },
            other => {
                expected(
                    errors,
                    &self.key(key),
                    "a size like \"32KiB\" or bytes",
                    other,
                );
                return None;
            }
        };
        match bytes {
            Some(bytes) if range.contains(&bytes) => Some(bytes),
            _ => {
                errors.add(
                    self.key(key),
                    format!(
                        "{} is out of range ({}..={})",
                        self.raw(key).map_or_else(String::new, |v| v.to_string()),
                        format_size(*range.start()),
                        format_size(*range.end())
                    ),
                );
                None
            }
        }
    }

    /// A duration that must be above zero; `default` when absent.
    pub fn positive_duration(
        &self,
        errors: &mut Errors,
        key: &'static str,
        default: Duration,
    ) -> Duration {
        match self.duration(errors, key) {
            Some(d) if d.is_zero() => {
                errors.add(self.key(key), "must be greater than 0");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// An error for every key of this table that was never asked for.
    fn unknown_keys(&self) -> Vec<ConfigError> {
        let asked = self.asked.borrow();
        self.table
            .keys()
            .filter(|key| !asked.contains(&key.as_str()))
            .map(|key| ConfigError {
                path: self.key(key),
                message: match suggest(key, &asked) {
                    Some(near) => format!("unknown key (did you mean \"{near}\"?)"),
                    None => "unknown key".to_string(),
                },
            })
            .collect()
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

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test TOML parses")
    }

    /// Reads `text` with a reader that asks for `alpha` and `bravo` (and
    /// only checks whether `charlie` is there); returns every message.
    fn read_ab(text: &str) -> Vec<String> {
        let document = table(text);
        let mut errors = Errors::default();
        Section::read(&mut errors, "t", &document, |s, errors| {
            s.int(errors, "alpha", 0..=9);
            s.str(errors, "bravo");
            s.has("charlie");
        });
        errors.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_keys_a_reader_asks_for_are_the_keys_it_accepts() {
        assert!(read_ab("alpha = 1\nbravo = \"x\"\n").is_empty());
        assert!(read_ab("").is_empty(), "absent keys are no error");
        assert_eq!(
            read_ab("alpha = 1\nbrav = 2\nzulu = 3\n"),
            [
                "t.brav: unknown key (did you mean \"bravo\"?)",
                "t.zulu: unknown key",
            ]
        );
    }

    #[test]
    fn a_key_only_checked_for_presence_is_unknown() {
        assert_eq!(read_ab("charlie = 1\n"), ["t.charlie: unknown key"]);
    }

    #[test]
    fn unknown_keys_come_before_the_errors_of_their_table() {
        assert_eq!(
            read_ab("alpha = 99\nxray = 1\n"),
            ["t.xray: unknown key", "t.alpha: 99 is out of range (0..=9)"]
        );
    }

    #[test]
    fn nested_tables_report_their_own_unknown_keys() {
        let document = table("[inner]\nkeep = 1\nstray = 2\n");
        let mut errors = Errors::default();
        Section::read(&mut errors, "", &document, |root, errors| {
            root.section(errors, "inner", |inner, errors| {
                inner.int(errors, "keep", 0..=9);
            });
        });
        let messages: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        assert_eq!(messages, ["inner.stray: unknown key"]);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("max_eror_rate", "max_error_rate"), 1);
        assert_eq!(edit_distance("windw", "window"), 1);
        assert_eq!(edit_distance("abc", "xyz"), 3);
        assert_eq!(suggest("treads", &["threads", "listen"]), Some("threads"));
        assert_eq!(suggest("zzzzzz", &["threads", "listen"]), None);
    }
}
