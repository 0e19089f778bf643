//! Upper-layer PDUs (PS3.8 §9.3): encode and decode, bounded.
//!
//! Every multi-byte integer in a PDU is big-endian. A P-DATA-TF is refused when its length
//! exceeds the maximum *this side* advertised (dicom-rs mixed the two up more than once); other
//! PDUs are capped at [`MAX_CONTROL_PDU`].

use bytes::{Buf, Bytes, BytesMut};

use crate::Error;

/// Largest A-ASSOCIATE / A-RELEASE / A-ABORT PDU accepted: 1 MiB.
pub const MAX_CONTROL_PDU: u32 = 1 << 20;

/// One presentation context: proposed (abstract syntax and transfer syntaxes) or answered
/// (result and the one transfer syntax chosen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentationContext {
    /// Odd id, 1..=255.
    pub id: u8,
    /// Abstract syntax (SOP class); empty in an A-ASSOCIATE-AC.
    pub abstract_syntax: String,
    /// Proposed transfer syntaxes, or the one accepted.
    pub transfer_syntaxes: Vec<String>,
    /// In an A-ASSOCIATE-AC: 0 acceptance, 1 user rejection, 2 no reason, 3 abstract syntax not
    /// supported, 4 transfer syntaxes not supported.
    pub result: u8,
}

impl PresentationContext {
    /// The meaning of an A-ASSOCIATE-AC result.
    pub fn result_text(&self) -> &'static str {
        match self.result {
            0 => "accepted",
            1 => "rejected by the SCP",
            2 => "rejected, no reason given",
            3 => "abstract syntax (SOP class) not supported",
            4 => "transfer syntaxes not supported",
            _ => "unknown result",
        }
    }
}

/// User information: maximum length, implementation class and version, other sub-items kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// Largest P-DATA-TF variable field the sender receives; 0 = unlimited; `None` = absent.
    pub max_length: Option<u32>,
    /// Implementation class UID (mandatory).
    pub implementation_class_uid: String,
    /// Implementation version name, 1-16 characters.
    pub implementation_version_name: Option<String>,
    /// Other sub-items (role selection, extended negotiation, user identity...), as received.
    pub other: Vec<(u8, Bytes)>,
}

/// An A-ASSOCIATE-RQ or -AC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Associate {
    /// Called AE title (trimmed).
    pub called_ae: String,
    /// Calling AE title (trimmed).
    pub calling_ae: String,
    /// Application context name.
    pub application_context: String,
    /// Presentation contexts.
    pub presentation_contexts: Vec<PresentationContext>,
    /// User information.
    pub user: UserInfo,
}

/// One PDV of a P-DATA-TF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdv {
    /// Presentation context.
    pub pc_id: u8,
    /// Command (else data set).
    pub command: bool,
    /// Last fragment of its command or data set.
    pub last: bool,
    /// The fragment.
    pub data: Bytes,
}

/// A PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// 0x01
    AssociateRq(Associate),
    /// 0x02
    AssociateAc(Associate),
    /// 0x03: result (1 permanent, 2 transient), source, reason.
    AssociateRj {
        /// 1 permanent, 2 transient.
        result: u8,
        /// 1 service user, 2 service provider (ACSE), 3 service provider (presentation).
        source: u8,
        /// See [`reject_reason`].
        reason: u8,
    },
    /// 0x04
    PData(Vec<Pdv>),
    /// 0x05
    ReleaseRq,
    /// 0x06
    ReleaseRp,
    /// 0x07: source (0 user, 2 provider), reason (provider only).
    Abort {
        /// 0 service user, 2 service provider.
        source: u8,
        /// See [`abort_reason`].
        reason: u8,
    },
}

/// A-ASSOCIATE-RJ result, source and reason in words.
pub fn reject_reason(
    result: u8,
    source: u8,
    reason: u8,
) -> (&'static str, &'static str, &'static str) {
    let result = if result == 2 {
        "transient"
    } else {
        "permanent"
    };
    let (source, reason) = match (source, reason) {
        (1, 1) => ("service user", "no reason given"),
        (1, 2) => ("service user", "application context name not supported"),
        (1, 3) => ("service user", "calling AE title not recognized"),
        (1, 7) => ("service user", "called AE title not recognized"),
        (1, _) => ("service user", "reserved reason"),
        (2, 1) => ("service provider (ACSE)", "no reason given"),
        (2, 2) => ("service provider (ACSE)", "protocol version not supported"),
        (2, _) => ("service provider (ACSE)", "reserved reason"),
        (3, 1) => ("service provider (presentation)", "temporary congestion"),
        (3, 2) => ("service provider (presentation)", "local limit exceeded"),
        (3, _) => ("service provider (presentation)", "reserved reason"),
        _ => ("unknown source", "unknown reason"),
    };
    (result, source, reason)
}

