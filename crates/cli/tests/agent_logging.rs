//! The agent's logging as Medplum users configure it: `logLevel` decides what reaches stderr;
//! `logger.main.logDir` adds rotating files (`maxFileSizeMb`, `filesToKeep`) that `$fetch-logs`
//! reads, so lines from before a restart come back; Medplum's positional form
//! `outpost agent BASE_URL CLIENT_ID CLIENT_SECRET AGENT_ID [LOG_LEVEL]`; and the default data
//! directory, which is per-user and never the current directory.
//!
//! The sizes: Medplum's `maxFileSizeMb` is whole megabytes; Outpost also takes a decimal, so
//! these tests rotate at 0.001 MB (1049 bytes) instead of writing megabytes of lines.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::{Proc, outpost, run, scratch};
use test_support::relay::{AGENT, AGENT_CLIENT, AGENT_SECRET, CALLER, CALLER_SECRET};

const WAIT: Duration = Duration::from_secs(60);

/// An in-process relay whose Agent has one MLLP channel on a port of the agent's choosing.
fn relay(rt: &tokio::runtime::Runtime) -> relay::Relay {
    rt.block_on(async {
        let relay = test_support::relay::start().await;
        let registry = relay.registry();
        registry
            .put(json!({"resourceType": "Endpoint", "id": "in0", "status": "active", "address": "mllp://127.0.0.1:0"}))
            .await
            .unwrap();
        registry
            .put(json!({"resourceType": "Agent", "id": AGENT, "name": "Lab agent", "status": "active",
                "channel": [{"name": "in", "endpoint": {"reference": "Endpoint/in0"}}]}))
            .await
            .unwrap();
        relay
    })
}

