//! `outpost agent`: the agent itself, `--check`, and its `dead-letters` and upgrade-watchdog
//! subcommands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent_core::{Agent, AgentConfig, LogBuffer, LogLevel};
use anyhow::Context;
use clap::Args;

use crate::exit;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// Medplum's positional form, as its Docker image runs the agent: BASE_URL CLIENT_ID
    /// CLIENT_SECRET AGENT_ID [LOG_LEVEL] (the secret is then visible in `ps`).
    #[arg(
        value_names = ["BASE_URL", "CLIENT_ID", "CLIENT_SECRET", "AGENT_ID", "LOG_LEVEL"],
        num_args = 4..=5,
        conflicts_with_all = ["config", "base_url", "client_id", "client_secret", "client_secret_file", "agent_id"]
    )]
    positional: Vec<String>,
    /// Medplum's `agent.properties` (baseUrl, clientId, clientSecret or clientSecretFile,
    /// agentId, logLevel, logger.main.* and logger.channel.*). `MEDPLUM_CLIENT_SECRET` in the
    /// environment overrides its secret.
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
    #[arg(long, help = data_dir_help())]
    data_dir: Option<PathBuf>,
    /// NONE, ERROR, WARN, INFO or DEBUG (overrides `logLevel`; `RUST_LOG`, when set, still
    /// decides what reaches stderr).
    #[arg(long)]
    log_level: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (`metricsListen` in agent.properties);
    /// port 0 picks a free port, printed as "Metrics listening on URL".
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Check the settings and what the relay configures for this agent (log in, read the
    /// Agent and its channels' Endpoints), print each problem on its own line, and exit: 0
    /// when it would start cleanly, 2 with problems, 3 relay unreachable, 4 credentials
    /// refused. Opens nothing.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// List the messages the relay kept refusing (the dead letters), or send one again.
    /// Reads the agent's queue file directly: run it on the agent's machine, while the agent
    /// runs or not (a running agent picks a retried message up within seconds).
    DeadLetters(DeadLettersArgs),
    /// Started by the agent itself during `$upgrade`: waits for the new version to reach the
    /// relay, and puts the old executable back and runs it when it does not.
    #[command(hide = true)]
    UpgradeWatchdog(WatchdogArgs),
}

#[derive(Debug, Args)]
struct WatchdogArgs {
    /// The upgrade's state file (`<executable>.upgrade.json`).
    state: PathBuf,
}

/// `outpost agent upgrade-watchdog STATE`: returns when the new version confirmed; after a
/// rollback, becomes the old agent (exec) and returns only if that failed.
fn upgrade_watchdog(args: &WatchdogArgs) -> anyhow::Result<ExitCode> {
    match agent_core::watch_upgrade(&args.state)? {
        agent_core::Watch::Confirmed => Ok(ExitCode::SUCCESS),
        agent_core::Watch::RolledBack(restart) => {
            println!(
                "Upgrade rolled back: running {} again (pid {})",
                restart.executable().display(),
                std::process::id()
            );
            let e = restart.exec();
            Err(anyhow::Error::new(e).context("cannot run the previous executable again"))
        }
    }
}

#[derive(Debug, Args)]
struct DeadLettersArgs {
    /// The agent's data directory (`dataDir`). Default: the one the agent uses with the same
    /// `--config` (or ./agent.properties), else the per-user state directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The agent's properties file, to find its data directory as the agent does.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Put this dead letter back in its channel's queue (same callback, errors forgotten).
    #[arg(long)]
    retry: Option<i64>,
}

/// The data directory `outpost agent` would use: `--data-dir`, else the properties file's
/// (`--config`, or ./agent.properties), else the per-user default.
fn agent_data_dir(args: &DeadLettersArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &args.data_dir {
        return Ok(d.clone());
    }
    let implicit = std::path::Path::new("agent.properties");
    let file = args
        .config
        .as_deref()
        .or_else(|| implicit.exists().then_some(implicit));
    Ok(match file {
        Some(f) => AgentConfig::read_file(f)?.data_dir,
        None => AgentConfig::default().data_dir,
    })
}

