//! Query keys as text, the way query tools take them (`PatientName=Doe*`, `0010,0020=PID1`,
//! `ScheduledProcedureStepSequence[0].Modality=CT`): [`DataSet::set_key`].

use super::{DataSet, Element, Value, pad};
use crate::Error;
use crate::dict::vr_of;

/// One step of a key path: a tag and, for a sequence, the item index.
fn parse_segment(seg: &str) -> Result<(u32, Option<usize>), Error> {
    let bad = || {
        Error::Invalid(format!(
            "{seg:?}: expected a keyword, gggg,eeee or (gggg,eeee), optionally [n]"
        ))
    };
    let (name, index) = match seg.split_once('[') {
        Some((name, rest)) => {
            let n = rest
                .strip_suffix(']')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n < 1024)
                .ok_or_else(bad)?;
            (name, Some(n))
        }
        None => (seg, None),
    };
    let hex = name
        .trim_start_matches('(')
        .trim_end_matches(')')
        .replace(',', "");
    let tag = if hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(&hex, 16).map_err(|_| bad())?
    } else {
        crate::dict::tag_of(name).ok_or_else(|| {
            Error::Invalid(format!(
                "{name:?} is not a keyword this dictionary knows; use the tag (gggg,eeee)"
            ))
        })?
    };
    Ok((tag, index))
}

/// A value from text in the VR's binary form (numbers) or padded text.
fn value_from_text(tag: u32, vr: [u8; 2], text: &str) -> Result<Vec<u8>, Error> {
    let bad = |t: &str| {
        Error::Invalid(format!(
            "({:04X},{:04X}) {}: {t:?} is not a number",
            tag >> 16,
            tag & 0xFFFF,
            String::from_utf8_lossy(&vr)
        ))
    };
    let mut out = Vec::new();
    let parts = || text.split('\\').filter(|p| !p.is_empty());
    match &vr {
        b"US" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<u16>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"SS" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<i16>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"UL" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<u32>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"SL" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<i32>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"FL" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<f32>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"FD" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<f64>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        _ => out = pad(vr, text.as_bytes().to_vec()),
    }
    Ok(out)
}

impl DataSet {
    /// Sets a key given as text, the way query tools take them: `PatientName=Doe*`,
    /// `0010,0020=PID1`, `(0008,0052)=STUDY`, a return key without a value (`StudyDate`), and
    /// keys inside sequence items (`ScheduledProcedureStepSequence[0].Modality=CT`; the index
    /// defaults to 0). A sequence given without a value is an empty sequence (universal
    /// matching). The VR comes from the dictionary (unknown tags are `UN`).
    pub fn set_key(&mut self, key: &str) -> Result<(), Error> {
        let (path, value) = match key.split_once('=') {
            Some((p, v)) => (p.trim(), Some(v)),
            None => (key.trim(), None),
        };
        let segments = path
            .split('.')
            .map(parse_segment)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(((tag, index), parents)) = segments.split_last() else {
            return Err(Error::Invalid("empty key".into()));
        };
        let mut ds = self;
        for &(seq_tag, i) in parents {
            if ds
                .get(seq_tag)
                .is_none_or(|e| !matches!(e.value, Value::Sequence(_)))
            {
                ds.set(Element {
                    tag: seq_tag,
                    vr: *b"SQ",
                    value: Value::Sequence(Vec::new()),
                });
            }
            let Ok(at) = ds.elements.binary_search_by_key(&seq_tag, |e| e.tag) else {
                return Err(Error::Invalid(format!("{path}: lost sequence")));
            };
            let Value::Sequence(items) = &mut ds.elements[at].value else {
                return Err(Error::Invalid(format!("{path}: not a sequence")));
            };
            let i = i.unwrap_or(0);
            if items.len() <= i {
                items.resize_with(i + 1, DataSet::default);
            }
            ds = &mut items[i];
        }
        let vr = vr_of(*tag);
        if &vr == b"SQ" {
            if value.is_some_and(|v| !v.is_empty()) || index.is_some() {
                return Err(Error::Invalid(format!(
                    "{path} is a sequence: give keys inside it, as {path}[0].Keyword=value"
                )));
            }
            if ds.get(*tag).is_none() {
                ds.set(Element {
                    tag: *tag,
                    vr,
                    value: Value::Sequence(Vec::new()),
                });
            }
            return Ok(());
        }
        if index.is_some() {
            return Err(Error::Invalid(format!(
                "{path}: only sequences take an [index]"
            )));
        }
        let bytes = value_from_text(*tag, vr, value.unwrap_or(""))?;
        ds.set(Element {
            tag: *tag,
            vr,
            value: Value::Bytes(bytes),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_query_tools_write_them() {
        let mut ds = DataSet::default();
        ds.set_key("PatientName=Doe*").unwrap();
        ds.set_key("0010,0020").unwrap();
        ds.set_key("(0008,0052)=STUDY").unwrap();
        ds.set_key("ScheduledProcedureStepSequence[0].Modality=CT")
            .unwrap();
        ds.set_key("ScheduledProcedureStepSequence.ScheduledStationAETitle")
            .unwrap();
        ds.set_key("(0040,0100)[1].Modality=MR").unwrap();
        ds.set_key("RequestedProcedureCodeSequence").unwrap();
        ds.set_key("00280010=512").unwrap();
        assert_eq!(ds.string(0x0010_0010).as_deref(), Some("Doe*"));
        assert_eq!(ds.string(0x0010_0020).as_deref(), Some(""));
        assert_eq!(ds.string(0x0008_0052).as_deref(), Some("STUDY"));
        assert_eq!(ds.get(0x0028_0010).unwrap().value, Value::Bytes(vec![0, 2]));
        let Value::Sequence(items) = &ds.get(0x0040_0100).unwrap().value else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].string(0x0008_0060).as_deref(), Some("CT"));
        assert_eq!(items[0].string(0x0040_0001).as_deref(), Some(""));
        assert_eq!(items[1].string(0x0008_0060).as_deref(), Some("MR"));
        assert_eq!(
            ds.get(0x0032_1064).unwrap().value,
            Value::Sequence(Vec::new())
        );
        for bad in [
            "NoSuchKeyword=1",
            "PatientName[0]=x",
            "ScheduledProcedureStepSequence=CT",
            "00280010=abc",
            "",
            "(0010,0010)[x]",
        ] {
            assert!(ds.set_key(bad).is_err(), "{bad}");
        }
    }
}
