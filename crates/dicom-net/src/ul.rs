//! The upper-layer association state machine (PS3.8 §9.2), sans-IO, shared by both roles: the
//! requestor ([`crate::Association`], the SCU) and the acceptor ([`crate::acceptor`], the SCP).
//!
//! Bytes from the peer go in through [`UpperLayer::handle_bytes`]; local requests (accept,
//! reject, send a command or data set, release, abort) are method calls; out come PDUs to
//! send ([`UpperLayer::poll_transmit`]) and [`Event`]s: the association requested, accepted,
//! rejected, released or aborted, and each DIMSE command set (reassembled from its PDVs,
//! bounded) and data set fragment as it arrives. The machine does no I/O and reads no clock:
//! [`UpperLayer::artim`] says when the ARTIM timer should run, and the driver reports its
//! expiry with [`UpperLayer::handle_artim_expired`].
//!
//! States are those of PS3.8 Table 9-10 that a driver can see. Sta4 (awaiting the transport
//! connection) is the driver's `connect`: a requestor machine starts in Sta5 with its
//! A-ASSOCIATE-RQ queued. In a release collision (Sta9-Sta12) the local A-RELEASE response
//! is implied by the release this side already asked for, so Sta9 and Sta12 are passed
//! through at once. Outgoing P-DATA-TF PDUs never exceed the peer's maximum length; incoming
//! ones over this side's are refused from their header.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::Error;
use crate::dimse::{Command, Part, PdvStream};
use crate::pdu::{self, Associate, Pdu, Pdv};

/// The peer's receive limit assumed when its A-ASSOCIATE has no maximum length sub-item.
const ABSENT_PEER_MAX: u32 = 16_384;
/// PDV fragment size used when the peer says "unlimited" (0).
const UNLIMITED_FRAGMENT: usize = 1 << 20;

/// Which end of the association this side is (PS3.8 §9.2: the state machine differs only in
/// release collisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The association requestor (SCU side here).
    Requestor,
    /// The association acceptor (SCP side here).
    Acceptor,
}

/// A state of PS3.8 Table 9-10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sta1: idle, the transport is to be closed (or is).
    Idle,
    /// Sta2: transport open, awaiting the A-ASSOCIATE-RQ (acceptor; ARTIM running).
    AwaitingAssociateRq,
    /// Sta3: awaiting the local A-ASSOCIATE response, [`UpperLayer::accept`] or
    /// [`UpperLayer::reject`] (acceptor).
    AwaitingLocalAssociateResponse,
    /// Sta5: awaiting the A-ASSOCIATE-AC or -RJ (requestor).
    AwaitingAssociateAc,
    /// Sta6: association established, data transfer.
    Established,
    /// Sta7: awaiting the A-RELEASE-RP.
    AwaitingReleaseRp,
    /// Sta8: awaiting the local A-RELEASE response, [`UpperLayer::release_response`].
    AwaitingLocalReleaseResponse,
    /// Sta9: release collision, requestor: the local A-RELEASE response is due.
    CollisionRequestor,
    /// Sta10: release collision, acceptor: awaiting the A-RELEASE-RP.
    CollisionAcceptor,
    /// Sta11: release collision, requestor: awaiting the A-RELEASE-RP.
    CollisionAwaitingReleaseRp,
    /// Sta12: release collision, acceptor: the local A-RELEASE response is due.
    CollisionAwaitingLocalResponse,
    /// Sta13: awaiting the transport to close (ARTIM running).
    AwaitingClose,
}

impl State {
    /// The state's number in PS3.8 Table 9-10 (`StaN`).
    pub fn number(self) -> u8 {
        match self {
            State::Idle => 1,
            State::AwaitingAssociateRq => 2,
            State::AwaitingLocalAssociateResponse => 3,
            State::AwaitingAssociateAc => 5,
            State::Established => 6,
            State::AwaitingReleaseRp => 7,
            State::AwaitingLocalReleaseResponse => 8,
            State::CollisionRequestor => 9,
            State::CollisionAcceptor => 10,
            State::CollisionAwaitingReleaseRp => 11,
            State::CollisionAwaitingLocalResponse => 12,
            State::AwaitingClose => 13,
        }
    }
}

