//! The agent's configuration: Medplum's `agent.properties`, or the same values as flags
//! ([`AgentConfig`]); and what the relay configures — the Agent's channels and status — read
//! from it and kept in the data directory for a start without it ([`remote`]).

mod logger;
pub(crate) mod remote;

pub use logger::{DEFAULT_FILES_TO_KEEP, DEFAULT_MAX_FILE_SIZE_MB, LogLevel, LoggerConfig};

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{ConfigError, Error};

/// How an agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The relay's base URL, e.g. `https://relay.example.org/` (Medplum: `baseUrl`).
    pub base_url: String,
    /// ClientApplication id (`clientId`).
    pub client_id: String,
    /// ClientApplication secret (`clientSecret`).
    pub client_secret: String,
    /// The Agent resource id (`agentId`).
    pub agent_id: String,
    /// `NONE`, `ERROR`, `WARN`, `INFO` or `DEBUG` (`logLevel`): when given, it overrides both
    /// loggers' own `logLevel`, as in Medplum.
    pub log_level: Option<LogLevel>,
    /// The main logger (`logger.main.*`): the agent's own lines.
    pub logger_main: LoggerConfig,
    /// The channel logger (`logger.channel.*`): the lines of the inbound channels.
    pub logger_channel: LoggerConfig,
    /// Extra CA certificate (PEM) trusted for the relay's TLS, besides the system roots
    /// (`caFile`, an Outpost addition).
    pub ca_file: Option<PathBuf>,
    /// Where the durable inbound queue lives (`dataDir`, an Outpost addition). Default:
    /// `outpost-agent-data` next to the properties file when one is read, else the per-user
    /// state directory ([`default_data_dir`]); never the current directory. Empty when neither
    /// exists ([`AgentConfig::validate`] refuses it).
    pub data_dir: PathBuf,
    /// Heartbeat period (Medplum: 10 s). A relay silent for three periods means reconnect.
    pub heartbeat_interval: Duration,
    /// Longest wait for a device's answer to a push (`ackTimeoutMs`; default 55 s, the longest
    /// `waitTimeout` a caller can ask for, so the agent never gives up before the caller).
    pub ack_timeout: Duration,
    /// First reconnect delay; doubles up to `max_backoff`, each with random jitter.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// How long a device waits (original mode) for the relay's answer before it is told the
    /// message is queued at the agent (`inboundReplyWaitMs`, an Outpost addition; 30 s).
    pub inbound_reply_wait: Duration,
    /// How long the agent waits for the relay's answer to one inbound message before sending
    /// it again (`inboundAnswerWaitMs`, an Outpost addition; 60 s). Medplum's server answers
    /// only when the channel's Bot has finished, and it does not de-duplicate, so this must be
    /// longer than the slowest Bot: a resend runs the Bot again.
    pub inbound_answer_wait: Duration,
    /// Errors (`agent:error`) a message may get before it is moved to the dead letters and the
    /// channel moves on (`inboundMaxAttempts`, an Outpost addition; 5, at least 1).
    pub inbound_max_attempts: u32,
    /// Where to serve Prometheus metrics (`metricsListen`, an Outpost addition; the command
    /// line's `--metrics-listen`): none by default.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How long a new version installed by `$upgrade` has to reach the relay before the old
    /// executable is put back and run again (`upgradeWindowMs`, an Outpost addition; 30 s:
    /// shorter than the relay's wait for the answer, 45 s, so that after a rollback the old
    /// version reconnects and answers the caller why in time).
    pub upgrade_window: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            base_url: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            agent_id: String::new(),
            log_level: None,
            logger_main: LoggerConfig::default(),
            logger_channel: LoggerConfig::default(),
            ca_file: None,
            data_dir: default_data_dir().unwrap_or_default(),
            heartbeat_interval: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(55),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            inbound_reply_wait: Duration::from_secs(30),
            inbound_answer_wait: Duration::from_secs(60),
            metrics_listen: None,
            inbound_max_attempts: 5,
            upgrade_window: Duration::from_secs(30),
        }
    }
}

