//! `outpost server`: the relay.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use relay::{Relay, RelayConfig};

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8103")]
    listen: String,
    /// Directory for the registry (SQLite) and the token signing key.
    #[arg(long, default_value = "./outpost-data")]
    data: PathBuf,
    /// A FHIR Bundle (type collection) of Agent, Device, Endpoint and ClientApplication
    /// resources to load at start, keeping their ids.
    #[arg(long)]
    bootstrap: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS and WSS (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// POST every inbound device message here first; an HL7 reply from it is the answer.
    #[arg(long)]
    inbound_webhook: Option<String>,
    /// Seconds between heartbeat requests to each agent.
    #[arg(long, default_value_t = 10)]
    heartbeat_secs: u64,
    /// Redis for agent presence and push routing between relay processes (`redis://host:port`,
    /// `rediss://` for TLS).
    /// With it, several `outpost server` processes serve one fleet of agents.
    #[arg(long, env = "OUTPOST_REDIS_URL", requires = "database_url")]
    redis_url: Option<String>,
    /// PostgreSQL for the registry, inbound messages and queued orders, shared by the relay
    /// processes (`postgres://user:password@host:port/db`); without it, SQLite in --data.
    #[arg(long, env = "OUTPOST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// PEM file of the CA(s) that PostgreSQL's and Redis's certificates must chain to (default:
    /// the system's roots). TLS is used with `?sslmode=require` and `rediss://` URLs.
    #[arg(long, env = "OUTPOST_BACKEND_CA_FILE")]
    backend_ca_file: Option<PathBuf>,
    /// Largest `Binary` accepted (`POST /fhir/R4/Binary`), in MiB; more is answered 413.
    #[arg(long, default_value_t = 512)]
    max_binary_mib: u64,
    /// Lab orders: attempts before a push is recorded as failed.
    #[arg(long, default_value_t = 5)]
    order_attempts: u32,
    /// Lab orders: wait after the first failed attempt, in ms (doubling after each).
    #[arg(long, default_value_t = 2000)]
    order_backoff_ms: u64,
    /// Failed logins (token endpoint, HTTP Basic) allowed per client id per minute; past it,
    /// 429 with Retry-After.
    #[arg(long, default_value_t = 10)]
    login_failures_per_client: u32,
    /// Failed logins allowed per source address per minute (behind a proxy: all callers
    /// together).
    #[arg(long, default_value_t = 30)]
    login_failures_per_address: u32,
    /// The console's push log: how many pushes it keeps (the newest, at most 7 days); 0 turns
    /// it off.
    #[arg(long, env = "OUTPOST_PUSH_LOG_ROWS", default_value_t = 100_000)]
    push_log_rows: usize,
    /// Check the settings and the bootstrap bundle (every problem on its own line) and exit:
    /// 0 when the relay would start with them, 2 otherwise. Binds and stores nothing.
    #[arg(long)]
    check: bool,
}

/// `outpost server --check`: every problem with the settings and the bootstrap bundle.
fn check(args: &ServerArgs) -> Vec<String> {
    let mut problems = Vec::new();
    if args.listen.parse::<std::net::SocketAddr>().is_err()
        && args
            .listen
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        problems.push(format!("--listen {}: expected HOST:PORT", args.listen));
    }
    for (flag, path) in [
        ("--tls-cert", &args.tls_cert),
        ("--tls-key", &args.tls_key),
        ("--backend-ca-file", &args.backend_ca_file),
    ] {
        if let Some(p) = path
            && let Err(e) = std::fs::File::open(p)
        {
            problems.push(format!("{flag} {}: {e}", p.display()));
        }
    }
    for (flag, url, schemes) in [
        (
            "--database-url",
            &args.database_url,
            &["postgres", "postgresql"][..],
        ),
        ("--redis-url", &args.redis_url, &["redis", "rediss"][..]),
        (
            "--inbound-webhook",
            &args.inbound_webhook,
            &["http", "https"][..],
        ),
    ] {
        if let Some(u) = url
            && !u
                .split_once("://")
                .is_some_and(|(scheme, _)| schemes.contains(&scheme))
        {
            problems.push(format!(
                "{flag}: expected a {} URL",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
    }
    if let Some(path) = &args.bootstrap {
        match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("not JSON: {e}")))
        {
            Ok(bundle) => problems.extend(
                relay::check_bundle(&bundle)
                    .into_iter()
                    .map(|p| format!("--bootstrap {}: {p}", path.display())),
            ),
            Err(e) => problems.push(format!("--bootstrap {}: {e}", path.display())),
        }
    }
    problems
}

pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        let problems = check(&args);
        for p in &problems {
            println!("problem: {p}");
        }
        if problems.is_empty() {
            println!("OK: the relay would start with these settings");
            return Ok(ExitCode::SUCCESS);
        }
        return Ok(ExitCode::from(crate::exit::USAGE));
    }
    // As many descriptors as the hard limit allows: the relay caps connections below it.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    let heartbeat = Duration::from_secs(args.heartbeat_secs.max(1));
    let config = RelayConfig {
        listen: args.listen,
        data_dir: Some(args.data),
        bootstrap: args.bootstrap,
        tls: args.tls_cert.zip(args.tls_key),
        inbound_webhook: args.inbound_webhook,
        heartbeat_interval: heartbeat,
        // A heartbeat unanswered for half a period marks the agent unresponsive.
        heartbeat_grace: heartbeat / 2,
        agent_timeout: heartbeat * 3 + Duration::from_secs(5),
        order_attempts: args.order_attempts.max(1),
        push_log_rows: args.push_log_rows,
        max_binary: args.max_binary_mib.saturating_mul(1 << 20),
        redis_url: args.redis_url,
        database_url: args.database_url,
        backend_ca_file: args.backend_ca_file,
        order_backoff: Duration::from_millis(args.order_backoff_ms),
        login_limits: relay::LoginLimits {
            per_client: args.login_failures_per_client.max(1),
            per_address: args.login_failures_per_address.max(1),
            period: Duration::from_secs(60),
        },
        ..RelayConfig::default()
    };
    crate::runtime()?.block_on(async {
        let relay = Relay::start(config)
            .await
            .context("cannot start the relay")?;
        let stop = crate::shutdown_signal();
        println!("Relay listening on {}", relay.base_url());
        stop.await;
        relay.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
