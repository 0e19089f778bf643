//! Any bytes, in any split, to the PDU decoder and the DIMSE reassembler: never a panic, P-DATA
//! never over the advertised maximum, reassembled messages within their bound, and every decoded
//! PDU encodes and decodes again.
#![no_main]

use bytes::BytesMut;
use dicom_net::dimse::{Command, Reassembler};
use dicom_net::pdu::{Pdu, decode, encode};
use libfuzzer_sys::fuzz_target;

const MAX_PDATA: u32 = 4096;
const MAX_MESSAGE: usize = 16 << 10;

fuzz_target!(|data: &[u8]| {
    let _ = Command::decode(data);
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 64) + 1;
    let mut buf = BytesMut::new();
    let mut reassembler = Reassembler::new(MAX_MESSAGE);
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decode(&mut buf, MAX_PDATA) {
                Ok(Some(pdu)) => {
                    let mut wire = Vec::new();
                    encode(&pdu, &mut wire);
                    let mut again = BytesMut::from(&wire[..]);
                    let back = decode(&mut again, 0)
                        .expect("our encoding decodes")
                        .expect("whole PDU");
                    assert!(again.is_empty());
                    if let Pdu::PData(pdvs) = &pdu {
                        assert!(wire.len() - 6 <= MAX_PDATA as usize);
                        assert_eq!(&back, &pdu);
                        for pdv in pdvs.clone() {
                            match reassembler.push(pdv) {
                                Ok(Some(m)) => {
                                    let size = m.data.as_ref().map_or(0, |d| d.len());
                                    assert!(size <= MAX_MESSAGE);
                                }
                                Ok(None) => {}
                                Err(_) => reassembler = Reassembler::new(MAX_MESSAGE),
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
