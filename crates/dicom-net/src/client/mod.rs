//! The association requestor over TCP (tokio): connect, C-ECHO, C-STORE, C-FIND, release.
//!
//! [`Association::connect_over`] runs the same over any byte stream the caller has opened (a
//! TLS stream for DICOM's TLS profiles, PS3.15 Annex B): this crate does no TLS itself.
//!
//! Sockets get `TCP_NODELAY`, and every PDU leaves in one write (several PDUs of a data set are
//! batched into one write), so no C-STORE waits on Nagle's algorithm and a delayed ACK.
//!
//! The upper layer (states, PDU order, command reassembly, fragmenting to the SCP's maximum
//! PDU length, release, abort) is the sans-IO [`UpperLayer`] the SCP shares; this module only
//! moves its bytes over tokio, keeps the timeouts, and runs the DIMSE operations.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::dataset::DataSet;
use crate::dimse::{self, Command, DimseMessage, Part, Reassembler, Status, StatusKind};
use crate::pdu::{self, Associate, PresentationContext, UserInfo};
use crate::ul::{Event, State, UpperLayer};
use crate::{Error, uids};

pub use crate::ul::Context;

mod store;

/// Largest DIMSE response (command and data set) accepted: 16 MiB.
const MAX_RESPONSE: usize = 16 << 20;
/// Smallest peer maximum this side works with.
const MIN_PEER_MAX: u32 = 128;
/// P-DATA PDUs are gathered up to this many bytes before a write.
const WRITE_BATCH: usize = 256 << 10;
/// CommandDataSetType for "a data set follows" (the value dcmtk writes).
const DATA_SET_PRESENT: u16 = 0x0001;

/// How to associate.
#[derive(Debug, Clone)]
pub struct Options {
    /// This side's AE title (1-16 characters).
    pub calling_ae: String,
    /// The SCP's AE title.
    pub called_ae: String,
    /// The largest P-DATA-TF this side receives (advertised, and enforced on reading).
    pub max_pdu: u32,
    /// TCP connect.
    pub connect_timeout: Duration,
    /// A-ASSOCIATE-AC and A-RELEASE-RP.
    pub acse_timeout: Duration,
    /// Each DIMSE response, and each write.
    pub dimse_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            calling_ae: "OUTPOST".into(),
            called_ae: "ANY-SCP".into(),
            max_pdu: 256 << 10,
            connect_timeout: Duration::from_secs(10),
            acse_timeout: Duration::from_secs(30),
            dimse_timeout: Duration::from_secs(60),
        }
    }
}

/// One presentation context to propose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The SOP class.
    pub abstract_syntax: String,
    /// Transfer syntaxes, in order of preference.
    pub transfer_syntaxes: Vec<String>,
}

