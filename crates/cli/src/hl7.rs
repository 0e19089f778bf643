//! `outpost hl7 ...`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use hl7v2::{Batch, Charset, Message, ParseOptions, Value};
use mllp::{ClientOptions, Connection, Request, ReturnAck, Server, ServerOptions, acks_for};

use crate::exit;

#[derive(Debug, Subcommand)]
pub enum Hl7Command {
    /// Parse an HL7 file (one message or a batch) and print every value with its path.
    Print {
        /// The file to read; `-` for standard input.
        file: PathBuf,
        /// Character set of the file when MSH-18 does not say (utf-8, latin1, windows-1252, ...).
        #[arg(long)]
        encoding: Option<String>,
        /// Accept only `\r` as segment terminator.
        #[arg(long)]
        strict: bool,
    },
    /// Receive messages over MLLP, print each (one segment per line) and acknowledge it.
    Listen {
        /// TCP port (0 picks a free one; the address is printed).
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        /// Character set of incoming messages when MSH-18 does not say.
        #[arg(long)]
        encoding: Option<String>,
        /// Enhanced acknowledgement mode: answer CA (commit accept) to messages that do not ask
        /// for a mode themselves in MSH-15/MSH-16.
        #[arg(long)]
        enhanced: bool,
    },
    /// Send one message over MLLP and print the acknowledgement.
    Send {
        /// Receiver host.
        host: String,
        /// Receiver port.
        port: u16,
        /// The message. Segments ended by `\r` are sent byte for byte; ended by `\n` or `\r\n`,
        /// they are sent ended by `\r` and nothing else changes (a `\n` inside a value of a
        /// `\r` or `\r\n` message is data and is sent as it is).
        body: Option<String>,
        /// Read the message from a file instead.
        #[arg(long, conflicts_with = "body")]
        file: Option<PathBuf>,
        /// Send an example ADT^A01 (the shape `medplum hl7 send --generate-example` sends).
        #[arg(long, conflicts_with_all = ["body", "file"])]
        generate_example: bool,
        /// Character set on the wire (utf-8, latin1, windows-1252, ...).
        #[arg(long)]
        encoding: Option<String>,
        /// How long to wait for the acknowledgement.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// `first`: the first acknowledgement ends the wait; `application`: wait past a CA for
        /// the AA/AE/AR.
        #[arg(long, default_value = "first")]
        return_ack: ReturnAck,
        /// Print the outcome as one JSON object (for scripts): `ok`, `ackCode` (MSA-1),
        /// `controlId` (MSA-2), `text` (MSA-3), `ack` (segments separated by `\r`), `error`.
        #[arg(long)]
        json: bool,
    },
}

/// An error before anything was sent or received is the input's (exit 2, as the README says),
/// whatever the command.
fn input_error(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    result.or_else(|e| {
        eprintln!("error: {e:#}");
        Ok(ExitCode::from(exit::USAGE))
    })
}

pub fn run(cmd: Hl7Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Hl7Command::Print {
            file,
            encoding,
            strict,
        } => input_error(print(&file, encoding.as_deref(), strict)),
        Hl7Command::Listen {
            port,
            bind,
            encoding,
            enhanced,
        } => {
            let charset = match charset(encoding.as_deref()) {
                Ok(c) => c,
                Err(e) => return input_error(Err(e)),
            };
            crate::runtime()?.block_on(listen(&bind, port, charset, enhanced))
        }
        Hl7Command::Send {
            host,
            port,
            body,
            file,
            generate_example,
            encoding,
            timeout_ms,
            return_ack,
            json,
        } => {
            let charset = match charset(encoding.as_deref()) {
                Ok(c) => c,
                Err(e) => return input_error(Err(e)),
            };
            let text = match (body, file, generate_example) {
                (Some(b), _, _) => b.into_bytes(),
                (_, Some(f), _) => match read_input(&f) {
                    Ok(t) => t,
                    Err(e) => return input_error(Err(e)),
                },
                (_, _, true) => hl7v2::example_adt_a01(chrono::Utc::now()).into_bytes(),
                _ => {
                    eprintln!("error: give the message as BODY, --file or --generate-example");
                    return Ok(ExitCode::from(exit::USAGE));
                }
            };
            // Text (UTF-8) is encoded to the wire character set; bytes that are not UTF-8 are
            // taken to be in it already.
            let wire = match std::str::from_utf8(&text) {
                Ok(s) => charset.map_or_else(|| text.clone(), |c| c.encode(s).into_owned()),
                Err(_) => text,
            };
            let opts = ClientOptions {
                ack_timeout: Duration::from_millis(timeout_ms),
                return_ack,
                ..ClientOptions::default()
            };
            crate::runtime()?.block_on(send(&host, port, &wire, opts, charset, json))
        }
    }
}

