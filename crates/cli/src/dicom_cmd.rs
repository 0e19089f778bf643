//! `outpost dicom echo|store|find`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use dicom_net::{Association, DataSet, Error, Options, Proposal, StatusKind, uids};
use serde_json::Value as Json;

use crate::exit;

/// Association options every subcommand takes.
#[derive(Debug, Args)]
pub struct AssocArgs {
    /// SCP host.
    host: String,
    /// SCP port.
    port: u16,
    /// This side's AE title.
    #[arg(long, default_value = "OUTPOST")]
    calling_aet: String,
    /// The SCP's AE title.
    #[arg(long, default_value = "ANY-SCP")]
    called_aet: String,
    /// Time allowed for each answer (association, each response, release).
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

impl AssocArgs {
    fn options(&self) -> Options {
        let t = Duration::from_millis(self.timeout_ms);
        Options {
            calling_ae: self.calling_aet.clone(),
            called_ae: self.called_aet.clone(),
            connect_timeout: t,
            acse_timeout: t,
            dimse_timeout: t,
            ..Options::default()
        }
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Model {
    /// Patient Root Query/Retrieve (levels PATIENT, STUDY, SERIES, IMAGE).
    Patient,
    /// Study Root Query/Retrieve (levels STUDY, SERIES, IMAGE).
    Study,
    /// Modality Worklist.
    Worklist,
}

#[derive(Debug, Subcommand)]
pub enum DicomCommand {
    /// C-ECHO: is the SCP there and does it accept us?
    Echo {
        #[command(flatten)]
        assoc: AssocArgs,
        /// Print the outcome as one JSON object (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// C-STORE files (directories are read recursively) over one association, each in its own
    /// transfer syntax or converted without loss to one the SCP accepts.
    Store {
        #[command(flatten)]
        assoc: AssocArgs,
        /// DICOM files (Part 10, or bare data sets) or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Say how each file was read and sent (no meta header, conversions, padding).
        #[arg(short, long)]
        verbose: bool,
        /// Print one JSON object with a result per file (for scripts) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// A storage SCP (like dcmtk's storescp): accept C-ECHO and C-STORE, write each object as
    /// a Part 10 file `<SOP Instance UID>.dcm`, print a line per stored instance.
    Listen {
        /// Port to listen on (0: any free port; the line "Listening on ADDR" says which).
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "0.0.0.0")]
        bind: String,
        /// Where objects are written.
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
        /// Answer only associations calling this AE title (default: any).
        #[arg(long)]
        ae_title: Option<String>,
    },
    /// C-FIND: print each match.
    Find {
        #[command(flatten)]
        assoc: AssocArgs,
        /// Information model.
        #[arg(long, value_enum, default_value = "study")]
        model: Model,
        /// A key: `PatientName=Doe*`, `0010,0020=PID1`, a return key without a value
        /// (`StudyDate`), or a key in a sequence item
        /// (`ScheduledProcedureStepSequence[0].Modality=CT`). QueryRetrieveLevel defaults to
        /// the model's top level.
        #[arg(short = 'k', long = "key")]
        keys: Vec<String>,
        /// Print the matches as a DICOM JSON array.
        #[arg(long)]
        json: bool,
        /// Send C-CANCEL after this many matches.
        #[arg(long)]
        limit: Option<usize>,
    },
}

pub fn run(cmd: DicomCommand) -> anyhow::Result<ExitCode> {
    let rt = crate::runtime()?;
    match cmd {
        DicomCommand::Echo { assoc, json } => rt.block_on(echo(&assoc, json)),
        DicomCommand::Store {
            assoc,
            paths,
            verbose,
            json,
        } => rt.block_on(store(&assoc, &paths, verbose, json)),
        DicomCommand::Listen {
            port,
            bind,
            output_dir,
            ae_title,
        } => rt.block_on(listen(&bind, port, output_dir, ae_title)),
        DicomCommand::Find {
            assoc,
            model,
            keys,
            json,
            limit,
        } => rt.block_on(find(&assoc, model, &keys, json, limit)),
    }
}

/// The exit code for an error: the SCP said no (1), or did not answer (3).
fn code_for(e: &Error) -> u8 {
    match e {
        Error::Rejected { .. } | Error::Aborted { .. } | Error::NoContext(_) => exit::NEGATIVE,
        Error::Invalid(_) => exit::USAGE,
        Error::NotPart10(_) | Error::Object(_) | Error::DataSet { .. } => exit::NEGATIVE,
        Error::Timeout { .. } | Error::Closed | Error::Io(_) => exit::NO_ANSWER,
        _ => exit::NEGATIVE,
    }
}

fn fail(e: &Error, what: &str) -> ExitCode {
    eprintln!("error: {what}: {e}");
    ExitCode::from(code_for(e))
}

async fn connect(args: &AssocArgs, proposals: &[Proposal]) -> Result<Association, ExitCode> {
    Association::connect(args.addr(), &args.options(), proposals)
        .await
        .map_err(|e| {
            fail(
                &e,
                &format!("association with {} ({})", args.called_aet, args.addr()),
            )
        })
}

/// `dicom echo --json`: `{calledAeTitle, address, ok, status, statusText, ms}`, and `error`
/// when there was no C-ECHO response.
fn echo_json(args: &AssocArgs, status: Option<dicom_net::Status>, error: Option<String>, ms: u128) {
    let mut o = serde_json::json!({
        "calledAeTitle": args.called_aet,
        "address": args.addr(),
        "ok": status.is_some_and(|s| s.is_ok()),
        "ms": ms,
    });
    if let Some(s) = status {
        o["status"] = format!("0x{:04X}", s.0).into();
        o["statusText"] = s.name().into();
    }
    if let Some(e) = error {
        o["error"] = e.into();
    }
    println!("{o}");
}

async fn echo(args: &AssocArgs, json: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let ms = || started.elapsed().as_millis();
    let mut a =
        match Association::connect(args.addr(), &args.options(), &[Proposal::verification()]).await
        {
            Ok(a) => a,
            Err(e) if json => {
                echo_json(args, None, Some(format!("association: {e}")), ms());
                return Ok(ExitCode::from(code_for(&e)));
            }
            Err(e) => {
                return Ok(fail(
                    &e,
                    &format!("association with {} ({})", args.called_aet, args.addr()),
                ));
            }
        };
    if !a.contexts()[0].accepted() {
        let why = format!(
            "{} does not accept Verification: {}",
            args.called_aet,
            a.contexts()[0].result_text()
        );
        if json {
            echo_json(args, None, Some(why), ms());
        } else {
            eprintln!("error: {why}");
        }
        a.abort().await;
        return Ok(ExitCode::from(exit::NEGATIVE));
    }
    let status = match a.echo().await {
        Ok(s) => s,
        Err(e) if json => {
            echo_json(args, None, Some(format!("C-ECHO: {e}")), ms());
            return Ok(ExitCode::from(code_for(&e)));
        }
        Err(e) => return Ok(fail(&e, "C-ECHO")),
    };
    let _ = a.release().await;
    if json {
        echo_json(args, Some(status), None, ms());
        return Ok(if status.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(exit::NEGATIVE)
        });
    }
    if status.is_ok() {
        println!(
            "C-ECHO {} at {}: {} ({} ms)",
            args.called_aet,
            args.addr(),
            status,
            started.elapsed().as_millis()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("C-ECHO {}: {status}", args.called_aet);
        Ok(ExitCode::from(exit::NEGATIVE))
    }
}

/// Files under `paths`, directories walked recursively in name order.
fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            for e in entries {
                walk(&e, out)?;
            }
        } else {
            out.push(p.to_owned());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such file or directory", p.display()),
            ));
        }
        walk(p, &mut out)?;
    }
    Ok(out)
}

