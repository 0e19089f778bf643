//! DIMSE: command sets (PS3.7), status codes, and reassembling messages from PDVs.

use bytes::Bytes;

use crate::Error;
use crate::pdu::Pdv;

/// C-STORE-RQ
pub const C_STORE_RQ: u16 = 0x0001;
/// C-STORE-RSP
pub const C_STORE_RSP: u16 = 0x8001;
/// C-FIND-RQ
pub const C_FIND_RQ: u16 = 0x0020;
/// C-FIND-RSP
pub const C_FIND_RSP: u16 = 0x8020;
/// C-ECHO-RQ
pub const C_ECHO_RQ: u16 = 0x0030;
/// C-ECHO-RSP
pub const C_ECHO_RSP: u16 = 0x8030;
/// C-CANCEL-RQ
pub const C_CANCEL_RQ: u16 = 0x0FFF;
/// CommandDataSetType: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;

/// A command set. Only the elements this crate uses are fields; others are skipped on reading.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    /// (0000,0002)
    pub affected_sop_class: Option<String>,
    /// (0000,0100)
    pub command_field: u16,
    /// (0000,0110)
    pub message_id: Option<u16>,
    /// (0000,0120)
    pub message_id_responded: Option<u16>,
    /// (0000,0700): 0 medium, 1 high, 2 low.
    pub priority: Option<u16>,
    /// (0000,0800): [`NO_DATA_SET`], or anything else for "a data set follows".
    pub data_set_type: u16,
    /// (0000,0900)
    pub status: Option<u16>,
    /// (0000,0902)
    pub error_comment: Option<String>,
    /// (0000,1000)
    pub affected_sop_instance: Option<String>,
}

impl Command {
    /// Whether a data set follows the command.
    pub fn has_data_set(&self) -> bool {
        self.data_set_type != NO_DATA_SET
    }