/// A-ABORT source and reason in words.
pub fn abort_reason(source: u8, reason: u8) -> (&'static str, &'static str) {
    match source {
        0 => ("service user", "the peer aborted"),
        2 => (
            "service provider",
            match reason {
                1 => "unrecognized PDU",
                2 => "unexpected PDU",
                4 => "unrecognized PDU parameter",
                5 => "unexpected PDU parameter",
                6 => "invalid PDU parameter value",
                _ => "no reason given",
            },
        ),
        _ => ("unknown source", "no reason given"),
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_item(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.push(0);
    put_u16(out, value.len() as u16);
    out.extend_from_slice(value);
}

fn ae(title: &str) -> [u8; 16] {
    let mut b = [b' '; 16];
    for (i, c) in title.bytes().take(16).enumerate() {
        b[i] = c;
    }
    b
}

/// Appends a PDU.
pub fn encode(pdu: &Pdu, out: &mut Vec<u8>) {
    let start = out.len();
    let kind = match pdu {
        Pdu::AssociateRq(_) => 1,
        Pdu::AssociateAc(_) => 2,
        Pdu::AssociateRj { .. } => 3,
        Pdu::PData(_) => 4,
        Pdu::ReleaseRq => 5,
        Pdu::ReleaseRp => 6,
        Pdu::Abort { .. } => 7,
    };
    out.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
    match pdu {
        Pdu::AssociateRq(a) | Pdu::AssociateAc(a) => {
            put_u16(out, 1);
            put_u16(out, 0);
            out.extend_from_slice(&ae(&a.called_ae));
            out.extend_from_slice(&ae(&a.calling_ae));
            out.extend_from_slice(&[0; 32]);
            put_item(out, 0x10, a.application_context.as_bytes());
            let rq = matches!(pdu, Pdu::AssociateRq(_));
            for pc in &a.presentation_contexts {
                let mut body = vec![pc.id, 0, if rq { 0 } else { pc.result }, 0];
                if rq {
                    put_item(&mut body, 0x30, pc.abstract_syntax.as_bytes());
                }
                for ts in &pc.transfer_syntaxes {
                    put_item(&mut body, 0x40, ts.as_bytes());
                }
                put_item(out, if rq { 0x20 } else { 0x21 }, &body);
            }
            let mut user = Vec::new();
            if let Some(max) = a.user.max_length {
                put_item(&mut user, 0x51, &max.to_be_bytes());
            }
            put_item(&mut user, 0x52, a.user.implementation_class_uid.as_bytes());
            if let Some(v) = &a.user.implementation_version_name {
                put_item(&mut user, 0x55, v.as_bytes());
            }
            for (k, v) in &a.user.other {
                put_item(&mut user, *k, v);
            }
            put_item(out, 0x50, &user);
        }
        Pdu::AssociateRj {
            result,
            source,
            reason,
        } => out.extend_from_slice(&[0, *result, *source, *reason]),
        Pdu::PData(pdvs) => {
            for p in pdvs {
                put_u32(out, p.data.len() as u32 + 2);
                out.push(p.pc_id);
                out.push(u8::from(p.command) | (u8::from(p.last) << 1));
                out.extend_from_slice(&p.data);
            }
        }
        Pdu::ReleaseRq | Pdu::ReleaseRp => out.extend_from_slice(&[0; 4]),
        Pdu::Abort { source, reason } => out.extend_from_slice(&[0, 0, *source, *reason]),
    }
    let len = (out.len() - start - 6) as u32;
    out[start + 2..start + 6].copy_from_slice(&len.to_be_bytes());
}

/// Appends a P-DATA-TF with one PDV: the PDU and PDV headers, then `data`.
pub fn encode_pdata(pc_id: u8, command: bool, last: bool, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(12 + data.len());
    out.extend_from_slice(&[4, 0]);
    put_u32(out, data.len() as u32 + 6);
    put_u32(out, data.len() as u32 + 2);
    out.push(pc_id);
    out.push(u8::from(command) | (u8::from(last) << 1));
    out.extend_from_slice(data);
}

fn trim(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == '\0' || c == ' ')
        .to_owned()
}

/// Items of an A-ASSOCIATE variable field or sub-item list.
fn items(mut b: &[u8]) -> Result<Vec<(u8, &[u8])>, Error> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(Error::Pdu("truncated item header".into()));
        }
        let kind = b[0];
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        let value = b
            .get(4..4 + len)
            .ok_or_else(|| Error::Pdu(format!("item 0x{kind:02X} longer than its PDU")))?;
        out.push((kind, value));
        b = &b[4 + len..];
    }
    Ok(out)
}