impl Proposal {
    /// A proposal for `sop_class` with these transfer syntaxes.
    pub fn new(sop_class: &str, transfer_syntaxes: &[&str]) -> Proposal {
        Proposal {
            abstract_syntax: sop_class.to_owned(),
            transfer_syntaxes: transfer_syntaxes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Verification (C-ECHO) in Implicit VR LE.
    pub fn verification() -> Proposal {
        Proposal::new(uids::VERIFICATION, &[uids::IMPLICIT_VR_LE])
    }

    /// A C-FIND information model, Explicit or Implicit VR LE.
    pub fn find(model: &str) -> Proposal {
        Proposal::new(model, &[uids::EXPLICIT_VR_LE, uids::IMPLICIT_VR_LE])
    }

    /// Proposals to store files of these (SOP class, transfer syntax) pairs: for each SOP class,
    /// one context per transfer syntax the files use, plus Explicit and Implicit VR LE, which
    /// uncompressed, deflated and big-endian files convert to without loss (for a compressed
    /// file they tell what the SCP would take, for the refusal to say). One context per syntax
    /// lets each file go out as it is.
    pub fn for_storage<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Proposal> {
        let mut out: Vec<Proposal> = Vec::new();
        let mut push = |sop: &str, ts: &str| {
            if !out
                .iter()
                .any(|p| p.abstract_syntax == sop && p.transfer_syntaxes[0] == ts)
            {
                out.push(Proposal::new(sop, &[ts]));
            }
        };
        for (sop, ts) in files {
            push(sop, ts);
            push(sop, uids::EXPLICIT_VR_LE);
            push(sop, uids::IMPLICIT_VR_LE);
        }
        out
    }
}

/// The outcome of one C-STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreResult {
    /// SOP class sent.
    pub sop_class: String,
    /// SOP instance sent.
    pub sop_instance: String,
    /// The SCP's status.
    pub status: Status,
    /// The SCP's error comment, if any.
    pub error_comment: Option<String>,
    /// The transfer syntax the data set went in.
    pub transfer_syntax: String,
    /// Whether the data set went in another transfer syntax than the file's.
    pub transcoded: bool,
    /// Data set bytes sent.
    pub bytes: u64,
    /// How the file was read and sent ("no meta header; read as ...", "converted from ... to
    /// ...", odd values padded).
    pub notes: Vec<String>,
    /// Defects of the file that did not stop it (meta group and data set disagree).
    pub warnings: Vec<String>,
}

/// The byte stream under an association: TCP, or whatever the caller connected over.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Transport for T {}

/// An open association.
#[derive(Debug)]
pub struct Association {
    stream: Box<dyn Transport>,
    ul: UpperLayer,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    opts: Options,
    peer: Associate,
    next_id: u16,
    reassembler: Reassembler,
    ready: VecDeque<DimseMessage>,
    /// Why the association can no longer be used.
    dead: Option<String>,
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn check_ae(title: &str, which: &str) -> Result<(), Error> {
    let ok = !title.trim().is_empty()
        && title.len() <= 16
        && title
            .bytes()
            .all(|b| (0x20..0x7F).contains(&b) && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{which} AE title {title:?}: 1-16 printable ASCII characters, no backslash"
        )))
    }
}

/// The AE titles and the number of proposals are usable.
fn check_request(opts: &Options, proposals: &[Proposal]) -> Result<(), Error> {
    check_ae(&opts.calling_ae, "calling")?;
    check_ae(&opts.called_ae, "called")?;
    if proposals.is_empty() || proposals.len() > 128 {
        return Err(Error::Invalid(format!(
            "{} presentation contexts proposed; an association holds 1 to 128",
            proposals.len()
        )));
    }
    Ok(())
}

