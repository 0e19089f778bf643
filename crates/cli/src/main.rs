//! `outpost`: the command line. Each subcommand is a thin shell over a library crate.
//!
//! Human output goes to stdout, logs (`RUST_LOG`, default `warn`) to stderr. Exit codes: 0
//! success, 1 a negative answer from the peer (NAK, rejected), 2 bad usage or input, 3 no
//! answer (refused, timeout, connection closed).

mod agent;
mod astm_cmd;
mod demo;
mod dicom_cmd;
mod fleet;
mod hl7;
mod server;

// The relay and the agent allocate many small buffers across threads; mimalloc halves the time
// glibc's malloc takes in the push benchmark's profile (12% → 5% of samples).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes shared by the commands.
mod exit {
    /// The peer answered negatively (NAK, rejection).
    pub const NEGATIVE: u8 = 1;
    /// Bad usage or input.
    pub const USAGE: u8 = 2;
    /// No answer: connection refused, timeout, connection closed.
    pub const NO_ANSWER: u8 = 3;
}

/// Long-running services log what they do; one-shot commands only warnings.
fn default_log_level(cli: &Cli) -> &'static str {
    match cli.command {
        Command::Server(_) | Command::Agent(_) => "info",
        Command::Hl7(_)
        | Command::Astm(_)
        | Command::Dicom(_)
        | Command::Push(_)
        | Command::Fleet(_)
        | Command::Demo => "warn",
    }
}

/// The runtime for async commands.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

use clap::{Parser, Subcommand};

/// Outpost: reach HL7 v2, ASTM and DICOM devices on a local network from the cloud.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HL7 v2: print files, listen for and send messages over MLLP.
    #[command(subcommand)]
    Hl7(hl7::Hl7Command),
    /// ASTM E1381/E1394: listen for and send lab instrument messages over TCP.
    #[command(subcommand)]
    Astm(astm_cmd::AstmCommand),
    /// DICOM: C-ECHO, C-STORE and C-FIND against a PACS, modality or worklist server.
    #[command(subcommand)]
    Dicom(dicom_cmd::DicomCommand),
    /// Run the relay: token endpoint, FHIR registry, $push and the agent WebSocket.
    Server(server::ServerArgs),
    /// Run the on-premises agent: connect to the relay, deliver pushes, relay device messages.
    Agent(agent::AgentArgs),
    /// Push a message to a device through an agent (like MedplumClient.pushToAgent).
    Push(agent::PushArgs),
    /// Look after agents through the relay (dead letters).
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// The whole push flow in one process: relay, agent and an HL7 device on loopback.
    Demo,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Logs to stderr; the agent also keeps its recent lines for `$fetch-logs`.
    let logs = agent_core::LogBuffer::new();
    {
        use tracing_subscriber::prelude::*;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log_level(&cli)));
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(filter),
            )
            .with(agent_core::LogLayer::new(logs.clone()))
            .init();
    }
    let result = match cli.command {
        Command::Hl7(cmd) => hl7::run(cmd),
        Command::Astm(cmd) => astm_cmd::run(cmd),
        Command::Dicom(cmd) => dicom_cmd::run(cmd),
        Command::Server(args) => server::run(args),
        Command::Agent(args) => agent::run(args, logs),
        Command::Push(args) => agent::push(args),
        Command::Fleet(cmd) => fleet::run(cmd),
        Command::Demo => demo::run(),
    };
    match result {
        Ok(code) => code,
        // `outpost ... | head` closing the pipe early is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
