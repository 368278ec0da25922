//! Config parsing and validation, with golden error messages.

use std::path::Path;
use std::time::Duration;

use super::*;

fn ok(text: &str) -> Config {
    match parse(text, Path::new("/etc/switchyard")) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

/// The exact error text `switchyard check` prints for `text`.
fn errors(text: &str) -> String {
    match parse(text, Path::new("/etc/switchyard")) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(errors) => errors.to_string(),
    }
}

const MINIMAL: &str = "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n";

#[test]
fn the_example_config_is_valid() {
    let config = ok(include_str!("../../conf/switchyard.toml"));
    assert_eq!(config.pools.len(), 2);
    assert_eq!(config.split["blue"], Share::FULL);
    assert_eq!(config.split["green"], Share::ZERO);
    assert_eq!(config.pools["blue"].backends.len(), 2);
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.guard.max_p95, Some(Duration::from_millis(500)));
    assert_eq!(config.canary.steps.len(), 4);
}

#[test]
fn spec_example_parses_to_the_expected_values() {
    let config = ok(r#"
[server]
listen = ["127.0.0.1:8080"]
threads = 2
pool_header = "X-Switchyard-Pool"
[admin]
socket = "run/admin.sock"
http = ""
state_dir = "/var/lib/switchyard"
[pools.blue]
backends = ["127.0.0.1:9001", { addr = "127.0.0.1:9003", weight = 3 }]
[pools.green]
backends = ["127.0.0.1:9002"]
[split]
blue = 99.99
green = 0.01
[sticky]
key = "header:X-User-Id"
[[route]]
cookie = "canary"
equals = "yes"
pool = "green"
[guard]
window = "1m"
min_requests = 10
max_error_rate = 2.5
max_p99 = "2s"
max_p95_vs_baseline = 1.5
[canary]
steps = [ { weight = 1, hold = "30s" }, { weight = 100 } ]
[notify]
webhooks = ["http://127.0.0.1:9999/deploy-events"]
"#);
    assert_eq!(config.server.threads, 2);
    assert_eq!(
        config
            .server
            .pool_header
            .as_ref()
            .map(http::HeaderName::as_str),
        Some("x-switchyard-pool")
    );
    assert_eq!(
        config.admin.socket,
        Path::new("/etc/switchyard/run/admin.sock")
    );
    assert_eq!(config.admin.http, None);
    assert_eq!(config.pools["blue"].backends[1].weight, 3);
    assert_eq!(config.pools["blue"].backends[1].name, "127.0.0.1:9003");
    assert_eq!(config.split["blue"], Share(9999));
    assert_eq!(config.split["green"], Share(1));
    assert_eq!(
        config.sticky,
        Some(StickyKey::Header(http::HeaderName::from_static(
            "x-user-id"
        )))
    );
    assert_eq!(
        config.routes[0].matcher,
        RouteMatch::Cookie {
            name: "canary".into(),
            value: "yes".into()
        }
    );
    assert_eq!(config.guard.window, Duration::from_secs(60));
    assert_eq!(config.guard.max_error_rate, Some(2.5));
    assert_eq!(config.guard.max_p99, Some(Duration::from_secs(2)));
    assert_eq!(config.guard.max_p95_vs_baseline, Some(1.5));
    assert_eq!(config.canary.steps[0].weight, Share(100));
    assert_eq!(config.canary.steps[1].hold, None);
    assert_eq!(config.notify.webhooks.len(), 1);
}

#[test]
fn defaults_apply_to_a_minimal_file() {
    let config = ok(MINIMAL);
    assert_eq!(
        config.server.listen,
        vec!["127.0.0.1:8080".parse().unwrap()]
    );
    assert!(config.server.threads >= 1);
    assert_eq!(config.server.connect_timeout, Duration::from_secs(3));
    assert_eq!(config.server.grace_period, Duration::from_secs(30));
    assert_eq!(config.server.max_request_head, 32 * 1024);
    assert_eq!(config.server.request_head_timeout, Duration::from_secs(10));
    assert_eq!(config.admin.socket, Path::new("/run/switchyard/admin.sock"));
    assert_eq!(config.admin.http, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(
        config.split["blue"],
        Share::FULL,
        "a lone pool gets everything"
    );
    assert_eq!(config.health.fall, 3);
    assert_eq!(config.health.eject_consecutive_failures, 5);
    assert!(config.guard.enabled);
    assert_eq!(config.guard.max_error_rate, Some(5.0));
    assert_eq!(config.guard.watch, Duration::from_secs(600));
    assert_eq!(
        config.canary.steps.last().map(|s| s.weight),
        Some(Share::FULL)
    );
    assert!(config.sticky.is_none() && config.routes.is_empty());
}

#[test]
fn shares_have_two_decimals_at_most() {
    assert_eq!(parse_share(99.99), Ok(Share(9999)));
    assert_eq!(parse_share(0.01), Ok(Share(1)));
    assert_eq!(parse_share(100.0), Ok(Share::FULL));
    assert_eq!(parse_share(0.0), Ok(Share::ZERO));
    assert!(parse_share(99.999).is_err());
    assert!(parse_share(-1.0).is_err());
    assert!(parse_share(101.0).is_err());
    assert!(parse_share(f64::NAN).is_err());
    assert_eq!(Share(9999).to_string(), "99.99");
    assert_eq!(Share(50).to_string(), "0.5");
    assert_eq!(Share(9000).to_string(), "90");
}

#[test]
fn host_names_resolve_at_load() {
    let config = ok("[pools.blue]\nbackends = [\"localhost:9001\"]\n");
    let backend = &config.pools["blue"].backends[0];
    assert_eq!(backend.name, "localhost:9001");
    assert!(backend.addr.ip().is_loopback());
    assert_eq!(backend.addr.port(), 9001);
}

/// Every key the readers accepted when they still had allowed-key lists
/// (and that conf/switchyard.toml and the README document): none may
/// become unknown now that the readers' own reads are the list.
#[test]
fn every_documented_key_is_still_accepted() {
    let text = r#"
[server]
listen = ["127.0.0.1:8080"]
h2c = false
fast_path = true
threads = 2
pool_header = "x-pool"
connect_timeout = "3s"
read_timeout = "60s"
write_timeout = "60s"
idle_timeout = "60s"
grace_period = "30s"
upstream_keepalive_pool = 1024
max_request_head = "32KiB"
request_head_timeout = "10s"
[[server.tls]]
listen = "127.0.0.1:8443"
cert = "cert.pem"
key = "key.pem"
server_names = ["a.example"]
[admin]
socket = "admin.sock"
http = "127.0.0.1:9901"
state_dir = "state"
[pools.blue]
backends = ["127.0.0.1:9001", { addr = "127.0.0.1:9003", weight = 3 }]
tls = true
sni = "blue.internal"
verify = true
ca_file = "ca.pem"
protocol = "auto"
[split]
blue = 100
[sticky]
key = "cookie:session"
[[route]]
header = "x-canary"
equals = "true"
pool = "blue"
[[route]]
cookie = "canary"
equals = "yes"
pool = "blue"
[health]
enabled = true
path = "/health"
interval = "2s"
timeout = "1s"
rise = 2
fall = 3
eject_consecutive_failures = 5
eject_base_time = "30s"
eject_max_time = "5m"
eject_max_percent = 50
[guard]
enabled = true
window = "30s"
min_requests = 50
max_error_rate = 5.0
max_p95 = "500ms"
max_p99 = "2s"
max_error_rate_vs_baseline = 2.0
max_p95_vs_baseline = 2.0
watch = "10m"
rollback_target_ttl = "24h"
[canary]
steps = [ { weight = 5, hold = "5m" }, { weight = 100 } ]
[notify]
webhooks = ["http://127.0.0.1:9999/deploy-events"]
timeout = "5s"
retry_for = "60s"
"#;
    // The certificate and CA files don't exist here: those are errors,
    // but about the files, never about a key.
    let unknown: Vec<String> = match parse(text, Path::new("/nonexistent")) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .0
            .iter()
            .filter(|e| e.message.starts_with("unknown key"))
            .map(ToString::to_string)
            .collect(),
    };
    assert!(unknown.is_empty(), "{unknown:?}");
}

#[test]
fn a_key_no_reader_asks_for_is_unknown_in_every_section() {
    assert_eq!(
        errors(&format!(
            "{MINIMAL}[[route]]\nheader = \"x-a\"\nequals = \"1\"\npool = \"blue\"\nweight = 1\n\
             [health]\nwindow = \"1s\"\n[canary]\nsteps = [{{ weight = 100, pool = \"blue\" }}]\n"
        )),
        "route[0].weight: unknown key\n\
         health.window: unknown key\n\
         canary.steps[0].pool: unknown key\n"
    );
}

#[test]
fn route_and_sticky_headers_are_parsed_when_the_file_is_read() {
    let config = ok(&format!(
        "{MINIMAL}[server]\npool_header = \"X-Pool\"\n[sticky]\nkey = \"header:X-User\"\n\
         [[route]]\nheader = \"X-Canary\"\nequals = \"Yes\"\npool = \"blue\"\n"
    ));
    assert_eq!(
        config.server.pool_header,
        Some(http::HeaderName::from_static("x-pool"))
    );
    assert_eq!(
        config.sticky,
        Some(StickyKey::Header(http::HeaderName::from_static("x-user")))
    );
    assert_eq!(
        config.routes[0].matcher,
        RouteMatch::Header {
            name: http::HeaderName::from_static("x-canary"),
            value: http::HeaderValue::from_static("Yes"),
        }
    );
    assert_eq!(
        errors(&format!(
            "{MINIMAL}[[route]]\nheader = \"x a\"\nequals = \"1\"\npool = \"blue\"\n\
             [[route]]\nheader = \"x-b\"\nequals = \"a\\nb\"\npool = \"blue\"\n"
        )),
        "route[0].header: \"x a\" is not a valid header name\n\
         route[1].equals: \"a\\nb\" is not a valid header value\n"
    );
}

// ---- golden error messages ------------------------------------------------

#[test]
fn golden_unknown_keys_with_suggestions() {
    assert_eq!(
        errors(&format!(
            "{MINIMAL}colour = 1\n[server]\ntreads = 2\n[guard]\nmax_eror_rate = 5\nbogus = true\n"
        )),
        "server.treads: unknown key (did you mean \"threads\"?)\n\
         pools.blue.colour: unknown key\n\
         guard.bogus: unknown key\n\
         guard.max_eror_rate: unknown key (did you mean \"max_error_rate\"?)\n"
    );
}

#[test]
fn golden_wrong_types() {
    assert_eq!(
        errors(&format!("{MINIMAL}[server]\nthreads = \"two\"\nlisten = \"127.0.0.1:80\"\n[guard]\nenabled = 1\n")),
        "server.listen: expected an array, found a string\n\
         server.threads: expected an integer, found a string\n\
         guard.enabled: expected a boolean, found an integer\n"
    );
}

#[test]
fn golden_bad_addresses() {
    assert_eq!(
        errors("[pools.green]\nbackends = [\"127.0.0.1:9002\", \"x:y\", \"nohost.invalid:80\", 7, \"127.0.0.1:9002\"]\n"),
        "pools.green.backends[1]: invalid address \"x:y\"\n\
         pools.green.backends[2]: cannot resolve \"nohost.invalid:80\": failed to lookup address information: Name or service not known\n\
         pools.green.backends[3]: expected \"host:port\", { addr = \"host:port\", weight = N } or { dns = \"NAME:PORT\" }, found an integer\n\
         pools.green.backends[4]: \"127.0.0.1:9002\" is listed twice in this pool\n"
    );
}

#[test]
fn golden_split_errors() {
    let pools = "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.green]\nbackends = []\n";
    assert_eq!(
        errors(&format!("{pools}[split]\nblue = 80\ngreen = 10\n")),
        "split.green: pool has a share of 10 but no backends\n\
         split: shares sum to 90, must be 100\n"
    );
    assert_eq!(
        errors(&format!("{pools}[split]\nblue = 100\npurple = 0\n")),
        "split.purple: no such pool\n"
    );
    assert_eq!(
        errors(&format!("{pools}[split]\nblue = 99.999\ngreen = 0\n")),
        "split.blue: 99.999 has more than two decimals (0.01 % is the finest step)\n"
    );
    assert_eq!(
        errors(pools),
        "split: missing; give each pool a share (they must sum to 100)\n"
    );
}

#[test]
fn golden_durations_and_ranges() {
    assert_eq!(
        errors(&format!(
            "{MINIMAL}[server]\nconnect_timeout = \"3\"\nread_timeout = \"0s\"\n[health]\ninterval = \"1s\"\ntimeout = \"2s\"\nrise = 0\n[guard]\nwindow = \"2h\"\nmax_error_rate = 150\n"
        )),
        "server.connect_timeout: invalid duration \"3\" (use e.g. \"250ms\", \"10s\", \"5m\", \"1h30m\")\n\
         server.read_timeout: must be greater than 0\n\
         health.timeout: must not be longer than health.interval\n\
         health.rise: 0 is out of range (1..=100)\n\
         guard.window: must be between 1s and 1h\n\
         guard.max_error_rate: 150 is not a percentage above 0 and at most 100\n"
    );
}

#[test]
fn request_head_limits_take_bytes_or_binary_units_within_bounds() {
    let server = |lines: &str| ok(&format!("{MINIMAL}[server]\n{lines}")).server;
    assert_eq!(server("max_request_head = 4096\n").max_request_head, 4096);
    assert_eq!(
        server("max_request_head = \"64KiB\"\n").max_request_head,
        65536
    );
    assert_eq!(
        server("request_head_timeout = \"1500ms\"\n").request_head_timeout,
        Duration::from_millis(1500)
    );
    assert_eq!(
        errors(&format!(
            "{MINIMAL}[server]\nmax_request_head = \"32K\"\nrequest_head_timeout = \"0s\"\n"
        )),
        "server.max_request_head: invalid size \"32K\" (use a number of bytes or e.g. \"512B\", \"32KiB\", \"1MiB\")\n\
         server.request_head_timeout: must be greater than 0\n"
    );
    assert_eq!(
        errors(&format!(
            "{MINIMAL}[server]\nmax_request_head = 100\nrequest_head_timeout = \"10m\"\n"
        )),
        "server.max_request_head: 100 is out of range (1KiB..=512KiB)\n\
         server.request_head_timeout: must be at most 5m (a whole request head, from its first byte)\n"
    );
    assert_eq!(
        errors(&format!("{MINIMAL}[server]\nmax_request_head = \"1MiB\"\n")),
        "server.max_request_head: \"1MiB\" is out of range (1KiB..=512KiB)\n"
    );
    assert_eq!(
        errors(&format!("{MINIMAL}[server]\nmax_request_head = true\n")),
        "server.max_request_head: expected a size like \"32KiB\" or bytes, found a boolean\n"
    );
}

#[test]
fn golden_canary_sticky_route_notify() {
    assert_eq!(
        errors(&format!(
            "{MINIMAL}[sticky]\nkey = \"session\"\n[[route]]\nheader = \"x-canary\"\ncookie = \"c\"\nequals = \"1\"\npool = \"blue\"\n\
             [[route]]\nheader = \"x-a\"\nequals = \"1\"\npool = \"red\"\n\
             [canary]\nsteps = [{{ weight = 50, hold = \"1m\" }}, {{ weight = 20 }}, {{ weight = 90 }}]\n\
             [notify]\nwebhooks = [\"ftp://hooks.example/x\"]\n"
        )),
        "sticky.key: invalid sticky key \"session\" (expected \"cookie:NAME\", \"header:NAME\" or \"ip\")\n\
         route[0]: give either header or cookie, not both\n\
         route[1].pool: no such pool \"red\"\n\
         canary.steps[1].hold: missing (every step but the last holds for a while)\n\
         canary.steps[1].weight: 20 must be above the previous step's 50\n\
         canary.steps: the last step must be weight = 100\n\
         notify.webhooks[0]: only http:// and https:// URLs are supported\n"
    );
}

#[test]
fn https_webhooks_with_headers_and_the_slack_format_are_read() {
    let config = ok(&format!(
        "{MINIMAL}[notify]\nwebhooks = [\"https://hooks.example/x\", \"http://127.0.0.1:9999/y\"]\n\
         headers = {{ authorization = \"Bearer s3cret\", x-team = \"edge\" }}\nformat = \"slack\"\n"
    ));
    let notify = &config.notify;
    assert_eq!(notify.webhooks.len(), 2);
    assert_eq!(notify.format, NotifyFormat::Slack);
    assert!(notify.ca.is_empty(), "no ca_file: the system's roots");
    let names: Vec<&str> = notify.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["authorization", "x-team"]);
    assert_eq!(notify.headers[0].1, "Bearer s3cret");
    // The values are secrets: a printed config never shows them.
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert_eq!(ok(MINIMAL).notify.format, NotifyFormat::Json);
}

