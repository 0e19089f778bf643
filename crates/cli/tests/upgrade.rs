//! `$upgrade` end to end: a relay (`outpost server`) and an agent running from a copy of the
//! `outpost` binary in a scratch directory. The new version is a second build of the same
//! sources whose reported version differs (`OUTPOST_BUILD_VERSION` at compile time, into its
//! own target directory; `OUTPOST_SECOND_BUILD` may name one built beforehand).
//!
//! - The operator uploads the second build as a Binary, registers the release, and the real
//!   `medplum agent upgrade --agentVersion` upgrades the agent: it replaces its executable,
//!   runs it, and `medplum agent status` reports the new version.
//! - A "new version" that exits at once (a shell script with the right SHA-256) is rolled
//!   back: the old executable is put back and reconnects with the old version. One that hangs
//!   is killed when the window passes, and rolled back the same way.
//! - A release that points at a build reporting another version is rolled back as soon as
//!   the new process starts, and the caller is told so.
//! - Refusals, with nothing replaced: a SHA-256 mismatch, a Binary that does not exist, the
//!   version already running without `force`, a version no release names.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Proc, medplum, outpost, relay_process, scratch};

const WAIT: Duration = Duration::from_secs(90);
/// Medplum's CLI takes only UUIDs for agent ids.
const AGENT: &str = "5b1e8a52-7d0c-4f4e-9c3a-2f6d1e0a9b7c";
const CALLER_SECRET: &str = "caller-secret-0123456";
const AGENT_SECRET: &str = "agent-secret-0123456";
/// What the second build reports.
const NEXT: &str = "outpost-agent-0.1.0-next";
/// What this build reports.
const CURRENT: &str = concat!("outpost-agent-", env!("CARGO_PKG_VERSION"));

fn bundle() -> Value {
    json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": CALLER_SECRET}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": AGENT_SECRET,
            "extension": [{"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
        {"resource": {"resourceType": "Agent", "id": AGENT, "name": "Lab", "status": "active"}},
    ]})
}

/// The second build of `outpost`, whose agent reports [`NEXT`]: built once per run.
fn second_build() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        if let Some(p) = std::env::var_os("OUTPOST_SECOND_BUILD") {
            return PathBuf::from(p);
        }
        // <target>/debug/outpost → <target>/second-build
        let target = Path::new(env!("CARGO_BIN_EXE_outpost"))
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("second-build");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(support::repo())
            .args(["build", "-p", "outpost", "--bin", "outpost"])
            .env("CARGO_TARGET_DIR", &target)
            .env("OUTPOST_BUILD_VERSION", NEXT);
        if std::env::var_os("CARGO_BUILD_JOBS").is_none() {
            cmd.env("CARGO_BUILD_JOBS", "1");
        }
        // A build has no sensible deadline; its output is read whole.
        let out = cmd.output().expect("cargo runs");
        assert!(
            out.status.success(),
            "the second build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("debug/outpost")
    })
}

