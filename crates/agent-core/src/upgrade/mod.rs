//! `$upgrade`: the agent replaces its own executable with the version the relay names and runs
//! it; a new version that does not reach the relay in time is replaced by the old one.
//!
//! ```text
//!  old agent  ── GET Binary/{id} ──► <dir>/.outpost-upgrade-<uuid> (SHA-256 checked, fsync,
//!             │                      mode 0755)
//!             ├─ hard link <exe> as <exe>.previous (the backup)
//!             ├─ rename the new file over <exe>; fsync <dir>
//!             ├─ write <exe>.upgrade.json (pending: versions, callback, argv, pid, deadline)
//!             ├─ start the watchdog: <exe>.previous agent upgrade-watchdog <exe>.upgrade.json
//!             └─ stop, then exec <exe> with the same arguments (same pid)
//!  new agent  ── once live: agent:upgrade:response {statusCode: 200, callback}; state confirmed
//!  watchdog   ── confirmed before the deadline: exit. Else (deadline passed, or the new
//!                process died): kill it, rename <exe>.previous back over <exe>, state rolled
//!                back, exec the old executable with the same arguments; once live it answers
//!                the request with agent:error saying why.
//! ```
//!
//! Nothing is replaced until the download matched its SHA-256; every refusal is an
//! [`UpgradeError`] the relay hears as `agent:error`. Unix only: elsewhere an upgrade is
//! refused ([`UpgradeError::Unsupported`]).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_protocol::UpgradeRequest;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::{Error, RelayClient, VERSION};

/// Largest executable an upgrade downloads.
pub const MAX_EXECUTABLE: u64 = 512 << 20;

/// How often the watchdog looks at the state file and the new process.
const WATCH_PERIOD: Duration = Duration::from_millis(200);

/// Why an upgrade was refused or failed. Before the executable is replaced, nothing has
/// changed on disk; the variants say whose fault it was (the request, the relay, this host).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The request names no Binary: the relay found no release for the version (the
    /// operator's to register).
    #[error(
        "no Binary named for version {version}: register the release on an Outpost relay (README, \"Upgrading agents\"); a Medplum server names none, and the Outpost agent does not download from GitHub"
    )]
    NoBinary {
        /// The version asked for.
        version: String,
    },
    /// The request's `sha256` is not 64 hex digits.
    #[error("sha256 {0:?} is not 64 hex digits")]
    BadSha(String),
    /// The agent runs that version already, and `force` was not given.
    #[error("already running version {version}; upgrade with force=true to install it again")]
    SameVersion {
        /// This agent's version.
        version: String,
    },
    /// The relay has no such Binary.
    #[error("Binary/{id} not found on the relay")]
    BinaryNotFound {
        /// The Binary's id.
        id: String,
    },
    /// The Binary could not be downloaded (the relay's answer or the network).
    #[error("cannot download Binary/{id}: {source}")]
    Download {
        /// The Binary's id.
        id: String,
        /// Why.
        source: Box<Error>,
    },
    /// The Binary is over [`MAX_EXECUTABLE`].
    #[error("Binary/{id} is larger than {max} bytes")]
    TooLarge {
        /// The Binary's id.
        id: String,
        /// The limit.
        max: u64,
    },
    /// The download does not have the SHA-256 the release names; nothing was replaced.
    #[error(
        "sha256 mismatch for Binary/{id}: expected {expected}, downloaded {actual}; nothing was replaced"
    )]
    ShaMismatch {
        /// The Binary's id.
        id: String,
        /// The SHA-256 the request named.
        expected: String,
        /// The SHA-256 of what was downloaded.
        actual: String,
    },
    /// The running executable's path is unknown.
    #[error("cannot find the running executable: {0}")]
    NoExecutable(io::Error),
    /// The executable's directory cannot be written (the service's user may not own it).
    #[error("cannot write beside the executable in {}: {source}", .dir.display())]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A step of replacing the executable failed.
    #[error("cannot {step} {}: {source}", .path.display())]
    Replace {
        /// What was being done (`keep a backup of`, `replace`, ...).
        step: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another upgrade has not finished (its new version has not confirmed nor been rolled
    /// back).
    #[error("an upgrade is already under way ({}); retry later, or with force=true", .0.display())]
    InProgress(PathBuf),
    /// This agent is downloading or installing another upgrade right now.
    #[error("another upgrade request is being handled by this agent")]
    Busy,
    /// The state file between the old and the new version cannot be read.
    #[error("upgrade state {}: {why}", .path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The new executable does not report the version it was registered as: the release
    /// points at another build.
    #[error("the executable registered as {registered} reports version {reports}")]
    WrongVersion {
        /// The version the upgrade asked for (the release's).
        registered: String,
        /// The version the new executable reports.
        reports: String,
    },
    /// This system cannot replace a running executable this way.
    #[error("upgrading is supported on Unix systems only")]
    Unsupported,
}

/// Where an upgrade stands, in the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Status {
    /// The new executable is in place; it has not reached the relay yet.
    Pending,
    /// The new version reached the relay and answered the request.
    Confirmed,
    /// The new process found it is not the version asked for: the watchdog rolls back at
    /// once, with `reason`.
    WrongVersion,
    /// The old executable was put back.
    RolledBack,
}

