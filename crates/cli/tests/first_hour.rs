//! What a new user hit in the first hour (issue 23): flags silently ignored, answers that said
//! less than they seemed to, errors that hid their cause. Each test runs the binary and checks
//! stdout, stderr and the exit code.

mod support;

use std::time::Duration;

use support::{outpost, run, scratch};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn agent_flag_disagreeing_with_an_implicit_properties_file_is_refused() {
    let dir = scratch("implicit-props");
    std::fs::write(
        dir.join("agent.properties"),
        "baseUrl=http://127.0.0.1:9/\nclientId=agent\nclientSecret=file-secret\nagentId=file-agent\n",
    )
    .unwrap();
    let mut cmd = outpost();
    cmd.current_dir(&dir)
        .args(["agent", "--agent-id", "flag-agent"]);
    let (code, out, err) = run("outpost agent", cmd, WAIT);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--agent-id flag-agent disagrees with agentId=file-agent")
            && err.contains("agent.properties"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");

    // A secret is never echoed, even when it disagrees.
    let mut cmd = outpost();
    cmd.current_dir(&dir)
        .args(["agent", "--client-secret", "flag-secret"]);
    let (code, out, err) = run("outpost agent", cmd, WAIT);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--client-secret differs from clientSecret"),
        "{err}"
    );
    assert!(
        !err.contains("file-secret") && !err.contains("flag-secret"),
        "{err}"
    );
}

#[test]
fn a_bootstrap_device_with_an_unknown_scheme_stops_the_relay_naming_it() {
    let dir = scratch("bootstrap-scheme");
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Agent", "id": "a", "name": "A", "status": "active"}},
        {"resource": {"resourceType": "Device", "id": "lis", "url": "mlp://127.0.0.1:56000"}},
    ]});
    std::fs::write(dir.join("bundle.json"), bundle.to_string()).unwrap();
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(dir.join("bundle.json"));
    let (code, out, err) = run("outpost server", cmd, WAIT);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("bundle.json")
            && err.contains("Device/lis: url \"mlp://127.0.0.1:56000\": unknown scheme mlp://"),
        "{err}"
    );
    assert!(!out.contains("Relay listening"), "{out}");
}
