//! `outpost fleet`: look after agents through the relay, from anywhere that can reach it.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_core::RelayClient;
use clap::{Args, Subcommand};

use crate::exit;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// The inbound messages an agent moved aside after too many errors (its dead letters);
    /// `--retry ID` sends one again. Through the relay's `Agent/{id}/$dead-letters`.
    DeadLetters(DeadLettersArgs),
}

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    /// The Agent's id.
    agent: String,
    /// Put this dead letter back in its channel's queue (same callback, errors forgotten).
    #[arg(long)]
    retry: Option<i64>,
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

pub fn run(cmd: FleetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FleetCommand::DeadLetters(args) => dead_letters(&args),
    }
}

fn dead_letters(args: &DeadLettersArgs) -> anyhow::Result<ExitCode> {
    let tls = agent_core::client_config(args.ca_file.as_deref())?;
    let client = match RelayClient::new(&args.base_url, &args.client_id, &args.client_secret, tls) {
        Ok(c) => c,
        Err(agent_core::Error::Config(e)) => {
            eprintln!("error: --base-url: {e}");
            return Ok(ExitCode::from(exit::USAGE));
        }
        Err(e) => return Err(e.into()),
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