/// What the machine tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A-ASSOCIATE indication (acceptor, Sta2 → Sta3): answer with [`UpperLayer::accept`] or
    /// [`UpperLayer::reject`].
    AssociateRequested(Associate),
    /// A-ASSOCIATE confirmation, accepted (requestor, Sta5 → Sta6).
    Accepted(Associate),
    /// A-ASSOCIATE confirmation, rejected (requestor, Sta5 → Sta1).
    Rejected {
        /// 1 permanent, 2 transient.
        result: u8,
        /// Who rejected.
        source: u8,
        /// Why ([`pdu::reject_reason`]).
        reason: u8,
    },
    /// A whole command set, or a fragment of the data set the last command announced,
    /// reassembled from its PDVs.
    Part(Part),
    /// A-RELEASE indication (Sta6 → Sta8): answer with [`UpperLayer::release_response`].
    ReleaseRequested,
    /// A-RELEASE confirmation: the peer's A-RELEASE-RP came (Sta7 → Sta1, or in a collision).
    Released,
    /// The peer aborted (A-ABORT received); the transport is to be closed.
    Aborted {
        /// 0 service user, 2 service provider.
        source: u8,
        /// Why ([`pdu::abort_reason`]).
        reason: u8,
    },
}

/// A presentation context as negotiated: what was proposed and what the acceptor answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Presentation context id.
    pub id: u8,
    /// The SOP class proposed.
    pub abstract_syntax: String,
    /// The transfer syntaxes proposed.
    pub proposed: Vec<String>,
    /// The one the acceptor chose (meaningful only when accepted).
    pub transfer_syntax: String,
    /// 0 accepted; see [`pdu::PresentationContext::result_text`].
    pub result: u8,
}

impl Context {
    /// Whether the acceptor accepted it.
    pub fn accepted(&self) -> bool {
        self.result == 0
    }

    /// The acceptor's answer in words.
    pub fn result_text(&self) -> &'static str {
        pdu::PresentationContext {
            id: self.id,
            abstract_syntax: String::new(),
            transfer_syntaxes: Vec::new(),
            result: self.result,
        }
        .result_text()
    }
}

/// The association state machine. See the module documentation.
#[derive(Debug)]
pub struct UpperLayer {
    role: Role,
    state: State,
    /// The largest P-DATA-TF this side receives (0 = unlimited).
    max_pdu: u32,
    /// The peer's (0 = unlimited).
    peer_max: u32,
    rbuf: BytesMut,
    out: Vec<u8>,
    events: VecDeque<Event>,
    /// The A-ASSOCIATE-RQ (sent or received), for negotiating contexts.
    request: Option<Associate>,
    contexts: Vec<Context>,
    pdvs: PdvStream,
}

/// The name of a PDU, for errors.
pub fn pdu_name(p: &Pdu) -> &'static str {
    match p {
        Pdu::AssociateRq(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociateAc(_) => "A-ASSOCIATE-AC",
        Pdu::AssociateRj { .. } => "A-ASSOCIATE-RJ",
        Pdu::PData(_) => "P-DATA-TF",
        Pdu::ReleaseRq => "A-RELEASE-RQ",
        Pdu::ReleaseRp => "A-RELEASE-RP",
        Pdu::Abort { .. } => "A-ABORT",
    }
}

fn misuse(what: &str, state: State) -> Error {
    Error::Protocol(format!(
        "{what} is not allowed in Sta{} ({state:?})",
        state.number()
    ))
}

impl UpperLayer {
    fn new(role: Role, state: State, max_pdu: u32) -> UpperLayer {
        UpperLayer {
            role,
            state,
            max_pdu,
            peer_max: ABSENT_PEER_MAX,
            rbuf: BytesMut::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            request: None,
            contexts: Vec::new(),
            pdvs: PdvStream::default(),
        }
    }

