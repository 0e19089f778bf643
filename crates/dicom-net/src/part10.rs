//! DICOM Part 10 files (PS3.10 §7): a 128-byte preamble, `DICM`, group 0002 in Explicit VR
//! LE, then the data set in the transfer syntax group 0002 names. Only the meta group is
//! parsed here; [`crate::inspect`] reads the data set's headers.

use crate::Error;
use crate::reader::is_standard_vr;
use crate::uids;
use crate::writer::pad_byte;

/// What the meta group says. A field the group lacks is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileMeta {
    /// (0002,0002) Media Storage SOP Class UID.
    pub sop_class: String,
    /// (0002,0003) Media Storage SOP Instance UID.
    pub sop_instance: String,
    /// (0002,0010) Transfer Syntax UID.
    pub transfer_syntax: String,
}

/// The largest meta group read: 64 KiB.
pub const MAX_META: usize = 64 << 10;

/// Reads the meta group of a file with its preamble; returns it and the offset where the data
/// set starts.
///
/// # Errors
/// [`Error::NotPart10`] without `DICM` at offset 128, for a truncated group, or when the group
/// lacks the SOP class, SOP instance or transfer syntax.
pub fn read_meta(bytes: &[u8]) -> Result<(FileMeta, usize), Error> {
    if bytes.get(128..132) != Some(b"DICM") {
        return Err(Error::NotPart10("no DICM prefix at offset 128".into()));
    }
    let (meta, end) = read_group(bytes, 132)?;
    if meta.transfer_syntax.is_empty() || meta.sop_class.is_empty() || meta.sop_instance.is_empty()
    {
        return Err(Error::NotPart10(
            "meta group lacks the SOP class, SOP instance or transfer syntax".into(),
        ));
    }
    Ok((meta, end))
}

/// Whether `bytes` starts with a meta group but no preamble (some writers omit it): group
/// 0002 in Explicit VR LE at offset 0.
pub fn meta_without_preamble(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..2] == [0x02, 0x00] && is_standard_vr([bytes[4], bytes[5]])
}

/// Reads group 0002 from `start`, tolerating absent elements; returns the offset after it
/// (from its group length when present, else after the last 0002 element).
pub(crate) fn read_group(bytes: &[u8], start: usize) -> Result<(FileMeta, usize), Error> {
    let mut at = start;
    let mut end = None;
    let mut meta = FileMeta::default();
    loop {
        if end.is_some_and(|e| at >= e) {
            break;
        }
        let Some(h) = bytes.get(at..at + 8) else {
            if end.is_none() {
                break;
            }
            return Err(Error::NotPart10("meta group truncated".into()));
        };
        let group = u16::from_le_bytes([h[0], h[1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([h[2], h[3]]);
        let vr = [h[4], h[5]];
        let (len, header) = if matches!(&vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT" | b"UC" | b"UR")
        {
            let l = bytes
                .get(at + 8..at + 12)
                .ok_or_else(|| Error::NotPart10("meta group truncated".into()))?;
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        } else {
            (usize::from(u16::from_le_bytes([h[6], h[7]])), 8)
        };
        let value = at
            .checked_add(header + len)
            .and_then(|e| bytes.get(at + header..e))
            .ok_or_else(|| {
                Error::NotPart10(format!(
                    "meta element (0002,{element:04X}) runs past the first {} bytes",
                    bytes.len()
                ))
            })?;
        let text = || {
            String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_owned()
        };
        match element {
            0x0000 if value.len() == 4 => {
                end = Some(
                    at + header
                        + len
                        + u32::from_le_bytes([value[0], value[1], value[2], value[3]]) as usize,
                );
            }
            0x0002 => meta.sop_class = text(),
            0x0003 => meta.sop_instance = text(),
            0x0010 => meta.transfer_syntax = text(),
            _ => {}
        }
        at += header + len;
    }
    Ok((meta, end.unwrap_or(at).min(bytes.len())))
}

impl FileMeta {
    /// Appends a preamble (128 zero bytes), `DICM` and the meta group: group length, File Meta
    /// Information Version, the three UIDs, this implementation's class UID and version name,
    /// and `source_ae` (0002,0016) when given.
    pub fn encode(&self, source_ae: Option<&str>, out: &mut Vec<u8>) {
        fn el(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8]) {
            let pad = value.len() % 2;
            out.extend_from_slice(&[0x02, 0x00]);
            out.extend_from_slice(&element.to_le_bytes());
            out.extend_from_slice(vr);
            if vr == b"OB" {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&((value.len() + pad) as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&((value.len() + pad) as u16).to_le_bytes());
            }
            out.extend_from_slice(value);
            if pad == 1 {
                out.push(pad_byte(*vr));
            }
        }
        let mut group = Vec::with_capacity(256);
        el(&mut group, 0x0001, b"OB", &[0, 1]);
        el(&mut group, 0x0002, b"UI", self.sop_class.as_bytes());
        el(&mut group, 0x0003, b"UI", self.sop_instance.as_bytes());
        el(&mut group, 0x0010, b"UI", self.transfer_syntax.as_bytes());
        el(
            &mut group,
            0x0012,
            b"UI",
            uids::IMPLEMENTATION_CLASS_UID.as_bytes(),
        );
        el(
            &mut group,
            0x0013,
            b"SH",
            uids::IMPLEMENTATION_VERSION_NAME.as_bytes(),
        );
        if let Some(ae) = source_ae {
            el(&mut group, 0x0016, b"AE", ae.as_bytes());
        }
        out.extend_from_slice(&[0u8; 128]);
        out.extend_from_slice(b"DICM");
        el(out, 0x0000, b"UL", &(group.len() as u32).to_le_bytes());
        out.extend_from_slice(&group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let meta = FileMeta {
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance: "2.25.1002".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
        };
        let mut f = Vec::new();
        meta.encode(Some("SCANNER"), &mut f);
        let len = f.len();
        f.extend_from_slice(b"DATASET!");
        let (m, off) = read_meta(&f).unwrap();
        assert_eq!(m, meta);
        assert_eq!(off, len);
        assert_eq!(&f[off..], b"DATASET!");
        assert_eq!(off % 2, 0);
    }

    #[test]
    fn refuses_non_part10() {
        assert!(read_meta(b"not dicom").is_err());
        let mut f = Vec::new();
        FileMeta {
            sop_class: "1.2".into(),
            sop_instance: "1.3".into(),
            transfer_syntax: "1.2.840.10008.1.2".into(),
        }
        .encode(None, &mut f);
        f.truncate(150);
        assert!(read_meta(&f).is_err());
        assert!(meta_without_preamble(&f[132..]));
        assert!(!meta_without_preamble(b"\x08\x00\x05\x00CS\x0a\x00"));
    }
}
