//! The agent's log files, as Medplum's `logger.main.*` and `logger.channel.*` keys ask:
//! one JSON object per line (`{"level":"INFO","msg":...,"timestamp":...}`, the shape Medplum's
//! agent writes and `$fetch-logs` returns), rotated by size (`maxFileSizeMb`) keeping
//! `filesToKeep` files. Rotation is `file-rotate`'s (`outpost-agent-main.log`, then `.1`, `.2`,
//! ... oldest last); the writing happens on `tracing-appender`'s worker thread, so a slow disk
//! never holds up the agent (its queue is bounded: when full, lines are dropped, not waited
//! for).
//!
//! Channel lines are those of the inbound channel modules ([`CHANNEL_TARGET`]). With
//! `logger.channel.logDir` set they go to `outpost-agent-channels.log` in that directory, at the
//! channel logger's level; otherwise they go to the main file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use agent_protocol::LogMessage;
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogLevel, LoggerConfig};
use crate::{AgentConfig, ConfigError, Error};

/// The main log file's name (Medplum: `medplum-agent-main-DATE.log`).
pub const MAIN_FILE: &str = "outpost-agent-main.log";
/// The channel log file's name (Medplum: `medplum-agent-channels-DATE.log`).
pub const CHANNEL_FILE: &str = "outpost-agent-channels.log";
/// The `tracing` target prefix of the channel logger's lines: the inbound channel modules.
pub const CHANNEL_TARGET: &str = "agent_core::inbound";

/// A layer for the log files, added first on the registry.
type FileLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The agent's log files: `tracing` layers writing them, and the guards that flush what is
/// queued when this is dropped (keep it for as long as the agent runs).
pub struct LogFiles {
    main: Option<PathBuf>,
    channels_merged: bool,
    layers: Vec<FileLayer>,
    _guards: Vec<WorkerGuard>,
}

impl std::fmt::Debug for LogFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFiles")
            .field("main", &self.main)
            .field("channels_merged", &self.channels_merged)
            .finish_non_exhaustive()
    }
}

impl LogFiles {
    /// Opens the files `config`'s loggers name (none when neither sets `logDir`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::File`] when a directory cannot be created or a file opened.
    pub fn open(config: &AgentConfig) -> Result<LogFiles, Error> {
        let main_level = level_filter(config.main_level());
        let channel_level = level_filter(config.channel_level());
        let own_channel_file = config.logger_channel.log_dir.is_some();
        let mut files = LogFiles {
            main: None,
            channels_merged: config.logger_main.log_dir.is_some() && !own_channel_file,
            layers: Vec::new(),
            _guards: Vec::new(),
        };
        if let Some(dir) = &config.logger_main.log_dir {
            let path = dir.join(MAIN_FILE);
            let (writer, guard) = open_rotating(&path, &config.logger_main)?;
            let filter = Targets::new().with_default(main_level).with_target(
                CHANNEL_TARGET,
                if own_channel_file {
                    LevelFilter::OFF
                } else {
                    channel_level
                },
            );
            files
                .layers
                .push(Box::new(JsonLines { writer }.with_filter(filter)));
            files._guards.push(guard);
            files.main = Some(path);
        }
        if let Some(dir) = &config.logger_channel.log_dir {
            let (writer, guard) = open_rotating(&dir.join(CHANNEL_FILE), &config.logger_channel)?;
            let filter = Targets::new()
                .with_default(LevelFilter::OFF)
                .with_target(CHANNEL_TARGET, channel_level);
            files
                .layers
                .push(Box::new(JsonLines { writer }.with_filter(filter)));
            files._guards.push(guard);
        }
        Ok(files)
    }

    /// The main log file, which `$fetch-logs` reads ([`super::LogBuffer::with_file`]).
    pub fn main_file(&self) -> Option<&Path> {
        self.main.as_deref()
    }

    /// Whether channel lines go to the main file (`logger.main.logDir` set,
    /// `logger.channel.logDir` not).
    pub fn channels_merged(&self) -> bool {
        self.channels_merged
    }

    /// The layers writing the files, to add first on a `tracing_subscriber::registry()`.
    pub fn take_layers(&mut self) -> Vec<Box<dyn Layer<Registry> + Send + Sync>> {
        std::mem::take(&mut self.layers)
    }
}

/// A Medplum log level as a `tracing` level filter.
fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::None => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    }
}

/// `path`, rotated by `logger`'s size and count, written on a worker thread.
fn open_rotating(path: &Path, logger: &LoggerConfig) -> Result<(NonBlocking, WorkerGuard), Error> {
    let file_error = |source| ConfigError::File {
        path: path.to_owned(),
        source,
    };
    // file-rotate panics when it cannot create the directory and drops lines silently when it
    // cannot open the file: both are checked here first, so a bad logDir is a startup error.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(file_error)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(file_error)?;
    let rotating = FileRotate::new(
        path,
        AppendCount::new(logger.files_to_keep.saturating_sub(1)),
        // Rotate once a line has taken the file past the size: lines are never split.
        ContentLimit::BytesSurpassed(usize::try_from(logger.max_file_size).unwrap_or(usize::MAX)),
        Compression::None,
        None,
    );
    Ok(tracing_appender::non_blocking(rotating))
}

/// Writes each event as one JSON line.
struct JsonLines {
    writer: NonBlocking,
}

