//! The console end to end in headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven by Python selenium; `scripts/peers.sh ensure_chromium`): log in, see the agent
//! connected, push an HL7 message from the agent page and see the device's ACK, see a message
//! sent with `medplum hl7 send` appear in the list live, resend it, and see the agent turn red
//! when it goes silent, within its heartbeat window. The steps are in `console_browser.py`; it
//! saves a screenshot of each page under `target/console-screenshots/`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Proc, ack_device, outpost, relay_process, repo, scratch};

const WAIT: Duration = Duration::from_secs(60);
const AGENT: &str = "site-a";
const OPERATOR_SECRET: &str = "operator-secret-0123456";
const HEARTBEAT_SECS: u64 = 1;

fn bundle(device_port: u16) -> Value {
    json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "operator", "secret": OPERATOR_SECRET}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
        {"resource": {"resourceType": "Agent", "id": AGENT, "name": "Main lab", "status": "active",
            "identifier": [{"system": "urn:site", "value": "lab-main"}],
            "channel": [{"name": "adt-in", "endpoint": {"reference": "Endpoint/adt-in"}}]}},
        {"resource": {"resourceType": "Agent", "id": "site-b", "name": "Ward", "status": "active"}},
        {"resource": {"resourceType": "Endpoint", "id": "adt-in", "status": "active", "address": "mllp://127.0.0.1:0"}},
        {"resource": {"resourceType": "Device", "id": "lab-device", "url": format!("mllp://127.0.0.1:{device_port}")}},
    ]})
}

#[test]
fn the_console_in_chromium() {
    let python = std::env::var("OUTPOST_SELENIUM_PYTHON").unwrap_or_else(|_| {
        repo()
            .join(".tools/python/selenium/bin/python")
            .display()
            .to_string()
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "selenium is not installed at {python}: run scripts/test, which installs it"
    );
    let dir = scratch("console-browser");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let device = rt.block_on(ack_device("127.0.0.1:0", seen.clone()));
    let heartbeat = HEARTBEAT_SECS.to_string();
    let (_relay, base) = relay_process(
        &dir,
        &bundle(device.local_addr().port()),
        &["--heartbeat-secs", &heartbeat],
    );
    let mut cmd = outpost();
    cmd.args(["agent", "--base-url", &base, "--client-id", "agent"])
        .args([
            "--client-secret",
            "agent-secret-0123456",
            "--agent-id",
            AGENT,
        ])
        .arg("--data-dir")
        .arg(dir.join("agent"))
        .env("RUST_LOG", "info");
    let mut agent = Proc::spawn("outpost agent", cmd);
    let channel_port = agent.channel_port("adt-in", WAIT);
    agent.wait_for("Connected to the relay.", WAIT);

    let shots = repo().join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let medplum = support::medplum();
    let medplum_home = medplum
        .get_envs()
        .find(|(k, _)| *k == "HOME")
        .and_then(|(_, v)| v.map(std::path::PathBuf::from))
        .unwrap();
    let mut browser = std::process::Command::new(python);
    browser
        .arg(repo().join("crates/cli/tests/console_browser.py"))
        .env("CONSOLE_URL", &base)
        .env("OPERATOR_ID", "operator")
        .env("OPERATOR_SECRET", OPERATOR_SECRET)
        .env("AGENT_ID", AGENT)
        .env("AGENT_PID", agent.pid().to_string())
        .env("CHANNEL_PORT", channel_port.to_string())
        .env("MEDPLUM_CLI", medplum.get_program())
        .env("MEDPLUM_HOME", medplum_home)
        .env("HEARTBEAT_SECS", &heartbeat)
        .env("SCREENSHOTS", &shots);
    let (code, out, err) = support::run("console_browser.py", browser, Duration::from_secs(240));
    // Let the stopped agent go before anything else fails.
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &agent.pid().to_string()])
        .status();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.ends_with("OK\n"), "{out}\n{err}");
    // The device got the push the browser made, once.
    let pushed = out
        .lines()
        .find_map(|l| l.strip_prefix("pushed control id "))
        .unwrap_or_else(|| panic!("no control id in {out}"));
    assert_eq!(
        *seen.lock().unwrap(),
        [pushed.to_owned()],
        "what the device received"
    );
    for page in [
        "login",
        "fleet",
        "agent-push",
        "messages",
        "message",
        "pushes",
        "charts",
        "fleet-disconnected",
    ] {
        let png = std::fs::read(shots.join(format!("{page}.png")))
            .unwrap_or_else(|e| panic!("no screenshot of {page}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{page}.png is not a PNG");
    }
}
