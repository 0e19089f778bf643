//! Any bytes as a DICOM file (inspected as `dicom store` inspects it) and as a bare data set in
//! each syntax (Implicit/Explicit VR LE, Explicit VR BE, Deflate), rewritten in pieces into
//! Explicit and Implicit VR LE: never a panic, a file that inspects cleanly always converts
//! (to Implicit VR, unless it holds an element Implicit VR cannot carry, which is refused by
//! name), and whatever converts reads back (UN sequences of undefined length, padding and byte
//! order included).
#![no_main]

use dicom_net::uids::{self, Encoding};
use dicom_net::{DataSet, Transcoder};
use libfuzzer_sys::fuzz_target;

fn convert(
    data: &[u8],
    from: &str,
    to: Encoding,
    piece: usize,
) -> Result<Vec<u8>, dicom_net::Error> {
    let mut t = Transcoder::new(uids::syntax(from), to, Some(data.len() as u64));
    let mut out = Vec::new();
    for p in data.chunks(piece.max(1)) {
        t.push(p, &mut out)?;
    }
    t.finish(&mut out)?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let piece = data.first().map_or(1, |b| usize::from(b % 16) + 1);
    if let Ok(obj) = dicom_net::inspect(data) {
        let ds = &data[obj.data_offset as usize..];
        for to in [Encoding::EXPLICIT_LE, Encoding::IMPLICIT_LE] {
            if !uids::syntax(&obj.transfer_syntax).convertible() {
                continue;
            }
            let out = match convert(ds, &obj.transfer_syntax, to, piece) {
                Err(dicom_net::Error::NeedsExplicitVr { .. }) if !to.explicit => continue,
                r => r.expect("what inspects cleanly converts"),
            };
            assert_eq!(out.len() % 2, 0, "even length");
            DataSet::parse_encoded(&out, to).expect("what converts reads back");
        }
    }
    for from in [
        uids::IMPLICIT_VR_LE,
        uids::EXPLICIT_VR_LE,
        uids::EXPLICIT_VR_BE,
        uids::DEFLATED_EXPLICIT_VR_LE,
    ] {
        for to in [Encoding::EXPLICIT_LE, Encoding::IMPLICIT_LE] {
            if let Ok(out) = convert(data, from, to, piece) {
                DataSet::parse_encoded(&out, to).expect("what converts reads back");
            }
        }
    }
});
