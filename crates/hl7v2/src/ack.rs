//! Acknowledgements: building the ACK a receiver sends, reading the one a sender gets back,
//! and deciding from MSH-15/MSH-16 which acknowledgements are wanted at all.

use std::io::Write;

use crate::builder::SegmentBuilder;
use crate::escape::escape;
use crate::{Message, Timestamp, Value};

/// MSA-1, the acknowledgement code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept (original mode, or application ACK in enhanced mode).
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
    /// Commit accept (enhanced mode).
    CA,
    /// Commit error.
    CE,
    /// Commit reject.
    CR,
}

impl AckCode {
    /// The two-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// Reads a code; `None` for anything else.
    pub fn from_bytes(b: &[u8]) -> Option<AckCode> {
        Some(match b.trim_ascii() {
            b"AA" => AckCode::AA,
            b"AE" => AckCode::AE,
            b"AR" => AckCode::AR,
            b"CA" => AckCode::CA,
            b"CE" => AckCode::CE,
            b"CR" => AckCode::CR,
            _ => return None,
        })
    }

    /// AA or CA.
    pub fn is_positive(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }

    /// CA, CE or CR: an enhanced-mode commit (accept) acknowledgement.
    pub fn is_commit(self) -> bool {
        matches!(self, AckCode::CA | AckCode::CE | AckCode::CR)
    }

    /// The MSA-3 text used when the caller gives none.
    pub fn default_text(self) -> &'static str {
        match self {
            AckCode::AA => "OK",
            AckCode::AE => "Application Error",
            AckCode::AR => "Application Reject",
            AckCode::CA => "Commit Accept",
            AckCode::CE => "Commit Error",
            AckCode::CR => "Commit Reject",
        }
    }
}

impl std::fmt::Display for AckCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// MSH-15 / MSH-16 values (HL7 table 0155): when the sender wants an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCondition {
    /// `AL`: always.
    Always,
    /// `NE`: never.
    Never,
    /// `ER`: only on error or reject.
    Error,
    /// `SU`: only on success.
    Success,
}

impl AckCondition {
    fn read(v: &[u8]) -> Option<AckCondition> {
        Some(match v.trim_ascii() {
            b"AL" => AckCondition::Always,
            b"NE" => AckCondition::Never,
            b"ER" => AckCondition::Error,
            b"SU" => AckCondition::Success,
            _ => return None,
        })
    }

    fn wants(self, outcome: Outcome) -> bool {
        match self {
            AckCondition::Always => true,
            AckCondition::Never => false,
            AckCondition::Error => outcome != Outcome::Accepted,
            AckCondition::Success => outcome == Outcome::Accepted,
        }
    }
}

/// What became of a received message, as far as acknowledgement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Accepted (commit) or processed (application).
    Accepted,
    /// Could not be handled for a reason other than its content (AE/CE).
    Error,
    /// Refused because of its content or type (AR/CR).
    Rejected,
}

/// The acknowledgement protocol a message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// MSH-15 and MSH-16 both empty: one application ACK (AA/AE/AR) per message.
    Original,
    /// MSH-15 or MSH-16 valued: a commit ACK (CA/CE/CR) when `accept` wants one, then an
    /// application ACK (AA/AE/AR) when `application` wants one. A value that is empty or not in
    /// table 0155 counts as `AL`, the safe reading (an unwanted ACK is harmless, a missing one
    /// stalls the sender).
    Enhanced {
        /// MSH-15, accept acknowledgement type.
        accept: AckCondition,
        /// MSH-16, application acknowledgement type.
        application: AckCondition,
    },
}

impl AckMode {
    /// The mode a message asks for.
    pub fn of(msg: &Message<'_>) -> AckMode {
        let msh = msg.msh();
        let (f15, f16) = (msh.field(15), msh.field(16));
        if f15.is_empty() && f16.is_empty() {
            return AckMode::Original;
        }
        let read = |v: Value<'_>| AckCondition::read(v.raw()).unwrap_or(AckCondition::Always);
        AckMode::Enhanced {
            accept: read(f15),
            application: read(f16),
        }
    }

