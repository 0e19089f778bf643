//! DICOM networking: the upper layer, associations, C-ECHO, C-STORE and C-FIND, and the data
//! set layer that lets any file go out in a syntax the SCP accepts.
//!
//! - [`pdu`]: every upper-layer PDU (PS3.8 §9.3), sans-IO, decoding bounded by the maximum
//!   length this side advertised.
//! - [`ul`]: the association state machine (PS3.8 §9.2, Sta1-Sta13), sans-IO and shared by
//!   both roles: PDUs in, events (association, DIMSE commands and data set fragments,
//!   release, abort) and PDUs out, P-DATA fragmented to the peer's maximum and refused over
//!   this side's, unexpected PDUs answered with A-ABORT (Table 9-10), no clock (the driver
//!   runs ARTIM when told to). The SCU ([`Association`]) and the SCP ([`acceptor`]) are thin
//!   layers on it.
//! - [`dimse`]: command sets (always Implicit VR LE, group length first), status codes with
//!   their standard names, and a [`dimse::Reassembler`] that follows PDV flags, never PDU
//!   boundaries.
//! - [`reader`] / [`writer`]: data set elements as a stream of tokens (sans-IO, bounded by one
//!   element header): Implicit/Explicit VR LE and Explicit VR BE, sequences, encapsulated pixel
//!   data, UN of undefined length (CP-246). Written back with even lengths (PS3.5 §7.1), in the
//!   target byte order. [`Transcoder`] joins them, inflating Deflate on the way in.
//! - [`inspect`]: what a file holds, from its element headers only: meta group or none (the
//!   encoding then told from the content), the data set's SOP Class/Instance UIDs, odd values.
//! - [`DataSet`]: a data set in memory, for query identifiers (Modality Worklist too);
//!   [`to_json`] / [`from_json`] convert to and from the DICOM JSON model (PS3.18 §F.2).
//! - [`part10`]: the meta group of a Part 10 file, read and written; the data set after it is
//!   sent unparsed whenever the SCP accepts its transfer syntax and no value needs padding.
//! - [`FindModel`] picks a C-FIND information model for an identifier; [`store_json`] and
//!   [`matches_json`] report a C-STORE's or a C-FIND's outcome as JSON.
//! - [`Association`] (feature `tokio`): the SCU, a tokio driver of [`UpperLayer`]: connect,
//!   propose contexts, echo, store (streamed from the file), find (matches streamed,
//!   C-CANCEL), release, abort, with ACSE and DIMSE timeouts.
//! - [`acceptor`]: the SCP's policy on the same [`UpperLayer`], sans-IO: negotiation (Verification and every Storage SOP
//!   class, in Implicit/Explicit VR LE, Deflate or an encapsulated syntax as it is), C-ECHO,
//!   C-STORE data sets handed out fragment by fragment, the status decided by the application.
//! - [`scp`] (feature `tokio`): the SCP over TCP, or over a stream the caller makes of each
//!   connection (TLS: this crate does no TLS itself), bounded (PDU, associations, handshake and
//!   idle time, object size); objects streamed to Part 10 files and handed to the application with their DICOM
//!   JSON (no Pixel Data) before the C-STORE is answered.
//!
//! ```
//! use dicom_net::{DataSet, dict, from_json, to_json};
//!
//! // A Study Root query: matching keys with values, return keys empty.
//! let mut q = DataSet::default();
//! q.set_text(dict::tag_of("QueryRetrieveLevel").unwrap(), "STUDY");
//! q.set_text(dict::tag_of("PatientName").unwrap(), "Doe*");
//! q.set_text(dict::tag_of("StudyInstanceUID").unwrap(), "");
//! let json = to_json(&q);
//! assert_eq!(json["00100010"]["Value"][0]["Alphabetic"], "Doe*");
//! assert_eq!(from_json(&json)?, q);
//!
//! // Identifiers go on the wire in the syntax the SCP chose.
//! let mut wire = Vec::new();
//! q.write(false, &mut wire);
//! assert_eq!(DataSet::parse(&wire, false)?, q);
//! # Ok::<(), dicom_net::Error>(())
//! ```
//!
//! Against an SCP (here dcmtk's `storescp`):
//!
//! ```no_run
//! # async fn run() -> Result<(), dicom_net::Error> {
//! use dicom_net::{Association, Options, Proposal};
//!
//! let opts = Options { called_ae: "STORESCP".into(), ..Options::default() };
//! let files = [("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")];
//! let mut proposals = Proposal::for_storage(files);
//! proposals.push(Proposal::verification());
//! let mut assoc = Association::connect("127.0.0.1:11112", &opts, &proposals).await?;
//! assert!(assoc.echo().await?.is_ok());
//! let stored = assoc.store_file("ct1.dcm".as_ref()).await?;
//! println!("{}: {}", stored.sop_instance, stored.status);
//! assoc.release().await
//! # }
//! ```
//!
//! ## Features
//!
//! - `tokio` (off by default: `dicom-net = { features = ["tokio"] }`): [`Association`] and
//!   [`scp`]. Without it the crate is sans-IO only and pulls in no runtime.

#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod acceptor;
#[cfg(feature = "tokio")]
mod client;
mod dataset;
pub mod dict;
pub mod dimse;
mod error;
mod json;
mod object;
pub mod part10;
pub mod pdu;
pub mod reader;
mod report;
#[cfg(feature = "tokio")]
pub mod scp;
mod transcode;
pub mod uids;
pub mod ul;
pub mod writer;

#[cfg(feature = "tokio")]
pub use client::{Association, Find, FindEnd, Options, Proposal, StoreResult};
pub use dataset::{DataSet, DataSetStream, Element, Value, pad, transcode};
pub use dimse::{Status, StatusKind};
pub use error::Error;
pub use json::{from_json, to_json};
#[cfg(feature = "tokio")]
pub use object::inspect_file;
pub use object::{Inspection, Object, detect_encoding, inspect};
#[cfg(feature = "tokio")]
pub use report::store_json;
pub use report::{FindModel, UnknownModel, matches_json, status_hex};
pub use transcode::{Inflater, Transcoder, transcode_syntax};
pub use ul::{Context, UpperLayer};
