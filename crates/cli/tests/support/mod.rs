//! The CLI tests' helpers: the `test-support` crate, plus what only this crate's tests can
//! name (the path of the `outpost` binary under test).
#![allow(dead_code, unused_imports)] // each test file uses a different subset

pub use test_support::process::scratch;
pub use test_support::{
    ClosedPort, Proc, ack_device, medplum, port_for_peer, repo, run, services, token, wait_until,
};

/// The `outpost` binary under test.
pub fn outpost() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"));
    c.env("RUST_LOG", "warn");
    c
}

/// `outpost server` on a port of its choosing, bootstrapped from `bundle` (written to
/// `dir/bundle.json`, data in `dir/relay`), with `extra` flags; returns it and its base URL.
pub fn relay_process(
    dir: &std::path::Path,
    bundle: &serde_json::Value,
    extra: &[&str],
) -> (Proc, String) {
    relay_process_with(outpost(), dir, bundle, extra)
}

/// [`relay_process`] run by `cmd`: [`outpost`] with another environment, or a program that
/// runs it.
pub fn relay_process_with(
    mut cmd: std::process::Command,
    dir: &std::path::Path,
    bundle: &serde_json::Value,
    extra: &[&str],
) -> (Proc, String) {
    std::fs::write(dir.join("bundle.json"), bundle.to_string()).unwrap();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(dir.join("bundle.json"))
        .args(extra);
    let mut p = Proc::spawn("outpost server", cmd);
    let base = p.listening_url(std::time::Duration::from_secs(60));
    (p, base)
}

/// `outpost agent` logging at info, its settings as flags: the relay at `base`, the credentials
/// `(client_id, secret)`, Agent `agent_id`, its data in `data_dir`. Returned once it says it is
/// connected to the relay (within `wait`).
pub fn agent_process(
    base: &str,
    (client_id, secret): (&str, &str),
    agent_id: &str,
    data_dir: &std::path::Path,
    wait: std::time::Duration,
) -> Proc {
    let mut cmd = outpost();
    cmd.env("RUST_LOG", "info")
        .args(["agent", "--base-url", base, "--client-id", client_id])
        .args([
            "--client-secret",
            secret,
            "--agent-id",
            agent_id,
            "--data-dir",
        ])
        .arg(data_dir);
    let mut agent = Proc::spawn("outpost agent", cmd);
    agent.wait_for("connected to the relay", wait);
    agent
}

/// What `$status` says of Agent `agent` (`connected`, `disconnected`, ...), or "" when it
/// says nothing.
pub async fn agent_status(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    agent: &str,
) -> String {
    let v: serde_json::Value = client
        .get(format!("{base}fhir/R4/Agent/{agent}/$status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["parameter"][0]["valueCode"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}