fn sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A relay, and an agent running from a copy of this build in `dir/bin`.
struct Site {
    base: String,
    exe: PathBuf,
    /// Kept running for the test's length.
    _relay: Proc,
    agent: Proc,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    /// An agent process the watchdog started (after a rollback): killed at the end.
    restored: Option<u32>,
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(pid) = self.restored {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

impl Site {
    fn start(label: &str, window_ms: u64) -> Site {
        let dir = scratch(label);
        let (relay, base) = relay_process(&dir, &bundle(), &[]);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("outpost");
        std::fs::copy(env!("CARGO_BIN_EXE_outpost"), &exe).unwrap();
        let props = dir.join("agent.properties");
        std::fs::write(
            &props,
            format!(
                "baseUrl={base}\nclientId=agent\nclientSecret={AGENT_SECRET}\nagentId={AGENT}\ndataDir={}\nupgradeWindowMs={window_ms}\n",
                dir.join("agent").display()
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["agent", "--config"])
            .arg(&props)
            .env("RUST_LOG", "info");
        let mut agent = Proc::spawn("outpost agent", cmd);
        agent.wait_for("Connected to the relay.", WAIT);
        let site = Site {
            base,
            exe,
            _relay: relay,
            agent,
            http: reqwest::Client::new(),
            rt: tokio::runtime::Runtime::new().unwrap(),
            restored: None,
        };
        site.wait_version(CURRENT);
        site
    }

    /// Uploads `bytes` as an agent executable; the Binary's id.
    fn upload(&self, bytes: Vec<u8>) -> String {
        let url = format!("{}fhir/R4/Binary", self.base);
        let body: Value = self.rt.block_on(async {
            let r = self
                .http
                .post(&url)
                .basic_auth("caller", Some(CALLER_SECRET))
                .header("content-type", relay::AGENT_EXECUTABLE)
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json().await.unwrap()
        });
        body["id"].as_str().unwrap().to_owned()
    }

    /// Registers release `version` as Binary `binary` with `sha`.
    fn register(&self, version: &str, binary: &str, sha: &str) {
        let doc = json!({"resourceType": "DocumentReference", "id": format!("agent-{}", version.replace('.', "-")),
            "status": "current",
            "identifier": [{"system": relay::RELEASE_SYSTEM, "value": version}],
            "content": [{"attachment": {"url": format!("Binary/{binary}"), "contentType": relay::AGENT_EXECUTABLE,
                "extension": [{"url": relay::SHA256_EXTENSION, "valueString": sha}]}}]});
        let url = format!(
            "{}fhir/R4/DocumentReference/{}",
            self.base,
            doc["id"].as_str().unwrap()
        );
        self.rt.block_on(async {
            let r = self
                .http
                .put(&url)
                .basic_auth("caller", Some(CALLER_SECRET))
                .header("content-type", "application/fhir+json")
                .body(doc.to_string())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        });
    }

    /// `outpost fleet ARGS` against the relay: (exit code, stdout, stderr).
    fn fleet(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = outpost();
        cmd.arg("fleet")
            .args(args)
            .args(["--base-url", &self.base, "--client-id", "caller"])
            .env("MEDPLUM_CLIENT_SECRET", CALLER_SECRET);
        support::run("outpost fleet", cmd, WAIT)
    }

    /// The real `medplum ARGS` against the relay.
    fn medplum(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = medplum();
        cmd.args(args).args([
            "--base-url",
            &self.base,
            "--client-id",
            "caller",
            "--client-secret",
            CALLER_SECRET,
        ]);
        support::run(&format!("medplum {}", args.join(" ")), cmd, WAIT)
    }

    /// Waits until `medplum agent status` reports the agent connected with `version` (the
    /// relay learns it from the agent's heartbeat).
    fn wait_version(&self, version: &str) {
        self.rt.block_on(support::wait_until(
            &format!("the agent connected with version {version}"),
            WAIT,
            || {
                let (_, out, err) = self.medplum(&["agent", "status", AGENT, "--output", "json"]);
                // Shown when the wait fails.
                eprintln!("medplum agent status: {out}{err}");
                let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
                let row = v
                    .as_array()
                    .or_else(|| v["entry"].as_array())
                    .cloned()
                    .unwrap_or_default();
                let text = serde_json::to_string(&row).unwrap_or_default();
                let hit =
                    text.contains(&format!("\"{version}\"")) && text.contains("\"connected\"");
                async move { hit.then_some(()) }
            },
        ));
    }

    /// Files in the executable's directory.
    fn bin_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.exe.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

#[test]
fn medplum_agent_upgrade_replaces_the_agent_and_it_reports_the_new_version() {
    let next = std::fs::read(second_build()).unwrap();
    let site = Site::start("upgrade-ok", 60_000);
    let pid = site.agent.child.id();
    let old = std::fs::read(&site.exe).unwrap();
    assert_ne!(sha256(&old), sha256(&next), "two different builds");

    let id = site.upload(next.clone());
    site.register("0.1.0-next", &id, &sha256(&next));

    // The real Medplum CLI: `GET Agent/$upgrade?_id=...&version=0.1.0-next`. The relay answers
    // once the new version is connected and has said so.
    let (code, out, err) = site.medplum(&[
        "agent",
        "upgrade",
        AGENT,
        "--agentVersion",
        "0.1.0-next",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("All OK"), "{out}");
    assert!(!out.contains("\"error\""), "{out}");
    site.wait_version(NEXT);

    // The executable was replaced in place (same pid: exec), the old one kept as a backup.
    assert_eq!(std::fs::read(&site.exe).unwrap(), next);
    let backup = site.exe.with_file_name("outpost.previous");
    assert_eq!(sha256(&std::fs::read(&backup).unwrap()), sha256(&old));
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .contains("agent.properties"),
        "the same process, with the same arguments"
    );

    // The version it runs, again: refused without force, nothing touched.
    let (code, out, err) = site.fleet(&["upgrade", AGENT, "--version", "0.1.0-next"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("already running version"), "{out}");
    assert_eq!(std::fs::read(&site.exe).unwrap(), next);
}

#[test]
fn a_new_version_that_does_not_connect_is_rolled_back() {
    let mut site = Site::start("upgrade-rollback", 30_000);
    let old = std::fs::read(&site.exe).unwrap();
    let script = b"#!/bin/sh\necho 'broken build'\nexit 3\n".to_vec();
    let id = site.upload(script.clone());
    let sha = sha256(&script);

    // `outpost fleet upgrade` naming the Binary directly: the agent installs the script and
    // runs it; it exits at once, the watchdog puts the old executable back and runs it, and
    // that one answers the request with the reason.
    let (code, out, err) = site.fleet(&[
        "upgrade",
        AGENT,
        "--version",
        "9.9.9",
        "--binary",
        &id,
        "--sha256",
        &sha,
    ]);
    let line = site.agent.wait_for("Upgrade rolled back: running ", WAIT);
    site.restored = line
        .rsplit("(pid ")
        .next()
        .and_then(|p| p.trim_end_matches(')').parse().ok());
    assert!(site.restored.is_some(), "{line}");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("rolled back"), "{out}");
    assert!(out.contains("the new version exited"), "{out}");

    site.wait_version(CURRENT);
    assert_eq!(
        std::fs::read(&site.exe).unwrap(),
        old,
        "the old executable is back"
    );
    assert_eq!(
        site.bin_files(),
        ["outpost"],
        "no backup, state or temporary file left"
    );
}

#[test]
fn a_new_version_that_hangs_is_stopped_when_the_window_passes_and_rolled_back() {
    let mut site = Site::start("upgrade-hang", 3_000);
    let pid = site.agent.child.id();
    let old = std::fs::read(&site.exe).unwrap();
    // Starts, never connects, never exits.
    let script = b"#!/bin/sh\nexec sleep 600\n".to_vec();
    let id = site.upload(script.clone());
    let sha = sha256(&script);

    let (code, out, err) = site.fleet(&[
        "upgrade",
        AGENT,
        "--version",
        "9.9.9",
        "--binary",
        &id,
        "--sha256",
        &sha,
    ]);
    let line = site.agent.wait_for("Upgrade rolled back: running ", WAIT);
    site.restored = line
        .rsplit("(pid ")
        .next()
        .and_then(|p| p.trim_end_matches(')').parse().ok());
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("the new version did not reach the relay in time"),
        "{out}"
    );
    // The hung process was stopped (the test's child: it can be reaped).
    let status = site.agent.child.wait().unwrap();
    assert!(!status.success(), "killed: {status:?} (pid {pid})");
    site.wait_version(CURRENT);
    assert_eq!(std::fs::read(&site.exe).unwrap(), old);
    assert_eq!(site.bin_files(), ["outpost"]);
}

/// A release registered as 0.3.0 that points at another build (this one): the new process
/// sees at once that it is not the version asked for and stops; the watchdog rolls back without
/// waiting for the window (60 s here, longer than the relay's wait), and the old version
/// answers the caller with the true reason.
#[test]
fn a_new_version_that_reports_another_version_is_rolled_back_at_once_with_the_reason() {
    let mut site = Site::start("upgrade-wrong-version", 60_000);
    let old = std::fs::read(&site.exe).unwrap();
    let id = site.upload(old.clone());
    site.register("0.3.0", &id, &sha256(&old));

    let (code, out, err) = site.fleet(&["upgrade", AGENT, "--version", "0.3.0"]);
    let line = site.agent.wait_for("Upgrade rolled back: running ", WAIT);
    site.restored = line
        .rsplit("(pid ")
        .next()
        .and_then(|p| p.trim_end_matches(')').parse().ok());
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("rolled back"), "{out}");
    assert!(
        out.contains(&format!(
            "the executable registered as 0.3.0 reports version {CURRENT}"
        )),
        "{out}"
    );
    site.wait_version(CURRENT);
    assert_eq!(site.bin_files(), ["outpost"]);
}

/// With the defaults, a new version that hangs is rolled back and the old one has reconnected
/// and answered why before the relay stops waiting for the answer.
#[test]
fn the_default_window_ends_well_before_the_relay_stops_waiting() {
    let window = agent_core::AgentConfig::default().upgrade_window;
    // Time for the watchdog to put the old executable back, start it, log in, connect.
    let restart = Duration::from_secs(10);
    assert!(
        window + restart <= relay::UPGRADE_TIMEOUT,
        "upgradeWindowMs {window:?} + {restart:?} > the relay's wait {:?}",
        relay::UPGRADE_TIMEOUT
    );
}

#[test]
fn refusals_leave_the_executable_alone() {
    let site = Site::start("upgrade-refused", 60_000);
    let old = std::fs::read(&site.exe).unwrap();
    let payload = b"#!/bin/sh\nexit 0\n".to_vec();
    let id = site.upload(payload.clone());

    // A SHA-256 that does not match what the relay serves.
    let wrong = "0".repeat(64);
    let (code, out, err) = site.fleet(&[
        "upgrade",
        AGENT,
        "--version",
        "9.9.9",
        "--binary",
        &id,
        "--sha256",
        &wrong,
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("sha256 mismatch"), "{out}");
    assert!(out.contains(&sha256(&payload)), "{out}");

    // A Binary that does not exist.
    let sha = sha256(&payload);
    let (code, out, err) = site.fleet(&[
        "upgrade",
        AGENT,
        "--version",
        "9.9.9",
        "--binary",
        "no-such-binary",
        "--sha256",
        &sha,
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("Binary/no-such-binary not found"), "{out}");

    // The version it runs, without force.
    let (code, out, err) = site.fleet(&[
        "upgrade",
        AGENT,
        "--version",
        env!("CARGO_PKG_VERSION"),
        "--binary",
        &id,
        "--sha256",
        &sha,
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("already running version"), "{out}");

    // A version no release names: the relay refuses before asking the agent (Medplum's CLI).
    let (code, out, err) = site.medplum(&[
        "agent",
        "upgrade",
        AGENT,
        "--agentVersion",
        "7.7.7",
        "--output",
        "json",
    ]);
    assert!(
        out.contains("no agent release registered for version 7.7.7"),
        "{code}\n{out}\n{err}"
    );

    assert_eq!(std::fs::read(&site.exe).unwrap(), old);
    assert_eq!(site.bin_files(), ["outpost"], "nothing written beside it");
    // Still the same agent, still connected.
    site.wait_version(CURRENT);
}
