//! `outpost`: the command line. Each subcommand is a thin shell over a library crate.

mod hl7;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hl7(cmd) => hl7::run(cmd),
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