/// `agent.properties` in `dir` with the four required keys, `dataDir` and `extra` lines.
fn properties(dir: &Path, base: &str, extra: &str) -> PathBuf {
    let path = dir.join("agent.properties");
    std::fs::write(
        &path,
        format!(
            "baseUrl={base}\nclientId={AGENT_CLIENT}\nclientSecret={AGENT_SECRET}\nagentId={AGENT}\ndataDir={}\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// `outpost agent --config props`, with no `RUST_LOG` (the settings decide), connected.
fn agent(name: &str, props: &Path) -> Proc {
    let mut cmd = outpost();
    cmd.env_remove("RUST_LOG")
        .args(["agent", "--config"])
        .arg(props);
    let mut agent = Proc::spawn(name, cmd);
    agent.wait_for("Connected to the relay.", WAIT);
    agent
}

/// Stops `agent` with SIGTERM, as a service manager does, and waits for it to exit.
fn stop(mut agent: Proc) {
    let (code, out, err) = run(
        "kill",
        {
            let mut kill = std::process::Command::new("kill");
            kill.args(["-TERM", &agent.pid().to_string()]);
            kill
        },
        WAIT,
    );
    assert_eq!(code, 0, "{out}{err}");
    agent.child.wait().unwrap();
}

/// The agent's stderr lines in `output`.
fn stderr_lines(output: &str) -> Vec<&str> {
    output.lines().filter(|l| l.contains(" stderr] ")).collect()
}

/// `$fetch-logs` through the relay: the log lines' text.
fn fetch_logs(rt: &tokio::runtime::Runtime, base: &str, limit: u32) -> String {
    rt.block_on(async {
        let resp = test_support::relay::call(
            test_support::relay::client()
                .get(format!(
                    "{base}fhir/R4/Agent/{AGENT}/$fetch-logs?limit={limit}"
                ))
                .basic_auth(CALLER, Some(CALLER_SECRET)),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        resp.json["parameter"][0]["valueString"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    })
}

#[test]
fn log_level_from_the_properties_file_decides_what_reaches_stderr() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = relay(&rt);
    let base = relay.base_url();
    for (level, shown, hidden) in [
        ("WARN", None, [" INFO ", " DEBUG "]),
        ("INFO", Some(" INFO "), [" DEBUG ", " TRACE "]),
        ("NONE", None, [" INFO ", " WARN "]),
    ] {
        let dir = scratch(&format!("loglevel-{level}"));
        let props = properties(&dir, &base, &format!("logLevel={level}\n"));
        let mut agent = agent(&format!("outpost agent (logLevel={level})"), &props);
        agent.channel_port("in", WAIT);
        let output = agent.output(Duration::from_millis(500));
        let lines = stderr_lines(&output);
        if let Some(shown) = shown {
            assert!(
                lines.iter().any(|l| l.contains(shown)),
                "logLevel={level}: no {shown} line:\n{output}"
            );
        }
        for hidden in hidden {
            assert!(
                !lines.iter().any(|l| l.contains(hidden)),
                "logLevel={level}: a {hidden} line:\n{output}"
            );
        }
        if level == "NONE" {
            assert!(lines.is_empty(), "logLevel=NONE: stderr\n{output}");
        }
        stop(agent);
    }
    rt.block_on(relay.shutdown());
}

#[test]
fn medplum_positional_form_with_a_log_level_and_the_per_user_data_dir() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = relay(&rt);
    let base = relay.base_url();
    let cwd = scratch("positional-cwd");
    let state = scratch("positional-state");
    // --help names the per-user default.
    let mut help = outpost();
    help.env("XDG_STATE_HOME", &state).args(["agent", "--help"]);
    let (code, out, err) = run("outpost agent --help", help, WAIT);
    assert_eq!(code, 0, "{err}");
    let default = state.join("outpost").join("agent");
    assert!(
        out.contains(&format!("per-user state directory: {}", default.display())),
        "{out}"
    );
    // Medplum's Docker image: the four values and a level, no flags, no properties file.
    let mut cmd = outpost();
    cmd.env_remove("RUST_LOG")
        .env_remove("MEDPLUM_CLIENT_SECRET")
        .env("XDG_STATE_HOME", &state)
        .current_dir(&cwd)
        .args(["agent", &base, AGENT_CLIENT, AGENT_SECRET, AGENT, "DEBUG"]);
    let mut agent = Proc::spawn("outpost agent (positional)", cmd);
    agent.wait_for("Connected to the relay.", WAIT);
    assert!(
        agent
            .wait_for("settings from the command line", WAIT)
            .contains(&base)
    );
    agent.channel_port("in", WAIT);
    let output = agent.output(Duration::from_millis(500));
    assert!(
        stderr_lines(&output).iter().any(|l| l.contains(" DEBUG ")),
        "LOG_LEVEL DEBUG: no DEBUG line on stderr:\n{output}"
    );
    // The queue is in the per-user state directory; nothing was written where it was started.
    assert!(default.join("agent-queue.sqlite").is_file(), "{output}");
    assert_eq!(
        std::fs::read_dir(&cwd).unwrap().count(),
        0,
        "the current directory is left alone"
    );
    stop(agent);
    // A level Medplum does not know is refused before anything starts.
    let mut cmd = outpost();
    cmd.env("XDG_STATE_HOME", &state).args([
        "agent",
        &base,
        AGENT_CLIENT,
        AGENT_SECRET,
        AGENT,
        "LOUD",
    ]);
    let (code, _, err) = run("outpost agent (bad level)", cmd, WAIT);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("LOG_LEVEL: not a log level: LOUD"), "{err}");
    rt.block_on(relay.shutdown());
}

#[test]
fn log_dir_gets_rotating_files_that_fetch_logs_reads_across_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = relay(&rt);
    let base = relay.base_url();
    let dir = scratch("logdir");
    let logs = dir.join("logs");
    let props = properties(
        &dir,
        &base,
        &format!(
            "logger.main.logDir={}\nlogger.main.maxFileSizeMb=0.001\nlogger.main.filesToKeep=4\n",
            logs.display()
        ),
    );
    // Two runs of the agent, each saying where it logs (and what else it does at INFO).
    for run in ["first", "second"] {
        let mut agent = agent(&format!("outpost agent ({run} run)"), &props);
        agent.channel_port("in", WAIT);
        if run == "second" {
            // Before the second run stops: $fetch-logs has lines of both runs, newest first.
            let text = fetch_logs(&rt, &base, 1000);
            assert!(
                text.matches("logging to a file").count() >= 2,
                "lines from before the restart are missing:\n{text}"
            );
            // And a limit is a limit.
            let two = fetch_logs(&rt, &base, 2);
            assert_eq!(two.lines().count(), 2, "{two}");
        }
        stop(agent);
    }
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(
        names.len() >= 2 && names.len() <= 4,
        "rotated by size, at most filesToKeep=4 files: {names:?}"
    );
    assert_eq!(names[0], "outpost-agent-main.log");
    for name in &names {
        let len = std::fs::metadata(logs.join(name)).unwrap().len();
        // A file is rotated once a line takes it past 1049 bytes.
        assert!(len < 1049 + 1024, "{name}: {len} bytes");
        for line in std::fs::read_to_string(logs.join(name)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not a JSON line ({e}): {line}"));
            assert!(v["level"].is_string() && v["msg"].is_string() && v["timestamp"].is_string());
        }
    }
    rt.block_on(relay.shutdown());
}
