//! The association acceptor (the SCP side), sans-IO: bytes from the SCU in, [`ScpEvent`]s and
//! bytes to send out. The upper layer (states, PDU order, PDV reassembly, release, abort, the
//! peer's maximum PDU length) is the association state machine it shares with the requestor,
//! [`crate::ul::UpperLayer`]; this module is only the SCP's policy: which contexts to accept,
//! and what C-ECHO and C-STORE get. It does no I/O and keeps no clock (the tokio server in
//! [`crate::scp`] owns the timers).
//!
//! Negotiation (PS3.8 §9.3.2-3, PS3.7 Annex D): the called AE title must match when one is
//! configured (else A-ASSOCIATE-RJ, reason 7); Verification and every Storage SOP class
//! (`1.2.840.10008.5.1.4.1.1.*`) are accepted, each in the first transfer syntax the SCU
//! proposed among Implicit VR LE, Explicit VR LE, Deflated Explicit VR LE and the encapsulated
//! (compressed) syntaxes, which are taken as they are. C-ECHO is answered at once; a C-STORE's
//! data set is handed out fragment by fragment as it arrives ([`ScpEvent::StoreData`]), never
//! reassembled, and its C-STORE-RSP waits for the application's status
//! ([`Acceptor::store_response`]).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::dimse::{self, Command, Part, Status};
use crate::pdu::{self, Associate, PresentationContext, UserInfo};
use crate::ul::{Event, UpperLayer};
use crate::{Error, uids};

/// How the acceptor negotiates.
#[derive(Debug, Clone)]
pub struct AcceptorConfig {
    /// This SCP's AE title; when set, an A-ASSOCIATE-RQ calling another is rejected.
    pub ae_title: Option<String>,
    /// The largest P-DATA-TF this side receives (advertised, and enforced).
    pub max_pdu: u32,
    /// The largest data set accepted for one C-STORE, in bytes; a larger one aborts the
    /// association.
    pub max_object: u64,
}

impl Default for AcceptorConfig {
    fn default() -> Self {
        AcceptorConfig {
            ae_title: None,
            max_pdu: 256 << 10,
            max_object: 4 << 30,
        }
    }
}

/// What happened on the association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScpEvent {
    /// The association was accepted.
    Associated {
        /// The SCU's AE title.
        calling_ae: String,
        /// The AE title it called.
        called_ae: String,
    },
    /// The association was rejected (the A-ASSOCIATE-RJ is queued).
    Rejected(String),
    /// A C-ECHO was answered.
    Echo,
    /// A C-STORE began; its data set follows as [`ScpEvent::StoreData`].
    StoreBegin {
        /// Affected SOP Class UID.
        sop_class: String,
        /// Affected SOP Instance UID.
        sop_instance: String,
        /// The context's transfer syntax: the data set's.
        transfer_syntax: String,
    },
    /// A fragment of the data set; `last` ends it: answer with [`Acceptor::store_response`].
    StoreData {
        /// The bytes.
        data: Bytes,
        /// Whether the data set is complete.
        last: bool,
    },
    /// The SCU released the association (the A-RELEASE-RP is queued).
    Released,
    /// The association was aborted, by the SCU or by this side (the A-ABORT is queued).
    Aborted(String),
}

/// A C-STORE in progress: its context, message id, and bytes received.
#[derive(Debug, Clone)]
struct Store {
    pc: u8,
    message_id: u16,
    sop_class: String,
    sop_instance: String,
    received: u64,
    complete: bool,
}

/// The acceptor. See the module documentation.
#[derive(Debug)]
pub struct Acceptor {
    cfg: AcceptorConfig,
    ul: UpperLayer,
    store: Option<Store>,
    events: VecDeque<ScpEvent>,
}

/// Whether this SCP stores objects of `sop_class`.
pub fn is_storage_class(sop_class: &str) -> bool {
    sop_class.starts_with("1.2.840.10008.5.1.4.1.1.")
}

/// Whether this SCP accepts a data set in `ts`: Implicit/Explicit VR LE, Deflate, and the
/// encapsulated syntaxes (JPEG family, JPEG-LS, JPEG 2000, RLE, MPEG/HEVC), as they are.
pub fn accepts_transfer_syntax(ts: &str) -> bool {
    matches!(
        ts,
        uids::IMPLICIT_VR_LE | uids::EXPLICIT_VR_LE | uids::DEFLATED_EXPLICIT_VR_LE
    ) || ts.starts_with("1.2.840.10008.1.2.4.")
        || ts == "1.2.840.10008.1.2.5"
}

