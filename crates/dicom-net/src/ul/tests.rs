//! The association state machine driven by PDUs, both roles, no sockets: a requestor and an
//! acceptor wired back to back (quinn's `Pair`), and hand-made PDUs for the faults.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::dimse;
use crate::pdu::{PresentationContext, UserInfo};
use crate::uids;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

fn rq(max: u32) -> Associate {
    Associate {
        called_ae: "SCP".into(),
        calling_ae: "SCU".into(),
        application_context: uids::APPLICATION_CONTEXT.into(),
        presentation_contexts: vec![
            PresentationContext {
                id: 1,
                abstract_syntax: CT.into(),
                transfer_syntaxes: vec![uids::EXPLICIT_VR_LE.into()],
                result: 0,
            },
            PresentationContext {
                id: 3,
                abstract_syntax: "1.2.3.4".into(),
                transfer_syntaxes: vec![uids::IMPLICIT_VR_LE.into()],
                result: 0,
            },
        ],
        user: UserInfo {
            max_length: Some(max),
            implementation_class_uid: "1.2.3".into(),
            ..UserInfo::default()
        },
    }
}

/// The acceptor's answer: context 1 accepted, context 3 refused.
fn ac() -> Associate {
    Associate {
        presentation_contexts: vec![
            PresentationContext {
                id: 1,
                abstract_syntax: String::new(),
                transfer_syntaxes: vec![uids::EXPLICIT_VR_LE.into()],
                result: 0,
            },
            PresentationContext {
                id: 3,
                abstract_syntax: String::new(),
                transfer_syntaxes: vec![uids::IMPLICIT_VR_LE.into()],
                result: 3,
            },
        ],
        ..rq(0)
    }
}

fn store_rq() -> Command {
    Command {
        affected_sop_class: Some(CT.into()),
        command_field: dimse::C_STORE_RQ,
        message_id: Some(7),
        priority: Some(0),
        data_set_type: 1,
        affected_sop_instance: Some("2.25.1".into()),
        ..Command::default()
    }
}

fn rsp() -> Command {
    Command {
        affected_sop_class: Some(CT.into()),
        command_field: dimse::C_STORE_RSP,
        message_id_responded: Some(7),
        data_set_type: dimse::NO_DATA_SET,
        status: Some(0),
        ..Command::default()
    }
}

fn pdus(bytes: &[u8]) -> Vec<Pdu> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(p) = pdu::decode(&mut buf, 0).unwrap() {
        out.push(p);
    }
    assert!(buf.is_empty());
    out
}

fn events(ul: &mut UpperLayer) -> Vec<Event> {
    std::iter::from_fn(|| ul.poll_event()).collect()
}

/// Moves what `from` queued to `to`, one byte at a time.
fn deliver(from: &mut UpperLayer, to: &mut UpperLayer) -> Result<(), Error> {
    let bytes = from.poll_transmit().unwrap_or_default();
    for b in &bytes {
        to.handle_bytes(std::slice::from_ref(b))?;
    }
    Ok(())
}

fn bytes_of(p: &Pdu) -> Vec<u8> {
    let mut out = Vec::new();
    pdu::encode(p, &mut out);
    out
}

/// A requestor (receiving up to `scu_max`) and an acceptor (`scp_max`), associated.
fn pair(scu_max: u32, scp_max: u32) -> (UpperLayer, UpperLayer) {
    let mut scu = UpperLayer::requestor(rq(scu_max));
    let mut scp = UpperLayer::acceptor(scp_max);
    assert_eq!(scu.state(), State::AwaitingAssociateAc);
    assert!(scp.artim());
    deliver(&mut scu, &mut scp).unwrap();
    assert_eq!(scp.state(), State::AwaitingLocalAssociateResponse);
    assert!(!scp.artim());
    let Some(Event::AssociateRequested(got)) = scp.poll_event() else {
        panic!("no A-ASSOCIATE indication")
    };
    assert_eq!(got.calling_ae, "SCU");
    scp.accept(ac()).unwrap();
    deliver(&mut scp, &mut scu).unwrap();
    let Some(Event::Accepted(got)) = scu.poll_event() else {
        panic!("no A-ASSOCIATE confirmation")
    };
    assert_eq!(got.user.max_length, Some(scp_max));
    assert_eq!(scu.state(), State::Established);
    assert_eq!(scp.state(), State::Established);
    (scu, scp)
}

