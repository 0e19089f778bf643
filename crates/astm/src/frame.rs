//! E1381 frames: `<STX> FN text <ETB|ETX> C1 C2 <CR><LF>`.

/// Start of frame.
pub const STX: u8 = 0x02;
/// End of the last frame of a record.
pub const ETX: u8 = 0x03;
/// End of transmission (termination, or receiver interrupt in place of ACK).
pub const EOT: u8 = 0x04;
/// Request to send.
pub const ENQ: u8 = 0x05;
/// Positive reply.
pub const ACK: u8 = 0x06;
/// Negative reply.
pub const NAK: u8 = 0x15;
/// End of an intermediate frame.
pub const ETB: u8 = 0x17;
/// Record terminator, and the first byte of every frame trailer.
pub const CR: u8 = 0x0D;
/// Last byte of every frame.
pub const LF: u8 = 0x0A;

/// Most bytes in a frame, STX through LF.
pub const MAX_FRAME: usize = 247;
/// Most text bytes in a frame.
pub const MAX_TEXT: usize = MAX_FRAME - 7;

/// The checksum of a frame: the sum of FN through ETX/ETB, mod 256.
pub fn checksum(fn_through_end: &[u8]) -> u8 {
    fn_through_end.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

fn hex_digit(n: u8) -> u8 {
    b"0123456789ABCDEF"[usize::from(n & 0x0f)]
}

/// Appends one frame (`last`: ETX, else ETB) with frame number `fn_digit` (0..=7).
pub fn encode_frame(fn_digit: u8, text: &[u8], last: bool, out: &mut Vec<u8>) {
    out.reserve(text.len() + 7);
    out.push(STX);
    let start = out.len();
    out.push(b'0' + (fn_digit % 8));
    out.extend_from_slice(text);
    out.push(if last { ETX } else { ETB });
    let sum = checksum(&out[start..]);
    out.extend_from_slice(&[hex_digit(sum >> 4), hex_digit(sum), CR, LF]);
}

/// The frames of a message (records separated by CR), frame numbers from 1: one record per
/// end frame, records longer than [`MAX_TEXT`] split into intermediate (ETB) frames whose last
/// piece carries the record's CR.
pub fn frames(message: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut fn_digit = 1u8;
    for record in message.split(|&b| b == CR).filter(|r| !r.is_empty()) {
        let mut text = Vec::with_capacity(record.len() + 1);
        text.extend_from_slice(record);
        text.push(CR);
        let pieces: Vec<&[u8]> = text.chunks(MAX_TEXT).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let mut f = Vec::with_capacity(piece.len() + 7);
            encode_frame(fn_digit, piece, i + 1 == pieces.len(), &mut f);
            out.push(f);
            fn_digit = (fn_digit + 1) % 8;
        }
    }
    out
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than [`MAX_FRAME`].
    TooLong,
    /// Not `STX FN text ETB|ETX C1 C2 CR LF`.
    Malformed,
    /// FN is not a digit 0-7.
    BadFrameNumber,
    /// The checksum digits do not match.
    Checksum,
    /// A control character other than CR inside the text.
    RestrictedCharacter,
}

/// A frame that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Frame number, 0..=7.
    pub fn_digit: u8,
    /// The text between FN and ETB/ETX.
    pub text: &'a [u8],
    /// ETX (end of record) rather than ETB.
    pub last: bool,
}