/// `<exe>.upgrade.json`: what the old process, the new one and the watchdog share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    status: Status,
    previous_version: String,
    target_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback: Option<String>,
    exe: PathBuf,
    backup: PathBuf,
    argv: Vec<OsString>,
    /// The agent's process id (the same before and after exec).
    pid: u32,
    /// When the watchdog gives up on the new version (Unix milliseconds).
    deadline_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A process image to run in place of this one: the agent's executable with the arguments it
/// was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    exe: PathBuf,
    argv: Vec<OsString>,
}

impl Restart {
    /// The executable that will run.
    pub fn executable(&self) -> &Path {
        &self.exe
    }

    /// Replaces this process with the executable (same pid, same arguments, same
    /// environment). Returns only when that failed.
    pub fn exec(self) -> io::Error {
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            let mut cmd = std::process::Command::new(&self.exe);
            if let Some((arg0, rest)) = self.argv.split_first() {
                cmd.arg0(arg0).args(rest);
            }
            cmd.exec()
        }
        #[cfg(not(unix))]
        {
            io::Error::new(io::ErrorKind::Unsupported, "exec needs a Unix system")
        }
    }
}

/// What the watchdog saw.
#[derive(Debug)]
pub enum Watch {
    /// The new version reached the relay in time; nothing to do.
    Confirmed,
    /// The old executable is back in place: run it ([`Restart::exec`]).
    RolledBack(Restart),
}

/// The state file beside `exe`.
fn state_path(exe: &Path) -> PathBuf {
    let mut name = exe.file_name().unwrap_or_default().to_owned();
    name.push(".upgrade.json");
    exe.with_file_name(name)
}

/// The backup beside `exe`.
fn backup_path(exe: &Path) -> PathBuf {
    let mut name = exe.file_name().unwrap_or_default().to_owned();
    name.push(".previous");
    exe.with_file_name(name)
}

/// `version` without Outpost's `outpost-agent-` prefix or a leading `v`, for comparisons.
fn bare(version: &str) -> &str {
    let v = version.trim();
    let v = v.strip_prefix("outpost-agent-").unwrap_or(v);
    v.strip_prefix('v').unwrap_or(v)
}

/// Whether two version strings name the same release.
pub(crate) fn same_version(a: &str, b: &str) -> bool {
    bare(a) == bare(b)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn read_state(path: &Path) -> Result<Option<State>, UpgradeError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(UpgradeError::State {
                path: path.to_owned(),
                why: e.to_string(),
            });
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| UpgradeError::State {
            path: path.to_owned(),
            why: e.to_string(),
        })
}

/// Writes the state file whole or not at all (temporary file, fsync, rename).
fn write_state(path: &Path, state: &State) -> Result<(), UpgradeError> {
    let fail = |source: io::Error| UpgradeError::Replace {
        step: "write",
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(state).map_err(|e| fail(io::Error::other(e)))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        // It holds the agent's arguments, which may hold its secret.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(fail)?;
        f.write_all(&json).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)?;
    sync_dir(path);
    Ok(())
}