#[test]
fn a_store_fragmented_across_pdus_then_release() {
    // The SCP receives PDUs of at most 64 bytes: the SCU's command and data go in pieces.
    let (mut scu, mut scp) = pair(1024, 64);
    assert_eq!(scu.peer_max_pdu(), 64);
    assert_eq!(scu.max_fragment(), 58);
    assert!(scu.accepted_context(1).is_some());
    assert!(scu.accepted_context(3).is_none());
    assert_eq!(scu.contexts(), scp.contexts());

    let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
    scu.send_command(1, &store_rq()).unwrap();
    scu.send_data(1, &data[..500], false).unwrap();
    scu.send_data(1, &data[500..], true).unwrap();
    let wire = scu.poll_transmit().unwrap();
    let sent = pdus(&wire);
    assert!(sent.len() > 10);
    for p in &sent {
        let Pdu::PData(pdvs) = p else { panic!() };
        let len: usize = pdvs.iter().map(|v| v.data.len() + 6).sum();
        assert!(len <= 64, "P-DATA-TF of {len} bytes over the SCP's 64");
    }
    for b in &wire {
        scp.handle_bytes(std::slice::from_ref(b)).unwrap();
    }
    let got = events(&mut scp);
    assert_eq!(
        got[0],
        Event::Part(Part::Command {
            pc: 1,
            command: store_rq()
        })
    );
    let mut received = Vec::new();
    for (i, e) in got[1..].iter().enumerate() {
        let Event::Part(Part::Data { pc: 1, data, last }) = e else {
            panic!("{e:?}")
        };
        assert_eq!(*last, i == got.len() - 2);
        received.extend_from_slice(data);
    }
    assert_eq!(received, data);

    // The answer, then an orderly release.
    scp.send_command(1, &rsp()).unwrap();
    deliver(&mut scp, &mut scu).unwrap();
    assert_eq!(
        events(&mut scu),
        [Event::Part(Part::Command {
            pc: 1,
            command: rsp()
        })]
    );
    scu.release().unwrap();
    assert_eq!(scu.state(), State::AwaitingReleaseRp);
    deliver(&mut scu, &mut scp).unwrap();
    assert_eq!(events(&mut scp), [Event::ReleaseRequested]);
    assert_eq!(scp.state(), State::AwaitingLocalReleaseResponse);
    // PS3.8 still lets the acceptor send P-DATA in Sta8.
    assert!(scp.can_send_data());
    scp.release_response().unwrap();
    assert_eq!(scp.state(), State::AwaitingClose);
    assert!(scp.artim() && scp.is_finished());
    deliver(&mut scp, &mut scu).unwrap();
    assert_eq!(events(&mut scu), [Event::Released]);
    assert_eq!(scu.state(), State::Idle);
    scp.handle_artim_expired();
    assert_eq!(scp.state(), State::Idle);
}

#[test]
fn data_in_several_pdvs_of_one_pdu_and_bytes_held_behind_the_request() {
    // An SCU that sends its first P-DATA right behind the A-ASSOCIATE-RQ: held in Sta3 until
    // the acceptor answers, then read.
    let mut scp = UpperLayer::acceptor(16384);
    let mut wire = bytes_of(&Pdu::AssociateRq(rq(16384)));
    pdu::encode_pdata(1, true, true, &rsp().encode(), &mut wire);
    scp.handle_bytes(&wire).unwrap();
    assert!(matches!(
        events(&mut scp)[..],
        [Event::AssociateRequested(_)]
    ));
    scp.accept(ac()).unwrap();
    scp.handle_bytes(&[]).unwrap();
    assert!(matches!(
        events(&mut scp)[..],
        [Event::Part(Part::Command { pc: 1, .. })]
    ));
    // Several PDVs in one PDU, as some SCUs send them: one message all the same.
    let mut p = Vec::new();
    let cmd = store_rq().encode();
    let (a, b) = cmd.split_at(9);
    let pdv = |command: bool, last: bool, data: &[u8]| Pdv {
        pc_id: 1,
        command,
        last,
        data: Bytes::copy_from_slice(data),
    };
    pdu::encode(
        &Pdu::PData(vec![pdv(true, false, a), pdv(true, true, b)]),
        &mut p,
    );
    pdu::encode(&Pdu::PData(vec![pdv(false, false, b"ab")]), &mut p);
    pdu::encode(&Pdu::PData(vec![pdv(false, true, b"cd")]), &mut p);
    scp.handle_bytes(&p).unwrap();
    let got = events(&mut scp);
    assert_eq!(got.len(), 3);
    assert!(
        matches!(&got[2], Event::Part(Part::Data { data, last: true, .. }) if &data[..] == b"cd")
    );
}

