//! `outpost fleet`: look after agents through the relay, from anywhere that can reach it.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_core::RelayClient;
use clap::{Args, Subcommand};

use crate::exit;

mod report;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Each agent's connection and version (`$bulk-status`, as `medplum agent status`).
    /// Exit 1 when one is not connected.
    Status(Targets),
    /// Each agent's counters and round-trip times (`$stats`): per channel, messages received,
    /// sent, errored and queued with the relay's round trip; per push destination, the device's.
    Stats(Targets),
    /// Each agent's recent log lines, newest first (`$fetch-logs`).
    Logs(LogsArgs),
    /// Make each agent read its configuration again (`$reload-config`).
    Reload(Targets),
    /// Ping a host from each agent (`$push` of `x-application/ping`, as `medplum agent
    /// ping`): the agent runs the system's `ping` and answers with its output.
    Ping(PingArgs),
    /// Ask each agent to upgrade itself (`$upgrade`): it downloads the release's executable
    /// from the relay, checks its SHA-256, replaces itself and restarts; a new version that
    /// does not reconnect in time is rolled back. Exits 1 when an agent refused or rolled back.
    Upgrade(UpgradeArgs),
    /// The inbound messages an agent moved aside after too many errors (its dead letters);
    /// `--retry ID` sends one again. Through the relay's `Agent/{id}/$dead-letters`.
    DeadLetters(DeadLettersArgs),
}

/// Which agents, and how to reach the relay.
#[derive(Debug, Args)]
pub struct Targets {
    /// Agents: an id, `Agent/<id>`, or a search such as `Agent?name=Lab` or
    /// `Agent?identifier=sys|value`. None: every Agent.
    #[arg(value_name = "AGENT")]
    agents: Vec<String>,
    /// One JSON array on stdout instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    relay: RelayArgs,
}

/// The relay and the caller's credentials (as `outpost push`).
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// The relay's base URL.
    #[arg(long, env = "MEDPLUM_BASE_URL")]
    base_url: String,
    /// ClientApplication id.
    #[arg(long, env = "MEDPLUM_CLIENT_ID")]
    client_id: String,
    /// ClientApplication secret.
    #[arg(long, env = "MEDPLUM_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// A PEM CA certificate to trust for the relay, besides the system roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    targets: Targets,
    /// Lines per agent (the agent's default 20, at most 1000).
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct PingArgs {
    #[command(flatten)]
    targets: Targets,
    /// The host or IPv4 address each agent pings.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Pings per agent (1 to 10).
    #[arg(long, default_value_t = 1)]
    count: u32,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    targets: Targets,
    /// The version to upgrade to: a release registered on the relay (default: the highest
    /// registered), or the version of --binary.
    #[arg(long)]
    version: Option<String>,
    /// Upgrade even when the agent runs that version already, or another upgrade looks
    /// unfinished.
    #[arg(long)]
    force: bool,
    /// The Binary holding the executable, instead of a registered release (needs --version
    /// and --sha256).
    #[arg(long, requires_all = ["version", "sha256"])]
    binary: Option<String>,
    /// The executable's SHA-256 (hex), with --binary.
    #[arg(long, requires = "binary")]
    sha256: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    /// The Agent's id.
    agent: String,
    /// Put this dead letter back in its channel's queue (same callback, errors forgotten).
    #[arg(long)]
    retry: Option<i64>,
    #[command(flatten)]
    relay: RelayArgs,
}

pub fn run(cmd: FleetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FleetCommand::Status(t) => report::run(&t, Op::Status),
        FleetCommand::Stats(t) => report::run(&t, Op::Stats),
        FleetCommand::Logs(a) => report::run(&a.targets, Op::Logs(a.limit)),
        FleetCommand::Reload(t) => report::run(&t, Op::Reload),
        FleetCommand::Ping(a) => report::run(&a.targets, Op::Ping(a.host.clone(), a.count)),
        FleetCommand::Upgrade(a) => report::run(
            &a.targets,
            Op::Upgrade(Upgrade {
                version: a.version.clone(),
                force: a.force,
                binary: a.binary.clone(),
                sha256: a.sha256.clone(),
            }),
        ),
        FleetCommand::DeadLetters(args) => dead_letters(&args),
    }
}

/// One `outpost fleet` operation.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Status,
    Stats,
    Logs(Option<u32>),
    Reload,
    Ping(String, u32),
    Upgrade(Upgrade),
}

/// `$upgrade`'s parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Upgrade {
    pub(crate) version: Option<String>,
    pub(crate) force: bool,
    pub(crate) binary: Option<String>,
    pub(crate) sha256: Option<String>,
}

/// A client for `relay`, or the exit code of a base URL that cannot be one.
pub(crate) fn client(relay: &RelayArgs) -> anyhow::Result<Result<RelayClient, ExitCode>> {
    let tls = agent_core::client_config(relay.ca_file.as_deref())?;
    match RelayClient::new(&relay.base_url, &relay.client_id, &relay.client_secret, tls) {
        Ok(c) => Ok(Ok(c)),
        Err(agent_core::Error::Config(e)) => {
            eprintln!("error: --base-url: {e}");
            Ok(Err(ExitCode::from(exit::USAGE)))
        }
        Err(e) => Err(e.into()),
    }
}

fn dead_letters(args: &DeadLettersArgs) -> anyhow::Result<ExitCode> {
    let client = match client(&args.relay)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let agent = args.agent.trim_start_matches("Agent/");
    let op = match args.retry {
        Some(id) => format!("{agent}/$dead-letters?retry={id}"),
        None => format!("{agent}/$dead-letters"),
    };
    let answer = crate::runtime()?.block_on(client.read("Agent", &op));
    let params = match answer {
        Ok(p) => p,
        Err(agent_core::Error::Status { status, text, .. }) => {
            eprintln!("error: the relay answered {status}: {text}");
            return Ok(ExitCode::from(if status == 404 || status == 400 {
                exit::USAGE
            } else {
                exit::NO_ANSWER
            }));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(exit::NO_ANSWER));
        }
    };
    let parameters = params["parameter"].as_array().cloned().unwrap_or_default();
    for p in &parameters {
        if p["name"] == "retried" {
            println!("dead letter {} queued again", p["valueInteger"]);
        }
    }
    let dead: Vec<serde_json::Value> = parameters
        .iter()
        .filter(|p| p["name"] == "deadLetter")
        .filter_map(|p| serde_json::from_str(p["valueString"].as_str()?).ok())
        .collect();
    if dead.is_empty() {
        println!("no dead letters");
    }
    for d in dead {
        let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
        println!(
            "{}\t{}\t{}\treceived {}\tdead-lettered {}\t{} errors: {}",
            d["id"],
            s("channel"),
            s("remote"),
            s("receivedAt"),
            s("deadAt"),
            d["failures"],
            s("reason")
        );
    }
    Ok(ExitCode::SUCCESS)
}
