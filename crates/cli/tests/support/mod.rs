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
    std::fs::write(dir.join("bundle.json"), bundle.to_string()).unwrap();
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(dir.join("bundle.json"))
        .args(extra);
    let mut p = Proc::spawn("outpost server", cmd);
    let base = p.listening_url(std::time::Duration::from_secs(60));
    (p, base)
}