    /// A requestor whose transport is open (AE-2): `rq` is queued, the state is Sta5. The
    /// maximum length in `rq` is what this side enforces on P-DATA-TF.
    pub fn requestor(rq: Associate) -> UpperLayer {
        let mut ul = UpperLayer::new(
            Role::Requestor,
            State::AwaitingAssociateAc,
            rq.user.max_length.unwrap_or(0),
        );
        pdu::encode(&Pdu::AssociateRq(rq.clone()), &mut ul.out);
        ul.request = Some(rq);
        ul
    }

    /// An acceptor whose transport was just accepted (AE-5): Sta2, ARTIM running. `max_pdu`
    /// is the largest P-DATA-TF it receives (advertised in the A-ASSOCIATE-AC).
    pub fn acceptor(max_pdu: u32) -> UpperLayer {
        UpperLayer::new(Role::Acceptor, State::AwaitingAssociateRq, max_pdu)
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the association is over and the driver should close the transport (Sta1, or
    /// Sta13 once its last PDUs are sent).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Idle | State::AwaitingClose)
    }

    /// Whether P-DATA may be sent now (Sta6, and Sta8 where PS3.8 still allows it).
    pub fn can_send_data(&self) -> bool {
        matches!(
            self.state,
            State::Established | State::AwaitingLocalReleaseResponse
        )
    }

    /// Whether the ARTIM timer should be running (Sta2 and Sta13): arm it when this turns
    /// true, and call [`UpperLayer::handle_artim_expired`] when it fires.
    pub fn artim(&self) -> bool {
        matches!(
            self.state,
            State::AwaitingAssociateRq | State::AwaitingClose
        )
    }

    /// ARTIM expired (AA-2): Sta1, the driver closes the transport.
    pub fn handle_artim_expired(&mut self) {
        if self.artim() {
            self.state = State::Idle;
        }
    }

    /// The transport closed (AA-4 or AR-5). `true` when that was expected (Sta1, Sta13),
    /// `false` when the association was cut.
    pub fn handle_closed(&mut self) -> bool {
        let expected = self.is_finished();
        self.state = State::Idle;
        expected
    }

    /// The peer's maximum PDU length (0 = unlimited; 16384 assumed when it sent none).
    pub fn peer_max_pdu(&self) -> u32 {
        self.peer_max
    }

    /// The largest PDV fragment sent: the peer's maximum less the 6 bytes of the PDV header
    /// and PDU length, kept even, so every fragment of an even data set is even (PS3.8 Annex
    /// E); 1 MiB when the peer allows any length.
    pub fn max_fragment(&self) -> usize {
        if self.peer_max == 0 {
            UNLIMITED_FRAGMENT
        } else {
            (self.peer_max as usize)
                .saturating_sub(6)
                .clamp(2, UNLIMITED_FRAGMENT)
                & !1
        }
    }

    /// The presentation contexts proposed and how each was answered (empty before the
    /// answer).
    pub fn contexts(&self) -> &[Context] {
        &self.contexts
    }

    /// The accepted context `pc`.
    pub fn accepted_context(&self, pc: u8) -> Option<&Context> {
        self.contexts.iter().find(|c| c.id == pc && c.accepted())
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes of queued PDUs not yet taken.
    pub fn pending_transmit(&self) -> usize {
        self.out.len()
    }

    /// The queued PDUs, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// The queued PDUs into `dst` (cleared first), reusing both buffers.
    pub fn transmit_into(&mut self, dst: &mut Vec<u8>) {
        dst.clear();
        std::mem::swap(dst, &mut self.out);
    }

    /// Drops queued PDUs not yet taken (a message the driver gave up on before any of it
    /// left).
    pub fn discard_unsent(&mut self) {
        self.out.clear();
    }

    /// Takes bytes from the peer. `Err` is the peer's fault that ended the association: the
    /// A-ABORT is queued (PS3.8 Table 9-10, AA-1 / AA-8) and the state is Sta13. Bytes that
    /// arrive while a local A-ASSOCIATE answer is due (Sta3) wait for the next call (an empty
    /// slice will do).
    ///
    /// # Errors
    /// The PDU that could not be decoded ([`Error::PduTooLarge`], [`Error::Pdu`]) or was out of
    /// place ([`Error::Protocol`]).
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.rbuf.extend_from_slice(bytes);
        loop {
            match self.state {
                State::Idle => {
                    self.rbuf.clear();
                    return Ok(());
                }
                State::AwaitingLocalAssociateResponse => return Ok(()),
                _ => {}
            }
            let max = if self.state == State::AwaitingAssociateRq {
                pdu::MAX_CONTROL_PDU
            } else {
                self.max_pdu
            };
            match pdu::decode(&mut self.rbuf, max) {
                Ok(Some(p)) => self.pdu(p)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.rbuf.clear();
                    let reason = if matches!(e, Error::Pdu(ref m) if m.starts_with("unknown")) {
                        1
                    } else {
                        6
                    };
                    return match self.state {
                        // AA-7: answer with an A-ABORT, stay.
                        State::AwaitingClose => {
                            self.send_abort(2, reason);
                            Ok(())
                        }
                        // AA-1
                        State::AwaitingAssociateRq => {
                            self.send_abort(0, 0);
                            self.state = State::AwaitingClose;
                            Err(e)
                        }
                        // AA-8
                        _ => {
                            self.send_abort(2, reason);
                            self.state = State::AwaitingClose;
                            Err(e)
                        }
                    };
                }
            }
        }
    }

