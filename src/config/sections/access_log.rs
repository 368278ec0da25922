//! `[access_log]`: where the access log goes, its format, and which
//! requests it keeps. The section is optional; without it there is no log.

use std::path::Path;

use super::resolve_path;
use crate::config::types::{AccessLogConfig, AccessLogFormat, AccessLogPath, Share};
use crate::config::walk::{Errors, Section};

pub(super) fn read_access_log(
    errors: &mut Errors,
    root: &Section,
    base_dir: &Path,
) -> Option<AccessLogConfig> {
    if !root.has("access_log") {
        return None;
    }
    root.section(errors, "access_log", |a, errors| {
        let path = match a.str(errors, "path") {
            Some("-") => Some(AccessLogPath::Stderr),
            Some("") => {
                errors.add(a.key("path"), "must not be empty (\"-\" is stderr)");
                None
            }
            Some(text) => Some(AccessLogPath::File(resolve_path(base_dir, text))),
            None => {
                errors.add(
                    a.key("path"),
                    "missing: the file to write (\"-\" is stderr)",
                );
                None
            }
        };
        let format = match a.str(errors, "format") {
            None | Some("json") => AccessLogFormat::Json,
            Some("combined") => AccessLogFormat::Combined,
            Some(other) => {
                errors.add(
                    a.key("format"),
                    format!("\"{other}\" is not a format (\"json\" or \"combined\")"),
                );
                AccessLogFormat::Json
            }
        };
        let sample = match a.number(errors, "sample") {
            None => Share::FULL,
            Some(percent) => match crate::config::parse_share(percent) {
                Ok(share) => share,
                Err(e) => {
                    errors.add(a.key("sample"), e.to_string());
                    Share::FULL
                }
            },
        };
        let errors_only = a.boolean(errors, "errors_only").unwrap_or(false);
        path.map(|path| AccessLogConfig {
            path,
            format,
            sample,
            errors_only,
        })
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, AccessLogFormat, AccessLogPath, Share};
    use std::path::Path;

    const POOLS: &str = "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[split]\nblue = 100\n";

    fn errors(section: &str) -> String {
        parse(&format!("{POOLS}{section}"), Path::new("/etc/sy"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn absent_means_no_log_and_defaults_are_json_everything() {
        let none = parse(POOLS, Path::new("/etc/sy")).unwrap();
        assert_eq!(none.access_log, None);
        let text = format!("{POOLS}[access_log]\npath = \"logs/access.log\"\n");
        let log = parse(&text, Path::new("/etc/sy"))
            .unwrap()
            .access_log
            .unwrap();
        assert_eq!(
            log.path,
            AccessLogPath::File("/etc/sy/logs/access.log".into())
        );
        assert_eq!(log.format, AccessLogFormat::Json);
        assert_eq!(log.sample, Share::FULL);
        assert!(!log.errors_only);
    }

    #[test]
    fn every_key_is_checked_with_its_path() {
        let text = errors(
            "[access_log]\nformat = \"xml\"\nsample = 101\nerrors_only = \"yes\"\nrotate = 1\n",
        );
        for expected in [
            "access_log.rotate: unknown key",
            "access_log.path: missing",
            "access_log.format: \"xml\" is not a format",
            "access_log.sample: 101 is not a percentage",
            "access_log.errors_only:",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
        assert!(errors("[access_log]\npath = \"-\"\nsample = 0.5\n").is_empty());
    }
}
