//! A fleet for the fleet tests: a real etcd (tests/common/etcd.rs), two
//! real origins (`blue`, `green`) and switchyard instances `edge-1` …
//! `edge-n` on loopback, each with a `[cluster]` on that etcd under one
//! prefix, and the questions the tests ask of them (revision, split, the
//! leader, history).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::etcd::Etcd;
use super::{eventually, get, metric, origin, Origin, Proxy};

pub struct Fleet {
    pub etcd: Etcd,
    pub blue: Origin,
    pub green: Origin,
    pub proxies: Vec<Proxy>,
    pub prefix: String,
}

/// How the instances are configured.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Sections after `[split]` (guard, canary, sticky).
    pub extra: String,
    /// More `[cluster]` lines (lease_ttl, TLS, user).
    pub cluster: String,
    /// `[cluster] etcd` if not every member of the etcd cluster.
    pub endpoints: Option<Vec<String>>,
}

impl Fleet {
    /// A 3-member etcd and three instances; `None` (and a printed reason)
    /// only where etcd is not installed.
    pub async fn start(tag: &str, options: Options) -> Option<Fleet> {
        if let Some(why) = super::etcd::unavailable() {
            super::skip(&why);
            return None;
        }
        Some(Fleet::on(Etcd::start(3), 3, tag, options).await)
    }

    /// Starts one more instance, `edge-{n+1}`, configured by `options`.
    pub async fn add(&mut self, options: &Options) -> &Proxy {
        let body = self.body(&format!("edge-{}", self.proxies.len() + 1), options);
        self.proxies.push(Proxy::start(&body).await);
        self.proxies.last().expect("just added")
    }

    /// `n` instances on `etcd`.
    pub async fn on(etcd: Etcd, n: usize, tag: &str, options: Options) -> Fleet {
        let (blue, green) = (origin("blue").await, origin("green").await);
        let prefix = format!("/sy-test/{tag}-{}", std::process::id());
        let mut fleet = Fleet {
            etcd,
            blue,
            green,
            proxies: Vec::new(),
            prefix,
        };
        for i in 1..=n {
            let body = fleet.body(&format!("edge-{i}"), &options);
            fleet.proxies.push(Proxy::start(&body).await);
        }
        fleet
    }

    /// The config body of instance `name` (`[server]`/`[admin]` come from
    /// the harness).
    pub fn body(&self, name: &str, options: &Options) -> String {
        format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n\
             [split]\nblue = 100\ngreen = 0\n{}\
             [cluster]\netcd = {}\nname = \"{name}\"\nprefix = \"{}\"\ntimeout = \"1s\"\n{}",
            self.blue.addr(),
            self.green.addr(),
            options.extra,
            match &options.endpoints {
                Some(list) => format!(
                    "[{}]",
                    list.iter()
                        .map(|e| format!("\"{e}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => self.etcd.endpoints_toml(),
            },
            self.prefix,
            options.cluster,
        )
    }

    /// Waits until every instance has revision `wanted` in force.
    pub async fn wait_all_at(&self, wanted: u64, within: Duration) {
        for (i, p) in self.proxies.iter().enumerate() {
            let ok = eventually(within, || async { revision(p).await == wanted }).await;
            assert!(
                ok,
                "edge-{} not at revision {wanted}: {}",
                i + 1,
                p.ctl("status").await
            );
        }
    }

    /// The index of the one leader among `alive`, once exactly one of them
    /// says it leads and the others name it (bounded by `within`).
    pub async fn one_leader(&self, alive: &[usize], within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for &i in alive {
                let m = self.proxies[i].admin_get("/metrics").await;
                if metric(&m.body, "switchyard_cluster_leader") == 1.0 {
                    leaders.push(i);
                }
                let s = self.proxies[i].ctl("status").await;
                named.push(s["cluster"]["leader"].as_str().map(str::to_string));
            }
            if let [leader] = leaders[..] {
                let name = format!("edge-{}", leader + 1);
                if named.iter().all(|n| n.as_deref() == Some(name.as_str())) {
                    return Some(leader);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

pub async fn status(p: &Proxy) -> Value {
    p.ctl("status").await
}

pub async fn revision(p: &Proxy) -> u64 {
    status(p).await["revision"].as_u64().unwrap_or(0)
}

/// `pool`'s share in a `status` answer (-1 if absent).
pub fn share(status: &Value, pool: &str) -> f64 {
    status["split"][pool].as_f64().unwrap_or(-1.0)
}

pub async fn green_share(p: &Proxy) -> f64 {
    share(&status(p).await, "green")
}

/// Which pool answers a plain request on `p`.
pub async fn answering_pool(p: &Proxy, headers: &[(&str, &str)]) -> String {
    let reply = get(p.listen, "/", headers).await.expect("request");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body.trim().to_string()
}

/// The fleet's last `n` audit records as `p` shows them.
pub async fn history(p: &Proxy, n: usize) -> Vec<Value> {
    let h = p.ctl(&format!("history {n}")).await;
    h["history"].as_array().cloned().unwrap_or_default()
}

/// How many of `n` plain requests on `p` the pool `pool` answers.
pub async fn count_on(p: &Proxy, pool: &str, n: usize) -> usize {
    let mut on = 0;
    for _ in 0..n {
        if answering_pool(p, &[]).await == pool {
            on += 1;
        }
    }
    on
}

/// `total_rate` requests per second spread evenly over `targets` until
/// `stop`, each target paced on its own (bounded: at most `max` each).
pub fn paced_load(
    targets: Vec<SocketAddr>,
    total_rate: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let each = Duration::from_micros(1_000_000 * targets.len() as u64 / total_rate);
    targets
        .into_iter()
        .map(|addr| {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(each);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tick.tick().await;
                    let _ = get(addr, "/", &[]).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}
