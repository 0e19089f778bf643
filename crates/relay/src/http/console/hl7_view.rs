//! An HL7 v2 message shown segment by segment, each field with its path (`PID-5`, `PID-5.1`)
//! on hover; ASTM records one per line.

use maud::{Markup, html};

/// `text` (segments ended by CR or LF) as a table: one row per segment, each field a cell
/// titled with its path. Text that does not start with `MSH` is shown as it is.
pub(super) fn message(text: &str) -> Markup {
    let segments: Vec<&str> = text.split(['\r', '\n']).filter(|s| !s.is_empty()).collect();
    let Some(msh) = segments.first().filter(|s| s.starts_with("MSH")) else {
        return html! { pre.message { (text) } };
    };
    // MSH-1 is the field separator itself, MSH-2 the encoding characters.
    let field_sep = msh.chars().nth(3).unwrap_or('|');
    let component_sep = msh.chars().nth(4).unwrap_or('^');
    html! {
        table.hl7 {
            @for seg in &segments {
                tr {
                    @let mut fields = seg.split(field_sep);
                    @let name = fields.next().unwrap_or_default();
                    th.segment { (name) }
                    @let is_msh = name == "MSH";
                    @for (i, value) in fields.enumerate() {
                        // MSH counts its separator as field 1.
                        @let n = if is_msh { i + 2 } else { i + 1 };
                        td title={(name) "-" (n)} data-path={(name) "-" (n)} {
                            @if is_msh && n == 2 {
                                (value)
                            } @else {
                                @for (j, component) in value.split(component_sep).enumerate() {
                                    @if j > 0 { span.sep { (component_sep) } }
                                    span title={(name) "-" (n) "." (j + 1)} { (component) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// ASTM E1394 records, one per line, the record type first.
pub(super) fn astm(text: &str) -> Markup {
    html! {
        table.astm {
            @for record in text.split(['\r', '\n']).filter(|r| !r.is_empty()) {
                @let (kind, rest) = record.split_at(record.char_indices().nth(1).map_or(record.len(), |(i, _)| i));
                tr { th { (kind) } td { code { (rest) } } }
            }
        }
    }
}

/// DICOM JSON (PS3.18 §F.2: an object keyed by 8-digit tags, each with `vr` and `Value`), or
/// an array of such objects, as a table per data set: tag, VR, value. `None` when `text` is
/// not DICOM JSON.
pub(super) fn dicom_json(text: &str) -> Option<Markup> {
    let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    let sets: Vec<&serde_json::Map<String, serde_json::Value>> = match &v {
        serde_json::Value::Object(o) => vec![o],
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_object()).collect(),
        _ => return None,
    };
    let is_tag = |k: &str| k.len() == 8 && k.bytes().all(|b| b.is_ascii_hexdigit());
    if sets.is_empty()
        || !sets
            .iter()
            .all(|o| !o.is_empty() && o.keys().all(|k| is_tag(k)))
    {
        return None;
    }
    let value = |e: &serde_json::Value| match (&e["Value"], &e["InlineBinary"]) {
        (serde_json::Value::Array(vals), _) => vals
            .iter()
            .map(|x| match x {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) if o.contains_key("Alphabetic") => {
                    o["Alphabetic"].as_str().unwrap_or_default().to_owned()
                }
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\\"),
        (_, serde_json::Value::String(b)) => format!("({} bytes, base64)", b.len()),
        _ => String::new(),
    };
    Some(html! {
        @for set in &sets {
            table.dicom {
                thead { tr { th { "Tag" } th { "VR" } th { "Value" } } }
                tbody {
                    @for (tag, e) in *set {
                        tr {
                            td { code { "(" (tag[..4]) "," (tag[4..]) ")" } }
                            td { (e["vr"].as_str().unwrap_or_default()) }
                            td { (value(e)) }
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_carry_their_paths_and_values_are_escaped() {
        let html = message("MSH|^~\\&|A|B\rPID|1||<X>^Y\r").into_string();
        assert!(html.contains(r#"title="MSH-2""#), "{html}");
        assert!(html.contains(r#"title="MSH-3""#), "{html}");
        assert!(html.contains(r#"title="PID-3.1""#), "{html}");
        assert!(html.contains("&lt;X&gt;"), "{html}");
        assert!(!html.contains("<X>"), "{html}");
        let plain = message("not hl7 <b>").into_string();
        assert!(plain.contains("not hl7 &lt;b&gt;"), "{plain}");
    }

    #[test]
    fn dicom_json_is_a_table_of_tags() {
        let json = r#"{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^<JANE>"}]},
            "00080060": {"vr": "CS", "Value": ["CT"]}}"#;
        let html = dicom_json(json).unwrap().into_string();
        assert!(html.contains("(0010,0010)"), "{html}");
        assert!(html.contains("DOE^&lt;JANE&gt;"), "{html}");
        assert!(html.contains("<td>CS</td><td>CT</td>"), "{html}");
        assert!(dicom_json(r#"{"status": "ok"}"#).is_none());
        assert!(dicom_json("MSH|").is_none());
    }

    #[test]
    fn astm_records_one_per_line() {
        let html = astm("H|\\^&\rP|1\rL|1|N\r").into_string();
        assert_eq!(html.matches("<tr>").count(), 3, "{html}");
    }
}
