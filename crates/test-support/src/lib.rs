//! Helpers for Outpost's integration tests (a dev-dependency only).
//!
//! The rules they follow: a server is handed a listener already bound to `127.0.0.1:0` (or,
//! for a process, binds port 0 itself and prints the address, which the test reads) — never a
//! port found free, released and bound again; a test waits for an event (a line printed, a
//! message received, a condition that comes true), never a fixed sleep.
//!
//! - [`process`]: child processes with their output read line by line ([`Proc`]), run to
//!   completion ([`run`]), the relay's printed address ([`Proc::listening_url`]).
//! - [`wait`]: [`wait_until`], a condition polled until a deadline.
//! - [`net`]: [`ClosedPort`], a port that refuses connections; [`port_for_peer`], a port
//!   number for a third-party program that cannot be handed a socket.
//! - [`pki`]: a CA and a certificate it signed, as PEM files.
//! - [`token`]: an access token from a relay.
//! - [`device`]: an MLLP device that records and acknowledges what it gets.
//! - [`hook`]: [`rest_hook`](hook::rest_hook), a Subscription's endpoint recording what it is
//!   sent.
//! - [`services`]: private Redis and PostgreSQL servers.
//! - [`relay`]: a relay in the test's process with the standard test registry, an HTTP helper,
//!   and [`ScriptedAgent`](relay::ScriptedAgent), the agent side of a real WebSocket.

#![allow(missing_docs)] // test helpers; each module says what it is for

pub mod device;
pub mod hook;
pub mod net;
pub mod pki;
pub mod process;
pub mod relay;
pub mod services;
pub mod token;
pub mod wait;

pub use device::ack_device;
pub use net::{ClosedPort, port_for_peer};
pub use pki::Pki;
pub use process::{Proc, medplum, repo, run};
pub use token::token;
pub use wait::wait_until;
