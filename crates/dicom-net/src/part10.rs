//! DICOM Part 10 files: a 128-byte preamble, `DICM`, group 0002 in Explicit VR LE, then the
//! data set in the transfer syntax group 0002 names. Only the meta group is parsed: the data
//! set is sent as it is whenever the SCP accepts its transfer syntax.

use crate::Error;

/// What the meta group says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// (0002,0002) Media Storage SOP Class UID.
    pub sop_class: String,
    /// (0002,0003) Media Storage SOP Instance UID.
    pub sop_instance: String,
    /// (0002,0010) Transfer Syntax UID.
    pub transfer_syntax: String,
}

/// Reads the meta group; returns it and the offset where the data set starts.
pub fn read_meta(bytes: &[u8]) -> Result<(FileMeta, usize), Error> {
    if bytes.get(128..132) != Some(b"DICM") {
        return Err(Error::NotPart10("no DICM prefix at offset 128".into()));
    }
    let mut at = 132;
    let mut end = None;
    let mut meta = FileMeta {
        sop_class: String::new(),
        sop_instance: String::new(),
        transfer_syntax: String::new(),
    };
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
        let value = bytes.get(at + header..at + header + len).ok_or_else(|| {
            Error::NotPart10(format!(
                "meta element (0002,{element:04X}) longer than the file"
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
    if meta.transfer_syntax.is_empty() || meta.sop_class.is_empty() || meta.sop_instance.is_empty()
    {
        return Err(Error::NotPart10(
            "meta group lacks the SOP class, SOP instance or transfer syntax".into(),
        ));
    }
    Ok((meta, end.unwrap_or(at).min(bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal file: preamble, DICM, meta group, a two-element data set.
    pub fn file(ts: &str) -> Vec<u8> {
        let mut meta = Vec::new();
        let mut el = |e: u16, vr: &[u8; 2], v: &[u8]| {
            let v = if v.len() % 2 == 1 {
                [v, b"\0"].concat()
            } else {
                v.to_vec()
            };
            meta.extend_from_slice(&[0x02, 0x00]);
            meta.extend_from_slice(&e.to_le_bytes());
            meta.extend_from_slice(vr);
            meta.extend_from_slice(&(v.len() as u16).to_le_bytes());
            meta.extend_from_slice(&v);
        };
        el(0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2");
        el(0x0003, b"UI", b"2.25.1002");
        el(0x0010, b"UI", ts.as_bytes());
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        f.extend_from_slice(&meta);
        f.extend_from_slice(b"DATASET!");
        f
    }

    #[test]
    fn reads_meta_and_offset() {
        let f = file("1.2.840.10008.1.2.1");
        let (m, off) = read_meta(&f).unwrap();
        assert_eq!(m.transfer_syntax, "1.2.840.10008.1.2.1");
        assert_eq!(m.sop_instance, "2.25.1002");
        assert_eq!(&f[off..], b"DATASET!");
    }

    #[test]
    fn refuses_non_part10() {
        assert!(read_meta(b"not dicom").is_err());
        let mut f = file("1.2.840.10008.1.2");
        f.truncate(150);
        assert!(read_meta(&f).is_err());
    }
}
