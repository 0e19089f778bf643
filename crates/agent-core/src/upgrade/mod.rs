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
//!
//! This file installs the new executable and keeps the state file; `watch.rs` holds what
//! follows the restart (the new version's confirmation, the watchdog's rollback).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_protocol::UpgradeRequest;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::{Error, RelayClient, VERSION};

mod watch;

pub use watch::watch;
pub(crate) use watch::{check_this_process, outcome};

/// Largest executable an upgrade downloads.
pub const MAX_EXECUTABLE: u64 = 512 << 20;

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
}
