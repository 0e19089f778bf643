//! `outpost push`: one message to a device through the relay and an agent, and its answer.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent_core::{PushAnswer, PushOptions, RelayClient};
use anyhow::Context;
use clap::Args;

use crate::exit;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The Agent: its id, `Agent/<id>`, or `Agent?identifier=[system|]value`.
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
    /// How long the relay waits for the answer (default 10000, at most 55000); only with
    /// `--wait`.
    #[arg(long, requires = "wait")]
    wait_timeout_ms: Option<u64>,
    /// HL7: `first` or `application` acknowledgement; only with `--wait`.
    #[arg(long, requires = "wait")]
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
    /// Print the outcome as one JSON object (for scripts): `outcome` (`answered`, `sent`,
    /// `negative`, `unauthorized`, `no-answer`, `usage`), `agent`, `destination`, and
    /// `contentType` and `body` of the answer, or `error`.
    #[arg(long)]
    json: bool,
}

/// `push --json`.
fn push_json(args: &PushArgs, outcome: &str, answer: Option<(&str, &str)>, error: Option<&str>) {
    let mut o = serde_json::json!({
        "outcome": outcome,
        "agent": args.agent,
        "destination": args.destination,
    });
    if let Some((content_type, body)) = answer {
        o["contentType"] = content_type.into();
        o["body"] = body.into();
    }
    if let Some(e) = error {
        o["error"] = e.into();
    }
    println!("{o}");
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
            } else if bytes.get(128..132) == Some(b"DICM") {
                // Part 10: a 128-byte preamble, then "DICM".
                eprintln!(
                    "error: {} is a DICOM file (\"DICM\" after its 128-byte preamble), sent as {}: add --content-type {} to send it with C-STORE",
                    f.display(),
                    args.content_type,
                    agent_protocol::CONTENT_TYPE_DICOM
                );
                return Ok(ExitCode::from(exit::USAGE));
            } else {
                match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(e) => {
                        eprintln!(
                            "error: {} is not UTF-8 text (invalid byte at offset {}), which {} needs; binary files go as {}",
                            f.display(),
                            e.utf8_error().valid_up_to(),
                            args.content_type,
                            agent_protocol::CONTENT_TYPE_DICOM
                        );
                        return Ok(ExitCode::from(exit::USAGE));
                    }
                }
            }
        }
        _ => unreachable!("clap requires one of --body and --file"),
    };
    let tls = agent_core::client_config(args.ca_file.as_deref())?;
    let client = match RelayClient::new(&args.base_url, &args.client_id, &args.client_secret, tls) {
        Ok(c) => c,
        Err(agent_core::Error::Config(e)) => {
            eprintln!("error: --base-url: {e}");
            return Ok(ExitCode::from(exit::USAGE));
        }
        Err(e) => return Err(e.into()),
    };
    let opts = PushOptions {
        wait_for_response: args.wait,
        wait_timeout: args.wait_timeout_ms.map(Duration::from_millis),
        return_ack: args.return_ack.clone(),
    };
    let agent = if args.agent.starts_with("Agent?") || args.agent.starts_with("Agent/") {
        args.agent.clone()
    } else {
        format!("Agent/{}", args.agent)
    };
    let result = crate::runtime()?.block_on(async {
        let push = client.push_to_agent(
            &args.agent,
            &args.destination,
            &body,
            &args.content_type,
            &opts,
        );
        // A wait of up to 55 s says what it waits for, on a terminal only (logs and pipes stay
        // clean).
        if !(args.wait && std::io::stderr().is_terminal()) {
            return push.await;
        }
        let within = opts.wait_timeout.unwrap_or(Duration::from_secs(10));
        let progress = WaitProgress::start(
            format!(
                "waiting for the answer of {} through {agent}",
                args.destination
            ),
            within,
        );
        let result = push.await;
        progress.stop().await;
        result
    });
    if args.json {
        let (outcome, answer, error, code) = match &result {
            Ok(PushAnswer::Delivered) => ("sent", None, None, exit::OK),
            Ok(PushAnswer::Answer { content_type, body }) => {
                let negative = negative_ack(content_type, body).is_some();
                (
                    if negative { "negative" } else { "answered" },
                    Some((content_type.as_str(), body.as_str())),
                    None,
                    if negative { exit::NEGATIVE } else { exit::OK },
                )
            }
            Err(e) => {
                let (outcome, code) = push_failure(e);
                let text = match e {
                    agent_core::Error::Push { text, .. } => text.clone(),
                    other => other.to_string(),
                };
                (outcome, None, Some(text), code)
            }
        };
        push_json(&args, outcome, answer, error.as_deref());
        return Ok(ExitCode::from(code));
    }
    match result {
        Ok(PushAnswer::Delivered) => {
            // "All OK" without waiting confirms the relay's side only: nothing here may read
            // as delivered (issue 18).
            println!("accepted by the agent; delivery not confirmed (use --wait)");
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
            // The device answered (200) but refused: the ACK is printed, the exit says so.
            if let Some(code) = negative_ack(&content_type, &body) {
                eprintln!(
                    "error: {} answered {code} (the acknowledgement is above)",
                    args.destination
                );
                return Ok(ExitCode::from(exit::NEGATIVE));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ agent_core::Error::Push { .. }) => {
            let (_, code) = push_failure(&e);
            if let agent_core::Error::Push { text, .. } = &e {
                eprintln!("error: {text}");
            }
            Ok(ExitCode::from(code))
        }
        Err(e) => {
            let (outcome, code) = push_failure(&e);
            eprintln!("error: {e}");
            if outcome == "unauthorized" {
                eprintln!(
                    "hint: check --client-id and --client-secret (or MEDPLUM_CLIENT_ID and MEDPLUM_CLIENT_SECRET)"
                );
            }
            Ok(ExitCode::from(code))
        }
    }
}