/// The agent's per-user state directory: `$XDG_STATE_HOME/outpost/agent`, else
/// `~/.local/state/outpost/agent` (`%LOCALAPPDATA%\outpost\agent` on Windows); `None` when
/// the environment names no home.
pub fn default_data_dir() -> Option<PathBuf> {
    state_dir(|name| std::env::var_os(name))
}

/// [`default_data_dir`] with the environment given by `env`.
fn state_dir(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |name| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let state = if cfg!(windows) {
        var("LOCALAPPDATA")
    } else {
        var("XDG_STATE_HOME")
            .filter(|p| p.is_absolute())
            .or_else(|| var("HOME").map(|h| h.join(".local").join("state")))
    };
    state.map(|s| s.join("outpost").join("agent"))
}

/// The data directory used with a properties file that sets no `dataDir`: next to the file.
pub fn data_dir_beside(properties: &Path) -> PathBuf {
    properties
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("outpost-agent-data")
}

/// A duration in milliseconds.
fn millis(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .parse()
        .map(Duration::from_millis)
        .map_err(|_| ConfigError::NotANumber {
            key,
            value: value.to_owned(),
        })
}

/// The `agent.properties` keys Outpost reads.
pub const PROPERTY_KEYS: &[&str] = &[
    "baseUrl",
    "clientId",
    "clientSecret",
    "clientSecretFile",
    "agentId",
    "logLevel",
    "caFile",
    "dataDir",
    "ackTimeoutMs",
    "inboundReplyWaitMs",
    "inboundAnswerWaitMs",
    "inboundMaxAttempts",
    "metricsListen",
    "upgradeWindowMs",
    "logger.main.logDir",
    "logger.main.maxFileSizeMb",
    "logger.main.filesToKeep",
    "logger.main.logLevel",
    "logger.channel.logDir",
    "logger.channel.maxFileSizeMb",
    "logger.channel.filesToKeep",
    "logger.channel.logLevel",
];

/// Keys of an `agent.properties` text that Outpost does not read, with their line numbers
/// (1-based).
pub fn unknown_property_keys(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                return None;
            }
            let (key, _) = line.split_once('=').or_else(|| line.split_once(':'))?;
            let key = key.trim();
            (!PROPERTY_KEYS.contains(&key)).then(|| (n + 1, key.to_owned()))
        })
        .collect()
}

impl AgentConfig {
    /// Reads `agent.properties`: `key=value` lines, `#` and `!` comments, blank lines ignored.
    /// Keys: `baseUrl`, `clientId`, `clientSecret`, `agentId`, `logLevel`,
    /// `logger.main.*` and `logger.channel.*` (`logDir`, `maxFileSizeMb`, `filesToKeep`,
    /// `logLevel`) (Medplum's), and `clientSecretFile`, `caFile`, `dataDir`, `ackTimeoutMs`,
    /// `inboundReplyWaitMs`, `inboundAnswerWaitMs`, `inboundMaxAttempts`, `metricsListen`,
    /// `upgradeWindowMs` (Outpost's). Other
    /// keys are ignored (`outpost agent --check` lists them).
    ///
    /// `clientSecretFile` names a file holding the secret (surrounding whitespace ignored),
    /// instead of `clientSecret`; on Unix it must not be readable by group or others.
    pub fn from_properties(text: &str) -> Result<AgentConfig, Error> {
        let c = AgentConfig::parse_properties(text)?;
        c.validate()?;
        Ok(c)
    }

    /// The same, without [`AgentConfig::validate`]: for a caller that fills in values from
    /// elsewhere (the command line, `MEDPLUM_CLIENT_SECRET`) before validating.
    pub fn parse_properties(text: &str) -> Result<AgentConfig, Error> {
        AgentConfig::parse(text, None)
    }

