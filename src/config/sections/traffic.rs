//! Where requests go: `[split]` (shares that sum to 100), `[sticky]` (the
//! key that keeps a client on one pool) and `[[route]]` (overrides checked
//! first). Header names and values are parsed here into the types the
//! router compares with, so building a routing table cannot fail or skip
//! a rule.

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderValue;
use toml::Value;

use super::header_name;
use crate::config::parse_share;
use crate::config::types::{
    IssueCookie, PoolConfig, RouteMatch, RouteRule, Share, Split, StickyKey,
};
use crate::config::walk::{expected, join, number, Errors, Section};

pub(super) fn read_split(
    errors: &mut Errors,
    root: &Section,
    pools: &BTreeMap<String, PoolConfig>,
) -> Split {
    let mut split: Split = pools
        .keys()
        .map(|name| (name.clone(), Share::ZERO))
        .collect();
    let table = match root.raw("split") {
        Some(Value::Table(t)) => t,
        Some(other) => {
            expected(errors, "split", "a table of pool = percent", other);
            return split;
        }
        None => {
            if pools.len() == 1 {
                for share in split.values_mut() {
                    *share = Share::FULL;
                }
            } else if pools.len() > 1 {
                errors.add(
                    "split",
                    "missing; give each pool a share (they must sum to 100)",
                );
            }
            return split;
        }
    };
    let mut sum: u32 = 0;
    let mut all_valid = true;
    for (name, value) in table {
        let path = join("split", name);
        let share = match number(value) {
            Some(percent) => match parse_share(percent) {
                Ok(share) => share,
                Err(e) => {
                    errors.add(&path, e.to_string());
                    all_valid = false;
                    continue;
                }
            },
            None => {
                expected(errors, &path, "a percentage", value);
                all_valid = false;
                continue;
            }
        };
        let Some(pool) = pools.get(name) else {
            errors.add(&path, "no such pool");
            all_valid = false;
            continue;
        };
        if share > Share::ZERO && !pool.has_backends() {
            errors.add(
                &path,
                format!("pool has a share of {share} but no backends"),
            );
        }
        sum += u32::from(share.units());
        split.insert(name.clone(), share);
    }
    if all_valid && sum != u32::from(Share::FULL.units()) {
        errors.add(
            "split",
            format!(
                "shares sum to {}, must be 100",
                Share(sum.min(u32::from(u16::MAX)) as u16)
            ),
        );
    }
    split
}

/// `[sticky]`: the key, and for a `cookie:NAME` key whether clients
/// without the cookie are given one (`issue_cookie`, `cookie_max_age`).
pub(super) fn read_sticky(
    errors: &mut Errors,
    root: &Section,
) -> (Option<StickyKey>, Option<IssueCookie>) {
    if root.raw("sticky").is_none() {
        return (None, None);
    }
    root.section(errors, "sticky", |s, errors| {
        let text = match s.str(errors, "key") {
            Some(text) => text,
            None => {
                if !s.has("key") {
                    errors.add(
                        s.key("key"),
                        "missing (\"cookie:NAME\", \"header:NAME\" or \"ip\")",
                    );
                }
                return (None, None);
            }
        };
        let key = match text.split_once(':') {
            Some(("cookie", name)) if valid_cookie_name(name) => {
                Some(StickyKey::Cookie(name.to_string()))
            }
            Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(StickyKey::Header),
            None if text == "ip" => Some(StickyKey::ClientIp),
            _ => None,
        };
        if key.is_none() {
            errors.add(
                s.key("key"),
                format!("invalid sticky key \"{text}\" (expected \"cookie:NAME\", \"header:NAME\" or \"ip\")"),
            );
        }
        let issue = s.boolean(errors, "issue_cookie").unwrap_or(false);
        let max_age = s.positive_duration(errors, "cookie_max_age", Duration::from_secs(86_400));
        let cookie = match &key {
            Some(StickyKey::Cookie(name)) if issue => Some(IssueCookie {
                name: name.clone(),
                max_age,
            }),
            Some(_) if issue => {
                errors.add(
                    s.key("issue_cookie"),
                    "needs key = \"cookie:NAME\" (the cookie it issues)",
                );
                None
            }
            _ => {
                if s.has("cookie_max_age") {
                    errors.add(s.key("cookie_max_age"), "applies only with issue_cookie = true");
                }
                None
            }
        };
        (key, cookie)
    })
}

/// A cookie name is an RFC 6265 token: no separators, spaces or controls.
fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

pub(super) fn read_routes(
    errors: &mut Errors,
    root: &Section,
    pools: &BTreeMap<String, PoolConfig>,
) -> Vec<RouteRule> {
    let mut routes = Vec::new();
    for (i, item) in root
        .array(errors, "route")
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("route[{i}]");
        let Some(table) = item.as_table() else {
            expected(errors, &path, "a table", item);
            continue;
        };
        let rule = Section::read(errors, path, table, |r, errors| {
            read_route(errors, r, pools)
        });
        routes.extend(rule);
    }
    routes
}

/// One `[[route]]`; `None` when it has an error.
fn read_route(
    errors: &mut Errors,
    r: &Section,
    pools: &BTreeMap<String, PoolConfig>,
) -> Option<RouteRule> {
    let header = r.str(errors, "header");
    let cookie = r.str(errors, "cookie");
    let equals = r.str(errors, "equals");
    let pool = r.str(errors, "pool");
    if !r.has("equals") {
        errors.add(r.key("equals"), "missing");
    }
    match pool {
        Some(name) if !pools.contains_key(name) => {
            errors.add(r.key("pool"), format!("no such pool \"{name}\""))
        }
        None if !r.has("pool") => errors.add(r.key("pool"), "missing"),
        _ => {}
    }
    let matcher = match (header, cookie) {
        (Some(_), Some(_)) => {
            errors.add(&r.path, "give either header or cookie, not both");
            None
        }
        (Some(name), None) => {
            let name = header_name(errors, &r.key("header"), name);
            match (name, equals) {
                (Some(name), Some(text)) => match HeaderValue::from_bytes(text.as_bytes()) {
                    Ok(value) => Some(RouteMatch::Header { name, value }),
                    // No request header can carry it: a rule that could
                    // never match is an error, not a silent no-op.
                    Err(_) => {
                        errors.add(
                            r.key("equals"),
                            format!("{text:?} is not a valid header value"),
                        );
                        None
                    }
                },
                _ => None,
            }
        }
        (None, Some("")) => {
            errors.add(r.key("cookie"), "must not be empty");
            None
        }
        (None, Some(name)) => equals.map(|value| RouteMatch::Cookie {
            name: name.to_string(),
            value: value.to_string(),
        }),
        (None, None) => {
            if !r.has("header") && !r.has("cookie") {
                errors.add(&r.path, "missing header or cookie to match on");
            }
            None
        }
    };
    let pool = pool.filter(|name| pools.contains_key(*name))?;
    Some(RouteRule {
        matcher: matcher?,
        pool: pool.to_string(),
    })
}