impl Association {
    /// Connects, proposes `proposals` (ids 1, 3, 5, ...), and reads the SCP's answer.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        opts: &Options,
        proposals: &[Proposal],
    ) -> Result<Association, Error> {
        check_request(opts, proposals)?;
        let stream = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout {
                what: "TCP connection",
                ms: ms(opts.connect_timeout),
            })??;
        stream.set_nodelay(true)?;
        Association::connect_over(stream, opts, proposals).await
    }

    /// [`Association::connect`] over a stream the caller has opened (for example TLS over
    /// TCP, with `TCP_NODELAY` set by the caller); the A-ASSOCIATE exchange and everything after
    /// it are the same.
    pub async fn connect_over<S>(
        stream: S,
        opts: &Options,
        proposals: &[Proposal],
    ) -> Result<Association, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug + 'static,
    {
        check_request(opts, proposals)?;
        let stream: Box<dyn Transport> = Box::new(stream);
        let rq = Associate {
            called_ae: opts.called_ae.clone(),
            calling_ae: opts.calling_ae.clone(),
            application_context: uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: proposals
                .iter()
                .enumerate()
                .map(|(i, p)| PresentationContext {
                    id: (2 * i + 1) as u8,
                    abstract_syntax: p.abstract_syntax.clone(),
                    transfer_syntaxes: p.transfer_syntaxes.clone(),
                    result: 0,
                })
                .collect(),
            user: UserInfo {
                max_length: Some(opts.max_pdu),
                implementation_class_uid: uids::IMPLEMENTATION_CLASS_UID.into(),
                implementation_version_name: Some(uids::IMPLEMENTATION_VERSION_NAME.into()),
                other: Vec::new(),
            },
        };
        let mut a = Association {
            stream,
            ul: UpperLayer::requestor(rq),
            rbuf: vec![0; 64 << 10],
            wbuf: Vec::with_capacity(WRITE_BATCH + (64 << 10)),
            opts: opts.clone(),
            peer: Associate::default(),
            next_id: 1,
            reassembler: Reassembler::new(MAX_RESPONSE),
            ready: VecDeque::new(),
            dead: None,
        };
        a.flush(opts.acse_timeout).await?;
        let ac = match a.read_event(opts.acse_timeout, "A-ASSOCIATE-AC").await? {
            Event::Accepted(ac) => ac,
            Event::Rejected {
                result,
                source,
                reason,
            } => {
                let (result, source_name, reason) = pdu::reject_reason(result, source, reason);
                return Err(Error::Rejected {
                    result,
                    source_name,
                    reason,
                });
            }
            Event::Aborted { source, reason } => {
                let (source_name, reason) = pdu::abort_reason(source, reason);
                return Err(Error::Aborted {
                    source_name,
                    reason,
                });
            }
            other => {
                a.abort().await;
                return Err(Error::Protocol(format!(
                    "expected A-ASSOCIATE-AC, got {other:?}"
                )));
            }
        };
        let peer_max = a.ul.peer_max_pdu();
        if peer_max != 0 && peer_max < MIN_PEER_MAX {
            a.abort().await;
            return Err(Error::Protocol(format!(
                "the SCP's maximum PDU length {peer_max} is below {MIN_PEER_MAX}"
            )));
        }
        a.peer = ac;
        tracing::debug!(
            peer_max,
            implementation = %a.peer.user.implementation_class_uid,
            accepted = a.contexts().iter().filter(|c| c.accepted()).count(),
            "association accepted"
        );
        Ok(a)
    }

    /// The SCP's answer for each proposed context, in proposal order.
    pub fn contexts(&self) -> &[Context] {
        self.ul.contexts()
    }

    /// The SCP's A-ASSOCIATE-AC (its maximum length, implementation class and version).
    pub fn peer(&self) -> &Associate {
        &self.peer
    }

    /// The largest PDV fragment this side sends (the SCP's maximum less 6).
    pub fn max_fragment(&self) -> usize {
        self.ul.max_fragment()
    }

    fn usable(&self) -> Result<(), Error> {
        match &self.dead {
            Some(why) => Err(Error::Protocol(format!(
                "the association is no longer usable: {why}"
            ))),
            None => Ok(()),
        }
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn accepted_for(&self, sop_class: &str) -> Option<&Context> {
        self.contexts()
            .iter()
            .find(|c| c.accepted() && c.abstract_syntax == sop_class)
    }

    /// C-ECHO: the SCP's status (success when it answers 0x0000).
    pub async fn echo(&mut self) -> Result<Status, Error> {
        self.usable()?;
        let pc = self
            .accepted_for(uids::VERIFICATION)
            .map(|c| c.id)
            .ok_or_else(|| self.no_context(uids::VERIFICATION, None))?;
        let id = self.message_id();
        let cmd = Command {
            affected_sop_class: Some(uids::VERIFICATION.into()),
            command_field: dimse::C_ECHO_RQ,
            message_id: Some(id),
            data_set_type: dimse::NO_DATA_SET,
            ..Command::default()
        };
        self.ul.send_command(pc, &cmd)?;
        self.flush(self.opts.dimse_timeout).await?;
        let rsp = self.response(dimse::C_ECHO_RSP, id, "C-ECHO-RSP").await?;
        Ok(Status(rsp.command.status.unwrap_or(0xFFFF)))
    }

    /// Why no accepted context carries `sop_class` (in `ts`).
    fn no_context(&self, sop_class: &str, ts: Option<&str>) -> Error {
        let answers: Vec<String> = self
            .contexts()
            .iter()
            .filter(|c| c.abstract_syntax == sop_class)
            .map(|c| {
                format!(
                    "context {} ({}): {}",
                    c.id,
                    c.proposed.join(", "),
                    c.result_text()
                )
            })
            .collect();
        let what = match ts {
            Some(ts) => format!("{sop_class} in {ts}"),
            None => sop_class.to_owned(),
        };
        if answers.is_empty() {
            Error::NoContext(format!("{what}: not proposed"))
        } else {
            Error::NoContext(format!("{what}: {}", answers.join("; ")))
        }
    }

    /// C-FIND: sends `identifier` under the information model `model` and returns the stream
    /// of matches.
    pub async fn find(&mut self, model: &str, identifier: &DataSet) -> Result<Find<'_>, Error> {
        self.usable()?;
        let c = self
            .accepted_for(model)
            .ok_or_else(|| self.no_context(model, None))?;
        let (pc, ts) = (c.id, c.transfer_syntax.clone());
        let explicit = uids::uncompressed_le(&ts).ok_or_else(|| {
            Error::Protocol(format!(
                "the SCP chose {ts} for C-FIND, which was not proposed"
            ))
        })?;
        let id = self.message_id();
        let cmd = Command {
            affected_sop_class: Some(model.to_owned()),
            command_field: dimse::C_FIND_RQ,
            message_id: Some(id),
            priority: Some(0),
            data_set_type: DATA_SET_PRESENT,
            ..Command::default()
        };
        self.ul.send_command(pc, &cmd)?;
        let mut data = Vec::new();
        identifier.write(explicit, &mut data);
        self.send_data(pc, &data, None, false).await?;
        Ok(Find {
            assoc: self,
            pc,
            id,
            explicit,
            end: None,
            cancelled: false,
        })
    }

    /// Releases the association (A-RELEASE-RQ, waits for A-RELEASE-RP) and closes. In a
    /// release collision (the SCP asked too) both sides answer, as PS3.8 §9.2 has it.
    pub async fn release(mut self) -> Result<(), Error> {
        if self.dead.is_some() {
            return Ok(());
        }
        self.ul.release()?;
        self.flush(self.opts.acse_timeout).await?;
        loop {
            let event = match self
                .read_event(self.opts.acse_timeout, "A-RELEASE-RP")
                .await
            {
                Ok(e) => e,
                // An SCP that closes after our answer in a collision has released too.
                Err(Error::Closed) if self.ul.state() == State::CollisionAwaitingReleaseRp => {
                    break;
                }
                Err(e) => return Err(e),
            };
            match event {
                Event::Released => break,
                Event::Aborted { source, reason } => {
                    let (source_name, reason) = pdu::abort_reason(source, reason);
                    return Err(Error::Aborted {
                        source_name,
                        reason,
                    });
                }
                // Late responses (after a C-CANCEL) are dropped.
                Event::Part(_) => {}
                other => {
                    self.abort().await;
                    return Err(Error::Protocol(format!(
                        "expected A-RELEASE-RP, got {other:?}"
                    )));
                }
            }
            // A release collision: the machine answered the SCP's A-RELEASE-RQ.
            if self.ul.pending_transmit() > 0 {
                self.flush(self.opts.acse_timeout).await?;
            }
        }
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    /// Sends A-ABORT (unless the association is already over: then whatever the machine
    /// queued, its own A-ABORT included) and closes.
    pub async fn abort(&mut self) {
        self.dead
            .get_or_insert_with(|| "aborted by this side".into());
        if !self.ul.is_finished() {
            self.ul.discard_unsent();
            self.ul.abort(0, 0);
        }
        self.ul.transmit_into(&mut self.wbuf);
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.stream.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        let _ = self.stream.shutdown().await;
    }

    /// Sends a data set: `head` from memory, then `tail_len` bytes of `tail`, then one NUL
    /// when `pad`, in fragments of [`UpperLayer::max_fragment`], flushed in batches.
    async fn send_data(
        &mut self,
        pc: u8,
        mut head: &[u8],
        mut tail: Option<(&mut BufReader<tokio::fs::File>, u64)>,
        pad: bool,
    ) -> Result<(), Error> {
        let fragment = self.ul.max_fragment();
        let mut remaining = head.len() as u64 + tail.as_ref().map_or(0, |t| t.1) + u64::from(pad);
        let mut stage: Vec<u8> = Vec::with_capacity(fragment.min(remaining as usize));
        loop {
            let n = remaining.min(fragment as u64) as usize;
            remaining -= n as u64;
            let last = remaining == 0;
            stage.clear();
            let from_head = n.min(head.len());
            stage.extend_from_slice(&head[..from_head]);
            head = &head[from_head..];
            if let Some((file, left)) = tail.as_mut()
                && stage.len() < n
                && *left > 0
            {
                let start = stage.len();
                let take = ((n - start) as u64).min(*left) as usize;
                stage.resize(start + take, 0);
                if let Err(e) = file.read_exact(&mut stage[start..]).await {
                    // Part of the data set is out: the association cannot carry on.
                    self.abort().await;
                    return Err(Error::Io(e));
                }
                *left -= take as u64;
            }
            if stage.len() < n {
                if pad && last && stage.len() + 1 == n {
                    stage.push(0);
                } else {
                    self.abort().await;
                    return Err(Error::Protocol("data set shorter than announced".into()));
                }
            }
            self.ul.send_data(pc, &stage, last)?;
            if last || self.ul.pending_transmit() >= WRITE_BATCH {
                self.flush(self.opts.dimse_timeout).await?;
            }
            if last {
                return Ok(());
            }
        }
    }

    /// Writes the queued PDUs.
    async fn flush(&mut self, limit: Duration) -> Result<(), Error> {
        self.ul.transmit_into(&mut self.wbuf);
        let written = tokio::time::timeout(limit, self.stream.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                // The SCP may have aborted and closed: its A-ABORT explains better than EPIPE.
                self.dead = Some(format!("write failed: {e}"));
                match tokio::time::timeout(Duration::from_millis(500), self.next_event()).await {
                    Ok(Ok(Event::Aborted { source, reason })) => {
                        let (source_name, reason) = pdu::abort_reason(source, reason);
                        Err(Error::Aborted {
                            source_name,
                            reason,
                        })
                    }
                    _ => Err(Error::Io(e)),
                }
            }
            Err(_) => {
                self.abort().await;
                Err(Error::Timeout {
                    what: "write to the SCP",
                    ms: ms(limit),
                })
            }
        }
    }

    /// The machine's next event, reading from the SCP as long as it has none. A fault of the
    /// SCP's ends the association: the machine's A-ABORT is sent, the error returned.
    async fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(e) = self.ul.poll_event() {
                return Ok(e);
            }
            let n = self.stream.read(&mut self.rbuf).await?;
            if n == 0 {
                self.ul.handle_closed();
                self.dead = Some("connection closed by the peer".into());
                return Err(Error::Closed);
            }
            if let Err(e) = self.ul.handle_bytes(&self.rbuf[..n]) {
                self.ul.transmit_into(&mut self.wbuf);
                let _ = self.stream.write_all(&self.wbuf).await;
                let _ = self.stream.shutdown().await;
                self.wbuf.clear();
                self.dead = Some(e.to_string());
                return Err(e);
            }
        }
    }

    async fn read_event(&mut self, limit: Duration, what: &'static str) -> Result<Event, Error> {
        match tokio::time::timeout(limit, self.next_event()).await {
            Ok(r) => r,
            Err(_) => {
                self.abort().await;
                self.dead = Some(format!("no {what} in time"));
                Err(Error::Timeout {
                    what,
                    ms: ms(limit),
                })
            }
        }
    }

    /// The next complete DIMSE message.
    async fn message(&mut self, what: &'static str) -> Result<DimseMessage, Error> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Ok(m);
            }
            match self.read_event(self.opts.dimse_timeout, what).await? {
                Event::Part(part) => self.part(part).await?,
                Event::Aborted { source, reason } => {
                    let (source_name, reason) = pdu::abort_reason(source, reason);
                    self.dead = Some(format!("aborted by the {source_name}: {reason}"));
                    return Err(Error::Aborted {
                        source_name,
                        reason,
                    });
                }
                Event::ReleaseRequested => {
                    let _ = self.ul.release_response();
                    let _ = self.flush(self.opts.acse_timeout).await;
                    self.dead = Some("released by the SCP".into());
                    return Err(Error::Protocol(format!(
                        "the SCP released the association instead of sending a {what}"
                    )));
                }
                other => {
                    self.abort().await;
                    return Err(Error::Protocol(format!("expected {what}, got {other:?}")));
                }
            }
        }
    }

    /// Adds a part of a response to the message being put together.
    async fn part(&mut self, part: Part) -> Result<(), Error> {
        match self.reassembler.assemble(part) {
            Ok(Some(m)) => self.ready.push_back(m),
            Ok(None) => {}
            Err(e) => {
                self.abort().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The response to request `id`, of kind `field`.
    async fn response(
        &mut self,
        field: u16,
        id: u16,
        what: &'static str,
    ) -> Result<DimseMessage, Error> {
        let m = self.message(what).await?;
        if m.command.command_field != field
            || m.command.message_id_responded.is_some_and(|r| r != id)
        {
            self.abort().await;
            return Err(Error::Protocol(format!(
                "expected {what} to message {id}, got command 0x{:04X} to message {:?}",
                m.command.command_field, m.command.message_id_responded
            )));
        }
        Ok(m)
    }
}

/// How a C-FIND ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindEnd {
    /// The final status: success, cancel, or a failure.
    pub status: Status,
    /// The SCP's error comment, if any.
    pub error_comment: Option<String>,
}

/// A C-FIND in progress: matches arrive one by one as the SCP sends them.
#[derive(Debug)]
pub struct Find<'a> {
    assoc: &'a mut Association,
    pc: u8,
    id: u16,
    explicit: bool,
    end: Option<FindEnd>,
    cancelled: bool,
}

