//! `[mirror]` (SPEC §11): copy a share of live requests to a pool whose
//! answers are discarded. Optional; without it nothing is copied.

use std::collections::BTreeMap;

use crate::config::types::{MirrorConfig, PoolConfig, Share, UpstreamProtocol};
use crate::config::walk::{Errors, Section};

/// `max_body` when absent.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
/// The largest `max_body`: a copy is queued whole, in a per-thread queue
/// of 2 MiB (`crate::mirror::tap`), which must hold at least two.
pub const MAX_MAX_BODY: u64 = 1024 * 1024;

pub(super) fn read_mirror(
    errors: &mut Errors,
    root: &Section,
    pools: &BTreeMap<String, PoolConfig>,
) -> Option<MirrorConfig> {
    if !root.has("mirror") {
        return None;
    }
    root.section(errors, "mirror", |m, errors| {
        let pool = match m.str(errors, "pool") {
            // Copies go out as HTTP/1.1 in clear (`crate::mirror::send`).
            Some(name) if pools.get(name).is_some_and(|p| p.upstream.tls || p.upstream.protocol == UpstreamProtocol::Http2) => {
                errors.add(
                    m.key("pool"),
                    format!("pool \"{name}\" is reached over TLS or HTTP/2; copies are sent as plain HTTP/1.1 only"),
                );
                None
            }
            Some(name) if pools.contains_key(name) => Some(name.to_string()),
            Some(name) => {
                errors.add(m.key("pool"), format!("no such pool \"{name}\""));
                None
            }
            None => {
                errors.add(m.key("pool"), "missing: the pool that gets the copies");
                None
            }
        };
        let percent = match m.number(errors, "percent") {
            None => {
                errors.add(
                    m.key("percent"),
                    "missing: the share of requests copied (0 to 100)",
                );
                None
            }
            Some(percent) => match crate::config::parse_share(percent) {
                Ok(share) => Some(share),
                Err(e) => {
                    errors.add(m.key("percent"), e.to_string());
                    None
                }
            },
        };
        let methods = match m.array(errors, "methods") {
            None => vec!["GET".to_string(), "HEAD".to_string()],
            Some(list) => {
                let mut methods = Vec::new();
                for (i, value) in list.iter().enumerate() {
                    let path = format!("{}[{i}]", m.key("methods"));
                    match value.as_str() {
                        Some(method) if is_method(method) => {
                            let method = method.to_ascii_uppercase();
                            if !methods.contains(&method) {
                                methods.push(method);
                            }
                        }
                        Some(method) => {
                            errors.add(path, format!("\"{method}\" is not an HTTP method"))
                        }
                        None => errors.add(path, "expected a method name like \"GET\""),
                    }
                }
                if list.is_empty() {
                    errors.add(m.key("methods"), "must name at least one method");
                }
                methods
            }
        };
        let max_body = m
            .size(errors, "max_body", 0..=MAX_MAX_BODY)
            .unwrap_or(DEFAULT_MAX_BODY);
        Some(MirrorConfig {
            pool: pool?,
            percent: percent.unwrap_or(Share::ZERO),
            methods,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
        })
    })
}

/// An HTTP method token (RFC 9110 §9.1: a `tchar` token), `CONNECT` aside:
/// a tunnel is not a request to copy.
fn is_method(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 32
        && !text.eq_ignore_ascii_case("CONNECT")
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Share};
    use std::path::Path;

    const POOLS: &str = "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n\
                         [pools.green]\nbackends = [\"127.0.0.1:9002\"]\n[split]\nblue = 100\n";

    fn errors(section: &str) -> String {
        parse(&format!("{POOLS}{section}"), Path::new("/"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn absent_means_no_mirror_and_defaults_are_get_head_64k() {
        assert_eq!(parse(POOLS, Path::new("/")).unwrap().mirror, None);
        let text = format!("{POOLS}[mirror]\npool = \"green\"\npercent = 12.5\n");
        let mirror = parse(&text, Path::new("/")).unwrap().mirror.unwrap();
        assert_eq!(mirror.pool, "green");
        assert_eq!(mirror.percent, Share(1250));
        assert_eq!(mirror.methods, ["GET", "HEAD"]);
        assert_eq!(mirror.max_body, 64 * 1024);
    }

    #[test]
    fn every_key_is_checked_with_its_path() {
        let text = errors(
            "[mirror]\npool = \"red\"\npercent = 100.001\nmethods = [\"GET\", \"B@D\", 3]\n\
             max_body = \"2MiB\"\nqueue = 1\n",
        );
        for expected in [
            "mirror.queue: unknown key",
            "mirror.pool: no such pool \"red\"",
            "mirror.percent: 100.001",
            "mirror.methods[1]: \"B@D\" is not an HTTP method",
            "mirror.methods[2]: expected a method name",
            "mirror.max_body: \"2MiB\" is out of range",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
        let missing = errors("[mirror]\n");
        assert!(missing.contains("mirror.pool: missing"), "{missing}");
        assert!(missing.contains("mirror.percent: missing"), "{missing}");
        assert!(errors(
            "[mirror]\npool = \"green\"\npercent = 0.01\nmethods = [\"post\"]\nmax_body = 0\n"
        )
        .is_empty());
    }

    #[test]
    fn a_pool_reached_over_tls_cannot_be_the_mirror() {
        let text = format!(
            "{POOLS}[pools.red]\nbackends = [\"127.0.0.1:9003\"]\ntls = true\n\
             [mirror]\npool = \"red\"\npercent = 1\n"
        );
        let errors = parse(&text, Path::new("/")).unwrap_err().to_string();
        assert!(
            errors.contains("mirror.pool: pool \"red\" is reached over TLS"),
            "{errors}"
        );
    }

    #[test]
    fn methods_are_upper_cased_and_deduplicated() {
        let text = format!(
            "{POOLS}[mirror]\npool = \"green\"\npercent = 1\nmethods = [\"get\", \"GET\", \"Post\"]\n"
        );
        let mirror = parse(&text, Path::new("/")).unwrap().mirror.unwrap();
        assert_eq!(mirror.methods, ["GET", "POST"]);
    }
}
