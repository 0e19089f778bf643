//! Any bytes, in any split, to the SCP's acceptor (as an SCU would send them after a valid
//! A-ASSOCIATE-RQ) and to the streaming data-set builder behind its DICOM JSON: never a panic,
//! every answer it queues decodes, and data set fragments stay within the object limit.
#![no_main]

use bytes::BytesMut;
use dicom_net::acceptor::{Acceptor, AcceptorConfig, ScpEvent};
use dicom_net::pdu::{self, Associate, Pdu, PresentationContext, UserInfo};
use dicom_net::{DataSetStream, uids};
use libfuzzer_sys::fuzz_target;

const MAX_OBJECT: u64 = 1 << 16;

fn associate() -> Vec<u8> {
    let mut out = Vec::new();
    pdu::encode(
        &Pdu::AssociateRq(Associate {
            called_ae: "OUTPOST".into(),
            calling_ae: "FUZZ".into(),
            application_context: uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: vec![PresentationContext {
                id: 1,
                abstract_syntax: "1.2.840.10008.5.1.4.1.1.2".into(),
                transfer_syntaxes: vec![uids::EXPLICIT_VR_LE.into()],
                result: 0,
            }],
            user: UserInfo {
                max_length: Some(4096),
                implementation_class_uid: "1.2.3".into(),
                ..UserInfo::default()
            },
        }),
        &mut out,
    );
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 64) + 1;
    let mut a = Acceptor::new(AcceptorConfig {
        ae_title: Some("OUTPOST".into()),
        max_pdu: 4096,
        max_object: MAX_OBJECT,
    });
    a.handle_bytes(&associate());
    let mut received = 0u64;
    for piece in input.chunks(chunk) {
        a.handle_bytes(piece);
        while let Some(e) = a.poll_event() {
            if let ScpEvent::StoreData { data, last } = e {
                received += data.len() as u64;
                assert!(received <= MAX_OBJECT);
                if last {
                    a.store_response(dicom_net::Status(0)).expect("a store waits");
                    received = 0;
                }
            }
        }
        if let Some(out) = a.poll_transmit() {
            let mut buf = BytesMut::from(&out[..]);
            while !buf.is_empty() {
                pdu::decode(&mut buf, 0)
                    .expect("our answers decode")
                    .expect("whole PDUs");
            }
        }
    }
    for ts in [uids::IMPLICIT_VR_LE, uids::EXPLICIT_VR_LE, uids::DEFLATED_EXPLICIT_VR_LE] {
        let mut s = DataSetStream::new(uids::syntax(ts), 1024);
        if input.chunks(chunk).all(|p| s.push(p).is_ok()) {
            let _ = s.finish();
        }
    }
});