/// A line on stderr redrawn in place, when stderr is a terminal.
struct Progress {
    on: bool,
    total: usize,
    started: Instant,
}

impl Progress {
    fn draw(&self, done: usize, bytes: u64) {
        if !self.on {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let width = 30;
        let filled = done * width / self.total.max(1);
        eprint!(
            "\r[{}{}] {done}/{} files, {:.1} MB, {:.1} MB/s ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.total,
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs
        );
        let _ = std::io::stderr().flush();
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r{}\r", " ".repeat(79));
        }
    }
}

/// One file's outcome in `dicom store --json`.
fn file_json(f: &Path, outcome: &str) -> Json {
    serde_json::json!({"file": f.display().to_string(), "outcome": outcome})
}

async fn store(
    args: &AssocArgs,
    paths: &[PathBuf],
    verbose: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let files = match collect_files(paths) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("error: no files to send");
            return Ok(ExitCode::from(exit::USAGE));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    let mut out = std::io::stdout().lock();
    // With --json, each file's outcome is kept here and printed once at the end.
    let mut results: Vec<Json> = Vec::new();
    let mut failed = 0usize;
    let mut worst = 0u8;
    // Files that cannot be read as DICOM are reported (with why) and skipped; the rest are
    // grouped so that each association holds at most 128 presentation contexts.
    let mut groups: Vec<(Vec<Proposal>, Vec<PathBuf>)> = Vec::new();
    for f in files.iter() {
        let obj = match dicom_net::inspect_file(f).await {
            Ok(o) => o,
            Err(e) => {
                if json {
                    let mut r = file_json(f, "failed");
                    r["error"] = e.to_string().into();
                    results.push(r);
                } else {
                    writeln!(out, "FAILED   {}: {e}", f.display())?;
                }
                failed += 1;
                worst = worst.max(code_for(&e));
                continue;
            }
        };
        let wanted =
            Proposal::for_storage([(obj.sop_class.as_str(), obj.transfer_syntax.as_str())]);
        let fits = groups.last().is_some_and(|(p, _)| {
            p.len() + wanted.iter().filter(|w| !p.contains(w)).count() <= 128
        });
        if !fits {
            groups.push((Vec::new(), Vec::new()));
        }
        let Some((proposals, members)) = groups.last_mut() else {
            continue;
        };
        for w in wanted {
            if !proposals.contains(&w) {
                proposals.push(w);
            }
        }
        members.push(f.clone());
    }
    let progress = Progress {
        on: !json && std::io::stderr().is_terminal(),
        total: files.len(),
        started: Instant::now(),
    };
    let (mut stored, mut bytes, mut done) = (0usize, 0u64, failed);
    for (proposals, members) in &groups {
        // Why the association failed goes on every file's line: that is where one looks.
        let (mut assoc, no_assoc) =
            match Association::connect(args.addr(), &args.options(), proposals).await {
                Ok(a) => (Some(a), String::new()),
                Err(e) => {
                    progress.clear();
                    let why = format!(
                        "no association with {} ({}): {e}",
                        args.called_aet,
                        args.addr()
                    );
                    if !json {
                        eprintln!("error: {why}");
                    }
                    worst = worst.max(code_for(&e));
                    (None, why)
                }
            };
        for f in members {
            let result = match assoc.as_mut() {
                Some(a) => a.store_file(f).await,
                None => {
                    done += 1;
                    failed += 1;
                    progress.clear();
                    if json {
                        let mut r = file_json(f, "failed");
                        r["error"] = format!("not sent: {no_assoc}").into();
                        results.push(r);
                        continue;
                    }
                    writeln!(out, "FAILED   {}: not sent: {no_assoc}", f.display())?;
                    out.flush()?;
                    progress.draw(done, bytes);
                    continue;
                }
            };
            done += 1;
            progress.clear();
            if json {
                match &result {
                    Ok(r) => {
                        let ok = r.status.is_ok();
                        let mut o = file_json(f, if ok { "stored" } else { "failed" });
                        if let (Some(obj), Json::Object(report)) =
                            (o.as_object_mut(), dicom_net::store_json(r))
                        {
                            obj.extend(report);
                        }
                        o["warnings"] = r.warnings.clone().into();
                        if let Some(c) = &r.error_comment {
                            o["errorComment"] = c.clone().into();
                        }
                        if ok {
                            stored += 1;
                            bytes += r.bytes;
                        } else {
                            failed += 1;
                            worst = worst.max(exit::NEGATIVE);
                        }
                        results.push(o);
                    }
                    Err(e) => {
                        failed += 1;
                        worst = worst.max(code_for(e));
                        let mut o = file_json(f, "failed");
                        o["error"] = e.to_string().into();
                        results.push(o);
                    }
                }
                continue;
            }
            match result {
                Ok(r) if r.status.is_ok() => {
                    stored += 1;
                    bytes += r.bytes;
                    let label = if r.status.kind() == StatusKind::Warning {
                        "WARNING"
                    } else {
                        "OK"
                    };
                    writeln!(
                        out,
                        "{label:<8} {} {}{}",
                        f.display(),
                        r.sop_instance,
                        if r.transcoded { " (transcoded)" } else { "" }
                    )?;
                    if r.status.kind() == StatusKind::Warning {
                        writeln!(out, "         {}", r.status)?;
                    }
                    for w in &r.warnings {
                        writeln!(out, "         warning: {w}")?;
                    }
                    if verbose {
                        writeln!(
                            out,
                            "         sent as {}",
                            uids::transfer_syntax_name(&r.transfer_syntax)
                        )?;
                        for n in &r.notes {
                            writeln!(out, "         {n}")?;
                        }
                    }
                }
                Ok(r) => {
                    failed += 1;
                    worst = worst.max(exit::NEGATIVE);
                    let comment = r
                        .error_comment
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "FAILED   {} {}: {}{comment}",
                        f.display(),
                        r.sop_instance,
                        r.status
                    )?;
                }
                Err(e) => {
                    failed += 1;
                    worst = worst.max(code_for(&e));
                    writeln!(out, "FAILED   {}: {e}", f.display())?;
                }
            }
            out.flush()?;
            progress.draw(done, bytes);
        }
        if let Some(a) = assoc {
            let _ = a.release().await;
        }
    }
    progress.clear();
    let secs = progress.started.elapsed().as_secs_f64();
    if json {
        let summary = serde_json::json!({
            "files": results,
            "stored": stored,
            "failed": failed,
            "bytes": bytes,
            "seconds": secs,
        });
        writeln!(out, "{summary}")?;
        return Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(worst.max(exit::NEGATIVE))
        });
    }
    writeln!(
        out,
        "Stored {stored} of {} files ({:.1} MB in {:.2} s, {:.1} MB/s){}",
        files.len(),
        bytes as f64 / 1e6,
        secs,
        bytes as f64 / 1e6 / secs.max(1e-6),
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        }
    )?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(worst.max(exit::NEGATIVE))
    })
}