    /// Encodes the command (Implicit VR LE, group length first, ascending tags, UIDs padded
    /// with NUL to even length).
    pub fn encode(&self) -> Vec<u8> {
        fn el(out: &mut Vec<u8>, element: u16, value: &[u8], pad: u8) {
            let len = value.len() + value.len() % 2;
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&element.to_le_bytes());
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(value);
            if value.len() % 2 == 1 {
                out.push(pad);
            }
        }
        let mut body = Vec::with_capacity(128);
        if let Some(v) = &self.affected_sop_class {
            el(&mut body, 0x0002, v.as_bytes(), 0);
        }
        el(&mut body, 0x0100, &self.command_field.to_le_bytes(), 0);
        if let Some(v) = self.message_id {
            el(&mut body, 0x0110, &v.to_le_bytes(), 0);
        }
        if let Some(v) = self.message_id_responded {
            el(&mut body, 0x0120, &v.to_le_bytes(), 0);
        }
        if let Some(v) = self.priority {
            el(&mut body, 0x0700, &v.to_le_bytes(), 0);
        }
        el(&mut body, 0x0800, &self.data_set_type.to_le_bytes(), 0);
        if let Some(v) = self.status {
            el(&mut body, 0x0900, &v.to_le_bytes(), 0);
        }
        if let Some(v) = &self.error_comment {
            el(&mut body, 0x0902, v.as_bytes(), b' ');
        }
        if let Some(v) = &self.affected_sop_instance {
            el(&mut body, 0x1000, v.as_bytes(), 0);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        el(&mut out, 0x0000, &(body.len() as u32).to_le_bytes(), 0);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a command set.
    pub fn decode(b: &[u8]) -> Result<Command, Error> {
        let mut c = Command {
            data_set_type: NO_DATA_SET,
            ..Command::default()
        };
        let mut at = 0;
        let mut saw_field = false;
        while at < b.len() {
            let err = |reason: &str| Error::DataSet {
                offset: at,
                reason: reason.to_owned(),
            };
            let head = b
                .get(at..at + 8)
                .ok_or_else(|| err("truncated command element"))?;
            let group = u16::from_le_bytes([head[0], head[1]]);
            let element = u16::from_le_bytes([head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let v = b
                .get(at + 8..at + 8 + len)
                .ok_or_else(|| err("command element longer than the command"))?;
            if group != 0 {
                return Err(err("command sets hold only group 0000"));
            }
            let us = || (v.len() >= 2).then(|| u16::from_le_bytes([v[0], v[1]]));
            let text = || {
                String::from_utf8_lossy(v)
                    .trim_end_matches(['\0', ' '])
                    .to_owned()
            };
            match element {
                0x0002 => c.affected_sop_class = Some(text()),
                0x0100 => {
                    c.command_field = us().ok_or_else(|| err("short CommandField"))?;
                    saw_field = true;
                }
                0x0110 => c.message_id = us(),
                0x0120 => c.message_id_responded = us(),
                0x0700 => c.priority = us(),
                0x0800 => c.data_set_type = us().unwrap_or(NO_DATA_SET),
                0x0900 => c.status = us(),
                0x0902 => c.error_comment = Some(text()),
                0x1000 => c.affected_sop_instance = Some(text()),
                _ => {}
            }
            at += 8 + len;
        }
        if !saw_field {
            return Err(Error::DataSet {
                offset: 0,
                reason: "command without CommandField".into(),
            });
        }
        Ok(c)
    }
}

/// How a DIMSE status reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    /// 0x0000
    Success,
    /// Success with a reservation.
    Warning,
    /// The operation failed.
    Failure,
    /// Ended by C-CANCEL (0xFE00).
    Cancel,
    /// More responses follow (0xFF00, 0xFF01).
    Pending,
}

/// A DIMSE status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// What kind of status it is.
    pub fn kind(self) -> StatusKind {
        match self.0 {
            0x0000 => StatusKind::Success,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusKind::Warning,
            0xFE00 => StatusKind::Cancel,
            0xFF00 | 0xFF01 => StatusKind::Pending,
            _ => StatusKind::Failure,
        }
    }

    /// The standard name (PS3.7 Annex C and the service classes).
    pub fn name(self) -> &'static str {
        match self.0 {
            0x0000 => "Success",
            0x0001 => "Warning: requested optional attributes not supported",
            0x0107 => "Warning: attribute list error",
            0x0116 => "Warning: attribute value out of range",
            0xB000 => "Warning: coercion of data elements",
            0xB006 => "Warning: elements discarded",
            0xB007 => "Warning: data set does not match SOP class",
            0xFE00 => "Cancel: matching terminated due to cancel request",
            0xFF00 => "Pending: matches are continuing",
            0xFF01 => "Pending: matches are continuing, optional keys not supported",
            0x0105 => "Failure: no such attribute",
            0x0106 => "Failure: invalid attribute value",
            0x0110 => "Failure: processing failure",
            0x0112 => "Failure: no such SOP instance",
            0x0117 => "Failure: invalid object instance",
            0x0118 => "Failure: no such SOP class",
            0x0119 => "Failure: class-instance conflict",
            0x0122 => "Failure: SOP class not supported",
            0x0124 => "Failure: not authorized",
            0x0210 => "Failure: duplicate invocation",
            0x0211 => "Failure: unrecognized operation",
            0x0212 => "Failure: mistyped argument",
            0x0213 => "Failure: resource limitation",
            0xA700..=0xA7FF => "Failure: out of resources",
            0xA900..=0xA9FF => "Failure: data set does not match SOP class",
            0xC000..=0xCFFF => "Failure: cannot understand",
            0xB001..=0xBFFF => "Warning",
            _ => "Failure",
        }
    }

    /// Success or warning.
    pub fn is_ok(self) -> bool {
        matches!(self.kind(), StatusKind::Success | StatusKind::Warning)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:04X} {}", self.0, self.name())
    }
}

/// A complete DIMSE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimseMessage {
    /// The presentation context it came on.
    pub pc_id: u8,
    /// The command.
    pub command: Command,
    /// The data set, if the command says one follows.
    pub data: Option<Bytes>,
}

/// Largest command set accepted: 64 KiB.
const MAX_COMMAND: usize = 64 << 10;

/// One part of a DIMSE message, as its PDVs give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A whole command set, reassembled from its fragments.
    Command {
        /// The presentation context it came on.
        pc: u8,
        /// The command.
        command: Command,
    },
    /// A fragment of the data set the last command announced; `last` ends it.
    Data {
        /// The presentation context it came on.
        pc: u8,
        /// The bytes.
        data: Bytes,
        /// Whether the data set is complete.
        last: bool,
    },
}