fn charset(label: Option<&str>) -> anyhow::Result<Option<Charset>> {
    label
        .map(Charset::from_label)
        .transpose()
        .context("--encoding")
}

fn print(file: &PathBuf, encoding: Option<&str>, strict: bool) -> anyhow::Result<ExitCode> {
    let bytes = read_input(file)?;
    let opts = ParseOptions {
        strict,
        charset: charset(encoding)?,
        ..ParseOptions::default()
    };
    let batch = Batch::parse_with(&bytes, &opts)
        .with_context(|| format!("cannot parse {}", file.display()))?;
    let mut out = std::io::stdout().lock();
    for (i, msg) in batch.messages().iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        print_values(&mut out, msg)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn listen(
    bind: &str,
    port: u16,
    charset: Option<Charset>,
    enhanced: bool,
) -> anyhow::Result<ExitCode> {
    let server = Server::bind(
        &format!("{bind}:{port}"),
        ServerOptions::default(),
        move |req: Request| async move {
            let Ok(msg) = req.message() else { return };
            {
                let mut out = std::io::stdout().lock();
                let _ = print_segments(&mut out, &msg, charset);
                let _ = writeln!(out);
                let _ = out.flush();
            }
            for ack in acks_for(&msg, enhanced) {
                if let Err(e) = req.reply(&ack).await {
                    tracing::warn!(peer = %req.peer(), error = %e, "could not send the acknowledgement");
                }
            }
        },
    )
    .await
    .with_context(|| format!("cannot listen on {bind}:{port}"))?;
    let stop = crate::shutdown_signal();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "Listening on {}", server.local_addr())?;
        out.flush()?;
    }
    stop.await;
    server.shutdown(Duration::from_secs(5)).await;
    Ok(ExitCode::SUCCESS)
}

async fn send(
    host: &str,
    port: u16,
    message: &[u8],
    opts: ClientOptions,
    charset: Option<Charset>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Fail on bad input before connecting.
    if let Err(e) = Message::parse(message) {
        if json {
            println!(
                "{}",
                send_json(
                    None,
                    Some(&format!("the message is not HL7 v2: {e}")),
                    charset
                )
            );
        } else {
            eprintln!("error: the message is not HL7 v2: {e}");
        }
        return Ok(ExitCode::from(exit::USAGE));
    }
    let addr = format!("{host}:{port}");
    let result = match Connection::connect(&addr, opts).await {
        Ok(mut conn) => conn.send(message).await,
        Err(e) => Err(e),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let (ack, error, code) = match &result {
            Ok(ack) => (Some(ack.bytes().to_vec()), None, ExitCode::SUCCESS),
            Err(mllp::Error::Negative {
                ack, description, ..
            }) => (
                Some(ack.to_vec()),
                Some(description.clone()),
                ExitCode::from(exit::NEGATIVE),
            ),
            Err(e @ (mllp::Error::Hl7(_) | mllp::Error::MissingControlId)) => {
                (None, Some(e.to_string()), ExitCode::from(exit::USAGE))
            }
            Err(e) => (None, Some(e.to_string()), ExitCode::from(exit::NO_ANSWER)),
        };
        writeln!(
            out,
            "{}",
            send_json(ack.as_deref(), error.as_deref(), charset)
        )?;
        return Ok(code);
    }
    match result {
        Ok(ack) => {
            print_segments(&mut out, &ack.message()?, charset)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(mllp::Error::Negative {
            ack, description, ..
        }) => {
            if let Ok(msg) = Message::parse(&ack) {
                print_segments(&mut out, &msg, charset)?;
            }
            eprintln!("error: {description}");
            Ok(ExitCode::from(exit::NEGATIVE))
        }
        Err(e @ (mllp::Error::Hl7(_) | mllp::Error::MissingControlId)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit::USAGE))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit::NO_ANSWER))
        }
    }
}