async fn listen(
    bind: &str,
    port: u16,
    output_dir: PathBuf,
    ae_title: Option<String>,
) -> anyhow::Result<ExitCode> {
    use dicom_net::scp::{ScpOptions, serve};
    let listener = tokio::net::TcpListener::bind((bind, port)).await?;
    let opts = ScpOptions {
        ae_title: ae_title.clone(),
        output_dir,
        ..ScpOptions::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    println!(
        "Listening on {} (AE title {})",
        listener.local_addr()?,
        ae_title.as_deref().unwrap_or("any")
    );
    let server = tokio::spawn(serve(listener, opts, tx));
    while let Some(r) = rx.recv().await {
        // The file is written and synced before it gets here: answer Success.
        let o = r.answer(dicom_net::Status(0));
        println!(
            "STORED {} {} from {} ({}, {} bytes) -> {}",
            o.sop_class,
            o.sop_instance,
            o.calling_ae,
            uids::transfer_syntax_name(&o.transfer_syntax),
            o.bytes,
            o.path.display()
        );
    }
    match server.await? {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit::NO_ANSWER))
        }
    }
}

/// The identifier from `-k` keys, with the model's default level.
fn identifier(model: Model, keys: &[String]) -> Result<DataSet, Error> {
    let mut ds = DataSet::default();
    for k in keys {
        ds.set_key(k)?;
    }
    let level = match model {
        Model::Patient => Some("PATIENT"),
        Model::Study => Some("STUDY"),
        Model::Worklist => None,
    };
    if let Some(level) = level
        && ds.get(0x0008_0052).is_none()
    {
        ds.set_text(0x0008_0052, level);
    }
    Ok(ds)
}

