//! The DICOM JSON model (PS3.18 §F.2): `{"00100010": {"vr": "PN", "Value": [{"Alphabetic":
//! "Doe^John"}]}}`. How the agent carries queries and matches.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value as Json, json};

use crate::Error;
use crate::dataset::{DataSet, Element, Value, pad};

fn is_binary(vr: &[u8; 2]) -> bool {
    matches!(vr, b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"UN")
}

/// A data set as DICOM JSON. Text is read as ISO 8859-1 (the default character set) unless it
/// is valid UTF-8.
pub fn to_json(ds: &DataSet) -> Json {
    let mut obj = Map::new();
    for e in &ds.elements {
        let key = format!("{:08X}", e.tag);
        let vr = String::from_utf8_lossy(&e.vr).into_owned();
        let mut attr = Map::new();
        attr.insert("vr".into(), Json::String(vr.clone()));
        match &e.value {
            Value::Sequence(items) => {
                if !items.is_empty() {
                    attr.insert(
                        "Value".into(),
                        Json::Array(items.iter().map(to_json).collect()),
                    );
                }
            }
            Value::Encapsulated(b) => {
                attr.insert("InlineBinary".into(), Json::String(STANDARD.encode(b)));
            }
            Value::Bytes(b) if b.is_empty() => {}
            Value::Bytes(b) if is_binary(&e.vr) => {
                attr.insert("InlineBinary".into(), Json::String(STANDARD.encode(b)));
            }
            Value::Bytes(b) => {
                if let Some(values) = values_json(&e.vr, b) {
                    attr.insert("Value".into(), Json::Array(values));
                }
            }
        }
        obj.insert(key, Json::Object(attr));
    }
    Json::Object(obj)
}

fn text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => b.iter().map(|&c| char::from(c)).collect(),
    }
}

