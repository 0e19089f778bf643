//! After the swap: the new version confirming itself to the watchdog (or stopping when it is
//! not the version asked for), and the watchdog putting the old executable back when the new
//! one does not reach the relay in time.

use std::path::Path;
use std::time::Duration;

use super::{
    Restart, Status, UpgradeError, VERSION, Watch, bare, now_ms, read_state, same_version,
    state_path, sync_dir, write_state,
};

/// How often the watchdog looks at the state file and the new process.
const WATCH_PERIOD: Duration = Duration::from_millis(200);

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
    use std::path::PathBuf;

    use super::super::{State, backup_path};
    use super::*;

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