/// Makes a rename in `path`'s directory durable (best effort: not every system can).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Checks the request, downloads and verifies the executable, puts it in place of the running
/// one (keeping the old as `<exe>.previous`), and starts the watchdog. The caller stops the
/// agent and runs the returned [`Restart`].
pub(crate) async fn install(
    client: &RelayClient,
    req: &UpgradeRequest,
    window: Duration,
) -> Result<Restart, UpgradeError> {
    if !cfg!(unix) {
        return Err(UpgradeError::Unsupported);
    }
    let version = req.version.clone().unwrap_or_else(|| "latest".to_owned());
    let force = req.force.unwrap_or(false);
    let Some(id) = req.binary.clone().filter(|b| !b.is_empty()) else {
        return Err(UpgradeError::NoBinary { version });
    };
    let expected = match req.sha256.as_deref().map(str::to_ascii_lowercase) {
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => s,
        other => return Err(UpgradeError::BadSha(other.unwrap_or_default())),
    };
    if !force && same_version(&version, VERSION) {
        return Err(UpgradeError::SameVersion {
            version: VERSION.to_owned(),
        });
    }
    let exe = std::env::current_exe().map_err(UpgradeError::NoExecutable)?;
    let dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    let state = state_path(&exe);
    if !force
        && let Some(s) = read_state(&state).ok().flatten()
        && s.status == Status::Pending
    {
        return Err(UpgradeError::InProgress(state));
    }
    let tmp = dir.join(format!(".outpost-upgrade-{}", uuid::Uuid::new_v4()));
    let result = download(client, &id, &expected, &tmp, &dir).await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let backup = backup_path(&exe);
    if let Err(e) = swap(&exe, &tmp, &backup) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let argv: Vec<OsString> = std::env::args_os().collect();
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let s = State {
        status: Status::Pending,
        previous_version: VERSION.to_owned(),
        target_version: bare(&version).to_owned(),
        callback: req.callback.clone(),
        exe: exe.clone(),
        backup: backup.clone(),
        argv: argv.clone(),
        pid: std::process::id(),
        deadline_ms: now_ms().saturating_add(window_ms),
        reason: None,
    };
    let started = write_state(&state, &s).and_then(|()| {
        std::process::Command::new(&backup)
            .args(["agent", "upgrade-watchdog"])
            .arg(&state)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|source| UpgradeError::Replace {
                step: "start the watchdog",
                path: backup.clone(),
                source,
            })
    });
    if let Err(e) = started {
        // Put the running version back: it stays.
        let _ = std::fs::rename(&backup, &exe);
        let _ = std::fs::remove_file(&state);
        return Err(e);
    }
    tracing::info!(
        from = VERSION,
        to = s.target_version,
        exe = %exe.display(),
        backup = %backup.display(),
        window_ms,
        "upgrade: new executable in place; restarting"
    );
    Ok(Restart { exe, argv })
}

/// Streams Binary `id` to `tmp` (mode 0755), checking its SHA-256 against `expected`.
async fn download(
    client: &RelayClient,
    id: &str,
    expected: &str,
    tmp: &Path,
    dir: &Path,
) -> Result<(), UpgradeError> {
    let mut opts = tokio::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o755);
    let mut file = opts
        .open(tmp)
        .await
        .map_err(|source| UpgradeError::NotWritable {
            dir: dir.to_owned(),
            source,
        })?;
    let resp = client.open_binary(id).await.map_err(|e| match e {
        Error::Status { status: 404, .. } => UpgradeError::BinaryNotFound { id: id.to_owned() },
        e => UpgradeError::Download {
            id: id.to_owned(),
            source: Box::new(e),
        },
    })?;
    if resp.content_length().is_some_and(|n| n > MAX_EXECUTABLE) {
        return Err(UpgradeError::TooLarge {
            id: id.to_owned(),
            max: MAX_EXECUTABLE,
        });
    }
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    let mut body = resp.bytes_stream();
    let write_err = |source: io::Error| UpgradeError::NotWritable {
        dir: dir.to_owned(),
        source,
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| UpgradeError::Download {
            id: id.to_owned(),
            source: Box::new(Error::Http(e)),
        })?;
        size += chunk.len() as u64;
        if size > MAX_EXECUTABLE {
            return Err(UpgradeError::TooLarge {
                id: id.to_owned(),
                max: MAX_EXECUTABLE,
            });
        }
        digest.update(&chunk);
        file.write_all(&chunk).await.map_err(write_err)?;
    }
    file.sync_all().await.map_err(write_err)?;
    drop(file);
    let actual = hex::encode(digest.finish());
    if actual != expected {
        return Err(UpgradeError::ShaMismatch {
            id: id.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).map_err(write_err)?;
    }
    Ok(())
}

