//! The CLI tests' helpers: the `test-support` crate, plus what only this crate's tests can
//! name (the path of the `outpost` binary under test).
#![allow(dead_code, unused_imports)] // each test file uses a different subset

pub use test_support::process::scratch;
pub use test_support::{Proc, ack_device, medplum, repo, run, services, token, wait_until};

/// The `outpost` binary under test.
pub fn outpost() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"));
    c.env("RUST_LOG", "warn");
    c
}

/// A port that was free a moment ago, for a listener a child process binds by number (an
/// agent's channel, a peer that cannot bind port 0 and report it). Servers in the test's own
/// process are handed a bound listener instead, and `outpost server` binds port 0 itself
/// ([`Proc::listening_url`]).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