    /// Parses `text`, read from `file` if it came from one (the default data directory is then
    /// next to it).
    fn parse(text: &str, file: Option<&Path>) -> Result<AgentConfig, Error> {
        let mut c = AgentConfig::default();
        let mut secret_file = None;
        let mut data_dir_given = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once('=').or_else(|| line.split_once(':')) else {
                return Err(ConfigError::Syntax(n + 1).into());
            };
            let value = value.trim().to_owned();
            match key.trim() {
                "baseUrl" => c.base_url = value,
                "clientId" => c.client_id = value,
                "clientSecret" => c.client_secret = value,
                "clientSecretFile" => secret_file = Some(PathBuf::from(value)),
                "agentId" => c.agent_id = value,
                "logLevel" => c.log_level = Some(LogLevel::parse("logLevel", &value)?),
                "caFile" => c.ca_file = Some(PathBuf::from(value)),
                "dataDir" => {
                    c.data_dir = PathBuf::from(value);
                    data_dir_given = true;
                }
                "ackTimeoutMs" => c.ack_timeout = millis("ackTimeoutMs", &value)?,
                "inboundReplyWaitMs" => {
                    c.inbound_reply_wait = millis("inboundReplyWaitMs", &value)?;
                }
                "inboundAnswerWaitMs" => {
                    c.inbound_answer_wait = millis("inboundAnswerWaitMs", &value)?;
                }
                "inboundMaxAttempts" => {
                    c.inbound_max_attempts = value
                        .parse::<u32>()
                        .map_err(|_| ConfigError::NotANumber {
                            key: "inboundMaxAttempts",
                            value: value.clone(),
                        })?
                        .max(1);
                }
                "upgradeWindowMs" => c.upgrade_window = millis("upgradeWindowMs", &value)?,
                "metricsListen" => {
                    c.metrics_listen =
                        Some(value.parse().map_err(|_| ConfigError::NotAnAddress {
                            key: "metricsListen",
                            value: value.clone(),
                        })?);
                }
                key => match logger::split_logger_key(key) {
                    Some(("main", name)) => c.logger_main.set(key, name, &value)?,
                    Some((_, name)) => c.logger_channel.set(key, name, &value)?,
                    None => {}
                },
            }
        }
        if let (Some(file), false) = (file, data_dir_given) {
            c.data_dir = data_dir_beside(file);
        }
        if let Some(path) = secret_file {
            if !c.client_secret.is_empty() {
                return Err(ConfigError::SecretTwice.into());
            }
            c.client_secret = read_secret_file(&path)?;
        }
        Ok(c)
    }

    /// Reads an `agent.properties` file.
    pub fn from_file(path: &Path) -> Result<AgentConfig, Error> {
        let c = AgentConfig::read_file(path)?;
        c.validate()?;
        Ok(c)
    }

    /// Reads an `agent.properties` file without validating it (see
    /// [`AgentConfig::parse_properties`]).
    pub fn read_file(path: &Path) -> Result<AgentConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
            path: path.to_owned(),
            source,
        })?;
        AgentConfig::parse(&text, Some(path))
    }

    /// The main logger's level: `logLevel`, else `logger.main.logLevel`, else `INFO`.
    pub fn main_level(&self) -> LogLevel {
        self.log_level
            .or(self.logger_main.log_level)
            .unwrap_or(LogLevel::Info)
    }

    /// The channel logger's level: `logLevel`, else `logger.channel.logLevel`, else `INFO`.
    pub fn channel_level(&self) -> LogLevel {
        self.log_level
            .or(self.logger_channel.log_level)
            .unwrap_or(LogLevel::Info)
    }

    /// Checks that the four required values are there and the URL is usable.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] saying which.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, v) in [
            ("baseUrl", &self.base_url),
            ("clientId", &self.client_id),
            ("clientSecret", &self.client_secret),
            ("agentId", &self.agent_id),
        ] {
            if v.is_empty() {
                return Err(ConfigError::Missing(name).into());
            }
        }
        check_base_url(&self.base_url)?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::NoDataDir.into());
        }
        Ok(())
    }

    /// The base URL with exactly one trailing slash.
    pub fn base(&self) -> String {
        format!("{}/", self.base_url.trim_end_matches('/'))
    }

    /// The WebSocket URL: the base URL's host with `/ws/agent` (any path in the base URL is
    /// dropped, as Medplum's agent does), `wss` for `https`.
    pub fn ws_url(&self) -> String {
        let (scheme, rest) = match self.base_url.split_once("://") {
            Some(("https", rest)) => ("wss", rest),
            Some((_, rest)) => ("ws", rest),
            None => ("ws", self.base_url.as_str()),
        };
        let host = rest.split('/').next().unwrap_or(rest);
        format!("{scheme}://{host}/ws/agent")
    }
}