/// Where a [`PdvStream`] is between PDVs.
#[derive(Debug, Default)]
enum Expect {
    /// Between messages.
    #[default]
    Command,
    /// Command fragments so far, on this context.
    MoreCommand(u8, Vec<u8>),
    /// The command announced a data set on this context; its fragments are due.
    Data(u8),
}

/// PDVs in the order PS3.7 §9.3 and PS3.8 Annex E allow, whatever PDUs they came in: command
/// fragments gathered (up to 64 KiB) and decoded, then the data set's fragments passed on as
/// they come, on the command's context. The association state machine
/// ([`crate::ul::UpperLayer`]) and [`Reassembler`] both read PDVs through it.
#[derive(Debug, Default)]
pub struct PdvStream {
    expect: Expect,
}

impl PdvStream {
    /// Takes one PDV; a part when it completes a command set or is a data set fragment.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a PDV out of order or a command set over 64 KiB,
    /// [`Error::DataSet`] for a command set that does not decode.
    pub fn push(&mut self, pdv: Pdv) -> Result<Option<Part>, Error> {
        let pc = pdv.pc_id;
        let order = |why: String| Err(Error::Protocol(why));
        match (std::mem::take(&mut self.expect), pdv.command) {
            (Expect::Command, true) => self.command(pc, Vec::new(), pdv),
            (Expect::MoreCommand(at, sofar), true) if at == pc => self.command(pc, sofar, pdv),
            (Expect::MoreCommand(at, _), true) => order(format!(
                "command fragment on presentation context {pc}, its start on {at}"
            )),
            (Expect::Data(at), false) if at == pc => {
                if !pdv.last {
                    self.expect = Expect::Data(pc);
                }
                Ok(Some(Part::Data {
                    pc,
                    data: pdv.data,
                    last: pdv.last,
                }))
            }
            (Expect::Data(at), false) => order(format!(
                "data set on presentation context {pc} but its command on {at}"
            )),
            (Expect::Data(_), true) => order("a command before the data set it announced".into()),
            (Expect::Command | Expect::MoreCommand(..), false) => {
                order("a data set fragment without its command".into())
            }
        }
    }

    fn command(&mut self, pc: u8, mut sofar: Vec<u8>, pdv: Pdv) -> Result<Option<Part>, Error> {
        if sofar.len() + pdv.data.len() > MAX_COMMAND {
            return Err(Error::Protocol(format!(
                "command set over {MAX_COMMAND} bytes"
            )));
        }
        sofar.extend_from_slice(&pdv.data);
        if !pdv.last {
            self.expect = Expect::MoreCommand(pc, sofar);
            return Ok(None);
        }
        let command = Command::decode(&sofar)?;
        if command.has_data_set() {
            self.expect = Expect::Data(pc);
        }
        Ok(Some(Part::Command { pc, command }))
    }
}

/// Gathers PDVs into messages by their flags (command/data, last), whatever PDUs they came in:
/// a command and its data set may share one PDU or be spread over many. The order is
/// [`PdvStream`]'s; this adds the data set, kept whole, and a bound.
#[derive(Debug, Default)]
pub struct Reassembler {
    stream: PdvStream,
    data: Vec<u8>,
    parsed: Option<(u8, Command)>,
    /// Bytes of the message so far (command and data).
    size: usize,
    max: usize,
}

impl Reassembler {
    /// A reassembler refusing messages (command + data) over `max` bytes.
    pub fn new(max: usize) -> Self {
        Reassembler {
            max,
            ..Reassembler::default()
        }
    }

    fn grow(&mut self, n: usize) -> Result<(), Error> {
        self.size += n;
        if self.size > self.max {
            return Err(Error::Protocol(format!(
                "DIMSE message larger than {} bytes",
                self.max
            )));
        }
        Ok(())
    }

    /// Adds one PDV; a whole message when this one completes it.
    pub fn push(&mut self, pdv: Pdv) -> Result<Option<DimseMessage>, Error> {
        if pdv.command {
            self.grow(pdv.data.len())?;
        }
        match self.stream.push(pdv)? {
            Some(part) => self.assemble(part),
            None => Ok(None),
        }
    }

