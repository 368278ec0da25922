//! Sticky buckets: a client key hashes to one of 10 000 buckets, and each
//! bucket belongs to one pool.
//!
//! Buckets are assigned to pools by weighted rendezvous hashing: every pool
//! scores every bucket with `share / -ln(u)`, `u` a stable hash of
//! (pool name, bucket) in (0, 1), and the highest score wins; a pool owns a
//! bucket with probability share / 100. Raising one pool's share raises only
//! that pool's scores, so buckets can only move *into* it, and lowering it
//! can only move buckets *out* of it. With two pools (blue/green) every move
//! therefore goes from the shrinking pool to the growing one. With three or
//! more, a change that raises one pool and lowers the others in proportion
//! moves clients only into the raised pool; an arbitrary change moves each
//! client only into a pool whose score rose or out of one whose score fell.
//! Bucket counts follow the shares in expectation (within a fraction of a
//! percent), not exactly: that is the price of not keeping history.
//!
//! The hash is FNV-1a (64-bit): stable across processes and versions, so a
//! client keeps its bucket across restarts and upgrades.

pub const BUCKETS: u32 = 10_000;

/// FNV-1a over bytes; stable forever (persisted behaviour depends on it).
#[inline]
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Finaliser that spreads FNV's weak low bits (from splitmix64).
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bucket (0..10 000) of a sticky key.
#[inline]
pub fn bucket_of(key: &[u8]) -> u16 {
    (mix(fnv1a(key, 0)) % u64::from(BUCKETS)) as u16
}

/// A sticky id issued to a new client: 16 lowercase hex digits, the
/// cookie's value. Its bucket is [`bucket_of`] its text, as for any cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StickyId(pub [u8; 16]);

impl StickyId {
    /// The id made from a random value (no allocation).
    pub fn from_random(random: u64) -> StickyId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits = mix(random ^ 0x5713_c0de_5eed_0001);
        let mut text = [0u8; 16];
        for (i, digit) in text.iter_mut().enumerate() {
            *digit = HEX[((bits >> (60 - 4 * i)) & 0xf) as usize];
        }
        StickyId(text)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn bucket(&self) -> u16 {
        bucket_of(&self.0)
    }
}

/// `[sticky] issue_cookie`: the `Set-Cookie` value around an issued id,
/// built once per table so a response only copies bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieIssuer {
    /// `NAME=`
    prefix: Vec<u8>,
    /// `; Path=/; HttpOnly; SameSite=Lax; Max-Age=N`
    suffix: Vec<u8>,
}

impl CookieIssuer {
    pub fn new(name: &str, max_age_s: u64) -> CookieIssuer {
        CookieIssuer {
            prefix: format!("{name}=").into_bytes(),
            suffix: format!("; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}").into_bytes(),
        }
    }

    /// Appends the `Set-Cookie` field value for `id` to `out`.
    #[inline]
    pub fn write_value(&self, out: &mut Vec<u8>, id: &StickyId) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&self.suffix);
    }
}

