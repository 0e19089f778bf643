//! MLLP (Minimal Lower Layer Protocol): HL7 v2 messages over TCP, each framed as
//! `0x0B message 0x1C 0x0D`.
//!
//! - [`Framer`] finds frames in bytes as they arrive (sans-IO): linear in the input however it
//!   is split, bounded by a maximum frame size, resynchronising after junk or an over-long frame,
//!   splitting pipelined frames.
//! - [`MllpCodec`] is the tokio-util codec over it.
//! - [`Connection`] sends a message and waits for the acknowledgement whose MSA-2 matches its
//!   MSH-10; [`Pool`] keeps connections per destination, capped. Neither rewrites a message: a
//!   message whose segments end with `\r` goes out byte for byte, and one with `\n` or `\r\n`
//!   terminators gets `\r` in their place and no other change ([`hl7v2::Message::to_wire`]).
//! - [`Server`] accepts connections (a bounded accept loop from the `byte-stream` crate: a cap,
//!   excess connections closed at once, the file-descriptor limit handled without spinning) and
//!   hands each message to a [`Handler`]; [`acks_for`] builds the acknowledgements MSH-15/MSH-16
//!   ask for (`hl7v2`'s, stamped with the clock here), and a message that does not parse is
//!   answered with AR ([`reject`]): its control ID in MSA-2 whenever the header can be read,
//!   the HL7 table 0357 code that fits the fault in ERR-3, and the fault in ERR-8 and MSA-3.
//!
//! The crate moves bytes. Character sets are the caller's: encode text with
//! [`hl7v2::Charset::encode`] before sending and decode what arrives with
//! [`hl7v2::Charset::decode`] (the delimiters are ASCII in every supported set, so parsing works
//! on the bytes as they are).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mllp::Error> {
//! use mllp::{Connection, ClientOptions, Request, Server, ServerOptions, acks_for};
//!
//! let server = Server::bind("127.0.0.1:0", ServerOptions::default(), |req: Request| async move {
//!     let acks = acks_for(&req.message().unwrap(), false);
//!     for ack in acks {
//!         let _ = req.reply(&ack).await;
//!     }
//! })
//! .await?;
//! let mut conn = Connection::connect(&server.local_addr().to_string(), ClientOptions::default()).await?;
//! let ack = conn.send(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|MSG1|P|2.5\rPID|1\r").await?;
//! assert_eq!(ack.code(), hl7v2::AckCode::AA);
//! server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! - `tokio` (default): the codec, the client, the pool and the server. Without it the crate is
//!   the sans-IO framer alone.
//! - `tls`: MLLP over TLS for the client and the pool ([`Connection::connect_tls`],
//!   [`Pool::send_tls_by`], [`TlsTarget`]) with rustls (ring).

#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod error;
mod framer;

#[cfg(feature = "tokio")]
mod client;
#[cfg(feature = "tokio")]
mod codec;
#[cfg(feature = "tokio")]
mod pool;
#[cfg(feature = "tokio")]
mod server;
#[cfg(feature = "tokio")]
mod stream;

pub use error::Error;
pub use framer::{
    CARRIAGE_RETURN, DEFAULT_MAX_FRAME, END_BLOCK, Framer, FramerStats, START_BLOCK, encode_frame,
};

/// The accept loop under [`Server`], re-exported for its options and counters.
#[cfg(feature = "tokio")]
pub use byte_stream::{Budget, ListenerStats};
#[cfg(feature = "tokio")]
pub use client::{Ack, ClientOptions, Connection, ReturnAck};
#[cfg(feature = "tokio")]
pub use codec::MllpCodec;
#[cfg(feature = "tokio")]
pub use pool::{Pool, PoolOptions, SendOptions};
#[cfg(feature = "tokio")]
pub use server::{Handler, Request, Server, ServerOptions, ack_options, acks_for, reject};
#[cfg(feature = "tls")]
pub use stream::TlsTarget;