    fn send_abort(&mut self, source: u8, reason: u8) {
        pdu::encode(&Pdu::Abort { source, reason }, &mut self.out);
    }

    /// An unexpected PDU (AA-1 in Sta2, AA-8 elsewhere): A-ABORT queued, Sta13.
    fn unexpected(&mut self, p: &Pdu) -> Result<(), Error> {
        if self.state == State::AwaitingAssociateRq {
            self.send_abort(0, 0);
        } else {
            self.send_abort(2, 2);
        }
        let state = self.state;
        self.state = State::AwaitingClose;
        Err(Error::Protocol(format!(
            "unexpected {} in Sta{} ({state:?})",
            pdu_name(p),
            state.number()
        )))
    }

    /// A PDU fault inside a P-DATA-TF (AA-8 with `reason`): A-ABORT queued, Sta13.
    fn invalid(&mut self, reason: u8, why: String) -> Result<(), Error> {
        self.send_abort(2, reason);
        self.state = State::AwaitingClose;
        Err(Error::Protocol(why))
    }

    fn pdu(&mut self, p: Pdu) -> Result<(), Error> {
        use State::*;
        match (self.state, p) {
            // AA-3 (AA-2 in Sta2 and Sta13): the peer aborted.
            (AwaitingClose, Pdu::Abort { .. }) => self.state = Idle,
            (_, Pdu::Abort { source, reason }) => {
                self.state = Idle;
                self.events.push_back(Event::Aborted { source, reason });
            }
            // AA-7 / AA-6 in Sta13.
            (AwaitingClose, Pdu::AssociateRq(_)) => self.send_abort(2, 2),
            (AwaitingClose, _) => {}
            // AE-6
            (AwaitingAssociateRq, Pdu::AssociateRq(rq)) => {
                self.peer_max = rq.user.max_length.unwrap_or(ABSENT_PEER_MAX);
                self.request = Some(rq.clone());
                self.state = AwaitingLocalAssociateResponse;
                self.events.push_back(Event::AssociateRequested(rq));
            }
            // AE-3
            (AwaitingAssociateAc, Pdu::AssociateAc(ac)) => {
                self.peer_max = ac.user.max_length.unwrap_or(ABSENT_PEER_MAX);
                self.negotiated(&ac);
                self.state = Established;
                self.events.push_back(Event::Accepted(ac));
            }
            // AE-4
            (
                AwaitingAssociateAc,
                Pdu::AssociateRj {
                    result,
                    source,
                    reason,
                },
            ) => {
                self.state = Idle;
                self.events.push_back(Event::Rejected {
                    result,
                    source,
                    reason,
                });
            }
            // DT-2, and AR-6 (P-DATA still delivered while awaiting the A-RELEASE-RP).
            (Established | AwaitingReleaseRp, Pdu::PData(pdvs)) => {
                for pdv in pdvs {
                    self.pdv(pdv)?;
                }
            }
            // AR-2
            (Established, Pdu::ReleaseRq) => {
                self.state = AwaitingLocalReleaseResponse;
                self.events.push_back(Event::ReleaseRequested);
            }
            // AR-3
            (AwaitingReleaseRp | CollisionAwaitingReleaseRp, Pdu::ReleaseRp) => {
                self.state = Idle;
                self.events.push_back(Event::Released);
            }
            // AR-8: a release collision. The requestor answers at once (AR-9, Sta9 → Sta11);
            // the acceptor waits for the A-RELEASE-RP (Sta10).
            (AwaitingReleaseRp, Pdu::ReleaseRq) => match self.role {
                Role::Requestor => {
                    self.state = CollisionRequestor;
                    pdu::encode(&Pdu::ReleaseRp, &mut self.out);
                    self.state = CollisionAwaitingReleaseRp;
                }
                Role::Acceptor => self.state = CollisionAcceptor,
            },
            // AR-10, then the implied local response (AR-4, Sta12 → Sta13).
            (CollisionAcceptor, Pdu::ReleaseRp) => {
                self.state = CollisionAwaitingLocalResponse;
                self.events.push_back(Event::Released);
                pdu::encode(&Pdu::ReleaseRp, &mut self.out);
                self.state = AwaitingClose;
            }
            (_, p) => return self.unexpected(&p),
        }
        Ok(())
    }