fn values_json(vr: &[u8; 2], b: &[u8]) -> Option<Vec<Json>> {
    let nums =
        |size: usize, f: &dyn Fn(&[u8]) -> Json| b.chunks_exact(size).map(f).collect::<Vec<_>>();
    let v = match vr {
        b"US" => nums(2, &|c| json!(u16::from_le_bytes([c[0], c[1]]))),
        b"SS" => nums(2, &|c| json!(i16::from_le_bytes([c[0], c[1]]))),
        b"UL" => nums(4, &|c| json!(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        b"SL" => nums(4, &|c| json!(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        b"FL" => nums(4, &|c| json!(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        b"FD" => nums(8, &|c| {
            json!(f64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
            ]))
        }),
        b"AT" => nums(4, &|c| {
            let g = u16::from_le_bytes([c[0], c[1]]);
            let e = u16::from_le_bytes([c[2], c[3]]);
            json!(format!("{g:04X}{e:04X}"))
        }),
        _ => {
            let s = text(b);
            let s = s.trim_end_matches(['\0', ' ']);
            if s.is_empty() {
                return None;
            }
            s.split('\\')
                .map(|part| {
                    let part = part.trim();
                    match vr {
                        b"PN" => {
                            let mut groups = part.splitn(3, '=');
                            let mut pn = Map::new();
                            for key in ["Alphabetic", "Ideographic", "Phonetic"] {
                                if let Some(g) = groups.next().filter(|g| !g.is_empty()) {
                                    pn.insert(key.into(), json!(g));
                                }
                            }
                            Json::Object(pn)
                        }
                        b"IS" => part
                            .parse::<i64>()
                            .map_or_else(|_| json!(part), |n| json!(n)),
                        b"DS" => part
                            .parse::<f64>()
                            .map_or_else(|_| json!(part), |n| json!(n)),
                        _ => json!(part),
                    }
                })
                .collect()
        }
    };
    Some(v)
}

/// Reads DICOM JSON into a data set. An attribute without `Value` is an empty element (in a
/// query: return this key).
pub fn from_json(v: &Json) -> Result<DataSet, Error> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::Invalid("DICOM JSON: expected an object".into()))?;
    let mut ds = DataSet::default();
    for (key, attr) in obj {
        let tag = u32::from_str_radix(key, 16)
            .ok()
            .filter(|_| key.len() == 8)
            .ok_or_else(|| {
                Error::Invalid(format!("DICOM JSON: {key:?} is not a tag (8 hex digits)"))
            })?;
        let vr_text = attr["vr"].as_str().unwrap_or("");
        let vr: [u8; 2] = match vr_text.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => [*a, *b],
            _ if vr_text.is_empty() => crate::dict::vr_of(tag),
            _ => {
                return Err(Error::Invalid(format!(
                    "DICOM JSON: {key}: invalid vr {vr_text:?}"
                )));
            }
        };
        let value = if &vr == b"SQ" {
            let items = attr["Value"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            Value::Sequence(items.iter().map(from_json).collect::<Result<_, _>>()?)
        } else if let Some(b64) = attr["InlineBinary"].as_str() {
            Value::Bytes(
                STANDARD
                    .decode(b64)
                    .map_err(|e| Error::Invalid(format!("DICOM JSON: {key}: {e}")))?,
            )
        } else {
            let values = attr["Value"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            Value::Bytes(
                encode_values(&vr, values)
                    .map_err(|e| Error::Invalid(format!("DICOM JSON: {key}: {e}")))?,
            )
        };
        ds.set(Element { tag, vr, value });
    }
    Ok(ds)
}

fn encode_values(vr: &[u8; 2], values: &[Json]) -> Result<Vec<u8>, String> {
    let num = |v: &Json| {
        v.as_f64()
            .ok_or_else(|| format!("expected a number, got {v}"))
    };
    let mut out = Vec::new();
    match vr {
        b"US" => values
            .iter()
            .try_for_each(|v| num(v).map(|n| out.extend_from_slice(&(n as u16).to_le_bytes())))?,
        b"SS" => values
            .iter()
            .try_for_each(|v| num(v).map(|n| out.extend_from_slice(&(n as i16).to_le_bytes())))?,
        b"UL" => values
            .iter()
            .try_for_each(|v| num(v).map(|n| out.extend_from_slice(&(n as u32).to_le_bytes())))?,
        b"SL" => values
            .iter()
            .try_for_each(|v| num(v).map(|n| out.extend_from_slice(&(n as i32).to_le_bytes())))?,
        b"FL" => values
            .iter()
            .try_for_each(|v| num(v).map(|n| out.extend_from_slice(&(n as f32).to_le_bytes())))?,
        b"FD" => values
            .iter()
            .try_for_each(|v| num(v).map(|n| out.extend_from_slice(&n.to_le_bytes())))?,
        _ => {
            let parts: Vec<String> = values
                .iter()
                .map(|v| match v {
                    Json::String(s) => Ok(s.clone()),
                    Json::Number(n) => Ok(n.to_string()),
                    Json::Null => Ok(String::new()),
                    Json::Object(pn) if vr == b"PN" => {
                        let g = |k: &str| pn.get(k).and_then(Json::as_str).unwrap_or("").to_owned();
                        let mut s = [g("Alphabetic"), g("Ideographic"), g("Phonetic")].join("=");
                        while s.ends_with('=') {
                            s.pop();
                        }
                        Ok(s)
                    }
                    other => Err(format!("unexpected value {other}")),
                })
                .collect::<Result<_, _>>()?;
            out = parts.join("\\").into_bytes();
        }
    }
    Ok(pad(*vr, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trips_through_json() {
        let j = json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J*"}]},
            "00100020": {"vr": "LO"},
            "00080020": {"vr": "DA", "Value": ["20240101-20241231"]},
            "00280010": {"vr": "US", "Value": [512]},
            "00201208": {"vr": "IS", "Value": [12]},
            "00400100": {"vr": "SQ", "Value": [{"00080060": {"vr": "CS", "Value": ["CT"]}, "00400001": {"vr": "AE"}}]},
        });
        let ds = from_json(&j).unwrap();
        assert_eq!(ds.string(0x0010_0010).as_deref(), Some("Doe^J*"));
        assert_eq!(ds.get(0x0010_0020).unwrap().value, Value::Bytes(Vec::new()));
        assert_eq!(ds.get(0x0028_0010).unwrap().value, Value::Bytes(vec![0, 2]));
        assert_eq!(to_json(&ds), j);
    }

    #[test]
    fn multi_values_and_binary() {
        let mut ds = DataSet::default();
        ds.set(Element {
            tag: 0x0008_0008,
            vr: *b"CS",
            value: Value::Bytes(b"ORIGINAL\\PRIMARY".to_vec()),
        });
        ds.set(Element {
            tag: 0x7FE0_0010,
            vr: *b"OW",
            value: Value::Bytes(vec![1, 2, 3, 4]),
        });
        let j = to_json(&ds);
        assert_eq!(j["00080008"]["Value"], json!(["ORIGINAL", "PRIMARY"]));
        assert_eq!(j["7FE00010"]["InlineBinary"], json!("AQIDBA=="));
        assert_eq!(from_json(&j).unwrap(), ds);
    }

    #[test]
    fn bad_json() {
        assert!(from_json(&json!([])).is_err());
        assert!(from_json(&json!({"PatientName": {"vr": "PN"}})).is_err());
        assert!(from_json(&json!({"00100010": {"vr": "pn"}})).is_err());
        assert!(from_json(&json!({"00280010": {"vr": "US", "Value": ["x"]}})).is_err());
    }
}
