//! Child processes: the `outpost` binary (the test crate names its path), peers such as the
//! `medplum` CLI, run to completion or kept running with their output read line by line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real `medplum` CLI from npm, as installed by `scripts/peers.sh`.
pub fn medplum() -> Command {
    let path = std::env::var_os("MEDPLUM_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/node/node_modules/.bin/medplum"));
    assert!(
        path.exists(),
        "the medplum CLI is not installed at {}: run scripts/test, which installs it",
        path.display()
    );
    let mut c = Command::new(path);
    // The CLI keeps its login in ~/.medplum: give every invocation its own, out of the user's.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let home =
        std::env::temp_dir().join(format!("outpost-medplum-home-{}-{n}", std::process::id()));
    let _ = std::fs::create_dir_all(&home);
    c.env("HOME", home);
    c
}

/// A fresh scratch directory under the system's temporary directory.
pub fn scratch(label: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("outpost-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running process whose stdout lines are collected; killed when dropped.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    name: String,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        // An executable the test has just copied can be "busy" for a moment: another test
        // thread's fork holds the copy's file descriptor until its exec closes it (ETXTBSY).
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(26) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("cannot start {name}: {e}"),
            }
        };
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let label = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("[{label} stderr] {line}"));
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Waits for a stdout line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no line containing {needle:?} within {timeout:?}; output so far:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The base URL an `outpost server` started with `--listen 127.0.0.1:0` printed
    /// (`Relay listening on http://127.0.0.1:PORT/`): the port the relay bound itself.
    pub fn listening_url(&mut self, timeout: Duration) -> String {
        let line = self.wait_for("Relay listening on ", timeout);
        line.rsplit(' ')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The port `outpost agent` printed for its channel `name` (`Channel NAME listening on
    /// ADDR`): channels given port 0 bind a free one and say which.
    pub fn channel_port(&mut self, name: &str, timeout: Duration) -> u16 {
        let line = self.wait_for(&format!("Channel {name} listening on "), timeout);
        line.rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no port in {line:?}", self.name))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far (waits `settle` for stragglers).
    pub fn output(&mut self, settle: Duration) -> String {
        let deadline = Instant::now() + settle;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion with a time limit; returns (exit code, stdout, stderr).
pub fn run(name: &str, mut cmd: Command, timeout: Duration) -> (i32, String, String) {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
