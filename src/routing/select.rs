//! Per-request pool choice: route rules, then the sticky bucket, then the
//! weighted random split. Reads headers in place; allocates nothing.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use super::rng::below;
use super::sticky::{bucket_of, StickyId};
use super::table::{CompiledMatch, CompiledSticky, PoolId, RoutingTable};

/// Why a pool was chosen (kept small; useful in tests and debug logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolChoice {
    Route(PoolId),
    Sticky(PoolId),
    /// A client without the sticky cookie was given `id` (`issue_cookie`):
    /// its bucket chose the pool, and the response sets the cookie.
    Issued(PoolId, StickyId),
    Split(PoolId),
}

impl PoolChoice {
    pub fn pool(self) -> PoolId {
        match self {
            PoolChoice::Route(p)
            | PoolChoice::Sticky(p)
            | PoolChoice::Issued(p, _)
            | PoolChoice::Split(p) => p,
        }
    }

    /// The sticky id to set as a cookie on the response, if one was issued.
    pub fn issued(self) -> Option<StickyId> {
        match self {
            PoolChoice::Issued(_, id) => Some(id),
            _ => None,
        }
    }

    /// Why the pool was chosen, as the access log says it.
    pub fn why(self) -> &'static str {
        match self {
            PoolChoice::Route(_) => "route",
            PoolChoice::Sticky(_) => "sticky",
            PoolChoice::Issued(..) => "sticky_new",
            PoolChoice::Split(_) => "split",
        }
    }
}

impl RoutingTable {
    /// Chooses the pool for one request. `random` is a fresh random value
    /// (from [`super::fast_random`]); passing it in keeps this deterministic
    /// under test. `None` only when no pool has a share and no rule matched.
    #[inline]
    pub fn choose_pool<H: RequestHeaders + ?Sized>(
        &self,
        headers: &H,
        client_ip: Option<IpAddr>,
        random: u64,
    ) -> Option<PoolChoice> {
        for (matcher, pool) in &self.routes {
            if matches(matcher, headers) {
                return Some(PoolChoice::Route(*pool));
            }
        }
        if let Some(bucket) = self.sticky_bucket(headers, client_ip) {
            if let Some(pool) = self.sticky_map.get(usize::from(bucket)) {
                return Some(PoolChoice::Sticky(usize::from(*pool)));
            }
        } else if self.cookie_issuer.is_some() {
            // A new client: its own id from now on, so raising a pool's
            // share only ever moves clients into it.
            let id = StickyId::from_random(random);
            if let Some(pool) = self.sticky_map.get(usize::from(id.bucket())) {
                return Some(PoolChoice::Issued(usize::from(*pool), id));
            }
        }
        let point = below(10_000, random) as u16;
        self.split_ranges
            .iter()
            .find(|(end, _)| point < *end)
            .map(|(_, pool)| PoolChoice::Split(*pool))
    }

    /// The sticky bucket of this request, if stickiness is on and the request
    /// carries the key (a client without the cookie/header falls back to the
    /// random split).
    fn sticky_bucket<H: RequestHeaders + ?Sized>(
        &self,
        headers: &H,
        client_ip: Option<IpAddr>,
    ) -> Option<u16> {
        match self.sticky.as_ref()? {
            CompiledSticky::Header(name) => headers.values(name).next().map(bucket_of),
            CompiledSticky::Cookie(name) => cookie_value(headers, name).map(bucket_of),
            CompiledSticky::ClientIp => client_ip.map(|ip| match ip {
                IpAddr::V4(v4) => bucket_of(&v4.octets()),
                IpAddr::V6(v6) => bucket_of(&v6.octets()),
            }),
        }
    }
}

/// Read access to a request's headers, so pingora's parsed `HeaderMap` and
/// the fast path's `httparse` headers route the same way.
pub trait RequestHeaders {
    /// The values of every header line named `name`, in order.
    fn values<'h>(&'h self, name: &'h HeaderName) -> impl Iterator<Item = &'h [u8]> + 'h;
}

impl RequestHeaders for HeaderMap {
    fn values<'h>(&'h self, name: &'h HeaderName) -> impl Iterator<Item = &'h [u8]> + 'h {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }
}

impl RequestHeaders for [httparse::Header<'_>] {
    fn values<'h>(&'h self, name: &'h HeaderName) -> impl Iterator<Item = &'h [u8]> + 'h {
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name.as_str()))
            .map(|h| h.value)
    }
}

fn matches<H: RequestHeaders + ?Sized>(matcher: &CompiledMatch, headers: &H) -> bool {
    match matcher {
        CompiledMatch::Header { name, value } => {
            headers.values(name).any(|v| v == value.as_bytes())
        }
        CompiledMatch::Cookie { name, value } => {
            cookie_value(headers, name).is_some_and(|v| v == value.as_slice())
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` header(s), if present.
/// HTTP/2 may split cookies over several header lines, so all are searched.
pub fn cookie_value<'h, H: RequestHeaders + ?Sized>(
    headers: &'h H,
    name: &[u8],
) -> Option<&'h [u8]> {
    headers
        .values(&http::header::COOKIE)
        .flat_map(|line| line.split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii_start();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii_end() == name).then(|| pair[eq + 1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn table(text: &str) -> RoutingTable {
        RoutingTable::from_config_text(text)
    }

    #[test]
    fn a_99_99_to_0_01_split_is_honoured_over_a_million_picks() {
        let t = table(
            "[pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[pools.green]\nbackends = [\"127.0.0.1:2\"]\n\
             [split]\nblue = 99.99\ngreen = 0.01\n",
        );
        let green = t
            .pool("green")
            .map(|_| t.pools.iter().position(|p| p.name == "green").unwrap())
            .unwrap();
        let headers = HeaderMap::new();
        let picks = (0..1_000_000)
            .filter(|_| {
                t.choose_pool(&headers, None, super::super::fast_random())
                    == Some(PoolChoice::Split(green))
            })
            .count();
        // Expected 100; a binomial with sd 10: 60..=140 is four sd either side.
        assert!(
            (60..=140).contains(&picks),
            "green got {picks} of 1 000 000"
        );
    }

    #[test]
    fn a_zero_share_pool_is_never_picked_by_the_split() {
        let t = table(
            "[pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[pools.green]\nbackends = [\"127.0.0.1:2\"]\n\
             [split]\nblue = 100\ngreen = 0\n",
        );
        let headers = HeaderMap::new();
        assert!((0..100_000).all(
            |_| t.choose_pool(&headers, None, super::super::fast_random())
                == Some(PoolChoice::Split(0))
        ));
    }

    #[test]
    fn cookie_values_are_found_in_any_cookie_line() {
        let h = headers(&[
            ("cookie", "a=1; session=abc ; b=2"),
            ("cookie", "canary=true"),
        ]);
        assert_eq!(cookie_value(&h, b"session"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(&h, b"canary"), Some(&b"true"[..]));
        assert_eq!(cookie_value(&h, b"missing"), None);
        assert_eq!(
            cookie_value(&headers(&[("cookie", "garbage;;=;x")]), b"x"),
            None
        );
    }
}
