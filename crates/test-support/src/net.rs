//! Ports for tests: one nobody answers on, and — for third-party programs only — a number.

use std::net::SocketAddr;

/// A loopback port bound and held but never listening: connecting to it is refused at once
/// (RST), and no other test can take it while this lives.
pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind 127.0.0.1:0");
        ClosedPort { socket }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local address")
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }
}

impl Default for ClosedPort {
    fn default() -> ClosedPort {
        ClosedPort::new()
    }
}

/// A port number for a third-party program that takes one on its command line and cannot be
/// handed a bound socket (dcmtk, the Medplum CLI, the ASTM peers): the one place a port is found
/// free, released and bound again. Servers of ours are given a bound listener, or bind port 0
/// and say which port they got.
pub fn port_for_peer() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
