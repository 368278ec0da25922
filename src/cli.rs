//! The command line (SPEC §1): `run`, `check`, `ctl`, `demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;

pub const DEFAULT_CONFIG: &str = "conf/switchyard.toml";

/// Exit code of a command line clap can't parse, for every subcommand
/// (sysexits' `EX_USAGE`; clap's own 2 is `ctl`'s "socket unreachable").
pub const EXIT_USAGE: u8 = crate::ctl::EXIT_USAGE;

const CTL_AFTER_HELP: &str = "\
The commands: `switchyard ctl help` lists them (answered locally, no server needed).
Exit codes: 0 applied, 1 refused, 2 socket unreachable, 64 usage error.";

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Edge reverse proxy that switches live traffic between deployment pools and rolls back by itself"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy in the foreground.
    Run {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Take over the listening sockets of a running switchyard (zero-downtime upgrade).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config file like `nginx -t`: every error with its key path; exit 0 valid, 1 invalid.
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Send one admin command to a running switchyard (`switchyard ctl help` lists them).
    #[command(after_help = CTL_AFTER_HELP)]
    Ctl {
        /// Admin socket; default: `[admin].socket` of the config file.
        #[arg(short, long)]
        socket: Option<PathBuf>,
        /// Config file to read the socket path from [default: conf/switchyard.toml,
        /// which may be absent]; a file named here must exist.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the raw JSON answer (also accepted after the command).
        #[arg(long)]
        json: bool,
        /// The command, e.g. `split blue=90 green=10`, `cutover green`, `rollback`, `status`, `help`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Start built-in blue and green origins and the proxy on loopback, to try switchyard out.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin HTTP endpoints listen.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_http: SocketAddr,
        /// Send no traffic of its own through the proxy.
        #[arg(long)]
        no_traffic: bool,
        /// Requests per second of the demo's own traffic.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::demo::MAX_RATE)))]
        rate: u32,
        /// Play a story to its end and exit 0 (1 if it did not end as it should).
        #[arg(long, value_enum)]
        scenario: Option<crate::demo::Scenario>,
    },
}

/// Runs the parsed command line; the binary's `main` is just this.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; the rest are
            // usage errors.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run { config, upgrade } => {
            init_logging();
            exit_on_error(crate::process::server::run(&config, upgrade))
        }
        Command::Check { config } => check(&config),
        Command::Ctl {
            socket,
            config,
            json,
            command,
        } => {
            let config = match config {
                Some(path) => crate::ctl::ConfigFile::Named(path),
                None => crate::ctl::ConfigFile::Default(PathBuf::from(DEFAULT_CONFIG)),
            };
            crate::ctl::run(socket, &config, json, &command)
        }
        Command::Demo {
            listen,
            admin_http,
            no_traffic,
            rate,
            scenario,
        } => {
            init_logging();
            exit_on_error(crate::demo::run(crate::demo::Options {
                listen,
                admin_http,
                rate: (!no_traffic).then_some(rate),
                scenario,
            }))
        }
    }
}

fn init_logging() {
    crate::process::logging::init();
}

fn exit_on_error(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("switchyard: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `switchyard check`: never binds a port; errors to stderr, one per line.
fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            for warning in crate::discovery::check_names(&config) {
                eprintln!("warning: {warning}");
            }
            println!(
                "{}: configuration is valid ({} pools, split {})",
                path.display(),
                config.pools.len(),
                config
                    .split
                    .iter()
                    .map(|(pool, share)| format!("{pool}={share}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            let n = errors.0.len();
            eprintln!(
                "{}: configuration is invalid ({n} error{}):",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            eprint!("{errors}");
            ExitCode::FAILURE
        }
    }
}