#[test]
fn release_collision_both_sides_release() {
    let (mut scu, mut scp) = pair(16384, 16384);
    scu.release().unwrap();
    scp.release().unwrap();
    // Each receives the other's A-RELEASE-RQ while awaiting its A-RELEASE-RP.
    let to_scp = scu.poll_transmit().unwrap();
    let to_scu = scp.poll_transmit().unwrap();
    scp.handle_bytes(&to_scp).unwrap();
    assert_eq!(scp.state(), State::CollisionAcceptor); // Sta10
    scu.handle_bytes(&to_scu).unwrap();
    // Sta9: the requestor answers at once, then awaits the acceptor's answer (Sta11).
    assert_eq!(scu.state(), State::CollisionAwaitingReleaseRp);
    assert_eq!(pdus(&scu.poll_transmit().unwrap()), [Pdu::ReleaseRp]);
    scp.handle_bytes(&bytes_of(&Pdu::ReleaseRp)).unwrap();
    // Sta12: the acceptor's confirmation, its answer, Sta13.
    assert_eq!(events(&mut scp), [Event::Released]);
    assert_eq!(scp.state(), State::AwaitingClose);
    assert_eq!(pdus(&scp.poll_transmit().unwrap()), [Pdu::ReleaseRp]);
    scu.handle_bytes(&bytes_of(&Pdu::ReleaseRp)).unwrap();
    assert_eq!(events(&mut scu), [Event::Released]);
    assert_eq!(scu.state(), State::Idle);
    assert_eq!(State::CollisionRequestor.number(), 9);
    assert_eq!(State::CollisionAwaitingLocalResponse.number(), 12);
}

/// `p` arrives in the machine's state: A-ABORT from `source` with `reason` queued, Sta13.
fn assert_aborts(mut ul: UpperLayer, p: &Pdu, source: u8, reason: u8) {
    let before = ul.state();
    ul.poll_transmit();
    let err = ul.handle_bytes(&bytes_of(p)).unwrap_err();
    assert!(
        err.to_string().contains(&format!("Sta{}", before.number())),
        "{err}"
    );
    assert_eq!(ul.state(), State::AwaitingClose, "{p:?} in {before:?}");
    assert_eq!(
        pdus(&ul.poll_transmit().unwrap()),
        [Pdu::Abort { source, reason }],
        "{p:?} in {before:?}"
    );
    assert!(ul.artim());
}