impl Find<'_> {
    /// The next match, or `None` once the final response came (see [`Find::end`]).
    pub async fn next(&mut self) -> Result<Option<DataSet>, Error> {
        while self.end.is_none() {
            let m = self
                .assoc
                .response(dimse::C_FIND_RSP, self.id, "C-FIND-RSP")
                .await?;
            let status = Status(m.command.status.unwrap_or(0xFFFF));
            if status.kind() != StatusKind::Pending {
                self.end = Some(FindEnd {
                    status,
                    error_comment: m.command.error_comment,
                });
                break;
            }
            // Whether an identifier follows is the command's CommandDataSetType, not the status.
            if let Some(data) = m.data {
                return DataSet::parse(&data, self.explicit).map(Some);
            }
        }
        Ok(None)
    }

    /// Asks the SCP to stop (C-CANCEL-RQ). Keep calling [`Find::next`]: matches already queued
    /// still arrive, then the final response (Cancel, or Success when the SCP had finished).
    pub async fn cancel(&mut self) -> Result<(), Error> {
        if self.cancelled || self.end.is_some() {
            return Ok(());
        }
        self.cancelled = true;
        let cmd = Command {
            command_field: dimse::C_CANCEL_RQ,
            message_id_responded: Some(self.id),
            data_set_type: dimse::NO_DATA_SET,
            ..Command::default()
        };
        self.assoc.ul.send_command(self.pc, &cmd)?;
        self.assoc.flush(self.assoc.opts.dimse_timeout).await
    }

    /// The final response, once [`Find::next`] returned `None`.
    pub fn end(&self) -> Option<&FindEnd> {
        self.end.as_ref()
    }

    /// Collects every remaining match and the final response.
    pub async fn collect(mut self) -> Result<(Vec<DataSet>, FindEnd), Error> {
        let mut out = Vec::new();
        while let Some(ds) = self.next().await? {
            out.push(ds);
        }
        let end = self
            .end
            .take()
            .ok_or_else(|| Error::Protocol("C-FIND ended without a final response".into()))?;
        Ok((out, end))
    }
}