    /// Records the contexts as the A-ASSOCIATE-AC `ac` answered the request.
    fn negotiated(&mut self, ac: &Associate) {
        let Some(rq) = &self.request else {
            return;
        };
        self.contexts = rq
            .presentation_contexts
            .iter()
            .map(|p| {
                let answer = ac.presentation_contexts.iter().find(|c| c.id == p.id);
                Context {
                    id: p.id,
                    abstract_syntax: p.abstract_syntax.clone(),
                    proposed: p.transfer_syntaxes.clone(),
                    transfer_syntax: answer
                        .and_then(|c| c.transfer_syntaxes.first().cloned())
                        .unwrap_or_default(),
                    // A context left out of the answer was not accepted.
                    result: answer.map_or(2, |c| c.result),
                }
            })
            .collect();
    }

    /// One incoming PDV, in the order [`PdvStream`] checks, on an accepted context.
    fn pdv(&mut self, pdv: Pdv) -> Result<(), Error> {
        let pc = pdv.pc_id;
        if self.accepted_context(pc).is_none() {
            return self.invalid(
                6,
                format!("PDV on presentation context {pc}, which was not accepted"),
            );
        }
        match self.pdvs.push(pdv) {
            Ok(None) => {}
            Ok(Some(part)) => self.events.push_back(Event::Part(part)),
            // Out of order: unexpected PDU parameter; else an invalid value.
            Err(e) => {
                let reason = if matches!(e, Error::Protocol(_)) {
                    5
                } else {
                    6
                };
                self.send_abort(2, reason);
                self.state = State::AwaitingClose;
                return Err(e);
            }
        }
        Ok(())
    }

    /// A-ASSOCIATE response, accepted (AE-7): queues `ac` with this side's maximum length,
    /// Sta3 → Sta6.
    ///
    /// # Errors
    /// [`Error::Protocol`] outside Sta3 (caller misuse).
    pub fn accept(&mut self, mut ac: Associate) -> Result<(), Error> {
        if self.state != State::AwaitingLocalAssociateResponse {
            return Err(misuse("A-ASSOCIATE-AC", self.state));
        }
        ac.user.max_length = Some(self.max_pdu);
        self.negotiated(&ac);
        pdu::encode(&Pdu::AssociateAc(ac), &mut self.out);
        self.state = State::Established;
        Ok(())
    }

