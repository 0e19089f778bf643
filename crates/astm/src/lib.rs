//! ASTM for lab instruments: the E1381 (CLSI LIS01) data link layer and the E1394 (CLSI LIS02)
//! record layer.
//!
//! - [`frame`]: `<STX> FN text <ETB|ETX> C1 C2 <CR><LF>`, checksums, frame numbers 1..7,0,
//!   at most 247 bytes a frame, long records split into ETB frames.
//! - [`Link`]: one connection's link layer as a sans-IO state machine (both directions:
//!   establishment, transfer with retransmission, termination, receiver interrupt, contention,
//!   the standard timers), driven by bytes and by `now: Instant`.
//! - [`Message`], [`Record`], [`RecordBuilder`]: E1394 records with the delimiters the H record
//!   declares, escapes, and a typed hierarchy of patients, orders and results.
//! - [`records_from_text`]: records typed one a line (any line ending) as the wire wants them.
//! - [`Connection`] (feature `tokio`): drives a link over any `AsyncRead + AsyncWrite`: TCP,
//!   or a serial port.
//!
//! What it does not do: open sockets or serial ports (the caller hands [`Connection`] a
//! stream), decode character sets (records are bytes; the caller decodes text with the
//! encoding the instrument uses), interpret results (units, reference ranges, flags are fields
//! like any other), validate records against a vendor's specification, or store and forward
//! messages — a delivered message is the caller's to keep.
//!
//! ```
//! use std::time::Instant;
//! use astm::{Link, LinkEvent, LinkOptions, Role};
//!
//! let now = Instant::now();
//! let mut lis = Link::new(LinkOptions { role: Role::Computer, ..LinkOptions::default() });
//! let mut analyzer = Link::new(LinkOptions { role: Role::Instrument, ..LinkOptions::default() });
//! lis.send(b"H|\\^&\rP|1\rL|1|N\r", now)?;
//! // Shuttle bytes between the two ends until both are quiet.
//! loop {
//!     let mut moved = false;
//!     while let Some(b) = lis.poll_transmit() { analyzer.handle_bytes(&b, now); moved = true; }
//!     while let Some(b) = analyzer.poll_transmit() { lis.handle_bytes(&b, now); moved = true; }
//!     if !moved { break; }
//! }
//! assert!(matches!(lis.poll_event(), Some(LinkEvent::Sent)));
//! let Some(LinkEvent::Received(records)) = analyzer.poll_event() else { panic!() };
//! assert_eq!(records, b"H|\\^&\rP|1\rL|1|N\r");
//! # Ok::<(), astm::Error>(())
//! ```
//!
//! ## Features
//!
//! - `tokio` (off by default: `astm = { features = ["tokio"] }`): [`Connection`]. Without it the
//!   crate is sans-IO only and pulls in no runtime.

#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod error;
pub mod frame;
mod link;
mod records;
#[cfg(feature = "tokio")]
mod tcp;
mod text;

pub use error::Error;
pub use link::{Link, LinkEvent, LinkOptions, LinkStats, Role};
pub use records::{
    DEFAULT_MAX_MESSAGE, Delimiters, Message, Order, Patient, Record, RecordBuilder, ResultRecord,
    Tree, build_message, escape, example_cbc_order, unescape,
};
#[cfg(feature = "tokio")]
pub use tcp::{Connection, connect};
pub use text::records_from_text;