/// Keeps `exe` as `backup` (a hard link, else a copy) and renames `new` over `exe`.
fn swap(exe: &Path, new: &Path, backup: &Path) -> Result<(), UpgradeError> {
    match std::fs::remove_file(backup) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(UpgradeError::Replace {
                step: "remove the old backup",
                path: backup.to_owned(),
                source,
            });
        }
    }
    if std::fs::hard_link(exe, backup).is_err() {
        std::fs::copy(exe, backup).map_err(|source| UpgradeError::Replace {
            step: "keep a backup of",
            path: exe.to_owned(),
            source,
        })?;
    }
    std::fs::rename(new, exe).map_err(|source| UpgradeError::Replace {
        step: "replace",
        path: exe.to_owned(),
        source,
    })?;
    sync_dir(exe);
    Ok(())
}

/// The new version's side, once its session with the relay is live: the message that answers
/// the upgrade request (`agent:upgrade:response` when this process is the new version,
/// `agent:error` when it is the old one put back), and the state updated. `None` when no
/// upgrade waits for an answer.
pub(crate) fn outcome() -> Option<agent_protocol::AgentMessage> {
    use agent_protocol::{AgentMessage, StatusResponse};
    let exe = std::env::current_exe().ok()?;
    let path = state_path(&exe);
    let mut state = match read_state(&path) {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "upgrade state unreadable; removing it");
            let _ = std::fs::remove_file(&path);
            return None;
        }
    };
    match state.status {
        Status::Pending if same_version(&state.target_version, VERSION) => {
            state.status = Status::Confirmed;
            if let Err(e) = write_state(&path, &state) {
                tracing::warn!(error = %e, "cannot confirm the upgrade to the watchdog");
            }
            tracing::info!(
                from = state.previous_version,
                to = VERSION,
                "upgrade: the new version is connected"
            );
            Some(AgentMessage::UpgradeResponse(StatusResponse {
                status_code: 200,
                callback: state.callback,
            }))
        }
        Status::RolledBack => {
            let _ = std::fs::remove_file(&path);
            let reason = state
                .reason
                .unwrap_or_else(|| "the new version did not start".to_owned());
            Some(AgentMessage::error(
                format!(
                    "upgrade to {} rolled back: {reason}; running {} again",
                    state.target_version, VERSION
                ),
                state.callback,
            ))
        }
        // The watchdog's to decide (pending for another version, or not the version asked
        // for), or done (confirmed).
        Status::Pending | Status::WrongVersion | Status::Confirmed => None,
    }
}

/// The new version's first step, before it opens anything: when this process (`pid`, the
/// same before and after exec) is the new version of a pending upgrade but reports `version`
/// while the upgrade asked for another, it says so in the state file for the watchdog, which
/// rolls back at once with that reason (and the old version answers the request with it),
/// and returns the error to stop on. `Ok` in every other case.
///
/// # Errors
///
/// [`UpgradeError::WrongVersion`]: stop, without connecting.
pub(crate) fn check_started(path: &Path, pid: u32, version: &str) -> Result<(), UpgradeError> {
    let mut state = match read_state(path) {
        Ok(Some(s)) => s,
        // None pending; an unreadable state is `outcome`'s to clear.
        Ok(None) | Err(_) => return Ok(()),
    };
    if state.status != Status::Pending
        || state.pid != pid
        || same_version(&state.target_version, version)
    {
        return Ok(());
    }
    let wrong = UpgradeError::WrongVersion {
        registered: bare(&state.target_version).to_owned(),
        reports: version.to_owned(),
    };
    tracing::error!(error = %wrong, "upgrade: not the version asked for; rolling back");
    state.status = Status::WrongVersion;
    state.reason = Some(wrong.to_string());
    write_state(path, &state)?;
    Err(wrong)
}

