//! Medplum's logging keys of `agent.properties`: the top-level `logLevel`, and
//! `logger.main.*` / `logger.channel.*` (`logDir`, `maxFileSizeMb`, `filesToKeep`, `logLevel`),
//! read as Medplum 5.x's agent reads them (`packages/agent/src/logger.ts`).

use std::path::PathBuf;

use crate::ConfigError;

/// Medplum's log levels, most quiet first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing is logged.
    None,
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default.
    Info,
    /// Everything, message bodies included: for a session of troubleshooting only.
    Debug,
}

impl LogLevel {
    /// `NONE`, `ERROR`, `WARN`, `INFO` or `DEBUG`, in any case (Medplum's `parseLogLevel`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::LogLevel`] naming `key` and the value.
    pub fn parse(key: &str, value: &str) -> Result<LogLevel, ConfigError> {
        Ok(match value.trim().to_ascii_uppercase().as_str() {
            "NONE" => LogLevel::None,
            "ERROR" => LogLevel::Error,
            "WARN" => LogLevel::Warn,
            "INFO" => LogLevel::Info,
            "DEBUG" => LogLevel::Debug,
            _ => {
                return Err(ConfigError::LogLevel {
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
        })
    }

    /// The `tracing` filter directive for this level (`off` for `NONE`).
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::None => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// Medplum's default `maxFileSizeMb`.
pub const DEFAULT_MAX_FILE_SIZE_MB: u64 = 10;
/// Medplum's default `filesToKeep`.
pub const DEFAULT_FILES_TO_KEEP: usize = 10;
/// One `maxFileSizeMb` unit: winston's `10m` is 10 × 1024 × 1024 bytes.
const MB: f64 = 1024.0 * 1024.0;

/// One of Medplum's two loggers (`logger.main.*` or `logger.channel.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerConfig {
    /// `logDir`: write log files there (besides stderr). Unset: stderr only. Medplum's default
    /// is its install directory; Outpost writes no file unless asked.
    pub log_dir: Option<PathBuf>,
    /// `maxFileSizeMb` in bytes: a file is rotated once it passes this size (default 10 MB).
    /// Outpost also accepts a decimal number of megabytes (`0.01`, about 10 KB); Medplum takes
    /// whole numbers only.
    pub max_file_size: u64,
    /// `filesToKeep`: files kept, the one being written included (default 10, at least 1).
    pub files_to_keep: usize,
    /// `logLevel` of this logger; the top-level `logLevel` overrides it, as in Medplum.
    pub log_level: Option<LogLevel>,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        LoggerConfig {
            log_dir: None,
            max_file_size: DEFAULT_MAX_FILE_SIZE_MB * 1024 * 1024,
            files_to_keep: DEFAULT_FILES_TO_KEEP,
            log_level: None,
        }
    }
}

/// The keys each logger reads.
pub(crate) const LOGGER_KEYS: &[&str] = &["logDir", "maxFileSizeMb", "filesToKeep", "logLevel"];

impl LoggerConfig {
    /// Sets `name` (a key of [`LOGGER_KEYS`]) from `value`. `key` is the whole key, for errors.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key, for a value that is not a positive number or a level.
    pub(crate) fn set(&mut self, key: &str, name: &str, value: &str) -> Result<(), ConfigError> {
        let not_a_number = || ConfigError::LoggerNumber {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        match name {
            "logDir" if !value.is_empty() => self.log_dir = Some(PathBuf::from(value)),
            "logDir" => self.log_dir = None,
            "maxFileSizeMb" => {
                let mb: f64 = value.parse().map_err(|_| not_a_number())?;
                let bytes = (mb * MB).round();
                if !(bytes >= 1.0 && bytes.is_finite()) {
                    return Err(not_a_number());
                }
                self.max_file_size = bytes as u64;
            }
            "filesToKeep" => {
                self.files_to_keep = value
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n >= 1)
                    .ok_or_else(not_a_number)?;
            }
            "logLevel" => self.log_level = Some(LogLevel::parse(key, value)?),
            _ => {}
        }
        Ok(())
    }
}

/// For a key such as `logger.main.logDir`: which logger (`main` or `channel`) and which setting.
pub(crate) fn split_logger_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("logger.")?;
    let (logger, name) = rest.split_once('.')?;
    (matches!(logger, "main" | "channel") && LOGGER_KEYS.contains(&name)).then_some((logger, name))
}