    /// The commit acknowledgement to send for `outcome`, if any. Original mode has none.
    pub fn commit_ack(&self, outcome: Outcome) -> Option<AckCode> {
        match self {
            AckMode::Original => None,
            AckMode::Enhanced { accept, .. } => accept.wants(outcome).then_some(match outcome {
                Outcome::Accepted => AckCode::CA,
                Outcome::Error => AckCode::CE,
                Outcome::Rejected => AckCode::CR,
            }),
        }
    }

    /// The application acknowledgement to send for `outcome`, if any. Original mode always
    /// sends one.
    pub fn application_ack(&self, outcome: Outcome) -> Option<AckCode> {
        let wanted = match self {
            AckMode::Original => true,
            AckMode::Enhanced { application, .. } => application.wants(outcome),
        };
        wanted.then_some(match outcome {
            Outcome::Accepted => AckCode::AA,
            Outcome::Error => AckCode::AE,
            Outcome::Rejected => AckCode::AR,
        })
    }
}

/// An error to report in the ERR segment of a negative acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// HL7 table 0357 code: 100 segment sequence error, 101 required field missing, 102 data
    /// type error, 103 table value not found, 200 unsupported message type, 201 unsupported
    /// event code, 202 unsupported processing ID, 203 unsupported version ID, 204 unknown key,
    /// 205 duplicate key, 206 application record locked, 207 application internal error.
    pub code: u16,
    /// Human-readable description.
    pub text: String,
    /// Where, as components of an ERL: segment ID, segment sequence, field position (any may be
    /// empty).
    pub location: Option<(String, usize, usize)>,
}

impl AckError {
    /// An error with a code and a text and no location.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        AckError {
            code,
            text: text.into(),
            location: None,
        }
    }

    fn code_text(&self) -> &'static str {
        match self.code {
            0 => "Message accepted",
            100 => "Segment sequence error",
            101 => "Required field missing",
            102 => "Data type error",
            103 => "Table value not found",
            200 => "Unsupported message type",
            201 => "Unsupported event code",
            202 => "Unsupported processing id",
            203 => "Unsupported version id",
            204 => "Unknown key identifier",
            205 => "Duplicate key identifier",
            206 => "Application record locked",
            _ => "Application internal error",
        }
    }
}

/// What goes into an acknowledgement besides the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckOptions {
    /// MSH-10 of the ACK itself.
    pub control_id: String,
    /// MSH-7 of the ACK.
    pub timestamp: Timestamp,
    /// MSA-3; the code's [default text](AckCode::default_text) when `None`.
    pub text: Option<String>,
    /// An ERR segment, for negative acknowledgements.
    pub error: Option<AckError>,
}

impl AckOptions {
    /// Options with a control ID and a timestamp, default text and no ERR segment.
    pub fn new(control_id: impl Into<String>, timestamp: Timestamp) -> Self {
        AckOptions {
            control_id: control_id.into(),
            timestamp,
            text: None,
            error: None,
        }
    }
}

/// Builds the acknowledgement of `original`: sender and receiver swapped (MSH-3/4 ⇄ MSH-5/6),
/// MSH-9 `ACK^<trigger>^ACK`, MSH-11, MSH-12 and MSH-18 copied, `MSA|<code>|<original MSH-10>|<text>`,
/// and an ERR segment when `opts.error` is set (v2.5 layout, or ERR-1 for v2.1–2.4).
///
/// The ACK uses the original's delimiters, so copied fields stay valid as they are. It is
/// written straight into one buffer: an acknowledgement is built for every message a receiver
/// takes, so this is on every exchange's path.
pub fn build_ack(original: &Message<'_>, code: AckCode, opts: &AckOptions) -> Vec<u8> {
    let msh = original.msh();
    let d = original.delimiters();
    let text = opts.text.as_deref().unwrap_or(code.default_text());
    let mut out = Vec::with_capacity(msh.raw().len() + text.len() + 64);
    let (enc, len) = d.encoding_characters();
    out.extend_from_slice(b"MSH");
    out.push(d.field);
    out.extend_from_slice(&enc[..len]);
    // MSH-1 to MSH-18 in one pass over the header (a lookup by number would rescan it each time).
    let mut h: [&[u8]; 19] = [&[]; 19];
    for (i, v) in msh.fields().take(18).enumerate() {
        h[i + 1] = v.raw();
    }
    let field = |out: &mut Vec<u8>, raw: &[u8]| {
        out.push(d.field);
        out.extend_from_slice(raw);
    };
    for n in [5, 6, 3, 4] {
        field(&mut out, h[n]);
    }
    out.push(d.field);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", opts.timestamp);
    field(&mut out, b"");
    let trigger = msh.field(9).component(2).raw();
    out.push(d.field);
    out.extend_from_slice(b"ACK");
    if !trigger.is_empty() {
        out.push(d.component);
        out.extend_from_slice(trigger);
        out.push(d.component);
        out.extend_from_slice(b"ACK");
    }
    field(&mut out, &escape(opts.control_id.as_bytes(), &d));
    field(&mut out, h[11]);
    field(&mut out, h[12]);
    let charset = h[18];
    if !charset.is_empty() {
        for _ in 13..18 {
            out.push(d.field);
        }
        field(&mut out, charset);
    }
    out.push(b'\r');
    out.extend_from_slice(b"MSA");
    field(&mut out, code.as_str().as_bytes());
    field(&mut out, h[10]);
    field(&mut out, &escape(text.as_bytes(), &d));
    out.push(b'\r');
    if let Some(err) = &opts.error {
        err_segment(&msh, err, d).write_to(&mut out);
        out.push(b'\r');
    }
    out
}

