//! The agent's errors. Whose fault it was is in the type: [`Error`] for the agent's own
//! operations (configuration, the relay, the queue), [`ConfigError`] for a configuration that
//! cannot work, and [`PushError`](crate::PushError) for a push a device could not take.

use std::path::PathBuf;

use agent_protocol::ErrorMessage;

/// What can stop the agent or one of its operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing or wrong.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// A CA file could not be read or holds no certificate.
    #[error("TLS: {}: {source}", .path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built, or the relay's name is not a valid server name.
    #[error("TLS: {0}")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The relay could not be reached over HTTP (refused, DNS, TLS, timeout).
    #[error("cannot reach the relay: {}", chain(.0))]
    Http(#[source] reqwest::Error),
    /// The WebSocket to the relay could not be opened.
    #[error("cannot reach the relay: {step} with {authority}: {}", chain(.source.as_ref()))]
    Connect {
        /// `connecting`, `TLS handshake` or `WebSocket handshake`.
        step: &'static str,
        /// `host:port`.
        authority: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A step of connecting took longer than its limit.
    #[error("cannot reach the relay: {step} with {authority} timed out")]
    ConnectTimeout {
        /// The step.
        step: &'static str,
        /// `host:port`.
        authority: String,
    },
    /// The client credentials were refused.
    #[error("relay: login failed (HTTP {status}): {description}")]
    Login {
        /// HTTP status.
        status: u16,
        /// The relay's `error_description`.
        description: String,
    },
    /// The token endpoint answered without a token.
    #[error("relay: login answer has no access_token")]
    NoToken,
    /// A fresh token was refused too.
    #[error("relay: unauthorized")]
    Unauthorized,
    /// The relay answered an HTTP request with an error status.
    #[error("relay: {what}: HTTP {status}: {text}")]
    Status {
        /// What was asked (`read Agent/1`).
        what: String,
        /// HTTP status.
        status: u16,
        /// The OperationOutcome's text.
        text: String,
    },
    /// An upgrade cannot go on: this executable is not the version the upgrade asked for
    /// (the watchdog rolls it back and the old version answers the request).
    #[error("upgrade: {0}")]
    Upgrade(crate::UpgradeError),
    /// `push_to_agent` was given something that names no agent.
    #[error("{0:?} names no agent: give its id, Agent/<id> or Agent?identifier=[system|]value")]
    AgentName(String),
    /// The relay refused or failed a push (`$push`): its OperationOutcome's text, which
    /// carries the device's answer or the reason.
    #[error("relay: {text}")]
    Push {
        /// HTTP status.
        status: u16,
        /// The OperationOutcome's issue code (FHIR `issue.code`: `timeout`, `transient`,
        /// `invalid`, ...).
        code: String,
        /// The OperationOutcome's text.
        text: String,
    },
    /// The relay refused the agent's connect request.
    #[error("relay: connect refused: {}", .0.body)]
    Refused(ErrorMessage),
    /// The durable queue's database failed.
    #[error("queue: {0}")]
    Queue(#[from] rusqlite::Error),
    /// The queue's file failed its integrity check at start; the agent does not run on it.
    #[error(
        "the queue file {} is damaged ({detail}). Stop the agent, move the file aside (with its -wal and -shm files) and start again: a new, empty queue is created. Messages in the damaged file were acknowledged to devices but may not have reached the relay; `sqlite3 FILE .recover` can extract what is readable.",
        .path.display()
    )]
    QueueDamaged {
        /// The file.
        path: PathBuf,
        /// What `PRAGMA quick_check` said.
        detail: String,
    },
    /// Sockets and files.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required value is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The base URL is not HTTP(S).
    #[error("baseUrl must start with http:// or https://: {0}")]
    BaseUrl(String),
    /// The base URL names the FHIR path (`.../fhir/R4/`), which every request adds itself.
    #[error(
        "base URL {0} ends with fhir/R4/: give the server's root ({root}); fhir/R4/ is added to each request",
        root = .0.to_ascii_lowercase().rfind("fhir/r4").map(|i| &.0[..i]).unwrap_or(.0)
    )]
    FhirPath(String),
    /// A line of `agent.properties` is not `key=value`.
    #[error("agent.properties line {0}: expected key=value")]
    Syntax(usize),
    /// A numeric value is not a number.
    #[error("{key}: not a number: {value}")]
    NotANumber {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A value that should be a socket address (`host:port`) is not one.
    #[error("{key}: not a socket address (IP:port): {value}")]
    NotAnAddress {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A file could not be read or a directory created.
    #[error("{}: {source}", .path.display())]
    File {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A channel of the Agent cannot run.
    #[error("channel {channel}: {problem}")]
    Channel {
        /// `Agent.channel.name`.
        channel: String,
        /// What is wrong.
        problem: ChannelProblem,
    },
    /// Two channels listen on the same port.
    #[error("channels {first} and {second} share port {port}")]
    SharedPort {
        /// One channel.
        first: String,
        /// The other.
        second: String,
        /// The port.
        port: String,
    },
    /// Two channels of the Agent have one name.
    #[error("two channels are named {0}: channel names must differ")]
    SameName(String),
    /// The client secret file can be read by users other than the agent's owner.
    #[error(
        "clientSecretFile {} is readable by group or others (mode {mode:04o}); make it owner-only: chmod 600 {}",
        .path.display(), .path.display()
    )]
    SecretFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The client secret file is empty.
    #[error("clientSecretFile {} is empty", .0.display())]
    SecretFileEmpty(PathBuf),
    /// Both `clientSecret` and `clientSecretFile` were given.
    #[error("give clientSecret or clientSecretFile, not both")]
    SecretTwice,
    /// A log level is not one of Medplum's.
    #[error("{key}: not a log level: {value} (NONE, ERROR, WARN, INFO or DEBUG)")]
    LogLevel {
        /// The key (`logLevel`, `logger.main.logLevel`, ...).
        key: String,
        /// The value.
        value: String,
    },
    /// `maxFileSizeMb` or `filesToKeep` is not a positive number.
    #[error("{key}: not a positive number: {value}")]
    LoggerNumber {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// No data directory was given and there is no per-user state directory to default to.
    #[error(
        "no data directory: neither XDG_STATE_HOME nor HOME (LOCALAPPDATA on Windows) is set; give dataDir or --data-dir"
    )]
    NoDataDir,
    /// Several problems at once.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<ConfigError>),
}