impl<S: tracing::Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let Ok(mut line) = serde_json::to_vec(&super::log_message(event)) else {
            return;
        };
        line.push(b'\n');
        // One write per line: the worker passes it to the file whole, and rotation happens
        // between lines. A full queue drops the line (tracing-appender's lossy mode).
        let _ = self.writer.clone().write_all(&line);
    }
}

/// The file rotated `n` times from `path` (`n` = 0: `path` itself).
fn rotated(path: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return path.to_owned();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The newest `limit` lines of `path` and the files rotated from it, newest first, reading at
/// most `max_bytes` of them (from the end of each). Lines that are not a log line (a line cut
/// by the byte limit, one being written) are skipped. A rotation while this reads may repeat or
/// skip a few lines.
pub(super) fn read_recent(
    path: &Path,
    limit: usize,
    max_bytes: u64,
) -> io::Result<Vec<LogMessage>> {
    let mut out = Vec::new();
    let mut budget = max_bytes;
    for n in 0.. {
        if out.len() >= limit || budget == 0 {
            break;
        }
        let mut file = match File::open(rotated(path, n)) {
            Ok(f) => f,
            Err(e) if n > 0 && e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let take = len.min(budget);
        budget -= take;
        file.seek(SeekFrom::Start(len - take))?;
        let mut buf = Vec::with_capacity(usize::try_from(take).unwrap_or(0));
        file.take(take).read_to_end(&mut buf)?;
        for line in buf.split(|&b| b == b'\n').rev() {
            if let Ok(message) = serde_json::from_slice::<LogMessage>(line) {
                out.push(message);
                if out.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("outpost-logfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn config(text: &str) -> AgentConfig {
        AgentConfig::from_properties(&format!(
            "baseUrl=http://x\nclientId=a\nclientSecret=s\nagentId=b\n{text}"
        ))
        .unwrap()
    }

    #[test]
    fn lines_rotate_by_size_keep_files_to_keep_and_read_back_newest_first() {
        let dir = scratch("rotate");
        // 0.001 MB = 1049 bytes: a few lines per file.
        let config = config(&format!(
            "logger.main.logDir={}\nlogger.main.maxFileSizeMb=0.001\nlogger.main.filesToKeep=3\n",
            dir.display()
        ));
        {
            let mut files = LogFiles::open(&config).unwrap();
            assert!(files.channels_merged());
            let subscriber = tracing_subscriber::registry().with(files.take_layers());
            tracing::subscriber::with_default(subscriber, || {
                for i in 0..100 {
                    tracing::info!(n = i, "line {i}");
                }
                tracing::debug!("not at INFO");
            });
            // Dropping the files flushes the worker's queue.
        }
        let main = dir.join(MAIN_FILE);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                MAIN_FILE,
                "outpost-agent-main.log.1",
                "outpost-agent-main.log.2"
            ],
            "filesToKeep=3 counts the file being written"
        );
        for name in &names {
            let len = std::fs::metadata(dir.join(name)).unwrap().len();
            assert!(len < 1049 + 200, "{name} is {len} bytes");
        }
        let lines = read_recent(&main, 20, 1 << 20).unwrap();
        assert_eq!(lines.len(), 20, "across the rotated files");
        assert_eq!(lines[0].msg, "line 99");
        assert_eq!(lines[19].msg, "line 80");
        assert_eq!(lines[0].level, "INFO");
        assert_eq!(lines[0].extra["n"], "99");
        // The byte bound: 300 bytes hold at most a couple of whole lines.
        let few = read_recent(&main, 20, 300).unwrap();
        assert!(!few.is_empty() && few.len() < 5, "{}", few.len());
        assert_eq!(few[0].msg, "line 99");
        // No file: an error, so the caller falls back to memory.
        assert!(read_recent(&dir.join("none.log"), 20, 1 << 20).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn channel_lines_go_to_their_own_file_at_their_own_level() {
        let dir = scratch("channels");
        let config = config(&format!(
            "logger.main.logDir={}\nlogger.main.logLevel=WARN\nlogger.channel.logDir={}\nlogger.channel.logLevel=DEBUG\n",
            dir.join("main").display(),
            dir.join("channels").display()
        ));
        {
            let mut files = LogFiles::open(&config).unwrap();
            assert!(!files.channels_merged());
            let subscriber = tracing_subscriber::registry().with(files.take_layers());
            tracing::subscriber::with_default(subscriber, || {
                tracing::warn!("main warning");
                tracing::info!("main info, below WARN");
                tracing::debug!(target: "agent_core::inbound::mllp", "channel debug");
            });
        }
        let main = std::fs::read_to_string(dir.join("main").join(MAIN_FILE)).unwrap();
        let channels = std::fs::read_to_string(dir.join("channels").join(CHANNEL_FILE)).unwrap();
        assert!(
            main.contains("main warning") && !main.contains("main info"),
            "{main}"
        );
        assert!(!main.contains("channel debug"), "{main}");
        assert!(
            channels.contains("channel debug") && !channels.contains("main"),
            "{channels}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn no_log_dir_no_files_and_a_bad_one_is_an_error() {
        let files = LogFiles::open(&config("")).unwrap();
        assert!(files.main_file().is_none() && !files.channels_merged());
        let dir = scratch("bad");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file"), "").unwrap();
        let e = LogFiles::open(&config(&format!(
            "logger.main.logDir={}\n",
            dir.join("file").join("sub").display()
        )))
        .unwrap_err();
        assert!(e.to_string().contains("sub"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