    /// A-ASSOCIATE response, rejected (AE-8): queues the A-ASSOCIATE-RJ, Sta3 → Sta13.
    ///
    /// # Errors
    /// [`Error::Protocol`] outside Sta3 (caller misuse).
    pub fn reject(&mut self, result: u8, source: u8, reason: u8) -> Result<(), Error> {
        if self.state != State::AwaitingLocalAssociateResponse {
            return Err(misuse("A-ASSOCIATE-RJ", self.state));
        }
        pdu::encode(
            &Pdu::AssociateRj {
                result,
                source,
                reason,
            },
            &mut self.out,
        );
        self.state = State::AwaitingClose;
        Ok(())
    }

    /// Queues a command set on context `pc` (DT-1), in fragments within the peer's maximum.
    ///
    /// # Errors
    /// [`Error::Protocol`] when P-DATA cannot be sent in this state (caller misuse).
    pub fn send_command(&mut self, pc: u8, cmd: &Command) -> Result<(), Error> {
        if !self.can_send_data() {
            return Err(misuse("P-DATA", self.state));
        }
        let bytes = cmd.encode();
        let mut chunks = bytes.chunks(self.max_fragment()).peekable();
        while let Some(chunk) = chunks.next() {
            pdu::encode_pdata(pc, true, chunks.peek().is_none(), chunk, &mut self.out);
        }
        Ok(())
    }

    /// Queues data set bytes on context `pc` (DT-1), one PDU per fragment of at most
    /// [`UpperLayer::max_fragment`] bytes; the last fragment is marked last when `last`. Pass
    /// whole fragments (or the end) to keep PDUs full.
    ///
    /// # Errors
    /// [`Error::Protocol`] when P-DATA cannot be sent in this state (caller misuse).
    pub fn send_data(&mut self, pc: u8, data: &[u8], last: bool) -> Result<(), Error> {
        if !self.can_send_data() {
            return Err(misuse("P-DATA", self.state));
        }
        if data.is_empty() {
            if last {
                pdu::encode_pdata(pc, false, true, &[], &mut self.out);
            }
            return Ok(());
        }
        let mut chunks = data.chunks(self.max_fragment()).peekable();
        while let Some(chunk) = chunks.next() {
            let end = last && chunks.peek().is_none();
            pdu::encode_pdata(pc, false, end, chunk, &mut self.out);
        }
        Ok(())
    }

    /// A-RELEASE request (AR-1): queues the A-RELEASE-RQ, Sta6 → Sta7.
    ///
    /// # Errors
    /// [`Error::Protocol`] outside Sta6 (caller misuse).
    pub fn release(&mut self) -> Result<(), Error> {
        if self.state != State::Established {
            return Err(misuse("A-RELEASE-RQ", self.state));
        }
        pdu::encode(&Pdu::ReleaseRq, &mut self.out);
        self.state = State::AwaitingReleaseRp;
        Ok(())
    }

    /// A-RELEASE response (AR-4): queues the A-RELEASE-RP, Sta8 → Sta13.
    ///
    /// # Errors
    /// [`Error::Protocol`] outside Sta8 (caller misuse).
    pub fn release_response(&mut self) -> Result<(), Error> {
        if self.state != State::AwaitingLocalReleaseResponse {
            return Err(misuse("A-RELEASE-RP", self.state));
        }
        pdu::encode(&Pdu::ReleaseRp, &mut self.out);
        self.state = State::AwaitingClose;
        Ok(())
    }

    /// A-ABORT request (AA-1): queues an A-ABORT from `source` (0 service user, 2 service
    /// provider) with `reason`, → Sta13. Nothing happens once the association is over.
    pub fn abort(&mut self, source: u8, reason: u8) {
        if !self.is_finished() {
            self.send_abort(source, reason);
            self.state = State::AwaitingClose;
        }
    }
}

#[cfg(test)]
mod tests;