#[test]
fn golden_notify_tls_headers_and_format() {
    assert_eq!(
        errors(&format!(
            "{MINIMAL}[notify]\nwebhooks = [\"https://\", \"https://hooks.example/x\", 7]\n\
             ca_file = \"missing.pem\"\nformat = \"xml\"\n\
             headers = {{ authorization = \"Bearer s3cret\\n\", \"bad name\" = \"x\", host = \"h\", x-n = 1 }}\n"
        )),
        "notify.webhooks[0]: invalid URL (expected http://host[:port]/path or https://host[:port]/path)\n\
         notify.webhooks[2]: expected a URL string, found an integer\n\
         notify.ca_file: cannot read \"/etc/switchyard/missing.pem\": No such file or directory (os error 2)\n\
         notify.format: \"xml\": expected \"json\" or \"slack\"\n\
         notify.headers.authorization: not a valid header value (printable ASCII and spaces only)\n\
         notify.headers.bad name: \"bad name\" is not a valid header name\n\
         notify.headers.host: is set by switchyard and cannot be configured\n\
         notify.headers.x-n: expected a string, found an integer\n"
    );
    assert_eq!(
        errors(&format!(
            "{MINIMAL}[notify]\nwebhooks = [\"http://127.0.0.1:9/x\"]\nca_file = \"ca.pem\"\nheaders = \"x\"\n"
        )),
        "notify.ca_file: applies only to https:// webhooks\n\
         notify.headers: expected a table of header = \"value\", found a string\n"
    );
}