#[test]
fn unexpected_pdus_are_answered_with_a_abort() {
    let pdata = Pdu::PData(vec![Pdv {
        pc_id: 1,
        command: true,
        last: true,
        data: Bytes::from(rsp().encode()),
    }]);
    let rj = Pdu::AssociateRj {
        result: 1,
        source: 1,
        reason: 1,
    };
    let a_rq = Pdu::AssociateRq(rq(0));
    let a_ac = Pdu::AssociateAc(ac());
    // Sta2: AA-1 (service-user source).
    for p in [&a_ac, &rj, &pdata, &Pdu::ReleaseRq, &Pdu::ReleaseRp] {
        assert_aborts(UpperLayer::acceptor(16384), p, 0, 0);
    }
    // Sta5: AA-8 (service provider, unexpected PDU).
    for p in [&a_rq, &pdata, &Pdu::ReleaseRq, &Pdu::ReleaseRp] {
        assert_aborts(UpperLayer::requestor(rq(16384)), p, 2, 2);
    }
    // Sta6, both roles.
    for p in [&a_rq, &a_ac, &rj, &Pdu::ReleaseRp] {
        let (scu, scp) = pair(16384, 16384);
        assert_aborts(scu, p, 2, 2);
        assert_aborts(scp, p, 2, 2);
    }
    // Sta7: the requestor awaiting its A-RELEASE-RP.
    for p in [&a_rq, &a_ac, &rj] {
        let (mut scu, _) = pair(16384, 16384);
        scu.release().unwrap();
        assert_aborts(scu, p, 2, 2);
    }
    // Sta8: the acceptor awaiting its own release response.
    for p in [&a_rq, &pdata, &Pdu::ReleaseRq, &Pdu::ReleaseRp] {
        let (_, mut scp) = pair(16384, 16384);
        scp.handle_bytes(&bytes_of(&Pdu::ReleaseRq)).unwrap();
        assert_aborts(scp, p, 2, 2);
    }
}

#[test]
fn after_an_abort_only_a_new_request_is_answered() {
    // Sta13: AA-7 for an A-ASSOCIATE-RQ, AA-6 (ignored) for the rest, AA-2 for an A-ABORT.
    let (mut scu, _) = pair(16384, 16384);
    scu.abort(0, 0);
    assert_eq!(
        pdus(&scu.poll_transmit().unwrap()),
        [Pdu::Abort {
            source: 0,
            reason: 0
        }]
    );
    scu.handle_bytes(&bytes_of(&Pdu::ReleaseRp)).unwrap();
    assert!(scu.poll_transmit().is_none());
    scu.handle_bytes(&bytes_of(&Pdu::AssociateRq(rq(0))))
        .unwrap();
    assert!(matches!(
        pdus(&scu.poll_transmit().unwrap())[..],
        [Pdu::Abort { .. }]
    ));
    scu.handle_bytes(&bytes_of(&Pdu::Abort {
        source: 0,
        reason: 0,
    }))
    .unwrap();
    assert_eq!(scu.state(), State::Idle);
    assert!(events(&mut scu).is_empty());

    // A peer's A-ABORT in Sta6: AA-3, indication, Sta1.
    let (_, mut scp) = pair(16384, 16384);
    scp.handle_bytes(&bytes_of(&Pdu::Abort {
        source: 2,
        reason: 6,
    }))
    .unwrap();
    assert_eq!(
        events(&mut scp),
        [Event::Aborted {
            source: 2,
            reason: 6
        }]
    );
    assert_eq!(scp.state(), State::Idle);
    assert!(scp.poll_transmit().is_none());
}

#[test]
fn p_data_over_the_maximum_is_refused_from_its_header() {
    let (_, mut scp) = pair(16384, 4096);
    // A P-DATA-TF header announcing 4097 bytes: refused before its body.
    let err = scp.handle_bytes(&[4, 0, 0, 0, 0x10, 0x01]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PduTooLarge {
                size: 4097,
                max: 4096
            }
        ),
        "{err:?}"
    );
    assert_eq!(scp.state(), State::AwaitingClose);
    assert_eq!(
        pdus(&scp.poll_transmit().unwrap()),
        [Pdu::Abort {
            source: 2,
            reason: 6
        }]
    );
    // The same for the requestor, whose limit is its A-ASSOCIATE-RQ's.
    let (mut scu, _) = pair(1000, 4096);
    let mut p = Vec::new();
    pdu::encode_pdata(1, false, true, &[0; 1000], &mut p);
    assert!(matches!(
        scu.handle_bytes(&p),
        Err(Error::PduTooLarge { max: 1000, .. })
    ));
    // An unknown PDU type: reason 1.
    let (_, mut scp) = pair(16384, 4096);
    assert!(scp.handle_bytes(&[9, 0, 0, 0, 0, 0]).is_err());
    assert_eq!(
        pdus(&scp.poll_transmit().unwrap()),
        [Pdu::Abort {
            source: 2,
            reason: 1
        }]
    );
}