/// `hl7 send --json`: what the receiver answered (when it did) and what went wrong.
fn send_json(
    ack: Option<&[u8]>,
    error: Option<&str>,
    charset: Option<Charset>,
) -> serde_json::Value {
    let mut o = serde_json::json!({"ok": ack.is_some() && error.is_none()});
    if let Some(Ok(msg)) = ack.map(Message::parse) {
        let cs = charset.unwrap_or(msg.charset());
        let field = |path: &str| msg.get(path).ok().map(|v| cs.decode(v.raw()).into_owned());
        o["ackCode"] = field("MSA-1").into();
        o["controlId"] = field("MSA-2").into();
        o["text"] = field("MSA-3").into();
        let segments: Vec<String> = msg
            .segments()
            .map(|s| cs.decode(s.raw()).into_owned())
            .collect();
        o["ack"] = segments.join("\r").into();
    }
    if let Some(e) = error {
        o["error"] = e.into();
    }
    o
}

fn read_input(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
    }
}

/// One segment per line, decoded with `charset` (else the message's own).
pub fn print_segments(
    out: &mut impl Write,
    msg: &Message<'_>,
    charset: Option<Charset>,
) -> std::io::Result<()> {
    let cs = charset.unwrap_or(msg.charset());
    for seg in msg.segments() {
        writeln!(out, "{}", cs.decode(seg.raw()))?;
    }
    Ok(())
}

/// A header line, then one line per non-empty leaf value: `PID-5-1  DOE`.
pub fn print_values(out: &mut impl Write, msg: &Message<'_>) -> std::io::Result<()> {
    let msh = msg.msh();
    writeln!(
        out,
        "# {} {} control id {} version {} ({} segments, charset {})",
        msh.field(9).text(),
        msh.field(7).text(),
        msh.field(10).text(),
        msh.field(12).text(),
        msg.segment_count(),
        msg.charset().name(),
    )?;
    let mut seen = std::collections::HashMap::new();
    for seg in msg.segments() {
        let n = seen.entry(seg.name()).or_insert(0usize);
        *n += 1;
        let name = if *n == 1 {
            seg.name().to_owned()
        } else {
            format!("{}({})", seg.name(), n)
        };
        for (fi, field) in seg.fields().enumerate() {
            let f = fi + 1;
            if field.is_empty() {
                continue;
            }
            let reps: Vec<Value<'_>> = field.repetitions().collect();
            for (ri, rep) in reps.iter().enumerate() {
                let rep_path = if reps.len() > 1 {
                    format!("{name}-{f}[{}]", ri + 1)
                } else {
                    format!("{name}-{f}")
                };
                let comps: Vec<Value<'_>> = rep.components().collect();
                if comps.len() == 1 && comps[0].subcomponents().count() == 1 {
                    write_value(out, &rep_path, &rep.text())?;
                    continue;
                }
                for (ci, comp) in comps.iter().enumerate() {
                    let subs: Vec<Value<'_>> = comp.subcomponents().collect();
                    for (si, sub) in subs.iter().enumerate() {
                        if sub.is_empty() {
                            continue;
                        }
                        let path = if subs.len() > 1 {
                            format!("{rep_path}-{}-{}", ci + 1, si + 1)
                        } else {
                            format!("{rep_path}-{}", ci + 1)
                        };
                        write_value(out, &path, &sub.text())?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// `PATH  value`; the lines of a value with line feeds in it (report text) are indented under
/// its first, so no line of a value reads as another path.
fn write_value(out: &mut impl Write, path: &str, text: &str) -> std::io::Result<()> {
    let mut lines = text.split('\n');
    writeln!(out, "{path:<14} {}", lines.next().unwrap_or_default())?;
    for line in lines {
        writeln!(out, "{:<14} {line}", "")?;
    }
    Ok(())
}
