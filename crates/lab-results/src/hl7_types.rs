//! HL7 v2 data types read as the FHIR types the V2-to-FHIR guide maps them to: text (ST, TX,
//! FT), CWE/CE → CodeableConcept, CX/EI → Identifier, XPN → HumanName, XCN/CNN/XON →
//! references by identifier and name, ED/RP → Attachment.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hl7v2::{Charset, DelimiterEscape, Delimiters, EscapeToken, EscapeTokens, Value};

use crate::model::{Attachment, Coding, Concept, Ident, Name, Party};
use crate::{Error, Location, Options, codes};

/// Base64 as senders write it: standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads values of one message.
pub(crate) struct Reader<'o> {
    pub d: Delimiters,
    pub charset: Charset,
    pub opts: &'o Options,
}

/// Cleans decoded text for FHIR: CR LF and CR become LF, control characters other than tab and
/// LF are dropped, trailing spaces of each line and surrounding blank lines are removed.
pub(crate) fn clean_text(s: &str) -> String {
    let s = s.replace("\r\n", "\n").replace('\r', "\n");
    let kept: String = s
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect();
    let lines: Vec<&str> = kept.lines().map(str::trim_end).collect();
    lines
        .join("\n")
        .trim_matches('\n')
        .trim_start_matches(' ')
        .to_owned()
}

