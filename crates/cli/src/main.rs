//! `outpost`: the command line. Each subcommand is a thin shell over a library crate.
//!
//! Human output goes to stdout, logs (`RUST_LOG`, default `warn`) to stderr. Exit codes: 0
//! success, 1 a negative answer from the peer (NAK, rejected), 2 bad usage or input, 3 no
//! answer (refused, timeout, connection closed), 4 the relay refused the credentials.

mod agent;
mod astm_cmd;
mod demo;
mod dicom_cmd;
mod fleet;
mod hl7;
mod push;
mod server;

// The relay and the agent allocate many small buffers across threads; mimalloc halves the time
// glibc's malloc takes in the push benchmark's profile (12% → 5% of samples).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes shared by the commands.
mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The peer answered negatively (NAK, rejection).
    pub const NEGATIVE: u8 = 1;
    /// Bad usage or input.
    pub const USAGE: u8 = 2;
    /// No answer: connection refused, timeout, connection closed.
    pub const NO_ANSWER: u8 = 3;
    /// The relay refused the credentials (login failed, 401, 403).
    pub const AUTH: u8 = 4;
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
        // Blocking-pool threads (queue commits, file reads) go after a second idle rather
        // than tokio's ten: an idle agent keeps no stacks and heaps it does not use.
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .enable_all()
        .build()
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are registered when this is called, not when
/// the future is first polled: a command calls it before it says it is ready, so a signal that
/// comes right after is a clean stop (databases closed, WAL checkpointed) and not the default
/// action, which kills the process where it stands.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (term, int) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            let (Ok(mut term), Ok(mut int)) = (term, int) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

use std::ffi::OsString;

use clap::{Parser, Subcommand};

/// Outpost: reach HL7 v2, ASTM and DICOM devices on a local network from the cloud.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text or as one JSON object each (for log collectors).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    Push(push::PushArgs),
    /// Look after agents through the relay: status, stats, logs, reload, ping, upgrade, dead
    /// letters.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// The whole push flow in one process: relay, agent and an HL7 device on loopback.
    Demo,
}

/// dcmtk's spellings on `outpost dicom`, which clap cannot express (single-dash long options):
/// `-aet X` and `-aec X` name the calling and called AE titles, `find -P|-S|-W` picks the
/// Patient Root, Study Root or Modality Worklist model, `-d` logs at debug level and `-v` at
/// info level (`store -v` keeps its own meaning). Returns the arguments as clap reads them and
/// the log level asked for.
fn dcmtk_spellings(args: Vec<OsString>) -> (Vec<OsString>, Option<&'static str>) {
    if args.get(1).is_none_or(|a| a != "dicom") {
        return (args, None);
    }
    let sub = args.get(2).cloned().unwrap_or_default();
    let mut level = None;
    let mut out: Vec<OsString> = args[..args.len().min(3)].to_vec();
    let mut rest = args.into_iter().skip(3);
    for a in rest.by_ref() {
        let Some(flag) = a.to_str() else {
            out.push(a);
            continue;
        };
        match (sub.to_str().unwrap_or_default(), flag) {
            (_, "--") => {
                out.push(a);
                break;
            }
            (_, "-aet") => out.push("--calling-aet".into()),
            (_, "-aec") => out.push("--called-aet".into()),
            ("find", "-P") => out.push("--model=patient".into()),
            ("find", "-S") => out.push("--model=study".into()),
            ("find", "-W") => out.push("--model=worklist".into()),
            (_, "-d") => level = Some("debug"),
            (sub, "-v") if sub != "store" => level = level.or(Some("info")),
            _ => out.push(a),
        }
    }
    out.extend(rest);
    (out, level)
}

/// The agent's log files, as `tracing` layers for the registry.
type FileLayers =
    Vec<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>>;

/// Installs the process's logging: stderr (text or JSON) at `RUST_LOG` when it is set, else at
/// `directive`; and, for the agent, its log files (`files`, each filtered by its own logger's
/// level) and the lines kept for `$fetch-logs` (`buffer`).
fn init_logging(
    format: LogFormat,
    directive: &str,
    files: FileLayers,
    buffer: Option<agent_core::LogBuffer>,
) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directive));
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(files)
        .with(text.with_filter(filter.clone()))
        .with(json.with_filter(filter))
        .with(buffer.map(agent_core::LogLayer::new))
        .init();
}

fn main() -> std::process::ExitCode {
    let (args, dcmtk_level) = dcmtk_spellings(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    // The agent sets its logging up once it has read its settings (`logLevel`, `logger.*`).
    if !matches!(cli.command, Command::Agent(_)) {
        init_logging(
            cli.log_format,
            dcmtk_level.unwrap_or_else(|| default_log_level(&cli)),
            Vec::new(),
            None,
        );
    }
    let result = match cli.command {
        Command::Hl7(cmd) => hl7::run(cmd),
        Command::Astm(cmd) => astm_cmd::run(cmd),
        Command::Dicom(cmd) => dicom_cmd::run(cmd),
        Command::Server(args) => server::run(args),
        Command::Agent(args) => agent::run(args, cli.log_format),
        Command::Push(args) => push::push(args),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> (Vec<String>, Option<&'static str>) {
        let (out, level) = dcmtk_spellings(args.iter().map(OsString::from).collect());
        let out = out.into_iter().map(|a| a.into_string().unwrap()).collect();
        (out, level)
    }

    #[test]
    fn dcmtk_spellings_become_outposts() {
        let (args, level) = rewrite(&[
            "outpost", "dicom", "find", "-aet", "ME", "-aec", "PACS", "-W", "-d", "h", "104",
        ]);
        assert_eq!(
            args,
            [
                "outpost",
                "dicom",
                "find",
                "--calling-aet",
                "ME",
                "--called-aet",
                "PACS",
                "--model=worklist",
                "h",
                "104"
            ]
        );
        assert_eq!(level, Some("debug"));
        let (args, level) = rewrite(&[
            "outpost", "dicom", "store", "-v", "-aet", "A", "h", "1", "x.dcm",
        ]);
        assert_eq!(
            args,
            [
                "outpost",
                "dicom",
                "store",
                "-v",
                "--calling-aet",
                "A",
                "h",
                "1",
                "x.dcm"
            ]
        );
        assert_eq!(level, None, "store -v is store's own verbose");
        let (_, level) = rewrite(&["outpost", "dicom", "echo", "-v", "h", "1"]);
        assert_eq!(level, Some("info"));
        // Not dicom, or after `--`: untouched.
        let (args, _) = rewrite(&["outpost", "hl7", "send", "-aet"]);
        assert_eq!(args, ["outpost", "hl7", "send", "-aet"]);
        let (args, _) = rewrite(&["outpost", "dicom", "store", "h", "1", "--", "-aet"]);
        assert_eq!(args, ["outpost", "dicom", "store", "h", "1", "--", "-aet"]);
        // -P means Patient Root only on find.
        let (args, _) = rewrite(&["outpost", "dicom", "find", "-P", "h", "1"]);
        assert_eq!(args[3], "--model=patient");
        let (args, _) = rewrite(&["outpost", "dicom", "echo", "-P"]);
        assert_eq!(args[3], "-P");
    }
}
