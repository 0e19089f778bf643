//! Byte streams cut into frames by a start byte and an end byte, as the Medplum agent's
//! `tcp://…?startChar=&endChar=` channels cut them (serial converters, simple analyzers that do
//! not speak MLLP), and the TCP side of serving them.
//!
//! - [`DelimitedFramer`] (sans-IO): finds `start … end` frames in bytes as they arrive, in
//!   linear time however the input is split, bounded by a maximum frame size, skipping junk
//!   between frames and resynchronising after an over-long one.
//! - [`Listener`] (feature `tokio`): a bounded accept loop for any stream protocol — a cap per
//!   listener and a [`Budget`] shared by several, excess connections closed at once, the
//!   file-descriptor limit handled without spinning, each condition logged once.
//! - [`Server`] (feature `tokio`): a [`Listener`] that frames each connection with a
//!   [`DelimitedFramer`], hands every frame to a [`Handler`] as soon as it is complete, and
//!   writes the handler's answers back in frame order while it goes on reading.
//!
//! What it does not do: interpret the frames (they are bytes; the end byte is kept), check
//! them (no checksums), or retry anything.
//!
//! ```
//! use bytes::BytesMut;
//! use byte_stream::DelimitedFramer;
//!
//! let mut framer = DelimitedFramer::new(0x02, 0x03, 1024);
//! let mut buf = BytesMut::from(&b"noise\x02first\x03\x02sec"[..]);
//! assert_eq!(framer.decode(&mut buf)?.as_deref(), Some(&b"first\x03"[..]));
//! assert_eq!(framer.decode(&mut buf)?, None); // the second frame is not complete yet
//! buf.extend_from_slice(b"ond\x03");
//! assert_eq!(framer.decode(&mut buf)?.as_deref(), Some(&b"second\x03"[..]));
//! # Ok::<(), byte_stream::Error>(())
//! ```
//!
//! ## Features
//!
//! - `tokio` (default): [`Listener`] and [`Server`]. Without it the crate is the sans-IO framer
//!   alone.

#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod error;
mod framer;
#[cfg(feature = "tokio")]
mod listener;
#[cfg(feature = "tokio")]
mod server;

pub use error::Error;
pub use framer::DelimitedFramer;
#[cfg(feature = "tokio")]
pub use listener::{Budget, Listener, ListenerOptions, ListenerStats, Serve, Shutdown};
#[cfg(feature = "tokio")]
pub use server::{Answer, Handler, Server, ServerOptions};
