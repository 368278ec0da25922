//! One reader per config section: defaults, value rules and cross-section
//! checks. Each reader records its errors and returns a value anyway (its
//! default) so that later sections are still checked.
//!
//! Each reader owns its keys: the keys it reads through its [`Section`] are
//! the keys its table accepts (see `walk`), so a key is documented, read and
//! accepted in one place.
//!
//! - `server`: `[server]`, `[[server.tls]]`, `[admin]`
//! - `pools`: `[pools.*]`, their upstream options and backends
//! - `discovery`: `{ dns = "NAME:PORT" }` backends and `[discovery]`
//! - `traffic`: `[split]`, `[sticky]`, `[[route]]`
//! - `policy`: `[health]`, `[guard]`, `[canary]`, `[notify]`
//! - `access_log`: `[access_log]`
//! - `cluster`: `[cluster]` (fleet mode on etcd)
//! - `mirror`: `[mirror]`

mod access_log;
mod cluster;
mod discovery;
mod mirror;
mod policy;
mod pools;
mod server;
mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::types::Config;
// The one way config reaches TLS: checking certificate files at load.
use super::walk::{Errors, Section};
use super::ConfigErrors;
use crate::tls::material as tls;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(super) fn read(document: &toml::Table, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::default();
    let config = Section::read(&mut errors, "", document, |root, errors| {
        let server = server::read_server(errors, root, base_dir);
        let admin = server::read_admin(errors, root, base_dir);
        let pools = pools::read_pools(errors, root, base_dir);
        let split = traffic::read_split(errors, root, &pools);
        let (sticky, sticky_cookie) = traffic::read_sticky(errors, root);
        let routes = traffic::read_routes(errors, root, &pools);
        let health = policy::read_health(errors, root);
        let guard = policy::read_guard(errors, root);
        let canary = policy::read_canary(errors, root);
        let notify = policy::read_notify(errors, root, base_dir);
        let discovery = discovery::read_discovery(errors, root);
        let access_log = access_log::read_access_log(errors, root, base_dir);
        let cluster = cluster::read_cluster(errors, root, base_dir);
        let mirror = mirror::read_mirror(errors, root, &pools);
        Config {
            server,
            admin,
            pools,
            split,
            sticky,
            sticky_cookie,
            routes,
            health,
            guard,
            canary,
            notify,
            discovery,
            access_log,
            cluster,
            mirror,
        }
    });
    if errors.0.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors.0))
    }
}

fn parse_listen(errors: &mut Errors, path: &str, text: &str) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.add(
                path,
                format!("invalid listen address \"{text}\" (expected ip:port)"),
            );
            None
        }
    }
}

fn resolve_path(base_dir: &Path, text: &str) -> PathBuf {
    let path = Path::new(text);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// A header name as the router compares it (lower-case), or an error at
/// `path` in the words every header-name key uses.
fn header_name(errors: &mut Errors, path: &str, name: &str) -> Option<http::HeaderName> {
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            errors.add(path, format!("\"{name}\" is not a valid header name"));
            None
        }
    }
}
