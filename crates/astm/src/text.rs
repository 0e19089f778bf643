//! ASTM records written as text by people and programs (one record a line, any line ending)
//! turned into what the wire carries: each record ended by CR.

/// The records of `text`, separated by CR, LF or CRLF, each ended by a single CR, blank lines
/// dropped: `"H|\\^&\nP|1\r\n\nL|1|N"` becomes `"H|\\^&\rP|1\rL|1|N\r"`. The text is not
/// checked; parse the result with [`Message::parse`](crate::Message::parse).
pub fn records_from_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    for record in text.split(['\r', '\n']).filter(|r| !r.trim().is_empty()) {
        out.push_str(record);
        out.push('\r');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_line_ending_becomes_cr() {
        assert_eq!(
            records_from_text("H|\\^&\nP|1\r\n\r\nO|1\rL|1|N"),
            "H|\\^&\rP|1\rO|1\rL|1|N\r"
        );
        assert_eq!(records_from_text("\n \n"), "");
    }
}
