//! Admin commands: the one vocabulary shared by the admin socket, `ctl`,
//! reloads, the guard and canary runs. `Command::parse` reads the socket's
//! text form (and `ctl` runs it before sending, so a malformed command is
//! refused without a server); `Display` writes it back for the audit log.

use std::fmt;

use crate::config::{parse_share, Split};

/// Why a line is not a command; the text is what the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Status,
    /// Shares for the named pools (unnamed pools get 0); `force` skips the
    /// refusal to give a share to a pool with no healthy backend.
    Split(Split, bool),
    Cutover(String, bool),
    Rollback(Option<String>),
    /// `force`: drain even the pool's last usable backend while the pool
    /// has a share (every request to it then gets 503).
    Drain {
        pool: String,
        backend: String,
        force: bool,
    },
    Undrain {
        pool: String,
        backend: String,
    },
    History(usize),
    Undo(u64),
    Reload,
    Canary(CanaryCommand),
    /// `guard pause` (true) / `guard resume` (false).
    GuardPause(bool),
    /// Reopen the access log file (after logrotate renamed it).
    ReopenLogs,
    /// Fleet mode: the members, the leader and the fleet's revision.
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryCommand {
    /// The pool, and `--force` (start even without a healthy backend).
    Start(String, bool),
    Pause,
    Resume,
    Promote,
    Abort,
}

pub const USAGE: &str =
    "commands: status | split [--force] POOL=PCT… | cutover [--force] POOL | rollback [REASON…] | \
drain [--force] POOL ADDR | undrain POOL ADDR | history [N] | undo REV | reload | \
canary start [--force] POOL | canary pause|resume|promote|abort | guard pause|resume | reopen-logs | cluster";

impl Command {
    /// Parses one admin line, e.g. `split blue=90 green=10`.
    pub fn parse(line: &str) -> Result<Command, ParseError> {
        Self::parse_words(line).map_err(ParseError)
    }