    /// Adds one part (from a [`PdvStream`] that already put the PDVs in order); a whole
    /// message when this one completes it.
    pub fn assemble(&mut self, part: Part) -> Result<Option<DimseMessage>, Error> {
        match part {
            Part::Command { pc, command } if command.has_data_set() => {
                self.parsed = Some((pc, command));
                Ok(None)
            }
            Part::Command { pc, command } => {
                self.size = 0;
                Ok(Some(DimseMessage {
                    pc_id: pc,
                    command,
                    data: None,
                }))
            }
            Part::Data { pc, data, last } => {
                self.grow(data.len())?;
                match &self.parsed {
                    Some((at, _)) if *at == pc => {}
                    _ => {
                        return Err(Error::Protocol(
                            "data set fragment before its command".into(),
                        ));
                    }
                }
                self.data.extend_from_slice(&data);
                if !last {
                    return Ok(None);
                }
                let (pc_id, command) = self
                    .parsed
                    .take()
                    .ok_or_else(|| Error::Protocol("lost command".into()))?;
                self.size = 0;
                Ok(Some(DimseMessage {
                    pc_id,
                    command,
                    data: Some(Bytes::from(std::mem::take(&mut self.data))),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_echo_rq_matches_dcmtk() {
        // echoscu's C-ECHO-RQ, 68 bytes, as captured.
        let c = Command {
            affected_sop_class: Some(crate::uids::VERIFICATION.into()),
            command_field: C_ECHO_RQ,
            message_id: Some(1),
            data_set_type: NO_DATA_SET,
            ..Command::default()
        };
        let mut expected = Vec::new();
        expected.extend_from_slice(b"\x00\x00\x00\x00\x04\x00\x00\x00\x38\x00\x00\x00");
        expected.extend_from_slice(b"\x00\x00\x02\x00\x12\x00\x00\x001.2.840.10008.1.1\x00");
        expected.extend_from_slice(b"\x00\x00\x00\x01\x02\x00\x00\x00\x30\x00");
        expected.extend_from_slice(b"\x00\x00\x10\x01\x02\x00\x00\x00\x01\x00");
        expected.extend_from_slice(b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x01");
        assert_eq!(c.encode(), expected);
        assert_eq!(Command::decode(&expected).unwrap(), c);
    }

    #[test]
    fn statuses() {
        assert_eq!(Status(0xFF00).kind(), StatusKind::Pending);
        assert_eq!(Status(0xB000).kind(), StatusKind::Warning);
        assert_eq!(
            Status(0xA701).to_string(),
            "0xA701 Failure: out of resources"
        );
        assert!(!Status(0x0122).is_ok());
    }

    fn pdv(pc: u8, command: bool, last: bool, data: &[u8]) -> Pdv {
        Pdv {
            pc_id: pc,
            command,
            last,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn reassembly_by_flags_not_pdus() {
        let cmd = Command {
            command_field: C_FIND_RSP,
            data_set_type: 1,
            status: Some(0xFF00),
            ..Command::default()
        }
        .encode();
        let mut r = Reassembler::new(1 << 20);
        let (a, b) = cmd.split_at(10);
        assert_eq!(r.push(pdv(1, true, false, a)).unwrap(), None);
        assert_eq!(r.push(pdv(1, true, true, b)).unwrap(), None);
        assert_eq!(r.push(pdv(1, false, false, b"ab")).unwrap(), None);
        let m = r.push(pdv(1, false, true, b"cd")).unwrap().unwrap();
        assert_eq!(m.data.as_deref(), Some(&b"abcd"[..]));
        assert_eq!(m.command.status, Some(0xFF00));
        // data on another context is refused
        let mut r = Reassembler::new(1 << 20);
        r.push(pdv(1, true, true, &cmd)).unwrap();
        assert!(r.push(pdv(3, false, true, b"x")).is_err());
        // data before a command is refused; size is bounded
        assert!(
            Reassembler::new(1 << 20)
                .push(pdv(1, false, true, b"x"))
                .is_err()
        );
        assert!(Reassembler::new(4).push(pdv(1, true, true, &cmd)).is_err());
    }
}