/// The ERR segment of a negative acknowledgement (v2.5 layout, or ERR-1 for v2.1–2.4).
fn err_segment(msh: &crate::Segment<'_>, err: &AckError, d: crate::Delimiters) -> SegmentBuilder {
    let version = msh.field(12).component(1).raw();
    let old = matches!(version, b"2.1" | b"2.2" | b"2.3" | b"2.3.1" | b"2.4");
    let (seg, seq, field) = err
        .location
        .as_ref()
        .map(|(s, q, f)| (s.as_str(), q.to_string(), f.to_string()))
        .unwrap_or(("", String::new(), String::new()));
    let code = err.code.to_string();
    let mut e = SegmentBuilder::new("ERR", d);
    if old {
        // ERR-1 (ELD): segment^sequence^field^code&text&HL70357
        e.components(1, &[seg, &seq, &field])
            .value(1, 1, 4, 1, &code)
            .value(1, 1, 4, 2, err.code_text())
            .value(1, 1, 4, 3, "HL70357");
    } else {
        if !seg.is_empty() {
            e.components(2, &[seg, &seq, &field]);
        }
        e.components(3, &[&code, err.code_text(), "HL70357"])
            .field(4, "E")
            .field(8, &err.text);
    }
    e
}

/// An acknowledgement as received: MSA and, when present, ERR.
#[derive(Debug, Clone, Copy)]
pub struct Acknowledgment<'m> {
    code: AckCode,
    control_id: Value<'m>,
    text: Value<'m>,
    error_text: Option<Value<'m>>,
}