/// A FHIR `code`: no leading or trailing whitespace, single spaces inside.
pub(crate) fn clean_code(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl Reader<'_> {
    /// The bytes a raw value stands for, with formatted-text commands applied: `\.br\` and
    /// `\.sp\` are line breaks, `\.sk n\` n spaces; highlighting (`\H\ \N\`), other formatting
    /// commands and character-set switches carry no text and are dropped.
    fn bytes(&self, raw: &[u8]) -> Vec<u8> {
        let d = &self.d;
        let mut out = Vec::with_capacity(raw.len());
        for token in EscapeTokens::new(raw, *d) {
            match token {
                EscapeToken::Text(b) => out.extend_from_slice(b),
                EscapeToken::Delimiter(k) => out.push(match k {
                    DelimiterEscape::Field => d.field,
                    DelimiterEscape::Component => d.component,
                    DelimiterEscape::Subcomponent => d.subcomponent.unwrap_or(b'&'),
                    DelimiterEscape::Repetition => d.repetition,
                    DelimiterEscape::Escape => d.escape,
                    DelimiterEscape::Truncation => d.truncation.unwrap_or(b'#'),
                }),
                EscapeToken::Hex(h) => out.extend(h.chunks_exact(2).filter_map(|p| {
                    std::str::from_utf8(p)
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 16).ok())
                })),
                EscapeToken::LineBreak => out.push(b'\n'),
                EscapeToken::Kept(seq) => {
                    let inner = &seq[1..seq.len().saturating_sub(1)];
                    let count = |p: &[u8]| {
                        std::str::from_utf8(p)
                            .ok()
                            .and_then(|n| n.trim().trim_start_matches('+').parse::<usize>().ok())
                            .unwrap_or(1)
                            .min(64)
                    };
                    if let Some(n) = inner.strip_prefix(b".sp") {
                        out.extend(std::iter::repeat_n(b'\n', count(n)));
                    } else if let Some(n) = inner.strip_prefix(b".sk") {
                        out.extend(std::iter::repeat_n(b' ', count(n)));
                    }
                }
            }
        }
        out
    }

    /// A value as FHIR text (see [`clean_text`]).
    pub fn text(&self, v: Value<'_>) -> String {
        if v.is_null() {
            return String::new();
        }
        clean_text(&self.charset.decode(&self.bytes(v.raw())))
    }

    /// A value as a FHIR `code`.
    pub fn code(&self, v: Value<'_>) -> String {
        clean_code(&self.text(v))
    }

    /// Every repetition of a formatted or plain text field, one line each (TX, FT, NTE-3).
    pub fn lines(&self, field: Value<'_>) -> String {
        let lines: Vec<String> = field.repetitions().map(|r| self.text(r)).collect();
        clean_text(&lines.join("\n"))
    }

    /// A system for a coding system name (CWE-3) or its OID (CWE-14).
    fn coding_system(&self, name: &str, oid: &str) -> Option<String> {
        codes::code_system(name)
            .or_else(|| {
                codes::is_local_system(name)
                    .then(|| self.opts.local_code_system.clone())
                    .flatten()
            })
            .or_else(|| (!oid.is_empty()).then(|| format!("urn:oid:{oid}")))
    }

    /// CWE / CE / CNE → CodeableConcept. `part(i)` reads component (or subcomponent) `i`.
    pub fn concept<'m>(&self, part: impl Fn(usize) -> Value<'m>) -> Concept {
        let mut c = Concept::default();
        for (code, display, system, version, oid) in
            [(1, 2, 3, 7, 14), (4, 5, 6, 8, 17), (10, 11, 12, 13, 20)]
        {
            let code = self.code(part(code));
            let display = non_empty(self.text(part(display)));
            if code.is_empty() {
                if c.text.is_none() {
                    c.text = display;
                }
                continue;
            }
            let name = self.code(part(system));
            c.codings.push(Coding {
                system: self.coding_system(&name, &self.code(part(oid))),
                version: non_empty(self.text(part(version))),
                code,
                display,
            });
        }
        if let Some(original) = non_empty(self.text(part(9))) {
            c.text = Some(original);
        }
        c
    }

    /// An assigning authority (HD: namespace, universal ID, its type) → an identifier system.
    pub fn hd_system(&self, namespace: &str, uid: &str, uid_type: &str) -> Option<String> {
        let named = |k: &str| self.opts.assigner_systems.get(k).cloned();
        match uid_type.to_ascii_uppercase().as_str() {
            _ if uid.is_empty() => named(namespace),
            "ISO" => Some(format!("urn:oid:{uid}")),
            "UUID" | "GUID" => Some(format!("urn:uuid:{}", uid.to_ascii_lowercase())),
            "URI" | "URL" => Some(uid.to_owned()),
            _ => named(namespace).or_else(|| named(uid)),
        }
    }

    fn ident_type(&self, code: &str) -> (Option<String>, Option<String>) {
        match code {
            "" => (None, None),
            c if codes::identifier_type(c) => (Some(c.to_owned()), None),
            c => (None, Some(c.to_owned())),
        }
    }

    /// CX → Identifier (value, assigning authority as system and assigner, type code).
    pub fn cx(&self, v: Value<'_>) -> Option<Ident> {
        let value = self.code(v.component(1));
        if value.is_empty() {
            return None;
        }
        let hd = v.component(4);
        let ns = self.code(hd.subcomponent(1));
        let system = self.hd_system(
            &ns,
            &self.code(hd.subcomponent(2)),
            &self.code(hd.subcomponent(3)),
        );
        let (type_code, type_text) = self.ident_type(&self.code(v.component(5)));
        Some(Ident {
            value,
            system,
            type_code,
            type_text,
            assigner: non_empty(ns),
        })
    }

    /// EI (entity ID ^ namespace ^ universal ID ^ type) → Identifier; `part(i)` reads its
    /// component (or subcomponent, inside an EIP) `i`.
    pub fn ei<'m>(&self, part: impl Fn(usize) -> Value<'m>, type_code: &str) -> Option<Ident> {
        let value = self.code(part(1));
        if value.is_empty() {
            return None;
        }
        let ns = self.code(part(2));
        Some(Ident {
            value,
            system: self.hd_system(&ns, &self.code(part(3)), &self.code(part(4))),
            type_code: (!type_code.is_empty()).then(|| type_code.to_owned()),
            type_text: None,
            assigner: non_empty(ns),
        })
    }

    /// XPN → HumanName.
    pub fn xpn(&self, v: Value<'_>) -> Option<Name> {
        let family = non_empty(self.text(v.component(1).subcomponent(1)));
        let given: Vec<String> = [2, 3]
            .iter()
            .map(|&i| self.text(v.component(i)))
            .filter(|s| !s.is_empty())
            .collect();
        if family.is_none() && given.is_empty() {
            return None;
        }
        Some(Name {
            family,
            given,
            suffix: non_empty(self.text(v.component(4))),
            prefix: non_empty(self.text(v.component(5))),
            use_: match self.code(v.component(7)).as_str() {
                "L" => Some("official"),
                "D" => Some("usual"),
                "M" => Some("maiden"),
                "N" => Some("nickname"),
                "A" | "S" => Some("anonymous"),
                _ => None,
            },
        })
    }

    /// A person (XCN, or the CNN inside an NDL): `part(i)` reads ID (1), family (2), given
    /// (3), middle (4), suffix (5), prefix (6); `hd` is the assigning authority (namespace,
    /// universal ID, its type).
    fn person<'m>(&self, part: impl Fn(usize) -> Value<'m>, hd: [Value<'m>; 3]) -> Option<Party> {
        let id = self.code(part(1));
        let names: Vec<String> = [6, 3, 4, 2, 5]
            .iter()
            .map(|&i| self.text(part(i)))
            .filter(|s| !s.is_empty())
            .collect();
        if id.is_empty() && names.is_empty() {
            return None;
        }
        let [ns, uid, uid_type] = hd.map(|v| self.code(v));
        Some(Party {
            kind: "Practitioner",
            id: (!id.is_empty()).then(|| Ident {
                system: self.hd_system(&ns, &uid, &uid_type),
                value: id,
                assigner: non_empty(ns),
                ..Ident::default()
            }),
            name: non_empty(names.join(" ")),
        })
    }

    /// XCN → a practitioner (the family name is the first subcomponent of XCN-2, the assigning
    /// authority XCN-9).
    pub fn xcn(&self, v: Value<'_>) -> Option<Party> {
        let hd = v.component(9);
        self.person(
            |i| {
                if i == 2 {
                    v.component(2).subcomponent(1)
                } else {
                    v.component(i)
                }
            },
            [hd.subcomponent(1), hd.subcomponent(2), hd.subcomponent(3)],
        )
    }

    /// NDL (OBR-32, OBR-34) → a practitioner, from the CNN in its first component (assigning
    /// authority in CNN-9..11).
    pub fn ndl(&self, v: Value<'_>) -> Option<Party> {
        let cnn = v.component(1);
        self.person(
            |i| cnn.subcomponent(i),
            [
                cnn.subcomponent(9),
                cnn.subcomponent(10),
                cnn.subcomponent(11),
            ],
        )
    }

    /// XON (performing organization) → an organization: name, and its identifier (XON-10, or
    /// XON-3 before v2.5).
    pub fn xon(&self, v: Value<'_>) -> Option<Party> {
        let name = non_empty(self.text(v.component(1)));
        let id =
            non_empty(self.code(v.component(10))).or_else(|| non_empty(self.code(v.component(3))));
        if name.is_none() && id.is_none() {
            return None;
        }
        let hd = v.component(6);
        let ns = self.code(hd.subcomponent(1));
        Some(Party {
            kind: "Organization",
            id: id.map(|value| Ident {
                value,
                system: self.hd_system(
                    &ns,
                    &self.code(hd.subcomponent(2)),
                    &self.code(hd.subcomponent(3)),
                ),
                assigner: non_empty(ns.clone()),
                ..Ident::default()
            }),
            name,
        })
    }

    /// ED (source ^ type of data ^ subtype ^ encoding ^ data) → Attachment, the data decoded
    /// to its bytes.
    ///
    /// # Errors
    /// [`Error::Invalid`] at ED-4 for an unknown encoding, at ED-5 for data that is not valid
    /// Base64 or Hex.
    pub fn ed(&self, v: Value<'_>, at: &Location) -> Result<Attachment, Error> {
        let encoding = self.code(v.component(4));
        let raw = v.component(5).raw();
        let data = if raw.is_empty() {
            None
        } else {
            let unescaped = hl7v2::unescape(raw, &self.d);
            let compact: Vec<u8> = unescaped
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let shown = || String::from_utf8_lossy(&compact).into_owned();
            Some(match encoding.to_ascii_uppercase().as_str() {
                "BASE64" => BASE64.decode(&compact).map_err(|e| {
                    Error::invalid(
                        at.clone().component(5),
                        &shown(),
                        format!("is not Base64: {e}"),
                    )
                })?,
                "HEX" => hex::decode(&compact).map_err(|e| {
                    Error::invalid(
                        at.clone().component(5),
                        &shown(),
                        format!("is not Hex: {e}"),
                    )
                })?,
                "A" | "" => self.bytes(raw),
                _ => {
                    return Err(Error::invalid(
                        at.clone().component(4),
                        &encoding,
                        "is not an ED encoding (A, Hex, Base64)",
                    ));
                }
            })
        };
        Ok(Attachment {
            content_type: codes::mime_type(&self.text(v.component(2)), &self.text(v.component(3))),
            data,
            url: None,
            title: None,
        })
    }

    /// RP (pointer ^ application ID ^ type of data ^ subtype) → Attachment with a URL.
    pub fn rp(&self, v: Value<'_>) -> Attachment {
        Attachment {
            content_type: codes::mime_type(&self.text(v.component(3)), &self.text(v.component(4))),
            data: None,
            url: non_empty(self.code(v.component(1))),
            title: None,
        }
    }
}