impl Acceptor {
    /// An acceptor waiting for an A-ASSOCIATE-RQ.
    pub fn new(cfg: AcceptorConfig) -> Acceptor {
        Acceptor {
            ul: UpperLayer::acceptor(cfg.max_pdu),
            cfg,
            store: None,
            events: VecDeque::new(),
        }
    }

    /// The association state machine underneath (its state, negotiated contexts, ARTIM).
    pub fn upper_layer(&self) -> &UpperLayer {
        &self.ul
    }

    /// Whether the association is over (after a reject, release or abort).
    pub fn is_closed(&self) -> bool {
        self.ul.is_finished()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ScpEvent> {
        self.events.pop_front()
    }

    /// Bytes to send to the SCU, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.ul.poll_transmit()
    }

    /// Aborts (A-ABORT from the service provider, reason 0 unless `reason`) and closes.
    pub fn abort(&mut self, why: String, reason: u8) {
        if !self.ul.is_finished() {
            self.ul.abort(2, reason);
            self.events.push_back(ScpEvent::Aborted(why));
        }
    }

    /// Takes bytes from the SCU. Faults of the SCU end in an A-ABORT (queued) and an
    /// [`ScpEvent::Aborted`], not an error.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        loop {
            if let Err(e) = self.ul.handle_bytes(input) {
                self.events.push_back(ScpEvent::Aborted(e.to_string()));
            }
            input = &[];
            // Bytes after the A-ASSOCIATE-RQ wait in the machine until it is answered.
            let answered = self.drain();
            if !answered {
                return;
            }
        }
    }

    /// Acts on the machine's events; `true` when an A-ASSOCIATE-RQ was answered (so bytes
    /// held back behind it are to be read).
    fn drain(&mut self) -> bool {
        let mut answered = false;
        while let Some(e) = self.ul.poll_event() {
            match e {
                Event::AssociateRequested(rq) => {
                    self.negotiate(rq);
                    answered = true;
                }
                // What was already decoded when this side aborted is dropped.
                Event::Part(_) if self.ul.is_finished() => {}
                Event::Part(Part::Command { pc, command }) => self.command_set(pc, command),
                Event::Part(Part::Data { pc, data, last }) => self.data(pc, data, last),
                Event::ReleaseRequested => {
                    if self.ul.release_response().is_ok() {
                        self.events.push_back(ScpEvent::Released);
                    }
                }
                Event::Released => self.events.push_back(ScpEvent::Released),
                Event::Aborted { source, reason } => {
                    let (s, r) = pdu::abort_reason(source, reason);
                    self.events
                        .push_back(ScpEvent::Aborted(format!("aborted by the {s}: {r}")));
                }
                // Requestor-side events.
                Event::Accepted(_) | Event::Rejected { .. } => {}
            }
        }
        answered && !self.ul.is_finished()
    }

    fn reject(&mut self, reason: u8, why: String) {
        // Only fails outside Sta3, and negotiate runs only in Sta3.
        let _ = self.ul.reject(1, 1, reason);
        self.events.push_back(ScpEvent::Rejected(why));
    }

    fn negotiate(&mut self, rq: Associate) {
        if let Some(me) = &self.cfg.ae_title
            && rq.called_ae != *me
        {
            let why = format!("called AE title {:?} is not {me:?}", rq.called_ae);
            return self.reject(7, why);
        }
        if rq.application_context != uids::APPLICATION_CONTEXT {
            return self.reject(2, "application context not supported".into());
        }
        let mut answers = Vec::new();
        for pc in &rq.presentation_contexts {
            let known =
                pc.abstract_syntax == uids::VERIFICATION || is_storage_class(&pc.abstract_syntax);
            let ts = pc.transfer_syntaxes.iter().find(|ts| {
                if pc.abstract_syntax == uids::VERIFICATION {
                    uids::uncompressed_le(ts).is_some()
                } else {
                    accepts_transfer_syntax(ts)
                }
            });
            let (result, ts) = match (known, ts) {
                (false, _) => (3, pc.transfer_syntaxes.first().cloned()),
                (true, None) => (4, pc.transfer_syntaxes.first().cloned()),
                (true, Some(ts)) => (0, Some(ts.clone())),
            };
            answers.push(PresentationContext {
                id: pc.id,
                abstract_syntax: String::new(),
                transfer_syntaxes: ts.into_iter().collect(),
                result,
            });
        }
        let ac = Associate {
            called_ae: rq.called_ae.clone(),
            calling_ae: rq.calling_ae.clone(),
            application_context: uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: answers,
            user: UserInfo {
                max_length: Some(self.cfg.max_pdu),
                implementation_class_uid: uids::IMPLEMENTATION_CLASS_UID.into(),
                implementation_version_name: Some(uids::IMPLEMENTATION_VERSION_NAME.into()),
                other: Vec::new(),
            },
        };
        if self.ul.accept(ac).is_ok() {
            self.events.push_back(ScpEvent::Associated {
                calling_ae: rq.calling_ae,
                called_ae: rq.called_ae,
            });
        }
    }

    fn data(&mut self, pc: u8, data: Bytes, last: bool) {
        let max = self.cfg.max_object;
        let Some(store) = self.store.as_mut().filter(|s| !s.complete) else {
            return self.abort("a data set fragment without its C-STORE-RQ".into(), 5);
        };
        if store.pc != pc {
            return self.abort("a data set on another presentation context".into(), 5);
        }
        store.received += data.len() as u64;
        if store.received > max {
            return self.abort(format!("data set larger than {max} bytes"), 0);
        }
        store.complete = last;
        self.events.push_back(ScpEvent::StoreData { data, last });
    }

    fn command_set(&mut self, pc: u8, c: Command) {
        if self.store.is_some() {
            return self.abort(
                "a command arrived before the C-STORE was answered".into(),
                5,
            );
        }
        // The machine passes on commands only on accepted contexts.
        let Some(ctx) = self.ul.accepted_context(pc) else {
            return self.abort(
                format!("command on presentation context {pc}, not accepted"),
                6,
            );
        };
        let (abstract_syntax, ts) = (ctx.abstract_syntax.clone(), ctx.transfer_syntax.clone());
        match c.command_field {
            dimse::C_ECHO_RQ => {
                let rsp = Command {
                    affected_sop_class: Some(uids::VERIFICATION.into()),
                    command_field: dimse::C_ECHO_RSP,
                    message_id_responded: c.message_id,
                    data_set_type: dimse::NO_DATA_SET,
                    status: Some(0),
                    ..Command::default()
                };
                if self.ul.send_command(pc, &rsp).is_ok() {
                    self.events.push_back(ScpEvent::Echo);
                }
            }
            dimse::C_STORE_RQ if c.has_data_set() => {
                let sop_class = c.affected_sop_class.unwrap_or_default();
                if sop_class != abstract_syntax {
                    return self.abort(
                        format!("C-STORE of {sop_class} on the context for {abstract_syntax}"),
                        6,
                    );
                }
                let sop_instance = c.affected_sop_instance.unwrap_or_default();
                self.store = Some(Store {
                    pc,
                    message_id: c.message_id.unwrap_or(0),
                    sop_class: sop_class.clone(),
                    sop_instance: sop_instance.clone(),
                    received: 0,
                    complete: false,
                });
                self.events.push_back(ScpEvent::StoreBegin {
                    sop_class,
                    sop_instance,
                    transfer_syntax: ts,
                });
            }
            other => self.abort(format!("DIMSE command 0x{other:04X} is not served here"), 0),
        }
    }

    /// Answers the C-STORE whose data set is complete with `status` (0x0000 Success once the
    /// object is safe; 0xA700 Out of Resources when it could not be kept).
    ///
    /// # Errors
    /// [`Error::Protocol`] when no complete C-STORE waits for an answer (caller misuse).
    pub fn store_response(&mut self, status: Status) -> Result<(), Error> {
        let Some(store) = self.store.take_if(|s| s.complete) else {
            return Err(Error::Protocol("no C-STORE waits for a response".into()));
        };
        let rsp = Command {
            affected_sop_class: Some(store.sop_class),
            command_field: dimse::C_STORE_RSP,
            message_id_responded: Some(store.message_id),
            data_set_type: dimse::NO_DATA_SET,
            status: Some(status.0),
            affected_sop_instance: Some(store.sop_instance),
            ..Command::default()
        };
        if self.ul.can_send_data() {
            self.ul.send_command(store.pc, &rsp)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::Pdu;
    use bytes::BytesMut;

    fn rq(called: &str, contexts: &[(&str, &[&str])]) -> Vec<u8> {
        let mut out = Vec::new();
        pdu::encode(
            &Pdu::AssociateRq(Associate {
                called_ae: called.into(),
                calling_ae: "SCU".into(),
                application_context: uids::APPLICATION_CONTEXT.into(),
                presentation_contexts: contexts
                    .iter()
                    .enumerate()
                    .map(|(i, (a, ts))| PresentationContext {
                        id: 2 * i as u8 + 1,
                        abstract_syntax: (*a).into(),
                        transfer_syntaxes: ts.iter().map(|s| (*s).into()).collect(),
                        result: 0,
                    })
                    .collect(),
                user: UserInfo {
                    max_length: Some(16384),
                    implementation_class_uid: "1.2.3".into(),
                    ..UserInfo::default()
                },
            }),
            &mut out,
        );
        out
    }

    #[test]
    fn negotiates_stores_in_pieces_and_answers_when_told() {
        let mut a = Acceptor::new(AcceptorConfig {
            ae_title: Some("OUTPOST".into()),
            ..AcceptorConfig::default()
        });
        let ct = "1.2.840.10008.5.1.4.1.1.2";
        let b = rq(
            "OUTPOST",
            &[
                (ct, &["1.2.840.10008.1.2.4.50", uids::IMPLICIT_VR_LE]),
                ("1.2.3.4", &[uids::IMPLICIT_VR_LE]),
                (ct, &[uids::EXPLICIT_VR_BE]),
            ],
        );
        // one byte at a time
        for byte in &b {
            a.handle_bytes(std::slice::from_ref(byte));
        }
        assert!(matches!(a.poll_event(), Some(ScpEvent::Associated { .. })));
        let mut ac = BytesMut::from(&a.poll_transmit().unwrap()[..]);
        let Some(Pdu::AssociateAc(ac)) = pdu::decode(&mut ac, 0).unwrap() else {
            panic!()
        };
        let results: Vec<u8> = ac.presentation_contexts.iter().map(|c| c.result).collect();
        assert_eq!(results, [0, 3, 4]);
        assert_eq!(
            ac.presentation_contexts[0].transfer_syntaxes,
            ["1.2.840.10008.1.2.4.50"]
        );
        let cmd = Command {
            affected_sop_class: Some(ct.into()),
            command_field: dimse::C_STORE_RQ,
            message_id: Some(7),
            priority: Some(0),
            data_set_type: 1,
            affected_sop_instance: Some("2.25.1".into()),
            ..Command::default()
        };
        let mut p = Vec::new();
        pdu::encode_pdata(1, true, true, &cmd.encode(), &mut p);
        pdu::encode_pdata(1, false, false, b"ab", &mut p);
        pdu::encode_pdata(1, false, true, b"cd", &mut p);
        a.handle_bytes(&p);
        assert!(matches!(a.poll_event(), Some(ScpEvent::StoreBegin { .. })));
        assert!(matches!(
            a.poll_event(),
            Some(ScpEvent::StoreData { last: false, .. })
        ));
        assert!(matches!(
            a.poll_event(),
            Some(ScpEvent::StoreData { last: true, .. })
        ));
        // nothing answered until the application says so
        assert!(a.poll_transmit().is_none());
        a.store_response(Status(0xA700)).unwrap();
        let mut rsp = BytesMut::from(&a.poll_transmit().unwrap()[..]);
        let Some(Pdu::PData(pdvs)) = pdu::decode(&mut rsp, 0).unwrap() else {
            panic!()
        };
        let c = Command::decode(&pdvs[0].data).unwrap();
        assert_eq!(c.status, Some(0xA700));
        assert_eq!(c.message_id_responded, Some(7));
        assert!(a.store_response(Status(0)).is_err());
    }

    #[test]
    fn wrong_called_ae_is_rejected() {
        let mut a = Acceptor::new(AcceptorConfig {
            ae_title: Some("OUTPOST".into()),
            ..AcceptorConfig::default()
        });
        a.handle_bytes(&rq(
            "OTHER",
            &[(uids::VERIFICATION, &[uids::IMPLICIT_VR_LE])],
        ));
        assert!(matches!(a.poll_event(), Some(ScpEvent::Rejected(_))));
        assert!(a.is_closed());
        assert_eq!(a.poll_transmit().unwrap()[0], 3);
    }
}
