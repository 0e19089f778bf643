//! `outpost agent` and `outpost push`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent_core::{Agent, AgentConfig, LogBuffer, PushAnswer, PushOptions, RelayClient};
use anyhow::Context;
use clap::Args;

use crate::exit;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Medplum's `agent.properties` (baseUrl, clientId, clientSecret or clientSecretFile,
    /// agentId, logLevel). `MEDPLUM_CLIENT_SECRET` in the environment overrides its secret.
    #[arg(long, conflicts_with_all = ["base_url", "client_id", "client_secret", "client_secret_file", "agent_id"])]
    config: Option<PathBuf>,
    /// The relay's base URL.
    #[arg(long)]
    base_url: Option<String>,
    /// ClientApplication id.
    #[arg(long)]
    client_id: Option<String>,
    /// ClientApplication secret (visible in `ps`: prefer `MEDPLUM_CLIENT_SECRET` or
    /// --client-secret-file).
    #[arg(long, conflicts_with = "client_secret_file")]
    client_secret: Option<String>,
    /// A file holding the ClientApplication secret; it must be readable by its owner only.
    #[arg(long)]
    client_secret_file: Option<PathBuf>,
    /// Agent resource id.
    #[arg(long)]
    agent_id: Option<String>,
    /// A PEM CA certificate to trust for the relay, besides the system roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Directory for the durable inbound queue.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn run(args: AgentArgs, logs: LogBuffer) -> anyhow::Result<ExitCode> {
    // The secret, by precedence: --client-secret, --client-secret-file, MEDPLUM_CLIENT_SECRET,
    // then agent.properties (clientSecret or clientSecretFile).
    let env_secret = std::env::var("MEDPLUM_CLIENT_SECRET")
        .ok()
        .filter(|s| !s.is_empty());
    let flag_secret = match (&args.client_secret, &args.client_secret_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(path)) => Some(agent_core::read_secret_file(path)?),
        (None, None) => None,
    };
    let mut config = match &args.config {
        Some(path) => AgentConfig::read_file(path)?,
        None if args.base_url.is_none() && std::path::Path::new("agent.properties").exists() => {
            AgentConfig::read_file(std::path::Path::new("agent.properties"))?
        }
        None => AgentConfig {
            base_url: args.base_url.unwrap_or_default(),
            client_id: args.client_id.unwrap_or_default(),
            agent_id: args.agent_id.unwrap_or_default(),
            ..AgentConfig::default()
        },
    };
    if let Some(secret) = flag_secret.or(env_secret) {
        config.client_secret = secret;
    }
    if args.ca_file.is_some() {
        config.ca_file = args.ca_file;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Err(e) = config.validate() {
        eprintln!(
            "error: {e} (give --config agent.properties, or --base-url, --client-id, --client-secret (or MEDPLUM_CLIENT_SECRET, or --client-secret-file) and --agent-id)"
        );
        return Ok(ExitCode::from(exit::USAGE));
    }
    crate::runtime()?.block_on(async {
        let agent = Agent::start(config.clone(), logs)
            .await
            .context("cannot start the agent")?;
        println!(
            "Agent {} starting; relay {}",
            config.agent_id,
            config.base()
        );
        crate::shutdown_signal().await;
        agent.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The Agent id (or `Agent/<id>`).
    agent: String,
    /// `Device/<id>`, `Device?identifier=...`, or a host for `x-application/ping`.
    #[arg(long)]
    destination: String,
    /// Content type of the body.
    #[arg(long, default_value = agent_protocol::CONTENT_TYPE_HL7_V2)]
    content_type: String,
    /// The body; HL7 segments may be separated by `\r`, `\n` or `\r\n`.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    body: Option<String>,
    /// Read the body from a file (with `application/dicom`, a DICOM file, with or without a
    /// meta header, is sent base64-encoded).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Wait for the device's answer and print it.
    #[arg(long)]
    wait: bool,
    /// How long the relay waits for the answer (default 10000, at most 55000).
    #[arg(long)]
    wait_timeout_ms: Option<u64>,
    /// HL7: `first` or `application` acknowledgement.
    #[arg(long)]
    return_ack: Option<String>,
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

pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let body = match (&args.body, &args.file) {
        (Some(b), _) => b.clone(),
        (_, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            if args.content_type == agent_protocol::CONTENT_TYPE_DICOM {
                // A DICOM file travels base64-encoded in the JSON body.
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            } else {
                String::from_utf8(bytes)
                    .with_context(|| format!("{} is not UTF-8 text", f.display()))?
            }
        }
        _ => unreachable!("clap requires one of --body and --file"),
    };
    let tls = agent_core::client_config(args.ca_file.as_deref())?;
    let client = RelayClient::new(&args.base_url, &args.client_id, &args.client_secret, tls)?;
    let opts = PushOptions {
        wait_for_response: args.wait,
        wait_timeout: args.wait_timeout_ms.map(Duration::from_millis),
        return_ack: args.return_ack.clone(),
    };
    let result = crate::runtime()?.block_on(client.push_to_agent(
        &args.agent,
        &args.destination,
        &body,
        &args.content_type,
        &opts,
    ));
    match result {
        Ok(PushAnswer::Delivered) => {
            println!("Delivered to the agent.");
            Ok(ExitCode::SUCCESS)
        }
        Ok(PushAnswer::Answer { content_type, body }) => {
            if content_type == agent_protocol::CONTENT_TYPE_HL7_V2 {
                for seg in body.split(['\r', '\n']).filter(|s| !s.is_empty()) {
                    println!("{seg}");
                }
            } else {
                println!("{body}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(agent_core::Error::Push { text, .. }) => {
            eprintln!("error: {text}");
            Ok(ExitCode::from(exit::NEGATIVE))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit::NO_ANSWER))
        }
    }
}