/// [`check_started`] for this process's executable and version.
pub(crate) fn check_this_process() -> Result<(), UpgradeError> {
    let Ok(exe) = std::env::current_exe() else {
        return Ok(());
    };
    check_started(&state_path(&exe), std::process::id(), VERSION)
}

/// `outpost agent upgrade-watchdog STATE`: waits until the new version confirms, its deadline
/// passes or its process dies; in the two last cases kills it, puts the old executable back and
/// says to run it.
///
/// # Errors
///
/// [`UpgradeError::State`] when the state file cannot be read, [`UpgradeError::Replace`] when
/// the old executable cannot be put back.
pub fn watch(state_path: &Path) -> Result<Watch, UpgradeError> {
    let missing = || UpgradeError::State {
        path: state_path.to_owned(),
        why: "no such file".to_owned(),
    };
    let mut state = read_state(state_path)?.ok_or_else(missing)?;
    let reason = loop {
        match state.status {
            Status::Confirmed => {
                let _ = std::fs::remove_file(state_path);
                return Ok(Watch::Confirmed);
            }
            Status::RolledBack => return Ok(Watch::Confirmed),
            Status::WrongVersion => {
                break state
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the new version is not the one asked for".to_owned());
            }
            Status::Pending => {}
        }
        if now_ms() >= state.deadline_ms {
            break "the new version did not reach the relay in time".to_owned();
        }
        if !alive(state.pid) {
            break "the new version exited".to_owned();
        }
        std::thread::sleep(WATCH_PERIOD);
        state = read_state(state_path)?.ok_or_else(missing)?;
    };
    if alive(state.pid) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &state.pid.to_string()])
            .status();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while alive(state.pid) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::fs::rename(&state.backup, &state.exe).map_err(|source| UpgradeError::Replace {
        step: "put back",
        path: state.exe.clone(),
        source,
    })?;
    sync_dir(&state.exe);
    tracing::warn!(
        to = state.target_version,
        back_to = state.previous_version,
        reason,
        "upgrade rolled back"
    );
    state.status = Status::RolledBack;
    state.reason = Some(reason);
    write_state(state_path, &state)?;
    Ok(Watch::RolledBack(Restart {
        exe: state.exe,
        argv: state.argv,
    }))
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // `pid (comm) S ...`: the state follows the last `)`.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        !matches!(state, None | Some('Z' | 'X' | 'x'))
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_without_prefix() {
        assert!(same_version("outpost-agent-0.2.0", "0.2.0"));
        assert!(same_version("v0.2.0", "0.2.0"));
        assert!(!same_version("0.2.0", "0.2.1"));
    }

    #[test]
    fn files_beside_the_executable() {
        let exe = Path::new("/opt/outpost/bin/outpost");
        assert_eq!(
            state_path(exe),
            Path::new("/opt/outpost/bin/outpost.upgrade.json")
        );
        assert_eq!(
            backup_path(exe),
            Path::new("/opt/outpost/bin/outpost.previous")
        );
    }

    #[test]
    fn this_process_is_alive() {
        assert!(alive(std::process::id()));
    }

    fn scratch(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "outpost-upgrade-{label}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_written_is_refused_before_anything_is_downloaded() {
        let tls = crate::tls::client_config(None).unwrap();
        // Nothing listens there: the refusal must come first.
        let client = RelayClient::new("http://127.0.0.1:9/", "c", "s", tls).unwrap();
        let dir = std::env::temp_dir().join("outpost-upgrade-no-such-dir");
        let err = download(&client, "b1", &"0".repeat(64), &dir.join("tmp"), &dir)
            .await
            .unwrap_err();
        assert!(matches!(err, UpgradeError::NotWritable { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("cannot write beside the executable")
        );
    }

    #[test]
    fn the_watchdog_puts_the_old_executable_back_when_the_new_process_is_gone() {
        let dir = scratch("watch");
        let exe = dir.join("outpost");
        std::fs::write(&exe, b"new").unwrap();
        std::fs::write(backup_path(&exe), b"old").unwrap();
        // A process that has exited (and been reaped).
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        let state = State {
            status: Status::Pending,
            previous_version: "outpost-agent-0.1.0".into(),
            target_version: "0.2.0".into(),
            callback: Some("cb".into()),
            exe: exe.clone(),
            backup: backup_path(&exe),
            argv: vec!["outpost".into(), "agent".into()],
            pid,
            deadline_ms: now_ms() + 60_000,
            reason: None,
        };
        let path = state_path(&exe);
        write_state(&path, &state).unwrap();
        let Watch::RolledBack(restart) = watch(&path).unwrap() else {
            panic!("not rolled back")
        };
        assert_eq!(restart.executable(), exe);
        assert_eq!(std::fs::read(&exe).unwrap(), b"old");
        assert!(!backup_path(&exe).exists());
        let after = read_state(&path).unwrap().unwrap();
        assert_eq!(after.status, Status::RolledBack);
        assert_eq!(after.reason.as_deref(), Some("the new version exited"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_new_version_that_is_not_the_one_asked_for_is_rolled_back_at_once_with_the_reason() {
        let dir = scratch("wrong-version");
        let exe = dir.join("outpost");
        std::fs::write(&exe, b"new").unwrap();
        std::fs::write(backup_path(&exe), b"old").unwrap();
        // The new process: alive, and would stay so past the test.
        let mut new = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let state = State {
            status: Status::Pending,
            previous_version: "outpost-agent-0.1.0".into(),
            target_version: "0.3.0".into(),
            callback: Some("cb".into()),
            exe: exe.clone(),
            backup: backup_path(&exe),
            argv: vec!["outpost".into(), "agent".into()],
            pid: new.id(),
            // Far away: the rollback must not wait for it.
            deadline_ms: now_ms() + 3_600_000,
            reason: None,
        };
        let path = state_path(&exe);
        write_state(&path, &state).unwrap();
        // Another process, or the version asked for: nothing to say.
        check_started(&path, std::process::id(), "outpost-agent-0.2.0").unwrap();
        check_started(&path, new.id(), "outpost-agent-0.3.0").unwrap();
        assert_eq!(read_state(&path).unwrap().unwrap().status, Status::Pending);
        let err = check_started(&path, new.id(), "outpost-agent-0.2.0").unwrap_err();
        let reason = "the executable registered as 0.3.0 reports version outpost-agent-0.2.0";
        assert_eq!(err.to_string(), reason);
        let Watch::RolledBack(_) = watch(&path).unwrap() else {
            panic!("not rolled back")
        };
        assert!(
            new.wait().is_ok_and(|s| !s.success()),
            "the new process was killed"
        );
        assert_eq!(std::fs::read(&exe).unwrap(), b"old");
        let after = read_state(&path).unwrap().unwrap();
        assert_eq!(after.status, Status::RolledBack);
        assert_eq!(after.reason.as_deref(), Some(reason));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_watchdog_leaves_a_confirmed_upgrade_alone() {
        let dir = scratch("confirmed");
        let exe = dir.join("outpost");
        std::fs::write(&exe, b"new").unwrap();
        let state = State {
            status: Status::Confirmed,
            previous_version: "outpost-agent-0.1.0".into(),
            target_version: "0.2.0".into(),
            callback: None,
            exe: exe.clone(),
            backup: backup_path(&exe),
            argv: Vec::new(),
            pid: std::process::id(),
            deadline_ms: now_ms() + 60_000,
            reason: None,
        };
        let path = state_path(&exe);
        write_state(&path, &state).unwrap();
        assert!(matches!(watch(&path).unwrap(), Watch::Confirmed));
        assert!(!path.exists(), "the state is removed");
        assert_eq!(std::fs::read(&exe).unwrap(), b"new");
        let _ = std::fs::remove_dir_all(dir);
    }
}
