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