    fn parse_words(line: &str) -> Result<Command, String> {
        let mut words = line.split_whitespace();
        let Some(verb) = words.next() else {
            return Err(format!("empty command; {USAGE}"));
        };
        let mut args: Vec<&str> = words.collect();
        let force =
            matches!(verb, "split" | "cutover" | "canary" | "drain") && args.contains(&"--force");
        if force {
            args.retain(|a| *a != "--force");
        }
        let exactly = |n: usize| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "{verb}: expected {n} argument(s), got {}; {USAGE}",
                    args.len()
                ))
            }
        };
        match verb {
            "status" => exactly(0).map(|_| Command::Status),
            "reload" => exactly(0).map(|_| Command::Reload),
            "reopen-logs" => exactly(0).map(|_| Command::ReopenLogs),
            "cluster" => exactly(0).map(|_| Command::Cluster),
            "split" => parse_split(&args).map(|split| Command::Split(split, force)),
            "cutover" => exactly(1).map(|_| Command::Cutover(args[0].to_string(), force)),
            "rollback" => Ok(Command::Rollback(
                (!args.is_empty()).then(|| args.join(" ")),
            )),
            "drain" | "undrain" => {
                exactly(2)?;
                let (pool, backend) = (args[0].to_string(), args[1].to_string());
                Ok(if verb == "drain" {
                    Command::Drain {
                        pool,
                        backend,
                        force,
                    }
                } else {
                    Command::Undrain { pool, backend }
                })
            }
            "history" => match args.as_slice() {
                [] => Ok(Command::History(10)),
                [n] => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .map(Command::History)
                    .ok_or_else(|| format!("history: \"{n}\" is not a count from 1 to 1000")),
                _ => exactly(1).map(|_| Command::Status),
            },
            "undo" => {
                exactly(1)?;
                args[0]
                    .parse::<u64>()
                    .map(Command::Undo)
                    .map_err(|_| format!("undo: \"{}\" is not a revision number", args[0]))
            }
            "canary" => match args.as_slice() {
                ["start", pool] => Ok(Command::Canary(CanaryCommand::Start(
                    pool.to_string(),
                    force,
                ))),
                ["pause"] => Ok(Command::Canary(CanaryCommand::Pause)),
                ["resume"] => Ok(Command::Canary(CanaryCommand::Resume)),
                ["promote"] => Ok(Command::Canary(CanaryCommand::Promote)),
                ["abort"] => Ok(Command::Canary(CanaryCommand::Abort)),
                _ => Err("canary: use canary start POOL | pause | resume | promote | abort".into()),
            },
            "guard" => match args.as_slice() {
                ["pause"] => Ok(Command::GuardPause(true)),
                ["resume"] => Ok(Command::GuardPause(false)),
                _ => Err("guard: use guard pause | guard resume".into()),
            },
            other => Err(format!(
                "unknown command \"{}\"; {USAGE}",
                truncate(other, 40)
            )),
        }
    }

    /// Does this command change anything (and get a revision)? Read-only
    /// ones are answered without the writer's checks and never audited.
    pub fn is_mutating(&self) -> bool {
        !matches!(
            self,
            Command::Status | Command::History(_) | Command::ReopenLogs | Command::Cluster
        )
    }

    /// Fleet mode, etcd unreachable: may this command still act on this
    /// instance alone (and be written back when etcd returns)? Only those
    /// that take traffic away toward safety: `rollback`, `drain`, and
    /// `canary abort|pause`. Everything that could give a pool more traffic
    /// (split, cutover, canary start/resume/promote, undrain, undo) is
    /// refused, and so are `guard pause|resume` (the fleet's guard).
    pub fn acts_locally_without_fleet(&self) -> bool {
        matches!(
            self,
            Command::Rollback(_)
                | Command::Drain { .. }
                | Command::Canary(CanaryCommand::Abort | CanaryCommand::Pause)
        )
    }

    /// Does this command name a split outright (and so, when that split is
    /// already in force, ask for nothing)? Also the operator's commands that
    /// end a canary run in progress, with `rollback`.
    pub fn sets_split(&self) -> bool {
        matches!(
            self,
            Command::Split(..) | Command::Cutover(..) | Command::Undo(_)
        )
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn parse_split(args: &[&str]) -> Result<Split, String> {
    if args.is_empty() {
        return Err("split: give POOL=PERCENT pairs, e.g. split blue=90 green=10".into());
    }
    let mut split = Split::new();
    for arg in args {
        let (pool, percent) = arg
            .split_once('=')
            .ok_or_else(|| format!("split: \"{}\" is not POOL=PERCENT", truncate(arg, 60)))?;
        let value: f64 = percent
            .parse()
            .map_err(|_| format!("split: \"{}\" is not a percentage", truncate(percent, 20)))?;
        let share = parse_share(value).map_err(|e| format!("split: {pool}: {e}"))?;
        if split.insert(pool.to_string(), share).is_some() {
            return Err(format!("split: {pool} is named twice"));
        }
    }
    Ok(split)
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Status => write!(f, "status"),
            Command::Split(split, force) => {
                write!(f, "split")?;
                if *force {
                    write!(f, " --force")?;
                }
                for (pool, share) in split {
                    write!(f, " {pool}={share}")?;
                }
                Ok(())
            }
            Command::Cutover(pool, false) => write!(f, "cutover {pool}"),
            Command::Cutover(pool, true) => write!(f, "cutover --force {pool}"),
            Command::Rollback(None) => write!(f, "rollback"),
            Command::Rollback(Some(reason)) => write!(f, "rollback {reason}"),
            Command::Drain {
                pool,
                backend,
                force,
            } => write!(
                f,
                "drain {}{pool} {backend}",
                if *force { "--force " } else { "" }
            ),
            Command::Undrain { pool, backend } => write!(f, "undrain {pool} {backend}"),
            Command::History(n) => write!(f, "history {n}"),
            Command::Undo(rev) => write!(f, "undo {rev}"),
            Command::Reload => write!(f, "reload"),
            Command::Canary(CanaryCommand::Start(pool, false)) => write!(f, "canary start {pool}"),
            Command::Canary(CanaryCommand::Start(pool, true)) => {
                write!(f, "canary start --force {pool}")
            }
            Command::Canary(CanaryCommand::Pause) => write!(f, "canary pause"),
            Command::Canary(CanaryCommand::Resume) => write!(f, "canary resume"),
            Command::Canary(CanaryCommand::Promote) => write!(f, "canary promote"),
            Command::Canary(CanaryCommand::Abort) => write!(f, "canary abort"),
            Command::GuardPause(true) => write!(f, "guard pause"),
            Command::GuardPause(false) => write!(f, "guard resume"),
            Command::ReopenLogs => write!(f, "reopen-logs"),
            Command::Cluster => write!(f, "cluster"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Share;

    #[test]
    fn only_status_and_history_are_read_only() {
        for line in ["status", "history", "history 5"] {
            assert!(!Command::parse(line).unwrap().is_mutating(), "{line}");
        }
        for line in [
            "reload",
            "cutover green",
            "rollback",
            "guard pause",
            "canary abort",
        ] {
            assert!(Command::parse(line).unwrap().is_mutating(), "{line}");
        }
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(Command::parse("status"), Ok(Command::Status));
        assert_eq!(Command::parse("  reload \n"), Ok(Command::Reload));
        let Command::Split(split, false) = Command::parse("split blue=99.99 green=0.01").unwrap()
        else {
            panic!()
        };
        assert_eq!(split["blue"], Share(9999));
        assert_eq!(
            Command::parse("cutover green"),
            Ok(Command::Cutover("green".into(), false))
        );
        assert_eq!(
            Command::parse("cutover --force green"),
            Ok(Command::Cutover("green".into(), true))
        );
        assert!(matches!(
            Command::parse("split blue=0 --force green=100"),
            Ok(Command::Split(_, true))
        ));
        assert_eq!(Command::parse("rollback"), Ok(Command::Rollback(None)));
        assert_eq!(
            Command::parse("rollback p95 too high"),
            Ok(Command::Rollback(Some("p95 too high".into())))
        );
        assert_eq!(
            Command::parse("drain blue 127.0.0.1:9001"),
            Ok(Command::Drain {
                pool: "blue".into(),
                backend: "127.0.0.1:9001".into(),
                force: false,
            })
        );
        assert_eq!(
            Command::parse("drain --force blue 127.0.0.1:9001"),
            Ok(Command::Drain {
                pool: "blue".into(),
                backend: "127.0.0.1:9001".into(),
                force: true,
            })
        );
        assert_eq!(Command::parse("history"), Ok(Command::History(10)));
        assert_eq!(Command::parse("history 3"), Ok(Command::History(3)));
        assert_eq!(Command::parse("undo 7"), Ok(Command::Undo(7)));
        assert_eq!(
            Command::parse("canary start green"),
            Ok(Command::Canary(CanaryCommand::Start("green".into(), false)))
        );
        assert_eq!(
            Command::parse("canary abort"),
            Ok(Command::Canary(CanaryCommand::Abort))
        );
        assert_eq!(Command::parse("guard pause"), Ok(Command::GuardPause(true)));
        assert!(Command::parse("guard sleep").is_err());
        assert!(Command::parse("canary start").is_err());
    }

    #[test]
    fn rejects_malformed_commands_clearly() {
        for (line, want) in [
            ("", "empty command"),
            ("frobnicate", "unknown command \"frobnicate\""),
            ("split", "give POOL=PERCENT pairs"),
            ("split blue", "\"blue\" is not POOL=PERCENT"),
            ("split blue=ninety", "\"ninety\" is not a percentage"),
            ("split blue=50.001", "more than two decimals"),
            ("split blue=50 blue=50", "named twice"),
            ("cutover", "expected 1 argument"),
            ("drain blue", "expected 2 argument"),
            ("history zero", "not a count"),
            ("undo x", "not a revision number"),
        ] {
            let err = Command::parse(line).unwrap_err();
            assert!(err.0.contains(want), "{line:?}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for line in [
            "split blue=90 green=10",
            "split --force blue=90 green=10",
            "cutover --force green",
            "cutover green",
            "rollback bad deploy",
            "undo 3",
            "drain blue 10.0.0.1:80",
        ] {
            assert_eq!(Command::parse(line).unwrap().to_string(), line);
        }
    }

    #[test]
    fn without_etcd_only_commands_toward_safety_act_locally() {
        for line in [
            "rollback",
            "rollback bad green",
            "drain blue 127.0.0.1:1",
            "canary abort",
            "canary pause",
        ] {
            assert!(
                Command::parse(line).unwrap().acts_locally_without_fleet(),
                "{line}"
            );
        }
        for line in [
            "split blue=50 green=50",
            "cutover green",
            "undrain blue 127.0.0.1:1",
            "undo 3",
            "canary start green",
            "canary resume",
            "canary promote",
            "guard pause",
            "guard resume",
            "reload",
        ] {
            assert!(
                !Command::parse(line).unwrap().acts_locally_without_fleet(),
                "{line}"
            );
        }
        assert_eq!(Command::parse("cluster").unwrap(), Command::Cluster);
        assert!(!Command::Cluster.is_mutating());
    }
}