#[test]
fn pdvs_out_of_order_or_off_context_abort() {
    let cases: Vec<(&str, Vec<u8>)> = {
        let cmd = store_rq().encode();
        let mut unaccepted = Vec::new();
        pdu::encode_pdata(3, true, true, &rsp().encode(), &mut unaccepted);
        let mut data_first = Vec::new();
        pdu::encode_pdata(1, false, true, b"ab", &mut data_first);
        let mut command_twice = Vec::new();
        pdu::encode_pdata(1, true, true, &cmd, &mut command_twice);
        pdu::encode_pdata(1, true, true, &cmd, &mut command_twice);
        let mut bad_command = Vec::new();
        pdu::encode_pdata(1, true, true, b"not a command", &mut bad_command);
        vec![
            ("not accepted", unaccepted),
            ("without its command", data_first),
            ("before the data set", command_twice),
            ("malformed data set", bad_command),
        ]
    };
    for (why, bytes) in cases {
        let (_, mut scp) = pair(16384, 16384);
        let err = scp.handle_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        assert_eq!(scp.state(), State::AwaitingClose);
        assert!(matches!(
            pdus(&scp.poll_transmit().unwrap()).last(),
            Some(Pdu::Abort { source: 2, .. })
        ));
    }
}

#[test]
fn local_requests_out_of_place_are_caller_errors() {
    let mut scu = UpperLayer::requestor(rq(16384));
    assert!(scu.send_command(1, &rsp()).is_err());
    assert!(scu.send_data(1, b"ab", true).is_err());
    assert!(scu.release().is_err());
    assert!(scu.accept(ac()).is_err());
    assert!(scu.release_response().is_err());
    let mut scp = UpperLayer::acceptor(16384);
    assert!(scp.reject(1, 1, 7).is_err());
    // A rejection: Sta13, the requestor told why and back to Sta1.
    let mut scu = UpperLayer::requestor(rq(16384));
    deliver(&mut scu, &mut scp).unwrap();
    events(&mut scp);
    scp.reject(1, 1, 7).unwrap();
    assert_eq!(scp.state(), State::AwaitingClose);
    deliver(&mut scp, &mut scu).unwrap();
    assert_eq!(
        events(&mut scu),
        [Event::Rejected {
            result: 1,
            source: 1,
            reason: 7
        }]
    );
    assert_eq!(scu.state(), State::Idle);
    assert!(!scu.handle_closed() || scu.state() == State::Idle);
    // The transport cut in Sta6 is not an orderly end.
    let (mut scu, _) = pair(16384, 16384);
    assert!(!scu.handle_closed());
}

#[test]
fn every_split_of_an_association_gives_the_same_events() {
    let mut wire = bytes_of(&Pdu::AssociateRq(rq(16384)));
    pdu::encode_pdata(1, true, false, &store_rq().encode()[..10], &mut wire);
    pdu::encode_pdata(1, true, true, &store_rq().encode()[10..], &mut wire);
    pdu::encode_pdata(1, false, true, b"abcd", &mut wire);
    wire.extend_from_slice(&bytes_of(&Pdu::ReleaseRq));
    let run = |at: usize| {
        let mut scp = UpperLayer::acceptor(16384);
        let mut got = Vec::new();
        for part in [&wire[..at], &wire[at..]] {
            scp.handle_bytes(part).unwrap();
            loop {
                let e = events(&mut scp);
                if e.is_empty() {
                    break;
                }
                for e in e {
                    if matches!(e, Event::AssociateRequested(_)) {
                        scp.accept(ac()).unwrap();
                        scp.handle_bytes(&[]).unwrap();
                    }
                    got.push(e);
                }
            }
        }
        got
    };
    let whole = run(wire.len());
    assert_eq!(whole.len(), 4);
    assert_eq!(whole[3], Event::ReleaseRequested);
    for at in 0..wire.len() {
        assert_eq!(run(at), whole, "split at {at}");
    }
}