/// Why a channel cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelProblem {
    /// `Agent.channel.endpoint` is missing.
    #[error("no endpoint")]
    NoEndpoint,
    /// The Endpoint has no address.
    #[error("Endpoint/{0} has no address")]
    NoAddress(String),
    /// The relay could not give the Endpoint (it does not exist, or may not be read).
    #[error("cannot read Endpoint/{id}: HTTP {status}: {text}")]
    Endpoint {
        /// The Endpoint's id.
        id: String,
        /// The relay's HTTP status.
        status: u16,
        /// The OperationOutcome's text.
        text: String,
    },
    /// The address is not `scheme://host:port`.
    #[error("{0}")]
    Address(#[from] crate::url::UrlError),
    /// The scheme has no channel kind.
    #[error("unsupported endpoint scheme {0:?} (supported: mllp, mllps, astm, tcp, dicom)")]
    Scheme(String),
    /// `?encoding=` names no known character set.
    #[error("{0}")]
    Encoding(#[source] hl7v2::Error),
    /// The TLS settings of an `mllps://` or `dicom://...?tls=true` channel cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// `startChar`/`endChar` missing.
    #[error("tcp:// channels need {0} (URL-encoded, e.g. {0}=%02)")]
    MissingDelimiter(&'static str),
    /// `startChar`/`endChar` empty.
    #[error("{0} is empty")]
    EmptyDelimiter(&'static str),
    /// `startChar`/`endChar` not one byte.
    #[error("{key} {value:?} is not a single byte (code point over 255)")]
    WideDelimiter {
        /// The parameter.
        key: &'static str,
        /// Its first character.
        value: char,
    },
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// `host:port`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A source chain as one line (`a: b: c`), for logs and events where only text travels.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        // Some errors repeat their source in their own text.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