fn dead_letters(args: &DeadLettersArgs) -> anyhow::Result<ExitCode> {
    let data_dir = agent_data_dir(args)?;
    let path = data_dir.join("agent-queue.sqlite");
    if !path.exists() {
        eprintln!(
            "error: no agent queue at {} (give the agent's --data-dir or --config)",
            path.display()
        );
        return Ok(ExitCode::from(exit::USAGE));
    }
    let queue = agent_core::queue::Queue::open(Some(&path))
        .with_context(|| format!("cannot open {}", path.display()))?;
    if let Some(id) = args.retry {
        return Ok(match queue.retry_dead_letter(id)? {
            Some(channel) => {
                println!("dead letter {id} queued again on channel {channel}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!(
                    "error: no dead letter {id} (see `outpost agent dead-letters --data-dir {}`)",
                    data_dir.display()
                );
                ExitCode::from(exit::USAGE)
            }
        });
    }
    let dead = queue.dead_letters()?;
    if dead.is_empty() {
        println!("no dead letters");
    }
    for d in dead {
        println!(
            "{}\t{}\t{}\treceived {}\tdead-lettered {}\t{} errors: {}",
            d.message.id,
            d.message.channel,
            d.message.remote,
            d.received_at,
            d.dead_at,
            d.failures,
            d.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--data-dir`'s help, naming the default directory of this user.
fn data_dir_help() -> String {
    let state = agent_core::default_data_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "none here: HOME is not set".to_owned());
    format!(
        "Directory for the durable inbound queue (`dataDir`). Default: outpost-agent-data next to the properties file when one is read, else the per-user state directory: {state}"
    )
}

/// The configuration of Medplum's positional form: `BASE_URL CLIENT_ID CLIENT_SECRET AGENT_ID
/// [LOG_LEVEL]`.
fn positional_config(values: &[String]) -> Result<AgentConfig, agent_core::ConfigError> {
    let log_level = values
        .get(4)
        .map(|l| LogLevel::parse("LOG_LEVEL", l))
        .transpose()?;
    Ok(AgentConfig {
        base_url: values[0].clone(),
        client_id: values[1].clone(),
        client_secret: values[2].clone(),
        agent_id: values[3].clone(),
        log_level,
        ..AgentConfig::default()
    })
}

/// The `tracing` directive for the agent's stderr: the main logger's level, and the channel
/// logger's for the inbound channels.
fn agent_directive(config: &AgentConfig) -> String {
    format!(
        "{},{}={}",
        config.main_level().directive(),
        agent_core::CHANNEL_TARGET,
        config.channel_level().directive()
    )
}

pub fn run(args: AgentArgs, log_format: crate::LogFormat) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(AgentCommand::DeadLetters(d)) => {
            crate::init_logging(log_format, "info", Vec::new(), None);
            return dead_letters(d);
        }
        Some(AgentCommand::UpgradeWatchdog(w)) => {
            crate::init_logging(log_format, "info", Vec::new(), None);
            return upgrade_watchdog(w);
        }
        None => {}
    }
    // The secret, by precedence: --client-secret, --client-secret-file, MEDPLUM_CLIENT_SECRET,
    // then agent.properties (clientSecret or clientSecretFile).
    let env_secret = std::env::var("MEDPLUM_CLIENT_SECRET")
        .ok()
        .filter(|s| !s.is_empty());
    let override_secret = match (&args.client_secret, &args.client_secret_file) {
        (Some(_), _) => None,
        (None, Some(path)) => Some(agent_core::read_secret_file(path)?),
        (None, None) => env_secret,
    };
    let implicit = std::path::Path::new("agent.properties");
    let positional = !args.positional.is_empty();
    let settings = match &args.config {
        _ if positional => "settings from the command line".to_owned(),
        Some(path) => format!("settings from {}", path.display()),
        None if implicit.exists() => "settings from ./agent.properties".to_owned(),
        None => "settings from the flags".to_owned(),
    };
    let mut config = match &args.config {
        // Medplum's agent reads no file when given its four arguments.
        _ if positional => match positional_config(&args.positional) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(exit::USAGE));
            }
        },
        Some(path) => AgentConfig::read_file(path)?,
        None if implicit.exists() => {
            // A file found in the current directory and flags must not disagree silently:
            // refuse, naming both values. Flags the file leaves empty fill it in.
            let mut config = AgentConfig::read_file(implicit)?;
            match merge_flags(&mut config, &args) {
                Ok(()) => config,
                Err(conflict) => {
                    eprintln!(
                        "error: {conflict} in {} (read because --config was not given); \
                         remove the flag, pass --config to say which file to use, or run from another directory",
                        std::env::current_dir()
                            .map(|d| d.join(implicit).display().to_string())
                            .unwrap_or_else(|_| "./agent.properties".to_owned())
                    );
                    return Ok(ExitCode::from(exit::USAGE));
                }
            }
        }
        None => AgentConfig {
            base_url: args.base_url.clone().unwrap_or_default(),
            client_id: args.client_id.clone().unwrap_or_default(),
            client_secret: args.client_secret.clone().unwrap_or_default(),
            agent_id: args.agent_id.clone().unwrap_or_default(),
            ..AgentConfig::default()
        },
    };
    // The secret given as an argument of the positional form is the one meant.
    if let (Some(secret), false) = (override_secret, positional) {
        config.client_secret = secret;
    }
    if let Some(level) = &args.log_level {
        match LogLevel::parse("--log-level", level) {
            Ok(level) => config.log_level = Some(level),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(exit::USAGE));
            }
        }
    }
    if args.ca_file.is_some() {
        config.ca_file = args.ca_file.clone();
    }
    if let Some(d) = args.data_dir.clone() {
        config.data_dir = d;
    }
    if args.metrics_listen.is_some() {
        config.metrics_listen = args.metrics_listen;
    }
    if let Err(e) = config.validate() {
        eprintln!(
            "error: {e} (give --config agent.properties, or --base-url, --client-id, --client-secret (or MEDPLUM_CLIENT_SECRET, or --client-secret-file) and --agent-id)"
        );
        return Ok(ExitCode::from(exit::USAGE));
    }
    if args.check {
        crate::init_logging(log_format, &agent_directive(&config), Vec::new(), None);
        let file = args
            .config
            .clone()
            .or_else(|| implicit.exists().then(|| implicit.to_owned()));
        let unknown = match &file {
            Some(path) => agent_core::unknown_property_keys(&std::fs::read_to_string(path)?)
                .into_iter()
                .map(|(line, key)| {
                    format!(
                        "{} line {line}: {key} is not a key Outpost reads ({})",
                        path.display(),
                        agent_core::PROPERTY_KEYS.join(", ")
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        return crate::runtime()?.block_on(check(&config, &settings, &unknown));
    }
    // Logging as the settings say: stderr, the files of `logger.*.logDir` (kept open, and
    // flushed when dropped, for as long as the agent runs), and `$fetch-logs`'s lines.
    let mut files = match agent_core::LogFiles::open(&config) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: cannot open the log file: {e}");
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    let logs = match files.main_file() {
        Some(path) => LogBuffer::with_file(path.to_owned()),
        None => LogBuffer::new(),
    };
    crate::init_logging(
        log_format,
        &agent_directive(&config),
        files.take_layers(),
        Some(logs.clone()),
    );
    if let Some(path) = files.main_file() {
        tracing::info!(file = %path.display(), "logging to a file");
    }
    if files.channels_merged() {
        tracing::info!("logger.channel.logDir is not set: channel lines go to the main log file");
    }
    let result = run_agent(config, logs, settings);
    drop(files);
    match result? {
        Ran::Stopped => Ok(ExitCode::SUCCESS),
        Ran::Upgraded(restart) => {
            println!(
                "Upgrade installed: running {} (same arguments)",
                restart.executable().display()
            );
            let e = restart.exec();
            // The watchdog puts the old executable back and runs it when the new one does
            // not connect: exiting here leaves it that to do.
            Err(anyhow::Error::new(e).context("cannot run the upgraded executable"))
        }
    }
}

/// How the agent stopped.
enum Ran {
    /// Ctrl-C or SIGTERM.
    Stopped,
    /// An upgrade put a new executable in place: run it.
    Upgraded(agent_core::Restart),
}

/// Runs the agent until Ctrl-C, SIGTERM, or an upgrade installed.
fn run_agent(config: AgentConfig, logs: LogBuffer, settings: String) -> anyhow::Result<Ran> {
    crate::runtime()?.block_on(async {
        // From here a SIGTERM is a clean stop, however early it comes.
        let stop = crate::shutdown_signal();
        let agent = std::sync::Arc::new(
            Agent::start(config.clone(), logs)
                .await
                .context("cannot start the agent")?,
        );
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                serve_metrics(addr, agent.clone())
                    .await
                    .with_context(|| format!("cannot serve metrics on {addr}"))?,
            ),
            None => None,
        };
        println!(
            "Agent {} starting; relay {} ({settings})",
            config.agent_id,
            config.base()
        );
        // One line per channel that starts listening, with the address it bound (an Endpoint
        // on port 0 gets a free port: this says which).
        let mut events = agent.events();
        let mut announced = std::collections::HashSet::new();
        for (name, bound) in agent.channels().await {
            println!("Channel {name} listening on {bound}");
            announced.insert((name, bound));
        }
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(agent_core::Event::ChannelStarted { name, bound, .. }) => {
                        if announced.insert((name.clone(), bound)) {
                            println!("Channel {name} listening on {bound}");
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        // Say when the relay is reached, and when it has not been after a few seconds (the
        // log lines on stderr say why each attempt failed).
        let announce = async {
            if !agent.wait_live(Duration::from_secs(5)).await {
                println!(
                    "Not connected to {} yet; still trying, with backoff (the log on stderr says why). Device messages are queued meanwhile.",
                    config.base()
                );
                // wait_live is also false at once if the link stopped: do not spin on it.
                while !agent.wait_live(Duration::from_secs(3600)).await {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            println!("Connected to the relay.");
            std::future::pending::<()>().await
        };
        let ran = tokio::select! {
            () = stop => Ran::Stopped,
            () = announce => Ran::Stopped,
            r = agent.restart_requested() => Ran::Upgraded(r),
        };
        if let Some(server) = metrics {
            server.abort();
            let _ = server.await;
        }
        // The metrics server held the only other handle, and it is gone.
        if let Ok(agent) = std::sync::Arc::try_unwrap(agent) {
            agent.shutdown().await;
        }
        Ok(ran)
    })
}

/// Serves `GET /metrics` (Prometheus text) on `addr` until aborted; says where on stdout.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    agent: std::sync::Arc<Agent>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "Metrics listening on http://{}/metrics",
        listener.local_addr()?
    );
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let agent = agent.clone();
            async move {
                // Reading the queue's depth is a SQLite query: off the runtime's threads.
                let text = tokio::task::spawn_blocking(move || agent.metrics_text())
                    .await
                    .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    }))
}

/// `outpost agent --check`.
async fn check(
    config: &AgentConfig,
    settings: &str,
    unknown_keys: &[String],
) -> anyhow::Result<ExitCode> {
    println!(
        "Agent {}; relay {} ({settings})",
        config.agent_id,
        config.base()
    );
    for p in unknown_keys {
        println!("problem: {p}");
    }
    match agent_core::check(config).await {
        Ok(report) => {
            for (name, address) in &report.channels {
                println!("channel {name}: {address}");
            }
            for p in &report.problems {
                println!("problem: {p}");
            }
            if report.problems.is_empty() && unknown_keys.is_empty() {
                println!(
                    "OK: logged in, {} channel(s) would start",
                    report.channels.len()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(exit::USAGE))
            }
        }
        Err(e @ agent_core::Error::Config(_)) => {
            println!("problem: {e}");
            Ok(ExitCode::from(exit::USAGE))
        }
        Err(e) => {
            let (_, code) = crate::push::push_failure(&e);
            println!("problem: {e}");
            Ok(ExitCode::from(code))
        }
    }
}

/// Fills the settings `config` (read from an implicit `agent.properties`) lacks from the flags;
/// a flag that disagrees with the file is an error naming both values (never the secret).
fn merge_flags(config: &mut AgentConfig, args: &AgentArgs) -> Result<(), String> {
    let fields: [(&str, &str, &Option<String>, &mut String, bool); 4] = [
        (
            "--base-url",
            "baseUrl",
            &args.base_url,
            &mut config.base_url,
            false,
        ),
        (
            "--client-id",
            "clientId",
            &args.client_id,
            &mut config.client_id,
            false,
        ),
        (
            "--client-secret",
            "clientSecret",
            &args.client_secret,
            &mut config.client_secret,
            true,
        ),
        (
            "--agent-id",
            "agentId",
            &args.agent_id,
            &mut config.agent_id,
            false,
        ),
    ];
    for (flag, key, given, value, secret) in fields {
        let Some(given) = given else { continue };
        if value.is_empty() {
            *value = given.clone();
        } else if flag == "--base-url" && value.trim_end_matches('/') == given.trim_end_matches('/')
        {
            continue;
        } else if value != given {
            return Err(if secret {
                format!("{flag} differs from {key}")
            } else {
                format!("{flag} {given} disagrees with {key}={value}")
            });
        }
    }
    Ok(())
}