async fn find(
    args: &AssocArgs,
    model: Model,
    keys: &[String],
    json: bool,
    limit: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let query = match identifier(model, keys) {
        Ok(q) => q,
        Err(e) => return Ok(fail(&e, "bad key")),
    };
    let sop = match model {
        Model::Patient => uids::PATIENT_ROOT_FIND,
        Model::Study => uids::STUDY_ROOT_FIND,
        Model::Worklist => uids::MODALITY_WORKLIST_FIND,
    };
    let mut a = match connect(args, &[Proposal::find(sop)]).await {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    let mut matches = Vec::new();
    let mut n = 0usize;
    let end = {
        let mut f = match a.find(sop, &query).await {
            Ok(f) => f,
            Err(e) => return Ok(fail(&e, "C-FIND")),
        };
        loop {
            match f.next().await {
                // Matches the SCP sent before it saw the C-CANCEL are read and dropped:
                // `--limit N` prints at most N.
                Ok(Some(_)) if limit.is_some_and(|l| n >= l) => continue,
                Ok(Some(m)) => {
                    n += 1;
                    if json {
                        matches.push(dicom_net::to_json(&m));
                    } else {
                        writeln!(out, "Match {n}")?;
                        print_json(&mut out, &dicom_net::to_json(&m), 1)?;
                        out.flush()?;
                    }
                    if limit.is_some_and(|l| n >= l)
                        && let Err(e) = f.cancel().await
                    {
                        return Ok(fail(&e, "C-CANCEL"));
                    }
                }
                Ok(None) => break f.end().cloned(),
                Err(e) => return Ok(fail(&e, "C-FIND")),
            }
        }
    };
    let _ = a.release().await;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&Json::Array(matches))?
        )?;
    }
    let Some(end) = end else {
        eprintln!("error: C-FIND ended without a final status");
        return Ok(ExitCode::from(exit::NEGATIVE));
    };
    let summary = format!(
        "{n} match{} ({})",
        if n == 1 { "" } else { "es" },
        end.status
    );
    // Keep stdout pure JSON with --json.
    if json {
        eprintln!("{summary}");
    } else {
        writeln!(out, "{summary}")?;
    }
    Ok(match end.status.kind() {
        StatusKind::Success | StatusKind::Warning | StatusKind::Cancel => ExitCode::SUCCESS,
        _ => {
            if let Some(c) = end.error_comment {
                eprintln!("error: {c}");
            }
            ExitCode::from(exit::NEGATIVE)
        }
    })
}