/// The client secret in `path`: the file's text without surrounding whitespace. The file must
/// be owner-only (no permission bits for group or others) on Unix, where the check is made on
/// the open file, so it cannot be swapped between check and read.
pub fn read_secret_file(path: &Path) -> Result<String, Error> {
    use std::io::Read;
    let file_error = |source| ConfigError::File {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(file_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(file_error)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::SecretFileMode {
                path: path.to_owned(),
                mode,
            }
            .into());
        }
    }
    let mut text = String::new();
    // A secret is short; anything past 64 KiB is not one.
    (&mut file)
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(file_error)?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ConfigError::SecretFileEmpty(path.to_owned()).into());
    }
    Ok(secret.to_owned())
}

/// A relay base URL: `http(s)://`, and the server's root rather than its FHIR path (Medplum's
/// `baseUrl` convention; `.../fhir/R4/` would be doubled in every request).
///
/// # Errors
///
/// [`ConfigError::BaseUrl`] or [`ConfigError::FhirPath`].
pub(crate) fn check_base_url(url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::BaseUrl(url.to_owned()));
    }
    let path = url.trim_end_matches('/').to_ascii_lowercase();
    if path.ends_with("/fhir/r4") {
        return Err(ConfigError::FhirPath(url.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn client_secret_file_must_be_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("outpost-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "agent-secret-from-a-file\n").unwrap();
        let props = format!(
            "baseUrl=http://x\nclientId=a\nagentId=b\nclientSecretFile={}\n",
            path.display()
        );
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = AgentConfig::from_properties(&props)
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "configuration: clientSecretFile {p} is readable by group or others (mode {mode:04o}); make it owner-only: chmod 600 {p}",
                    p = path.display()
                )
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = AgentConfig::from_properties(&props).unwrap();
        assert_eq!(c.client_secret, "agent-secret-from-a-file");
        // Not both ways at once; a missing file is named.
        let e = AgentConfig::from_properties(&format!("{props}clientSecret=s\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: give clientSecret or clientSecretFile, not both"
        );
        let e = AgentConfig::from_properties(&props.replace("/secret", "/nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        std::fs::write(&path, " \n").unwrap();
        let e = AgentConfig::from_properties(&props).unwrap_err();
        assert!(e.to_string().ends_with("is empty"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn base_url_with_the_fhir_path_is_refused_with_the_root() {
        assert!(check_base_url("http://127.0.0.1:8103/").is_ok());
        assert!(check_base_url("https://relay.example/outpost/").is_ok());
        let e = check_base_url("http://127.0.0.1:8103/fhir/R4/").unwrap_err();
        assert_eq!(
            e.to_string(),
            "base URL http://127.0.0.1:8103/fhir/R4/ ends with fhir/R4/: give the server's root (http://127.0.0.1:8103/); fhir/R4/ is added to each request"
        );
        assert!(matches!(
            check_base_url("http://h/FHIR/r4"),
            Err(ConfigError::FhirPath(_))
        ));
        assert!(matches!(
            check_base_url("127.0.0.1:8103"),
            Err(ConfigError::BaseUrl(_))
        ));
    }

    #[test]
    fn metrics_listen_is_a_socket_address() {
        let base = "baseUrl=http://r/\nclientId=c\nclientSecret=s\nagentId=a\n";
        let c = AgentConfig::parse_properties(&format!("{base}metricsListen=127.0.0.1:9464\n"))
            .unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(
            AgentConfig::parse_properties(base).unwrap().metrics_listen,
            None
        );
        let e =
            AgentConfig::parse_properties(&format!("{base}metricsListen=localhost\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: metricsListen: not a socket address (IP:port): localhost"
        );
    }

    #[test]
    fn medplum_properties_file() {
        let c = AgentConfig::from_properties(
            "# Medplum agent\r\nbaseUrl=https://relay.example.org/medplum/\r\nclientId=abc\r\nclientSecret=s=e=c\r\nagentId=1080ee82\r\nlogLevel=DEBUG\r\nlogger.main.logDir=C:/logs\r\n",
        )
        .unwrap();
        assert_eq!(c.client_secret, "s=e=c");
        assert_eq!(c.log_level, Some(LogLevel::Debug));
        assert_eq!(c.logger_main.log_dir, Some(PathBuf::from("C:/logs")));
        assert_eq!(c.ws_url(), "wss://relay.example.org/ws/agent");
        assert_eq!(c.base(), "https://relay.example.org/medplum/");
    }

    #[test]
    fn missing_values() {
        let e =
            AgentConfig::from_properties("baseUrl=http://x\nclientId=a\nagentId=b\n").unwrap_err();
        assert_eq!(e.to_string(), "configuration: clientSecret is required");
        assert!(AgentConfig::from_properties("garbage line").is_err());
        assert!(
            AgentConfig::from_properties("baseUrl=ftp://x\nclientId=a\nclientSecret=s\nagentId=b")
                .is_err()
        );
    }

    #[test]
    fn outpost_durations() {
        let c = AgentConfig::from_properties(
            "baseUrl=http://x\nclientId=a\nclientSecret=s\nagentId=b\nackTimeoutMs=1500\ninboundReplyWaitMs=2000\n",
        )
        .unwrap();
        assert_eq!(c.ack_timeout, Duration::from_millis(1500));
        assert_eq!(c.inbound_reply_wait, Duration::from_secs(2));
        let e = AgentConfig::from_properties(
            "baseUrl=http://x\nclientId=a\nclientSecret=s\nagentId=b\ninboundReplyWaitMs=soon\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: inboundReplyWaitMs: not a number: soon"
        );
    }

    const REQUIRED: &str = "baseUrl=http://x\nclientId=a\nclientSecret=s\nagentId=b\n";

    #[test]
    fn medplum_logger_keys_are_read() {
        let c = AgentConfig::from_properties(&format!(
            "{REQUIRED}logger.main.logDir=/var/log/outpost\nlogger.main.maxFileSizeMb=2\nlogger.main.filesToKeep=3\nlogger.main.logLevel=warn\nlogger.channel.logDir=/var/log/channels\nlogger.channel.maxFileSizeMb=0.5\nlogger.channel.logLevel=DEBUG\n"
        ))
        .unwrap();
        assert_eq!(
            c.logger_main,
            LoggerConfig {
                log_dir: Some(PathBuf::from("/var/log/outpost")),
                max_file_size: 2 * 1024 * 1024,
                files_to_keep: 3,
                log_level: Some(LogLevel::Warn),
            }
        );
        assert_eq!(c.logger_channel.max_file_size, 512 * 1024, "a decimal MB");
        assert_eq!(c.logger_channel.files_to_keep, DEFAULT_FILES_TO_KEEP);
        assert_eq!(
            (c.main_level(), c.channel_level()),
            (LogLevel::Warn, LogLevel::Debug)
        );
        // The top-level logLevel overrides both, as in Medplum's agent-main.ts.
        let c = AgentConfig::from_properties(&format!(
            "{REQUIRED}logLevel=ERROR\nlogger.main.logLevel=DEBUG\nlogger.channel.logLevel=DEBUG\n"
        ))
        .unwrap();
        assert_eq!(
            (c.main_level(), c.channel_level()),
            (LogLevel::Error, LogLevel::Error)
        );
        // Nothing said: INFO, no files, Medplum's sizes.
        let c = AgentConfig::from_properties(REQUIRED).unwrap();
        assert_eq!(
            (c.main_level(), c.channel_level()),
            (LogLevel::Info, LogLevel::Info)
        );
        assert_eq!(c.logger_main, LoggerConfig::default());
        assert_eq!(c.logger_main.max_file_size, 10 * 1024 * 1024);
        assert!(
            unknown_property_keys(&format!(
                "{REQUIRED}logger.channel.filesToKeep=2\nlogger.main.bogus=1\n"
            )) == [(6, "logger.main.bogus".to_owned())]
        );
    }

    #[test]
    fn bad_logger_values_are_refused_naming_the_key() {
        for (line, error) in [
            (
                "logLevel=LOUD",
                "configuration: logLevel: not a log level: LOUD (NONE, ERROR, WARN, INFO or DEBUG)",
            ),
            (
                "logger.channel.logLevel=2",
                "configuration: logger.channel.logLevel: not a log level: 2 (NONE, ERROR, WARN, INFO or DEBUG)",
            ),
            (
                "logger.main.maxFileSizeMb=0",
                "configuration: logger.main.maxFileSizeMb: not a positive number: 0",
            ),
            (
                "logger.main.maxFileSizeMb=ten",
                "configuration: logger.main.maxFileSizeMb: not a positive number: ten",
            ),
            (
                "logger.main.filesToKeep=0",
                "configuration: logger.main.filesToKeep: not a positive number: 0",
            ),
        ] {
            let e = AgentConfig::from_properties(&format!("{REQUIRED}{line}\n")).unwrap_err();
            assert_eq!(e.to_string(), error);
        }
        for (value, level) in [("none", LogLevel::None), ("Info", LogLevel::Info)] {
            assert_eq!(LogLevel::parse("logLevel", value).unwrap(), level);
        }
        assert_eq!(LogLevel::None.directive(), "off");
    }

    #[test]
    fn the_default_data_dir_is_per_user_or_beside_the_properties_file() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        if !cfg!(windows) {
            assert_eq!(
                state_dir(env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")])),
                Some(PathBuf::from("/s/outpost/agent"))
            );
            assert_eq!(
                state_dir(env(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")])),
                Some(PathBuf::from("/h/.local/state/outpost/agent")),
                "XDG: a relative path is ignored"
            );
            assert_eq!(state_dir(env(&[("HOME", "")])), None);
        }
        assert_eq!(
            data_dir_beside(Path::new("/etc/outpost/agent.properties")),
            PathBuf::from("/etc/outpost/outpost-agent-data")
        );
        assert_eq!(
            data_dir_beside(Path::new("agent.properties")),
            PathBuf::from("./outpost-agent-data")
        );
        let dir = std::env::temp_dir().join(format!("outpost-datadir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let props = dir.join("agent.properties");
        std::fs::write(&props, REQUIRED).unwrap();
        assert_eq!(
            AgentConfig::from_file(&props).unwrap().data_dir,
            dir.join("outpost-agent-data")
        );
        std::fs::write(&props, format!("{REQUIRED}dataDir=/q\n")).unwrap();
        assert_eq!(
            AgentConfig::from_file(&props).unwrap().data_dir,
            PathBuf::from("/q")
        );
        let _ = std::fs::remove_dir_all(dir);
        let e = AgentConfig {
            data_dir: PathBuf::new(),
            ..AgentConfig::from_properties(REQUIRED).unwrap()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("give dataDir or --data-dir"), "{e}");
    }

    #[test]
    fn plain_http_gives_ws() {
        let c = AgentConfig {
            base_url: "http://127.0.0.1:8103".into(),
            ..AgentConfig::default()
        };
        assert_eq!(c.ws_url(), "ws://127.0.0.1:8103/ws/agent");
        assert_eq!(c.base(), "http://127.0.0.1:8103/");
    }
}