/// Bucket → index into `shares`. Pools with share 0 never own a bucket.
/// Returns an empty vector when every share is 0 (no pool can take traffic).
pub fn sticky_bucket_map(shares: &[(&str, u16)]) -> Vec<u16> {
    if shares.iter().all(|(_, share)| *share == 0) {
        return Vec::new();
    }
    let pool_seeds: Vec<u64> = shares
        .iter()
        .map(|(name, _)| fnv1a(name.as_bytes(), 0x5eed))
        .collect();
    (0..BUCKETS)
        .map(|bucket| {
            let mut best = 0usize;
            let mut best_score = f64::NEG_INFINITY;
            for (i, (_, share)) in shares.iter().enumerate() {
                if *share == 0 {
                    continue;
                }
                let h = mix(pool_seeds[i] ^ mix(u64::from(bucket)));
                // u in (0, 1): 53 random bits, never exactly 0 or 1.
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                let score = f64::from(*share) / -u.ln();
                if score > best_score {
                    best_score = score;
                    best = i;
                }
            }
            best as u16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_ids_are_hex_spread_and_bucketed_like_their_cookie_text() {
        let ids: Vec<StickyId> = (0..1_000u64).map(StickyId::from_random).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().map(|i| i.0).collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            assert!(id
                .0
                .iter()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(id.bucket(), bucket_of(id.as_bytes()));
        }
        let mut out = Vec::new();
        CookieIssuer::new("sy", 60).write_value(&mut out, &ids[0]);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("sy=")
                && text.ends_with("; Path=/; HttpOnly; SameSite=Lax; Max-Age=60")
        );
    }

    fn owned_by(map: &[u16], pool: u16) -> Vec<usize> {
        map.iter()
            .enumerate()
            .filter(|(_, p)| **p == pool)
            .map(|(b, _)| b)
            .collect()
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket_of(b"user-42"), bucket_of(b"user-42"));
        let mut counts = [0u32; 10];
        for i in 0..100_000u32 {
            counts[(bucket_of(format!("client-{i}").as_bytes()) / 1000) as usize] += 1;
        }
        for c in counts {
            assert!(
                (9_000..11_000).contains(&c),
                "uneven bucket spread: {counts:?}"
            );
        }
    }

    #[test]
    fn shares_are_honoured_in_expectation() {
        let map = sticky_bucket_map(&[("blue", 9000), ("green", 1000)]);
        let green = owned_by(&map, 1).len();
        assert!(
            (850..=1150).contains(&green),
            "green owns {green} of 10000 buckets"
        );
    }

    #[test]
    fn zero_share_owns_nothing_and_all_zero_is_empty() {
        let map = sticky_bucket_map(&[("blue", 10_000), ("green", 0)]);
        assert!(owned_by(&map, 1).is_empty());
        assert!(sticky_bucket_map(&[("blue", 0)]).is_empty());
    }

    /// Buckets that changed owner between two share vectors, as (from, to).
    fn moves(pools: &[&'static str], before: &[u16], after: &[u16]) -> Vec<(usize, usize)> {
        let zip = |shares: &[u16]| -> Vec<(&str, u16)> {
            pools.iter().copied().zip(shares.iter().copied()).collect()
        };
        let (m0, m1) = (
            sticky_bucket_map(&zip(before)),
            sticky_bucket_map(&zip(after)),
        );
        (0..BUCKETS as usize)
            .filter(|b| m0[*b] != m1[*b])
            .map(|b| (m0[b] as usize, m1[b] as usize))
            .collect()
    }

    #[test]
    fn two_pools_trade_clients_only_from_the_shrinking_to_the_growing() {
        let steps: [[u16; 2]; 5] = [
            [9000, 1000],
            [7500, 2500],
            [5000, 5000],
            [10_000, 0],
            [9999, 1],
        ];
        for pair in steps.windows(2) {
            for (from, to) in moves(&["blue", "green"], &pair[0], &pair[1]) {
                assert!(pair[1][to] > pair[0][to] && pair[1][from] < pair[0][from]);
            }
        }
    }

    #[test]
    fn raising_one_pool_among_many_only_moves_buckets_into_it() {
        // Rendezvous weights are relative: raising green while blue and red
        // keep their weights is "green up, the rest down in proportion".
        let pools = ["blue", "green", "red"];
        let (before, after) = ([6000u16, 1000, 3000], [6000u16, 2500, 3000]);
        let moved = moves(&pools, &before, &after);
        assert!(!moved.is_empty());
        assert!(
            moved.iter().all(|(_, to)| *to == 1),
            "every moved bucket went to green"
        );
        // And lowering it back moves exactly those buckets out again.
        let back = moves(&pools, &after, &before);
        assert_eq!(back.len(), moved.len());
        assert!(back.iter().all(|(from, _)| *from == 1));
    }
}