impl<'m> Acknowledgment<'m> {
    /// Reads the MSA (and ERR) of a message; `None` if it has no MSA with a valid MSA-1.
    pub fn read(msg: &'m Message<'_>) -> Option<Acknowledgment<'m>> {
        let msa = msg.segment("MSA")?;
        let code = AckCode::from_bytes(msa.field(1).raw())?;
        let error_text = msg.segment("ERR").and_then(|err| {
            [
                err.field(8),
                err.field(3).component(2),
                err.field(1).component(4).subcomponent(2),
            ]
            .into_iter()
            .find(|v| !v.is_empty())
        });
        Some(Acknowledgment {
            code,
            control_id: msa.field(2),
            text: msa.field(3),
            error_text,
        })
    }

    /// MSA-1.
    pub fn code(&self) -> AckCode {
        self.code
    }

    /// MSA-2: the control ID of the message being acknowledged.
    pub fn control_id(&self) -> Value<'m> {
        self.control_id
    }

    /// MSA-3, text message.
    pub fn text(&self) -> Value<'m> {
        self.text
    }

    /// The error description from ERR (ERR-8, else ERR-3.2, else ERR-1.4.2), if any.
    pub fn error_text(&self) -> Option<Value<'m>> {
        self.error_text
    }

    /// A one-line description of a negative acknowledgement: code, MSA-3 and ERR text.
    pub fn describe(&self) -> String {
        let mut s = self.code.as_str().to_owned();
        for v in [Some(self.text), self.error_text].into_iter().flatten() {
            if !v.is_empty() {
                s.push_str(": ");
                s.push_str(&v.text());
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIG: &[u8] = b"MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|20231023235305||ADT^A01|CTRL1|T|2.5.1|||AL|ER||8859/1\rPID|1\r";

    fn opts() -> AckOptions {
        AckOptions::new("ACK1", Timestamp::parse(b"20240101120000").unwrap())
    }

    #[test]
    fn ack_fields() {
        let m = Message::parse(ORIG).unwrap();
        let ack = build_ack(&m, AckCode::AA, &opts());
        assert_eq!(
            ack,
            b"MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|20240101120000||ACK^A01^ACK|ACK1|T|2.5.1||||||8859/1\rMSA|AA|CTRL1|OK\r"
        );
        let parsed = Message::parse(&ack).unwrap();
        let a = Acknowledgment::read(&parsed).unwrap();
        assert_eq!(a.code(), AckCode::AA);
        assert_eq!(a.control_id().raw(), b"CTRL1");
    }

    #[test]
    fn error_segment_v25_and_v23() {
        let m = Message::parse(ORIG).unwrap();
        let mut o = opts();
        o.error = Some(AckError {
            code: 101,
            text: "PID-3 is required".into(),
            location: Some(("PID".into(), 1, 3)),
        });
        let ack = build_ack(&m, AckCode::AE, &o);
        let parsed = Message::parse(&ack).unwrap();
        assert_eq!(parsed.get("ERR-3-1").unwrap().raw(), b"101");
        assert_eq!(parsed.get("ERR-2-3").unwrap().raw(), b"3");
        let a = Acknowledgment::read(&parsed).unwrap();
        assert_eq!(a.describe(), "AE: Application Error: PID-3 is required");

        let old = b"MSH|^~\\&|A|B|C|D|20231023||ORU^R01|X|P|2.3\r";
        let m = Message::parse(old).unwrap();
        let ack = build_ack(&m, AckCode::AR, &o);
        let parsed = Message::parse(&ack).unwrap();
        assert_eq!(parsed.get("ERR-1-1").unwrap().raw(), b"PID");
        assert_eq!(parsed.get("ERR-1-4-1").unwrap().raw(), b"101");
        let a = Acknowledgment::read(&parsed).unwrap();
        assert_eq!(a.error_text().unwrap().text(), "Required field missing");
    }

    #[test]
    fn mode_from_msh15_16() {
        let m = Message::parse(ORIG).unwrap();
        let mode = AckMode::of(&m);
        assert_eq!(
            mode,
            AckMode::Enhanced {
                accept: AckCondition::Always,
                application: AckCondition::Error
            }
        );
        assert_eq!(mode.commit_ack(Outcome::Accepted), Some(AckCode::CA));
        assert_eq!(mode.application_ack(Outcome::Accepted), None);
        assert_eq!(mode.application_ack(Outcome::Rejected), Some(AckCode::AR));

        let plain = Message::parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5\r").unwrap();
        let mode = AckMode::of(&plain);
        assert_eq!(mode, AckMode::Original);
        assert_eq!(mode.commit_ack(Outcome::Accepted), None);
        assert_eq!(mode.application_ack(Outcome::Error), Some(AckCode::AE));

        let ne = Message::parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5|||NE|SU\r").unwrap();
        let mode = AckMode::of(&ne);
        assert_eq!(mode.commit_ack(Outcome::Accepted), None);
        assert_eq!(mode.application_ack(Outcome::Accepted), Some(AckCode::AA));
        assert_eq!(mode.application_ack(Outcome::Error), None);
    }

    #[test]
    fn ack_without_trigger_and_escaped_text() {
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|1||ACK|X|P|2.5\r").unwrap();
        let mut o = opts();
        o.text = Some("bad | field".into());
        let ack = build_ack(&m, AckCode::AR, &o);
        let parsed = Message::parse(&ack).unwrap();
        assert_eq!(parsed.get("MSH-9").unwrap().raw(), b"ACK");
        assert_eq!(parsed.get("MSA-3").unwrap().text(), "bad | field");
    }
}
