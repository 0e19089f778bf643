//! `outpost hl7 ...`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use hl7v2::{Batch, Charset, Message, ParseOptions, Value};

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
}

pub fn run(cmd: Hl7Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Hl7Command::Print {
            file,
            encoding,
            strict,
        } => {
            let bytes = read_input(&file)?;
            let charset = encoding.as_deref().map(Charset::from_label).transpose()?;
            let opts = ParseOptions {
                strict,
                charset,
                ..ParseOptions::default()
            };
            let batch = Batch::parse_with(&bytes, &opts)
                .with_context(|| format!("cannot parse {}", file.display()))?;
            let mut out = std::io::stdout().lock();
            for (i, msg) in batch.messages().iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                print_message(&mut out, msg)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
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

/// A header line, then one line per non-empty leaf value: `PID-5-1  DOE`.
pub fn print_message(out: &mut impl Write, msg: &Message<'_>) -> std::io::Result<()> {
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
                    writeln!(out, "{rep_path:<14} {}", rep.text())?;
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
                        writeln!(out, "{path:<14} {}", sub.text())?;
                    }
                }
            }
        }
    }
    Ok(())
}