/// Checks a complete frame (STX through LF). Checksum digits are accepted in either case.
pub fn decode_frame(f: &[u8]) -> Result<Frame<'_>, FrameError> {
    if f.len() > MAX_FRAME {
        return Err(FrameError::TooLong);
    }
    let n = f.len();
    if n < 7 || f[0] != STX || f[n - 2] != CR || f[n - 1] != LF {
        return Err(FrameError::Malformed);
    }
    let end = f[n - 5];
    if end != ETX && end != ETB {
        return Err(FrameError::Malformed);
    }
    let fn_byte = f[1];
    if !(b'0'..=b'7').contains(&fn_byte) {
        return Err(FrameError::BadFrameNumber);
    }
    let sum = checksum(&f[1..n - 4]);
    let given = (f[n - 4].to_ascii_uppercase(), f[n - 3].to_ascii_uppercase());
    if given != (hex_digit(sum >> 4), hex_digit(sum)) {
        return Err(FrameError::Checksum);
    }
    let text = &f[2..n - 5];
    if text.iter().any(|&b| b < 0x20 && b != CR && b != b'\t') || text.contains(&0x7f) {
        return Err(FrameError::RestrictedCharacter);
    }
    Ok(Frame {
        fn_digit: fn_byte - b'0',
        text,
        last: end == ETX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fn_digit: u8, text: &[u8], last: bool) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(fn_digit, text, last, &mut v);
        v
    }

    #[test]
    fn known_checksums() {
        // Worked examples from the reference, verified with python-astm.
        assert_eq!(frame(1, b"H|\\^&\r", true), b"\x021H|\\^&\r\x03E5\r\n");
        assert_eq!(frame(7, b"L|1|N\r", true), b"\x027L|1|N\r\x030A\r\n");
    }

    #[test]
    fn fn_wraps_after_seven() {
        let msg: Vec<u8> = (0..10)
            .flat_map(|i| format!("C|{i}\r").into_bytes())
            .collect();
        let fns: Vec<u8> = frames(&msg).iter().map(|f| f[1]).collect();
        assert_eq!(fns, b"1234567012");
    }

    #[test]
    fn long_record_splits_into_etb_frames() {
        let record = format!("C|1|I|{}|G", "X".repeat(592)); // 600 bytes + CR = 601 text bytes
        let f = frames(record.as_bytes());
        assert_eq!(f.len(), 3);
        assert!(f.iter().all(|x| x.len() <= MAX_FRAME));
        assert_eq!(
            (f[0].len(), f[1].len(), f[2].len()),
            (247, 247, 601 - 480 + 7)
        );
        let ends: Vec<u8> = f.iter().map(|x| x[x.len() - 5]).collect();
        assert_eq!(ends, [ETB, ETB, ETX]);
        // only the last piece carries the record's CR
        let decoded: Vec<Frame<'_>> = f.iter().map(|x| decode_frame(x).unwrap()).collect();
        assert!(!decoded[0].text.contains(&CR) && decoded[2].text.ends_with(b"\r"));
        let joined: Vec<u8> = decoded.iter().flat_map(|d| d.text.to_vec()).collect();
        assert_eq!(joined, format!("{record}\r").into_bytes());
    }

    #[test]
    fn exactly_240_text_bytes_with_cr_needs_two_frames() {
        // 239 bytes + CR = 240: one frame; 240 + CR = 241: two (python-astm gets this wrong).
        assert_eq!(frames("A".repeat(239).as_bytes()).len(), 1);
        let two = frames("A".repeat(240).as_bytes());
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].len(), 247);
        assert_eq!(decode_frame(&two[1]).unwrap().text, b"\r");
    }

    #[test]
    fn decode_checks() {
        let good = frame(3, b"R|1|^^^GLU|5.4\r", true);
        assert_eq!(decode_frame(&good).unwrap().fn_digit, 3);
        let mut lower = good.clone();
        let n = lower.len();
        lower[n - 4] = lower[n - 4].to_ascii_lowercase();
        lower[n - 3] = lower[n - 3].to_ascii_lowercase();
        assert!(decode_frame(&lower).is_ok());
        let mut bad = good.clone();
        bad[5] ^= 1;
        assert_eq!(decode_frame(&bad), Err(FrameError::Checksum));
        let mut bad_fn = frame(3, b"x", true);
        bad_fn[1] = b'9';
        assert_eq!(decode_frame(&bad_fn), Err(FrameError::BadFrameNumber));
        assert_eq!(decode_frame(b"\x021x\r\n"), Err(FrameError::Malformed));
        assert_eq!(
            decode_frame(&frame(1, b"a\x05b", true)),
            Err(FrameError::RestrictedCharacter)
        );
        assert_eq!(decode_frame(&vec![b'a'; 300]), Err(FrameError::TooLong));
    }
}