fn decode_associate(body: &[u8], rq: bool) -> Result<Associate, Error> {
    if body.len() < 68 {
        return Err(Error::Pdu(
            "A-ASSOCIATE shorter than its fixed fields".into(),
        ));
    }
    let mut a = Associate {
        called_ae: trim(&body[4..20]),
        calling_ae: trim(&body[20..36]),
        ..Associate::default()
    };
    for (kind, value) in items(&body[68..])? {
        match kind {
            0x10 => a.application_context = trim(value),
            0x20 | 0x21 => {
                if value.len() < 4 {
                    return Err(Error::Pdu("presentation context item too short".into()));
                }
                let mut pc = PresentationContext {
                    id: value[0],
                    abstract_syntax: String::new(),
                    transfer_syntaxes: Vec::new(),
                    result: if rq { 0 } else { value[2] },
                };
                for (sub, v) in items(&value[4..])? {
                    match sub {
                        0x30 => pc.abstract_syntax = trim(v),
                        0x40 => pc.transfer_syntaxes.push(trim(v)),
                        _ => {}
                    }
                }
                a.presentation_contexts.push(pc);
            }
            0x50 => {
                for (sub, v) in items(value)? {
                    match sub {
                        0x51 if v.len() == 4 => {
                            a.user.max_length = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                        }
                        0x52 => a.user.implementation_class_uid = trim(v),
                        0x55 => a.user.implementation_version_name = Some(trim(v)),
                        _ => a.user.other.push((sub, Bytes::copy_from_slice(v))),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(a)
}

/// Takes one PDU off the front of `buf`. `Ok(None)`: not complete yet. P-DATA-TF longer than
/// `max_pdata` (0 = unlimited) and other PDUs longer than [`MAX_CONTROL_PDU`] are refused
/// before their body is read.
pub fn decode(buf: &mut BytesMut, max_pdata: u32) -> Result<Option<Pdu>, Error> {
    if buf.len() < 6 {
        return Ok(None);
    }
    let kind = buf[0];
    let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
    let max = match kind {
        4 if max_pdata == 0 => u32::MAX,
        4 => max_pdata,
        1..=7 => MAX_CONTROL_PDU,
        _ => return Err(Error::Pdu(format!("unknown PDU type 0x{kind:02X}"))),
    };
    if len > max {
        return Err(Error::PduTooLarge {
            size: u64::from(len),
            max: u64::from(max),
        });
    }
    let total = 6 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut pdu = buf.split_to(total);
    pdu.advance(6);
    let body = pdu.freeze();
    let fixed = |n: usize| {
        if body.len() < n {
            Err(Error::Pdu(format!(
                "PDU type 0x{kind:02X} shorter than {n} bytes"
            )))
        } else {
            Ok(())
        }
    };
    Ok(Some(match kind {
        1 => Pdu::AssociateRq(decode_associate(&body, true)?),
        2 => Pdu::AssociateAc(decode_associate(&body, false)?),
        3 => {
            fixed(4)?;
            Pdu::AssociateRj {
                result: body[1],
                source: body[2],
                reason: body[3],
            }
        }
        4 => {
            let mut pdvs = Vec::new();
            let mut at = 0;
            while at < body.len() {
                if body.len() - at < 6 {
                    return Err(Error::Pdu("truncated PDV".into()));
                }
                let n = u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]])
                    as usize;
                if n < 2 || n > body.len() - at - 4 {
                    return Err(Error::Pdu(format!("PDV length {n} does not fit its PDU")));
                }
                let mch = body[at + 5];
                pdvs.push(Pdv {
                    pc_id: body[at + 4],
                    command: mch & 1 != 0,
                    last: mch & 2 != 0,
                    data: body.slice(at + 6..at + 4 + n),
                });
                at += 4 + n;
            }
            Pdu::PData(pdvs)
        }
        5 => Pdu::ReleaseRq,
        6 => Pdu::ReleaseRp,
        7 => {
            fixed(4)?;
            Pdu::Abort {
                source: body[2],
                reason: body[3],
            }
        }
        _ => unreachable!("kind checked above"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(p: Pdu) {
        let mut out = Vec::new();
        encode(&p, &mut out);
        let mut buf = BytesMut::from(&out[..]);
        assert_eq!(decode(&mut buf, 0).unwrap(), Some(p));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_pdu_round_trips() {
        let rq = Associate {
            called_ae: "STORESCP".into(),
            calling_ae: "ECHOSCU".into(),
            application_context: crate::uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: vec![PresentationContext {
                id: 1,
                abstract_syntax: "1.2.840.10008.1.1".into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
                result: 0,
            }],
            user: UserInfo {
                max_length: Some(16384),
                implementation_class_uid: "1.2.276.0.7230010.3.0.3.6.7".into(),
                implementation_version_name: Some("OFFIS_DCMTK_367".into()),
                other: vec![(0x54, Bytes::from_static(b"\x00\x05x\x01\x00"))],
            },
        };
        roundtrip(Pdu::AssociateRq(rq.clone()));
        let mut ac = rq;
        ac.presentation_contexts[0].abstract_syntax.clear();
        ac.presentation_contexts[0].result = 3;
        roundtrip(Pdu::AssociateAc(ac));
        roundtrip(Pdu::AssociateRj {
            result: 1,
            source: 1,
            reason: 7,
        });
        roundtrip(Pdu::PData(vec![
            Pdv {
                pc_id: 1,
                command: true,
                last: true,
                data: Bytes::from_static(b"cmd"),
            },
            Pdv {
                pc_id: 3,
                command: false,
                last: false,
                data: Bytes::from_static(b"data"),
            },
        ]));
        roundtrip(Pdu::ReleaseRq);
        roundtrip(Pdu::ReleaseRp);
        roundtrip(Pdu::Abort {
            source: 2,
            reason: 6,
        });
    }

    #[test]
    fn dcmtk_echo_request_bytes() {
        // echoscu's A-ASSOCIATE-RQ as captured on the wire (PS3.8 layout).
        let mut expected = vec![0x01, 0x00, 0x00, 0x00, 0x00, 0xcd, 0x00, 0x01, 0x00, 0x00];
        expected.extend_from_slice(b"STORESCP        ECHOSCU         ");
        expected.extend_from_slice(&[0; 32]);
        expected.extend_from_slice(b"\x10\x00\x00\x151.2.840.10008.3.1.1.1");
        expected.extend_from_slice(b"\x20\x00\x00\x2e\x01\x00\xff\x00");
        expected.extend_from_slice(
            b"\x30\x00\x00\x111.2.840.10008.1.1\x40\x00\x00\x111.2.840.10008.1.2",
        );
        expected.extend_from_slice(b"\x50\x00\x00\x3a\x51\x00\x00\x04\x00\x00\x40\x00");
        expected.extend_from_slice(
            b"\x52\x00\x00\x1b1.2.276.0.7230010.3.0.3.6.7\x55\x00\x00\x0fOFFIS_DCMTK_367",
        );
        assert_eq!(expected.len(), 0xcd + 6);
        let mut buf = BytesMut::from(&expected[..]);
        let Some(Pdu::AssociateRq(a)) = decode(&mut buf, 0).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.called_ae.as_str(), a.calling_ae.as_str()),
            ("STORESCP", "ECHOSCU")
        );
        assert_eq!(
            a.presentation_contexts[0].abstract_syntax,
            "1.2.840.10008.1.1"
        );
        assert_eq!(a.user.max_length, Some(16384));
        assert_eq!(
            a.user.implementation_version_name.as_deref(),
            Some("OFFIS_DCMTK_367")
        );
        // and we write the same bytes, except dcmtk's reserved 00 ff 00 in the context item
        let mut ours = Vec::new();
        encode(&Pdu::AssociateRq(a), &mut ours);
        let mut theirs = expected.clone();
        theirs[6 + 68 + 25 + 6] = 0; // the 0xff
        assert_eq!(ours, theirs);
        // A-RELEASE-RQ and -RP as captured
        let mut r = Vec::new();
        encode(&Pdu::ReleaseRq, &mut r);
        assert_eq!(r, [0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn limits_and_partial_input() {
        let mut out = Vec::new();
        encode_pdata(1, false, true, &[7u8; 100], &mut out);
        let mut buf = BytesMut::from(&out[..50]);
        assert_eq!(decode(&mut buf, 16384).unwrap(), None);
        let mut buf = BytesMut::from(&out[..]);
        assert!(matches!(
            decode(&mut buf, 64),
            Err(Error::PduTooLarge { size: 106, max: 64 })
        ));
        // a 4 GB length field is refused before anything is allocated
        let mut huge = BytesMut::from(&[4u8, 0, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode(&mut huge, 16384),
            Err(Error::PduTooLarge { .. })
        ));
        let mut bad = BytesMut::from(&[4u8, 0, 0, 0, 0, 6, 0, 0, 0, 9, 1, 3][..]);
        assert!(matches!(decode(&mut bad, 0), Err(Error::Pdu(_))));
        let mut unknown = BytesMut::from(&[9u8, 0, 0, 0, 0, 0][..]);
        assert!(decode(&mut unknown, 0).is_err());
    }

    #[test]
    fn reasons_in_words() {
        assert_eq!(
            reject_reason(1, 1, 7),
            (
                "permanent",
                "service user",
                "called AE title not recognized"
            )
        );
        assert_eq!(abort_reason(2, 2), ("service provider", "unexpected PDU"));
    }
}