/// MSA-1 of an HL7 answer when it is negative (AE, AR, CE or CR).
fn negative_ack(content_type: &str, body: &str) -> Option<&'static str> {
    if content_type != agent_protocol::CONTENT_TYPE_HL7_V2 {
        return None;
    }
    let msg = hl7v2::Message::parse(body.as_bytes()).ok()?;
    let code = hl7v2::Acknowledgment::read(&msg)?.code();
    (!code.is_positive()).then_some(code.as_str())
}

/// What kind of failure a push error is, and its exit code (also `outpost agent --check`'s).
pub(crate) fn push_failure(e: &agent_core::Error) -> (&'static str, u8) {
    match e {
        agent_core::Error::AgentName(_) => ("usage", exit::USAGE),
        // The relay's timeout, or an agent it could not reach: nobody answered.
        agent_core::Error::Push { code, .. } if code == "timeout" || code == "transient" => {
            ("no-answer", exit::NO_ANSWER)
        }
        agent_core::Error::Push { .. } => ("negative", exit::NEGATIVE),
        agent_core::Error::Unauthorized => ("unauthorized", exit::AUTH),
        // OAuth's token endpoint answers 400 invalid_client or 401 to wrong credentials.
        agent_core::Error::Login {
            status: 400 | 401 | 403,
            ..
        }
        | agent_core::Error::Status {
            status: 401 | 403, ..
        } => ("unauthorized", exit::AUTH),
        _ => ("no-answer", exit::NO_ANSWER),
    }
}

/// A line on stderr, redrawn each second while a push waits: what for, for how long so far.
struct WaitProgress {
    ticker: tokio::task::JoinHandle<()>,
}

impl WaitProgress {
    fn start(what: String, within: Duration) -> WaitProgress {
        let ticker = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                eprint!(
                    "\r{what}: {} s (the relay waits up to {} s) ",
                    started.elapsed().as_secs(),
                    within.as_secs()
                );
                let _ = std::io::stderr().flush();
            }
        });
        WaitProgress { ticker }
    }

    async fn stop(self) {
        self.ticker.abort();
        // Once the task is gone, nothing can draw after the line is cleared.
        let _ = self.ticker.await;
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
}
