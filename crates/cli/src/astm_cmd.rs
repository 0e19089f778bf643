//! `outpost astm listen|send`.

use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use astm::{Connection, LinkOptions, Message, Role};
use clap::{Subcommand, ValueEnum};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        /// How long to wait for the connection, for the answer to ENQ and for each frame's
        /// acknowledgement (E1381: 15 s). An ENQ nobody answers ends the send.
        #[arg(long, default_value_t = 15_000)]
        timeout_ms: u64,
        /// Print each step of the exchange on stderr: what was sent and what it waits for.
        #[arg(short, long)]
        verbose: bool,
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
            timeout_ms,
            verbose,
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
            let how = SendOptions {
                role: role.into(),
                timeout: Duration::from_millis(timeout_ms),
                verbose,
            };
            crate::runtime()?.block_on(send(&host, port, &message, records.len(), &how))
        }
    }
}

async fn listen(bind: &str, port: u16, role: Role) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("cannot listen on {bind}:{port}"))?;
    let stop = crate::shutdown_signal();
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
        () = stop => {}
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

/// How `outpost astm send` runs.
struct SendOptions {
    role: Role,
    timeout: Duration,
    verbose: bool,
}

async fn send(
    host: &str,
    port: u16,
    message: &[u8],
    records: usize,
    how: &SendOptions,
) -> anyhow::Result<ExitCode> {
    let addr = format!("{host}:{port}");
    let ms = how.timeout.as_millis();
    if how.verbose {
        eprintln!("connecting to {addr} (waiting up to {ms} ms)");
    }
    let stream =
        match tokio::time::timeout(how.timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                eprintln!("error: cannot connect to {addr}: {e}");
                return Ok(ExitCode::from(exit::NO_ANSWER));
            }
            Err(_) => {
                eprintln!("error: cannot connect to {addr}: no answer within {ms} ms");
                return Ok(ExitCode::from(exit::NO_ANSWER));
            }
        };
    let _ = stream.set_nodelay(true);
    let opts = LinkOptions {
        role: how.role,
        establish_timeout: how.timeout,
        frame_timeout: how.timeout,
        // One-shot: a peer that does not answer ENQ will not answer the next one either.
        retry_unanswered_enq: false,
        ..LinkOptions::default()
    };
    let mut conn = Connection::new(
        Tap {
            io: stream,
            on: how.verbose,
            ms,
        },
        opts,
    );
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
        Err(astm::Error::Timeout(_)) if conn.link().stats().frames_sent == 0 => {
            eprintln!(
                "error: {addr} did not answer ENQ within {ms} ms: is it an ASTM E1381 receiver? (-v shows the exchange)"
            );
            Ok(ExitCode::from(exit::NO_ANSWER))
        }
        Err(e @ (astm::Error::Timeout(_) | astm::Error::Closed | astm::Error::Io(_))) => {
            eprintln!("error: {addr}: {e}");
            Ok(ExitCode::from(exit::NO_ANSWER))
        }
        Err(e) => {
            eprintln!("error: {addr}: {e}");
            Ok(ExitCode::from(exit::NEGATIVE))
        }
    }
}

/// The stream under `astm send`, telling on stderr (with `-v`) what went out, what came back
/// and what the link waits for. It only watches: the link itself decides everything.
struct Tap<S> {
    io: S,
    on: bool,
    ms: u128,
}

impl<S> Tap<S> {
    fn sent(&self, buf: &[u8]) {
        if !self.on {
            return;
        }
        match buf {
            [astm::frame::ENQ] => eprintln!(
                "-> ENQ; waiting up to {} ms for ACK (go) or NAK (busy)",
                self.ms
            ),
            [astm::frame::EOT] => eprintln!("-> EOT"),
            [astm::frame::ACK] => eprintln!("-> ACK"),
            [astm::frame::NAK] => eprintln!("-> NAK"),
            [astm::frame::STX, fn_digit, ..] => eprintln!(
                "-> frame {} ({} bytes); waiting up to {} ms for ACK",
                char::from(*fn_digit),
                buf.len(),
                self.ms
            ),
            other => eprintln!("-> {} bytes", other.len()),
        }
    }

    fn received(&self, buf: &[u8]) {
        if !self.on {
            return;
        }
        match buf {
            [astm::frame::ACK] => eprintln!("<- ACK"),
            [astm::frame::NAK] => eprintln!("<- NAK"),
            [astm::frame::ENQ] => eprintln!("<- ENQ"),
            [astm::frame::EOT] => eprintln!("<- EOT"),
            other => eprintln!(
                "<- {} bytes: {:?}",
                other.len(),
                String::from_utf8_lossy(&other[..other.len().min(64)])
            ),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let got = &buf.filled()[before..];
            if got.is_empty() {
                if self.on {
                    eprintln!("<- connection closed");
                }
            } else {
                self.received(got);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.sent(&buf[..n]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