#[test]
fn golden_all_errors_of_a_file_at_once() {
    let text = r#"
[server]
threds = 4
[pools.blue]
backends = ["127.0.0.1:9001"]
[pools.green]
backends = ["127.0.0.1:9002", "x:y"]
[split]
blue = 80
green = 10
[guard]
window = "soon"
"#;
    assert_eq!(
        errors(text),
        "server.threds: unknown key (did you mean \"threads\"?)\n\
         pools.green.backends[1]: invalid address \"x:y\"\n\
         split: shares sum to 90, must be 100\n\
         guard.window: invalid duration \"soon\" (use e.g. \"250ms\", \"10s\", \"5m\", \"1h30m\")\n"
    );
}

#[test]
fn golden_syntax_and_missing_pools() {
    assert_eq!(
        errors("[server]\nlisten = [\"127.0.0.1:80\"\n"),
        "TOML syntax error at line 3, column 1: invalid array\nexpected `]`\n"
    );
    assert_eq!(
        errors("[server]\nthreads = 1\n"),
        "pools: missing: define at least one pool, e.g. [pools.blue] backends = [\"127.0.0.1:9001\"]\n"
    );
}

#[test]
fn golden_unreadable_file() {
    let err = load(Path::new("/nonexistent/switchyard.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read \"/nonexistent/switchyard.toml\": No such file or directory (os error 2)\n"
    );
}

#[test]
fn the_guard_takes_alpha_mode_and_the_canary_a_step_wait() {
    let config = ok(MINIMAL);
    assert_eq!(config.guard.alpha, 0.001);
    assert_eq!(config.guard.mode, GuardMode::Rollback);
    assert_eq!(config.canary.max_step_wait, Duration::from_secs(1800));
    let config = ok(&format!(
        "{MINIMAL}[guard]\nalpha = 0.01\nmode = \"observe\"\n[canary]\nmax_step_wait = \"2m\"\n"
    ));
    assert_eq!(config.guard.alpha, 0.01);
    assert_eq!(config.guard.mode, GuardMode::Observe);
    assert_eq!(config.canary.max_step_wait, Duration::from_secs(120));
    assert_eq!(
        errors(&format!("{MINIMAL}[guard]\nalpha = 0.5\nmode = \"loud\"\n")),
        "guard.alpha: 0.5 must be above 0 and below 0.5\n\
         guard.mode: \"loud\" is not a mode (\"rollback\" or \"observe\")\n"
    );
}

#[test]
fn grpc_status_values_match_by_number_only() {
    let codes = GrpcCodes::DEFAULT;
    for (text, error) in [
        (&b"14"[..], true),
        (b"13", true),
        (b"2", true),
        (b"0", false),
        (b"5", false),
        (b"16", false),
        (b"", false),
        (b"014", false),
        (b" 14", false),
        (b"99", false),
        (b"x", false),
    ] {
        assert_eq!(codes.contains_status(text), error, "{:?}", text);
    }
}