/// A match as `(gggg,eeee) VR Keyword  value` lines, items indented.
fn print_json(out: &mut impl Write, ds: &Json, depth: usize) -> std::io::Result<()> {
    let Some(obj) = ds.as_object() else {
        return Ok(());
    };
    let pad = "  ".repeat(depth);
    for (key, attr) in obj {
        let tag = u32::from_str_radix(key, 16).unwrap_or(0);
        let name = dicom_net::dict::keyword_of(tag).unwrap_or("?");
        let vr = attr["vr"].as_str().unwrap_or("UN");
        let head = format!("{pad}({:04X},{:04X}) {vr} {name}", tag >> 16, tag & 0xFFFF);
        if vr == "SQ" {
            writeln!(out, "{head}")?;
            for (i, item) in attr["Value"].as_array().into_iter().flatten().enumerate() {
                writeln!(out, "{pad}  item {}", i + 1)?;
                print_json(out, item, depth + 2)?;
            }
            continue;
        }
        let value = match (&attr["Value"], &attr["InlineBinary"]) {
            (Json::Array(values), _) => values
                .iter()
                .map(|v| match v {
                    Json::String(s) => s.clone(),
                    Json::Object(pn) => pn
                        .get("Alphabetic")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\\"),
            (_, Json::String(b64)) => format!("<{} base64 characters>", b64.len()),
            _ => String::new(),
        };
        writeln!(out, "{head:<48} {value}")?;
    }
    Ok(())
}
