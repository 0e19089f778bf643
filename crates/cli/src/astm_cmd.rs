//! `outpost astm listen|send`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use astm::{Connection, LinkOptions, Message, Role};
use clap::{Subcommand, ValueEnum};

use crate::exit;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// The LIS / host (yields on contention).
    Computer,
    /// The analyzer (wins contention).
    Instrument,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Computer => Role::Computer,
            RoleArg::Instrument => Role::Instrument,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AstmCommand {
    /// Receive ASTM messages (E1381 over TCP) and print each record on a line.
    Listen {
        /// TCP port (0 picks a free one; the address is printed).
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        /// This side's role on the link.
        #[arg(long, value_enum, default_value = "computer")]
        role: RoleArg,
    },
    /// Send one ASTM message (E1394 records) over E1381/TCP.
    Send {
        /// Receiver host.
        host: String,
        /// Receiver port.
        port: u16,
        /// Records, one per line (separated by CR, LF or CRLF).
        #[arg(
            long,
            conflicts_with = "generate_example",
            required_unless_present = "generate_example"
        )]
        file: Option<PathBuf>,
        /// Send an order message (H, P, O, L) for a complete blood count.
        #[arg(long)]
        generate_example: bool,
        /// This side's role on the link.
        #[arg(long, value_enum, default_value = "computer")]
        role: RoleArg,
    },
}

pub fn run(cmd: AstmCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AstmCommand::Listen { port, bind, role } => {
            crate::runtime()?.block_on(listen(&bind, port, role.into()))
        }
        AstmCommand::Send {
            host,
            port,
            file,
            generate_example,
            role,
        } => {
            let text = match (file, generate_example) {
                (Some(f), _) => {
                    std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
                }
                _ => {
                    astm::example_cbc_order(&chrono::Utc::now().format("%Y%m%d%H%M%S").to_string())
                }
            };
            // Records travel separated by CR whatever the file used.
            let records: Vec<&[u8]> = text
                .split(|&b| b == b'\r' || b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
                .collect();
            let mut message = Vec::with_capacity(text.len() + 1);
            for r in &records {
                message.extend_from_slice(r);
                message.push(b'\r');
            }
            if let Err(e) = Message::parse(&message) {
                eprintln!("error: not an ASTM message: {e}");
                return Ok(ExitCode::from(exit::USAGE));
            }
            crate::runtime()?.block_on(send(&host, port, &message, records.len(), role.into()))
        }
    }
}

async fn listen(bind: &str, port: u16, role: Role) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("cannot listen on {bind}:{port}"))?;
    println!("Listening on {}", listener.local_addr()?);
    let accept = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut conn = Connection::new(
                    stream,
                    // The message is printed before the sender gets the last frame's ACK.
                    LinkOptions {
                        role,
                        confirm_before_ack: true,
                        ..LinkOptions::default()
                    },
                );
                loop {
                    match conn.next_message().await {
                        Ok(Some(m)) => {
                            print_message(&m);
                            if conn.confirm(true).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "connection error");
                            break;
                        }
                    }
                }
                tracing::info!(%peer, stats = ?conn.link().stats(), "connection closed");
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = crate::shutdown_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Each record on a line, read as ISO 8859-1; then a blank line.
fn print_message(m: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if Message::parse(m).is_err() {
        tracing::warn!("message does not start with an H record");
    }
    for record in m.split(|&b| b == b'\r').filter(|r| !r.is_empty()) {
        let _ = writeln!(out, "{}", encoding_rs::mem::decode_latin1(record));
    }
    let _ = writeln!(out);
    let _ = out.flush();
}

async fn send(
    host: &str,
    port: u16,
    message: &[u8],
    records: usize,
    role: Role,
) -> anyhow::Result<ExitCode> {
    let mut conn = match astm::connect(
        &format!("{host}:{port}"),
        LinkOptions {
            role,
            ..LinkOptions::default()
        },
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot connect to {host}:{port}: {e}");
            return Ok(ExitCode::from(exit::NO_ANSWER));
        }
    };
    match conn.send(message).await {
        Ok(()) => {
            let s = conn.link().stats();
            println!(
                "Sent {records} records in {} frames, all acknowledged ({} retransmitted).",
                s.frames_sent - s.retransmissions,
                s.retransmissions
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (astm::Error::Timeout(_) | astm::Error::Closed | astm::Error::Io(_))) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit::NO_ANSWER))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit::NEGATIVE))
        }
    }
}
